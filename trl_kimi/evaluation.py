r"""
Evaluation the way the Kimi k1.5 report reports it: pass@1 averaged over n samples per problem (avg@n), pass@k, and
how many tokens the answers took.

Why avg@n: on small benchmarks (AIME has 30 problems) one sample per problem is too noisy to compare checkpoints; the
report samples each problem n times and averages the pass@1 of those samples. pass@k uses the unbiased estimator of
[Chen et al., 2021](https://huggingface.co/papers/2107.03374) on the same n samples, so no extra generation is needed.

[`sample_and_score`] is the package's one "sample n answers and score them" loop (evaluation, rejection sampling, DPO
pairs, pass rates, the arithmetic task, `Long2ShortTrainer.evaluate`), with one set of rules: reward functions get
TRL's arguments, lengths count tokens up to and including EOS, an answer cut by `max_new_tokens` scores 0 without
reaching the verifier, a `None` reward counts as wrong. [`EvalResult`] holds its samples and their summary.

```python
>>> from trl_kimi.evaluation import avg_at_n, pass_at_k
>>> round(pass_at_k(n=4, c=1, k=2), 4)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
0.5
>>> avg_at_n([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # (0.25 + 1.0) / 2
0.625

```
"""

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ._checks import check_number
from .generation import Prompt, sample_completions


logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- pure metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    r"""
    Unbiased pass@k from n samples of which c are correct: ``1 − C(n−c, k) / C(n, k)`` (Chen et al., 2021, eq. 1).

    Computed as ``1 − Π_{i=n−c+1}^{n} (1 − k/i)``, which never forms the large binomials.

    ```python
    >>> pass_at_k(n=10, c=0, k=5), pass_at_k(n=10, c=10, k=1), round(pass_at_k(n=5, c=1, k=1), 6)
    (0.0, 1.0, 0.2)

    ```
    """
    check_number("n (samples per problem)", n, 1)
    check_number("c (correct samples)", c, 0, n, fix=f"at most n={n}.")
    check_number("k", k, 1, n, fix=f"pass@k needs at least k samples per problem, here n={n}.")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def check_sample_sizes(num_samples: int, k: Sequence[int]) -> None:
    """Raises a `ValueError` unless `num_samples >= 1` and every k of pass@k is in [1, `num_samples`]: the check of
    [`sample_and_score`], which `trl-kimi eval` makes before it loads a model."""
    check_number("num_samples (n)", num_samples, 1, fix="pass e.g. --num_samples 4.")
    too_large = sorted(x for x in set(k) if not 1 <= x <= num_samples)
    if too_large:
        raise ValueError(
            f"pass@k needs 1 <= k <= num_samples={num_samples}, got k={too_large}; raise --num_samples to at least "
            f"{max(too_large)} or drop those k."
        )


def avg_at_n(correct: Sequence[Sequence[float]]) -> float:
    """
    pass@1 averaged over the n samples of each problem, then over problems: ``(1/P) Σ_p (1/n) Σ_j r_pj``.

    `correct[p][j]` is the reward (1.0 correct, 0.0 wrong) of sample j of problem p; problems may have different n.
    """
    if not correct or not all(correct):
        raise ValueError(
            f"avg@n needs at least one problem and one sample per problem, got {len(correct)} problems with "
            f"{sorted({len(samples) for samples in correct})} samples: the dataset is empty or num_samples < 1."
        )
    return fmean(fmean(samples) for samples in correct)


def mean_pass_at_k(correct: Sequence[Sequence[float]], k: int, threshold: float = 1.0) -> float:
    """pass@k averaged over problems; a sample is correct when its reward is >= `threshold`."""
    return fmean(pass_at_k(len(s), sum(r >= threshold for r in s), k) for s in correct)


# ---------------------------------------------------------------------------------------------------- sample and score
@dataclass
class ScoredSample:
    """
    One sampled answer, scored. `correct` is the decision (reward ≥ the success threshold, never for a truncated
    answer); `reward` is what counted: the reward function's value, 0.0 for a truncated answer (the reward function
    never saw it), `None` when the reward function said "not applicable" (it counts as wrong). `token_ids` run up to
    and including EOS; hand-made samples (tests, the selection rules) may leave `reward` and `token_ids` out.

    ```python
    >>> ScoredSample("=8", num_tokens=3, correct=True).finished
    True

    ```
    """

    text: str
    num_tokens: int
    correct: bool
    finished: bool = True
    reward: float | None = None
    token_ids: list[int] | None = None


@dataclass
class EvalResult:
    """
    The samples of [`sample_and_score`] and their summary. `samples[p][j]` is sample j of problem p; `pass_at_k` maps
    k to pass@k; token statistics are over all samples; `num_not_applicable` counts `None` rewards (counted wrong).
    `to_dict` is the summary (what `summary.json` and the long2short report hold), without the samples.

    ```python
    >>> group = [ScoredSample("=3", 3, True, reward=1.0), ScoredSample("a1:1,b", 7, False, finished=False, reward=0.0)]
    >>> result = EvalResult.from_samples([group], k=[1, 2])
    >>> result.accuracy, result.pass_at_k, result.mean_tokens, result.truncated_fraction
    (0.5, {1: 0.5, 2: 1.0}, 5.0, 0.5)

    ```
    """

    samples: list[list[ScoredSample]] = field(repr=False)
    accuracy: float  # avg@n: pass@1 averaged over the n samples of each problem
    pass_at_k: dict[int, float]
    mean_tokens: float
    p50_tokens: float
    p90_tokens: float
    p99_tokens: float
    truncated_fraction: float
    num_problems: int
    num_samples: int  # per problem (n)
    num_not_applicable: int = 0

    @classmethod
    def from_samples(cls, samples: Sequence[Sequence[ScoredSample]], k: Sequence[int] = (1,)) -> "EvalResult":
        """Summarise scored samples (one group per problem, each of n samples)."""
        correct = [[float(s.correct) for s in group] for group in samples]
        flat = [s for group in samples for s in group]
        lengths = [s.num_tokens for s in flat]
        return cls(
            samples=[list(group) for group in samples],
            accuracy=avg_at_n(correct),
            pass_at_k={x: mean_pass_at_k(correct, x) for x in sorted(set(k))},
            mean_tokens=fmean(lengths),
            p50_tokens=float(np.percentile(lengths, 50)),
            p90_tokens=float(np.percentile(lengths, 90)),
            p99_tokens=float(np.percentile(lengths, 99)),
            truncated_fraction=fmean(not s.finished for s in flat),
            num_problems=len(samples),
            num_samples=max(len(group) for group in samples),
            num_not_applicable=sum(s.reward is None for s in flat),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "samples"}
        out["pass_at_k"] = {f"pass@{k}": v for k, v in self.pass_at_k.items()}
        return out


def as_completion(prompt: Prompt, text: str) -> Prompt:
    """A completion in its prompt's format, as TRL builds it: the text, or one assistant message for a conversation."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def _discard(*args: Any, **kwargs: Any) -> None:
    """Stands in for TRL's `log_extra` / `log_metric` outside a trainer: there is no completions table to log to."""


def score_finished(
    reward_func: Callable[..., list[float | None]], finished: Sequence[bool], **reward_kwargs: Any
) -> list[float | None]:
    """
    The scoring rule of the package: `reward_func(**reward_kwargs)` on the finished completions only; a truncated one
    (no EOS within the token cap) scores 0.0 and never reaches the reward function.

    Why: a truncated answer has no final answer (a math verifier could still find a `\\boxed{}` written before the
    cut, the code verifier would run half a program), and the report gives overlong answers no reward.
    `reward_kwargs` are TRL's reward arguments; every list as long as `finished` is per completion and is cut to the
    finished ones (so is what the reward function passes to TRL's `log_extra`: truncated rows get `None` there).

    ```python
    >>> score_finished(lambda completions, **kw: [float(len(c)) for c in completions], [True, False],
    ...                completions=["=18", "a3:3,b5"])
    [3.0, 0.0]

    ```
    """
    n = len(finished)
    keep = [i for i, done in enumerate(finished) if done]
    rewards: list[float | None] = [0.0] * n
    if not keep:
        return rewards
    kwargs = {
        name: [value[i] for i in keep] if isinstance(value, list) and len(value) == n else value
        for name, value in reward_kwargs.items()
    }
    log_extra = reward_kwargs.get("log_extra")
    if callable(log_extra) and len(keep) < n:

        def log_extra_of_finished(column: str, values: list) -> None:
            full: list = [None] * n
            for i, value in zip(keep, values, strict=True):
                full[i] = value
            log_extra(column, full)

        kwargs["log_extra"] = log_extra_of_finished
    values = reward_func(**kwargs)
    if len(values) != len(keep):
        raise ValueError(
            f"The reward function {getattr(reward_func, '__name__', reward_func)!r} returned {len(values)} rewards "
            f"for {len(keep)} completions; it must return one per completion."
        )
    for i, value in zip(keep, values):
        rewards[i] = value
    return rewards


def sample_and_score(
    model,
    processing_class: PreTrainedTokenizerBase,
    dataset: Dataset,
    reward_func: Callable[..., list[float | None]],
    num_samples: int = 4,
    k: Sequence[int] = (1,),
    *,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    llm: Any = None,
    progress: bool = False,
    success_threshold: float = 1.0,
    output_dir: str | Path | None = None,
) -> EvalResult:
    r"""
    Sample `num_samples` answers to each `prompt` of `dataset`, score them with `reward_func`, summarise: the one
    "sample and score" loop of the package, behind evaluation (`trl-kimi eval`), rejection sampling and
    DPO pairs (`trl_kimi.long2short`), `Long2ShortTrainer.evaluate`, pass-rate estimation
    ([`~trl_kimi.curation.estimate_pass_rates`]) and the arithmetic task's `evaluate_accuracy`.

    Sampling goes through [`~trl_kimi.generation.sample_completions`] (HF `generate` after
    `torch.manual_seed(seed)`, or vLLM with `llm=`): the same arguments give the same samples. The rules:

    - **Reward arguments are TRL's**: `reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=None,
      log_extra=..., log_metric=..., **columns)`, keywords only, where `completions` are in the format of the prompt
      (a string, or `[{"role": "assistant", "content": ...}]` for a conversational prompt), `completion_ids` run up to
      and including EOS, and `columns` are the dataset's other columns, each repeated per sample.
    - **Truncated answers** (no EOS within `max_new_tokens`) score 0.0 without reaching the reward function
      ([`score_finished`]), and are recorded (`finished=False`, `truncated_fraction`).
    - **`None` rewards** ("not applicable") count as wrong, as in TRL training with one reward function (TRL turns
      `None` into NaN and sums rewards with `nansum`, so the sample trains with reward 0); they are kept as `None` in
      the samples, counted in `num_not_applicable` and logged.
    - A sample is **correct** when it finished and its reward is ≥ `success_threshold`.

    With `output_dir`, it also writes the files of `trl-kimi eval` there
    ([`write_eval_outputs`]: `samples.jsonl`, `summary.json`, `accuracy_vs_tokens.png`).

    Example:
    ```python
    >>> from trl_kimi.tasks import arithmetic
    >>> tokenizer = arithmetic.make_tokenizer()
    >>> model = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    >>> dataset = arithmetic.make_rl_dataset(3, seed=0)
    >>> result = sample_and_score(model, tokenizer, dataset, arithmetic.addition_reward, num_samples=2, k=[1, 2],
    ...                           max_new_tokens=8)
    >>> sorted(result.pass_at_k), result.num_problems, result.num_samples, len(result.samples[0])
    ([1, 2], 3, 2, 2)

    ```
    """
    check_sample_sizes(num_samples, k)
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The dataset needs a 'prompt' column (columns: {dataset.column_names}); convert a benchmark with "
            "trl_kimi.prompts.make_prompt_dataset."
        )

    prompts = dataset["prompt"]
    groups = sample_completions(
        model,
        processing_class,
        prompts,
        num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        batch_size=batch_size,
        seed=seed,
        llm=llm,
        progress=progress,
    )
    owner = [p for p, group in enumerate(groups) for _ in group]  # problem index of each flat sample
    flat = [c for group in groups for c in group]
    # TRL hands the reward functions every column but these three (`_calculate_rewards`).
    columns = {
        name: [values[p] for p in owner]
        for name, values in ((c, dataset[c]) for c in dataset.column_names)
        if name not in ("prompt", "completion", "completion_ids")
    }
    rewards = score_finished(
        reward_func,
        [c.finished for c in flat],
        prompts=[prompts[p] for p in owner],
        completions=[as_completion(prompts[p], c.text) for p, c in zip(owner, flat)],
        completion_ids=[c.token_ids for c in flat],
        trainer_state=None,
        log_extra=_discard,
        log_metric=_discard,
        **columns,
    )
    scored = [
        ScoredSample(
            c.text,
            c.num_tokens,
            c.finished and r is not None and r >= success_threshold,
            c.finished,
            None if r is None else float(r),
            c.token_ids,
        )
        for c, r in zip(flat, rewards)
    ]
    num_none = sum(r is None for r in rewards)
    if num_none:
        logger.warning(
            "The reward function returned None (not applicable) for %d of %d samples; they count as wrong.",
            num_none,
            len(flat),
        )
    starts = [0, *itertools.accumulate(len(group) for group in groups)]
    result = EvalResult.from_samples([scored[a:b] for a, b in zip(starts, starts[1:])], k)
    if output_dir is not None:
        write_eval_outputs(result, dataset, output_dir)
    return result


def write_eval_outputs(result: EvalResult, dataset: Dataset, output_dir: str | Path) -> None:
    """
    The files of `trl-kimi eval` in `output_dir`: `samples.jsonl` (one line per sample: `prompt_id`, `sample_id`,
    `prompt`, `completion`, `num_tokens`, `finished`, `reward` (a `None` reward written as the 0.0 it counts for), and
    the dataset's other columns), `summary.json` (`result.to_dict()`) and `accuracy_vs_tokens.png`.
    `sample_and_score(..., output_dir=...)` calls it.

    Example:
    ```python
    >>> import os, tempfile
    >>> from trl_kimi.tasks import arithmetic
    >>> tok = arithmetic.make_tokenizer()
    >>> out = tempfile.mkdtemp()
    >>> result = sample_and_score(arithmetic.make_model(tok, hidden_size=32, num_layers=1, num_heads=2), tok,
    ...                           arithmetic.make_rl_dataset(3, seed=0), arithmetic.addition_reward,
    ...                           max_new_tokens=8, output_dir=out)
    >>> sorted(os.listdir(out)), result.num_samples
    (['accuracy_vs_tokens.png', 'samples.jsonl', 'summary.json'], 4)

    ```
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = dataset["prompt"]
    columns = {name: dataset[name] for name in dataset.column_names if name != "prompt"}
    flat = [(p, j, s) for p, group in enumerate(result.samples) for j, s in enumerate(group)]
    with open(out / "samples.jsonl", "w") as f:
        for p, j, s in flat:
            row = {
                "prompt_id": p,
                "sample_id": j,
                "prompt": prompts[p],
                "completion": s.text,
                "num_tokens": s.num_tokens,
                "finished": s.finished,
                "reward": s.reward or 0.0,
                **{name: col[p] for name, col in columns.items()},
            }
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    (out / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    plot_accuracy_vs_tokens(
        [s.num_tokens for _, _, s in flat], [float(s.correct) for _, _, s in flat], out / "accuracy_vs_tokens.png"
    )


def accuracy_within_budget(lengths: Sequence[int], correct: Sequence[float], budgets: Sequence[int]) -> list[float]:
    """
    For each token budget B, the fraction of samples that are correct *and* at most B tokens long: the accuracy a
    generation cap of B would have kept (the curve long2short aims to move left).

    ```python
    >>> accuracy_within_budget([3, 5, 9, 9], [1.0, 0.0, 1.0, 1.0], [4, 8, 9])
    [0.25, 0.25, 0.75]

    ```
    """
    return [fmean(float(c >= 1.0 and n <= b) for n, c in zip(lengths, correct)) for b in budgets]


def plot_accuracy_vs_tokens(lengths: Sequence[int], correct: Sequence[float], path: str | Path) -> None:
    """Two panels: accuracy within a token budget (cumulative) and accuracy per completion-length quintile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(set(lengths))
    fig, (ax_budget, ax_bins) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_budget.plot(budgets, accuracy_within_budget(lengths, correct, budgets), drawstyle="steps-post")
    ax_budget.axvline(fmean(lengths), color="gray", linestyle="--", label=f"mean tokens {fmean(lengths):.0f}")
    ax_budget.set(xlabel="token budget B", ylabel="accuracy", title="Correct within B tokens", ylim=(0, 1))
    ax_budget.legend(loc="lower right", fontsize=8)

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    num_bins = min(5, len(order))
    bins = [order[b * len(order) // num_bins : (b + 1) * len(order) // num_bins] for b in range(num_bins)]
    ax_bins.plot(
        [fmean(lengths[i] for i in b) for b in bins], [fmean(correct[i] for i in b) for b in bins], marker="o"
    )
    ax_bins.set(xlabel="mean tokens of the bin", ylabel="accuracy", title="Accuracy by answer length", ylim=(0, 1))
    for ax in (ax_budget, ax_bins):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
