"""Long2short RL (Kimi k1.5 §2.4, method 4): a preset of the Kimi trainer, not another trainer."""

import copy
import warnings
from typing import Any

from ..rewards import LengthPenaltyReward
from ..trainer import KimiConfig


def long2short_rl_config(
    base: KimiConfig | dict[str, Any], max_completion_length: int, output_dir: str | None = None
) -> KimiConfig:
    r"""
    The [`KimiConfig`] of a long2short RL phase: `base` with a lower `max_completion_length`.

    The report continues RL from the best long-CoT checkpoint with the length penalty on from the first step and a
    much lower token cap: answers that do not fit score 0 (TRL marks them truncated and the verifiers fail them), and
    among those that fit the penalty pushes towards the shortest correct one. The length penalty is a reward
    function, not a config field: pair this config with [`long2short_length_penalty`] in `reward_funcs`.

    Args:
        base (`KimiConfig` or `dict`):
            The RL settings to start from (a config, copied, never modified; or `KimiConfig` keyword arguments).
        max_completion_length (`int`):
            The new token cap. A warning is raised when it is not lower than `base`'s.
        output_dir (`str`, *optional*):
            Replaces `base`'s output directory.

    Example:
    ```python
    >>> base = {"output_dir": "rl", "use_cpu": True, "max_completion_length": 1024}
    >>> config = long2short_rl_config(base, max_completion_length=256)
    >>> config.max_completion_length
    256
    >>> penalty = long2short_length_penalty("math_reward")
    >>> penalty.scale(step=0), penalty.weight
    (1.0, 0.5)
    >>> # KimiMirrorDescentTrainer(model, reward_funcs=[math_reward, penalty], args=config, train_dataset=...)

    ```
    """
    if max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}.")
    if isinstance(base, KimiConfig):
        # Copy and set rather than re-running __post_init__, which would refuse the derived batch sizes it filled in.
        config = copy.deepcopy(base)
        previous = config.max_completion_length
        config.max_completion_length = max_completion_length
        if output_dir is not None:
            config.output_dir = output_dir
    elif isinstance(base, dict):
        previous = base.get("max_completion_length", KimiConfig.max_completion_length)
        kwargs = {**base, "max_completion_length": max_completion_length}
        if output_dir is not None:
            kwargs["output_dir"] = output_dir
        config = KimiConfig(**kwargs)
    else:
        raise TypeError(f"base must be a KimiConfig or a dict of its arguments, got {type(base).__name__}.")
    if previous is not None and max_completion_length >= previous:
        warnings.warn(
            f"long2short RL: max_completion_length={max_completion_length} is not lower than the base's {previous}; "
            "the report lowers the token cap so that long answers stop fitting.",
            stacklevel=2,
        )
    return config


def long2short_length_penalty(
    correctness_reward: str, weight: float = 0.5, threshold: float = 1.0
) -> LengthPenaltyReward:
    """
    The length penalty of long2short RL: a [`~trl_kimi.LengthPenaltyReward`] switched on from step 0 (no warm-up),
    since the model is already good at the task and only its length is to change. `correctness_reward` is the
    `__name__` of the reward function that decides correctness (e.g. `"math_reward"`); `weight` is the spec's w.

    ```python
    >>> long2short_length_penalty("math_reward").warmup_steps
    0

    ```
    """
    return LengthPenaltyReward(
        correctness_reward=correctness_reward, weight=weight, threshold=threshold, warmup_steps=0
    )
