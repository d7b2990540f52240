r"""
Curriculum and prioritised sampling of problems, §2.3.4 of [Kimi k1.5](https://huggingface.co/papers/2501.12599).

TRL draws prompts with [`~trl.trainer.utils.RepeatSampler`]: a fresh permutation per epoch. The report instead

- trains from easy to hard problems (**curriculum**, [`CurriculumSampler`]), with difficulty labels or pass rates
  measured with the current model ([`~trl_kimi.curation.estimate_pass_rates`]);
- samples the problems the model still fails more often (**prioritised**, [`PrioritizedSampler`]): P(i) ∝ 1 − s_i,
  s_i the success rate of problem i, here with a floor ε on the weight so solved problems still come back.

Both keep `RepeatSampler`'s contract, which TRL's group baseline and batch reuse rely on: each chosen prompt is
yielded `num_generations` times in a row, each generated batch `repeat_count` (= `steps_per_generation ×
num_iterations`) times, and every process yields the same sequence. Both are selected with
`KimiConfig(sampling_strategy=...)`; the trainer feeds the success rates (see [`SuccessRateTracker`]) from the rewards
gathered over all processes, so every process holds the same rates.

When an update takes effect. The data loader draws indices ahead of training (accelerate looks one batch ahead, the
Trainer fetches `gradient_accumulation_steps` batches at once, workers prefetch more), so "the current weights" at
training time are not well defined. Here a generated batch is drawn **at once, the first time any of its indices is
requested**, with the success rates as they are at that moment, and is then frozen: later updates never change a
batch already drawn. An update therefore takes effect from the next generated batch *drawn* after it. Every process
runs the same loop with the same look-ahead, so every process draws batch g after the same updates; the number of
updates that batch g saw is recorded ([`KimiSampler.batch_version`]) and the trainer logs g minus it as
`sampling/weights_staleness` (1 with TRL's defaults: batch g + 1 is drawn while batch g is being generated).

Randomness is counter-based: generated batch g draws from a generator seeded with (`seed`, g), so the random state is
the batch counter, and a batch's indices depend only on the seed, g and the distribution it was drawn from.

Example:
```python
>>> sampler = PrioritizedSampler(num_problems=4, num_generations=2, prompts_per_batch=2, epsilon=0.05, seed=0)
>>> indices = list(sampler)  # one epoch: 4 // 2 = 2 generated batches of 2 prompts x 2 generations
>>> len(indices), indices[0] == indices[1]
(8, True)
>>> sampler.update(0, [1.0, 0.0])  # group success of batch 0's two prompts; rates are an EMA from the prior 0.5
>>> [round(s, 2) for s in sampler.tracker.rates[sampler.batch_indices(0)].tolist()]
[0.75, 0.25]

```
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import Sampler

from ._checks import check_choice, check_number


__all__ = [
    "SAMPLING_STRATEGIES",
    "CURRICULUM_SCHEDULES",
    "CurriculumSampler",
    "KimiSampler",
    "PrioritizedSampler",
    "SuccessRateTracker",
    "difficulty_pools",
    "informative_groups",
    "merge_generated_batches",
    "prioritized_weights",
    "read_difficulties",
    "refill_indices",
    "select_groups",
]

SAMPLING_STRATEGIES = ("uniform", "curriculum", "prioritized")
CURRICULUM_SCHEDULES = ("staged", "linear")


# ---------------------------------------------------------------------------------------------------- pure functions
def prioritized_weights(rates: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""
    Sampling weights ``w_i = max(1 − s_i, ε)`` of the prioritised sampler; P(i) = w_i / Σ_j w_j.

    The floor ε keeps solved problems (s_i = 1) in the pool with a small probability, so a problem the model forgets
    is noticed again.

    Example:
    ```python
    >>> prioritized_weights(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), epsilon=0.05).tolist()
    [1.0, 0.5, 0.05]

    ```
    """
    return (1.0 - rates).clamp(min=epsilon)


def difficulty_pools(difficulties: Sequence[float], num_pools: int) -> list[list[int]]:
    r"""
    Splits problem indices into `num_pools` pools of increasing difficulty, of about equal size.

    Problems are ranked by difficulty (index breaks ties); the problem of rank r goes to pool ``⌊r · num_pools / N⌋``,
    except that equal difficulties always share a pool (the pool of their lowest rank), so a pool boundary never
    separates two problems the labels cannot tell apart. Raises when a pool comes out empty (too few distinct
    difficulty values for that many stages).

    Example:
    ```python
    >>> difficulty_pools([2, 7, 3, 2, 5, 7], num_pools=2)
    [[0, 2, 3], [1, 4, 5]]

    ```
    """
    num = len(difficulties)
    order = sorted(range(num), key=lambda i: (difficulties[i], i))
    pools: list[list[int]] = [[] for _ in range(num_pools)]
    pool_of_value: dict[float, int] = {}
    for rank, i in enumerate(order):
        pool = pool_of_value.setdefault(difficulties[i], rank * num_pools // num)
        pools[pool].append(i)
    empty = [k for k, pool in enumerate(pools) if not pool]
    if empty:
        values = sorted(set(difficulties))
        shown = values if len(values) <= 10 else [*values[:5], "...", *values[-5:]]
        raise ValueError(
            f"Curriculum stage {empty[0]} of {num_pools} is empty: {num} problems with {len(values)} distinct difficulty "
            f"values ({shown}) cannot be split into {num_pools} pools of increasing difficulty, because equal "
            "difficulties share a pool. Use fewer stages (fewer curriculum_steps boundaries) or a finer difficulty "
            "column."
        )
    return [sorted(pool) for pool in pools]


def read_difficulties(dataset: Dataset, column: str) -> list[float]:
    """
    The `column` of `dataset` as a list of finite numbers (higher = harder), or a clear error.

    Example:
    ```python
    >>> read_difficulties(Dataset.from_dict({"prompt": ["a", "b"], "terms": [2, 5]}), "terms")
    [2.0, 5.0]

    ```
    """
    if column not in dataset.column_names:
        raise ValueError(
            f"The curriculum needs a difficulty column, but the training dataset has no column {column!r} (its "
            f"columns: {dataset.column_names}). Add one (higher = harder; e.g. 1 - pass_rate from "
            "trl_kimi.curation.estimate_pass_rates) or pass --difficulty_column <name of an existing column>."
        )
    values = dataset[column]
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise ValueError(
                f"Difficulty column {column!r} must hold finite numbers (higher = harder), but row {i} holds "
                f"{value!r} ({type(value).__name__}). Convert it to numbers, e.g. dataset.map(lambda row: "
                f"{{{column!r}: float(...)}}), or pick another --difficulty_column."
            )
    return [float(v) for v in values]


def _batch_generator(seed: int, batch_id: int) -> torch.Generator:
    # Counter-based: the generator of batch g depends only on (seed, g), so no RNG state has to be carried around and
    # a batch can be drawn again (or skipped) without shifting the draws of the batches after it.
    state = np.random.SeedSequence([seed, batch_id]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


# ---------------------------------------------------------------------------------------------------- success rates
class SuccessRateTracker:
    r"""
    Success rate s_i of every problem: an exponential moving average of the mean correctness of its groups.

    ``s_i ← (1 − α) · s_i + α · c``, with c the fraction of the group's samples counted as successes; a problem never
    seen has ``s_i = prior``. A NaN c (no sample of the group could be scored) leaves s_i unchanged.

    Args:
        num_problems (`int`):
            Size of the dataset.
        alpha (`float`, *optional*, defaults to `0.5`):
            EMA weight α of the newest group, in (0, 1].
        prior (`float`, *optional*, defaults to `0.5`):
            Success rate of unseen problems, in [0, 1].

    Example:
    ```python
    >>> tracker = SuccessRateTracker(3, alpha=0.5, prior=0.5)
    >>> tracker.update([0, 0, 2], [1.0, 1.0, 0.0])  # problem 0 twice (in order), problem 2 once
    >>> tracker.rates.tolist(), tracker.seen.tolist()
    ([0.875, 0.5, 0.25], [True, False, True])

    ```
    """

    def __init__(self, num_problems: int, alpha: float = 0.5, prior: float = 0.5):
        self.alpha, self.prior = alpha, prior
        self.rates = torch.full((num_problems,), prior, dtype=torch.float64)  # (N,)
        self.seen = torch.zeros(num_problems, dtype=torch.bool)  # (N,)

    def update(self, indices: Sequence[int], successes: Sequence[float]) -> None:
        if len(indices) != len(successes):
            raise ValueError(f"Got {len(indices)} problem indices but {len(successes)} success values.")
        # In order, so that a problem drawn twice in one batch gets two EMA steps, the same on every process.
        for i, c in zip(indices, successes):
            if not np.isnan(c):
                self.rates[i] = (1.0 - self.alpha) * self.rates[i] + self.alpha * c
                self.seen[i] = True

    def state_dict(self) -> dict[str, Any]:
        return {"rates": self.rates.clone(), "seen": self.seen.clone(), "alpha": self.alpha, "prior": self.prior}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["rates"].shape != self.rates.shape:
            raise ValueError(
                f"The saved success rates cover {state['rates'].numel()} problems but the training dataset has "
                f"{self.rates.numel()}; resume with the dataset the checkpoint was trained on."
            )
        self.rates, self.seen = state["rates"].clone(), state["seen"].clone()


# ---------------------------------------------------------------------------------------------------- samplers
class KimiSampler(Sampler[int]):
    r"""
    Base of the Kimi samplers: draws one generated batch at a time from a distribution over problems, and yields it
    in [`~trl.trainer.utils.RepeatSampler`]'s layout.

    A generated batch g holds `prompts_per_batch` problems drawn with replacement from [`probabilities`] (a subclass
    defines it), each yielded `num_generations` times in a row, the whole batch `repeat_count` times. An epoch is
    ``num_problems // prompts_per_batch`` generated batches, as with `RepeatSampler`, so `num_train_epochs` and
    `max_steps` mean what they mean in TRL; `set_epoch(e)` (which the Trainer calls) places epoch e's batches at
    ``g = e · batches_per_epoch, ...``.

    Batch g is drawn when its first index is requested and frozen (see the module docstring): iterating over it again,
    e.g. when the Trainer skips already-trained batches on resume, yields the same indices and changes nothing.
    [`update`] feeds the success of batch g's groups into [`tracker`], in batch order.

    State: success rates, number of updates, number of batches drawn, and the batches drawn but not yet fully used
    ([`state_dict`] / [`load_state_dict`]); the random state is the batch counter.

    Args:
        num_problems (`int`):
            Size of the dataset.
        num_generations (`int`):
            Samples per prompt (each index is yielded that many times in a row).
        prompts_per_batch (`int`):
            Distinct draws per generated batch: `generation_batch_size // num_generations`.
        repeat_count (`int`, *optional*, defaults to `1`):
            How many times each generated batch is yielded: `steps_per_generation × num_iterations`.
        gradient_accumulation_steps (`int`, *optional*, defaults to `1`):
            Micro-batches per optimizer step; maps a generated batch to the optimizer step that first trains on it
            ([`step_of_batch`]).
        seed (`int`, *optional*, defaults to `0`):
            Seed of every draw; the same on every process.
        success_alpha (`float`, *optional*, defaults to `0.5`), success_prior (`float`, *optional*, defaults to `0.5`):
            EMA weight and prior of the [`SuccessRateTracker`].
    """

    def __init__(
        self,
        num_problems: int,
        num_generations: int,
        prompts_per_batch: int,
        repeat_count: int = 1,
        gradient_accumulation_steps: int = 1,
        seed: int = 0,
        success_alpha: float = 0.5,
        success_prior: float = 0.5,
    ):
        if num_problems < prompts_per_batch:
            raise ValueError(
                f"The training dataset has {num_problems} problems, fewer than the {prompts_per_batch} prompts of one "
                "generated batch (generation_batch_size / num_generations), so not one batch fits in an epoch. Add "
                "problems, or lower per_device_train_batch_size or steps_per_generation."
            )
        self.num_problems = num_problems
        self.num_generations = num_generations
        self.prompts_per_batch = prompts_per_batch
        self.repeat_count = repeat_count
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.seed = seed
        self.tracker = SuccessRateTracker(num_problems, alpha=success_alpha, prior=success_prior)
        self.epoch = 0
        self.num_drawn = 0  # generated batches drawn so far (all epochs)
        self.num_updates = 0  # generated batches whose success has been fed back
        self._batches: dict[int, list[int]] = {}  # drawn and possibly still in use: id -> problem indices
        self._versions: dict[int, int] = {}  # id -> num_updates when it was drawn
        self._placeholders_below = 0  # after load_state_dict: batches already used, only yielded to be skipped

    # ------------------------------------------------------------------ to override
    def probabilities(self, batch_id: int) -> torch.Tensor:
        """Distribution (N,) over problems that generated batch `batch_id` is drawn from; need not be normalised."""
        raise NotImplementedError

    # ------------------------------------------------------------------ batches
    @property
    def batches_per_epoch(self) -> int:
        return self.num_problems // self.prompts_per_batch

    def step_of_batch(self, batch_id: int) -> int:
        """The optimizer step (0-based) at which training on generated batch `batch_id` starts."""
        return batch_id * self.repeat_count // self.gradient_accumulation_steps

    def batch_indices(self, batch_id: int) -> list[int]:
        """The problems of a generated batch, drawn if it is the next one."""
        if batch_id in self._batches:
            return self._batches[batch_id]
        if batch_id != self.num_drawn:
            raise RuntimeError(
                f"Generated batch {batch_id} is not available: {self.num_drawn} batches were drawn and batches before "
                f"{min(self._batches, default=self.num_drawn)} have been used and dropped. Batches are drawn in order "
                "and once; when iterating the sampler yourself, call set_epoch(epoch) before each new pass, as the "
                "Trainer does."
            )
        probs = self.probabilities(batch_id).to(torch.float64)  # (N,)
        if not (torch.isfinite(probs).all() and (probs >= 0).all() and probs.sum() > 0):
            raise ValueError(
                f"{type(self).__name__} produced an invalid distribution for batch {batch_id} (sum "
                f"{probs.sum().item()}, min {probs.min().item()}); weights must be finite, >= 0 and not all zero. "
                "With the prioritised sampler and every problem solved, use a floor prioritized_epsilon > 0."
            )
        drawn = torch.multinomial(
            probs, self.prompts_per_batch, replacement=True, generator=_batch_generator(self.seed, batch_id)
        )
        self._batches[batch_id] = drawn.tolist()
        self._versions[batch_id] = self.num_updates
        self.num_drawn += 1
        return self._batches[batch_id]

    def batch_version(self, batch_id: int) -> int:
        """How many updates (generated batches fed back) the weights of batch `batch_id` included when it was drawn."""
        return self._versions[batch_id]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        first = self.epoch * self.batches_per_epoch
        for batch_id in range(first, first + self.batches_per_epoch):
            if batch_id < self._placeholders_below and batch_id not in self._batches:
                # Used before the checkpoint and dropped: the Trainer iterates over it on resume only to skip it.
                indices = [0] * self.prompts_per_batch
            else:
                indices = self.batch_indices(batch_id)  # drawn now, at the first request of any of its indices
            for _ in range(self.repeat_count):
                for index in indices:
                    for _ in range(self.num_generations):
                        yield index

    def __len__(self) -> int:
        return self.batches_per_epoch * self.prompts_per_batch * self.num_generations * self.repeat_count

    # ------------------------------------------------------------------ feedback
    def update(self, batch_id: int, successes: Sequence[float]) -> None:
        """
        Feeds back the success (in [0, 1], NaN for unknown) of each of batch `batch_id`'s groups, in batch order.

        Batches are fed back in order, once each. It takes effect from the next batch drawn.
        """
        if batch_id != self.num_updates or batch_id not in self._batches:
            raise RuntimeError(
                f"Success of generated batch {batch_id} fed back, but batch {self.num_updates} is the next one and "
                f"{self.num_drawn} were drawn: batches are fed back once each, after being drawn, in the order they "
                "were drawn."
            )
        self.tracker.update(self._batches[batch_id], successes)
        self.num_updates += 1
        # Batch g - 1 may still be partly in use (repeated steps); anything older has been fully consumed.
        for old in [g for g in self._batches if g < self.num_updates - 1]:
            del self._batches[old], self._versions[old]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": type(self).__name__,
            "num_problems": self.num_problems,
            "prompts_per_batch": self.prompts_per_batch,
            "seed": self.seed,
            "num_drawn": self.num_drawn,
            "num_updates": self.num_updates,
            "batches": {g: list(v) for g, v in self._batches.items()},
            "versions": dict(self._versions),
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state["sampler"], state["num_problems"], state["prompts_per_batch"], state["seed"])
        current = (type(self).__name__, self.num_problems, self.prompts_per_batch, self.seed)
        if saved != current:
            raise ValueError(
                f"The checkpoint's sampler (type, dataset size, prompts per batch, seed) = {saved} differs from this "
                f"run's {current}; resume with the sampling_strategy, dataset, batch sizes and seed it was saved with."
            )
        self.tracker.load_state_dict(state["tracker"])
        self.num_drawn, self.num_updates = state["num_drawn"], state["num_updates"]
        self._batches = {int(g): list(v) for g, v in state["batches"].items()}
        self._versions = {int(g): int(v) for g, v in state["versions"].items()}
        self._placeholders_below = min(self._batches, default=self.num_drawn)


class PrioritizedSampler(KimiSampler):
    r"""
    Samples problem i with probability ∝ ``max(1 − s_i, ε)`` (Kimi k1.5 §2.3.4), s_i its tracked success rate.

    Args:
        epsilon (`float`, *optional*, defaults to `0.05`):
            Floor ε in [0, 1] on the weight, so solved problems still come back (ε = 1 is uniform sampling).
        **kwargs:
            As for [`KimiSampler`].

    Example:
    ```python
    >>> sampler = PrioritizedSampler(num_problems=3, num_generations=2, prompts_per_batch=1, epsilon=0.05)
    >>> sampler.tracker.rates = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    >>> (sampler.probabilities(0) / sampler.probabilities(0).sum()).tolist()  # 1 : 0.5 : 0.05
    [0.6451612903225806, 0.3225806451612903, 0.03225806451612903]

    ```
    """

    def __init__(self, *args: Any, epsilon: float = 0.05, **kwargs: Any):
        check_number("epsilon", epsilon, 0, 1, fix="pass e.g. --prioritized_epsilon 0.05.")
        super().__init__(*args, **kwargs)
        self.epsilon = epsilon

    def probabilities(self, batch_id: int) -> torch.Tensor:
        return prioritized_weights(self.tracker.rates, self.epsilon)


class CurriculumSampler(KimiSampler):
    r"""
    Easy to hard (Kimi k1.5 §2.3.4): the problems are split into pools of increasing difficulty
    ([`difficulty_pools`]) and the optimizer step of a batch ([`~KimiSampler.step_of_batch`]) picks the pool(s).

    - `"staged"`: `boundaries` = [b_1 < ... < b_K] in optimizer steps split training into K + 1 stages and the
      problems into K + 1 pools; before step b_1 batches come from the easiest pool, from b_K on from the hardest,
      uniformly within the pool.
    - `"linear"`: `boundaries` = [T]; two pools (easier half, harder half) mixed as ``(1 − λ) · U(easy) + λ · U(hard)``
      with λ = min(1, t / T): all easy at step 0, all hard from step T on.

    The stage depends only on the batch's step, never on when it is drawn, so prefetching and resuming cannot shift
    it.

    Args:
        difficulties (`Sequence[float]`):
            One difficulty per problem, higher = harder (e.g. from [`read_difficulties`]).
        schedule (`str`, *optional*, defaults to `"staged"`):
            `"staged"` or `"linear"`.
        boundaries (`Sequence[int]`):
            Stage boundaries (staged) or the single length T of the ramp (linear), in optimizer steps.
        **kwargs:
            As for [`KimiSampler`] (`num_problems` is taken from `difficulties`).

    Example:
    ```python
    >>> sampler = CurriculumSampler([1, 1, 2, 2, 3, 3], schedule="staged", boundaries=[2, 4], num_generations=2,
    ...     prompts_per_batch=2)
    >>> [sampler.stage_of_batch(g) for g in range(6)], sampler.pools
    ([0, 0, 1, 1, 2, 2], [[0, 1], [2, 3], [4, 5]])
    >>> sorted(set(sampler.batch_indices(0)) | set(sampler.batch_indices(1))) <= [0, 1]
    True

    ```
    """

    def __init__(
        self,
        difficulties: Sequence[float],
        schedule: str = "staged",
        boundaries: Sequence[int] = (),
        **kwargs: Any,
    ):
        check_choice("schedule", schedule, CURRICULUM_SCHEDULES)
        _check_curriculum_steps(schedule, boundaries)
        super().__init__(len(difficulties), **kwargs)
        self.schedule, self.boundaries = schedule, list(boundaries)
        self.pools = difficulty_pools(difficulties, len(boundaries) + 1 if schedule == "staged" else 2)
        self._pool_probs = []  # uniform over each pool, (N,) each
        for pool in self.pools:
            probs = torch.zeros(self.num_problems, dtype=torch.float64)
            probs[pool] = 1.0 / len(pool)
            self._pool_probs.append(probs)

    def stage_of_batch(self, batch_id: int) -> int:
        """Staged schedule: index of the pool batch `batch_id` is drawn from."""
        step = self.step_of_batch(batch_id)
        return sum(step >= b for b in self.boundaries)

    def hard_fraction_of_batch(self, batch_id: int) -> float:
        """Linear schedule: λ, the weight of the harder pool for batch `batch_id`."""
        return min(1.0, self.step_of_batch(batch_id) / self.boundaries[0])

    def probabilities(self, batch_id: int) -> torch.Tensor:
        if self.schedule == "staged":
            return self._pool_probs[self.stage_of_batch(batch_id)]
        hard = self.hard_fraction_of_batch(batch_id)
        return (1.0 - hard) * self._pool_probs[0] + hard * self._pool_probs[1]


def _check_curriculum_steps(schedule: str, boundaries: Sequence[int] | None) -> None:
    # Shared by CurriculumSampler and KimiConfig, so that a bad schedule fails when the config is built.
    if schedule == "linear":
        if boundaries is None or len(boundaries) != 1 or isinstance(boundaries[0], bool) or boundaries[0] < 1:
            raise ValueError(
                f"The linear curriculum needs curriculum_steps = [T], one number of optimizer steps >= 1 over which "
                f"the mix goes from easy to hard; got {boundaries!r}. Pass e.g. --curriculum_steps 100."
            )
        return
    if (
        not boundaries
        or any(isinstance(b, bool) or not isinstance(b, int) for b in boundaries)
        or boundaries[0] < 1
        or any(b >= c for b, c in zip(boundaries, boundaries[1:]))
    ):
        raise ValueError(
            "The staged curriculum needs curriculum_steps: the optimizer steps (integers >= 1) at which the next, "
            f"harder stage starts, strictly increasing, got {list(boundaries) if boundaries else boundaries!r}; an equal or "
            "decreasing boundary would make a stage empty. Pass e.g. --curriculum_steps 100 200 for three stages."
        )


# ---------------------------------------------------------------------------------------------------- dynamic sampling
# Dynamic sampling (beyond the report; KimiConfig(dynamic_sampling=True)): with a mean baseline a group whose rewards
# are all equal has zero advantage and teaches nothing, so the trainer keeps generating groups until the batch holds
# enough informative ones. These are its pure parts; the trainer's `_generate_informative_groups` is the glue.
_REFILL_STREAM = 0x0D15  # keeps the refill draws apart from the samplers' (seed, batch) streams


def informative_groups(
    rewards_per_func: torch.Tensor, reward_weights: torch.Tensor, num_generations: int
) -> torch.Tensor:
    r"""
    Which groups can teach: ``(N, F)`` rewards per function (NaN = "not applicable", TRL's convention) → ``(N / G,)``
    booleans, True when the group's total rewards ``Σ_f w_f r_f`` (NaN-sums, as TRL's; a sample every function
    declined is left out, as from TRL's baseline) are not all equal. A group whose rewards are all equal (all right,
    all wrong, or one scorable sample) has advantages ``r − mean(r) = 0`` and no policy gradient.

    Example:
    ```python
    >>> rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0], [float("nan")], [0.0]])
    >>> informative_groups(rewards, torch.ones(1), num_generations=2).tolist()
    [False, True, False]

    ```
    """
    if rewards_per_func.size(0) % num_generations:
        raise ValueError(f"{rewards_per_func.size(0)} rewards do not make groups of {num_generations}.")
    totals = (rewards_per_func * reward_weights.to(rewards_per_func).unsqueeze(0)).nansum(dim=1)  # (N,)
    totals[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    groups = totals.view(-1, num_generations)  # (B, G)
    scorable = ~torch.isnan(groups)
    high = torch.where(scorable, groups, -torch.inf).max(dim=1).values  # (B,)
    low = torch.where(scorable, groups, torch.inf).min(dim=1).values  # (B,)
    return scorable.any(dim=1) & (high > low)


def select_groups(informative: Sequence[Sequence[bool]], quota: int) -> tuple[list[tuple[int, int]], int]:
    """
    The groups a dynamically sampled batch is made of, as (try, group) pairs: the first `quota` informative groups in
    the order they were generated; when the tries ran out first, the batch is topped up with the earliest
    uninformative groups (what plain GRPO would have trained on). Returns the pairs, in generation order, and how many
    uninformative groups were needed.

    Example:
    ```python
    >>> select_groups([[True, False, False], [False, True, True]], quota=3)
    ([(0, 0), (1, 1), (1, 2)], 0)
    >>> select_groups([[False, True], [False, False]], quota=2)
    ([(0, 0), (0, 1)], 1)

    ```
    """
    flat = [(t, g) for t, groups in enumerate(informative) for g in range(len(groups))]
    good = [(t, g) for t, g in flat if informative[t][g]][:quota]
    filler = [(t, g) for t, g in flat if not informative[t][g]][: quota - len(good)]
    if len(good) + len(filler) < quota:
        raise ValueError(f"{len(flat)} groups were generated, fewer than the {quota} a batch needs.")
    return sorted(good + filler), len(filler)


def refill_indices(
    num_problems: int,
    num_prompts: int,
    seed: int,
    batch_id: int,
    attempt: int,
    rank: int,
    probabilities: torch.Tensor | None = None,
) -> list[int]:
    """
    Problems of a dynamic-sampling refill: `num_prompts` draws with replacement from `probabilities` (uniform when
    `None`), from a generator seeded with (`seed`, `batch_id`, `attempt`, `rank`). Counter-based like the samplers'
    draws, so a resumed run draws the same refills and each process draws its own.

    Example:
    ```python
    >>> refill_indices(10, 3, seed=0, batch_id=4, attempt=1, rank=0) == refill_indices(10, 3, 0, 4, 1, 0)
    True

    ```
    """
    state = np.random.SeedSequence([seed, batch_id, attempt, rank, _REFILL_STREAM]).generate_state(1, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
    if probabilities is None:
        probabilities = torch.ones(num_problems, dtype=torch.float64)
    return torch.multinomial(probabilities.double(), num_prompts, replacement=True, generator=generator).tolist()


# The keys of TRL's generated batch (`_generate_and_score_completions`) a dynamically sampled batch is assembled from.
_LEFT_PADDED = {"prompt_ids", "prompt_mask"}
_RIGHT_PADDED = {
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
}
_PER_SAMPLE = {"advantages"}


def merge_generated_batches(
    outputs: Sequence[dict[str, Any]], picks: Sequence[tuple[int, int]], num_generations: int, pad_token_id: int
) -> dict[str, Any]:
    """
    One generated batch in TRL's layout from the groups `picks` = (output, group) of several: rows ``g·G … g·G + G − 1``
    of each picked output, in order; prompts re-padded on the left (`prompt_ids` with `pad_token_id`, masks with 0),
    completions and per-token values on the right (`completion_ids` with `pad_token_id`, the rest with 0), advantages
    concatenated. `num_items_in_batch` is left out (it is a count over all processes: the caller recomputes it).
    Multimodal inputs are refused.

    Example:
    ```python
    >>> a = {"prompt_ids": torch.tensor([[0, 5], [0, 5]]), "prompt_mask": torch.tensor([[0, 1], [0, 1]]),
    ...      "completion_ids": torch.tensor([[7], [8]]), "completion_mask": torch.ones(2, 1, dtype=torch.long),
    ...      "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(2)}
    >>> b = {**a, "prompt_ids": torch.tensor([[6], [6]]), "prompt_mask": torch.ones(2, 1, dtype=torch.long)}
    >>> merge_generated_batches([a, b], [(1, 0)], num_generations=2, pad_token_id=0)["prompt_ids"].tolist()
    [[6], [6]]

    ```
    """
    unknown = sorted(set().union(*outputs) - _LEFT_PADDED - _RIGHT_PADDED - _PER_SAMPLE - {"num_items_in_batch"})
    if unknown:
        raise ValueError(
            f"Dynamic sampling assembles batches of text prompts and completions; this batch also holds {unknown} "
            "(multimodal inputs), which it cannot regroup. Set dynamic_sampling=False for this model."
        )
    merged: dict[str, Any] = {}
    for key in outputs[0]:
        if key == "num_items_in_batch":
            continue
        rows = [outputs[t][key][g * num_generations : (g + 1) * num_generations] for t, g in picks]
        if key in _PER_SAMPLE:
            merged[key] = torch.cat(rows)
            continue
        width = max(r.size(1) for r in rows)
        value = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
        left = key in _LEFT_PADDED
        merged[key] = torch.cat(
            [
                torch.nn.functional.pad(r, (width - r.size(1), 0) if left else (0, width - r.size(1)), value=value)
                for r in rows
            ]
        )
    return merged
