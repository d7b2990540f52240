"""
`trl-kimi eval`: sample n answers per problem with HF `generate` (or vLLM with `--use_vllm`), score them with a
verifier, and report avg@n (pass@1 averaged over the n samples), unbiased pass@k, and completion tokens (mean, p50,
p90, p99, fraction truncated). Writes `samples.jsonl` (one line per sample), `summary.json` and
`accuracy_vs_tokens.png` to `--output_dir`.

```bash
trl-kimi eval --model_name_or_path Qwen/Qwen2.5-Math-1.5B-Instruct --dataset_name HuggingFaceH4/MATH-500 \\
    --num_samples 8 --k 1 4 8 --max_completion_length 4096 --temperature 0.6 --use_vllm --output_dir eval-math500
trl-kimi eval --model_name_or_path runs/demo/model --dataset_name chain-sum --max_eval_samples 200 \\
    --max_completion_length 96
```

AIME sets (`problem`/`answer`, e.g. AI-MO/aimo-validation-aime) use `--dataset_format aime`. A LoRA adapter folder
(`trl-kimi train --use_peft`) is evaluated with its base model and the adapter merged in. `--push_results` adds the
summary to the model's card (`model-index` metadata and a table): the folder's `README.md`, and the Hub repository's
card when the model is a Hub id or `--hub_model_id` is given. Flags mean what they mean in `trl-kimi train`
(`--dataset_test_split`, `--max_eval_samples`, `--max_completion_length`, `--temperature`, `--reward`, ...).
"""

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..hub import adapter_base_model, check_model_name_or_path, load_causal_lm, load_processing_class
from ._common import (
    BUILTIN_DATASET,
    DATASET_FORMATS,
    REWARDS,
    check_sandbox,
    import_reward,
    load_task,
    require_vllm,
    reward_function,
    user_code_errors,
)


@dataclass
class EvalArguments:
    """
    Flags of `trl-kimi eval`.

    Args:
        model_name_or_path (`str`):
            Hub model id or local folder (e.g. the `--output_dir` of `trl-kimi train`).
        model_revision (`str`, *optional*):
            Hub revision (branch, tag or commit) of the model.
        dtype (`str`, *optional*, defaults to `"auto"`):
            Weights dtype for HF generation: `auto`, `float32`, `bfloat16`, `float16`.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Run the model repository's own code (models not in transformers).
        dataset_name (`str`):
            Hub dataset id, local file or folder, or `chain-sum`.
        dataset_config (`str`, *optional*):
            Hub dataset configuration name.
        dataset_test_split (`str`, *optional*, defaults to `"test"`):
            Split to evaluate (Hub datasets and folders of splits); also `--dataset_split`.
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            `prompt`, `gsm8k` (`question`/`answer`), `math500` or `aime` (`problem`/`answer`), or `auto`.
        prompt_column (`str`, *optional*):
            Problem column of another benchmark.
        answer_column (`str`, *optional*):
            Gold-answer column of another benchmark.
        reward (`str`, *optional*, defaults to `"auto"`):
            Verifier: `math`, `code`, `chain-sum`, `auto`, or an importable `module.function`.
        system_prompt (`str`, *optional*):
            System message before each problem.
        max_eval_samples (`int`, *optional*):
            Evaluate the first N problems only (for `chain-sum`: generate N problems, seed `dataset_seed`); also
            `--max_samples`.
        dataset_seed (`int`, *optional*, defaults to `1`):
            Seed of the `chain-sum` problems (the demo's held-out split uses 1).
        num_samples (`int`, *optional*, defaults to `4`):
            n, samples per problem; avg@n averages pass@1 over them.
        k (`list[int]`, *optional*, defaults to `[1]`):
            The k of pass@k (each at most n), e.g. `--k 1 4 8`.
        max_completion_length (`int`, *optional*, defaults to `1024`):
            Generation cap; a truncated answer scores 0; also `--max_new_tokens`.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature (0 = greedy, then every sample is the greedy answer).
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus-sampling mass.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling (0 = off).
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call.
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed: the same flags give the same samples.
        use_vllm (`bool`, *optional*, defaults to `False`):
            Generate with vLLM (`pip install trl-kimi[vllm]`, needs a GPU).
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
            Fraction of GPU memory vLLM may use.
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            GPUs vLLM shards the model over.
        output_dir (`str`, *optional*, defaults to `"eval_results"`):
            Where `samples.jsonl`, `summary.json` and `accuracy_vs_tokens.png` go.
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over generation batches.
        push_results (`bool`, *optional*, defaults to `False`):
            Add the summary to the model card (`model-index` and a table): the model folder's `README.md`, and the
            Hub card of the model's Hub id or of `--hub_model_id`.
        hub_model_id (`str`, *optional*):
            Hub repository whose card gets the results (default: the model, when it is a Hub id).
    """

    model_name_or_path: str = field(metadata={"help": "Hub model id or local folder."})
    dataset_name: str = field(
        metadata={"help": f"Hub dataset id, local .jsonl/.json/.csv/.parquet file or folder, or {BUILTIN_DATASET!r}."}
    )
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype for HF generation.", "choices": ["auto", "float32", "bfloat16", "float16"]},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_test_split: str = field(
        default="test", metadata={"help": "Split to evaluate.", "aliases": ["--dataset_split"]}
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "How rows become prompts.", "choices": list(DATASET_FORMATS)}
    )
    prompt_column: str | None = field(default=None, metadata={"help": "Problem column of another benchmark."})
    answer_column: str | None = field(default=None, metadata={"help": "Gold-answer column of another benchmark."})
    reward: str = field(
        default="auto",
        metadata={"help": f"Verifier used to score answers: {', '.join(REWARDS)} or an importable module.function."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each problem."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate the first N problems only.", "aliases": ["--max_samples"]}
    )
    dataset_seed: int = field(default=1, metadata={"help": "Seed of the chain-sum problems."})
    num_samples: int = field(default=4, metadata={"help": "n: samples per problem (avg@n)."})
    k: list[int] = field(default_factory=lambda: [1], metadata={"help": "The k of pass@k, each <= n."})
    max_completion_length: int = field(
        default=1024, metadata={"help": "Generation cap; truncated answers score 0.", "aliases": ["--max_new_tokens"]}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus-sampling mass."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per generate call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    use_vllm: bool = field(default=False, metadata={"help": "Generate with vLLM (needs a GPU)."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "GPU memory fraction for vLLM."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs vLLM shards the model over."})
    output_dir: str = field(default="eval_results", metadata={"help": "Where the samples, summary and plot go."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    push_results: bool = field(default=False, metadata={"help": "Add the summary to the model card (model-index)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository whose card gets the results."})

    def __post_init__(self):
        from ..evaluation import check_sample_sizes

        # Checked before any model is loaded: a bad n should not cost a model load.
        check_sample_sizes(self.num_samples, self.k)


def make_parser(prog: str = "trl-kimi eval") -> TrlParser:
    return TrlParser(EvalArguments, prog=prog)


def run_eval(args: EvalArguments) -> dict:
    """Evaluate; returns the summary written to `summary.json`."""
    import torch

    from ..evaluation import sample_and_score

    remote = args.trust_remote_code
    check_model_name_or_path(args.model_name_or_path, args.model_revision, trust_remote_code=remote)
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("trl-kimi eval plots accuracy_vs_tokens.png with matplotlib: pip install 'trl-kimi[plot]'.")
    custom = "." in args.reward and args.reward not in REWARDS
    processing_class = load_processing_class(args.model_name_or_path, args.model_revision, trust_remote_code=remote)
    dataset, reward = load_task(
        args,
        processing_class,
        split=args.dataset_test_split,
        num_rows=args.max_eval_samples,
        seed=args.dataset_seed,
        reward="custom" if custom else args.reward,
    )
    check_sandbox(reward)
    reward_func = import_reward(args.reward) if custom else reward_function(reward)

    model, llm = None, None
    if args.use_vllm:
        require_vllm()
        from vllm import LLM

        model_path = args.model_name_or_path
        if os.path.isdir(model_path) and adapter_base_model(model_path):
            # vLLM loads whole checkpoints: merge the adapter into its base once, next to the results.
            model_path = os.path.join(args.output_dir, "merged_model")
            load_causal_lm(args.model_name_or_path, dtype="auto", trust_remote_code=remote).save_pretrained(model_path)
            processing_class.save_pretrained(model_path)
        llm = LLM(
            model=model_path,
            revision=None if model_path != args.model_name_or_path else args.model_revision,
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            tensor_parallel_size=args.vllm_tensor_parallel_size,
            seed=args.seed,
            trust_remote_code=remote,
        )
    else:
        dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
        model = load_causal_lm(args.model_name_or_path, args.model_revision, dtype=dtype, trust_remote_code=remote)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    with user_code_errors("Scoring"):  # e.g. a custom reward function that raises: its traceback is the message
        result = sample_and_score(
            model,
            getattr(processing_class, "tokenizer", processing_class),
            dataset,
            reward_func,
            num_samples=args.num_samples,
            k=args.k,
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            batch_size=args.batch_size,
            seed=args.seed,
            llm=llm,
            output_dir=args.output_dir,
            progress=args.progress,
        )
    summary = {
        "model": args.model_name_or_path,
        "dataset": args.dataset_name,
        "dataset_config": args.dataset_config,
        "dataset_split": args.dataset_test_split,
        "reward": args.reward if custom else reward,
        **result.to_dict(),
    }
    with open(f"{args.output_dir}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if args.push_results:
        push_results(args, summary)
    return summary


def push_results(args: EvalArguments, summary: dict) -> list[str]:
    """Add `summary` to the model card (`trl_kimi.model_card.add_eval_results`): the local folder's `README.md`, and
    the Hub card of `--hub_model_id` or of the model's Hub id. Returns where it was written."""
    from huggingface_hub import ModelCard, metadata_update
    from huggingface_hub.repocard_data import eval_results_to_model_index

    from ..model_card import add_eval_results, eval_results_metadata

    dataset = {"dataset_config": args.dataset_config, "dataset_split": args.dataset_test_split}
    written = []
    if os.path.isdir(args.model_name_or_path):
        path = os.path.join(args.model_name_or_path, "README.md")
        card = ModelCard(Path(path).read_text()) if os.path.isfile(path) else ModelCard("---\n---\n")
        add_eval_results(card, summary, args.dataset_name, **dataset).save(path)
        written.append(path)
    repo_id = args.hub_model_id or (None if os.path.isdir(args.model_name_or_path) else args.model_name_or_path)
    if repo_id is not None:
        # Only the card's metadata changes: huggingface_hub merges `model-index` into the card it reads (or starts one
        # when the repository has none), so the card's text is never replaced by a stub.
        results = eval_results_metadata(summary, args.dataset_name, **dataset)
        metadata_update(
            repo_id,
            {"model-index": eval_results_to_model_index(repo_id.split("/")[-1], results)},
            overwrite=True,
            commit_message=f"trl-kimi eval: {args.dataset_name}",
        )
        written.append(f"hf://{repo_id}/README.md")
    return written


def main(argv: list[str] | None = None, prog: str = "trl-kimi eval") -> int:
    (args,) = make_parser(prog).parse_args_and_config(argv)
    summary = run_eval(args)
    print(json.dumps(summary, indent=2))
    return 0
