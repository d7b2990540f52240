"""[`Long2ShortConfig`]: the chain of long2short methods and each stage's settings, as command-line flags."""

import json
from dataclasses import dataclass, field
from typing import Any

from .._checks import check_number


METHODS = ("merge", "rejection_sft", "dpo", "rl")


@dataclass
class Long2ShortConfig:
    r"""
    Configuration of the [`Long2ShortTrainer`]: which long2short methods to run, in which order, and each stage's
    hyper-parameters. A plain dataclass that [`~transformers.HfArgumentParser`] and [`~trl.TrlParser`] turn into
    flags (`--methods rejection_sft dpo rl --num_samples 8 ...`).

    Methods of [Kimi k1.5](https://huggingface.co/papers/2501.12599) §2.4, run in the order given, each starting from
    the model the previous one produced:
    `"merge"` (average with the short model, [`~trl_kimi.long2short.merge_models`]), `"rejection_sft"` (TRL's
    `SFTTrainer` on the shortest correct of `num_samples` samples), `"dpo"` (TRL's `DPOTrainer` on shortest-correct vs
    wrong or ≥ `dpo_length_ratio`× longer pairs) and `"rl"` (`KimiMirrorDescentTrainer` with the length penalty from
    step 0 and the lower `rl_max_completion_length`).

    Parameters:
        > Run

        output_dir (`str`):
            Each stage writes `output_dir/<stage>/` (its dataset and its model + tokenizer); `results.json` at the top.
        methods (`list[str]`, *optional*, defaults to `["rejection_sft", "dpo", "rl"]`):
            The chain, each of `"merge"`, `"rejection_sft"`, `"dpo"`, `"rl"` at most once.
        seed (`int`, *optional*, defaults to `0`):
            Seed of sampling and training.
        use_cpu (`bool`, *optional*, defaults to `False`):
            Train on CPU even when an accelerator is available.
        bf16 (`bool`, *optional*, defaults to `False`):
            bf16 mixed precision in the training stages.
        report_to (`str`, *optional*, defaults to `"none"`):
            Logging integration of the training stages (`"wandb"`, `"tensorboard"`, ...).
        logging_steps (`int`, *optional*, defaults to `10`):
            Log every this many optimizer steps.
        gradient_checkpointing (`bool`, *optional*, defaults to `True`):
            Gradient checkpointing in the training stages (TRL's default; turn it off for tiny models).
        push_to_hub (`bool`, *optional*, defaults to `False`):
            Whether the caller pushes the final model ([`Long2ShortTrainer.push_to_hub`]); `train` itself never does.
        hub_model_id (`str`, *optional*):
            Hub repository of the final model (`None`: the name of `output_dir`).

        > Sampling (rejection sampling and DPO pairs) and correctness

        num_samples (`int`, *optional*, defaults to `8`):
            n, samples per prompt (the report's 8).
        sampling_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of those samples.
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Token cap of those samples; a truncated sample is wrong.
        sampling_batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call.
        correctness_threshold (`float`, *optional*, defaults to `1.0`):
            A sample is correct when the first reward function gives it at least this.

        > Merge

        merge_alpha (`float`, *optional*, defaults to `0.5`):
            α in θ = α·θ_long + (1 − α)·θ_short (the report's plain average).

        > Rejection-sampling SFT

        sft_learning_rate (`float`, *optional*, defaults to `1e-5`), sft_num_train_epochs (`float`, *optional*,
        defaults to `1.0`), sft_max_steps (`int`, *optional*, defaults to `-1`: use the epochs),
        sft_per_device_train_batch_size (`int`, *optional*, defaults to `8`):
            The `SFTConfig` of the stage (completion-only loss).

        > DPO

        dpo_length_ratio (`float`, *optional*, defaults to `1.5`):
            A correct sample with at least this many times the tokens of the shortest correct one is rejected
            (inclusive).
        dpo_max_pairs_per_prompt (`int`, *optional*):
            Pairs per prompt at most (`None`: all).
        dpo_beta (`float`, *optional*, defaults to `0.1`), dpo_learning_rate (`float`, *optional*, defaults to
        `1e-6`), dpo_num_train_epochs (`float`, *optional*, defaults to `1.0`), dpo_max_steps (`int`, *optional*,
        defaults to `-1`), dpo_per_device_train_batch_size (`int`, *optional*, defaults to `8`):
            The `DPOConfig` of the stage; the reference model is a frozen copy of the model at the start of the stage.

        > Long2short RL

        rl_max_completion_length (`int`, *optional*, defaults to `512`):
            The lowered token cap of the RL phase.
        rl_length_penalty_weight (`float`, *optional*, defaults to `0.5`):
            w of the length penalty, on from step 0.
        rl_learning_rate (`float`, *optional*, defaults to `1e-6`), rl_max_steps (`int`, *optional*, defaults to
        `100`), rl_num_generations (`int`, *optional*, defaults to `8`), rl_per_device_train_batch_size (`int`,
        *optional*, defaults to `8`), rl_steps_per_generation (`int`, *optional*), rl_tau (`float`, *optional*,
        defaults to `0.1`), rl_temperature (`float`, *optional*, defaults to `1.0`):
            The `KimiConfig` of the stage.

        > Any other option of a stage's TRL config

        sft_overrides, dpo_overrides, rl_overrides (`dict` or JSON `str`, *optional*):
            Extra `SFTConfig` / `DPOConfig` / `KimiConfig` arguments, e.g.
            `--rl_overrides '{"use_vllm": true, "vllm_mode": "colocate"}'`. They win over the fields above.

        > Evaluation before and after each stage (on `eval_dataset`; skipped without one)

        eval_num_samples (`int`, *optional*, defaults to `4`):
            Samples per prompt: accuracy is pass@1 averaged over them.
        eval_temperature (`float`, *optional*, defaults to `1.0`):
            0 decodes greedily.
        eval_max_new_tokens (`int`, *optional*):
            Token cap (`None`: `max_new_tokens`).

    Example:
    ```python
    >>> from transformers import HfArgumentParser
    >>> from trl_kimi import Long2ShortConfig
    >>> argv = ["--output_dir", "runs/l2s", "--methods", "rejection_sft", "rl", "--rl_max_completion_length", "256"]
    >>> (config,) = HfArgumentParser(Long2ShortConfig).parse_args_into_dataclasses(args=argv)
    >>> config.methods, config.num_samples, config.dpo_length_ratio, config.rl_max_completion_length
    (['rejection_sft', 'rl'], 8, 1.5, 256)

    ```
    """

    output_dir: str = field(metadata={"help": "Root directory; each stage writes output_dir/<stage>/."})
    methods: list[str] = field(
        default_factory=lambda: ["rejection_sft", "dpo", "rl"],
        metadata={"help": f"The chain of methods, in order, each at most once; from {list(METHODS)}."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of sampling and training."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when an accelerator is available."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision in the training stages."})
    report_to: str = field(default="none", metadata={"help": "Logging integration of the training stages."})
    logging_steps: int = field(default=10, metadata={"help": "Log every this many optimizer steps."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Gradient checkpointing in the training stages (TRL's default)."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Push the final model to the Hub (Long2ShortTrainer.push_to_hub)."}
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository of the final model (default: the output_dir's name)."}
    )

    # sampling and correctness
    num_samples: int = field(default=8, metadata={"help": "n, samples per prompt for rejection sampling and DPO."})
    sampling_temperature: float = field(default=1.0, metadata={"help": "Temperature of those samples."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Token cap of those samples (truncated = wrong)."})
    sampling_batch_size: int = field(default=64, metadata={"help": "Sequences per generate call."})
    correctness_threshold: float = field(
        default=1.0, metadata={"help": "Correct when the first reward function gives at least this."}
    )

    # merge
    merge_alpha: float = field(default=0.5, metadata={"help": "Weight of the long model in the merge."})

    # rejection-sampling SFT
    sft_learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate of the SFT stage."})
    sft_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of the SFT stage."})
    sft_max_steps: int = field(default=-1, metadata={"help": "Steps of the SFT stage (-1: use the epochs)."})
    sft_per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size of the SFT stage."})

    # DPO
    dpo_length_ratio: float = field(
        default=1.5, metadata={"help": "Correct answers at least this many times the shortest are rejected."}
    )
    dpo_max_pairs_per_prompt: int | None = field(default=None, metadata={"help": "Pairs per prompt at most."})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta."})
    dpo_learning_rate: float = field(default=1e-6, metadata={"help": "Learning rate of the DPO stage."})
    dpo_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of the DPO stage."})
    dpo_max_steps: int = field(default=-1, metadata={"help": "Steps of the DPO stage (-1: use the epochs)."})
    dpo_per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size of the DPO stage."})

    # long2short RL
    rl_max_completion_length: int = field(default=512, metadata={"help": "The lowered token cap of the RL stage."})
    rl_length_penalty_weight: float = field(default=0.5, metadata={"help": "w of the length penalty (from step 0)."})
    rl_learning_rate: float = field(default=1e-6, metadata={"help": "Learning rate of the RL stage."})
    rl_max_steps: int = field(default=100, metadata={"help": "Optimizer steps of the RL stage."})
    rl_num_generations: int = field(default=8, metadata={"help": "k, samples per prompt in the RL stage."})
    rl_per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch size of the RL stage."})
    rl_steps_per_generation: int | None = field(
        default=None, metadata={"help": "Optimizer steps per generated batch (tau acts from the 2nd)."}
    )
    rl_tau: float = field(default=0.1, metadata={"help": "Kimi tau of the RL stage."})
    rl_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the RL stage."})

    # free-form overrides of each stage's TRL config
    sft_overrides: dict | str | None = field(default=None, metadata={"help": "Extra SFTConfig arguments (JSON)."})
    dpo_overrides: dict | str | None = field(default=None, metadata={"help": "Extra DPOConfig arguments (JSON)."})
    rl_overrides: dict | str | None = field(default=None, metadata={"help": "Extra KimiConfig arguments (JSON)."})

    # evaluation
    eval_num_samples: int = field(default=4, metadata={"help": "Samples per eval prompt (pass@1 averaged)."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Eval temperature (0: greedy)."})
    eval_max_new_tokens: int | None = field(default=None, metadata={"help": "Eval token cap (None: max_new_tokens)."})

    def __post_init__(self):
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Unknown long2short methods {unknown}; choose from {list(METHODS)}.")
        if not self.methods:
            raise ValueError(f"methods is empty; pass at least one of {list(METHODS)}.")
        repeated = sorted({m for m in self.methods if self.methods.count(m) > 1})
        if repeated:
            raise ValueError(
                f"Each method may appear once in the chain (each stage writes output_dir/<method>), got {repeated} "
                "more than once."
            )
        check_number("num_samples", self.num_samples, 1, fix="e.g. --num_samples 8.")
        check_number("merge_alpha", self.merge_alpha, 0, 1, fix="the weight of the long model, e.g. 0.5.")
        check_number("dpo_length_ratio", self.dpo_length_ratio, 1, low_open=True, fix="the report uses 1.5.")
        if self.eval_max_new_tokens is None:
            self.eval_max_new_tokens = self.max_new_tokens
        for name in ("sft_overrides", "dpo_overrides", "rl_overrides"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{name} must be a JSON object, got {value!r}: {error}") from error
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict (JSON object), got {type(value).__name__}.")
            setattr(self, name, value or {})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
