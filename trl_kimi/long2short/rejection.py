r"""
Shortest rejection sampling and DPO pairs (Kimi k1.5 §2.4, long2short methods 2 and 3).

Both start from the same material: n samples per prompt, each verified and measured in tokens
([`sample_and_verify`]). The selection rules are pure functions of those samples ([`select_shortest_correct`],
[`dpo_pairs_for_prompt`]), so they are tested on hand-made samples; [`shortest_rejection_sampling`] and
[`build_dpo_pairs`] turn them into `datasets.Dataset`s in TRL's formats.

```python
>>> from trl_kimi.long2short import VerifiedSample, select_shortest_correct, dpo_pairs_for_prompt
>>> group = [VerifiedSample("a3:3,b5:8=8", 12, True), VerifiedSample("=8", 3, True), VerifiedSample("=9", 3, False)]
>>> select_shortest_correct(group).text
'=8'
>>> dpo_pairs_for_prompt(group, ratio=1.5)  # (chosen, rejected): the correct one 4x as long, and the wrong one
[('=8', 'a3:3,b5:8=8'), ('=8', '=9')]

```
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

from ..generation import sample_completions


logger = logging.get_logger(__name__)

DEFAULT_LENGTH_RATIO = 1.5  # the report's: a correct answer at least 1.5x as long as the shortest one is rejected


@dataclass
class VerifiedSample:
    """One sampled answer with its length in tokens (EOS included) and its verdict. A truncated answer (no EOS within
    the token cap) is never correct."""

    text: str
    num_tokens: int
    correct: bool
    finished: bool = True


def _is_conversational(prompt: Any) -> bool:
    return isinstance(prompt, list)


def _as_completion(prompt: Any, text: str) -> str | list[dict[str, str]]:
    """A completion in the prompt's format: a string, or one assistant message for a conversational prompt."""
    return [{"role": "assistant", "content": text}] if _is_conversational(prompt) else text


def sample_and_verify(
    model,
    processing_class: PreTrainedTokenizerBase,
    dataset: Dataset,
    reward_func: Callable[..., list[float | None]],
    num_samples: int = 8,
    *,
    threshold: float = 1.0,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    llm: Any = None,
) -> list[list[VerifiedSample]]:
    """
    `num_samples` answers to each prompt of `dataset` (its `prompt` column) with [`~trl_kimi.generation.sample_completions`]
    (HF `generate`, or vLLM when `llm` is given), verified by `reward_func`: `result[i][j]` is sample j of prompt i.

    `reward_func` has TRL's signature: it gets `completions` (strings, or assistant messages for conversational
    prompts), `prompts`, `completion_ids` and every other dataset column (e.g. `solution`, `answer`), each repeated
    per sample. A sample is correct when its reward is >= `threshold` and it finished (a truncated answer is scored
    on an empty text, so it is wrong). A `None` reward counts as wrong and is logged.
    """
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: no prompts to sample.")
    if "prompt" not in dataset.column_names:
        raise ValueError(f"The dataset needs a 'prompt' column; it has {dataset.column_names}.")
    prompts = dataset["prompt"]
    groups = sample_completions(
        model,
        processing_class,
        prompts,
        num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        llm=llm,
    )
    flat = [c for group in groups for c in group]
    repeated_prompts = [p for p, group in zip(prompts, groups) for _ in group]
    columns = {
        k: [v for v, group in zip(dataset[k], groups) for _ in group] for k in dataset.column_names if k != "prompt"
    }
    # A truncated completion has no final answer: it is scored as an empty text.
    completions = [_as_completion(p, c.text if c.finished else "") for p, c in zip(repeated_prompts, flat)]
    rewards = reward_func(completions, prompts=repeated_prompts, completion_ids=[c.token_ids for c in flat], **columns)
    if len(rewards) != len(flat):
        raise ValueError(f"The reward function returned {len(rewards)} rewards for {len(flat)} completions.")
    num_none = sum(r is None for r in rewards)
    if num_none:
        logger.warning(f"The reward function returned None for {num_none} of {len(flat)} samples: counted as wrong.")
    verified = [
        VerifiedSample(c.text, c.num_tokens, r is not None and c.finished and r >= threshold, c.finished)
        for c, r in zip(flat, rewards)
    ]
    return [verified[i * num_samples : (i + 1) * num_samples] for i in range(len(groups))]


# ------------------------------------------------------------------------------------------------- the rules (pure)
def select_shortest_correct(group: Sequence[VerifiedSample]) -> VerifiedSample | None:
    """
    The shortest correct sample of a group (fewest tokens; on a tie, the first sampled), or `None` when no sample is
    correct.

    ```python
    >>> select_shortest_correct([VerifiedSample("=7", 3, False), VerifiedSample("a3:3=3", 7, True)]).text
    'a3:3=3'

    ```
    """
    correct = [s for s in group if s.correct]
    return min(correct, key=lambda s: s.num_tokens) if correct else None  # min keeps the first of equal lengths


def dpo_pairs_for_prompt(
    group: Sequence[VerifiedSample], ratio: float = DEFAULT_LENGTH_RATIO, max_pairs: int | None = None
) -> list[tuple[str, str]]:
    r"""
    The (chosen, rejected) texts of one prompt: chosen = the shortest correct sample; rejected = each distinct wrong
    sample (of any length: a short wrong answer is worse than a longer right one) and each distinct correct sample
    with ``num_tokens >= ratio · chosen.num_tokens`` (inclusive: exactly 1.5x is rejected). Rejected texts keep
    sampling order, wrong and long-correct interleaved as sampled; duplicates count once (they would only re-weight
    the pair). No correct sample: no pair. At most `max_pairs` pairs (`None`: all).

    ```python
    >>> group = [VerifiedSample("aa", 2, True), VerifiedSample("bbb", 3, True), VerifiedSample("cc", 2, False)]
    >>> dpo_pairs_for_prompt(group, ratio=1.5)  # "bbb" is exactly 1.5x as long as "aa": rejected
    [('aa', 'bbb'), ('aa', 'cc')]

    ```
    """
    if ratio <= 1.0:
        raise ValueError(
            f"ratio must be > 1 (a correct answer at least ratio times as long as the shortest is rejected), got "
            f"{ratio}; the report uses 1.5."
        )
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 or None (all pairs), got {max_pairs}.")
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
def _check_samples(dataset: Dataset, samples: Sequence[Sequence[VerifiedSample]] | None, sampling: dict) -> list:
    if samples is None:
        missing = [k for k in ("model", "processing_class", "reward_func") if sampling.get(k) is None]
        if sampling.get("llm") is not None and "model" in missing:
            missing.remove("model")
        if missing:
            raise ValueError(f"Pass either `samples` (from sample_and_verify) or {missing} to sample them.")
        return sample_and_verify(dataset=dataset, **sampling)
    if len(samples) != len(dataset):
        raise ValueError(
            f"Got {len(samples)} groups of samples for {len(dataset)} prompts; pass one group per prompt."
        )
    return list(samples)


def shortest_rejection_sampling(
    dataset: Dataset,
    samples: Sequence[Sequence[VerifiedSample]] | None = None,
    *,
    model=None,
    processing_class: PreTrainedTokenizerBase | None = None,
    reward_func: Callable[..., list[float | None]] | None = None,
    num_samples: int = 8,
    threshold: float = 1.0,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    llm: Any = None,
) -> Dataset:
    r"""
    Shortest rejection sampling: for each prompt, the shortest correct of n samples, as an SFT dataset.

    The report samples each question n = 8 times and fine-tunes on the shortest correct answer: the model keeps the
    answers it can already get right and learns to prefer the cheapest of them. Give the `samples` of
    [`sample_and_verify`] (to reuse them for [`build_dpo_pairs`]) or the `model`, `processing_class` and
    `reward_func` to draw them (`llm`: a `vllm.LLM` for fast sampling).

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
    >>> samples = [[VerifiedSample("a1:1,b2:3=3", 12, True), VerifiedSample("=3", 3, True)],
    ...            [VerifiedSample("=17", 4, False), VerifiedSample("=19", 4, False)]]
    >>> shortest_rejection_sampling(dataset, samples).to_dict()  # the 2nd prompt has no correct answer: skipped
    {'prompt': ['a1b2='], 'completion': ['=3']}

    ```
    """
    samples = _check_samples(
        dataset,
        samples,
        dict(
            model=model,
            processing_class=processing_class,
            reward_func=reward_func,
            num_samples=num_samples,
            threshold=threshold,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed,
            llm=llm,
        ),
    )
    rows = {"prompt": [], "completion": []}
    for prompt, group in zip(dataset["prompt"], samples):
        best = select_shortest_correct(group)
        if best is not None:
            rows["prompt"].append(prompt)
            rows["completion"].append(_as_completion(prompt, best.text))
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
    samples: Sequence[Sequence[VerifiedSample]] | None = None,
    *,
    ratio: float = DEFAULT_LENGTH_RATIO,
    max_pairs_per_prompt: int | None = None,
    model=None,
    processing_class: PreTrainedTokenizerBase | None = None,
    reward_func: Callable[..., list[float | None]] | None = None,
    num_samples: int = 8,
    threshold: float = 1.0,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    llm: Any = None,
) -> Dataset:
    r"""
    Preference pairs for long2short DPO: chosen = the shortest correct sample of a prompt; rejected = each wrong
    sample and each correct one at least `ratio` times as long (inclusive), see [`dpo_pairs_for_prompt`].

    Why: DPO then learns both "right over wrong" and "short over long among right answers", the second being what
    shortens answers without losing accuracy. Give the `samples` of [`sample_and_verify`] or the model, tokenizer and
    `reward_func` to draw them. Prompts without a correct sample, or whose samples give no pair (all correct and
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
    >>> samples = [[VerifiedSample("=3", 3, True), VerifiedSample("=4", 3, False), VerifiedSample("a1:1,b2:3=3", 12, True)]]
    >>> build_dpo_pairs(Dataset.from_dict({"prompt": ["a1b2="]}), samples).to_dict()
    {'prompt': ['a1b2=', 'a1b2='], 'chosen': ['=3', '=3'], 'rejected': ['=4', 'a1:1,b2:3=3']}

    ```
    """
    samples = _check_samples(
        dataset,
        samples,
        dict(
            model=model,
            processing_class=processing_class,
            reward_func=reward_func,
            num_samples=num_samples,
            threshold=threshold,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=batch_size,
            seed=seed,
            llm=llm,
        ),
    )
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
            rows["chosen"].append(_as_completion(prompt, chosen))
            rows["rejected"].append(_as_completion(prompt, rejected))
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
