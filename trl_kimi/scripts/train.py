"""
`trl-kimi train`: Kimi k1.5 online mirror descent ([`~trl_kimi.KimiMirrorDescentTrainer`]) of a Hub or local model
on a Hub, local or builtin dataset, with verifiers and shaping terms as rewards; saves the model (or its LoRA
adapter), its tokenizer and its card, and pushes them with `--push_to_hub`.

```bash
trl-kimi train --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \\
    --output_dir Qwen2.5-0.5B-Kimi --tau 0.1 --num_generations 8 --max_completion_length 1024 \\
    --reward math length_penalty repetition --reward_weights 1.0 1.0 1.0 --length_penalty_weight 0.5
trl-kimi train --config kimi.yaml  # any flag below, as YAML; the command line wins
```

Several processes, as `trl grpo` does: flags that `accelerate launch` knows (`--num_processes 8`,
`--config_file examples/accelerate_configs/deepspeed_zero3.yaml`, `--accelerate_config`, `--mixed_precision`, ...)
make `trl-kimi train` start itself under `accelerate launch -m trl_kimi.cli train ...` (which also works typed out).
"""

import os
import sys
from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from ..distributed import end_training
from ..hub import _require_peft, load_processing_class
from ._common import (
    BUILTIN_DATASET,
    DATASET_FORMATS,
    REWARD_HELP,
    build_reward_funcs,
    check_dataset_name,
    check_sandbox,
    eval_source,
    load_task,
    split_rewards,
    user_code_errors,
)


@dataclass
class TrainScriptArguments(ScriptArguments):
    """
    Data and reward flags of `trl-kimi train`, on top of TRL's `ScriptArguments` (`--dataset_config`,
    `--dataset_train_split`, `--dataset_test_split`, ...).

    Args:
        dataset_name (`str`):
            Hub dataset id (e.g. `openai/gsm8k` with `--dataset_config main`, `DigitalLearningGmbH/MATH-lighteval`),
            local file (`.jsonl`, `.json`, `.csv`, `.parquet`) or folder, or `chain-sum` (the embedded arithmetic
            task, generated offline). Required: there is no default dataset.
        dataset_test_split (`str`, *optional*, defaults to `"test"`):
            Split of the eval rows (with `--eval_strategy`), or a local file of them (needed when `dataset_name` is
            a file, which holds the training rows only).
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            How rows become prompts: `prompt` (rows have a `prompt` column), `gsm8k`, `math500`, `aime`, `math`
            (`problem`/`solution`, e.g. the MATH train set), or `auto`.
        prompt_column (`str`, *optional*):
            Problem column of another benchmark (with `answer_column`).
        answer_column (`str`, *optional*):
            Gold-answer column of another benchmark.
        reward (`list[str]`, *optional*, defaults to `["auto"]`):
            Reward functions, in the order of `--reward_weights`: a verifier (`auto`, `math`, `code`, `chain-sum`),
            `length_penalty`, `repetition`, or any importable `module.function`.
        length_penalty_weight (`float`, *optional*, defaults to `0.5`):
            Weight of the length reward inside [`~trl_kimi.LengthPenaltyReward`].
        length_penalty_warmup_steps (`float`, *optional*, defaults to `0.1`):
            Steps before the length reward starts: an integer ≥ 1, or a fraction of `max_steps`.
        length_penalty_ramp_steps (`int`, *optional*, defaults to `0`):
            Steps over which it then ramps up linearly.
        length_penalty_threshold (`float`, *optional*, defaults to `1.0`):
            A sample is correct for the length reward when the verifier gives at least this.
        repetition_ngram_size (`int`, *optional*, defaults to `32`):
            n of the repeated n-gram the repetition reward looks for.
        repetition_max_repeats (`int`, *optional*, defaults to `3`):
            Occurrences of an n-gram that count as a repetition.
        repetition_reward (`float`, *optional*, defaults to `-0.5`):
            Reward of a completion with a repetition.
        max_train_samples (`int`, *optional*):
            Keep the first N training rows (for `chain-sum`: generate N problems).
        max_eval_samples (`int`, *optional*):
            Keep the first N rows of the eval split (`--dataset_test_split`, used with `--eval_strategy`).
        system_prompt (`str`, *optional*):
            System message before each benchmark problem (conversational models only).
    """

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": f"Required. Hub dataset id, local .jsonl/.json/.csv/.parquet file or folder, or {BUILTIN_DATASET!r} "
            "(the builtin toy task)."
        },
    )
    dataset_test_split: str = field(
        default="test",
        metadata={"help": "Split of the eval rows, or a local file of them (eval with --eval_strategy)."},
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "How rows become prompts.", "choices": list(DATASET_FORMATS)}
    )
    prompt_column: str | None = field(default=None, metadata={"help": "Problem column of another benchmark."})
    answer_column: str | None = field(default=None, metadata={"help": "Gold-answer column of another benchmark."})
    reward: list[str] = field(default_factory=lambda: ["auto"], metadata={"help": REWARD_HELP})
    length_penalty_weight: float = field(default=0.5, metadata={"help": "Weight inside the length reward."})
    length_penalty_warmup_steps: float = field(
        default=0.1, metadata={"help": "Steps before the length reward starts (int >= 1, or a fraction of max_steps)."}
    )
    length_penalty_ramp_steps: int = field(default=0, metadata={"help": "Linear ramp of the length reward (steps)."})
    length_penalty_threshold: float = field(
        default=1.0, metadata={"help": "Verifier reward at which a sample counts as correct for the length reward."}
    )
    repetition_ngram_size: int = field(default=32, metadata={"help": "n of the repeated n-gram."})
    repetition_max_repeats: int = field(default=3, metadata={"help": "Occurrences that count as a repetition."})
    repetition_reward: float = field(default=-0.5, metadata={"help": "Reward of a completion with a repetition."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N eval rows."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each problem."})


def make_parser(prog: str = "trl-kimi train") -> TrlParser:
    from ..trainer import KimiConfig

    return TrlParser((TrainScriptArguments, KimiConfig, ModelConfig), prog=prog)


def train(script_args: TrainScriptArguments, training_args, model_args: ModelConfig):
    """Train, save (model or adapter, tokenizer, card) and optionally push; returns the trainer."""
    from ..trainer import KimiMirrorDescentTrainer

    # Checked before anything is loaded: a wrong reward name or a missing sandbox should not cost a model load.
    verifier, reward_names = split_rewards(script_args.reward)
    check_sandbox(verifier)  # `--reward code`; `auto` is checked once the dataset's columns have resolved it
    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        _require_peft("--use_peft / --load_in_4bit / --load_in_8bit")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise ValueError(
            "--load_in_4bit/--load_in_8bit train quantized weights only through LoRA (QLoRA): add --use_peft."
        )
    check_dataset_name(script_args.dataset_name)
    if script_args.dataset_streaming:
        raise ValueError(
            "--dataset_streaming is not supported by trl-kimi train: the Kimi trainer samples prompts from a "
            "map-style dataset (the datasets library caches the download once). Drop the flag; --max_train_samples "
            "keeps the first N rows."
        )

    ################
    # Model
    ################
    processing_class = load_processing_class(
        model_args.model_name_or_path, model_args.model_revision, trust_remote_code=training_args.trust_remote_code
    )
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    ################
    # Dataset
    ################
    dataset, verifier = load_task(
        script_args,
        processing_class,
        split=script_args.dataset_train_split,
        num_rows=script_args.max_train_samples,
        seed=training_args.seed,
        reward=verifier,
    )
    check_sandbox(verifier)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        eval_name, eval_split = eval_source(script_args.dataset_name, script_args.dataset_test_split)
        eval_dataset, _ = load_task(
            script_args,
            processing_class,
            dataset_name=eval_name,
            split=eval_split,
            num_rows=script_args.max_eval_samples,
            seed=training_args.seed + 1,  # chain-sum: other problems than the training ones
            reward=verifier,
        )

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=build_reward_funcs(reward_names, verifier, script_args),
        args=training_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),  # QLoRA, as `trl grpo` passes it (bitsandbytes)
    )
    with user_code_errors("Training"):  # e.g. a reward function that raises: its traceback is the message
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    end_training(
        trainer
    )  # destroy the process group before exit, in the order that cannot hang (trl_kimi.distributed)
    return trainer


def launch_args(argv: list[str], prog: str) -> tuple[list[str], list[str]]:
    """The arguments in `argv` that are not `trl-kimi train` flags, i.e. `accelerate launch` options, as typed and as
    given to `accelerate launch` (`[]` when there are none): `--accelerate_config NAME` becomes `--config_file` with
    the shipped `examples/accelerate_configs/NAME.yaml`, else TRL's resolver (a file, or one of TRL's names:
    `zero3`, `single_gpu`, `fsdp2`, ...)."""
    # Flags are told apart at the argparse level, without building the configs: their checks (e.g. bf16 needs a GPU)
    # belong to the launched processes, which may see devices the launcher does not.
    parser = make_parser(prog)
    config_remaining, config_path = [], None
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        i = argv.index("--config")
        config_path, argv = argv[i + 1], argv[:i] + argv[i + 2 :]  # TrlParser's own flag, not an argparse one
    _, cli_remaining = parser.parse_known_args(argv)
    if config_path is not None:
        import yaml

        with open(config_path) as f:
            config = yaml.safe_load(f) or {}
        known = {action.dest for action in parser._actions} | {"env"}
        for key, value in config.items():
            if key not in known:
                config_remaining += [f"--{key}", str(value)]
    extra = [*config_remaining, *cli_remaining]
    resolved = list(extra)
    if "--accelerate_config" in resolved:
        from trl.cli.accelerate_config import resolve_accelerate_config_argument

        from ..cli import examples_dir

        i = resolved.index("--accelerate_config")
        if i + 1 >= len(resolved):
            raise ValueError("--accelerate_config needs a value: a file, or a config name such as fsdp2 or zero3.")
        ours = examples_dir() / "accelerate_configs" / f"{resolved[i + 1]}.yaml"
        if ours.is_file():
            resolved[i : i + 2] = ["--config_file", str(ours)]
        else:
            try:
                resolved = resolve_accelerate_config_argument(resolved)  # a file, or a config shipped with TRL
            except ValueError as error:
                shipped = sorted(f.stem for f in (examples_dir() / "accelerate_configs").glob("*.yaml"))
                raise ValueError(f"{error} trl-kimi also ships: {', '.join(shipped)}.") from error
    _check_launch_args(resolved, typed=cli_remaining)
    return cli_remaining, resolved


def _check_launch_args(resolved: list[str], typed: list[str]) -> None:
    """Raise a short `ValueError` for flags that neither `trl-kimi train` nor `accelerate launch` knows (instead of
    accelerate's usage, which is over 100 lines)."""
    if not resolved:
        return
    import contextlib
    import io

    from accelerate.commands.launch import launch_command_parser

    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            _, unknown = launch_command_parser().parse_known_args([*resolved, "--module", "trl_kimi.cli"])
        except SystemExit:
            unknown = [stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else str(resolved)]
    if unknown:
        raise ValueError(
            f"Unknown flags {unknown} (typed: {typed}): neither `trl-kimi train` flags (`trl-kimi train --help` lists "
            "them) nor `accelerate launch` options."
        )


def launch(argv: list[str], typed: list[str], resolved: list[str], launch_command_fn=None) -> None:
    """Run `accelerate launch <resolved> --module trl_kimi.cli train <argv without typed>`."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args([*resolved, "--module", "trl_kimi.cli", "train", *_without(argv, typed)])
    (launch_command_fn or launch_command)(args)


def _without(argv: list[str], extra: list[str]) -> list[str]:
    """`argv` with the ordered subsequence `extra` (the accelerate options) taken out."""
    remaining, out = list(extra), []
    for item in argv:
        if remaining and item == remaining[0]:
            remaining.pop(0)
        else:
            out.append(item)
    return out


def main(argv: list[str] | None = None, prog: str = "trl-kimi train") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        make_parser(prog).parse_args_and_config(argv)  # prints the help and exits
    if "LOCAL_RANK" in os.environ:
        # Started by a launcher (`accelerate launch`, torchrun): accelerate options from a YAML --config were used by
        # it; every command-line flag must be ours.
        *dataclasses, _, cli_remaining = make_parser(prog).parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
        if cli_remaining:
            raise ValueError(f"Unknown flags {cli_remaining}; `trl-kimi train --help` lists the flags.")
        train(*dataclasses)
        return 0
    typed, resolved = launch_args(argv, prog)
    if resolved:
        launch(argv, typed, resolved)
        return 0
    train(*make_parser(prog).parse_args_and_config(argv))
    return 0
