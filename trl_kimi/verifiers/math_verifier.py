"""Math answer verifier: extract the final answer of a completion and check it against a gold answer.

Built on [math-verify](https://github.com/huggingface/Math-Verify) with the normalisations it misses (Kimi k1.5,
https://huggingface.co/papers/2501.12599, §2.3; the spec's §7). The guiding rule is *never a false positive*: when the
verifier is unsure, the reward is 0, because a reward that can be fooled trains the policy to fool it.

How one item is scored:

1. **Extract** the final answer from the last 8,192 characters of the completion (after a closed `</think>`; nothing
   from an unfinished thinking block): the last `\\boxed{...}`/`\\fbox{...}`, else the last "The answer is ...",
   "Final Answer: ...", "#### ..." anchor. A completion without an anchor has no answer (it may only repeat the
   question). The gold `solution` may be a worked solution (MATH `\\boxed{}`, GSM8K `#### 18`) or a bare answer.
2. **Normalise** both strings with small named rules (units, `\\$`, `%`, degrees, thousands separators, magnitude
   words, scientific notation, repeating decimals, column vectors).
3. **Decide in the parent** what is certain without sympy: plain numbers are compared exactly with
   [`fractions.Fraction`] (the fast path, most of GSM8K), clock times, and set-vs-tuple mismatches.
4. **Otherwise ask a worker process** running math-verify (results are cached in the parent, and duplicates in a
   batch are sent once). Workers are fresh interpreters started with `subprocess` (like multiprocessing's "spawn",
   never a fork of the trainer, which has torch and threads loaded, and without spawn's re-import of the trainer's
   `__main__`); they run one item at a time, and one that passes the per-item deadline is SIGKILLed and replaced, and
   the item scores 0. Workers exit when stdin closes, and on Linux the kernel kills them when the parent dies.
"""

import atexit
import ctypes
import json
import logging
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


logger = logging.getLogger(__name__)

# Only the tail of a completion is searched for the answer: the answer is at the end, and a 1 MB degenerate completion
# must not cost a regex scan of 1 MB per item. 8,192 characters hold any sensible final answer plus its sentence.
TAIL_CHARS = 8192

# Numbers longer than this are not put through `Fraction` (Python refuses int() of > 4,300 digits, and such an answer
# is degenerate anyway); they go to a worker, whose deadline bounds the cost.
_MAX_FAST_PATH_DIGITS = 100

# Exponents in scientific notation beyond this are left for math-verify (`1e1000000` would build a million-digit int).
_MAX_SCI_EXPONENT = 100


# ---------------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "Final Answer: The final answer is $18$." (Minerva format) matches twice; the last anchor in the text wins.
_ANCHOR_RE = re.compile(r"(?:final answer is|the answer is|final answer\s*:|####)\s*:?\s*", re.IGNORECASE)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def _balanced_brace_content(text: str, start: int) -> str | None:
    """Content of the brace group opening at `text[start] == "{"`, or `None` if it never closes (truncated)."""
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if char == "\\":  # `\{` and `\}` are literal braces (set notation), not groups
            continue
        if char == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif char == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _last_boxed(text: str) -> tuple[bool, str | None]:
    """`(found, content)` for the last `\\boxed{}`/`\\fbox{}`; content is `None` when that box is truncated."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return False, None
    # Only the last box counts: `\boxed{3} or \boxed{5}` answers 5, and a truncated last box does not fall back to an
    # earlier one (the model did not finish its answer).
    return True, _balanced_brace_content(text, matches[-1].end() - 1)


def _after_anchor(text: str) -> str | None:
    """Answer after the last "The answer is" / "Final Answer:" / "####" anchor, cut at the end of its sentence."""
    matches = list(_ANCHOR_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip()
    if rest.startswith("$"):
        # Inline math: the answer is exactly the `$...$` span; an unclosed `$` means a truncated answer.
        delimiter = "$$" if rest.startswith("$$") else "$"
        end = rest.find(delimiter, len(delimiter))
        return rest[len(delimiter) : end] if end != -1 else None
    line = rest.split("\n", 1)[0]
    # A sentence ends at ". " or a final "."; a decimal point ("1.5") is followed by a digit, so it is kept.
    return re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]


def extract_answer(text: str, require_anchor: bool = True) -> str | None:
    r"""
    Extract the final answer of a math completion or solution.

    Args:
        text (`str`):
            Completion or solution text.
        require_anchor (`bool`, *optional*, defaults to `True`):
            Whether an anchor (`\boxed{}`, "The answer is", "Final Answer:", "####") is required. Completions need one
            (otherwise a completion that only repeats the question would be graded); gold solutions may be bare.

    Returns:
        `str` or `None`: The answer, stripped; `None` when there is none (no anchor, empty box, truncated box,
        unfinished `<think>` block).

    Example:

    ```python
    >>> extract_answer("So $x = 3$ and the area is $\\boxed{\\frac{9}{2}}$.")
    '\\frac{9}{2}'
    >>> extract_answer("Final Answer: The final answer is $18$. I hope it is correct.")
    '18'
    >>> extract_answer("<think>the answer is 4") is None  # unfinished thinking block
    True
    >>> extract_answer("\\boxed{3} or \\boxed{5}")
    '5'

    ```
    """
    if _THINK_OPEN in text or _THINK_CLOSE in text:
        open_at, close_at = text.rfind(_THINK_OPEN), text.rfind(_THINK_CLOSE)
        if close_at < open_at:  # the last <think> never closed: everything after it is unfinished reasoning
            return None
        # Chat templates often put <think> in the prompt, so a lone </think> also ends the thinking block.
        text = text[close_at + len(_THINK_CLOSE) :]
    text = text[-TAIL_CHARS:]
    found, answer = _last_boxed(text)
    if not found:
        answer = _after_anchor(text)
        if answer is None and not require_anchor:
            answer = text
    if answer is None:
        return None
    answer = answer.strip().strip("$").strip()
    answer = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", answer).strip()
    answer = answer.rstrip(".").strip()
    # An answer whose braces do not balance was cut off (e.g. "The answer is \frac{1}{" at the end of the budget).
    if not answer or answer.count("{") - answer.count("\\{") != answer.count("}") - answer.count("\\}"):
        return None
    return answer


# ---------------------------------------------------------------------------------------------------------------------
# Normalisation rules. Each fixes something math-verify 0.9 misses or that the parent needs for the exact fast path;
# cases math-verify already handles (`\text{(C)}` vs `C`, `10,\!000` vs `10000`, `5\text{ cm}` vs `5`) are still
# normalised here only so that they can take the fast path.
# ---------------------------------------------------------------------------------------------------------------------

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"


def _strip_layout(answer: str) -> str:
    """`\\left(`, `\\!`, `\\displaystyle`, `\\dfrac`: layout commands that never change the value."""
    answer = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?=[()\[\]|.]|\\[{}])", "", answer)
    answer = answer.replace("\\displaystyle", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = answer.replace("{,}", ",").replace(",\\!", ",").replace("\\!", "").replace("\\,", "")
    # `\ ` is a LaTeX space, but `\\ ` is a matrix row break followed by a space.
    return re.sub(r"(?<!\\)\\ ", " ", answer).strip()


def _strip_currency(answer: str) -> str:
    """`\\$18`, `$18`, `18 dollars`: currency is never part of the value (GSM8K answers are plain numbers)."""
    answer = answer.replace("\\$", "").replace("$", "")
    return re.sub(r"^(" + _NUMBER + r")\s*(?:dollars?|USD)$", r"\1", answer.strip()).strip()


def _strip_degrees(answer: str) -> str:
    """`30^\\circ`, `30^{\\circ}`, `30°`: math-verify drops the degree sign, so the fast path does too."""
    return re.sub(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)", "", answer).strip()


def _strip_percent(answer: str) -> tuple[str, bool]:
    """`50\\%` -> `50`, with a flag: math-verify accepts both `50` and `0.5` for `50\\%`, and so does the fast path."""
    stripped = re.sub(r"\s*(?:\\?%|\\text\s*\{\s*\\?%\s*\}|percent)$", "", answer)
    return stripped.strip(), stripped != answer


# Words that change the value ("5 million") or are maths ("2 pi") are never units.
_NOT_UNITS = r"(?!(?:pi|hundreds?|thousands?|millions?|billions?|trillions?|dozens?|percent|times|or|and)\b)"
_TEXT_UNIT = rf"\\(?:text|textbf|mbox|mathrm)\s*\{{\s*{_NOT_UNITS}[A-Za-z][A-Za-z .]*\}}"
_WORD_UNIT = rf"{_NOT_UNITS}[A-Za-z]{{2,}}(?: [A-Za-z]{{2,}})*"
_UNIT = rf"(?:{_TEXT_UNIT}|{_WORD_UNIT})"
_NUMBER_WITH_UNIT_RE = re.compile(rf"({_NUMBER})\s*{_UNIT}(?:\s*\^\s*\{{?[23]\}}?)?")


def _strip_units(answer: str) -> str:
    """`5\\text{ cm}`, `5 \\mbox{cm}^2`, `18 meters`: a number followed only by unit words is that number.

    Units are ignored, as math-verify does (`5\\text{ m}` equals `5`); a wrong unit is not penalised.
    """
    match = _NUMBER_WITH_UNIT_RE.fullmatch(answer)
    return match.group(1) if match else answer


_MAGNITUDES = {"hundred": 10**2, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_MAGNITUDE_RE = re.compile(rf"({_NUMBER})\s*(?:\\text\s*\{{\s*)?({'|'.join(_MAGNITUDES)})\s*\}}?")


def _expand_magnitude_words(answer: str) -> str:
    """`5\\text{ million}`, `2.5 thousand` -> `5000000`, `2500`: math-verify drops the word (5 million = 5)."""
    match = _MAGNITUDE_RE.fullmatch(answer)
    if not match:
        return answer
    return _fraction_to_latex(Fraction(match.group(1)) * _MAGNITUDES[match.group(2)])


def _remove_thousands_separators(answer: str) -> str:
    """`1,450,000` -> `1450000`. Only exact groups of three digits: `1,000` is 1000 but `1.000` stays 1 (decimal)."""
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", answer):
        return answer.replace(",", "")
    return answer


def _scientific_to_decimal(answer: str) -> str:
    """`1.5e3`, `1.5\\times 10^{3}`, `1.5 \\cdot 10^3` -> `1500`: math-verify reads `1.5e3` as `1.5 * e * 3`."""
    match = re.fullmatch(
        r"(" + _NUMBER + r")\s*(?:[eE]|(?:\\times|\\cdot|×)\s*10\s*\^)\s*\{?\s*([+-]?\d+)\s*\}?", answer
    )
    if not match or abs(int(match.group(2))) > _MAX_SCI_EXPONENT:
        return answer
    value = Fraction(match.group(1)) * Fraction(10) ** int(match.group(2))
    return _fraction_to_latex(value)


def _repeating_decimal_to_fraction(answer: str) -> str:
    """`0.\\overline{3}` -> `\\frac{1}{3}`, `1.2\\overline{36}` -> exact fraction: math-verify cannot parse them."""
    match = re.fullmatch(r"(-?)(\d*)\.(\d*)\\overline\s*\{(\d+)\}", answer)
    if not match:
        return answer
    sign, whole, fixed, repeat = match.groups()
    # x = whole.fixed(repeat)... : the repeating block contributes repeat / (10^len(repeat) - 1) shifted by fixed.
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
    return _fraction_to_latex(-value if sign else value)


def _column_vector_to_tuple(answer: str) -> str:
    """`\\begin{pmatrix}1\\\\2\\end{pmatrix}` -> `(1, 2)`.

    Decision: a column vector and the ordered tuple of its components are the same answer (MATH writes vectors as
    columns, models often answer with tuples). Row vectors and matrices (with `&`) are left alone.
    """
    match = re.fullmatch(r"\\begin\s*\{\s*([pb]matrix)\s*\}(.*)\\end\s*\{\s*\1\s*\}", answer, flags=re.DOTALL)
    if not match or "&" in match.group(2):
        return answer
    components = [c.strip() for c in match.group(2).split("\\\\") if c.strip()]
    return "(" + ", ".join(components) + ")" if len(components) > 1 else answer


def _fraction_to_latex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


@dataclass(frozen=True)
class _Normalised:
    text: str
    percent: bool


def normalise_answer(answer: str) -> str:
    r"""
    Apply every string normalisation rule of this module to an extracted answer.

    Example:

    ```python
    >>> normalise_answer("\\$1,450,000")
    '1450000'
    >>> normalise_answer("0.\\overline{3}")
    '\\frac{1}{3}'
    >>> normalise_answer("1.5e3")
    '1500'

    ```
    """
    return _normalise(answer).text


def _normalise(answer: str) -> _Normalised:
    answer = _strip_layout(answer)
    answer = _strip_currency(answer)
    answer = _strip_degrees(answer)
    answer, percent = _strip_percent(answer)
    answer = _expand_magnitude_words(answer)
    answer = _strip_units(answer)
    answer = _remove_thousands_separators(answer)
    answer = _scientific_to_decimal(answer)
    answer = _repeating_decimal_to_fraction(answer)
    answer = _column_vector_to_tuple(answer)
    return _Normalised(answer, percent)


# ---------------------------------------------------------------------------------------------------------------------
# Decisions the parent makes without sympy
# ---------------------------------------------------------------------------------------------------------------------

_PLAIN_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+")
_SLASH_FRACTION_RE = re.compile(r"(-?\d+)\s*/\s*(\d+)")
_LATEX_FRACTION_RE = re.compile(r"(-?)\\frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")


def _as_exact_number(answer: str) -> tuple[Fraction, bool] | None:
    """`(value, is_decimal)` for an int, decimal, `a/b` or `\\frac{a}{b}` with integer a, b; else `None`."""
    if len(answer) > _MAX_FAST_PATH_DIGITS:
        return None
    if _PLAIN_NUMBER_RE.fullmatch(answer):
        return Fraction(answer), "." in answer
    match = _SLASH_FRACTION_RE.fullmatch(answer)
    if match and int(match.group(2)) != 0:
        return Fraction(int(match.group(1)), int(match.group(2))), False
    match = _LATEX_FRACTION_RE.fullmatch(answer)
    if match and int(match.group(3)) != 0:
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return (-value if match.group(1) else value), False
    return None


def _fast_path(gold: _Normalised, pred: _Normalised) -> bool | None:
    """Exact decision for two plain numbers, or `None` when sympy (math-verify's rounding) must decide."""
    gold_number, pred_number = _as_exact_number(gold.text), _as_exact_number(pred.text)
    if gold_number is None or pred_number is None:
        return None
    (gold_value, gold_decimal), (pred_value, pred_decimal) = gold_number, pred_number
    candidates = {gold_value}
    if gold.percent != pred.percent:
        # Like math-verify: "50%" equals both "50" and "0.5".
        candidates.add(gold_value / 100 if gold.percent else gold_value * 100)
    if pred_value in candidates:
        return True
    if gold_decimal or pred_decimal:
        # A rounded decimal ("0.333333" for 1/3) is math-verify's call (it rounds to 6 places); not certain here.
        return None
    return False


_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})\s*(?:\\text\s*\{\s*)?([ap])?\.?\s*(?:m\.?)?\s*\}?", re.IGNORECASE)


def _as_clock_time(answer: str) -> tuple[int, int] | None:
    """`4:30 p.m.`, `4:30 pm`, `\\text{4:30 PM}`, `16:30` -> minutes since midnight as `(hour, minute)`."""
    answer = re.sub(r"^\\text\s*\{(.*)\}$", r"\1", answer.strip())
    match = _TIME_RE.fullmatch(answer)
    if not match:
        return None
    hour, minute, half = int(match.group(1)), int(match.group(2)), (match.group(3) or "").lower()
    if minute > 59 or hour > 23 or (half and not 1 <= hour <= 12):
        return None
    if half:  # 12:15 a.m. is 00:15, 12:15 p.m. is 12:15
        hour = hour % 12 + (12 if half == "p" else 0)
    return hour, minute


def _shape(answer: str) -> str:
    """`"ordered"` (tuple, interval, vector), `"set"` (`\\{..\\}`, bare list, "3 or 5") or `"scalar"`."""
    depth, top_level_comma = 0, False
    for char in answer:
        depth += char in "([{"
        depth -= char in ")]}"
        top_level_comma |= char == "," and depth == 0
    if answer.startswith("\\{") and answer.endswith("\\}"):
        return "set"
    if top_level_comma or re.search(r"\bor\b|\\text\s*\{\s*(?:or|and)\s*\}|\\lor", answer):
        return "set"
    if answer[:1] in "([" and answer[-1:] in ")]" and "," in answer:
        return "ordered"
    return "scalar"


def _looks_like_interval(answer: str) -> bool:
    """Gold that can only be an interval: `(-\\infty, 3]`, `[2, 5)`, `(0, 1) \\cup (2, 3)`; `(1, 2)` may be a point."""
    if "\\infty" in answer or "\\cup" in answer:
        return True
    return bool(re.fullmatch(r"[(\[][^,]*,[^,]*[)\]]", answer)) and (answer[0] == "[" or answer[-1] == "]")


def _decide_in_parent(gold: _Normalised, pred: _Normalised) -> tuple[bool, str] | None:
    """`(correct, path)` for the decisions that are certain without sympy, else `None`."""
    if gold.text == pred.text and gold.percent == pred.percent:
        return True, "exact"
    fast = _fast_path(gold, pred)
    if fast is not None:
        return fast, "fast_path"
    gold_time, pred_time = _as_clock_time(gold.text), _as_clock_time(pred.text)
    if gold_time is not None or pred_time is not None:
        # math-verify reads "4:30" as the ratio 4/30 and cannot tell a.m. from p.m.; times are compared here only.
        return gold_time is not None and gold_time == pred_time, "clock_time"
    if {_shape(gold.text), _shape(pred.text)} == {"set", "ordered"}:
        # math-verify accepts `\{1,2\}` for `(2,1)`: an unordered answer never matches an ordered one.
        return False, "set_vs_tuple"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Worker process (runs math-verify). This module is loaded in the worker by file path, not as `trl_kimi...`, so a
# worker never imports torch/trl through `trl_kimi/__init__.py`: start-up costs only sympy + math-verify.
# ---------------------------------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_WORKER_PARSE_CACHE_SIZE = 4096
_CRASH_RETRIES = 1
_RESULT_CACHE_SIZE = 65536  # worker results kept by the parent; a few MB of short strings

_WORKER_BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_trl_kimi_math_worker", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._worker_main(int(sys.argv[2]), float(sys.argv[3]))
"""


def _die_with_parent(parent_pid: int) -> None:
    """Make the kernel SIGKILL this worker when the parent dies (Linux), and exit if it already has.

    PR_SET_PDEATHSIG fires when the parent *thread* that started the worker exits; a pool first used from a short-lived
    thread loses its workers with it, which the parent sees as crashes and repairs by starting new ones.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before prctl ran; the pipe EOF on stdin is the third, portable, safety net.
    if os.getppid() != parent_pid:
        os._exit(0)


def _worker_main(parent_pid: int, soft_timeout: float) -> None:
    """Serve `{"gold", "pred", "intervals"}` requests from stdin, one JSON line each, until EOF."""
    _die_with_parent(parent_pid)
    # The protocol owns the original stdout; anything else printed (library warnings) goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="ascii")
    os.dup2(2, 1)
    from math_verify import parse, verify

    # Timeouts are reported to the parent, which logs them once per item; math-verify's own warnings would repeat them.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    # math-verify's own SIGALRM timeouts (whole seconds) are the first line of defence: they work here because this is
    # the main thread, and they keep the worker alive (a respawn costs a second of imports). An item makes up to three
    # timed calls (parse gold, parse prediction, verify), so each gets a quarter of the hard deadline; the parent's
    # SIGKILL catches what they cannot interrupt (C-level loops).
    seconds = max(1, math.floor(soft_timeout / 4))

    # A gold answer is verified once per generation of its prompt, so parses are memoised; failures are not (a parse
    # that timed out on a busy machine gets another chance).
    cache: dict[str, list] = {}

    def parse_answer(answer: str) -> list:
        if answer not in cache:
            parsed = parse("\\boxed{" + answer + "}", parsing_timeout=seconds)
            if not parsed:
                return parsed
            if len(cache) >= _WORKER_PARSE_CACHE_SIZE:
                cache.clear()
            cache[answer] = parsed
        return cache[answer]

    def timed(function: Callable, *args, **kwargs) -> tuple[Any, bool]:
        start = time.monotonic()
        result = function(*args, **kwargs)
        # math-verify logs and returns []/False on its own timeout; the elapsed time tells the two apart.
        return result, time.monotonic() - start >= seconds

    def handle(request: dict) -> dict:
        gold, gold_timed_out = timed(parse_answer, request["gold"])
        if not gold:
            return {"ok": False, "reason": "timeout" if gold_timed_out else "error: gold answer unparsable"}
        pred, pred_timed_out = timed(parse_answer, request["pred"])
        if not pred:
            return {"ok": False, "reason": "timeout" if pred_timed_out else "unparsable"}
        ok, timed_out = timed(
            verify, gold, pred, timeout_seconds=seconds, allow_set_relation_comp=request["intervals"]
        )
        return {"ok": bool(ok), "reason": "timeout" if timed_out and not ok else None}

    # Warm-up: the first parse builds latex2sympy's ANTLR parser (~0.5 s); pay it before "ready", not on an item's
    # deadline.
    verify(parse_answer("\\frac{1}{2}"), parse_answer("0.5"), timeout_seconds=seconds)
    protocol.write("ready\n")
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which scores 0 and counts an error
            reply = {"ok": False, "reason": f"error: {type(error).__name__}: {error}"[:500]}
        protocol.write(json.dumps(reply) + "\n")


class _Worker:
    def __init__(self, soft_timeout: float):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP, os.path.abspath(__file__), str(os.getpid()), str(soft_timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="ascii",
            bufsize=1,
            close_fds=True,
        )
        self.ready = False
        self.item: int | None = None
        self.deadline = math.inf

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: a worker stuck in C code ignores everything else
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:  # the broken pipe of a killed worker
                pass


class _WorkerPool:
    """Fixed-size pool of math-verify workers with one item in flight each and a hard per-item deadline."""

    def __init__(self, num_workers: int, timeout: float, startup_timeout: float):
        self.num_workers, self.timeout, self.startup_timeout = num_workers, timeout, startup_timeout
        self.workers = [self._spawn() for _ in range(num_workers)]

    def _spawn(self) -> _Worker:
        worker = _Worker(self.timeout)
        worker.deadline = time.monotonic() + self.startup_timeout
        return worker

    def run(self, requests: list[dict]) -> list[dict]:
        """Replies in request order; a timed-out or crashed item gets `{"ok": False, "reason": ...}`."""
        if not self.workers:  # closed, or a failed start-up: try again rather than wait on no workers
            self.workers = [self._spawn() for _ in range(self.num_workers)]
        replies: list[dict | None] = [None] * len(requests)
        pending = deque(range(len(requests)))
        crashes = [0] * len(requests)
        selector = selectors.DefaultSelector()
        for worker in self.workers:
            selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        try:
            while pending or any(w.item is not None for w in self.workers):
                for worker in self.workers:
                    if worker.ready and worker.item is None and pending:
                        self._send(worker, pending, requests)
                busy = [w for w in self.workers if w.item is not None or not w.ready]
                wait = max(0.0, min(w.deadline for w in busy) - time.monotonic()) if busy else None
                for key, _ in selector.select(wait):
                    worker = key.data
                    line = worker.process.stdout.readline()
                    if line == "ready\n" and not worker.ready:
                        worker.ready, worker.deadline = True, math.inf
                    elif line:
                        replies[worker.item] = json.loads(line)
                        worker.item, worker.deadline = None, math.inf
                    else:  # EOF: the worker died (OOM killer, segfault in a C extension, someone's kill -9)
                        item = worker.item
                        self._replace(worker, selector, replies, "worker_crashed")
                        if item is not None and crashes[item] < _CRASH_RETRIES:
                            # It may have died of something else (killed between batches): retry once; an item that
                            # kills a second worker scores 0.
                            crashes[item] += 1
                            replies[item] = None
                            pending.appendleft(item)
                now = time.monotonic()
                for worker in list(self.workers):
                    if worker.deadline <= now:
                        self._replace(worker, selector, replies, "timeout")
        finally:
            selector.close()
        return replies

    def _send(self, worker: _Worker, pending: deque, requests: list[dict]) -> None:
        index = pending.popleft()
        try:
            worker.process.stdin.write(json.dumps(requests[index]) + "\n")
            worker.process.stdin.flush()
        except OSError:  # died between items: the item never started, so it goes back in the queue
            pending.appendleft(index)
            return
        worker.item, worker.deadline = index, time.monotonic() + self.timeout

    def _replace(self, worker: _Worker, selector: selectors.BaseSelector, replies: list, reason: str) -> None:
        if not worker.ready:
            worker.kill()
            self.close()
            raise RuntimeError(
                f"A math-verify worker ({sys.executable}) failed to start (exit code {worker.process.returncode}, "
                f"start-up limit {self.startup_timeout} s; its stderr is above). Check that "
                "`python -c 'import math_verify'` works with this interpreter."
            )
        if worker.item is not None:
            replies[worker.item] = {"ok": False, "reason": reason}
        logger.info("math verifier: restarting a worker (%s)", reason)
        selector.unregister(worker.process.stdout)
        worker.kill()
        replacement = self._spawn()
        self.workers[self.workers.index(worker)] = replacement
        selector.register(replacement.process.stdout, selectors.EVENT_READ, replacement)

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.process.stdin.close()  # EOF: an idle worker exits on its own
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            worker.kill()
        self.workers = []


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def _completion_text(completion: Any) -> str | None:
    """Text of a standard (`str`) or conversational (list of messages) completion; `None` if it has none."""
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content")
                if isinstance(content, list):  # multimodal message: [{"type": "text", "text": ...}, ...]
                    content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
                return content if isinstance(content, str) else None
    return None


# Fractions of a batch logged through TRL's `log_metric`, by the reason prefixes of `MathVerifier.verify_batch`.
_METRIC_REASONS = {
    "math_verifier/no_answer": ("no_answer",),
    "math_verifier/timeouts": ("timeout",),
    "math_verifier/errors": ("error", "worker_crashed"),
    "math_verifier/fast_path": ("exact", "fast_path"),
}


class MathVerifier:
    r"""
    Math correctness reward: 1.0 if the completion's final answer equals the gold answer, else 0.0.

    Instances are reward functions for TRL's `GRPOTrainer` (and [`~trl_kimi.KimiMirrorDescentTrainer`]): they take
    `completions` and the dataset column `solution` (a bare answer such as `"\frac{14}{3}"`, or a worked MATH/GSM8K
    solution), and accept and ignore TRL's other keyword arguments. If `log_metric` is passed (TRL does), the fractions
    of items with no answer, timeouts, errors (worker crashes included) and fast-path decisions are logged as
    `math_verifier/no_answer`, `math_verifier/timeouts`, `math_verifier/errors` and `math_verifier/fast_path`.

    Equivalence is math-verify's plus the rules in this module (units, `\$`, `%`, degrees, thousands separators,
    scientific notation, repeating decimals, intervals vs inequalities, clock times, column vectors vs tuples), and
    never a false positive on purpose: `\{1,2\}` (a set) never equals `(2,1)` (a tuple), `1.000` is one, not a
    thousand, and `4:30` without a.m./p.m. equals only `4:30` and `04:30`.

    Args:
        timeout (`float`, *optional*, defaults to `10.0`):
            Hard deadline in seconds for verifying one item in a worker. Past it, the worker is SIGKILLed and replaced
            and the item scores 0 (logged, and counted in `math_verifier/timeouts`). Each of math-verify's own timed
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
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}; pass e.g. MathVerifier(timeout=10.0).")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}; pass e.g. MathVerifier(num_workers=2).")
        self.timeout, self.num_workers, self.startup_timeout = timeout, num_workers, startup_timeout
        # TRL names the reward column after `__name__`; the instance logs under the same name as `math_reward` so that
        # switching from the function to a configured instance does not rename the metric.
        self.__name__ = "math_reward"
        self._pool: _WorkerPool | None = None
        self._atexit: Callable[[], None] | None = None
        self._cache: dict[tuple[str, str, bool], float] = {}  # (gold, prediction, intervals) -> worker's reward

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
        `"cached"`, `"no_answer: ..."`, `"timeout"`, `"error: ..."`, `"clock_time"`, `"set_vs_tuple"`, `"exact"`,
        `"unparsable"`...

        Example:

        ```python
        >>> MathVerifier().verify_batch(["<think>so 18", None], ["18", "18"])
        ([0.0, 0.0], ['no_answer: unfinished <think> block', 'no_answer: completion is None'])

        ```
        """
        rewards, reasons = [0.0] * len(completions), [""] * len(completions)
        # Items for the workers, deduplicated: in GRPO the generations of a prompt often give the same answer.
        pending: dict[tuple[str, str, bool], list[int]] = {}
        for i, (completion, gold_solution) in enumerate(zip(completions, solutions)):
            if not isinstance(gold_solution, str):
                raise ValueError(
                    f"solution[{i}] must be a string (the gold answer), got {type(gold_solution).__name__}: "
                    f"{gold_solution!r}; fix the dataset row."
                )
            gold_answer = extract_answer(gold_solution, require_anchor=False)
            text = _completion_text(completion)
            if gold_answer is None:
                reasons[i] = f"error: no gold answer in solution[{i}] {gold_solution[:80]!r}"
            elif text is None:
                reasons[i] = f"no_answer: completion is {'None' if completion is None else type(completion).__name__}"
            elif not text.strip():
                reasons[i] = "no_answer: empty completion"
            else:
                pred_answer = extract_answer(text)
                if pred_answer is None:
                    think_open = _THINK_OPEN in text and text.rfind(_THINK_CLOSE) < text.rfind(_THINK_OPEN)
                    reasons[i] = "no_answer: " + ("unfinished <think> block" if think_open else "no (complete) answer")
                else:
                    gold, pred = _normalise(gold_answer), _normalise(pred_answer)
                    decision = _decide_in_parent(gold, pred)
                    if decision is not None:
                        rewards[i], reasons[i] = float(decision[0]), decision[1]
                    else:
                        key = (gold.text, pred.text, _looks_like_interval(gold.text))
                        if key in self._cache:
                            rewards[i], reasons[i] = self._cache[key], "cached"
                        else:
                            pending.setdefault(key, []).append(i)
            if reasons[i].startswith(("no_answer: completion is", "error")):
                logger.warning("%s: item %d scored 0: %s", self.__name__, i, reasons[i])
        if pending:
            requests = [{"gold": gold, "pred": pred, "intervals": intervals} for gold, pred, intervals in pending]
            for (key, items), reply in zip(pending.items(), self._get_pool().run(requests)):
                reward, reason = (1.0 if reply["ok"] is True else 0.0), reply["reason"] or "math_verify"
                if (
                    reason == "math_verify"
                ):  # only definite answers are cached; a timeout may pass on a quieter machine
                    if len(self._cache) >= _RESULT_CACHE_SIZE:
                        self._cache.clear()
                    self._cache[key] = reward
                for i in items:
                    rewards[i], reasons[i] = reward, reason
                    if reason.startswith(("timeout", "error", "worker_crashed")):
                        logger.warning("%s: item %d scored 0: %s", self.__name__, i, reason)
        return rewards, reasons

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
