"""Pure answer rules of the math verifier: extraction, normalisation and the decisions that need no sympy.

Nothing here imports sympy or math-verify, so the parent process (the trainer) decides most items with these rules
alone; [`~trl_kimi.verifiers.math_verifier.MathVerifier`] sends the rest to its worker processes.
"""

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from ._math_grammar import refusal, strip_trailing_units


# Only the tail of a completion is searched for the answer: the answer is at the end, and a 1 MB degenerate completion
# must not cost a regex scan of 1 MB per item. 8,192 characters hold any sensible final answer plus its sentence.
TAIL_CHARS = 8192

# Numbers longer than this are not put through `Fraction` (Python refuses int() of > 4,300 digits, and such an answer
# is degenerate anyway); they go to a worker, whose deadline bounds the cost.
_MAX_FAST_PATH_DIGITS = 100

# Exponents in scientific notation beyond this are left for math-verify (`1e1000000` would build a million-digit int).
_MAX_SCI_EXPONENT = 100

# A predicted answer longer than this is refused before any rule reads it: the longest MATH/GSM8K gold answers are a few
# hundred characters, and the normalisation rules are then bounded by a small constant.
MAX_ANSWER_CHARS = 1000

# Searches for what a sentence ends with look at its last characters only, so a long sentence costs no more than this.
_END_WINDOW = 200


def _search_end(pattern: re.Pattern, text: str) -> tuple[re.Match | None, int]:
    """`pattern` (anchored at `\\Z`) searched in the last `_END_WINDOW` characters of `text`, and the window's offset."""
    offset = max(0, len(text) - _END_WINDOW)
    match = pattern.search(text, offset)
    if match is not None and offset and match.start() == offset:
        return None, offset  # the match may continue before the window (a number cut in two): not trusted
    return match, offset


# ---------------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Anchors, the last one in the text wins ("Final Answer: The final answer is $18$." matches twice): "the answer is",
# "Final Answer:", GSM8K's "####", a line "A: 18" (GSM8K few-shot format), "**Answer:** 18", "Answer $9$".
_ANCHOR_RE = re.compile(
    r"(?:\banswer\s++is|\banswer\s*+\**+\s*+:|####|^[ \t>*#]*+A\s*+\**+\s*+:|^[ \t>*#]*+answer(?=\s*+(?:\$|\\\(|\\\[)))"
    r"\**+\s*+:?\s*+",
    re.IGNORECASE | re.MULTILINE,
)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# A chat template's next turn (`<|im_start|>user ...`) or end tokens are not part of the answer, nor is the Minerva
# few-shot sign-off.
_END_JUNK_RE = re.compile(r"<\|im_start\|>.*\Z|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|</s>", re.DOTALL)
_SIGN_OFF = "i hope it is correct"


def _without_sign_off(text: str) -> str:
    """The text without a final "I hope it is correct." (string methods: no regex search over a run of spaces)."""
    stripped = text.rstrip()
    body = stripped[:-1] if stripped.endswith(".") else stripped
    return body[: -len(_SIGN_OFF)].rstrip() if body[-len(_SIGN_OFF) :].lower() == _SIGN_OFF else text


# What may stand between the boxes of one final answer (`\boxed{1}, \boxed{2}`, `\boxed{1} \quad\text{and}\quad
# \boxed{2}`): the boxes are then one answer with several parts, like a list.
_BOX_SEPARATOR_RE = re.compile(
    r"(?:\s|\$|\\[()\[\]]|[,;&.]|\\\\|\\[,;:!]|\\q?quad|\\text\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*"
)


@dataclass(frozen=True)
class _Span:
    """A math span `$$..$$`, `$..$`, `\\(..\\)` or `\\[..\\]` of a text: where it is, its content, display or inline."""

    start: int
    end: int
    content: str
    display: bool


class _NextIndex:
    """`text.find(needle, position)` for positions that only grow: each call reuses the last answer while it is still
    ahead, so all calls together scan the text once."""

    def __init__(self, text: str, needle: str):
        self.text, self.needle, self.found = text, needle, -2

    def __call__(self, position: int) -> int:
        if self.found == -1 or self.found >= position:
            return self.found
        self.found = self.text.find(self.needle, position)
        return self.found


def _math_spans(text: str) -> list[_Span]:
    """The math spans of `text`, left to right, as the regular expression `\\$\\$(.+?)\\$\\$|\\$([^$\\n]+?)\\$|
    \\\\\\((.+?)\\\\\\)|\\\\\\[(.+?)\\\\\\]` finds them (inline `$..$` never crosses a line), in one linear pass: an unclosed
    opener costs one search, not one per position after it."""
    spans: list[_Span] = []
    next_dollar, next_backslash = _NextIndex(text, "$"), _NextIndex(text, "\\")
    closes = {"$$": _NextIndex(text, "$$"), "\\)": _NextIndex(text, "\\)"), "\\]": _NextIndex(text, "\\]")}
    next_newline = _NextIndex(text, "\n")
    position = 0
    while True:
        candidates = [i for i in (next_dollar(position), next_backslash(position)) if i != -1]
        if not candidates:
            return spans
        start = min(candidates)
        span = None
        if text.startswith("$$", start):
            end = closes["$$"](start + 3)
            if end != -1:
                span = _Span(start, end + 2, text[start + 2 : end], True)
        if span is None and text.startswith("$", start) and start + 1 < len(text) and text[start + 1] not in "$\n":
            end = next_dollar(start + 1)
            newline = next_newline(start + 1)
            if end != -1 and (newline == -1 or newline > end):
                span = _Span(start, end + 1, text[start + 1 : end], False)
        for opener, close, display in (("\\(", "\\)", False), ("\\[", "\\]", True)):
            if span is None and text.startswith(opener, start):
                end = closes[close](start + 3)
                if end != -1:
                    span = _Span(start, end + 2, text[start + 2 : end], display)
        if span is None:
            position = start + 1
        else:
            spans.append(span)
            position = span.end


def _outside_spans(text: str, spans: list[_Span], fill: str | None = None) -> str:
    """`text` with each span replaced by `fill`, or masked with "D" (display) / "M" (inline) characters when `None`."""
    parts, position = [], 0
    for span in spans:
        parts.append(text[position : span.start])
        parts.append(fill if fill is not None else ("D" if span.display else "M") * (span.end - span.start))
        position = span.end
    parts.append(text[position:])
    return "".join(parts)


# Words before a number that make it something else than the answer ("not 5", "less than 5", "about 5"), or make it
# one of several ("5 or 6", "5 and 6", "5, 6").
_HEDGE_BEFORE_RE = re.compile(
    r"\b(?:not|no|never|than|least|most|over|under|above|below|nearly|almost|approximately|about|around|roughly|"
    r"up to|between|except|either|neither|from|minus|plus|times|over|or|and)\W*+\Z|,\s*+\$?\s*+\Z",
    re.IGNORECASE,
)
# "$x \geq 5$ is the solution.": the span before these words is the answer.
_ANSWER_SUFFIX_RE = re.compile(
    r"\s*+(?:is|are)\s++(?:the|our|my)\s++(?:final\s++)?(?:answer|solution|result)s?\W*+\Z", re.IGNORECASE
)
# A sentence that ends with a number: the number and what follows it (units, `%`, currency signs).
_TRAILING_NUMBER_RE = re.compile(
    r"(?:\\?\$|€|£)?\s*+(-?(?:\d{1,3}(?:[, ]\d{3})+|\d+)(?:\.\d+|/\d+)?|-?\.\d+)"
    r"((?:\s*+(?:%|€|\\?\$|²|³|[A-Za-z]++\.?)){0,3})\W*+\Z"
)


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


# A relation between the last two boxes, and nothing else but spacing and `$`.
_BOX_RELATION_RE = re.compile(
    r"[\s$]*+(=|<|>|\\(?:le|ge|leq|geq|lt|gt|ne|neq|equiv|approx|sim|simeq|cong|to|Rightarrow|implies)(?![A-Za-z]))[\s$]*+"
)


def _last_boxed(text: str, gold: bool = False) -> tuple[bool, str | None]:
    """`(found, content)` for the final `\\boxed{}`/`\\fbox{}`; content is `None` when that box is truncated.

    Boxes that follow each other with only separators between them (`\\boxed{1}, \\boxed{2}`, `\\boxed{3} or
    \\boxed{5}`) are one answer, their contents joined by commas: a list of answers never equals one of its items.
    """
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return False, None
    # A truncated last box does not fall back to an earlier one (the model did not finish its answer).
    last = _balanced_brace_content(text, matches[-1].end() - 1)
    if last is None:
        return True, None
    parts, start = [last], matches[-1].start()
    for match in reversed(matches[:-1]):
        content = _balanced_brace_content(text, match.end() - 1)
        if content is None:
            break
        end = match.end() + len(content) + 1
        if end > start or start - end > 80:
            break
        relation = _BOX_RELATION_RE.fullmatch(text[end:start])
        if relation and len(parts) == 1 and not gold:
            # `\boxed{3} = \boxed{5}`, `\boxed{\text{3}} \equiv \boxed{5}`: the answer is the relation, which the
            # grammar then refuses unless the gold has it.
            return True, f"{content.strip()} {relation.group(1)} {last.strip()}"
        between = re.sub(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?\s*=", " ", text[end:start])  # `y_2 = `: a label
        # Separators only, or a few words without numbers that say "and" (`\boxed{1} papers and \boxed{2} bins`).
        listed = len(between) <= 40 and re.fullmatch(r"[^\d=\n.!?]*", between)
        # Boxes are one list answer when joined by "and" or a comma; a gold solution's also when only symbols separate
        # them (`\boxed{35} ++ \boxed{4}`), never by other words ("\boxed{1} no no \boxed{2}").
        listed = listed and (re.search(r"\band\b|,", between) or (gold and not re.search(r"[A-Za-z]", between)))
        if end > start or start - end > 80 or not (_BOX_SEPARATOR_RE.fullmatch(between) or listed):
            break
        if gold and re.search(r"\bor\b", between):
            break  # a gold solution's "$\boxed{15\frac{39}{40}}$, or $\boxed{\frac{639}{40}}$" gives two forms of one answer
        parts.insert(0, content)
        start = match.start()
    return True, ", ".join(part.strip() for part in parts)


def _first_math_span(text: str) -> str | None:
    """The answer when `text` starts with a math span: its content, `None` for an unclosed one (truncated)."""
    for open_, close in (("$$", "$$"), ("\\[", "\\]"), ("$", "$"), ("\\(", "\\)")):
        if text.startswith(open_):
            end = text.find(close, len(open_))
            if end == -1 or (open_ in ("$", "\\(") and "\n" in text[:end]):
                return None  # unclosed, or inline math across lines: not a complete answer
            # `$28$ %`, `$5$ dollars`: a few words after the span, up to the end of its sentence, belong to the answer
            # (units, percent, or words that change the value); anything longer is prose after the answer.
            after = re.split(r"(?<![\d\\])\.(?:\s|$)|\n", text[end + len(close) :], maxsplit=1)[0].strip()
            if not re.fullmatch(r"(?:\\?%|[A-Za-z]{2,}\.?)(?:\s+[A-Za-z]+\.?){0,2}", after):
                after = ""
            return text[len(open_) : end] + " " + after
    return ""


def _after_anchor(text: str) -> str | None:
    """Answer after the last anchor ("The answer is", "Final Answer:", "####", "A:"), cut at the end of its sentence."""
    matches = list(_ANCHOR_RE.finditer(text))
    if not matches:
        return None
    rest = re.sub(r"^(?:\\?[\"'“])+", "", text[matches[-1].end() :].lstrip())  # quoted: `"$12$ and $13$"`
    # `$12$ and $13$`: several spans joined by "and"/commas up to the end of the sentence are one list answer.
    joined = _joined_spans(re.split(r"(?<![\d\\])\.(?:\s|$)|\n", rest, maxsplit=1)[0].rstrip("\\\"'”"))
    if joined:
        return joined
    span = _first_math_span(rest)
    if span is None:
        return None
    if span:
        return span
    line = rest.split("\n", 1)[0]
    # A sentence ends at ". " or a final "."; a decimal point ("1.5") is followed by a digit, so it is kept.
    return _answer_in_sentence(re.split(r"\.(?:\s|$)", line, maxsplit=1)[0])


def _sentences(text: str) -> list[str]:
    """Split at `. `, `! `, `? `, line breaks and after display equations, outside math spans."""
    # Inline spans are masked with "M", display spans with "D": a display equation followed by a capital letter ends
    # its sentence even without a period ("... $$x = 2.$$ Therefore ...").
    masked = _outside_spans(text, _math_spans(text))
    cuts = [m.end() for m in re.finditer(r"[.!?](?:\s+|\Z)|\n|(?<=D)\s+(?=[A-Z])", masked)]
    sentences, start = [], 0
    for cut in cuts:
        sentences.append(text[start:cut])
        start = cut
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


_CONCLUSION_RE = re.compile(r"(?:therefore|thus|so|hence|in total|in conclusion|finally)\b", re.IGNORECASE)
# A word of prose: two letters or more, not a LaTeX command (`\\frac`) nor inside one's braces (`\\text{cm}` counts).
_PROSE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")


def _answer_in_sentence(sentence: str) -> str | None:
    """The answer a sentence ends with: its last math span (and the words after it), else its last number.

    `"The largest $n$ is 34"` -> `34`; `"Therefore $x \\geq 5$ is the solution"` -> `x \\geq 5`; `"so she pays
    \\$18 in total"` -> `None` (the number is not at the end); a question, or a number after "not", "less than",
    "about"... is no answer.
    """
    sentence = sentence.strip()
    if not sentence or sentence.endswith("?"):
        return None
    suffix, _ = _search_end(_ANSWER_SUFFIX_RE, sentence)
    sentence = (sentence[: suffix.start()] if suffix else sentence).rstrip(" .!;:")
    spans = _math_spans(sentence)
    # Prose is what remains outside math; a sentence with no prose is all answer (`$x = 3$`, `18 dollars`).
    if spans and spans[-1].end >= len(sentence) - 40:
        last = spans[-1]
        after = sentence[last.end :].strip()
        if not after or re.fullmatch(r"(?:%|[A-Za-z]+\.?)(?:\s+[A-Za-z]+\.?){0,2}", after):
            before = sentence[: last.start]
            if _search_end(_HEDGE_BEFORE_RE, before)[0]:
                return None
            content = last.content
            return (content + " " + after).strip()
    if not spans and not _PROSE_RE.search(sentence):
        return sentence  # no words at all: the whole sentence is an expression (`\\frac{10}{9}`, `x^2+1`)
    match, _ = _search_end(_TRAILING_NUMBER_RE, sentence)
    if match is not None:
        hedged = _search_end(_HEDGE_BEFORE_RE, sentence[: match.start()])[0]
        return None if hedged else (match.group(1) + match.group(2)).strip()
    # "Therefore, there are 12 sequences that meet the conditions.": a conclusion with exactly one number, not
    # followed by a word that changes it ("5 more than", "3 times").
    numbers = list(re.finditer(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", sentence))
    if (
        _CONCLUSION_RE.match(sentence)
        and len(numbers) == 1
        and not spans
        and not _search_end(_HEDGE_BEFORE_RE, sentence[: numbers[0].start()])[0]
        and not re.match(rf"\s*{_VALUE_WORDS}\b", sentence[numbers[0].end() :], re.IGNORECASE)
    ):
        return numbers[0].group(0)
    return None


def _joined_spans(text: str) -> str | None:
    """`$1$ and $2$ and $3$` -> `1, 2, 3`: a gold answer written as several math spans joined by "and" or commas."""
    spans = _math_spans(text)
    outside = _outside_spans(text, spans, " ")
    if len(spans) < 2 or not re.fullmatch(r"(?:\s|,|;|\band\b|\.)*", outside):
        return None
    return ", ".join(span.content.strip() for span in spans)


_RESULT_VERB_RE = re.compile(r"(?:\bis|\bare|\bequals?|=|:|\bget|\bgives?|\bhas|\bhave)\W*+\Z")


def _unanchored_answer(text: str) -> str | None:
    """The answer of a completion with no box and no anchor: its last sentence, if that ends with a value."""
    sentences = _sentences(text)
    if not sentences:
        return None
    answer = _answer_in_sentence(sentences[-1])
    # After other sentences, the last one must state a result ("Therefore ...", "... is 19", "... = 19"): a
    # completion that stops on a sentence of the question ("She eats 3.") has not answered.
    if answer is not None and len(sentences) > 1 and not _CONCLUSION_RE.match(sentences[-1]):
        head = sentences[-1][: sentences[-1].rfind(answer.split()[0])] if answer.split() else ""
        if not _search_end(_RESULT_VERB_RE, head)[0]:
            return None
    return answer


def extract_answer(text: str, require_anchor: bool = True) -> str | None:
    r"""
    Extract the final answer of a math completion or solution.

    Args:
        text (`str`):
            Completion or solution text.
        require_anchor (`bool`, *optional*, defaults to `True`):
            Whether the answer must be marked: by `\boxed{}`, an anchor ("The answer is", "Final Answer:", "####", a
            line "A: ..."), or by being the value the last sentence ends with (`18`, `$18$`, `18 dollars`, "so the
            area is $\frac{9}{2}$."). Gold solutions may be bare expressions (`require_anchor=False`).

    Returns:
        `str` or `None`: The answer, stripped; `None` when there is none (a last sentence that is a question or ends
        in prose, empty or truncated box, unfinished `<think>` block).

    Example:

    ```python
    >>> extract_answer("So $x = 3$ and the area is $\\boxed{\\frac{9}{2}}$.")
    '\\frac{9}{2}'
    >>> extract_answer("Final Answer: The final answer is $18$. I hope it is correct.")
    '18'
    >>> extract_answer("Natalia sold 48 + 24 = 72 clips.\nA: 72")
    '72'
    >>> extract_answer("<think>the answer is 4") is None  # unfinished thinking block
    True
    >>> extract_answer("\\boxed{3} or \\boxed{5}")  # a hedge is a list of answers
    '3, 5'

    ```
    """
    if _THINK_OPEN in text or _THINK_CLOSE in text:
        open_at, close_at = text.rfind(_THINK_OPEN), text.rfind(_THINK_CLOSE)
        if close_at < open_at:  # the last <think> never closed: everything after it is unfinished reasoning
            return None
        # Chat templates often put <think> in the prompt, so a lone </think> also ends the thinking block.
        text = text[close_at + len(_THINK_CLOSE) :]
    text = _without_sign_off(_END_JUNK_RE.sub("", text[-TAIL_CHARS:]))
    found, answer = _last_boxed(text, gold=not require_anchor)
    anchors = list(_ANCHOR_RE.finditer(text))
    if (
        found
        and anchors
        and anchors[-1].start() > text.rfind("}")
        and re.search(r"[\d$\\]", _after_anchor(text) or "")
    ):
        # "... = \boxed{255}. So she has \$10,455. Final Answer: 10455": an anchor after the last box is the answer.
        found = False
    if not found:
        if _ANCHOR_RE.search(text):
            answer = _after_anchor(text)
        elif require_anchor:
            answer = _unanchored_answer(text)
        else:
            answer = _joined_spans(text) or text
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
# A number that may group its thousands with commas (`1,000.99`), for the rules that only cut words off a number.
_GROUPED_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
# Longest number the numeric rules rewrite: Python refuses int() of more than 4,300 digits, and such an answer is
# degenerate anyway (it goes to a worker, whose deadline bounds the cost).
_MAX_NUMBER_CHARS = 100


def _strip_layout(answer: str) -> str:
    """`\\left(`, `\\!`, `\\displaystyle`, `\\dfrac`: layout commands that never change the value."""
    # (`\\\\left(`: the same command with an escaped backslash, in JSON-escaped text)
    answer = re.sub(r"\\\\?(?:left|right|big|Big|bigg|Bigg)(?=[()\[\]|.]|\\[{}])", "", answer)
    answer = answer.replace("\\displaystyle", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = answer.replace("\\cfrac", "\\frac")
    # `11,\! 111,\! 100` and `10{,}000` are thousands separators: the space after them goes too.
    answer = re.sub(r"(?:\{,\}|,\\!)\s*", ",", answer).replace("\\!", "").replace("\\,", "")
    # `\ ` is a LaTeX space, but `\\ ` is a matrix row break followed by a space.
    return re.sub(r"(?<!\\)\\ ", " ", answer).strip()


def _unwrap_text(answer: str) -> str:
    """`\\text{5 students}` -> `5 students`: a whole answer in a text box that starts with a number is that text."""
    match = re.fullmatch(r"\\(?:text|textbf|textrm|mbox|mathrm)\s*\{\s*(-?\d[^{}]*)\}", answer)
    return match.group(1).strip() if match else answer


def _strip_currency(answer: str) -> str:
    """`\\$18`, `$18`, `18 dollars`, `2,74 €`: currency is never part of the value (GSM8K answers are plain numbers)."""
    answer = answer.replace("\\$", "").replace("$", "").replace("€", "").replace("£", "").replace("\\euro", "")
    return re.sub(r"^(" + _GROUPED_NUMBER + r")\s*(?:dollars?|USD|euros?|cents?)$", r"\1", answer.strip()).strip()


def _strip_degrees(answer: str) -> str:
    """`30^\\circ`, `30^{\\circ}`, `30°`: math-verify drops the degree sign, so the fast path does too."""
    return re.sub(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)", "", answer).strip()


def _strip_percent(answer: str) -> tuple[str, bool]:
    """`50\\%`, `50 percent`, `50 pct` -> `50`, with a flag: math-verify accepts both `50` and `0.5` for `50\\%`."""
    stripped = re.sub(
        r"\s*(?:\\?%|\\text\s*\{\s*\\?%\s*\}|\\text\s*\{\s*(?:percent|pct)\s*\}|percent(?:age)?|per\s*cent|pct)$",
        "",
        answer,
    )
    return stripped.strip(), stripped != answer


# Words after a number that change its value; used by extraction only ("Therefore there are 12 sequences" vs "12 more
# than"). Equality never relies on this list: it accepts only the unit words of `_math_grammar.UNIT_WORDS`.
_VALUE_WORDS = (
    r"(?:pi|e|i|hundreds?|thousands?|millions?|billions?|trillions?|dozens?|score|half|halves|thirds?|quarters?|"
    r"(?:ten|hundred|thousand|million|billion|trillion|four|fif|six|seven|eigh|nin|elev|twelf|\w+teen|\w+tie)ths?|"
    r"squared?|cubed?|cubic|power|powers|roots?|factorial|times|twice|double|triple|over|"
    r"divided|multiplied|plus|minus|and|or|nor|not|no|more|less|fewer|least|most|greater|larger|smaller|bigger|"
    r"higher|lower|than|above|below|under|up|to|at|between|about|approximately|approx|around|roughly|nearly|almost|"
    r"exactly|only|each|per|every|percent|pct|percentage|inverse|reciprocal|negative|positive|zero|one|two|three|"
    r"four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million|billion|"
    r"decimal|point|fraction|ratio|repeating|recurring|mod|modulo|remainder|digits?|places?|sig|significant|base|"
    r"log|ln|sin|cos|tan|sqrt|else|otherwise|if|unless|when|where|with|without|but|except|excluding|including|"
    r"also|too|instead|then|is|are|was|were|be|equals?|of|for|from|by|in|on)"
)


def _strip_units(answer: str) -> str:
    """`5\\text{ cm}`, `5 \\mbox{CM}^2`, `18 apples` -> the number: trailing words of the fixed unit list are dropped, as
    math-verify drops units (a wrong unit is not penalised). Any other word stays, and the grammar refuses it."""
    return strip_trailing_units(answer)


_MAGNITUDES = {"hundred": 10**2, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_MAGNITUDE_RE = re.compile(rf"({_NUMBER})\s*(?:\\text\s*\{{\s*)?({'|'.join(_MAGNITUDES)})\s*\}}?")


def _expand_magnitude_words(answer: str) -> str:
    """`5\\text{ million}`, `2.5 thousand` -> `5000000`, `2500`: math-verify drops the word (5 million = 5)."""
    match = _MAGNITUDE_RE.fullmatch(answer)
    if not match or len(match.group(1)) > _MAX_NUMBER_CHARS:
        return answer
    return _fraction_to_latex(Fraction(match.group(1)) * _MAGNITUDES[match.group(2)])


def _remove_thousands_separators(answer: str) -> str:
    """`1,450,000`, `1 450 000` -> `1450000`. Only groups of three digits: `1,000` is 1000 but `1.000` stays 1."""
    if re.fullmatch(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|-?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?", answer):
        return answer.replace(",", "").replace(" ", "")
    return answer


def _scientific_to_decimal(answer: str) -> str:
    """`1.5e3`, `1.5\\times 10^{3}`, `1.5 \\cdot 10^3` -> `1500`: math-verify reads `1.5e3` as `1.5 * e * 3`."""
    match = re.fullmatch(
        r"(" + _NUMBER + r")\s*(?:[eE]|(?:\\times|\\cdot|×|\*|x)\s*10\s*(?:\^|\*\*))\s*\{?\s*([+-]?\d+)\s*\}?", answer
    )
    if (
        not match
        or len(match.group(1) + match.group(2)) > _MAX_NUMBER_CHARS
        or abs(int(match.group(2))) > _MAX_SCI_EXPONENT
    ):
        return answer
    value = Fraction(match.group(1)) * Fraction(10) ** int(match.group(2))
    return _fraction_to_latex(value)


def _repeating_decimal_to_fraction(answer: str) -> str:
    """`0.\\overline{3}`, `0.\\bar{3}` -> `\\frac{1}{3}`, `1.2\\overline{36}` -> exact fraction (math-verify cannot)."""
    match = re.fullmatch(r"(-?)(\d*)\.(\d*)\\(?:overline|bar|dot)\s*\{?(\d+)\}?", answer)
    if not match or len(answer) > _MAX_NUMBER_CHARS:
        return answer
    sign, whole, fixed, repeat = match.groups()
    # x = whole.fixed(repeat)... : the repeating block contributes repeat / (10^len(repeat) - 1) shifted by fixed.
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
    return _fraction_to_latex(-value if sign else value)


_MATRIX_RE = re.compile(r"\\begin\s*\{\s*([pb]matrix)\s*\}(.*)\\end\s*\{\s*\1\s*\}", re.DOTALL)
_SCALAR = r"-?(?:\d+(?:\.\d+)?|\\frac\s*\{\s*-?\d+\s*\}\s*\{\s*\d+\s*\}|\d+\s*/\s*\d+)"


def _expand_scalar_multiple(answer: str) -> str:
    """`2\\begin{pmatrix}1\\\\3\\end{pmatrix}` -> `\\begin{pmatrix}2\\\\6\\end{pmatrix}`: a scalar times a
    vector or matrix, multiplied into its entries (math-verify compares a product with a matrix as unequal)."""
    match = re.fullmatch(rf"({_SCALAR})\s*(?:\\cdot|\\times)?\s*(\\begin.*)", answer, flags=re.DOTALL)
    if not match or not _MATRIX_RE.fullmatch(match.group(2)):
        return answer
    scalar, matrix = match.group(1), _MATRIX_RE.fullmatch(match.group(2))
    rows = [row for row in matrix.group(2).split("\\\\") if row.strip()]
    body = "\\\\".join(" & ".join(_scaled(scalar, entry.strip()) for entry in row.split("&")) for row in rows)
    return f"\\begin{{{matrix.group(1)}}}{body}\\end{{{matrix.group(1)}}}"


def _scaled(scalar: str, entry: str) -> str:
    """`scalar * entry`, exact when both are plain numbers (`2`, `\\frac{1}{2}`), else as a LaTeX product."""
    a, b = _as_exact_number(scalar), _as_exact_number(entry)
    if a is not None and b is not None:
        return _fraction_to_latex(a[0] * b[0])
    return f"{scalar} \\cdot ({entry})"


def _column_vector_to_tuple(answer: str) -> str:
    """`\\begin{pmatrix}1\\\\2\\end{pmatrix}` -> `(1, 2)`.

    Decision: a column vector and the ordered tuple of its components are the same answer (MATH writes vectors as
    columns, models often answer with tuples). Row vectors and matrices (with `&`) are left alone.
    """
    match = _MATRIX_RE.fullmatch(answer)
    if not match or "&" in match.group(2):
        return answer
    components = [c.strip() for c in match.group(2).split("\\\\") if c.strip()]
    return "(" + ", ".join(components) + ")" if len(components) > 1 else answer


def _strip_membership(answer: str) -> str:
    """`x \\in [-2, 7]` -> `[-2, 7]`: "x is in the interval" is the interval."""
    return re.sub(r"^[A-Za-z]\s*\\in\s*", "", answer)


def _fraction_to_latex(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


# Words before an answer that make it a bound or a guess, not a value: "not 5", "less than 5", "at least 5".
_HEDGE_PREFIX_RE = re.compile(
    r"(?:\\text\s*\{\s*)?(?:not|no|never|less|more|fewer|greater|at\s+(?:least|most)|over|under|above|below|nearly|"
    r"almost|approximately|approx|about|around|roughly|up\s+to|between|either|neither|maybe|perhaps|probably)\b",
    re.IGNORECASE,
)


def _false_equation(answer: str) -> bool:
    """`3 = 5`: an equation between two different numbers. A chain whose first side has a variable (`x = 2 + 3 = 5`)
    is read like math-verify, by its last side; one whose sides are all letter-free must have equal sides."""
    sides = [side.strip() for side in re.split(r"(?<![<>!\\])=(?!=)", answer)]
    if len(sides) < 2 or re.search(r"[A-Za-z]", re.sub(r"\\(?:frac|dfrac|cdot|times|sqrt|left|right)", "", sides[0])):
        return False
    values = {_as_exact_number(_remove_thousands_separators(side)) for side in sides}
    # Letter-free sides that are not all plain numbers (`2+3 = 5`) are refused too: unsure, so 0.
    return None in values or len({value for value, _ in values}) > 1


@dataclass(frozen=True)
class _Normalised:
    text: str
    percent: bool
    # Why this answer equals no gold answer (value-changing words, a hedge, a false equation), or `None`.
    refused: str | None = None


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
    if len(answer) > MAX_ANSWER_CHARS:
        return _Normalised(
            answer[:MAX_ANSWER_CHARS], False, f"refused: answer longer than {MAX_ANSWER_CHARS} characters"
        )
    answer = _unwrap_text(_strip_layout(answer))
    if _HEDGE_PREFIX_RE.match(answer):
        return _Normalised(answer, False, "refused: hedged answer")
    answer = _strip_currency(answer)
    answer = _strip_degrees(answer)
    answer, percent = _strip_percent(answer)
    answer = _expand_magnitude_words(answer)
    answer = _strip_units(answer)
    answer = _remove_thousands_separators(answer)
    answer = _scientific_to_decimal(answer)
    answer = _repeating_decimal_to_fraction(answer)
    answer = _expand_scalar_multiple(answer)
    answer = _column_vector_to_tuple(answer)
    answer = _strip_membership(answer)
    if _false_equation(answer):
        return _Normalised(answer, percent, "refused: equation between different values")
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


# A closed-form number: integers, decimals, `\frac`, `\sqrt`, `\pi`, `i`, `+ - \cdot \times / ^`, parentheses. Anything
# else (letters, `\text`, subscripts, commas, a digit right before `\frac`, which may be a mixed number) is not read.
_CLOSED_FORM_TOKEN_RE = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<command>\\(?:[dt]?frac|sqrt|pi|cdot|times))|(?P<symbol>[-+*/^(){}i]))"
)
_FRACTIONS = ("\\frac", "\\dfrac", "\\tfrac")
_MAX_CLOSED_FORM_CHARS = 80
_CLOSED_FORM_CACHE_SIZE = 65536
_MAX_CLOSED_FORM_EXPONENT = 12
_MAX_CLOSED_FORM_MAGNITUDE = 1e12
# Decided unequal only beyond this relative gap: far above float64's error for these short expressions, and above
# math-verify's 6-decimal rounding, so no pair math-verify would accept is ever decided unequal here.
_CLOSED_FORM_GAP = 1e-6


class _NotClosedForm(Exception):
    pass


def _expect(condition: bool) -> None:
    """The reader's one way to give up on an answer that is not a closed form."""
    if not condition:
        raise _NotClosedForm


class _ClosedFormReader:
    """Recursive-descent reader of one closed form into a complex value, tracking the largest magnitude met (the
    scale of float64's rounding error)."""

    def __init__(self, answer: str):
        self.tokens, position = [], 0
        answer = answer.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "").strip()
        while position < len(answer):
            match = _CLOSED_FORM_TOKEN_RE.match(answer, position)
            _expect(match is not None)
            kind = match.lastgroup
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index, self.magnitude = 0, 1.0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        _expect(token is not None and (value is None or token[1] == value))
        self.index += 1
        return token

    def checked(self, value: complex) -> complex:
        size = abs(value)
        _expect(size <= _MAX_CLOSED_FORM_MAGNITUDE)  # False for nan too
        self.magnitude = max(self.magnitude, size)
        return value

    def read(self) -> complex:
        value = self.expression()
        _expect(self.peek() is None)
        return value

    def expression(self) -> complex:
        sign = -1 if self.peek() == ("symbol", "-") else 1
        if self.peek() in (("symbol", "-"), ("symbol", "+")):
            self.take()
        value = sign * self.term()
        while self.peek() in (("symbol", "+"), ("symbol", "-")):
            sign = 1 if self.take()[1] == "+" else -1
            value = self.checked(value + sign * self.term())
        return value

    def term(self) -> complex:
        value, divided = self.factor(), False
        while (token := self.peek()) is not None:
            # `1/2\pi`, `1/2 \cdot 3`: π/2 or 1/(2π)? Not read here.
            _expect(not divided or token[1] in ("+", "-", ")", "}"))
            if token[1] in ("*", "\\cdot", "\\times"):
                self.take()
                value = self.checked(value * self.factor())
            elif token[1] == "/":
                self.take()
                value, divided = self.checked(value / self.factor()), True  # `/ 0`: ZeroDivisionError, not read
            elif token[1] in ("\\sqrt", "\\pi", "i") or (
                # `2(1+i)`, `\pi\frac{1}{2}`; never `3\frac{1}{2}` (a mixed number?) nor `(1+2)(3)` (a call?)
                self.tokens[self.index - 1][0] == "number"
                if token[1] == "("
                else token[1] in _FRACTIONS and self.tokens[self.index - 1][0] != "number"
            ):
                value = self.checked(value * self.factor())  # implicit product: `3\sqrt{2}`, `2\pi i`
            else:
                break
        return value

    def factor(self) -> complex:
        value = self.atom()
        if self.peek() == ("symbol", "^"):
            self.take()
            exponent = self.group_or_digit()
            _expect(
                not exponent.imag
                and exponent.real == int(exponent.real)
                and abs(exponent.real) <= _MAX_CLOSED_FORM_EXPONENT
            )
            value = self.checked(value ** int(exponent.real))  # `0^{-1}`: ZeroDivisionError, not read
        return value

    def group_or_digit(self) -> complex:
        kind, text = self.take()
        if kind == "number" and text.isdigit():
            # `\frac43`, `\sqrt2`, `x^2`: an ungrouped argument is its first digit only.
            if len(text) > 1:
                self.tokens[self.index - 1 : self.index] = [("number", text[0]), ("number", text[1:])]
            return self.checked(complex(int(text[0])))
        _expect(text == "{")
        value = self.expression()
        self.take("}")
        return value

    def atom(self) -> complex:
        kind, text = self.take()
        if kind == "number":
            return self.checked(complex(float(text)))
        if text in _FRACTIONS:
            numerator = self.group_or_digit()
            return self.checked(numerator / self.group_or_digit())  # `\frac{1}{0}`: ZeroDivisionError, not read
        if text == "\\sqrt":
            radicand = self.group_or_digit()
            _expect(not radicand.imag and radicand.real >= 0)
            return self.checked(complex(radicand.real**0.5))
        if text == "\\pi":
            return complex(3.141592653589793)
        if text == "i":
            return 1j
        _expect(text in ("(", "{"))
        value = self.expression()
        self.take(")" if text == "(" else "}")
        return value


@functools.lru_cache(maxsize=_CLOSED_FORM_CACHE_SIZE)  # a gold answer is read once per generation of its prompt
def _closed_form_value(answer: str) -> tuple[complex, float] | None:
    """`(value, largest magnitude met)` of a closed-form number such as `3\\sqrt{13}`, `-\\frac{\\pi}{6}`, `6 - 5i`,
    `2^{10}`, `0.15`; `None` for anything else (variables, text, subscripts, lists, percentages)."""
    if len(answer) > _MAX_CLOSED_FORM_CHARS:
        return None
    try:
        reader = _ClosedFormReader(answer)
        return reader.read(), reader.magnitude
    except (_NotClosedForm, ZeroDivisionError, OverflowError, ValueError):
        return None


def _numerically_different(gold: _Normalised, pred: _Normalised) -> bool:
    """Both answers are closed-form numbers whose values differ by far more than rounding: math-verify (6-decimal
    rounding, symbolic and string equality) cannot find them equal, so sympy is not needed to say so."""
    if gold.percent or pred.percent:
        return False
    gold_value, pred_value = _closed_form_value(gold.text), _closed_form_value(pred.text)
    if gold_value is None or pred_value is None:
        return False
    scale = max(gold_value[1], pred_value[1])
    return abs(gold_value[0] - pred_value[0]) > _CLOSED_FORM_GAP * scale


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
    if answer.startswith("{") and _balanced_brace_content(answer, 0) == answer[1:-1] and "," in answer:
        return "set"  # `{1, 2, 3}`: a set written without escaping its braces
    if ";" in answer and not answer.startswith("\\begin"):
        return "set"
    if top_level_comma or re.search(r"\bor\b|\\text\s*\{\s*(?:or|and)\s*\}|\\lor|\\pm|\\mp", answer):
        return "set"
    if answer[:1] in "([" and answer[-1:] in ")]" and "," in answer:
        return "ordered"
    return "scalar"


def _is_bracketed_set(answer: str) -> bool:
    """`\\{1, 2\\}` or a list with "or"/"and"/`\\pm`: an unordered answer, unlike a bare `1, 2`."""
    return (answer.startswith("\\{") and answer.endswith("\\}")) or bool(
        re.search(r"\bor\b|\\text\s*\{\s*(?:or|and)\s*\}|\\lor|\\pm|\\mp|;", answer)
    )


def as_tuple_if_bare_list(gold: str, pred: str) -> tuple[str, str]:
    """A bare list (`1, 3`, LaTeX `{1, 3}`) compared with a tuple is sent to math-verify as the tuple `(1, 3)`."""
    shapes = (_shape(gold), _shape(pred))
    if set(shapes) != {"set", "ordered"}:
        return gold, pred

    def bare(answer: str) -> str:
        return "(" + (answer[1:-1] if answer.startswith("{") else answer) + ")"

    return (bare(gold), pred) if shapes[0] == "set" else (gold, bare(pred))


def _looks_like_interval(answer: str) -> bool:
    """Gold that can only be an interval: `(-\\infty, 3]`, `[2, 5)`, `(0, 1) \\cup (2, 3)`; `(1, 2)` may be a point."""
    if "\\infty" in answer or "\\cup" in answer:
        return True
    return bool(re.fullmatch(r"[(\[][^,]*,[^,]*[)\]]", answer)) and (answer[0] == "[" or answer[-1] == "]")


def _decimal_comma(answer: str) -> str | None:
    """`1,22`, `0,111`, `1000,99` -> `1.22`, `0.111`, `1000.99`: one comma that cannot group thousands and is followed
    by two digits, or follows a `0` or more than three digits, is a decimal comma (`_math_grammar.COMMA_RULE`); used
    only to match the other side's decimal point digit for digit. `-2,1`, `1,5`, `3, 5` are lists."""
    match = re.fullmatch(r"(-?)(\d+),(\d+)", answer)
    if not match or _remove_thousands_separators(answer) != answer:
        return None
    sign, whole, fraction = match.groups()
    if len(fraction) == 2 or whole.startswith("0") or len(whole) > 3:
        return f"{sign}{whole}.{fraction}"
    return None


_RELATION_RE = re.compile(r"[=<>]|\\(?:le|ge|leq|geq|neq|ne|lt|gt|approx|in|sim|equiv)(?![A-Za-z])")


def _number_against_non_number(gold: str, pred: str) -> bool:
    """One side is a plain number and the other can never equal one: a tuple, interval, set or matrix, or an
    expression with a free variable (`-13x+3` against `8`). Decided without sympy; relations (`x = 8`) are not."""
    if (_as_exact_number(gold) is None) == (_as_exact_number(pred) is None):
        return False
    other = pred if _as_exact_number(gold) is not None else gold
    if _RELATION_RE.search(other):
        return False
    if other.startswith("\\begin") or _shape(other) != "scalar":
        return True
    # A letter left once LaTeX commands (`\\frac`, `\\pi`, `\\sqrt`) are gone is a variable; `e` and `i` are
    # constants, so an expression that has them is left to sympy.
    letters = set(re.findall(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", other)))
    return bool(letters) and not letters & {"e", "i", "E", "I"}


def _decide_without_sympy(gold: _Normalised, pred: _Normalised) -> tuple[bool, str] | None:
    """`(correct, path)` for the decisions that are certain without sympy, else `None`. The grammar comes first:
    what it refuses is never equal, whatever sympy would say."""
    if gold.text == pred.text and gold.percent == pred.percent:
        return True, "exact"
    if pred.refused is not None:
        return False, pred.refused
    gold_time, pred_time = _as_clock_time(gold.text), _as_clock_time(pred.text)
    if gold_time is not None and pred_time is not None:
        # math-verify reads "4:30" as the ratio 4/30 and cannot tell a.m. from p.m.; times are compared here only.
        return gold_time == pred_time, "clock_time"
    refused = refusal(gold.text, pred.text)
    if refused is not None:
        return False, refused
    if _decimal_comma(gold.text) == pred.text or _decimal_comma(pred.text) == gold.text:
        return True, "decimal_comma"
    fast = _fast_path(gold, pred)
    if fast is not None:
        return fast, "fast_path"
    if re.search(r"\d\s*(?:[ap]\.?m\b|\\text\s*\{\s*[ap]\.?m)", gold.text + " " + pred.text, re.IGNORECASE):
        return False, "clock_time"  # one side is a time of day, the other is not (`7:32` may also be a ratio)
    if _number_against_non_number(gold.text, pred.text):
        return False, "number_vs_expression"
    if _numerically_different(gold, pred):
        return False, "numeric"
    shapes = {_shape(gold.text), _shape(pred.text)}
    if shapes == {"set", "ordered"} and not any(_is_bracketed_set(answer.text) for answer in (gold, pred)):
        return None  # `1, 3` against `(1, 3)`: a bare list is read in order (the caller sends it as a tuple)
    if shapes == {"set", "ordered"}:
        # math-verify accepts `\{1,2\}` for `(2,1)`: an unordered answer never matches an ordered one.
        return False, "set_vs_tuple"
    if shapes == {"set", "scalar"}:
        # `5, 6, 7`, `x = 5 or x = 3`, `\pm 5` against one value (or one value against a list): never equal.
        return False, "set_vs_scalar"
    return None
