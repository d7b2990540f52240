r"""
Curation of the RL prompt set, §2.2 of [Kimi k1.5](https://huggingface.co/papers/2501.12599).

The report keeps a prompt only when its reward can be trusted and earned by reasoning. [`curate`] applies its filters
to a `datasets.Dataset` in the trainer's format (a `prompt` column, string or conversation, and a gold-answer column),
cheapest first, so that the model samples only the prompts that survive the rules:

1. **hackable formats** ([`hackable_format`]): multiple choice, true/false, yes/no, proofs, and rows with no answer.
   A right answer among a few listed options can be guessed, and a proof has no answer a verifier can check.
2. **duplicates** ([`find_duplicates`]): exact (same text up to case and spacing) and near (Jaccard similarity of
   character 5-gram sets ≥ a threshold); the first copy is kept.
3. **evaluation overlap** ([`eval_overlap`]): a prompt sharing a word n-gram (13 by default) with an evaluation set.
4. **guessable** ([`find_guessable`]): the model is asked for the answer alone (an answer-only instruction and a small
   token cap); if any of N tries (the report: 8) is correct, the prompt rewards guessing and is dropped.
5. **difficulty** ([`estimate_pass_rates`]): the model's pass rate over k samples at a high temperature (the report:
   10); `difficulty = 1 − pass_rate` (higher = harder), the column the curriculum sampler reads.

The result holds every row with `pass_rate`, `difficulty` and `drop_reason` (`None` for kept rows; the first rule that
applies otherwise), the kept subset, a summary, and writes them with a histogram of difficulty and a dataset card
([`CurationResult.save`], [`CurationResult.push_to_hub`]). `trl-kimi curate` is the command line.

Example:
```python
>>> hackable_format("Is 7 prime? Answer yes or no.", "yes"), hackable_format("What is 3 + 4?", "7")
('yes_no', None)
>>> find_duplicates(["What is 3 + 4?", "what is 3  + 4?", "What is 5 + 6?"])
[None, 'duplicate', None]

```
"""

import json
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ._checks import check_number
from .evaluation import sample_and_score
from .prompts import BOXED_INSTRUCTION


__all__ = [
    "ANSWER_ONLY_INSTRUCTION",
    "DROP_REASONS",
    "CurationConfig",
    "CurationResult",
    "answer_only_prompt",
    "curate",
    "difficulty_label",
    "estimate_pass_rates",
    "eval_overlap",
    "final_answer",
    "find_duplicates",
    "find_guessable",
    "hackable_format",
    "prompt_text",
]

# In the order the rules run; a row gets the first that applies.
DROP_REASONS = (
    "no_answer",
    "multiple_choice",
    "true_false",
    "yes_no",
    "proof",
    "duplicate",
    "near_duplicate",
    "eval_overlap",
    "guessable",
)
HACKABLE_FORMATS = ("multiple_choice", "true_false", "yes_no", "proof")
ANSWER_ONLY_INSTRUCTION = (
    "Do not explain and do not show any work. Reply with the final answer only, within \\boxed{}."
)
# Pass-rate buckets of the summary: (label, lowest pass rate of the bucket); 1 and 0 are buckets of their own.
DIFFICULTY_LABELS = (("solved", 1.0), ("easy", 0.7), ("medium", 0.3), ("hard", 1e-9), ("unsolved", 0.0))
_NUM_HISTOGRAM_BINS = 10


# ---------------------------------------------------------------------------------------------------- text
def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    r"""
    The problem as written: a string prompt, or the content of the last user message of a conversation, without the
    package's step-by-step instruction ([`~trl_kimi.prompts.BOXED_INSTRUCTION`]), which every prompt built by
    `make_prompt_dataset` shares and which would make short problems look alike.

    ```python
    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}])
    '2 + 2?'

    ```
    """
    if isinstance(prompt, str):
        text = prompt
    else:
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        if not users or not isinstance(users[-1], str):
            raise ValueError(
                f"A conversational prompt needs a user message with text content, got {str(prompt)[:120]!r}."
            )
        text = users[-1]
    return text.replace(BOXED_INSTRUCTION, "").strip()


def final_answer(solution: Any) -> str:
    """The final answer of a gold solution: after the last `####` (GSM8K), else the whole text, stripped."""
    text = "" if solution is None else str(solution)
    return text.rsplit("####", 1)[-1].strip()


def _normalise(text: str) -> str:
    # NFKC folds full-width digits and ligatures; case and runs of whitespace never make two prompts different.
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


def _bare_answer(answer: str) -> str:
    """`\\text{(C)}` → `C`, `$\\textbf{Yes}$.` → `Yes`: the answer without LaTeX wrappers, `$`, quotes, brackets."""
    text = answer
    for _ in range(3):  # nested wrappers: \text{\textbf{(C)}}
        text = _WRAPPERS.sub(r"\1", text)
    return text.strip().strip("$ .").strip("()[]\"'“”` ").strip()


# ---------------------------------------------------------------------------------------------------- formats
# Options written as "(A)" (not "dot(A)" in Asymptote code, hence no word character or backslash before it; also
# inside \textbf{(A)}) or as "A)" at the start of a line. Upper case only: "(x - a)" and "(a, b)" are maths.
_OPTION = r"(?:(?<![\w\\])\(\s*{0}\s*\)|(?m:^\s*{0}\s*\)))"
_TRUE_FALSE_ANSWERS = {"true", "false"}
_YES_NO_ANSWERS = {"yes", "no"}
# An instruction to answer true/false or yes/no: at the start of a sentence, a line or a bracket, optionally after
# "answer (with)", "enter", ... ("True or false: ...", "(yes/no)", 'Enter "yes" or "no".'), not "7 more free response
# than true/false questions".
_CHOICE_INSTRUCTION = (
    r"(?:^|[.!?:;(\n]\s*)(?:(?:answer|reply|respond|enter|write|say|state)\s+(?:with\s+)?)?"
    r"[\"“'‘]?{0}[\"”'’]?\s*(?:or|/)\s*[\"“'‘]?{1}\b"
)
_TRUE_FALSE_PROMPT = re.compile(_CHOICE_INSTRUCTION.format("true", "false"), re.IGNORECASE)
_YES_NO_PROMPT = re.compile(_CHOICE_INSTRUCTION.format("yes", "no"), re.IGNORECASE)
# A sentence (or line) that starts by asking for a proof: "Prove ...", "Show that ...", "Verify that ...".
_PROOF_PROMPT = re.compile(
    r"(?:^|[.!?:]\s+|\n\s*)(?:prove\b|(?:show|verify|demonstrate)\s+that\b|proof\s*:)", re.IGNORECASE
)
_WORD_ANSWER = re.compile(r"[a-z][a-z\- ]{0,30}")


def _has_option_list(problem: str) -> bool:
    return all(re.search(_OPTION.format(letter), problem) for letter in "AB")


def _answer_in_listed_options(problem: str, answer: str) -> bool:
    # A word answer offered in the problem among alternatives joined by "or" / commas ("even, odd, or neither";
    # "north, south, east or west"): the answer is a pick from the list.
    if not _WORD_ANSWER.fullmatch(answer) or not re.search(r"\bor\b", problem, re.IGNORECASE):
        return False
    word = re.escape(answer)
    quote = r"[\"'“”‘’]?"
    after = rf"\b{word}\b{quote}\s*(?:,|\bor\b|/)"
    before = rf"(?:,|\bor\b|/)\s*{quote}\s*\b{word}\b"
    return re.search(f"{after}|{before}", problem, re.IGNORECASE) is not None


def hackable_format(problem: str, answer: Any) -> str | None:
    r"""
    The hackable format of a problem (Kimi k1.5 §2.2), or `None` when its format is fine.

    Rules, on the problem text and the final answer ([`final_answer`]) stripped of `\text{}`/`\textbf{}`, `$`,
    brackets, quotes and case:

    - `"no_answer"`: the final answer is empty (nothing to verify).
    - `"true_false"`: the answer is true/false, or a sentence, line or bracket of the problem starts with "true or
      false" / "true/false" (optionally after "answer (with)", "enter", ...).
    - `"yes_no"`: the same with yes/no.
    - `"multiple_choice"`: the answer is a single option letter A–H (AQuA's `correct`, MATH's `\text{(C)}`); or the
      problem lists options `(A) … (B)` (also `\textbf{(A)}`; not `dot(A)`) or `A) …` / `B) …` at line starts; or
      the answer is a word the problem
      offers among alternatives joined by commas / "or" ("even, odd, or neither").
    - `"proof"`: a sentence or line of the problem starts with "Prove", "Show that", "Verify that", "Demonstrate
      that" or "Proof:" (so "records show that ..." and "the dough needs 2 hours to proof" are kept).

    Example:
    ```python
    >>> hackable_format(r"Find the curve $r = 2$. (A) Line (B) Circle (C) Parabola", r"\text{(B)}")
    'multiple_choice'
    >>> hackable_format("Is f(x) = x^3 even, odd, or neither?", r"\text{odd}")
    'multiple_choice'
    >>> hackable_format("For how many n is it true that 2^n < 100?", "7"), hackable_format("Prove that 2 > 1.", "")
    (None, 'no_answer')

    ```
    """
    bare = _bare_answer(final_answer(answer))
    answer = bare.lower()
    if not answer:
        return "no_answer"
    if answer in _TRUE_FALSE_ANSWERS or _TRUE_FALSE_PROMPT.search(problem):
        return "true_false"
    if answer in _YES_NO_ANSWERS or _YES_NO_PROMPT.search(problem):
        return "yes_no"
    if (
        re.fullmatch(r"[A-H]", bare)  # an option letter (a lowercase letter is more likely a variable)
        or _has_option_list(problem)
        or _answer_in_listed_options(problem, answer)
    ):
        return "multiple_choice"
    if _PROOF_PROMPT.search(problem):
        return "proof"
    return None


# ---------------------------------------------------------------------------------------------------- duplicates
_SHINGLE_SIZE = 5  # characters: short enough for one-line prompts, long enough that shared words are not enough
_MINHASH_PRIME = (1 << 31) - 1  # hash values and coefficients stay below 2**31, so a·x + b fits in 64 bits
_MINHASH_BANDS, _MINHASH_ROWS = 16, 4  # 64 hashes; a pair at Jaccard 0.8 becomes a candidate with p ≈ 0.9998


def _shingles(text: str) -> set[str]:
    text = _normalise(text)
    if len(text) <= _SHINGLE_SIZE:
        return {text}
    return {text[i : i + _SHINGLE_SIZE] for i in range(len(text) - _SHINGLE_SIZE + 1)}


def _minhash_candidates(shingle_sets: Sequence[set[str]], seed: int = 0) -> set[tuple[int, int]]:
    """Pairs (i < j) whose MinHash signatures agree on a whole band: the candidates for a near duplicate (LSH), so
    that only those pairs get an exact Jaccard instead of all N² / 2."""
    rng = np.random.default_rng(seed)
    num_hashes = _MINHASH_BANDS * _MINHASH_ROWS
    a = rng.integers(1, _MINHASH_PRIME, num_hashes, dtype=np.uint64)  # (H,)
    b = rng.integers(0, _MINHASH_PRIME, num_hashes, dtype=np.uint64)  # (H,)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for i, shingles in enumerate(shingle_sets):
        # zlib.crc32 is stable across processes (Python's hash() of a str is salted per process).
        x = np.fromiter((zlib.crc32(s.encode()) % _MINHASH_PRIME for s in shingles), np.uint64)  # (S,)
        signature = ((np.outer(x, a) + b) % _MINHASH_PRIME).min(axis=0)  # (H,)
        for band in range(_MINHASH_BANDS):
            key = signature[band * _MINHASH_ROWS : (band + 1) * _MINHASH_ROWS].tobytes()
            buckets.setdefault((band, key), []).append(i)
    pairs = set()
    for members in buckets.values():
        for k, i in enumerate(members):
            pairs.update((i, j) for j in members[k + 1 :])
    return pairs


def find_duplicates(texts: Sequence[str], near_threshold: float | None = 0.8) -> list[str | None]:
    r"""
    `"duplicate"` for a text equal to an earlier one up to case, Unicode form and spacing; `"near_duplicate"` for one
    whose set of character 5-grams has a Jaccard similarity ≥ `near_threshold` with an earlier text that is kept;
    `None` for the rest (the first copy is always kept). `near_threshold=None` checks exact duplicates only.

    Near duplicates are found with MinHash (64 hashes, 16 bands of 4) and confirmed with the exact Jaccard, so the
    cost grows with the number of texts, not its square; a pair at similarity 0.8 is missed with probability ≈ 2e-4.

    Example:
    ```python
    >>> find_duplicates(["Tom has 3 apples and buys 4 more at the market. How many apples does he have now?",
    ...                  "Tom has 3 apples and buys 5 more at the market. How many apples does he have now?",
    ...                  "Ann has 2 pears."], near_threshold=0.8)
    [None, 'near_duplicate', None]

    ```
    """
    check_number("near_threshold", near_threshold, 0, 1, low_open=True, unset="exact duplicates only", fix="e.g. 0.8.")
    reasons: list[str | None] = [None] * len(texts)
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = _normalise(text)
        if key in first:
            reasons[i] = "duplicate"
        else:
            first[key] = i
    if near_threshold is None:
        return reasons
    unique = sorted(first.values())
    shingles = [_shingles(texts[i]) for i in unique]
    candidates: dict[int, list[int]] = {}
    for p, q in _minhash_candidates(shingles):
        candidates.setdefault(q, []).append(p)  # p < q: compare each text with the earlier ones only
    for q in range(len(unique)):
        for p in sorted(candidates.get(q, ())):
            if reasons[unique[p]] is not None:
                continue  # a dropped text does not drop others
            a, b = shingles[p], shingles[q]
            if len(a & b) >= near_threshold * len(a | b):
                reasons[unique[q]] = "near_duplicate"
                break
    return reasons


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", _normalise(text))


def eval_overlap(texts: Sequence[str], eval_texts: Sequence[str], ngram_size: int = 13) -> list[bool]:
    r"""
    Whether each text shares a word n-gram (`ngram_size` words after lower-casing; punctuation ignored) with any of
    `eval_texts`: the contamination test of GPT-3's decontamination, 13-grams by default. A text shorter than
    `ngram_size` words overlaps when all its words appear in that order, contiguously, in an evaluation text.

    Example:
    ```python
    >>> eval_overlap(["Compute 2 + 2.", "What is the sum of the first ten primes?"],
    ...              ["Please compute 2 + 2 now.", "Name a prime."], ngram_size=5)
    [True, False]

    ```
    """
    check_number("ngram_size", ngram_size, 1, fix="e.g. 13.")
    eval_words = [_words(t) for t in eval_texts]
    by_size: dict[int, set[tuple[str, ...]]] = {}

    def ngrams(size: int) -> set[tuple[str, ...]]:
        if size not in by_size:
            by_size[size] = {tuple(w[i : i + size]) for w in eval_words for i in range(len(w) - size + 1)}
        return by_size[size]

    out = []
    for text in texts:
        words = _words(text)
        size = min(ngram_size, len(words))
        if size == 0:
            out.append(False)
            continue
        index = ngrams(size)
        out.append(any(tuple(words[i : i + size]) in index for i in range(len(words) - size + 1)))
    return out


# ---------------------------------------------------------------------------------------------------- the model
def _sample_and_score_quietly(model, *args: Any, **kwargs: Any):
    # Sampling seeds torch's global RNG; a curation step before training must not change the training's draws.
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return sample_and_score(model, *args, **kwargs)


def estimate_pass_rates(
    model,
    tokenizer,
    dataset: Dataset,
    reward_func: Callable[..., list[float | None]],
    num_samples: int = 10,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    success_threshold: float = 1.0,
    column: str = "pass_rate",
    seed: int = 0,
    llm: Any = None,
    progress: bool = False,
) -> Dataset:
    r"""
    Difficulty without labels (Kimi k1.5 §2.2, §2.3.4): the current model's pass rate on each problem, as a new column.

    Each prompt is sampled `num_samples` times at `temperature` (the report: 10 samples, high temperature) and scored
    by [`~trl_kimi.evaluation.sample_and_score`] (HF `generate`, or vLLM with `llm=`), with its rules: `reward_func`
    gets TRL's arguments (the dataset's other columns, `completion_ids`, ...), a truncated sample fails without
    reaching it, a `None` reward fails. A sample passes when its reward is at least `success_threshold`. Returns a copy
    of `dataset` with `column` = the fraction that passed. For a curriculum, higher must mean harder:
    ``dataset.map(lambda row: {"difficulty": 1.0 - row["pass_rate"]})`` ([`curate`] adds that column). Prompts may be
    strings or conversations. The global torch RNG is left as it was.

    Example:
    ```python
    >>> from trl_kimi.tasks import arithmetic
    >>> tokenizer = arithmetic.make_tokenizer()
    >>> model = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    >>> data = arithmetic.make_rl_dataset(3, seed=0, max_terms=3)
    >>> data = estimate_pass_rates(model, tokenizer, data, arithmetic.addition_reward, num_samples=2, max_new_tokens=8)
    >>> data.column_names, len(data["pass_rate"])
    (['prompt', 'answer', 'pass_rate'], 3)

    ```
    """
    # num_samples and max_new_tokens are checked by sample_and_score.
    check_number("temperature", temperature, 0, low_open=True, fix="pass rates need sampling, e.g. 1.0.")
    if column in dataset.column_names:
        raise ValueError(f"The dataset already has a column {column!r}; pass another column= or remove it first.")
    result = _sample_and_score_quietly(
        model, tokenizer, dataset, reward_func, num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=0, batch_size=batch_size, seed=seed, success_threshold=success_threshold, llm=llm, progress=progress,
    )  # fmt: skip
    return dataset.add_column(column, [fmean(s.correct for s in group) for group in result.samples])


def answer_only_prompt(prompt: str | list[dict[str, Any]], instruction: str = ANSWER_ONLY_INSTRUCTION):
    r"""
    The prompt asking for the answer with no reasoning: the package's step-by-step instruction
    ([`~trl_kimi.prompts.BOXED_INSTRUCTION`]) removed and `instruction` appended (blank line between), in the last
    user message of a conversation (a copy: the caller's prompt is left unchanged). An empty `instruction` leaves the
    problem as it is (a task whose prompts take no instructions, such as the embedded chain-sum task, relies on the
    token cap alone).

    Example:
    ```python
    >>> answer_only_prompt("2 + 2?\n\nPlease reason step by step, and put your final answer within \\boxed{}.", "Answer only.")
    '2 + 2?\n\nAnswer only.'

    ```
    """

    def rewrite(text: str) -> str:
        text = text.replace(BOXED_INSTRUCTION, "").rstrip()
        return f"{text}\n\n{instruction}" if instruction else text

    if isinstance(prompt, str):
        return rewrite(prompt)
    last_user = max(i for i, m in enumerate(prompt) if m.get("role") == "user")
    return [{**m, "content": rewrite(m["content"])} if i == last_user else dict(m) for i, m in enumerate(prompt)]


def find_guessable(
    model,
    tokenizer,
    dataset: Dataset,
    reward_func: Callable[..., list[float | None]],
    num_tries: int = 8,
    max_new_tokens: int = 32,
    instruction: str = ANSWER_ONLY_INSTRUCTION,
    temperature: float = 1.0,
    batch_size: int = 64,
    success_threshold: float = 1.0,
    seed: int = 0,
    llm: Any = None,
    progress: bool = False,
) -> list[bool]:
    r"""
    Prompts the model answers correctly without reasoning (Kimi k1.5 §2.2): each prompt is rewritten to ask for the
    answer alone ([`answer_only_prompt`]) and sampled `num_tries` times (the report: 8) with at most `max_new_tokens`
    tokens, too few to reason in; a prompt is guessable when **any** try is correct (the scoring rules of
    [`~trl_kimi.evaluation.sample_and_score`]: an answer cut by the cap fails). The global torch RNG is left as it was.

    Example:
    ```python
    >>> from trl_kimi.tasks import arithmetic
    >>> tokenizer = arithmetic.make_tokenizer()
    >>> model = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    >>> find_guessable(model, tokenizer, arithmetic.make_rl_dataset(2, seed=0), arithmetic.addition_reward,
    ...                max_new_tokens=4, instruction="")  # an untrained model guesses nothing
    [False, False]

    ```
    """
    check_number("num_tries", num_tries, 1, fix="the report uses 8.")  # max_new_tokens: checked by sample_and_score
    guesses = dataset.map(lambda row: {"prompt": answer_only_prompt(row["prompt"], instruction)})
    result = _sample_and_score_quietly(
        model, tokenizer, guesses, reward_func, num_tries, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=0, batch_size=batch_size, seed=seed, success_threshold=success_threshold, llm=llm, progress=progress,
    )  # fmt: skip
    return [any(s.correct for s in group) for group in result.samples]


def difficulty_label(pass_rate: float) -> str:
    """
    The bucket of a pass rate: `solved` (1), `easy` (≥ 0.7), `medium` (≥ 0.3), `hard` (> 0), `unsolved` (0).

    ```python
    >>> [difficulty_label(p) for p in (1.0, 0.8, 0.5, 0.1, 0.0)]
    ['solved', 'easy', 'medium', 'hard', 'unsolved']

    ```
    """
    return next(label for label, low in DIFFICULTY_LABELS if pass_rate >= low)


# ---------------------------------------------------------------------------------------------------- curate
@dataclass
class CurationConfig:
    r"""
    Settings of [`curate`]; `trl-kimi curate` takes each as a flag.

    Args:
        solution_column (`str`, *optional*, defaults to `"solution"`):
            Column with the gold answer (GSM8K's `#### 18` solutions are read after `####`); `answer` for chain-sum.
        drop_formats (`list[str]`, *optional*, defaults to all four):
            Hackable formats to drop: any of `multiple_choice`, `true_false`, `yes_no`, `proof`. Rows with no answer
            are always dropped.
        near_duplicate_threshold (`float` or `None`, *optional*, defaults to `0.8`):
            Jaccard similarity of character 5-gram sets from which a text is a near duplicate (`None`: exact only).
        overlap_ngram_size (`int`, *optional*, defaults to `13`):
            Word n-gram shared with the evaluation set that marks a prompt as overlapping.
        num_guess_tries (`int`, *optional*, defaults to `8`):
            Answer-only tries per prompt (the report: 8); 0 skips the guessing test.
        guess_max_new_tokens (`int`, *optional*, defaults to `32`):
            Token cap of an answer-only try.
        guess_instruction (`str`, *optional*, defaults to [`ANSWER_ONLY_INSTRUCTION`]):
            Appended to the problem for the answer-only tries ("" for prompts that take no instructions).
        num_samples (`int`, *optional*, defaults to `10`):
            Samples per prompt for the pass rate (the report: 10); 0 skips it (then `pass_rate` is `None`).
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of the pass-rate samples and the answer-only tries.
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Token cap of a pass-rate sample (as in training: a truncated answer fails).
        success_threshold (`float`, *optional*, defaults to `1.0`):
            Reward from which a sample counts as correct.
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per generation call.
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed: the same settings give the same dataset.
    """

    solution_column: str = field(default="solution", metadata={"help": "Column with the gold answer."})
    drop_formats: list[str] = field(
        default_factory=lambda: list(HACKABLE_FORMATS),
        metadata={"help": f"Hackable formats to drop, of {list(HACKABLE_FORMATS)}."},
    )
    near_duplicate_threshold: float | None = field(
        default=0.8,
        metadata={"help": "Jaccard similarity of character 5-grams from which a text is a near duplicate."},
    )
    overlap_ngram_size: int = field(
        default=13, metadata={"help": "Word n-gram shared with the evaluation set that marks an overlap."}
    )
    num_guess_tries: int = field(default=8, metadata={"help": "Answer-only tries per prompt (0 skips the test)."})
    guess_max_new_tokens: int = field(default=32, metadata={"help": "Token cap of an answer-only try."})
    guess_instruction: str = field(
        default=ANSWER_ONLY_INSTRUCTION, metadata={"help": "Appended to the problem for the answer-only tries."}
    )
    num_samples: int = field(default=10, metadata={"help": "Samples per prompt for the pass rate (0 skips it)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of every model step."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Token cap of a pass-rate sample."})
    success_threshold: float = field(default=1.0, metadata={"help": "Reward from which a sample is correct."})
    batch_size: int = field(default=64, metadata={"help": "Sequences per generation call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})

    def __post_init__(self):
        unknown = [f for f in self.drop_formats if f not in HACKABLE_FORMATS]
        if unknown:
            raise ValueError(f"Unknown drop_formats {unknown}; choose from {list(HACKABLE_FORMATS)}.")
        if self.num_guess_tries < 0 or self.num_samples < 0:
            raise ValueError(
                f"num_guess_tries ({self.num_guess_tries}) and num_samples ({self.num_samples}) must be >= 0 (0 skips "
                "the step)."
            )


@dataclass
class CurationResult:
    """
    What [`curate`] returns: `dataset` (every row, with `pass_rate`, `difficulty`, `drop_reason`), `kept` (the rows
    whose `drop_reason` is `None`, without that column) and `summary` (counts per reason, difficulty histogram,
    settings). [`save`] writes them; [`push_to_hub`] publishes the kept rows with a dataset card.
    """

    dataset: Dataset
    kept: Dataset
    summary: dict[str, Any]

    def save(self, output_dir: str | Path, plot: bool = True) -> Path:
        """
        Writes `dataset.jsonl` (every row), `kept.jsonl` (the curated set, readable by `trl-kimi train
        --dataset_name`), `summary.json`, `README.md` (the dataset card) and, with `plot`, `difficulty.png` (needs
        matplotlib: `pip install 'trl-kimi[plot]'`). Returns `output_dir`.
        """
        out = Path(output_dir)
        if plot:
            _require_matplotlib()
        out.mkdir(parents=True, exist_ok=True)
        self.dataset.to_json(out / "dataset.jsonl", force_ascii=False)
        self.kept.to_json(out / "kept.jsonl", force_ascii=False)
        (out / "summary.json").write_text(json.dumps(self.summary, indent=2))
        (out / "README.md").write_text(dataset_card(self.summary))
        if plot:
            plot_difficulty(self.dataset, out / "difficulty.png")
        return out

    def push_to_hub(self, repo_id: str, private: bool = False) -> None:
        """Pushes the kept rows to the Hub dataset `repo_id`, with the card of [`dataset_card`] (how it was built)."""
        from huggingface_hub import DatasetCard

        self.kept.push_to_hub(repo_id, private=private)
        DatasetCard(dataset_card(self.summary)).push_to_hub(repo_id, repo_type="dataset")


def curate(
    dataset: Dataset,
    model=None,
    tokenizer=None,
    reward_func: Callable[..., list[float | None]] | None = None,
    config: CurationConfig | None = None,
    eval_dataset: Dataset | None = None,
    llm: Any = None,
    progress: bool = False,
) -> CurationResult:
    r"""
    Curates an RL prompt set (Kimi k1.5 §2.2): the rules of the module docstring, cheapest first; each row's
    `drop_reason` is the first rule that drops it. The model steps (guessable, pass rate) run only on rows that survive
    the earlier ones, and only when `model` (or `llm`), `tokenizer` and `reward_func` are given; without them
    `pass_rate` and `difficulty` are `None`. `eval_dataset`'s `prompt` column is the evaluation set to check overlap
    with. `dataset` is not modified.

    Example:
    ```python
    >>> rows = Dataset.from_dict({"prompt": ["What is 3 + 4?", "what is 3 + 4?", "Is 9 prime? (yes/no)"],
    ...                           "solution": ["7", "7", "no"]})
    >>> result = curate(rows)
    >>> list(result.dataset["drop_reason"]), result.summary["num_kept"]
    ([None, 'duplicate', 'yes_no'], 1)

    ```
    """
    config = config or CurationConfig()
    for name in ("prompt", config.solution_column):
        if name not in dataset.column_names:
            raise ValueError(
                f"The dataset has no column {name!r} (columns: {dataset.column_names}). Curation needs TRL's 'prompt' "
                "and the gold-answer column: pass solution_column= (--solution_column), or convert benchmark rows with "
                "trl_kimi.prompts.make_prompt_dataset."
            )
    taken = [c for c in ("pass_rate", "difficulty", "drop_reason") if c in dataset.column_names]
    if taken:
        raise ValueError(f"The dataset already has the column(s) {taken} that curation writes; remove them first.")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: nothing to curate.")
    use_model = model is not None or llm is not None
    if use_model and (tokenizer is None or reward_func is None):
        raise ValueError("The model steps need a tokenizer and a reward_func as well as the model.")

    problems = [prompt_text(p) for p in dataset["prompt"]]
    reasons: list[str | None] = []
    for problem, answer in zip(problems, dataset[config.solution_column]):
        found = hackable_format(problem, answer)
        reasons.append(found if found == "no_answer" or found in config.drop_formats else None)

    def update(rows: list[int], found: Sequence[str | bool | None], reason: str | None = None) -> None:
        for i, value in zip(rows, found):
            if value:
                reasons[i] = reason or value

    alive = [i for i, r in enumerate(reasons) if r is None]
    update(alive, find_duplicates([problems[i] for i in alive], config.near_duplicate_threshold))
    if eval_dataset is not None:
        eval_texts = [prompt_text(p) for p in eval_dataset["prompt"]]
        alive = [i for i, r in enumerate(reasons) if r is None]
        update(
            alive, eval_overlap([problems[i] for i in alive], eval_texts, config.overlap_ngram_size), "eval_overlap"
        )

    sampling = dict(batch_size=config.batch_size, success_threshold=config.success_threshold, seed=config.seed)
    if use_model and config.num_guess_tries:
        alive = [i for i, r in enumerate(reasons) if r is None]
        if alive:
            guessed = find_guessable(
                model, tokenizer, dataset.select(alive), reward_func, config.num_guess_tries,
                config.guess_max_new_tokens, config.guess_instruction, config.temperature, llm=llm, progress=progress,
                **sampling,
            )  # fmt: skip
            update(alive, guessed, "guessable")
    pass_rates: list[float | None] = [None] * len(dataset)
    if use_model and config.num_samples:
        alive = [i for i, r in enumerate(reasons) if r is None]
        if alive:
            rated = estimate_pass_rates(
                model, tokenizer, dataset.select(alive), reward_func, config.num_samples, config.temperature,
                config.max_new_tokens, column="_pass_rate", llm=llm, progress=progress, **sampling,
            )  # fmt: skip
            for i, rate in zip(alive, rated["_pass_rate"]):
                pass_rates[i] = rate

    full = (
        dataset.add_column("pass_rate", pass_rates)
        .add_column("difficulty", [None if p is None else 1.0 - p for p in pass_rates])
        .add_column("drop_reason", reasons)
    )
    kept_rows = [i for i, r in enumerate(reasons) if r is None]
    kept = full.select(kept_rows).remove_columns("drop_reason")
    summary = _summary(reasons, pass_rates, config, use_model)
    return CurationResult(full, kept, summary)


def _summary(
    reasons: Sequence[str | None], pass_rates: Sequence[float | None], config: CurationConfig, use_model: bool
) -> dict[str, Any]:
    kept_rates = [p for p, r in zip(pass_rates, reasons) if r is None and p is not None]
    counts = Counter(r for r in reasons if r is not None)
    edges = np.linspace(0.0, 1.0, _NUM_HISTOGRAM_BINS + 1)
    histogram = np.histogram([1.0 - p for p in kept_rates], bins=edges)[0].tolist() if kept_rates else []
    return {
        "num_rows": len(reasons),
        "num_kept": sum(r is None for r in reasons),
        "dropped": {reason: counts[reason] for reason in DROP_REASONS if counts[reason]},
        "model_steps": use_model,
        "eval_dataset": None,  # what `trl-kimi curate` fills in: source, split, model, reward, eval_dataset
        "mean_pass_rate_kept": fmean(kept_rates) if kept_rates else None,
        "difficulty_labels_kept": dict(Counter(difficulty_label(p) for p in kept_rates)),
        "difficulty_histogram_kept": {"bin_edges": edges.round(3).tolist(), "counts": histogram},
        "config": asdict(config),
    }


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "The difficulty histogram (difficulty.png) needs matplotlib: pip install 'trl-kimi[plot]', or save "
            "without it (CurationResult.save(plot=False), trl-kimi curate --plot false)."
        ) from error


def plot_difficulty(dataset: Dataset, path: str | Path) -> None:
    """Histogram of `difficulty` (1 − pass rate) of the kept rows of a curated dataset, saved to `path`."""
    _require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [d for d, r in zip(dataset["difficulty"], dataset["drop_reason"]) if r is None and d is not None]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(values, bins=np.linspace(0.0, 1.0, _NUM_HISTOGRAM_BINS + 1), edgecolor="white")
    title = f"{len(values)} kept prompts" if values else "no pass rates (curated without a model)"
    ax.set(xlabel="difficulty = 1 − pass rate", ylabel="prompts", title=title, xlim=(0, 1))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dataset_card(summary: dict[str, Any], source: str | None = None) -> str:
    """The dataset card of a curated set: what was dropped and why, how the difficulty was measured, the settings."""
    config = summary["config"]
    source = source or summary.get("source") or "a prompt set"
    lines = [
        "---",
        "tags:",
        "- trl-kimi",
        "- kimi-k1.5",
        "- rl-prompt-curation",
        "---",
        "",
        "# Curated RL prompt set",
        "",
        f"Built from {source} with `trl-kimi curate` (the prompt-set curation of "
        "[Kimi k1.5](https://huggingface.co/papers/2501.12599), §2.2): "
        f"{summary['num_kept']} of {summary['num_rows']} prompts kept.",
        "",
        "| rule | dropped |",
        "|---|---|",
        *[f"| {reason} | {count} |" for reason, count in summary["dropped"].items()],
        "",
        "Rules, in order (a prompt is dropped by the first that applies): hackable formats "
        f"({', '.join(config['drop_formats'])}, and rows with no answer) by the rules of "
        "`trl_kimi.curation.hackable_format`; exact duplicates and near duplicates (Jaccard of character 5-grams ≥ "
        f"{config['near_duplicate_threshold']})"
        + (
            f"; word {config['overlap_ngram_size']}-gram overlap with the evaluation set {summary['eval_dataset']}"
            if summary.get("eval_dataset")
            else ""
        )
        + (
            f"; prompts the model answered correctly in any of {config['num_guess_tries']} answer-only tries capped "
            f"at {config['guess_max_new_tokens']} tokens (instruction: {config['guess_instruction']!r})."
            if summary["model_steps"] and config["num_guess_tries"]
            else "."
        ),
        "",
    ]
    if summary["model_steps"]:
        lines += [
            f"`pass_rate`: the fraction of {config['num_samples']} samples at temperature {config['temperature']} "
            f"(at most {config['max_new_tokens']} tokens) the verifier accepted; `difficulty` = 1 − `pass_rate`. "
            f"Kept prompts by pass rate: {summary['difficulty_labels_kept']}.",
        ]
        if summary.get("model"):
            lines[-1] += f" Model: `{summary['model']}`."
    else:
        lines += ["Curated without a model: the guessing test did not run and `pass_rate` is empty."]
    return "\n".join(lines) + "\n"
