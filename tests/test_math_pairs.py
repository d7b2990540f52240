"""Broad verdict tables for `math_reward`: Math-Verify's own public test pairs, and our convention/adversarial pairs.

Both files are in `tests/data/` (see its README for their sources and licence).
"""

import json
import logging
from collections import defaultdict
from pathlib import Path

import pytest
from math_verify import parse, verify

from trl_kimi.verifiers.math_verifier import MathVerifier


DATA = Path(__file__).parent / "data"

# Math-Verify 0.9.0's tests list `1 - \frac{1}{\mathrm{e}}` against `1 + \frac{1}{\mathrm{e}}` as equal
# (`test_yujianll.py`): a wrong label that only a false positive could match, so it is not counted.
_MISLABELLED = {("$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$")}


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _math_verify_pairs() -> list[dict]:
    """The public pairs, each pair once with one verdict.

    A few pairs appear twice with opposite verdicts, one per value of a math-verify option (`strict`,
    `allow_set_relation_comp`); the row kept is the one whose option matches `math_reward`'s rules: variable names
    matter, and an inequality equals the interval it describes.
    """
    rows = _read("math_verify_pairs.jsonl")
    verdicts = defaultdict(set)
    for row in rows:
        verdicts[row["gold"], row["pred"]].add(row["expected"])
    return [
        row
        for row in rows
        if (row["gold"], row["pred"]) not in _MISLABELLED
        and (
            len(verdicts[row["gold"], row["pred"]]) == 1
            or row["options"].get("allow_set_relation_comp") is True
            or row["options"].get("strict") is True
        )
    ]


@pytest.fixture(scope="module")
def verifier():
    # A generous deadline: a few public pairs need seconds of sympy on a busy 2-core machine (math-verify's own
    # default timeouts are 5 s per step; 20 s gives our workers the same per step).
    with MathVerifier(timeout=20.0, num_workers=2) as shared:
        yield shared


@pytest.mark.slow  # ~15-35 s: some public pairs need seconds of sympy each
def test_math_verify_public_pairs(verifier):
    # `math_verify` in each row is math-verify 0.9.0 alone, `verify(parse(gold), parse(pred))` with default options,
    # recorded by `make_math_verify_pairs.py` (and re-checked live by the slow test below).
    rows = _math_verify_pairs()
    assert len(rows) == 272
    ours, reasons = verifier.verify_batch([row["pred"] for row in rows], [row["gold"] for row in rows])
    false_positives = [
        (row["gold"], row["pred"]) for row, reward in zip(rows, ours) if reward == 1.0 > row["expected"]
    ]
    assert false_positives == []
    agree_ours = sum(int(reward) == row["expected"] for row, reward in zip(rows, ours))
    agree_theirs = sum(row["math_verify"] == row["expected"] for row in rows)
    assert agree_theirs == 267  # math-verify alone: 2 false positives, 3 misses
    misses = [(row["source"], reason) for row, reward, reason in zip(rows, ours, reasons) if reward < row["expected"]]
    assert agree_ours >= agree_theirs, (agree_ours, agree_theirs, misses)


@pytest.mark.slow
def test_recorded_math_verify_verdicts_are_current():
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    rows = _math_verify_pairs()
    live = [int(bool(verify(parse(row["gold"]), parse(row["pred"])))) for row in rows]
    assert live == [row["math_verify"] for row in rows]


def test_crafted_pairs(verifier):
    # GSM8K/MATH final-answer conventions, answers without a final answer, and completions a policy could write to get
    # 1.0 without being right (value-changing words, hedges, several answers, false equations): every verdict exact.
    rows = _read("math_pairs.jsonl")
    rewards, reasons = verifier.verify_batch([row["pred"] for row in rows], [row["gold"] for row in rows])
    wrong = [
        (row["gold"], row["pred"], reward, reason)
        for row, reward, reason in zip(rows, rewards, reasons)
        if reward != row["expected"]
    ]
    assert wrong == []
    assert sum(row["expected"] == 0 for row in rows if row["source"] == "adversarial") >= 60


def test_huge_numbers_score_zero_without_failing_the_batch(caplog):
    # Python refuses int() of more than 4,300 digits; such items once raised in the parent and failed the batch. A
    # short deadline: the ones sent to a worker time out, which is the point (0, logged, the batch goes on).
    digits = "9" * 5000
    completions = [
        f"\\boxed{{0.{digits}\\overline{{3}}}}",  # repeating decimal
        f"\\boxed{{{digits}e5}}",  # scientific notation
        f"\\boxed{{{digits}.5\\times 10^{{3}}}}",
        f"\\boxed{{{digits} million}}",  # magnitude word
        f"\\boxed{{1e{digits}}}",  # huge exponent
        f"\\boxed{{{digits} = 5}}",  # equation
        f"\\boxed{{2\\begin{{pmatrix}}{digits}\\\\1\\end{{pmatrix}}}}",  # scalar times vector
        f"#### {digits}",
        "\\boxed{5}",
    ]
    with MathVerifier(timeout=1.0, num_workers=2) as verifier:
        rewards, reasons = verifier.verify_batch(completions, ["5"] * len(completions))
    assert rewards == [0.0] * 8 + [1.0], reasons


@pytest.mark.parametrize(
    "gold, completion",
    [
        ("5", "\\boxed{5 \\text{ hundredths}}"),
        ("3", "\\boxed{3 halves}"),
        ("2", "\\boxed{2 squared}"),
        ("7", "\\boxed{7 minus two}"),
        ("5", "\\boxed{5 \\text{ or more}}"),
        ("5", "\\boxed{5 \\text{ at least}}"),
        ("5", "\\boxed{5 \\text{ millionths}}"),
        ("5", "\\boxed{3 = 5}"),
    ],
)
def test_value_changing_words_are_not_units(verifier, gold, completion):
    # The false positives of issue 19: trailing words that change the value were dropped as if they were units.
    # All refused by the grammar (in a worker), before math-verify.
    rewards, reasons = verifier.verify_batch([completion], [gold])
    assert rewards == [0.0] and reasons[0].startswith("refused"), reasons
