import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.utils import SHARED_DATA  # noqa: E402
from trl_kimi.verifiers import _math_worker
from trl_kimi.verifiers.math_verifier import MathVerifier, extract_answer, math_reward, normalise_answer


DATA = SHARED_DATA


@pytest.fixture(scope="module")
def verifier():
    # One pool for the whole module: spawning workers (sympy + math-verify imports) costs ~1 s each. The short timeout
    # keeps the pathological cases fast (math-verify's own timeouts get 1 s per step).
    with MathVerifier(timeout=4.0, num_workers=2) as shared:
        yield shared


def _children() -> set[int]:
    """Pids of this process's live (non-zombie) children, read from /proc."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process exited while we read
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and not fields.get("State", "").startswith("Z"):
            pids.add(int(status.parent.name))
    return pids


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# (gold, completion, expected reward): each rule of the module both ways.
EQUIVALENCE_CASES = [
    # plain numbers: exact fast path
    ("18", "\\boxed{18}", 1.0),
    ("18", "\\boxed{180}", 0.0),  # a prefix is not the answer
    ("\\frac{14}{3}", "\\boxed{14/3}", 1.0),  # \frac vs slash fraction, exact
    ("\\frac{14}{3}", "\\boxed{\\dfrac{28}{6}}", 1.0),  # unreduced fraction, \dfrac
    ("\\frac{14}{3}", "\\boxed{\\frac{3}{14}}", 0.0),
    ("-\\frac{1}{2}", "\\boxed{-0.5}", 1.0),
    ("18", "\\boxed{18.0}", 1.0),
    # units and \text{} wrappers
    ("5", "\\boxed{5\\text{ cm}}", 1.0),
    ("5\\text{ cm}^2", "\\boxed{5}", 1.0),
    ("5", "\\boxed{6\\text{ cm}}", 0.0),
    ("\\text{(C)}", "\\boxed{C}", 1.0),
    ("C", "\\boxed{\\text{(C)}}", 1.0),
    ("\\text{(C)}", "\\boxed{\\text{(B)}}", 0.0),
    ("5", "\\boxed{5\\text{ million}}", 0.0),  # a magnitude word is not a unit
    # currency
    ("18", "\\boxed{\\$18}", 1.0),
    ("\\$18.50", "\\boxed{18.5}", 1.0),
    ("18", "\\boxed{\\$19}", 0.0),
    # percent: like math-verify, 50% equals both 50 and 0.5
    ("50\\%", "\\boxed{50}", 1.0),
    ("50", "\\boxed{50\\%}", 1.0),
    ("50\\%", "\\boxed{0.5}", 1.0),
    ("50\\%", "\\boxed{51}", 0.0),
    # degrees
    ("30^\\circ", "\\boxed{30}", 1.0),
    ("30", "\\boxed{30^{\\circ}}", 1.0),
    ("30^\\circ", "\\boxed{60^\\circ}", 0.0),
    # thousands separators
    ("10{,}000", "\\boxed{10000}", 1.0),
    ("10,\\!000", "\\boxed{10,000}", 1.0),
    ("1450000", "#### 1,450,000", 1.0),
    ("1,000", "\\boxed{1.000}", 0.0),  # decided: comma groups thousands, the dot is a decimal point (1.000 = 1)
    ("1,000", "\\boxed{100}", 0.0),
    # scientific notation
    ("1500", "\\boxed{1.5\\times 10^{3}}", 1.0),
    ("1500", "\\boxed{1.5e3}", 1.0),  # math-verify reads this as 1.5 * e * 3
    ("0.0015", "\\boxed{1.5 \\cdot 10^{-3}}", 1.0),
    ("1500", "\\boxed{1.5e4}", 0.0),
    # intervals vs inequalities
    ("(-\\infty, 3]", "\\boxed{x \\le 3}", 1.0),  # math-verify misses this direction
    ("x \\le 3", "\\boxed{(-\\infty, 3]}", 1.0),
    ("(-\\infty, 3]", "\\boxed{x < 3}", 0.0),
    ("x \\le 3", "\\boxed{x < 3}", 0.0),
    ("[2, 5)", "\\boxed{2 \\le x < 5}", 1.0),
    ("(1, 2)", "\\boxed{1 < x < 2}", 0.0),  # (1, 2) may be a point: no interval-inequality comparison
    # repeating decimals
    ("\\frac{1}{3}", "\\boxed{0.\\overline{3}}", 1.0),
    ("\\frac{37}{30}", "\\boxed{1.2\\overline{3}}", 1.0),
    ("\\frac{1}{3}", "\\boxed{0.\\overline{6}}", 0.0),
    # clock times
    ("4:30 p.m.", "\\boxed{4:30 pm}", 1.0),
    ("4:30 p.m.", "\\boxed{16:30}", 1.0),
    ("4:30 p.m.", "\\boxed{4:30 a.m.}", 0.0),
    ("4:30 p.m.", "\\boxed{4:30}", 0.0),  # unsure which half of the day: 0
    # tuples vs column vectors (decided: equal when the components are equal, in order)
    ("(1,2)", "\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", 1.0),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\boxed{(1, 2)}", 1.0),
    ("(1,2)", "\\boxed{\\begin{pmatrix}2\\\\1\\end{pmatrix}}", 0.0),
    ("(1,2)", "\\boxed{(2,1)}", 0.0),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}", 1.0),
    # sets vs ordered tuples
    ("\\{1,2\\}", "\\boxed{\\{2,1\\}}", 1.0),
    ("\\{1,2\\}", "\\boxed{(2,1)}", 0.0),  # math-verify says 1: a set never equals a tuple here
    ("(1,2)", "\\boxed{\\{2,1\\}}", 0.0),
    ("1, 2", "\\boxed{(2, 1)}", 0.0),
    # several candidates
    ("5", "\\boxed{3} or \\boxed{5}", 0.0),  # a hedge: two boxed answers joined by "or" are a list
    ("3", "\\boxed{3} or \\boxed{5}", 0.0),
    ("5", "\\boxed{3}. Checking again, the area is \\boxed{5}", 1.0),  # an earlier box in the reasoning
    ("1, 2", "\\boxed{1} and \\boxed{2}", 1.0),
    ("3", "\\boxed{3, 5}", 0.0),
    ("3", "The answer is 3 or 5.", 0.0),
    ("5", "The answer is 3 or 5.", 0.0),  # not the last of several values either
    ("6", "So it is 5 and 6", 0.0),
    ("6", "The answer is 5, 6.", 0.0),
    ("6", "The answers are $5$ or $6$.", 0.0),
    # symbolic answers go to math-verify
    ("x^2 + 2x + 1", "\\boxed{(x+1)^2}", 1.0),
    ("\\sqrt{2}", "\\boxed{\\frac{2}{\\sqrt{2}}}", 1.0),
    ("\\sqrt{2}", "\\boxed{\\sqrt{3}}", 0.0),
]


@pytest.mark.parametrize("gold, completion, expected", EQUIVALENCE_CASES)
def test_equivalence_rules(verifier, gold, completion, expected):
    rewards, reasons = verifier.verify_batch([completion], [gold])
    assert rewards == [expected], reasons


def test_equivalence_rules_in_one_batch(verifier):
    # The same table as one batch: results come back in item order although workers finish out of order.
    golds, completions, expected = zip(*EQUIVALENCE_CASES)
    assert verifier(list(completions), solution=list(golds)) == list(expected)


# (completion, extracted answer)
EXTRACTION_CASES = [
    ("so $\\boxed{\\frac{9}{2}}$.", "\\frac{9}{2}"),  # nested braces
    ("\\boxed{1} then \\boxed{2}", "2"),  # last box wins
    ("\\boxed{1}, \\boxed{2}", "1, 2"),  # boxes joined by a comma or "and" are one list answer
    ("\\fbox{7}", "7"),  # \fbox counts as a box
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are not groups
    ("\\boxed{12", None),  # truncated box
    ("\\boxed{3} and finally \\boxed{12", None),  # truncated last box does not fall back to the earlier one
    ("\\boxed{}", None),  # empty box
    ("The answer is 18.", "18"),
    ("The answer is $1.5$, I think.", "1.5"),
    ("the answer is 3.14", "3.14"),  # a decimal point is not the end of the sentence
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
    ("Final Answer: 42", "42"),
    ("blah\n#### 1,450,000", "1,450,000"),
    ("The answer is $\\frac{1}{", None),  # truncated inline math
    ("Janet's ducks lay 16 eggs per day. She eats 3.", None),  # stops on a sentence of the question: no answer
    ("There are 16 eggs. Therefore she sells 13.", "13"),  # a conclusion that ends with a value
    ("18", "18"),  # a completion that is only the answer
    ("$18", "18"),
    ("20 percent", "20 percent"),
    ("Natalia sold 48 + 24 = 72 clips.\nA: 72", "72"),  # GSM8K few-shot format
    ("so \\boxed{255}. She has \\$10,455. Final Answer: 10455", "10455"),  # an anchor after the last box wins
    ("so \\boxed{255}, and our answer is correct.", "255"),  # ... when it holds a value
    ("So the area is \\frac{9}{2}, I think?", None),  # a question is no answer
    ("<think>The answer is 4", None),  # unfinished thinking block
    ("<think>The answer is 4</think>The answer is 5", "5"),  # only text after </think> counts
    ("<think>\\boxed{4}</think>", None),  # closed thinking with nothing after it
    ("reasoning in the prompt's think block</think> \\boxed{6}", "6"),  # template put <think> in the prompt
    ("\\boxed{4}</think><think>more thinking", None),  # a second, unfinished block
]


@pytest.mark.parametrize("completion, expected", EXTRACTION_CASES)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_gold_may_be_bare_or_worked():
    # bare answers need no anchor; worked solutions use their box or "####" line
    assert extract_answer("\\frac{14}{3}", require_anchor=False) == "\\frac{14}{3}"
    assert extract_answer("$18$", require_anchor=False) == "18"
    assert extract_answer("2+2=<<2+2=4>>4 apples\n#### 4", require_anchor=False) == "4"


def test_normalise_answer():
    assert normalise_answer("\\$1,450,000") == "1450000"
    assert normalise_answer("1.2\\overline{36}") == "\\frac{68}{55}"
    assert normalise_answer("\\begin{bmatrix}a\\\\b\\\\c\\end{bmatrix}") == "(a, b, c)"
    assert normalise_answer("\\begin{pmatrix}1 & 2\\end{pmatrix}") == "\\begin{pmatrix}1 & 2\\end{pmatrix}"  # row
    assert normalise_answer("1e1000000") == "1e1000000"  # huge exponents are left for the worker's deadline


def test_conversational_completions(verifier):
    completions = [
        [{"role": "assistant", "content": "The answer is $\\boxed{7}$."}],
        # the last assistant message is graded, whatever came before
        [
            {"role": "assistant", "content": "\\boxed{7}"},
            {"role": "user", "content": "sure?"},
            {"role": "assistant", "content": "\\boxed{8}"},
        ],
        # multimodal content parts
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{7}"}]}],
        [{"role": "user", "content": "\\boxed{7}"}],  # no assistant message: nothing to grade
    ]
    assert verifier(completions, solution=["7"] * 4) == [1.0, 0.0, 1.0, 0.0]


def test_bad_inputs(verifier, caplog):
    completions = [None, "", "   ", "\udcff\x00 \U0001f600 \\boxed{7}", "\\boxed{\udcff}", 42, b"\\boxed{7}"]
    rewards, reasons = verifier.verify_batch(completions, ["7"] * len(completions))
    assert rewards == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert all(isinstance(reward, float) for reward in rewards)
    assert reasons[0] == "no_answer: completion is None"
    assert reasons[5] == "no_answer: completion is int"
    assert "completion is None" in caplog.text  # logged, not silent


def test_question_repeated_is_not_an_answer(verifier):
    question = "Janet's ducks lay 16 eggs per day. She eats 3. How many dollars does she make at $2 per egg?"
    assert verifier([question], solution=["26"]) == [0.0]


def test_huge_completion_is_fast(verifier):
    padding = "lorem ipsum 123 " * 70_000  # ~1.1 MB
    start = time.perf_counter()
    rewards = verifier([padding + "\\boxed{18}", "\\boxed{18}" + padding, "<think>" + padding], solution=["18"] * 3)
    assert time.perf_counter() - start < 1.0
    # only the tail is searched: an answer buried 1 MB before the end is not found
    assert rewards == [1.0, 0.0, 0.0]


def test_missing_solution_column():
    with pytest.raises(ValueError, match="math_reward needs a 'solution' column.*rename_column"):
        math_reward(["\\boxed{1}"], prompts=["p"], answer=["#### 1"])
    with pytest.raises(ValueError, match="1 completions but 2 solutions"):
        math_reward(["\\boxed{1}"], solution=["1", "2"])
    with pytest.raises(ValueError, match=r"solution\[0\] must be a string"):
        math_reward(["\\boxed{1}"], solution=[None])


def test_math_reward_trl_signature():
    # The keyword arguments GRPOTrainer passes (every item is read in a worker of the default verifier).
    metrics = {}
    rewards = math_reward(
        prompts=["q1", "q2", "q3"],
        completions=["\\boxed{18}", "#### 19", "no answer here"],
        completion_ids=[[1], [2], [3]],
        solution=["#### 18", "#### 18", "18"],
        trainer_state=None,
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    assert rewards == [1.0, 0.0, 0.0]
    assert metrics == pytest.approx(
        {
            "math_verifier/no_answer": 1 / 3,
            "math_verifier/timeouts": 0.0,
            "math_verifier/errors": 0.0,
            "math_verifier/fast_path": 2 / 3,
            "math_verifier/refused": 0.0,
        }
    )
    assert math_reward.__name__ == MathVerifier().__name__ == "math_reward"


@pytest.mark.parametrize(
    "pathological",
    ["10^{10^{10^{10}}}", "9^{9^{9^{9}}}", "1000000!", "2^{2^{2^{2^{2^{2}}}}}", "\\frac{1}{0}", "1e1000000"],
)
def test_pathological_answers_time_out(verifier, pathological):
    start = time.perf_counter()
    rewards, reasons = verifier.verify_batch(["\\boxed{" + pathological + "}"], ["5"])
    assert rewards == [0.0]
    assert time.perf_counter() - start < 10.0, reasons


def test_stuck_and_killed_workers_are_replaced(verifier):
    # A hard deadline shorter than math-verify's own 1 s timeouts, so the parent must SIGKILL the worker.
    with MathVerifier(timeout=0.5, num_workers=1) as impatient:
        impatient(["\\boxed{x+1}"], solution=["1+x"])  # start the worker
        stuck_pid = impatient._pool.workers[0].process.pid
        metrics = {}
        rewards = impatient(["\\boxed{9^{9^{9^{9}}}}"], solution=["5"], log_metric=metrics.__setitem__)
        assert rewards == [0.0]
        assert metrics["math_verifier/timeouts"] == 1.0
        assert not _pid_alive(stuck_pid)
    # A worker killed from outside between batches: the next batch still works. (Expressions not used elsewhere in
    # this module, so that the verifier's result cache cannot answer them.)
    verifier(["\\boxed{k+1}"] * 2, solution=["1+k"] * 2)
    for worker in verifier._pool.workers:
        os.kill(worker.process.pid, signal.SIGKILL)
    # the items sent to the dead workers are retried once on their replacements
    rewards, reasons = verifier.verify_batch(["\\boxed{k+2}", "\\boxed{k+3}", "\\boxed{(k+2)^2}"], ["2+k"] * 3)
    assert (rewards, reasons) == ([1.0, 0.0, 0.0], ["math_verify"] * 3)
    assert verifier(["\\boxed{2k}"], solution=["k+k"]) == [1.0]


def test_duplicates_are_verified_once_and_cached(verifier):
    completions = ["\\boxed{m^2 - 1}"] * 3 + ["\\boxed{m^2 + 1}"]
    rewards, reasons = verifier.verify_batch(completions, ["(m-1)(m+1)"] * 4)
    assert (rewards, reasons) == ([1.0, 1.0, 1.0, 0.0], ["math_verify"] * 4)
    rewards, reasons = verifier.verify_batch(completions, ["(m-1)(m+1)"] * 4)
    assert (rewards, reasons) == ([1.0, 1.0, 1.0, 0.0], ["cached"] * 4)


def test_close_leaves_no_processes():
    before = _children()
    verifier = MathVerifier(num_workers=2)
    assert verifier(["\\boxed{x+1}"] * 2, solution=["1+x"] * 2) == [1.0, 1.0]
    pids = {worker.process.pid for worker in verifier._pool.workers}
    assert pids <= _children()
    verifier.close()
    assert not pids & _children()
    assert _children() <= before
    # still usable after close: a new pool starts
    assert verifier(["\\boxed{x+1}"], solution=["1+x"]) == [1.0]
    verifier.close()


def test_workers_die_with_their_parent():
    # A parent that starts workers and then dies without closing anything (os._exit skips atexit and __del__).
    script = textwrap.dedent(
        """
        import importlib.util, os, sys
        # loaded by path: importing the `trl_kimi` package would spend seconds importing torch
        spec = importlib.util.spec_from_file_location("math_worker", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        pool = module._WorkerPool(num_workers=2, timeout=10.0, startup_timeout=60.0)
        pool.run([{"gold": "x+1", "pred": "1+x", "intervals": False}] * 2)
        print(" ".join(str(w.process.pid) for w in pool.workers), flush=True)
        os._exit(0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, _math_worker.__file__], capture_output=True, text=True, timeout=120
    )
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2, result.stderr
    deadline = time.monotonic() + 5
    while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_pid_alive(pid) for pid in pids)


def test_pickle_drops_the_pool(verifier):
    verifier(["\\boxed{x+1}"], solution=["1+x"])  # make sure a live pool exists
    copy = pickle.loads(pickle.dumps(verifier))
    assert copy._pool is None and verifier._pool is not None
    assert copy.timeout == verifier.timeout and copy.__name__ == "math_reward"
    assert copy(["\\boxed{18}"], solution=["18"]) == [1.0]  # fast path: no pool needed


def test_worker_start_failure_raises(monkeypatch):
    # An interpreter that cannot run the worker (here: not Python at all) is a setup error, not a 0 reward.
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with MathVerifier(num_workers=1) as broken:
        for _ in range(2):  # and the verifier does not hang on a second call
            with pytest.raises(RuntimeError, match="failed to start.*import math_verify"):
                broken(["\\boxed{x+1}"], solution=["1+x"])


def test_invalid_options():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        MathVerifier(timeout=0)
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        MathVerifier(num_workers=0)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"{path} not found: the public data beside the checkout (../shared/data), or set TRL_KIMI_DATA")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_math500_gold_answers_match_gold_solutions(verifier):
    records = _read_jsonl(DATA / "math500" / "test.jsonl")[:100]
    completions = ["... \\boxed{" + record["answer"] + "}" for record in records]
    rewards, reasons = verifier.verify_batch(completions, [record["solution"] for record in records])
    assert rewards == [1.0] * len(records), [(i, r) for i, r in enumerate(reasons) if rewards[i] != 1.0]
    # Most of those are decided by string equality after extraction; with spaces added inside braces and after commas
    # (the same LaTeX), a quarter go through math-verify and the fast path instead.
    completions = ["\\boxed{" + record["answer"].replace("{", "{ ").replace(",", " , ") + "}" for record in records]
    rewards, reasons = verifier.verify_batch(completions, [record["solution"] for record in records])
    assert rewards == [1.0] * len(records), [(i, r) for i, r in enumerate(reasons) if rewards[i] != 1.0]
    assert reasons.count("math_verify") + reasons.count("cached") >= 10


def test_math500_shuffled_pairs_are_wrong(verifier):
    records = _read_jsonl(DATA / "math500" / "test.jsonl")[:100]
    completions = ["\\boxed{" + record["answer"] + "}" for record in records[:-1]]
    rewards = verifier(completions, solution=[record["solution"] for record in records[1:]])
    # record 22's answer `5` and record 23's `x=5` are genuinely the same answer (math-verify reads `x=5` as 5)
    assert [i for i, reward in enumerate(rewards) if reward] == [22]


# (gold, prediction, decided unequal without sympy)
CLOSED_FORM_CASES = [
    ("90", "3\\sqrt{13}", True),
    ("\\frac{3\\sqrt{3}}{4}", "\\cot x", False),  # a variable: sympy decides
    ("6 - 5i", "-50", True),
    ("-\\frac{\\pi}{6}", "0.15", True),
    ("1.25", "2", True),
    ("\\frac{1}{3}", "0.333", True),  # 3e-4 apart: math-verify's 6-decimal rounding cannot join them
    ("\\frac{1}{3}", "0.333333", False),  # within rounding: math-verify's call (it says equal)
    ("\\pi", "3.14159265", False),
    ("2^{10}", "1000", True),
    ("15", "1\\frac{4}{5}", False),  # a mixed number (or 4/5?): not read here
    ("52_8", "42", False),  # a base subscript: not read here
    ("50\\%", "0.4", False),  # percentages are math-verify's
]


@pytest.mark.parametrize("gold, prediction, decided", CLOSED_FORM_CASES)
def test_closed_forms_far_apart_need_no_sympy(verifier, gold, prediction, decided):
    from math_verify import parse, verify

    rewards, reasons = verifier.verify_batch(["\\boxed{" + prediction + "}"], [gold])
    assert (reasons == ["numeric"]) is decided, reasons
    # Never a different verdict from math-verify's on the same pair.
    assert rewards == [float(verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + prediction + "}")))]


def test_gsm8k_gold_answers(verifier):
    records = _read_jsonl(DATA / "gsm8k" / "test.jsonl")[:200]
    finals = [record["answer"].split("####")[-1].strip() for record in records]
    solutions = [record["answer"] for record in records]
    assert verifier(["#### " + final for final in finals], solution=solutions) == [1.0] * len(records)
    shuffled = verifier(["#### " + final for final in finals[:-1]], solution=solutions[1:])
    expected = [float(finals[i].replace(",", "") == finals[i + 1].replace(",", "")) for i in range(len(records) - 1)]
    assert shuffled == expected
    assert 0 < sum(expected) < 10  # a few neighbours genuinely share an answer (e.g. records 53 and 54: 40)


def test_item_that_kills_two_workers_scores_zero():
    # Kill the worker each time it holds the item: the first crash is retried on a fresh worker, the second scores 0.
    with MathVerifier(timeout=30.0, num_workers=1) as verifier:
        verifier(["\\boxed{x+1}"], solution=["1+x"])  # start the worker
        killed = []

        def kill_busy_workers():
            deadline = time.monotonic() + 60
            while len(killed) < 2 and time.monotonic() < deadline:
                worker = verifier._pool.workers[0]
                if worker.item is not None and worker.process.pid not in killed:
                    os.kill(worker.process.pid, signal.SIGKILL)
                    killed.append(worker.process.pid)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_busy_workers)
        killer.start()
        # 9^{9^{9^{9}}} keeps a worker busy for seconds (its soft timeouts are 7 s here)
        rewards, reasons = verifier.verify_batch(["\\boxed{9^{9^{9^{9}}}}"], ["5"])
        killer.join()
        assert (rewards, reasons, len(killed)) == ([0.0], ["worker_crashed"], 2)
        assert verifier.verify_batch(["\\boxed{x+2}"], ["2+x"]) == ([1.0], ["math_verify"])  # the third worker works
