"""Generated attacks on `math_reward` (issue 26): from each real gold answer, wrong answers built the way a policy
could stumble on them (words in any case and any macro, variables, relations, list/decimal confusions), and
pathological shapes. Seeded; the only time check is a generous bound on a whole batch."""

import json
import random
import string
import time

import pytest

from tests.utils import SHARED_DATA  # noqa: E402
from trl_kimi.verifiers._math_grammar import COMMA_RULE, UNIT_WORDS, refusal
from trl_kimi.verifiers.math_verifier import MathVerifier, extract_answer, normalise_answer


DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not (DATA / "math500").is_dir(), reason=f"MATH-500/GSM8K not found under {DATA}")

# Words that change a value or hedge it (each was, or is like, a hole of a deny-list), and random letter strings.
VALUE_WORDS = (
    "hundredths halves squared cubed dozen pairs quarters more less fewer times over minus plus thousand".split()
)
WRAPPERS = [
    " {}",
    "{}",
    " \\text{{ {}}}",
    "\\text{{{}}}",
    "\\textit{{ {}}}",
    "\\textbf{{{}}}",
    "\\mathbf{{{}}}",
    "\\mathrm{{ {}}}",
    "\\operatorname{{{}}}",
    "\\mbox{{ {}}}",
    "\\textbf{{\\textit{{{}}}}}",
    "\\emph{{{}}}",
    "\\foo{{{}}}",
]
RELATIONS = ["=", "\\equiv", "<", ">", "\\le", "\\geq", "\\neq", "\\approx", "\\sim", "\\cong", "\\mid"]


def _random_case(rng: random.Random, word: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)


def _word(rng: random.Random, gold: str) -> str:
    while True:
        word = rng.choice(VALUE_WORDS) if rng.random() < 0.5 else "".join(rng.choices(string.ascii_lowercase, k=5))
        if word not in UNIT_WORDS and word not in gold.lower():
            return _random_case(rng, word)


def _attacks(rng: random.Random, gold: str) -> list[str]:
    """Wrong answers for `gold`, each boxed."""
    letters = [c for c in "abcdfghjkmnpqrtuvwyz" if c not in gold]
    other = str(rng.randint(2, 99))
    variable = rng.choice(letters)
    attacks = [
        gold + rng.choice(WRAPPERS).format(_word(rng, gold)),  # a word, any case, any macro
        rng.choice(WRAPPERS).format(_word(rng, gold)).strip() + " " + gold,  # before the answer
        gold + variable,  # a variable the gold does not have
        f"{gold}{variable}^2",
        f"({gold}){variable}",
        f"{gold}i^2",  # = -gold
        f"\\text{{{other}}} {rng.choice(RELATIONS)} {gold}",  # a relation the gold does not have
        f"{other} {rng.choice(RELATIONS)} {gold}",
        f"f({other}) = {gold}",  # a function of a constant
        f"{gold} {rng.choice(RELATIONS)} {other}",
        f"{gold} \\pm {other}",
    ]
    if "," in gold and "\\" not in gold:  # a list read as a decimal: `-2,1` vs `-2.1`
        attacks.append(gold.replace(",", ".", 1).replace(" ", ""))
    if "." in gold and gold.replace(".", "").replace("-", "").isdigit():  # a list for a decimal: `2, 5` vs `2.5`
        attacks.append(gold.replace(".", ", "))
    return ["The answer is $\\boxed{" + attack + "}$." for attack in attacks]


def _golds() -> list[str]:
    math500 = [json.loads(line)["answer"] for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    gsm8k = [
        json.loads(line)["answer"].split("####")[-1].strip()
        for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()
    ]
    rng = random.Random(0)
    # Every MATH-500 answer with a comma (lists and thousands), and a seeded sample of the rest.
    commas = [answer for answer in math500 if "," in answer]
    return commas + rng.sample([a for a in math500 if "," not in a], 60) + rng.sample(gsm8k, 40)


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=10.0, num_workers=2) as shared:
        yield shared


@needs_data
def test_generated_attacks_never_score(verifier):
    rng = random.Random(26)
    golds = _golds()
    items = [(gold, attack) for gold in golds for attack in _attacks(rng, gold)]
    # Sanity of the generator: each gold, boxed as it is, scores 1.
    rewards, reasons = verifier.verify_batch(["\\boxed{" + gold + "}" for gold in golds], golds)
    assert rewards == [1.0] * len(golds), [(g, r) for g, r, x in zip(golds, reasons, rewards) if x != 1.0]
    rewards, reasons = verifier.verify_batch([attack for _, attack in items], [gold for gold, _ in items])
    passed = [(gold, attack, reason) for (gold, attack), reward, reason in zip(items, rewards, reasons) if reward]
    assert passed == []
    assert len(items) >= 1000


@pytest.mark.parametrize(
    "gold, prediction",
    [
        ("5", "5 \\text{ Hundredths}"),
        ("5", "5 \\textit{hundredths}"),
        ("5", "5 \\mathbf{HUNDREDTHS}"),
        ("5", "5 \\operatorname{or more}"),
        ("5", "5i^2"),
        ("5", "\\text{3} = 5"),
        ("5", "3 \\equiv 5"),
        ("5", "f(2) = 5"),
        ("5", "5 \\unknownmacro{cm}"),
    ],
)
def test_grammar_refuses_issue_cases(gold, prediction):
    assert refusal(gold, prediction) is not None


def test_relations_between_boxes(verifier):
    # A false equation spread over two boxes is the relation, not its last side.
    completions = [
        "\\boxed{3} = \\boxed{5}",
        "$\\boxed{\\text{3}}$ \\equiv $\\boxed{5}$",
        "\\boxed{3} \\to \\boxed{5}",
    ]
    rewards, reasons = verifier.verify_batch(completions, ["5"] * 3)
    assert rewards == [0.0, 0.0, 0.0], reasons
    assert verifier(["\\boxed{x} = \\boxed{5}", "\\boxed{3}, \\boxed{5}"], ["5", "3, 5"]) == [1.0, 1.0]


def test_variables_are_never_units(verifier):
    # Issue 26: a variable was dropped as if it were a unit (`3` for `3x^2`, `5i^2` = -5 for 5). A unit is a word of
    # the list, or a single letter inside a text macro (`\text{m}`); a bare letter is a variable.
    golds, predictions = ["3x^2", "3m^2", "5", "5", "5", "2h"], ["3", "3", "5i^2", "5m", "5 s", "2"]
    rewards, reasons = verifier.verify_batch(["\\boxed{" + p + "}" for p in predictions], golds)
    assert rewards == [0.0] * len(golds), reasons
    assert verifier(["\\boxed{5 \\text{m}}", "\\boxed{5 \\mathrm{S}}"], ["5", "5"]) == [1.0, 1.0]


@pytest.mark.parametrize(
    "gold, prediction",
    [
        ("5", "5 \\text{ CM}"),  # a unit, any case, any macro
        ("5", "5 \\textit{Square Meters}^2"),
        ("5", "x = 5"),  # a label is not a relation
        ("(5, 8), (8, 5)", "(x, y) = (5, 8) \\text{ and } (8, 5)"),
        ("[-2, 7]", "-2 \\le x \\le 7"),  # an interval and its inequality
        ("\\text{(C)}", "C"),
        ("\\tan^2(y)+1", "\\sec^2(y)"),
        ("\\text{Evelyn}", "\\text{evelyn}"),
    ],
)
def test_grammar_allows(gold, prediction):
    assert refusal(gold, prediction) is None


@needs_data
def test_comma_rule_on_real_answers(verifier):
    # MATH-500 and GSM8K answers with commas: thousands groups and lists, as `COMMA_RULE` defines them.
    assert "thousands" in COMMA_RULE and "list" in COMMA_RULE
    for grouped, plain in [("58,500", "58500"), ("1,450,000", "1450000"), ("10,\\!080", "10080"), ("2,125", "2125")]:
        assert normalise_answer(grouped) == plain
    cases = [
        ("58,500", "58500", 1.0),  # MATH-500: thousands
        ("#### 1,450,000", "1450000", 1.0),  # GSM8K
        ("\\$32,\\!348", "32348", 1.0),
        ("-2,1", "-2.1", 0.0),  # MATH-500: a list, never a decimal
        ("-2,1", "-2, 1", 1.0),
        ("1,-2", "1.-2", 0.0),
        ("3, 5, 7", "3.57", 0.0),
        ("3, 5, 7", "357", 0.0),
        ("2.5", "2,5", 0.0),  # a decimal point is not a list comma
        ("1,22", "1.22", 1.0),  # math-verify's pairs: a decimal comma (two digits after it)
    ]
    golds = [gold for gold, _, _ in cases]
    rewards, reasons = verifier.verify_batch(["\\boxed{" + pred + "}" for _, pred, _ in cases], golds)
    assert rewards == [expected for _, _, expected in cases], list(zip(golds, reasons))
    answers = [json.loads(line)["answer"] for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    assert "-2,1" in answers and "58,500" in answers


def _pathological(n: int) -> list[str]:
    prose = "because we multiplied the numbers together and then divided them evenly among the students "
    return [
        "\\boxed{5 " + (prose * (n // len(prose) + 1))[:n] + "(see above)}",
        "The answer is 5 " + "a" * n,
        "The answer is 5" + " " * n + "x",
        " " * n + "5",
        "\\boxed{" * (n // 7) + "5" + "}" * (n // 7),
        "\\boxed{" + "{" * n,
        "$" * n,
        "\\(" * (n // 2),
        "5" + " =" * (n // 2),
        "\\boxed{5 " + "\\text{a}" * (n // 8) + "}",
        "ab " * (n // 3),
    ]


def test_pathological_shapes_return_within_the_bound():
    # Every parse runs in a worker under the item's deadline (2 s here). A generous bound for the batch: its items
    # take milliseconds each (benchmarks/verifiers.py --part adversarial measures them); a hang would take minutes.
    texts = [text for n in (62, 1000, 8192, 100_000) for text in _pathological(n)]
    with MathVerifier(timeout=2.0, num_workers=2) as verifier:
        verifier.verify_batch(["\\boxed{1}"], ["1"])  # start the workers outside the timed call
        start = time.monotonic()
        rewards, reasons = verifier.verify_batch(texts, ["5"] * len(texts))
        elapsed = time.monotonic() - start
    assert elapsed < 2.0 * len(texts) / 2 + 10.0  # at worst every item hits its deadline on one of two workers
    assert sum(rewards) <= 4 * 2  # only the bare "5" and the nested boxes of 5 are right, at each size
    assert all(r == 1.0 for r, text in zip(rewards, texts) if text.strip() == "5")


def test_trainer_process_runs_no_parse(monkeypatch):
    # The parent only slices the text: extraction and normalisation are never called in this process.
    import trl_kimi.verifiers._math_answers as answers

    def forbidden(*args, **kwargs):
        raise AssertionError("model text parsed in the trainer's process")

    monkeypatch.setattr(answers, "extract_answer", forbidden)
    monkeypatch.setattr(answers, "_normalise", forbidden)
    with MathVerifier(timeout=5.0, num_workers=1) as verifier:
        assert verifier(
            ["So the answer is $\\boxed{\\frac{9}{2}}$.", "\\boxed{5 \\text{ Hundredths}}"], ["4.5", "5"]
        ) == [
            1.0,
            0.0,
        ]
    assert extract_answer("\\boxed{7}") == "7"  # the public helper itself still works (monkeypatch is undone after)
