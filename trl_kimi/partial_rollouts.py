r"""
Partial rollouts with a per-iteration token budget, §2.6 of [Kimi k1.5](https://huggingface.co/papers/2501.12599).

With long chains of thought a synchronous batch waits for its longest answer. The report caps every trajectory at a
**token budget per iteration**; a trajectory still unfinished is kept in a replay buffer and continued at the next
iteration by the newer policy, so long answers never stall a batch. Repeated text is detected, cut and penalised.

[`PartialRolloutBuffer`] is the pure, framework-free part (no model, no trainer): it holds every trajectory in flight,
applies the limits after each generation round (end of sequence, overall maximum length, maximum number of
continuations, repetition), hands out **complete groups only** (all `num_generations` samples of a prompt finished) in
first-in-first-out order, does the token accounting, and saves its state with `state_dict()`.
Two drivers fill an iteration's batch of complete groups: [`generate_iteration`] (the report's budget: one round of at
most `token_budget` new tokens for every running trajectory, then new prompts, one round each, until enough groups
are complete) and [`generate_until_ready`] (rounds over every running trajectory until enough groups are complete; a
trajectory may advance several budgets in one iteration). The trainer glue is
[`~trl_kimi.trainer.partial_rollout_mixin.PartialRolloutMixin`].

Worked token accounting (the spec's table: budget 256, overall maximum 1024, answers of 100, 600 and 1100 tokens if
unlimited; one generation round per iteration):

| iteration | a | b | c | tokens generated | longest decode |
|---|---|---|---|---|---|
| 1 | 100, finished | 256 → buffer | 256 → buffer | 612 | 256 |
| 2 | — | 512 → buffer | 512 → buffer | 512 | 256 |
| 3 | — | 600, finished (88 new) | 768 → buffer | 344 | 256 |
| 4 | — | — | 1024, truncated | 256 | 256 |

Example:
```python
>>> buffer = PartialRolloutBuffer(num_generations=2, token_budget=3, max_length=8, eos_token_ids=[0])
>>> buffer.add([{"prompt": "x"}, {"prompt": "x"}], [[7], [7]])
>>> def generate(inputs, max_new_tokens):  # a fake policy whose answers are 5 tokens long, EOS (0) included
...     out = []
...     for ids in inputs:
...         n = min(max_new_tokens, 5 - (len(ids) - 1))  # ids = the prompt (1 token) + the completion so far
...         out.append([9] * (n - 1) + [0] if len(ids) - 1 + n == 5 else [9] * n)
...     return out, None
>>> buffer.begin_iteration()
1
>>> stats = buffer.generate_round(generate)  # 3 tokens each: unfinished, kept for a continuation
>>> buffer.num_ready_groups(), [t.status for t in buffer.trajectories], stats.tokens_generated
(0, ['running', 'running'], 6)
>>> buffer.begin_iteration()
2
>>> stats = buffer.generate_round(generate)  # the next iteration resumes them: 2 more tokens each
>>> [(t.completion_ids, t.segments) for t in buffer.pop_groups(1)]
[([9, 9, 9, 9, 0], [[1, 3], [2, 2]]), ([9, 9, 9, 9, 0], [[1, 3], [2, 2]])]
>>> len(buffer), buffer.useful_token_fraction
(0, 1.0)

```
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._checks import check_number
from .rewards import find_repetition


__all__ = [
    "ROLLOUT_STATUSES",
    "GenerateFn",
    "PartialRolloutBuffer",
    "RoundStats",
    "Trajectory",
    "PARTIAL_ROLLOUT_SCHEDULES",
    "generate_iteration",
    "generate_until_ready",
    "loss_token_mask",
]

# How an iteration fills its batch of complete groups. "budget_per_iteration" (the report's): each trajectory advances
# at most `token_budget` tokens per iteration; groups not finished wait for the next iteration and new prompts fill
# the batch ([`generate_iteration`]). "rounds_until_full": rounds of at most `token_budget` tokens repeat within the
# iteration until enough groups are complete ([`generate_until_ready`]).
PARTIAL_ROLLOUT_SCHEDULES = ("budget_per_iteration", "rounds_until_full")

# running: to be continued; finished: ended with an end-of-sequence token; truncated: hit the overall maximum length or
# the maximum number of continuations; repeated: cut where the repetition detector fired.
ROLLOUT_STATUSES = ("running", "finished", "truncated", "repeated")

# generate(inputs, max_new_tokens) -> (new token ids per input, their sampling log-probs per token or None). Each input
# is the prompt ids followed by the completion so far: a continuation is a generation from a longer prompt.
GenerateFn = Callable[[list[list[int]], int], tuple[list[list[int]], list[list[float]] | None]]


@dataclass
class Trajectory:
    """
    One sample in flight: a prompt's dataset row, its ids, the completion so far and where each segment came from.

    `segments` lists ``[iteration, num_tokens]`` per generation round, in order: the policy version that generated
    each token is the iteration of its segment. `num_continuations` counts the rounds after the first.
    """

    group_id: int
    sample_index: int
    row: dict[str, Any]
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)
    logprobs: list[float] | None = None
    status: str = "running"
    num_continuations: int = -1  # -1 until the first round: new prompts have not been generated from yet

    @property
    def versions(self) -> list[int]:
        """The iteration (policy version) that generated each completion token."""
        return [iteration for iteration, length in self.segments for _ in range(length)]


@dataclass
class RoundStats:
    """What one generation round did: sequences decoded, how many were resumed from an earlier iteration, tokens
    returned by the generator, tokens thrown away (past the maximum length or after a repetition), the longest decode
    (number of decoding steps the round waited for), the mean new tokens per sequence, and whether it gave
    trajectories a second round in the iteration ([`generate_iteration`] when new prompts cannot fill the batch)."""

    num_sequences: int = 0
    num_resumed: int = 0
    tokens_generated: int = 0
    tokens_discarded: int = 0
    longest_decode: int = 0
    mean_decode: float = 0.0
    over_budget: bool = False  # a further round for trajectories that already had one this iteration


def loss_token_mask(versions: Sequence[int], exclude_stale_segments: bool = False) -> list[int]:
    r"""
    Which completion tokens of one trajectory count in the sequence log-probability Σ log π (1) or not (0).

    Default (the spec's decision, as slime's default): every token. The loss's old log-probs of every token are those
    of πθi, the policy of the iteration that trains the batch (TRL computes them when the batch is scored), so tokens
    sampled by earlier policies are simply off-policy samples of the Kimi objective, which is anchored at πθi.

    `exclude_stale_segments=True` (slime's `--mask-offpolicy-in-partial-rollout`): only the trajectory's **newest
    segment** counts, the tokens generated by the policy that finished it; earlier segments, generated by an older
    policy before the trajectory was continued, are excluded. What matters is when a segment was generated relative to
    the trajectory's own last round, never the iteration at which its group is handed out: a sample that finished
    while a sibling was still running, or a group that finished while the batch already had enough groups, waits in
    the buffer and is trained one or more iterations later; every version then lags the training iteration by the
    same wait, which says nothing about which tokens were continued by a newer policy. Masking against the training
    iteration would drop all its tokens (whole batches with no gradient). A segment left empty (a repetition cut) is
    no round of its own: the newest version is that of the newest token.

    Worked example (budget 2, trained at iteration 4): sample a, 2 tokens at iteration 1, finished; sample b, 2 tokens
    at iteration 1, 2 at iteration 2, 1 at iteration 3, finished; the group waited one iteration in the buffer.

    | sample | versions | all tokens (default) | exclude_stale_segments | masked against iteration 4 (wrong) |
    |---|---|---|---|---|
    | a | 1 1 | 1 1 | 1 1 | 0 0 |
    | b | 1 1 2 2 3 | 1 1 1 1 1 | 0 0 0 0 1 | 0 0 0 0 0 |

    Args:
        versions (`Sequence[int]`):
            The iteration (policy version) that generated each completion token, in order ([`Trajectory.versions`]);
            non-decreasing.
        exclude_stale_segments (`bool`, *optional*, defaults to `False`):
            Keep only the tokens of the newest segment.

    Returns:
        `list[int]`: one 0/1 per token; never all 0 for a non-empty completion.

    Example:
    ```python
    >>> loss_token_mask([1, 1, 2, 2, 3])
    [1, 1, 1, 1, 1]
    >>> loss_token_mask([1, 1, 2, 2, 3], exclude_stale_segments=True)
    [0, 0, 0, 0, 1]
    >>> loss_token_mask([1, 1], exclude_stale_segments=True)  # finished at iteration 1, trained later: all kept
    [1, 1]

    ```
    """
    if not exclude_stale_segments or not versions:
        return [1] * len(versions)
    newest = max(versions)
    return [int(v == newest) for v in versions]


class PartialRolloutBuffer:
    r"""
    Replay buffer of unfinished trajectories and of finished samples waiting for the rest of their group.

    Why a buffer: capping each trajectory at `token_budget` new tokens per iteration keeps every generation round short
    (Kimi k1.5 §2.6); what is unfinished is continued later instead of being thrown away, and a group is scored (mean
    baseline, length penalty) only once all its samples are finished.

    Args:
        num_generations (`int`):
            Samples per prompt, k. Trajectories enter in groups of k consecutive samples of one prompt.
        token_budget (`int`):
            The most new tokens a trajectory gets per generation round, ≥ 1 and ≤ `max_length`.
        max_length (`int`):
            Overall maximum completion length across continuations; a trajectory reaching it is `"truncated"`.
        max_continuations (`int` or `None`, *optional*, defaults to `None`):
            The most rounds after the first; a trajectory still running after them is `"truncated"`. `None`: only
            `max_length` bounds it.
        eos_token_ids (`Sequence[int]`, *optional*, defaults to `()`):
            A completion ending with one of them is `"finished"`.
        repetition_ngram_size (`int` or `None`, *optional*, defaults to `None`):
            n of the repetition detector [`~trl_kimi.rewards.find_repetition`]; `None` turns detection off.
        repetition_max_repeats (`int`, *optional*, defaults to `3`):
            A completion whose last n tokens occurred this many times is cut there and marked `"repeated"`.
        capacity (`int` or `None`, *optional*, defaults to `None`):
            The most trajectories the buffer may hold; adding more raises an error instead of growing without bound.

    Example:
    ```python
    >>> buffer = PartialRolloutBuffer(num_generations=2, token_budget=4, max_length=16, eos_token_ids=[0])
    >>> buffer.add([{"prompt": "p", "answer": "1"}] * 2, [[5, 6]] * 2)
    >>> len(buffer), buffer.num_ready_groups()
    (2, 0)

    ```
    """

    def __init__(
        self,
        num_generations: int,
        token_budget: int,
        max_length: int,
        max_continuations: int | None = None,
        eos_token_ids: Sequence[int] = (),
        repetition_ngram_size: int | None = None,
        repetition_max_repeats: int = 3,
        capacity: int | None = None,
    ):
        check_number("num_generations", num_generations, 1)
        check_number(
            "token_budget",
            token_budget,
            1,
            max_length,
            fix=f"a budget is the number of new tokens per trajectory and iteration, at most max_length={max_length}.",
        )
        check_number("max_continuations", max_continuations, 0, unset="no limit")
        if repetition_ngram_size is not None:
            find_repetition([], repetition_ngram_size, repetition_max_repeats)  # validates both values
        check_number("capacity", capacity, num_generations, unset="unbounded", fix="it must hold at least one group.")
        self.num_generations = num_generations
        self.token_budget = token_budget
        self.max_length = max_length
        self.max_continuations = max_continuations
        self.eos_token_ids = list(eos_token_ids)
        self.repetition_ngram_size = repetition_ngram_size
        self.repetition_max_repeats = repetition_max_repeats
        self.capacity = capacity

        self.trajectories: list[Trajectory] = []  # groups in order of arrival, samples of a group consecutive
        self.iteration = 0  # policy version: incremented by `begin_iteration`, one per generated training batch
        self.next_group_id = 0
        # Running totals for the useful-token fraction: tokens returned by the generator, thrown away, handed out.
        self.tokens_generated = 0
        self.tokens_discarded = 0
        self.tokens_popped = 0

    # ------------------------------------------------------------------ filling and generating
    def __len__(self) -> int:
        return len(self.trajectories)

    def add(self, rows: Sequence[dict[str, Any]], prompt_ids: Sequence[Sequence[int]]) -> None:
        """New prompts: `rows[j]` is sample j's dataset row, k consecutive rows per group with the same prompt ids."""
        k = self.num_generations
        if len(rows) != len(prompt_ids) or len(rows) % k:
            raise ValueError(
                f"add() needs whole groups: got {len(rows)} rows and {len(prompt_ids)} prompts for num_generations={k}."
            )
        if self.capacity is not None and len(self) + len(rows) > self.capacity:
            raise RuntimeError(
                f"The partial-rollout buffer would hold {len(self) + len(rows)} trajectories, above its capacity "
                f"{self.capacity}. Raise the token budget or lower max_completion_length so trajectories finish "
                "sooner."
            )
        for start in range(0, len(rows), k):
            ids = [list(p) for p in prompt_ids[start : start + k]]
            if any(p != ids[0] for p in ids):
                raise ValueError(
                    f"Samples {start}..{start + k - 1} should be the {k} samples of one prompt but their prompt ids "
                    "differ; the batch must hold each prompt num_generations times in a row (TRL's RepeatSampler)."
                )
            for j in range(k):
                self.trajectories.append(
                    Trajectory(self.next_group_id, j, dict(rows[start + j]), ids[j], logprobs=None)
                )
            self.next_group_id += 1

    def begin_iteration(self) -> int:
        """Start a new iteration (a new policy version); returns its number, 1 for the first."""
        self.iteration += 1
        return self.iteration

    def running(self) -> list[Trajectory]:
        """Trajectories still to be continued, oldest group first (so resumed ones come before new prompts)."""
        return [t for t in self.trajectories if t.status == "running"]

    def generate_round(
        self, generate: GenerateFn, trajectories: list[Trajectory] | None = None, call_when_empty: bool = False
    ) -> RoundStats:
        """
        One generation round of at most `token_budget` new tokens for every running trajectory (or `trajectories`),
        then the limits: end of sequence, `max_length`, repetition, `max_continuations`.

        `call_when_empty=True` calls `generate` even with nothing to continue (an empty list): in a multi-process
        run generation may be a collective call (vLLM, FSDP, ZeRO-3) that every process must enter.
        """
        batch = self.running() if trajectories is None else trajectories
        stats = RoundStats(num_sequences=len(batch))
        if not batch and not call_when_empty:
            return stats
        # Nobody needs more than its remaining length: the round is as short as the longest remaining allows.
        max_new = min(self.token_budget, max((self.max_length - len(t.completion_ids) for t in batch), default=1))
        new_ids, new_logprobs = generate([t.prompt_ids + t.completion_ids for t in batch], max_new)
        longest = max(map(len, new_ids), default=0)
        if (
            len(new_ids) != len(batch)
            or (new_logprobs is not None and len(new_logprobs) != len(batch))
            or (longest > max_new)
        ):
            raise RuntimeError(
                f"The generator returned {len(new_ids)} completions for {len(batch)} inputs, the longest {longest} "
                f"tokens: it must return one completion (and its logprobs, if any) of at most max_new_tokens={max_new} "
                "tokens per input."
            )
        decoded = []
        for j, (traj, ids) in enumerate(zip(batch, new_ids, strict=True)):
            ids = list(ids)
            lps = None if new_logprobs is None else list(new_logprobs[j])
            stats.num_resumed += traj.num_continuations >= 0 and traj.segments[-1][0] < self.iteration
            stats.tokens_generated += len(ids)
            decoded.append(len(ids))
            stats.tokens_discarded += self._extend(traj, ids, lps)
        stats.longest_decode = max(decoded, default=0)
        stats.mean_decode = sum(decoded) / len(decoded) if decoded else 0.0
        self.tokens_generated += stats.tokens_generated
        self.tokens_discarded += stats.tokens_discarded
        return stats

    def _extend(self, traj: Trajectory, ids: list[int], logprobs: list[float] | None) -> int:
        """Append one round's tokens to `traj` and update its status; returns the number of tokens thrown away."""
        traj.num_continuations += 1
        discarded = 0
        # An end-of-sequence token ends the trajectory: anything after it is not part of the answer.
        eos_at = next((i for i, t in enumerate(ids) if t in self.eos_token_ids), None)
        if eos_at is not None:
            discarded += len(ids) - eos_at - 1
            ids = ids[: eos_at + 1]
        room = self.max_length - len(traj.completion_ids)
        if len(ids) > room:
            discarded += len(ids) - room
            ids = ids[:room]
        # Sampling log-probs (vLLM) are kept only when every round had them: a partial list would misalign.
        first_round = not traj.completion_ids
        if logprobs is not None and (first_round or traj.logprobs is not None):
            traj.logprobs = (traj.logprobs or []) + logprobs[: len(ids)]
        else:
            traj.logprobs = None
        traj.completion_ids += ids
        traj.segments.append([self.iteration, len(ids)])
        if ids and ids[-1] in self.eos_token_ids:
            traj.status = "finished"
        if self.repetition_ngram_size is not None:
            cut = find_repetition(traj.completion_ids, self.repetition_ngram_size, self.repetition_max_repeats)
            if cut is not None:
                discarded += self._truncate(traj, cut)
                traj.status = "repeated"
        if traj.status == "running" and (
            len(traj.completion_ids) >= self.max_length
            or (self.max_continuations is not None and traj.num_continuations >= self.max_continuations)
        ):
            traj.status = "truncated"
        return discarded

    @staticmethod
    def _truncate(traj: Trajectory, length: int) -> int:
        """Cut the completion to `length` tokens, shortening its segments; returns the number of tokens removed."""
        removed = len(traj.completion_ids) - length
        traj.completion_ids = traj.completion_ids[:length]
        if traj.logprobs is not None:
            traj.logprobs = traj.logprobs[:length]
        kept, segments = 0, []
        for iteration, n in traj.segments:
            n = min(n, length - kept)
            segments.append([iteration, n])
            kept += n
        traj.segments = segments  # a segment may become empty: it still says a round happened
        return removed

    # ------------------------------------------------------------------ handing out complete groups
    def _groups(self) -> list[list[Trajectory]]:
        k = self.num_generations
        return [self.trajectories[i : i + k] for i in range(0, len(self.trajectories), k)]

    def num_ready_groups(self) -> int:
        """Groups whose k samples are all done (finished, truncated or repeated)."""
        return sum(all(t.status != "running" for t in group) for group in self._groups())

    def peek_groups(self, num_groups: int) -> list[Trajectory]:
        """The `num_groups` oldest complete groups (k consecutive samples each), left in the buffer."""
        ready = [g for g in self._groups() if all(t.status != "running" for t in g)]
        if len(ready) < num_groups:
            raise RuntimeError(f"Asked for {num_groups} complete groups, only {len(ready)} are ready.")
        return [t for g in ready[:num_groups] for t in g]

    def pop_groups(self, num_groups: int) -> list[Trajectory]:
        """Remove and return the `num_groups` oldest complete groups: what `peek_groups(num_groups)` returns. The
        trainer peeks, scores, then pops, so a batch whose scoring fails stays in the buffer (nothing is lost)."""
        out = self.peek_groups(num_groups)
        taken = {t.group_id for t in out}
        self.trajectories = [t for t in self.trajectories if t.group_id not in taken]
        self.tokens_popped += sum(len(t.completion_ids) for t in out)
        return out

    @property
    def useful_token_fraction(self) -> float:
        """Tokens that ended in a handed-out (trained) sample / tokens generated, since the start of the run."""
        return self.tokens_popped / self.tokens_generated if self.tokens_generated else 1.0

    # ------------------------------------------------------------------ checkpointing
    def _config(self) -> dict[str, Any]:
        return {
            "num_generations": self.num_generations,
            "token_budget": self.token_budget,
            "max_length": self.max_length,
            "max_continuations": self.max_continuations,
            "eos_token_ids": self.eos_token_ids,
            "repetition_ngram_size": self.repetition_ngram_size,
            "repetition_max_repeats": self.repetition_max_repeats,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same trajectories: plain Python values (`torch.save`-able with
        `weights_only=True`, JSON-able when the dataset rows are)."""
        return {
            "config": self._config(),
            "iteration": self.iteration,
            "next_group_id": self.next_group_id,
            "tokens_generated": self.tokens_generated,
            "tokens_discarded": self.tokens_discarded,
            "tokens_popped": self.tokens_popped,
            "trajectories": [asdict(t) for t in self.trajectories],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; refuses one saved with other settings (it would continue other trajectories)."""
        saved, current = state["config"], self._config()
        diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"The partial-rollout buffer was saved with other settings ({detail}). Resume with the settings of the "
                "run that wrote the checkpoint."
            )
        self.iteration = state["iteration"]
        self.next_group_id = state["next_group_id"]
        self.tokens_generated = state["tokens_generated"]
        self.tokens_discarded = state["tokens_discarded"]
        self.tokens_popped = state["tokens_popped"]
        self.trajectories = [Trajectory(**t) for t in state["trajectories"]]


def generate_until_ready(
    buffer: PartialRolloutBuffer,
    generate: GenerateFn,
    num_groups: int,
    any_process_needs_more: Callable[[bool], bool] | None = None,
    max_rounds: int | None = None,
) -> list[RoundStats]:
    r"""
    Generation rounds over every running trajectory until `num_groups` complete groups are ready: a trajectory may
    advance several budgets in one iteration (every round after the first is marked `over_budget`).

    Resumed trajectories and new prompts share each round (the buffer lists the oldest first). In a multi-process run
    `any_process_needs_more(need)` must return whether any process still needs a round (an all-reduce), so that all
    processes run the same number of rounds: vLLM's generation is a collective call. A process that has enough groups
    keeps continuing its own running trajectories meanwhile (progress, not waste).

    Returns the statistics of each round.
    """
    # Each round brings every running trajectory `token_budget` tokens closer to max_length, so this many suffice.
    limit = max_rounds if max_rounds is not None else -(-buffer.max_length // buffer.token_budget) + 1
    collective = any_process_needs_more is not None

    def next_round(missing: int, done: int) -> RoundStats:
        stats = buffer.generate_round(generate, call_when_empty=collective)
        stats.over_budget = done > 0  # the running trajectories' second round in this iteration, or later
        return stats

    return _rounds_until_ready(buffer, num_groups, next_round, limit, any_process_needs_more)


def _rounds_until_ready(
    buffer: PartialRolloutBuffer,
    num_groups: int,
    next_round: Callable[[int, int], RoundStats],
    limit: int,
    any_process_needs_more: Callable[[bool], bool] | None,
    rounds: list[RoundStats] | None = None,
) -> list[RoundStats]:
    """`next_round(missing groups, rounds so far)` until `num_groups` groups are complete on every process."""
    rounds = list(rounds or [])
    while True:
        missing = num_groups - buffer.num_ready_groups()
        need = missing > 0
        if any_process_needs_more is not None:
            need = any_process_needs_more(need)
        if not need:
            return rounds
        if len(rounds) >= limit:
            raise RuntimeError(
                f"{len(rounds)} generation rounds did not complete {num_groups} groups "
                f"({buffer.num_ready_groups()} ready, {len(buffer.running())} running): the generator is not "
                "making progress."
            )
        rounds.append(next_round(missing, len(rounds)))


def generate_iteration(
    buffer: PartialRolloutBuffer,
    generate: GenerateFn,
    num_groups: int,
    add_groups: Callable[[int], list[Trajectory]],
    max_groups: int | None = None,
    any_process_needs_more: Callable[[bool], bool] | None = None,
    max_rounds: int | None = None,
) -> list[RoundStats]:
    r"""
    One iteration with the report's budget: every running trajectory advances at most `token_budget` tokens.

    A first round continues every running trajectory (resumed ones and the iteration's new prompts). While fewer than
    `num_groups` groups are complete, `add_groups(n)` starts n new groups (it adds them to `buffer` and returns their
    trajectories) and a round generates their first segment only; n is the missing groups divided by the share of
    the iteration's new groups that completed in their first round (at most 4 times the missing groups, and no more
    than `max_groups` groups in the buffer). A group not finished waits for the next iteration. Only when the buffer
    holds `max_groups` groups and the batch is still not full (answers longer than the budget from the start of a
    run) does a further round continue the running trajectories; such a round is marked `over_budget`. In a
    multi-process run `any_process_needs_more(need)` is the all-reduce that keeps every process in the same rounds (a
    process with enough groups makes empty calls).

    Returns the statistics of each round.

    Example:
    ```python
    >>> buffer = PartialRolloutBuffer(num_generations=1, token_budget=2, max_length=8, eos_token_ids=[0])
    >>> def generate(inputs, max_new_tokens):  # a fake policy: the answer to prompt [n] is n tokens, EOS (0) last
    ...     out = []
    ...     for ids in inputs:
    ...         left = ids[0] - (len(ids) - 1)
    ...         out.append([9] * (left - 1) + [0] if left <= max_new_tokens else [9] * max_new_tokens)
    ...     return out, None
    >>> lengths = iter([5, 1, 1, 3])  # answer lengths of the prompts, in order of arrival
    >>> def add_groups(n):
    ...     buffer.add([{"prompt": "p"}] * n, [[next(lengths)] for _ in range(n)])
    ...     return buffer.trajectories[-n:]
    >>> _ = add_groups(2)  # the iteration's new prompts
    >>> buffer.begin_iteration()
    1
    >>> rounds = generate_iteration(buffer, generate, num_groups=2, add_groups=add_groups)
    >>> [(t.status, len(t.completion_ids)) for t in buffer.trajectories]  # 1 of 2 done: 2 more prompts, 1 round
    [('running', 2), ('finished', 1), ('finished', 1), ('running', 2)]
    >>> [(r.num_sequences, r.over_budget) for r in rounds]  # no trajectory got two rounds
    [(2, False), (2, False)]

    ```
    """
    collective = any_process_needs_more is not None
    limit = max_rounds if max_rounds is not None else 4 * (-(-buffer.max_length // buffer.token_budget) + 1)
    first = buffer.generate_round(generate, call_when_empty=collective)
    started = [t for t in buffer.trajectories if t.num_continuations == 0 and t.segments[0][0] == buffer.iteration]
    new_groups = max(len(started) // buffer.num_generations, 1)

    def next_round(missing: int, done: int) -> RoundStats:
        nonlocal new_groups
        held = len(buffer) // buffer.num_generations
        room = 4 * missing if max_groups is None else min(4 * missing, max_groups - held)
        if missing <= 0:  # this process has enough; another does not (a collective call)
            batch, over_budget = [], False
        elif room > 0:
            running = {t.group_id for t in started if t.status == "running"}
            rate = (len({t.group_id for t in started}) - len(running)) / new_groups
            batch = add_groups(min(room, math.ceil(missing / max(rate, 0.25))))
            started.extend(batch)
            new_groups += len(batch) // buffer.num_generations
            over_budget = False
        else:
            batch, over_budget = buffer.running(), True
        stats = buffer.generate_round(generate, trajectories=batch, call_when_empty=collective)
        stats.over_budget = over_budget
        return stats

    return _rounds_until_ready(buffer, num_groups, next_round, limit, any_process_needs_more, rounds=[first])
