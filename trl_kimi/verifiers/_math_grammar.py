r"""The allow-list grammar of the math verifier: what a predicted answer may contain besides what its gold has.

A predicted answer can equal the gold only if every piece of it is allowed (issue 26: rules as allow-lists, because a
deny-list of value-changing words misses the next spelling, a capital letter, a macro around it):

- numbers, structural LaTeX (`\frac`, `\sqrt`, `\cdot`, `\left(`, spacing) and the arithmetic symbols `+ - * / ^ ( )`,
  `.` and `,` (a comma makes a list, see `COMMA_RULE`);
- unit words from the fixed list `UNIT_WORDS` at the end of the answer (`5 cm`, not `5 point 2`), matched without
  regard to case, bare or inside any `\text`-like macro (`\text`, `\textit`, `\mathbf`, `\operatorname`, ...);
- anything else only if the gold has it: a word (compared without case), a variable (a single letter, case kept), a
  LaTeX command (`\pi`, `\infty`, `\pm`, ...), a relation (`=`, `<`, `\le`, `\equiv`, ...) or another symbol
  (`!`, `|`, `[`, `:`, `_`, ...). A leading label `x =` or `f(x) =` (a single variable, or a function of one) is not a
  relation. An interval and the inequalities that describe it are one answer: against a gold interval or inequality,
  brackets, `\infty`, `\cup`, `\in` and inequality relations are allowed.

Everything here is a single left-to-right scan (no regular expression), so its cost is linear in the answer's length.
It imports only the standard library: the math worker loads it without the package.
"""

from dataclasses import dataclass, field


COMMA_RULE = (
    "A comma groups thousands only inside one number written as 1 to 3 digits (no leading zero) followed by groups of "
    "exactly 3 digits, with nothing else in the answer (`58,500`, `1,450,000`, `-2,125`); `,\\!` and `{,}` always "
    "group thousands (`10,\\!080`). One comma that cannot group thousands is a decimal comma when two digits follow "
    "it, or it follows a `0` or more than three digits (`1,22`, `0,111`, `1000,99`), and then equals only the same "
    "digits with a decimal point. Any other comma separates the items of a list (`-2,1`, `1,5`, `1,-2`, `3, 5, 7`)."
)

# Units: measurement, time, money, and the count nouns that GSM8K answers name ("18 apples"). None of them changes the
# value of the number it follows; words that do (`hundredths`, `dozen`, `pairs`, `quarters`, `squared`, `more`) are
# simply not here. Matched case-insensitively; a trailing "." (`ft.`) is allowed.
UNIT_WORDS = frozenset(
    """
    m cm mm km nm um meter meters metre metres centimeter centimeters centimetre centimetres millimeter millimeters
    kilometer kilometers kilometre kilometres in inch inches ft foot feet yd yard yards mi mile miles
    sq square cu cubic l ml liter liters litre litres milliliter milliliters gal gallon gallons qt quart quarts pt
    pint pints cup cups oz ounce ounces lb lbs pound pounds g kg mg gram grams kilogram kilograms milligram milligrams
    ton tons tonne tonnes acre acres hectare hectares
    s sec secs second seconds min mins minute minutes h hr hrs hour hours day days week weeks month months yr yrs
    year years
    mph kph kmh per
    deg degree degrees radian radians rad
    dollar dollars usd cent cents euro euros
    unit units item items point points page pages step steps
    person persons people student students child children kid kids man men woman women boy boys girl girls
    adult adults friend friends member members player players customer customers guest guests employee employees
    worker workers teacher teachers visitor visitors passenger passengers
    apple apples orange oranges banana bananas egg eggs cookie cookies cake cakes cupcake cupcakes pie pies
    candy candies slice slices piece pieces book books pen pens pencil pencils marble marbles card cards ball balls
    box boxes bag bags bottle bottles can cans jar jars car cars toy toys flower flowers tree trees
    animal animals dog dogs cat cats bird birds fish chicken chickens cow cows sheep horse horses
    game games ticket tickets sticker stickers seat seats room rooms house houses
    calorie calories watt watts
    total altogether ago
    """.split()
)

# Text-like macros: their argument is text, whose words must be units or words of the gold. A macro not listed here
# is an ordinary command, which must appear in the gold (so an unknown wrapper is refused, not trusted).
TEXT_MACROS = frozenset(
    """
    text textbf textit textrm textsf texttt textup textsl textsc textnormal textmd emph mbox hbox
    mathrm mathbf mathit mathsf mathtt mathnormal mathcal mathscr mathfrak mathbb boldsymbol bm pmb operatorname
    """.split()
)

# Commands that never change which value an answer denotes (layout, fractions, roots, products, degrees).
NEUTRAL_COMMANDS = frozenset(
    """
    frac dfrac tfrac cfrac sqrt left right big Big bigg Bigg bigl bigr Bigl Bigr cdot times div
    displaystyle textstyle quad qquad circ degree
    """.split()
) | {",", "!", ";", ":", " "}
NEUTRAL_SYMBOLS = frozenset("+-*/^().,;") | {"\\{", "\\}"}
# Functions: against a gold that applies one (`\tan^2(y)+1`), another is an identity away (`\sec^2(y)`).
FUNCTION_COMMANDS = frozenset("sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln exp lg".split())
# Matrix environments are one notation; `vmatrix` (a determinant) is not among them.
_MATRIX_ENVIRONMENTS = frozenset({"pmatrix", "bmatrix", "Bmatrix", "matrix", "array", "smallmatrix"})
# Relations spelled several ways, mapped to one spelling.
_RELATION_SPELLINGS = {
    "<=": "\\le",
    ">=": "\\ge",
    "!=": "\\ne",
    "\\leq": "\\le",
    "\\geq": "\\ge",
    "\\neq": "\\ne",
    "\\leqslant": "\\le",
    "\\geqslant": "\\ge",
    "\\lt": "<",
    "\\gt": ">",
    "≤": "\\le",
    "≥": "\\ge",
    "≠": "\\ne",
    "≈": "\\approx",
    "≡": "\\equiv",
    "∈": "\\in",
}
# Relations that may follow a label (`x = 5`, `x \approx 11`) and chain the work that leads to the answer
# (`x = 2 + 3 = 5`); math-verify reads such a chain by the side it ends on.
_LABEL_RELATIONS = frozenset({"=", "\\approx"})

RELATION_COMMANDS = frozenset(
    """
    le ge leq geq leqslant geqslant lt gt ne neq approx equiv sim simeq cong propto in notin ni subset subseteq
    supset supseteq mid parallel perp to rightarrow Rightarrow implies iff Leftrightarrow leftrightarrow gets
    """.split()
)
_RELATION_CHARS = frozenset("=<>≤≥≠≈≡∈")
_INEQUALITIES = frozenset({"<", ">", "\\le", "\\ge"})
# What an interval and an inequality chain may use against each other (`x \in [-2, 7]`, `-2 \le x \le 7`).
_INTERVAL_SYMBOLS = frozenset({"[", "]", "(", ")", ","})
_INTERVAL_COMMANDS = frozenset({"infty", "cup", "in"})


@dataclass
class Token:
    kind: str  # "number", "word", "letter", "command", "relation", "symbol", "open", "close", "space"
    text: str
    start: int
    end: int
    in_text: bool = False  # inside a text-like macro's argument
    text_macro: bool = False  # an "open" brace that starts a text-like macro's argument, or that macro's command
    match: int = -1  # index of the matching brace token, for "open" and "close"


def tokenize(answer: str) -> list[Token]:
    """One left-to-right pass over `answer`; braces are matched with a stack, so the cost is linear."""
    tokens: list[Token] = []
    stack: list[int] = []  # indices of open-brace tokens
    text_depth = 0  # how many text-like macro arguments enclose the current position
    pending_text_macro = False  # the last command was a text-like macro waiting for its `{`
    i, n = 0, len(answer)
    while i < n:
        char = answer[i]
        start = i
        in_text = text_depth > 0
        if char.isspace():
            while i < n and answer[i].isspace():
                i += 1
            tokens.append(Token("space", " ", start, i, in_text))
            continue
        if char.isascii() and (char.isdigit() or (char == "." and i + 1 < n and answer[i + 1].isdigit())):
            while i < n and answer[i].isascii() and (answer[i].isdigit() or answer[i] == "."):
                i += 1
            tokens.append(Token("number", answer[start:i], start, i, in_text))
            pending_text_macro = False
            continue
        if char.isascii() and char.isalpha():
            while i < n and answer[i].isascii() and answer[i].isalpha():
                i += 1
            word = answer[start:i]
            kind = "word" if in_text or len(word) > 1 else "letter"
            tokens.append(Token(kind, word, start, i, in_text))
            pending_text_macro = False
            continue
        if char == "\\":
            i += 1
            if i + 2 < n and answer[i] == "\\" and answer[i + 1 : i + 3].isascii() and answer[i + 1 : i + 3].isalpha():
                # `\\frac`: a command written with an escaped backslash (JSON-escaped text); `\\b` stays a row
                # break before the variable `b`
                i += 1
            if i < n and answer[i].isascii() and answer[i].isalpha():
                name_start = i
                while i < n and answer[i].isascii() and answer[i].isalpha():
                    i += 1
                name = answer[name_start:i]
                if name in ("begin", "end"):  # `\begin{pmatrix}`: the environment is one command
                    j = i
                    while j < n and answer[j].isspace():
                        j += 1
                    close = answer.find("}", j, j + 40) if j < n and answer[j] == "{" else -1
                    if close != -1:
                        environment, i = answer[j + 1 : close].strip(), close + 1
                        if environment in _MATRIX_ENVIRONMENTS:
                            environment = "matrix"
                            if name == "begin" and i < n and answer[i] == "{":  # `\begin{array}{cc}`
                                spec_end = answer.find("}", i, i + 40)
                                i = spec_end + 1 if spec_end != -1 else i
                        name = name + ":" + environment
                kind = "relation" if name in RELATION_COMMANDS else "command"
                pending_text_macro = name in TEXT_MACROS
                spelled = _RELATION_SPELLINGS.get("\\" + name, "\\" + name)
                tokens.append(Token(kind, spelled, start, i, in_text, text_macro=pending_text_macro))
                continue
            if i < n:  # `\{`, `\%`, `\,`, `\\`: an escaped character
                i += 1
            tokens.append(Token("command" if answer[start + 1 : i] in NEUTRAL_COMMANDS else "symbol",
                                answer[start:i], start, i, in_text))  # fmt: skip
            pending_text_macro = False
            continue
        i += 1
        if char == "{":
            opens_text = pending_text_macro
            stack.append(len(tokens))
            text_depth += opens_text
            tokens.append(Token("open", char, start, i, in_text, text_macro=opens_text))
        elif char == "}":
            if stack:
                opening = stack.pop()
                text_depth -= tokens[opening].text_macro
                tokens[opening].match = len(tokens)
                tokens.append(Token("close", char, start, i, text_depth > 0, match=opening))
            else:
                tokens.append(Token("symbol", char, start, i, in_text))
        elif char in "!<>" and i < n and answer[i] == "=":
            i += 1
            tokens.append(Token("relation", _RELATION_SPELLINGS[char + "="], start, i, in_text))
        elif char in _RELATION_CHARS:
            tokens.append(Token("relation", _RELATION_SPELLINGS.get(char, char), start, i, in_text))
        else:
            tokens.append(Token("symbol", char, start, i, in_text))
        pending_text_macro = False
    return tokens


@dataclass
class Vocabulary:
    """What an answer uses, by class."""

    words: set[str] = field(default_factory=set)  # case-folded
    letters: set[str] = field(default_factory=set)  # case kept
    commands: set[str] = field(default_factory=set)
    relations: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    bare_words: list[str] = field(default_factory=list)  # words outside text macros (`xy` may be a product)
    labelled: bool = False  # starts with a label `x =`


def _label_length(tokens: list[Token]) -> int:
    """Number of tokens of a leading label `x =`, `x_1 =`, `f(x) =` (0 if none): a name, not a relation."""
    i = 0

    def skip_spaces(i: int) -> int:
        while i < len(tokens) and tokens[i].kind == "space":
            i += 1
        return i

    def text_at(i: int) -> str | None:
        return tokens[i].text if i < len(tokens) else None

    def kind_at(i: int) -> str | None:
        return tokens[i].kind if i < len(tokens) else None

    i = skip_spaces(i)
    if text_at(i) == "(" and kind_at(skip_spaces(i + 1)) == "letter":  # `(x, y) =`
        j = skip_spaces(skip_spaces(i + 1) + 1)
        while text_at(j) == "," and kind_at(skip_spaces(j + 1)) == "letter":
            j = skip_spaces(skip_spaces(j + 1) + 1)
        if text_at(j) == ")":
            j = skip_spaces(j + 1)
            return j + 1 if kind_at(j) == "relation" and text_at(j) in _LABEL_RELATIONS else 0
        return 0
    if i >= len(tokens) or tokens[i].kind != "letter":
        return 0
    i += 1
    if i + 1 < len(tokens) and tokens[i].text == "_":  # `x_1`, `x_{10}`
        i += 1
        if tokens[i].kind == "open":
            i = tokens[i].match + 1 if tokens[i].match > 0 else len(tokens)
        else:
            i += 1
    if i + 2 < len(tokens) and tokens[i].text == "(" and tokens[i + 1].kind == "letter" and tokens[i + 2].text == ")":
        i += 3  # `f(x) =`
    i = skip_spaces(i)
    if i < len(tokens) and tokens[i].kind == "relation" and tokens[i].text in _LABEL_RELATIONS:
        return i + 1
    return 0


def vocabulary(answer: str) -> Vocabulary:
    """The words, letters, commands, relations and symbols of `answer`, its leading label left out."""
    tokens = tokenize(answer)
    used = Vocabulary()
    label = _label_length(tokens)
    used.labelled = label > 0
    for token in tokens[label:]:
        if token.kind == "word":
            used.words.add(token.text.casefold())
            if not token.in_text:  # `xy` in math is a product of two variables
                used.bare_words.append(token.text)
        elif token.kind == "letter":
            used.letters.add(token.text)
        elif token.kind == "command":
            used.commands.add(token.text)
        elif token.kind == "relation":
            used.relations.add(token.text)
        elif token.kind == "symbol":
            used.symbols.add(token.text)
    return used


def _interval_like(used: Vocabulary, answer: str) -> bool:
    """An interval, a union of them, or an inequality: the family whose members compare with each other."""
    stripped = answer.strip()
    return (
        bool(used.relations & _INEQUALITIES)
        or "\\infty" in used.commands
        or "\\cup" in used.commands
        or (stripped[:1] in "([" and stripped[-1:] in ")]" and "," in stripped)
    )


def refusal(gold: str, pred: str) -> str | None:
    r"""
    Why `pred` can never equal `gold` under the grammar (a word, variable, command, relation or symbol that is neither
    allowed by the grammar nor in the gold), or `None` when the grammar allows it (the values are compared next).

    Example:

    ```python
    >>> refusal("5", "5 \\textit{Hundredths}")
    "refused: word 'Hundredths' is not in the gold answer (unit words only at the end)"
    >>> refusal("5", "5 \\text{CM}") is None, refusal("5", "x = 5") is None
    (True, True)

    ```
    """
    # Unit words are allowed at the end of the answer only (`5 cm`); one inside it (`5 point 2`) is a word like any other.
    gold, pred = strip_trailing_units(gold), strip_trailing_units(pred)
    allowed, used = vocabulary(gold), vocabulary(pred)
    # The gold's variables, a product of them written without spaces (`xy`) included.
    gold_letters = allowed.letters | {letter for word in allowed.bare_words for letter in word}
    interval = _interval_like(allowed, gold) and _interval_like(used, pred)
    functions = any(command[1:] in FUNCTION_COMMANDS for command in allowed.commands)
    matrices = "\\begin:matrix" in allowed.commands and "\\begin:matrix" in used.commands
    listed = "," in gold or ";" in gold  # "and" joins the items of a list answer
    for word in used.words:
        if word in allowed.words or (listed and word in ("and", "or")):
            continue
        if len(word) == 1 and (word in gold_letters or word.upper() in gold_letters):
            continue  # `\mathrm{e}` for the gold's `e`
        original = next((w for w in used.bare_words if w.casefold() == word), None)
        if original is not None and set(original) <= gold_letters:
            continue  # `yx` for the gold's `xy`: a product of the gold's variables
        shown = original or _original_case(pred, word)
        return f"refused: word {shown!r} is not in the gold answer (unit words only at the end)"
    gold_word_letters = {w for w in allowed.words if len(w) == 1}
    # `-2 \le x \le 7` for the gold `[-2, 7]`: an inequality names its one variable.
    free = 1 if interval and not gold_letters else 0
    for letter in sorted(used.letters):
        if letter not in gold_letters and letter.casefold() not in gold_word_letters:
            if free:
                free -= 1
                continue
            return f"refused: variable {letter!r} is not in the gold answer"
    for command in used.commands:
        name = command[1:]
        if name in NEUTRAL_COMMANDS or name in TEXT_MACROS or command in allowed.commands:
            continue
        if (interval and name in _INTERVAL_COMMANDS) or (functions and name in FUNCTION_COMMANDS):
            continue
        return f"refused: {command!r} is not in the gold answer"
    for relation in used.relations:
        if relation in allowed.relations or (interval and (relation in _INEQUALITIES or relation == "\\in")):
            continue
        if used.labelled and relation in _LABEL_RELATIONS:
            continue  # `x = 2 + 3 = 5`: the work after a label
        return f"refused: relation {relation!r} is not in the gold answer"
    for symbol in used.symbols:
        if symbol in NEUTRAL_SYMBOLS or symbol in allowed.symbols or (interval and symbol in _INTERVAL_SYMBOLS):
            continue
        if matrices and symbol in ("[", "]", "\\\\", "&"):
            continue
        return f"refused: symbol {symbol!r} is not in the gold answer"
    return None


def _original_case(text: str, folded: str) -> str:
    for token in tokenize(text):
        if token.kind == "word" and token.text.casefold() == folded:
            return token.text
    return folded


def _power_end(tokens: list[Token], end: int) -> int:
    """Tokens `[i, end)` ending at `end` that form a unit's power `^2`, `^{3}`, `²`: returns `i` (or `end` if none)."""
    last = tokens[end - 1]
    if last.kind == "symbol" and last.text in ("²", "³"):
        return end - 1
    if last.kind == "number" and last.text in ("2", "3") and end >= 2 and tokens[end - 2].text == "^":
        return end - 2
    if last.kind == "close" and last.match >= 1 and tokens[last.match - 1].text == "^":
        inner = [t for t in tokens[last.match + 1 : end - 1] if t.kind != "space"]
        if len(inner) == 1 and inner[0].text in ("2", "3"):
            return last.match - 1
    return end


def strip_trailing_units(answer: str) -> str:
    r"""
    `5 \text{ cm}^2`, `18 Apples`, `\frac{270}7\text{ degrees}`, `60 km/h` -> the answer without its trailing unit
    words (`UNIT_WORDS`, any case, bare or in text-like macros, with powers, `/` and abbreviation dots). Only words of
    the list are removed, and only when what remains ends in a number or a closing brace; other answers are returned
    unchanged (the grammar then decides).

    Example:

    ```python
    >>> strip_trailing_units("5 \\mbox{ Square Meters}^2"), strip_trailing_units("5 hundredths")
    ('5', '5 hundredths')

    ```
    """
    tokens = tokenize(answer)
    end, cut, units = len(tokens), len(tokens), 0
    while end > 0:
        while end > 0 and (tokens[end - 1].kind == "space" or tokens[end - 1].text in (".", "/")):
            end -= 1
        if end == 0:
            break
        start = _power_end(tokens, end)
        if start == 0:
            break
        last = tokens[start - 1]
        # A bare single letter is a variable (`3m^2`), not a unit: `m` is a unit inside a text macro, or with a
        # Unicode power (`m²`, which is text, not LaTeX).
        unicode_power = start < end and tokens[start].text in ("²", "³")
        if (
            (last.kind == "word" or (last.kind == "letter" and unicode_power))
            and not last.in_text
            and last.text.casefold() in UNIT_WORDS
        ):
            end = cut = start - 1
            units += 1
            continue
        if last.kind == "close" and tokens[last.match].text_macro and last.match >= 1:
            inside = tokens[last.match + 1 : start - 1]
            words = [t for t in inside if t.kind == "word"]
            if (
                words
                and all(
                    t.kind in ("space", "word") or t.text in (".", "/")
                    for t in inside
                    if not (t.kind == "word" and t.text.casefold() in UNIT_WORDS)
                )
                and all(t.text.casefold() in UNIT_WORDS for t in words)
            ):
                end = cut = last.match - 1  # the macro's command token
                units += 1
                continue
        break
    if not units or cut == 0:
        return answer
    head = answer[: tokens[cut].start].rstrip()
    depth = 0
    for token in tokens[:cut]:
        depth += (token.kind == "open") - (token.kind == "close")
    if depth != 0 or not head or not (head[-1].isdigit() or head[-1] == "}"):
        return answer
    return head
