"""Math answer verifier: extract the final answer of a completion and check it against a gold answer.

Built on [math-verify](https://github.com/huggingface/Math-Verify) with the normalisations it misses (Kimi k1.5,
https://huggingface.co/papers/2501.12599, §2.3; the spec's §7). The guiding rule is *never a false positive*: when the
verifier is unsure, the reward is 0, because a reward that can be fooled trains the policy to fool it.

The code is split along the steps below: `_math_answers.py` holds the pure answer rules (extraction, normalisation,
the decisions that need no sympy), `_math_grammar.py` the allow-list grammar, `_math_worker.py` the worker pool, and
this module the public API.

The trainer's process never parses model text: it takes the completion's text, drops an unfinished or closed
`<think>` block and keeps the last 8,192 characters (string methods of linear cost), and sends the rest to a worker,
where every step below runs under the item's deadline.

How one item is scored, in a worker:

1. **Extract** the final answer from the last 8,192 characters of the completion (after a closed `</think>`; nothing
   from an unfinished thinking block; a chat template's next turn and "I hope it is correct." cut off): the last
   `\\boxed{...}`/`\\fbox{...}` (boxes joined by "and", "or" or commas are one list answer, so a hedge such as
   `\\boxed{3} or \\boxed{5}` is a list, never 5), else the last "The answer is ...", "Final Answer: ...",
   "#### ...", or a line "A: ..." (GSM8K few-shot), else the value the last sentence ends with: a completion that is
   only the answer (`18`, `$18`, `18 dollars`, `$\\frac{9}{2}$`), or a concluding sentence ("Therefore ... is 19.").
   A last sentence that is a question, ends in prose, or repeats the question after other sentences has no answer.
   The gold `solution` may be a worked solution (MATH `\\boxed{}`, GSM8K `#### 18`) or a bare answer. An answer
   longer than 1,000 characters scores 0.
2. **Normalise** both strings with small named rules (unit words of a fixed list, `\\$`, `%`, degrees, thousands
   separators, magnitude words, scientific notation, repeating decimals, a scalar times a vector, column vectors,
   `x \\in [a, b]`).
3. **The grammar** (`_math_grammar.py`, an allow-list): the prediction may use numbers, structural LaTeX, the
   arithmetic symbols, and unit words from a fixed list (any case, in any `\\text`-like macro); any other word,
   variable, command, relation or symbol must be in the gold. What it refuses scores 0, whatever sympy would say
   (`5 \\textit{Hundredths}`, `5i^2`, `\\text{3} = 5`, `3 \\equiv 5`, `f(2) = 5`). Commas follow
   `_math_grammar.COMMA_RULE` (`58,500` is a number, `-2,1` a list).
4. **Decide without sympy** what is certain: plain numbers are compared exactly with [`fractions.Fraction`] (the
   fast path, most of GSM8K), clock times, lists against one value, sets against ordered tuples, and two closed-form
   numbers (`3\\sqrt{13}`, `-\\frac{\\pi}{6}`, `6 - 5i`, `0.15`) whose values differ by far more than math-verify's
   6-decimal rounding are unequal.
5. **Otherwise run math-verify** in the same worker (results are cached in the parent, and duplicates in a batch are
   sent once). Workers are fresh interpreters started with `subprocess` (like multiprocessing's "spawn", never a fork
   of the trainer, which has torch and threads loaded, and without spawn's re-import of the trainer's `__main__`);
   they run one item at a time, and one that passes the per-item deadline is SIGKILLed and replaced, and the item
   scores 0. Workers exit when stdin closes, and on Linux the kernel kills them when the parent dies.

So one call's worst case is bounded: each item costs at most `timeout` in a worker (plus a worker restart when it
hits it), `num_workers` items at a time; the parent's own work is linear in the completions' length.
"""

import atexit
import hashlib
import logging
import weakref
from collections.abc import Callable
from typing import Any

from .._checks import check_number
from ._completion import completion_text
from ._math_answers import _THINK_CLOSE, _THINK_OPEN, TAIL_CHARS, extract_answer, normalise_answer
from ._math_worker import _WorkerPool


__all__ = ["TAIL_CHARS", "MathVerifier", "extract_answer", "math_reward", "normalise_answer"]

logger = logging.getLogger(__name__)

_RESULT_CACHE_SIZE = 65536  # worker results kept by the parent; a few MB of short strings


# Fractions of a batch logged through TRL's `log_metric`, by the reason prefixes of `MathVerifier.verify_batch`.
_METRIC_REASONS = {
    "math_verifier/no_answer": ("no_answer",),
    "math_verifier/timeouts": ("timeout",),
    "math_verifier/errors": ("error", "worker_crashed"),
    "math_verifier/fast_path": ("exact", "fast_path"),
    "math_verifier/refused": ("refused",),
}


class MathVerifier:
    r"""
    Math correctness reward: 1.0 if the completion's final answer equals the gold answer, else 0.0.

    Instances are reward functions for TRL's `GRPOTrainer` (and [`~trl_kimi.KimiMirrorDescentTrainer`]): they take
    `completions` and the dataset column `solution` (a bare answer such as `"\frac{14}{3}"`, or a worked MATH/GSM8K
    solution), and accept and ignore TRL's other keyword arguments. If `log_metric` is passed (TRL does), the fractions
    of items with no answer, timeouts, errors (worker crashes included), fast-path decisions and answers the grammar
    refused are logged as `math_verifier/no_answer`, `math_verifier/timeouts`, `math_verifier/errors`,
    `math_verifier/fast_path` and `math_verifier/refused`.

    Equivalence is math-verify's plus the rules in this module (units, `\$`, `%`, degrees, thousands separators,
    scientific notation, repeating decimals, intervals vs inequalities, clock times, column vectors vs tuples), behind
    an allow-list grammar: a prediction may add to the gold's vocabulary only numbers, structural LaTeX, arithmetic
    and unit words of a fixed list (any case, any `\text`-like macro); any other word, variable, relation or symbol
    scores 0. Never a false positive on purpose: `\{1,2\}` (a set) never equals `(2,1)` (a tuple), `1.000` is one,
    not a thousand, `-2,1` is a list, not `-2.1`, `4:30` without a.m./p.m. equals only `4:30` and `04:30`, a list
    (`5, 6`, `5 \text{ or } 6`, `\pm 5`) never equals one value. Every parse of model text runs in a worker
    process under the per-item deadline; the trainer's process only slices the text.

    Args:
        timeout (`float`, *optional*, defaults to `10.0`):
            Hard deadline in seconds for verifying one item in a worker, reading the answer included. Past it, the
            worker is SIGKILLed and replaced and the item scores 0 (logged, and counted in `math_verifier/timeouts`). Each of math-verify's own timed
            steps (parse gold, parse prediction, compare) gets a quarter of it (whole seconds, at least 1), so most
            pathological items stop there without losing the worker.
        num_workers (`int`, *optional*, defaults to `2`):
            Number of worker processes running math-verify. They start on the first item that needs one.
        startup_timeout (`float`, *optional*, defaults to `60.0`):
            Seconds a worker may take to import sympy and math-verify before the verifier gives up with an error.

    Example:

    ```python
    >>> with MathVerifier(num_workers=1) as verifier:
    ...     verifier(["The answer is $\\boxed{\\dfrac{14}{3}}$.", "#### 18"], solution=["14/3", "#### 180"])
    [1.0, 0.0]

    ```
    """

    def __init__(self, timeout: float = 10.0, num_workers: int = 2, startup_timeout: float = 60.0):
        check_number("timeout", timeout, 0, low_open=True, fix="seconds, e.g. MathVerifier(timeout=10.0).")
        check_number("num_workers", num_workers, 1, fix="e.g. MathVerifier(num_workers=2).")
        self.timeout, self.num_workers, self.startup_timeout = timeout, num_workers, startup_timeout
        # TRL names the reward column after `__name__`; the instance logs under the same name as `math_reward` so that
        # switching from the function to a configured instance does not rename the metric.
        self.__name__ = "math_reward"
        self._pool: _WorkerPool | None = None
        self._atexit: Callable[[], None] | None = None
        # (solution, digest of the completion's tail) -> (reward, reason); digests keep the cache a few MB
        self._cache: dict[tuple[str, bytes], tuple[float, str]] = {}

    def __call__(self, completions: list, solution: list[str] | None = None, **kwargs) -> list[float]:
        if solution is None:
            hint = (
                " GSM8K calls it 'answer': dataset.rename_column('answer', 'solution')." if "answer" in kwargs else ""
            )
            raise ValueError(
                f"{self.__name__} needs a 'solution' column with the gold answers (a bare answer or a worked "
                f"solution), but the dataset has none; columns passed: {sorted(kwargs)}.{hint}"
            )
        if len(completions) != len(solution):
            raise ValueError(
                f"{self.__name__} got {len(completions)} completions but {len(solution)} solutions; they must pair up."
            )
        rewards, reasons = self.verify_batch(completions, solution)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and rewards:
            for metric, prefixes in _METRIC_REASONS.items():
                log_metric(metric, sum(reason.startswith(prefixes) for reason in reasons) / len(rewards))
        return rewards

    def verify_batch(self, completions: list, solutions: list[str]) -> tuple[list[float], list[str]]:
        r"""
        Score a batch and say why: `(rewards, reasons)`, where a reason is `"fast_path"`, `"math_verify"`,
        `"cached"`, `"no_answer: ..."`, `"refused: ..."`, `"timeout"`, `"error: ..."`, `"clock_time"`,
        `"set_vs_tuple"`, `"set_vs_scalar"`, `"decimal_comma"`, `"exact"`, `"numeric"`, `"unparsable"`...

        Example:

        ```python
        >>> MathVerifier().verify_batch(["<think>so 18", None], ["18", "18"])
        ([0.0, 0.0], ['no_answer: unfinished <think> block', 'no_answer: completion is None'])

        ```
        """
        rewards, reasons = [0.0] * len(completions), [""] * len(completions)
        # Items for the workers, deduplicated: in GRPO the generations of a prompt often give the same answer.
        pending: dict[tuple[str, bytes], list[int]] = {}
        texts: dict[tuple[str, bytes], str] = {}
        for i, (completion, gold_solution) in enumerate(zip(completions, solutions)):
            if not isinstance(gold_solution, str):
                raise ValueError(
                    f"solution[{i}] must be a string (the gold answer), got {type(gold_solution).__name__}: "
                    f"{gold_solution!r}; fix the dataset row."
                )
            outcome = self._prepare(completion)
            if isinstance(outcome, str):
                reasons[i] = outcome
                if outcome.startswith("no_answer: completion is"):
                    logger.warning("%s: item %d scored 0: %s", self.__name__, i, outcome)
                continue
            (text,) = outcome
            key = (gold_solution, hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest())
            if key in self._cache:
                # A math-verify result reused says so; a decision without sympy keeps its reason (and metric).
                reward, reason = self._cache[key]
                rewards[i], reasons[i] = reward, "cached" if reason == "math_verify" else reason
            else:
                pending.setdefault(key, []).append(i)
                texts[key] = text
        if pending:
            requests = [{"gold": key[0], "text": texts[key]} for key in pending]
            for (key, items), reply in zip(pending.items(), self._get_pool().run(requests)):
                reward, reason = (1.0 if reply["ok"] is True else 0.0), reply["reason"]
                # Only definite answers are cached: a timeout may pass on a quieter machine.
                if not reason.startswith(("timeout", "error", "worker_crashed")):
                    if len(self._cache) >= _RESULT_CACHE_SIZE:
                        self._cache.clear()
                    self._cache[key] = (reward, reason)
                for i in items:
                    rewards[i], reasons[i] = reward, reason
                    if reason.startswith(("timeout", "error", "worker_crashed")):
                        logger.warning("%s: item %d scored 0: %s", self.__name__, i, reason)
        return rewards, reasons

    @staticmethod
    def _prepare(completion: Any) -> tuple[str] | str:
        """`(text,)`: the part of one completion a worker reads, or the reason it scores 0. Only `str` methods of
        linear cost touch the model's text here: everything else runs in a worker, under the item's deadline."""
        text = completion_text(completion)
        if text is None:
            return f"no_answer: completion is {'None' if completion is None else type(completion).__name__}"
        if not text.strip():
            return "no_answer: empty completion"
        if _THINK_OPEN in text or _THINK_CLOSE in text:
            open_at, close_at = text.rfind(_THINK_OPEN), text.rfind(_THINK_CLOSE)
            if close_at < open_at:
                return "no_answer: unfinished <think> block"
            text = text[close_at + len(_THINK_CLOSE) :]
        # The answer is at the end: the worker reads the last TAIL_CHARS characters only.
        return (text[-TAIL_CHARS:],)

    def _get_pool(self) -> _WorkerPool:
        if self._pool is None:
            self._pool = _WorkerPool(self.num_workers, self.timeout, self.startup_timeout)
            # A weak reference, so that the atexit hook does not keep an abandoned verifier alive.
            reference = weakref.ref(self)
            self._atexit = lambda: reference() is not None and reference().close()
            atexit.register(self._atexit)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes. The verifier stays usable: the next call starts new ones."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: modules may already be gone, nothing left to do
            pass

    def __getstate__(self) -> dict:
        # Dataloader workers and `copy.deepcopy` pickle the reward functions; live processes cannot be pickled, and the
        # copy starts its own pool when first used.
        state = self.__dict__.copy()
        state["_pool"], state["_atexit"] = None, None
        return state


_default_verifier: MathVerifier | None = None


def math_reward(completions: list, solution: list[str] | None = None, **kwargs) -> list[float]:
    r"""
    Math correctness reward with TRL's reward signature, using a shared default [`MathVerifier`].

    Args:
        completions (`list[str]` or `list[list[dict[str, str]]]`):
            Standard completions, or conversational ones (the last assistant message is graded).
        solution (`list[str]`):
            Dataset column with the gold answers: bare (`"18"`, `"\frac{14}{3}"`) or worked solutions (MATH
            `\boxed{}`, GSM8K `#### 18`).
        **kwargs:
            TRL's other arguments (`prompts`, `trainer_state`, `log_metric`, other columns); `log_metric` receives
            `math_verifier/*` fractions.

    Returns:
        `list[float]`: 1.0 for a correct final answer, 0.0 otherwise (including no answer, timeouts and errors).

    Example:

    ```python
    >>> math_reward([[{"role": "assistant", "content": "So the answer is $\\boxed{50\\%}$."}]], solution=["50"])
    [1.0]

    ```
    """
    global _default_verifier
    if _default_verifier is None:
        _default_verifier = MathVerifier()
    return _default_verifier(completions, solution, **kwargs)
