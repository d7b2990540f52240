"""
`trl-kimi long2short`: long2short RL (Kimi k1.5 §2.4) with `trl_kimi.long2short.Long2ShortTrainer`: shorten the
answers of a long-chain-of-thought model while keeping its accuracy, optionally starting from a shorter model
(`--short_model_name_or_path`).

```bash
trl-kimi long2short --model_name_or_path runs/demo/model --dataset_name chain-sum --output_dir runs/l2s
```

`trl_kimi.long2short` is imported when this command runs, not before: the rest of the CLI works without it.
"""

import importlib
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser

from ..hub import check_model_name_or_path, load_processing_class
from ._common import REWARDS, load_task, reward_function, user_code_errors
from .train import TrainScriptArguments


@dataclass
class Long2ShortScriptArguments(TrainScriptArguments):
    """
    Flags of `trl-kimi long2short` on top of those of `trl-kimi train` (dataset, format, reward).

    Args:
        short_model_name_or_path (`str`, *optional*):
            A short-answer model (Hub id or folder) passed to the trainer as `short_model` (e.g. for model merging
            or shortest rejection sampling, as the trainer defines).
    """

    short_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Short-answer model (Hub id or folder) given to the trainer as short_model."}
    )


def _long2short():
    try:
        # import_module consults sys.modules first; `from .. import long2short` would find the package attribute left
        # by an earlier import and never see a module that is missing (or masked, as the CLI tests do)
        long2short = importlib.import_module("trl_kimi.long2short")
    except ImportError as error:
        raise ImportError(
            f"trl-kimi long2short needs the module trl_kimi.long2short, which this installation lacks ({error}). "
            "Update trl-kimi."
        ) from error
    return long2short


def make_parser(prog: str = "trl-kimi long2short") -> TrlParser:
    return TrlParser((Long2ShortScriptArguments, _long2short().Long2ShortConfig, ModelConfig), prog=prog)


def run_long2short(script_args: Long2ShortScriptArguments, training_args, model_args: ModelConfig) -> dict:
    from transformers import AutoModelForCausalLM

    long2short = _long2short()
    remote = getattr(training_args, "trust_remote_code", False)
    processing_class = load_processing_class(
        model_args.model_name_or_path, model_args.model_revision, trust_remote_code=remote
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=remote
    )
    short_model = None
    if script_args.short_model_name_or_path:
        check_model_name_or_path(script_args.short_model_name_or_path, what="short model", trust_remote_code=remote)
        short_model = AutoModelForCausalLM.from_pretrained(
            script_args.short_model_name_or_path, trust_remote_code=remote
        )

    if len(script_args.reward) != 1 or script_args.reward[0] not in REWARDS:
        raise ValueError(
            f"trl-kimi long2short scores answers with one verifier ({', '.join(REWARDS)}); got --reward "
            f"{' '.join(script_args.reward)}. Its length terms come from --methods."
        )
    dataset, reward = load_task(
        script_args,
        processing_class,
        split=script_args.dataset_train_split,
        num_rows=script_args.max_train_samples,
        seed=training_args.seed,
        reward=script_args.reward[0],
    )

    trainer = long2short.Long2ShortTrainer(
        model,
        training_args,
        dataset,
        reward_funcs=reward_function(reward),
        processing_class=processing_class,
        short_model=short_model,
    )
    with user_code_errors("Long2short training"):
        result = trainer.train()
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return result


def main(argv: list[str] | None = None, prog: str = "trl-kimi long2short") -> int:
    run_long2short(*make_parser(prog).parse_args_and_config(argv))
    return 0
