r"""Shaping rewards of [Kimi k1.5](https://huggingface.co/papers/2501.12599): the group-relative length penalty (§2.3.3)
and the repetition detector with its penalty (§2.6).

Correctness rewards (math, code) live in [`trl_kimi.verifiers`]. Everything here works on token ids, not characters:
a length is what the model pays for at inference.
"""

from collections.abc import Sequence
from typing import Any


# ---------------------------------------------------------------------------------------------------------- length
def length_penalty(lengths: Sequence[int], correct: Sequence[bool], num_generations: int) -> list[float]:
    r"""
    The Kimi k1.5 length reward of each sample, computed per group of `num_generations` consecutive samples.

    With `min_len`, `max_len` the shortest and longest sample of the group (in tokens):

        λ_i = 0.5 − (len_i − min_len) / (max_len − min_len)          (λ_i = 0 when max_len = min_len)
        len_reward_i = λ_i if sample i is correct, else min(0, λ_i)

    Correct answers are pushed towards the short end of their group; long wrong answers are punished; short wrong
    answers get nothing. The result is added to the correctness reward with a weight (see [`LengthPenaltyReward`]).

    Args:
        lengths (`Sequence[int]`):
            Completion lengths in tokens, `num_generations` consecutive samples per prompt.
        correct (`Sequence[bool]`):
            Whether each sample is correct, same order.
        num_generations (`int`):
            Group size k.

    Returns:
        `list[float]`: the length reward of each sample.

    Example (the spec's worked example):
    ```python
    >>> length_penalty([100, 200, 300, 500], [True, True, False, False], num_generations=4)
    [0.5, 0.25, 0.0, -0.5]
    >>> length_penalty([7, 7, 7, 7], [True, False, True, False], num_generations=4)
    [0.0, 0.0, 0.0, 0.0]

    ```
    """
    if num_generations < 1 or len(lengths) != len(correct) or len(lengths) % num_generations != 0:
        raise ValueError(
            f"Got {len(lengths)} lengths and {len(correct)} correctness values (they must match) for groups of "
            f"num_generations={num_generations}: the penalty is a group quantity and needs whole groups, every "
            "sample of each."
        )
    rewards = []
    for start in range(0, len(lengths), num_generations):
        group = lengths[start : start + num_generations]
        shortest, longest = min(group), max(group)
        for length, ok in zip(group, correct[start : start + num_generations]):
            lam = 0.0 if longest == shortest else 0.5 - (length - shortest) / (longest - shortest)
            rewards.append(lam if ok else min(0.0, lam))
    return rewards


class LengthPenaltyReward:
    r"""
    The length penalty as a reward function for [`~trl_kimi.KimiMirrorDescentTrainer`], with a weight and a warm-up.

    The penalty compares the k samples of a prompt, and TRL may deal a prompt's samples to several processes, so it
    cannot be a per-process reward function. Put it among `reward_funcs` and the Kimi trainer evaluates it after the
    rewards of all processes are gathered, on whole groups, with token lengths from `completion_ids`; calling it from
    another trainer raises an error instead of returning a silently wrong value. It returns

        weight · s(step) · length_penalty(lengths, correct)

    where s is 0 before `warmup_steps` and 1 after it (linearly ramped over `ramp_steps` when that is > 0): the report
    trains without the penalty first, because it slows early learning. Keep this function's entry in `reward_weights`
    at 1 (the weight is here).

    Args:
        correctness_reward (`str`, *optional*):
            Name of the reward function that judges correctness (its `__name__`, e.g. `"math_reward"`); a sample is
            correct when that reward is >= `threshold`. Exactly one of `correctness_reward` and `correctness_column`.
        correctness_column (`str`, *optional*):
            Dataset column holding the correctness of each sample instead (bool or number, compared to `threshold`).
        threshold (`float`, *optional*, defaults to `1.0`):
            Correctness threshold.
        weight (`float`, *optional*, defaults to `0.5`):
            Weight w in r ← r + w · len_reward (the spec's suggestion).
        warmup_steps (`int` or `float`, *optional*, defaults to `0.1`):
            Optimizer steps without the penalty. A float in [0, 1) is a fraction of the run's `max_steps`.
        ramp_steps (`int`, *optional*, defaults to `0`):
            After the warm-up, ramp the scale linearly from 0 to 1 over this many steps (0: a step switch).

    Samples whose correctness is unknown (the correctness reward returned `None` for them) make their whole group's
    length reward `None`: a penalty needs every sample's correctness.

    Example:
    ```python
    >>> penalty = LengthPenaltyReward(correctness_reward="math_reward", weight=0.5, warmup_steps=0)
    >>> penalty.compute(lengths=[100, 200, 300, 500], correct=[True, True, False, False], num_generations=4, step=0)
    [0.25, 0.125, 0.0, -0.25]
    >>> # trainer = KimiMirrorDescentTrainer(model, reward_funcs=[math_reward, penalty], args=..., ...)

    ```
    """

    __name__ = "length_penalty"

    def __init__(
        self,
        correctness_reward: str | None = None,
        correctness_column: str | None = None,
        threshold: float = 1.0,
        weight: float = 0.5,
        warmup_steps: int | float = 0.1,
        ramp_steps: int = 0,
    ):
        if (correctness_reward is None) == (correctness_column is None):
            raise ValueError(
                "Pass exactly one of correctness_reward (the __name__ of a reward function, e.g. 'math_reward') and "
                f"correctness_column (a dataset column); got correctness_reward={correctness_reward!r}, "
                f"correctness_column={correctness_column!r}."
            )
        if (isinstance(warmup_steps, float) and warmup_steps >= 1.0) or warmup_steps < 0 or ramp_steps < 0:
            raise ValueError(
                f"warmup_steps must be an int >= 0 (steps) or a float in [0, 1) (a fraction of max_steps), and "
                f"ramp_steps an int >= 0; got warmup_steps={warmup_steps!r}, ramp_steps={ramp_steps!r}."
            )
        self.correctness_reward = correctness_reward
        self.correctness_column = correctness_column
        self.threshold = threshold
        self.weight = weight
        self.warmup_steps = warmup_steps
        self.ramp_steps = ramp_steps

    def scale(self, step: int, max_steps: int | None = None) -> float:
        """The warm-up factor s(step) in [0, 1]."""
        warmup = self.warmup_steps
        if isinstance(warmup, float):
            if max_steps is None or max_steps <= 0:
                raise ValueError(
                    f"warmup_steps={warmup} is a fraction of max_steps, but max_steps is unknown ({max_steps}); pass "
                    "an int number of steps."
                )
            warmup = round(warmup * max_steps)
        if step < warmup:
            return 0.0
        if self.ramp_steps == 0:
            return 1.0
        return min(1.0, (step - warmup + 1) / self.ramp_steps)

    def compute(
        self,
        lengths: Sequence[int],
        correct: Sequence[bool | None],
        num_generations: int,
        step: int,
        max_steps: int | None = None,
    ) -> list[float | None]:
        """Weighted, warmed-up length rewards of whole groups; `None` for every sample of a group with an unknown
        correctness."""
        factor = self.weight * self.scale(step, max_steps)
        known = [
            all(c is not None for c in correct[i : i + num_generations])
            for i in range(0, len(correct), num_generations)
        ]
        penalties = length_penalty(lengths, [bool(c) for c in correct], num_generations)
        return [factor * p if known[i // num_generations] else None for i, p in enumerate(penalties)]

    def is_correct(self, value: Any) -> bool | None:
        """Correctness of one sample from its correctness reward or column value (`None`/NaN: unknown)."""
        if value is None or value != value:  # NaN is TRL's "the reward function returned None"
            return None
        return float(value) >= self.threshold

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        raise RuntimeError(
            "LengthPenaltyReward is a group reward: it must see every sample of a prompt, which may live on several "
            "processes. Use it in trl_kimi.KimiMirrorDescentTrainer, which evaluates it on the gathered batch, or "
            "call .compute(lengths, correct, num_generations, step) on whole groups yourself."
        )


# ------------------------------------------------------------------------------------------------------ repetition
def find_repetition(token_ids: Sequence[int], ngram_size: int = 32, max_repeats: int = 3) -> int | None:
    r"""
    Where a completion starts repeating itself: the length of the shortest prefix whose last `ngram_size` tokens
    occur `max_repeats` times in that prefix (overlapping occurrences count), or `None` if it never happens.

    The single repetition detector of the package: the repetition penalty uses it, and generation can cut a
    trajectory at the returned length (Kimi k1.5 §2.6: repeated text is detected early and penalised).

    Example:
    ```python
    >>> find_repetition([5, 6, 7, 5, 6, 7, 5, 6, 7, 8], ngram_size=3, max_repeats=3)
    9
    >>> find_repetition([1, 2, 3, 4, 5, 6], ngram_size=2, max_repeats=2) is None
    True

    ```
    """
    if ngram_size < 1 or max_repeats < 2:
        raise ValueError(f"Need ngram_size >= 1 and max_repeats >= 2, got {ngram_size} and {max_repeats}.")
    counts: dict[tuple[int, ...], int] = {}
    ids = list(token_ids)
    for end in range(ngram_size, len(ids) + 1):
        ngram = tuple(ids[end - ngram_size : end])
        counts[ngram] = counts.get(ngram, 0) + 1
        if counts[ngram] >= max_repeats:
            return end
    return None


# The column of the rows TRL scores that holds the partial-rollout buffer's verdict on each trajectory.
ROLLOUT_STATUS_COLUMN = "rollout_status"


class RepetitionPenaltyReward:
    r"""
    Reward: `penalty` for a repeated completion, 0 otherwise; the package's one repetition penalty (Kimi k1.5 §2.6).

    A completion is repeated when [`find_repetition`] finds a repetition in its `completion_ids`, or when its row's
    `rollout_status` column is `"repeated"`: with partial rollouts the buffer cuts a repeated trajectory where its
    detector fired and hands the verdict to the reward functions as that column. Either way a completion is penalised
    once. TRL passes `completion_ids` and the dataset columns, so an instance can be given to `reward_funcs` as is;
    it is picklable (no closure). [`repetition_penalty`] is the instance with the spec's defaults. In
    [`~trl_kimi.KimiMirrorDescentTrainer`] it never makes scorable a sample every other reward function declined.

    Args:
        ngram_size (`int`, *optional*, defaults to `32`):
            n of the repeated n-gram.
        max_repeats (`int`, *optional*, defaults to `3`):
            Occurrences (≥ 2) of an n-gram that count as a repetition.
        penalty (`float`, *optional*, defaults to `-0.5`):
            Reward of a repeated completion.

    Example:
    ```python
    >>> reward = RepetitionPenaltyReward(ngram_size=2, max_repeats=3)
    >>> reward([[1, 2, 1, 2, 1, 2], [1, 2, 3, 4, 5, 6]])
    [-0.5, 0.0]
    >>> reward([[1, 2, 3], [1, 2, 3]], rollout_status=["repeated", "finished"])  # cut by the partial-rollout buffer
    [-0.5, 0.0]

    ```
    """

    __name__ = "repetition_penalty"

    def __init__(self, ngram_size: int = 32, max_repeats: int = 3, penalty: float = -0.5):
        find_repetition([], ngram_size, max_repeats)  # validates both values
        self.ngram_size = ngram_size
        self.max_repeats = max_repeats
        self.penalty = penalty

    def is_repeated(self, completion_ids: Sequence[int], status: str | None = None) -> bool:
        """Whether one completion counts as repeated (its tokens, or the buffer's verdict `status`)."""
        return status == "repeated" or find_repetition(completion_ids, self.ngram_size, self.max_repeats) is not None

    def __call__(
        self, completion_ids: list[list[int]], rollout_status: list[str] | None = None, **kwargs: Any
    ) -> list[float]:
        options = sorted(k for k in ("ngram_size", "max_repeats", "penalty") if k in kwargs)
        if options:
            raise TypeError(
                f"{options} are options of the reward, not of a call: build RepetitionPenaltyReward({options[0]}=...) "
                "and pass that instance to reward_funcs."
            )
        statuses = rollout_status if rollout_status is not None else [None] * len(completion_ids)
        return [
            self.penalty if self.is_repeated(ids, status) else 0.0
            for ids, status in zip(completion_ids, statuses, strict=True)
        ]

    def __repr__(self) -> str:
        return (
            f"RepetitionPenaltyReward(ngram_size={self.ngram_size}, max_repeats={self.max_repeats}, "
            f"penalty={self.penalty})"
        )


repetition_penalty = RepetitionPenaltyReward()
