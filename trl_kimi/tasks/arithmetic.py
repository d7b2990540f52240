r"""The embedded task: adding a chain of digits, with a chain of thought of variable length, and a tiny model for it.

Everything is made locally (no Hub): a character-level tokenizer, a small `Qwen2ForCausalLM`, datasets drawn from a
seeded generator, and an exact verifier. Correct answers come in two lengths, which is what the Kimi recipe is about:

- **long** (chain of thought): each term, found by its letter tag, then the running sum; its length grows with the
  number of terms::

      a3b5c8d2=  →  a3:3,b5:8,c8:16,d2:18=18

- **short**: the answer alone, ``=18``.

The demo's warm start imitates imperfect demonstrations, as real SFT data is: half of its answers-without-working are
one too high (`short_slip_rate`), while its chains of thought are right. The SFT model inherits both habits (at
temperature 1 it is right about 48% of the time the long way and 31% the short way, 2 to 7 terms), and RL with the
exact verifier raises accuracy by training the imitated slips away; the length penalty and the long2short methods
then have room to shorten answers where the short form suffices.

Example:
```python
>>> prompt_text([3, 5, 8, 2]), long_solution([3, 5, 8, 2]), short_solution([3, 5, 8, 2])
('a3b5c8d2=', 'a3:3,b5:8,c8:16,d2:18=18', '=18')
>>> addition_reward(["a3:3,b5:8,c8:16,d2:18=18", "=18", "=17", "a3:3,b5:8,c8:16"], answer=["18"] * 4)
[1.0, 1.0, 0.0, 0.0]

```
"""

import random
from collections.abc import Callable

import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from .._checks import check_choice, check_number
from ..evaluation import sample_and_score


__all__ = [
    "addition_reward",
    "evaluate_accuracy",
    "extract_answer",
    "long_solution",
    "make_model",
    "make_rl_dataset",
    "make_sft_dataset",
    "make_tokenizer",
    "short_solution",
    "term_tags",
]

MIN_TERMS = 2
PAD, EOS = "<pad>", "<eos>"
# Every character the task writes. The tokenizer has one token per character, so a length in tokens is the length in
# characters (+1 for the end-of-sequence token).
ALPHABET = list("0123456789=:,abcdefghij")
TAGS = "abcdefghij"  # one per term: the chain of thought finds each term by its tag (an induction-head lookup)
PAD_ID, EOS_ID = 0, 1


# ---------------------------------------------------------------------------------------------------- text formats
def term_tags(num_terms: int, tag_width: int = 1) -> list[str]:
    """
    The tag of each term: one letter (``a`` … ``j``, at most 10 terms) or, with `tag_width=2`, two letters (``aa``,
    ``ab``, … ``jj``, at most 100 terms), which makes long chains (and long answers) possible with the same alphabet.

    Example:
    ```python
    >>> term_tags(3), term_tags(12, tag_width=2)[9:]
    (['a', 'b', 'c'], ['aj', 'ba', 'bb'])
    >>> prompt_text([3, 5], tag_width=2), long_solution([3, 5], tag_width=2)
    ('aa3ab5=', 'aa3:3,ab5:8=8')

    ```
    """
    check_choice("tag_width", tag_width, (1, 2))
    if num_terms > len(TAGS) ** tag_width:
        raise ValueError(f"{num_terms} terms need tag_width=2 (tag_width={tag_width} tags {len(TAGS) ** tag_width}).")
    if tag_width == 1:
        return list(TAGS[:num_terms])
    return [TAGS[i // len(TAGS)] + TAGS[i % len(TAGS)] for i in range(num_terms)]


def prompt_text(terms: list[int], tag_width: int = 1) -> str:
    """Each digit behind its letter tag, then ``=``: ``[3, 5, 8, 2]`` → ``a3b5c8d2=`` (``aa3ab5ac8ad2=`` with
    `tag_width=2`)."""
    return "".join(f"{tag}{t}" for tag, t in zip(term_tags(len(terms), tag_width), terms)) + "="


def long_solution(terms: list[int], slip_at: int | None = None, rechecks: int = 0, tag_width: int = 1) -> str:
    """
    Each term behind its tag, then the running sum, then the answer: ``a3:3,b5:8,c8:16,d2:18=18``.

    `slip_at=i` writes the running sum of step i one too high, and carries the error on to the answer, like a
    careless demonstrator would: ``a3:3,b5:9,c8:17,d2:19=19``. `rechecks=r` works the chain out r more times before
    answering, as an overthinking long-CoT model verifies work that was already right: ``a3:3,b5:8,a3:3,b5:8=8``.
    `tag_width=2` writes two-letter tags (see [`term_tags`]).
    """
    steps, total = [], 0
    for i, (tag, term) in enumerate(zip(term_tags(len(terms), tag_width), terms)):
        total += term + (1 if i == slip_at else 0)
        steps.append(f"{tag}{term}:{total}")
    return ",".join(steps * (1 + rechecks)) + f"={total}"


def short_solution(terms: list[int], slip: bool = False) -> str:
    """The answer alone: ``=18`` (``=19`` with a slip)."""
    return f"={sum(terms) + int(slip)}"


def _problems(
    num: int,
    seed: int,
    max_terms: int,
    exclude: set[str] = frozenset(),
    min_terms: int = MIN_TERMS,
    tag_width: int = 1,
) -> list[list[int]]:
    # The number of terms is drawn uniformly first, so short and long problems are equally frequent.
    if not MIN_TERMS <= min_terms <= max_terms:
        raise ValueError(
            f"Need {MIN_TERMS} <= min_terms <= max_terms, got min_terms={min_terms}, max_terms={max_terms}."
        )
    term_tags(max_terms, tag_width)  # enough tags?
    rng, seen, out = random.Random(seed), set(exclude), []
    num_distinct = sum(10**n for n in range(min_terms, max_terms + 1)) - len(seen)
    if num > num_distinct:
        raise ValueError(f"Only {num_distinct} distinct problems have at most {max_terms} terms; asked for {num}.")
    while len(out) < num:
        terms = [rng.randint(0, 9) for _ in range(rng.randint(min_terms, max_terms))]
        if prompt_text(terms, tag_width) not in seen:
            seen.add(prompt_text(terms, tag_width))
            out.append(terms)
    return out


def make_sft_dataset(
    num: int = 4000,
    seed: int = 0,
    max_terms: int = 7,
    long_fraction: float = 0.5,
    long_slip_rate: float = 0.0,
    short_slip_rate: float = 0.0,
    recheck_rate: float = 0.0,
    max_rechecks: int = 2,
    min_terms: int = MIN_TERMS,
    tag_width: int = 1,
) -> Dataset:
    """
    Prompt/completion pairs in TRL's SFT format; a `long_fraction` of them show the chain of thought.

    Demonstrations can be imperfect, as real ones are: a `long_slip_rate` of the long answers carry one arithmetic slip
    (a running sum one too high, carried on to the answer) and a `short_slip_rate` of the short answers are one too
    high. Answers given without working are the less reliable ones in real data; a model imitating them makes the
    same mistakes at the same rates, which RL with a verifier can train away (e.g. by answering the long way).

    Long answers can also overthink: after working the chain out, a long answer re-checks it (writes it out again)
    with probability `recheck_rate`, then again with the same probability, at most `max_rechecks` times. A re-check
    never changes a demonstrated answer: it is the redundancy long2short methods remove (a model may still lean on
    it, as a second computation before answering).

    `min_terms`/`max_terms` bound the number of terms and `tag_width=2` allows up to 100 (two-letter tags): with
    `long_fraction=1` they set the answer length, e.g. 2–4 terms ≈ 20 tokens, 10–12 ≈ 80, and with
    `recheck_rate=1, max_rechecks=2` 10–12 terms ≈ 230 (the workload of `benchmarks/tau_lengths.py`).
    """
    for name, value in [
        ("long_fraction", long_fraction),
        ("long_slip_rate", long_slip_rate),
        ("short_slip_rate", short_slip_rate),
        ("recheck_rate", recheck_rate),
    ]:
        check_number(name, value, 0, 1, fix="it is a probability.")
    check_number("max_rechecks", max_rechecks, 0)
    rng = random.Random(seed + 1)
    rows = {"prompt": [], "completion": []}
    for terms in _problems(num, seed, max_terms, min_terms=min_terms, tag_width=tag_width):
        if rng.random() < long_fraction:
            slip_at = rng.randrange(len(terms)) if rng.random() < long_slip_rate else None
            rechecks = 0  # (no random draw when recheck_rate is 0: a seed keeps giving the data it gave before)
            while recheck_rate and rechecks < max_rechecks and rng.random() < recheck_rate:
                rechecks += 1
            completion = long_solution(terms, slip_at=slip_at, rechecks=rechecks, tag_width=tag_width)
        else:
            completion = short_solution(terms, slip=rng.random() < short_slip_rate)
        rows["prompt"].append(prompt_text(terms, tag_width))
        rows["completion"].append(completion)
    return Dataset.from_dict(rows)


def make_rl_dataset(
    num: int,
    seed: int,
    max_terms: int = 7,
    exclude: Dataset | None = None,
    min_terms: int = MIN_TERMS,
    tag_width: int = 1,
) -> Dataset:
    """Prompts with their `answer` column, disjoint from the prompts of `exclude` (e.g. the SFT or train split).
    `min_terms` and `tag_width` as for [`make_sft_dataset`]."""
    excluded = set(exclude["prompt"]) if exclude is not None else set()
    problems = _problems(num, seed, max_terms, exclude=excluded, min_terms=min_terms, tag_width=tag_width)
    return Dataset.from_dict(
        {"prompt": [prompt_text(t, tag_width) for t in problems], "answer": [str(sum(t)) for t in problems]}
    )


# ---------------------------------------------------------------------------------------------------- reward
def extract_answer(completion: str) -> str | None:
    """The number after the last ``=``, or `None` when there is none."""
    answer = completion.rsplit("=", 1)[-1].strip()
    return answer if answer.isdigit() else None


def addition_reward(
    completions: list, answer: list[str], completion_ids: list[list[int]] | None = None, **kwargs
) -> list[float]:
    """
    TRL reward function: 1.0 when the final answer equals the `answer` column exactly, else 0.0.

    When TRL passes `completion_ids`, a completion that did not end with the end-of-sequence token was cut by
    `max_completion_length` and scores 0, whatever its last digits say.
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    finished = (
        [True] * len(texts)
        if completion_ids is None
        else [len(ids) > 0 and ids[-1] == EOS_ID for ids in completion_ids]
    )
    return [
        float(done and extract_answer(text) == str(gold))
        for text, gold, done in zip(texts, answer, finished, strict=True)
    ]


# ---------------------------------------------------------------------------------------------------- model
def make_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over the task's alphabet, with `<pad>` and `<eos>`; pads on the left (TRL's need)."""
    vocab = {token: i for i, token in enumerate([PAD, EOS, *ALPHABET])}  # PAD_ID = 0, EOS_ID = 1
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS, padding_side="left")


def make_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    seed: int = 0,
    max_position_embeddings: int = 256,
) -> Qwen2ForCausalLM:
    """A small Qwen2 (about 0.6M parameters by default) initialised from `seed`; `max_position_embeddings` bounds
    prompt + completion (raise it for long chains)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_accuracy(
    model,
    tokenizer: PreTrainedTokenizerFast,
    dataset: Dataset,
    reward_func: Callable = addition_reward,
    num_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """
    Accuracy (pass@1 averaged over `num_samples` samples per prompt), mean completion length in tokens and the
    fraction truncated: the summary of [`~trl_kimi.evaluation.sample_and_score`] with this task's defaults (its
    rules: a truncated answer scores 0, a `None` reward is wrong).

    `temperature=0` decodes greedily (then `num_samples` is 1).
    """
    result = sample_and_score(
        model,
        tokenizer,
        dataset,
        reward_func,
        1 if temperature == 0 else num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
    )
    return {
        "accuracy": result.accuracy,
        "mean_tokens": result.mean_tokens,
        "truncated_fraction": result.truncated_fraction,
    }
