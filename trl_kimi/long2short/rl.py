"""Long2short RL (Kimi k1.5 §2.4, method 4): a preset of the Kimi trainer, not another trainer."""

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .._checks import check_number
from ..evaluation import score_finished
from ..rewards import LengthPenaltyReward
from ..trainer import KimiConfig


def long2short_rl_config(
    base: KimiConfig | dict[str, Any], max_completion_length: int, output_dir: str | None = None
) -> KimiConfig:
    r"""
    The [`KimiConfig`] of a long2short RL phase: `base` with a lower `max_completion_length`.

    The report continues RL from the best long-CoT checkpoint with the length penalty on from the first step and a
    much lower token cap: answers that do not fit score 0, and among those that fit the penalty pushes towards the
    shortest correct one. Both are reward functions, not config fields: pair this config with the reward functions
    wrapped in [`ZeroIfTruncatedReward`] (a verifier alone reads a `\boxed{}` written before the cut and scores it
    1) and with [`long2short_length_penalty`]. [`~trl_kimi.Long2ShortTrainer`] does both.

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
    >>> # reward_funcs = [ZeroIfTruncatedReward(math_reward, tokenizer.eos_token_id), penalty]
    >>> # KimiMirrorDescentTrainer(model, reward_funcs=reward_funcs, args=config, train_dataset=...)

    ```
    """
    check_number("max_completion_length", max_completion_length, 1, fix="the long2short RL token cap, e.g. 512.")
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


class ZeroIfTruncatedReward:
    r"""
    A TRL reward function that gives 0 to a truncated completion (its `completion_ids` do not end with an EOS token:
    the token cap cut it) and `reward_func`'s reward to the others; `reward_func` never sees the truncated ones.

    Long2short RL lowers the token cap so that long answers stop fitting, and the report gives an answer that does not
    fit no reward. Reward functions are not told about truncation, and a verifier reads a cut answer as text: a
    `\boxed{5}` written before the cap still scores 1. TRL's `mask_truncated_completions=True` is no substitute: it
    drops truncated completions from the loss but keeps their reward in the group mean, so nothing pushes the model
    below the cap. This wrapper applies the rule of [`~trl_kimi.evaluation.score_finished`], the one evaluation uses,
    so an answer cut at the cap scores 0 in training as in `trl-kimi eval`. It takes the wrapped function's
    `__name__`, so a [`~trl_kimi.LengthPenaltyReward`] (which reads correctness by name) and the logged reward
    columns see no difference.

    Args:
        reward_func (`Callable`):
            A TRL reward function (`f(completions, **kwargs) -> list[float | None]`).
        eos_token_id (`int` or `Sequence[int]`):
            The token id(s) that end a completion (the model's generation config and the tokenizer's EOS).

    Example:
    ```python
    >>> from trl_kimi.verifiers import math_reward
    >>> reward = ZeroIfTruncatedReward(math_reward, eos_token_id=2)
    >>> text = "So the area is \\boxed{5}."
    >>> reward(completions=[text, text], completion_ids=[[7, 8, 2], [7, 8, 9]], solution=["5", "5"])  # 2nd: no EOS
    [1.0, 0.0]
    >>> reward.__name__
    'math_reward'

    ```
    """

    def __init__(self, reward_func: Callable[..., list[float | None]], eos_token_id: int | Sequence[int]):
        # A class rather than a closure: TRL may pickle reward functions (e.g. to send them to worker processes).
        self.reward_func = reward_func
        self.eos_token_ids = frozenset([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        if not self.eos_token_ids:
            raise ValueError("eos_token_id is empty; pass the tokenizer's eos_token_id.")
        self.__name__ = getattr(reward_func, "__name__", type(reward_func).__name__)

    def __call__(
        self, completions: list, completion_ids: list[list[int]] | None = None, **kwargs: Any
    ) -> list[float | None]:
        if completion_ids is None:
            raise ValueError(
                f"{type(self).__name__}({self.__name__}) needs completion_ids to see which completions were truncated; "
                "TRL's trainers pass them, pass completion_ids= when calling it yourself."
            )
        finished = [len(ids) > 0 and ids[-1] in self.eos_token_ids for ids in completion_ids]
        return score_finished(
            self.reward_func, finished, completions=completions, completion_ids=completion_ids, **kwargs
        )
