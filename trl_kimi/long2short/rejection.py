r"""
Shortest rejection sampling and DPO pairs (Kimi k1.5 §2.4, long2short methods 2 and 3).

Both start from the same material: n samples per prompt, each scored and measured in tokens
([`~trl_kimi.evaluation.sample_and_score`], the package's one sampling-and-scoring loop). The selection rules are pure
functions of those samples ([`select_shortest_correct`], [`dpo_pairs_for_prompt`]), so they are tested on hand-made
samples; [`shortest_rejection_sampling`] and [`build_dpo_pairs`] turn them into `datasets.Dataset`s in TRL's formats.

```python
>>> from trl_kimi.evaluation import ScoredSample
>>> from trl_kimi.long2short import select_shortest_correct, dpo_pairs_for_prompt
>>> group = [ScoredSample("a3:3,b5:8=8", 12, True), ScoredSample("=8", 3, True), ScoredSample("=9", 3, False)]
>>> select_shortest_correct(group).text
'=8'
>>> dpo_pairs_for_prompt(group, ratio=1.5)  # (chosen, rejected): the correct one 4x as long, and the wrong one
[('=8', 'a3:3,b5:8=8'), ('=8', '=9')]

```
"""

from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from .._checks import check_number
from ..evaluation import ScoredSample, as_completion, sample_and_score


logger = logging.get_logger(__name__)

DEFAULT_LENGTH_RATIO = 1.5  # the report's: a correct answer at least 1.5x as long as the shortest one is rejected


# ------------------------------------------------------------------------------------------------- the rules (pure)
def select_shortest_correct(group: Sequence[ScoredSample]) -> ScoredSample | None:
    """
    The shortest correct sample of a group (fewest tokens; on a tie, the first sampled), or `None` when no sample is
    correct.

    ```python
    >>> select_shortest_correct([ScoredSample("=7", 3, False), ScoredSample("a3:3=3", 7, True)]).text
    'a3:3=3'

    ```
    """
    correct = [s for s in group if s.correct]
    return min(correct, key=lambda s: s.num_tokens) if correct else None  # min keeps the first of equal lengths


def dpo_pairs_for_prompt(
    group: Sequence[ScoredSample], ratio: float = DEFAULT_LENGTH_RATIO, max_pairs: int | None = None
) -> list[tuple[str, str]]:
    r"""
    The (chosen, rejected) texts of one prompt: chosen = the shortest correct sample; rejected = each distinct wrong
    sample (of any length: a short wrong answer is worse than a longer right one) and each distinct correct sample
    with ``num_tokens >= ratio · chosen.num_tokens`` (inclusive: exactly 1.5x is rejected). Rejected texts keep
    sampling order, wrong and long-correct interleaved as sampled; duplicates count once (they would only re-weight
    the pair). No correct sample: no pair. At most `max_pairs` pairs (`None`: all).

    ```python
    >>> group = [ScoredSample("aa", 2, True), ScoredSample("bbb", 3, True), ScoredSample("cc", 2, False)]
    >>> dpo_pairs_for_prompt(group, ratio=1.5)  # "bbb" is exactly 1.5x as long as "aa": rejected
    [('aa', 'bbb'), ('aa', 'cc')]

    ```
    """
    check_number(
        "ratio",
        ratio,
        1,
        low_open=True,
        fix="a correct answer at least ratio times as long as the shortest is rejected; the report uses 1.5.",
    )
    check_number("max_pairs", max_pairs, 1, unset="all pairs")
    chosen = select_shortest_correct(group)
    if chosen is None:
        return []
    pairs, seen = [], {chosen.text}
    for sample in group:
        rejected = not sample.correct or sample.num_tokens >= ratio * chosen.num_tokens
        if rejected and sample.text not in seen:
            seen.add(sample.text)
            pairs.append((chosen.text, sample.text))
    return pairs if max_pairs is None else pairs[:max_pairs]


# ------------------------------------------------------------------------------------------------- datasets
def _check_samples(
    dataset: Dataset,
    samples: Sequence[Sequence[ScoredSample]] | None,
    model,
    processing_class: PreTrainedTokenizerBase | None,
    reward_func: Callable[..., list[float | None]] | None,
    num_samples: int,
    threshold: float,
    sampling: dict[str, Any],
) -> list[list[ScoredSample]]:
    if samples is None:
        needed = {"model": model, "processing_class": processing_class, "reward_func": reward_func}
        missing = [name for name, value in needed.items() if value is None]
        if sampling.get("llm") is not None and "model" in missing:
            missing.remove("model")
        if missing:
            raise ValueError(
                f"Pass either `samples` (from trl_kimi.evaluation.sample_and_score(...).samples) or {missing} to "
                "sample them."
            )
        return sample_and_score(
            model, processing_class, dataset, reward_func, num_samples, success_threshold=threshold, **sampling
        ).samples
    if len(samples) != len(dataset):
        raise ValueError(
            f"Got {len(samples)} groups of samples for {len(dataset)} prompts; pass one group per prompt."
        )
    return [list(group) for group in samples]


def shortest_rejection_sampling(
    dataset: Dataset,
    samples: Sequence[Sequence[ScoredSample]] | None = None,
    *,
    model=None,
    processing_class: PreTrainedTokenizerBase | None = None,
    reward_func: Callable[..., list[float | None]] | None = None,
    num_samples: int = 8,
    threshold: float = 1.0,
    **sampling: Any,
) -> Dataset:
    r"""
    Shortest rejection sampling: for each prompt, the shortest correct of n samples, as an SFT dataset.

    The report samples each question n = 8 times and fine-tunes on the shortest correct answer: the model keeps the
    answers it can already get right and learns to prefer the cheapest of them. Give the `samples` of
    [`~trl_kimi.evaluation.sample_and_score`] (its `.samples`, to reuse them for [`build_dpo_pairs`]) or the `model`,
    `processing_class` and `reward_func` to draw `num_samples` per prompt with it; a sample is correct when its reward
    is ≥ `threshold`, other keyword arguments (`max_new_tokens`, `temperature`, `batch_size`, `seed`, `llm`: a
    `vllm.LLM` for fast sampling, ...) go to `sample_and_score`.

    Prompts with no correct sample are skipped; their number is logged (the trainer also reports it).

    Returns:
        `datasets.Dataset`: TRL's prompt/completion format (`prompt`, `completion`; conversational prompts get an
        assistant message as completion), for [`~trl.SFTTrainer`].

    Raises:
        `ValueError`: no prompt has a correct sample (nothing to fine-tune on).

    Example:
    ```python
    >>> from datasets import Dataset
    >>> dataset = Dataset.from_dict({"prompt": ["a1b2=", "a9b9="]})
    >>> samples = [[ScoredSample("a1:1,b2:3=3", 12, True), ScoredSample("=3", 3, True)],
    ...            [ScoredSample("=17", 4, False), ScoredSample("=19", 4, False)]]
    >>> shortest_rejection_sampling(dataset, samples).to_dict()  # the 2nd prompt has no correct answer: skipped
    {'prompt': ['a1b2='], 'completion': ['=3']}

    ```
    """
    samples = _check_samples(dataset, samples, model, processing_class, reward_func, num_samples, threshold, sampling)
    rows = {"prompt": [], "completion": []}
    for prompt, group in zip(dataset["prompt"], samples):
        best = select_shortest_correct(group)
        if best is not None:
            rows["prompt"].append(prompt)
            rows["completion"].append(as_completion(prompt, best.text))
    skipped = len(dataset) - len(rows["prompt"])
    if not rows["prompt"]:
        raise ValueError(
            f"No correct sample for any of the {len(dataset)} prompts: the rejection-sampling dataset is empty. Check "
            "the reward function and its dataset columns, raise the number of samples or the token cap."
        )
    if skipped:
        logger.warning(
            f"Shortest rejection sampling: {skipped} of {len(dataset)} prompts had no correct sample, skipped."
        )
    return Dataset.from_dict(rows)


def build_dpo_pairs(
    dataset: Dataset,
    samples: Sequence[Sequence[ScoredSample]] | None = None,
    *,
    ratio: float = DEFAULT_LENGTH_RATIO,
    max_pairs_per_prompt: int | None = None,
    model=None,
    processing_class: PreTrainedTokenizerBase | None = None,
    reward_func: Callable[..., list[float | None]] | None = None,
    num_samples: int = 8,
    threshold: float = 1.0,
    **sampling: Any,
) -> Dataset:
    r"""
    Preference pairs for long2short DPO: chosen = the shortest correct sample of a prompt; rejected = each wrong
    sample and each correct one at least `ratio` times as long (inclusive), see [`dpo_pairs_for_prompt`].

    Why: DPO then learns both "right over wrong" and "short over long among right answers", the second being what
    shortens answers without losing accuracy. Give the `samples` of [`~trl_kimi.evaluation.sample_and_score`] or the
    model, tokenizer and `reward_func` to draw them (as in [`shortest_rejection_sampling`]). Prompts without a correct sample, or whose samples give no pair (all correct and
    shorter than `ratio` × the shortest), are skipped and their numbers logged.

    Args:
        ratio (`float`, *optional*, defaults to `1.5`):
            A correct sample with at least `ratio` × the tokens of the chosen one is rejected (> 1).
        max_pairs_per_prompt (`int`, *optional*):
            Keep at most this many pairs per prompt, in sampling order (`None`: all).

    Returns:
        `datasets.Dataset`: TRL's preference format, `prompt` / `chosen` / `rejected`, for [`~trl.DPOTrainer`].

    Raises:
        `ValueError`: no pair at all.

    Example:
    ```python
    >>> from datasets import Dataset
    >>> samples = [[ScoredSample("=3", 3, True), ScoredSample("=4", 3, False), ScoredSample("a1:1,b2:3=3", 12, True)]]
    >>> build_dpo_pairs(Dataset.from_dict({"prompt": ["a1b2="]}), samples).to_dict()
    {'prompt': ['a1b2=', 'a1b2='], 'chosen': ['=3', '=3'], 'rejected': ['=4', 'a1:1,b2:3=3']}

    ```
    """
    samples = _check_samples(dataset, samples, model, processing_class, reward_func, num_samples, threshold, sampling)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    no_correct = no_pair = 0
    for prompt, group in zip(dataset["prompt"], samples):
        pairs = dpo_pairs_for_prompt(group, ratio=ratio, max_pairs=max_pairs_per_prompt)
        if not pairs:
            if select_shortest_correct(group) is None:
                no_correct += 1
            else:
                no_pair += 1
        for chosen, rejected in pairs:
            rows["prompt"].append(prompt)
            rows["chosen"].append(as_completion(prompt, chosen))
            rows["rejected"].append(as_completion(prompt, rejected))
    if not rows["prompt"]:
        raise ValueError(
            f"No DPO pair from {len(dataset)} prompts ({no_correct} without a correct sample, {no_pair} with only "
            f"correct samples shorter than {ratio}x the shortest). Raise the number of samples or lower the ratio."
        )
    if no_correct or no_pair:
        logger.warning(
            f"DPO pairs: {no_correct} of {len(dataset)} prompts had no correct sample and {no_pair} gave no pair "
            f"(every sample correct and under {ratio}x the shortest); skipped."
        )
    return Dataset.from_dict(rows)
