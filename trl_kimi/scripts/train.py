"""
`trl-kimi train`: Kimi k1.5 online mirror descent ([`~trl_kimi.KimiMirrorDescentTrainer`]) of a Hub or local model
on a Hub, local or builtin dataset, with a verifier as reward; saves the model, its tokenizer and its card, and pushes
them with `--push_to_hub`.

```bash
trl-kimi train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name ../shared/data/gsm8k/train.jsonl \\
    --output_dir Qwen2.5-0.5B-Kimi --tau 0.1 --num_generations 8 --max_completion_length 1024
trl-kimi train --config kimi.yaml  # any flag below, as YAML; the command line wins
```

Multi-GPU: `accelerate launch -m trl_kimi.cli train ...`.
"""

from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ..hub import BUILTIN_DATASET, load_processing_class
from ._common import DATASET_FORMATS, REWARDS, load_task, reward_function


@dataclass
class TrainScriptArguments(ScriptArguments):
    """
    Data and reward flags of `trl-kimi train`, on top of TRL's `ScriptArguments`.

    Args:
        dataset_name (`str`, *optional*, defaults to `"chain-sum"`):
            Hub dataset id, local file (`.jsonl`, `.json`, `.csv`, `.parquet`) or folder, or `chain-sum` (the
            embedded arithmetic task, generated offline).
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            How rows become prompts: `prompt` (rows have a `prompt` column), `gsm8k`, `math500`, `aime`, or `auto`.
        prompt_column (`str`, *optional*):
            Problem column of another benchmark (with `answer_column`).
        answer_column (`str`, *optional*):
            Gold-answer column of another benchmark.
        reward (`str`, *optional*, defaults to `"auto"`):
            `math` (`trl_kimi.verifiers.math_reward`), `code` (`code_reward`), `chain-sum`, or `auto`.
        max_train_samples (`int`, *optional*):
            Keep the first N training rows (for `chain-sum`: generate N problems).
        system_prompt (`str`, *optional*):
            System message before each benchmark problem (conversational models only).
    """

    dataset_name: str = field(
        default=BUILTIN_DATASET,
        metadata={"help": f"Hub dataset id, local .jsonl/.json/.csv/.parquet file or folder, or {BUILTIN_DATASET!r}."},
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "How rows become prompts.", "choices": list(DATASET_FORMATS)}
    )
    prompt_column: str | None = field(default=None, metadata={"help": "Problem column of another benchmark."})
    answer_column: str | None = field(default=None, metadata={"help": "Gold-answer column of another benchmark."})
    reward: str = field(
        default="auto",
        metadata={
            "help": "Verifier used as reward (auto: chain-sum, code if tests, else math).",
            "choices": list(REWARDS),
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each problem."})


def make_parser(prog: str = "trl-kimi train") -> TrlParser:
    from ..trainer import KimiConfig

    return TrlParser((TrainScriptArguments, KimiConfig, ModelConfig), prog=prog)


def train(script_args: TrainScriptArguments, training_args, model_args: ModelConfig):
    """Train, save (model, tokenizer, card) and optionally push; returns the trainer."""
    from ..trainer import KimiMirrorDescentTrainer

    ################
    # Model
    ################
    processing_class = load_processing_class(model_args.model_name_or_path, model_args.model_revision)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    ################
    # Dataset
    ################
    dataset, reward = load_task(
        script_args,
        processing_class,
        split=script_args.dataset_train_split,
        num_rows=script_args.max_train_samples,
        seed=training_args.seed,
    )

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_function(reward),
        args=training_args,
        train_dataset=dataset,
        processing_class=processing_class,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


def main(argv: list[str] | None = None, prog: str = "trl-kimi train") -> int:
    train(*make_parser(prog).parse_args_and_config(argv))
    return 0
