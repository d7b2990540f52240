"""
`trl-kimi curate`: the prompt-set curation of Kimi k1.5 §2.2 ([`~trl_kimi.curation.curate`]) on a Hub, local or
builtin dataset. Drops hackable formats (multiple choice, true/false, yes/no, proofs), exact and near duplicates,
prompts overlapping an evaluation set, and, with a model, prompts it answers correctly without reasoning (any of 8
answer-only tries); labels the rest with the model's pass rate. Writes `dataset.jsonl` (every row, with `pass_rate`,
`difficulty`, `drop_reason`), `kept.jsonl` (train on it: `trl-kimi train --dataset_name <output_dir>/kept.jsonl
--dataset_format prompt`), `summary.json`, `difficulty.png` and `README.md` (the dataset card) to `--output_dir`.

```bash
trl-kimi curate --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \\
    --dataset_split train --eval_dataset_name openai/gsm8k --eval_dataset_config main --use_vllm \\
    --max_new_tokens 1024 --output_dir gsm8k-curated --push_to_hub --hub_dataset_id <user>/gsm8k-kimi-curated
trl-kimi curate --dataset_name train.jsonl --output_dir curated   # rules only (formats, duplicates): no model
trl-kimi curate --dataset_name chain-sum --max_samples 2000 --model_name_or_path runs/demo/model --output_dir cs
```

Cost: with a model, (`--num_guess_tries` × `--guess_max_new_tokens` + `--num_samples` × up to `--max_new_tokens`)
generated tokens per surviving prompt, batched (`--batch_size`); the rules alone take seconds. A rerun with the same
flags gives the same dataset (seeded). For `chain-sum`, whose prompts take no instructions, the answer-only tries use
no instruction and a 4-token cap (the short answer `=18` and EOS) unless `--guess_instruction` /
`--guess_max_new_tokens` say otherwise.
"""

import json
import os
from dataclasses import dataclass, field

from trl import TrlParser

from ..curation import ANSWER_ONLY_INSTRUCTION, CurationConfig
from ..hub import load_causal_lm, load_dataset_any, load_processing_class
from ._common import (
    _ANSWER_COLUMN,
    BUILTIN_DATASET,
    DATASET_FORMATS,
    REWARDS,
    check_sandbox,
    import_reward,
    load_rows,
    load_task,
    prepare_dataset,
    require_vllm,
    reward_function,
)


CHAIN_SUM_GUESS_TOKENS = 4  # "=18" and EOS: room for the short answer only, not for the chain of thought


@dataclass
class CurateArguments:
    """
    Data, model and output flags of `trl-kimi curate` (the curation settings are [`~trl_kimi.curation.CurationConfig`]'s
    flags).

    Args:
        dataset_name (`str`):
            Hub dataset id, local file (`.jsonl`, `.json`, `.csv`, `.parquet`) or folder, or `chain-sum`.
        dataset_config (`str`, *optional*):
            Hub dataset configuration name.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to curate.
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            `prompt`, `gsm8k`, `math500`, `aime`, or `auto` (as in `trl-kimi train`).
        prompt_column (`str`, *optional*), answer_column (`str`, *optional*):
            Problem and gold-answer columns of another benchmark.
        system_prompt (`str`, *optional*):
            System message before each problem (conversational models only).
        max_samples (`int`, *optional*):
            Curate the first N rows (for `chain-sum`: generate N problems with `dataset_seed`).
        dataset_seed (`int`, *optional*, defaults to `0`):
            Seed of the `chain-sum` problems.
        eval_dataset_name (`str`, *optional*):
            Evaluation set to check n-gram overlap with (same kinds as `dataset_name`).
        eval_dataset_config (`str`, *optional*), eval_dataset_split (`str`, *optional*, defaults to `"test"`):
            Its configuration and split.
        model_name_or_path (`str`, *optional*):
            Model for the guessing test and the pass rates; without it only the rules run.
        model_revision (`str`, *optional*), dtype (`str`, *optional*, defaults to `"auto"`):
            Hub revision and weights dtype.
        reward (`str`, *optional*, defaults to `"auto"`):
            Verifier: `math`, `code`, `chain-sum`, `auto`, or an importable `module.function`.
        use_vllm (`bool`, *optional*, defaults to `False`):
            Generate with vLLM (`pip install 'trl-kimi[vllm]'`, needs a GPU).
        output_dir (`str`, *optional*, defaults to `"curated"`):
            Where the files go.
        plot (`bool`, *optional*, defaults to `True`):
            Write `difficulty.png` (needs matplotlib: `pip install 'trl-kimi[plot]'`).
        progress (`bool`, *optional*, defaults to `True`):
            Progress bars over generation batches.
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Push the kept rows and the dataset card to `hub_dataset_id`.
        hub_dataset_id (`str`, *optional*):
            Hub dataset repository to push to.
    """

    dataset_name: str = field(
        metadata={"help": f"Hub dataset id, local .jsonl/.json/.csv/.parquet file or folder, or {BUILTIN_DATASET!r}."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split to curate."})
    dataset_format: str = field(
        default="auto", metadata={"help": "How rows become prompts.", "choices": list(DATASET_FORMATS)}
    )
    prompt_column: str | None = field(default=None, metadata={"help": "Problem column of another benchmark."})
    answer_column: str | None = field(default=None, metadata={"help": "Gold-answer column of another benchmark."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each problem."})
    max_samples: int | None = field(default=None, metadata={"help": "Curate the first N rows only."})
    dataset_seed: int = field(default=0, metadata={"help": "Seed of the chain-sum problems."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation set for the overlap check."})
    eval_dataset_config: str | None = field(default=None, metadata={"help": "Its configuration name."})
    eval_dataset_split: str = field(default="test", metadata={"help": "Its split."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Model for guessing and pass rates."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype for HF generation.", "choices": ["auto", "float32", "bfloat16", "float16"]},
    )
    reward: str = field(
        default="auto",
        metadata={"help": f"Verifier: {', '.join(REWARDS)} or an importable module.function."},
    )
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (needs a GPU)."})
    output_dir: str = field(default="curated", metadata={"help": "Where the files go."})
    plot: bool = field(default=True, metadata={"help": "Write difficulty.png (needs matplotlib)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the kept rows and the card to the Hub."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repository to push to."})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id <user>/<name>.")


def make_parser(prog: str = "trl-kimi curate") -> TrlParser:
    return TrlParser((CurateArguments, CurationConfig), prog=prog)


def run_curate(args: CurateArguments, config: CurationConfig) -> dict:
    """Curate; returns the summary written to `summary.json`."""
    import torch

    from ..curation import curate

    if args.plot:
        from ..curation import _require_matplotlib

        _require_matplotlib()  # before any model is loaded
    custom = "." in args.reward and args.reward not in REWARDS
    processing_class = load_processing_class(args.model_name_or_path) if args.model_name_or_path else None
    if processing_class is None:
        dataset = load_rows(
            args.dataset_name, args.dataset_config, args.dataset_split, args.max_samples, args.dataset_seed
        )
        dataset = prepare_dataset(
            dataset, args.dataset_format, None, args.system_prompt, args.prompt_column, args.answer_column
        )
        reward = None
    else:
        dataset, reward = load_task(
            args,
            processing_class,
            split=args.dataset_split,
            num_rows=args.max_samples,
            seed=args.dataset_seed,
            reward="custom" if custom else args.reward,
        )
        check_sandbox(reward)
    if config.solution_column not in dataset.column_names and reward in _ANSWER_COLUMN:
        config.solution_column = _ANSWER_COLUMN[reward]
    if config.solution_column not in dataset.column_names and "answer" in dataset.column_names:
        config.solution_column = "answer"  # the builtin task's column, when no model chose the verifier
    if args.dataset_name == BUILTIN_DATASET:
        # Chain-sum prompts are digits and tags only: an instruction would be read as unknown characters.
        if config.guess_instruction == ANSWER_ONLY_INSTRUCTION:
            config.guess_instruction = ""
        if config.guess_max_new_tokens == CurationConfig.guess_max_new_tokens:
            config.guess_max_new_tokens = CHAIN_SUM_GUESS_TOKENS
    eval_dataset = None
    if args.eval_dataset_name:
        eval_dataset = load_dataset_any(args.eval_dataset_name, args.eval_dataset_config, args.eval_dataset_split)
        eval_dataset = prepare_dataset(eval_dataset, "auto", None)

    model, llm, reward_func = None, None, None
    if processing_class is not None:
        reward_func = import_reward(args.reward) if custom else reward_function(reward)
        if args.use_vllm:
            require_vllm()
            from vllm import LLM

            llm = LLM(model=args.model_name_or_path, revision=args.model_revision, seed=config.seed)
        else:
            dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
            model = load_causal_lm(args.model_name_or_path, args.model_revision, dtype=dtype)
            model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    result = curate(
        dataset,
        model,
        getattr(processing_class, "tokenizer", processing_class),
        reward_func,
        config,
        eval_dataset=eval_dataset,
        llm=llm,
        progress=args.progress,
    )
    result.summary.update(
        source=args.dataset_name if not args.dataset_config else f"{args.dataset_name} ({args.dataset_config})",
        split=args.dataset_split,
        model=args.model_name_or_path,
        reward=args.reward if custom else reward,
        eval_dataset=args.eval_dataset_name,
    )
    result.save(args.output_dir, plot=args.plot)
    if args.push_to_hub:
        result.push_to_hub(args.hub_dataset_id)
    return result.summary


def main(argv: list[str] | None = None, prog: str = "trl-kimi curate") -> int:
    args, config = make_parser(prog).parse_args_and_config(argv)
    summary = run_curate(args, config)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    print(
        f"Wrote {os.path.join(args.output_dir, 'kept.jsonl')} ({summary['num_kept']} of {summary['num_rows']} rows)."
    )
    return 0
