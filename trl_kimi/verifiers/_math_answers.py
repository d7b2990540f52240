"""Pure answer rules of the math verifier: extraction, normalisation and the decisions that need no sympy.

Nothing here imports sympy or math-verify, so the parent process (the trainer) decides most items with these rules
alone; [`~trl_kimi.verifiers.math_verifier.MathVerifier`] sends the rest to its worker processes.
"""

import re
from dataclasses import dataclass
from fractions import Fraction


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
