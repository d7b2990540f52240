"""Verifiers, side by side in one run on the same inputs (Kimi k1.5 §7; targets from the rewards issue).

- math: naive `math_verify.verify(parse(gold), parse(pred))` called serially vs `MathVerifier` (2 worker
  processes), on the gold answers of MATH-500 and GSM8K from `../shared/data/` (or `$TRL_KIMI_DATA`; target: >= 3x
  on 2 cores), and on the mismatched MATH-500 pairs that need sympy (target: >= 2x, `bench_sympy_path`);
- code: a bare `subprocess` harness (no sandbox, tests in the program's interpreter) vs the bubblewrap-sandboxed
  `CodeVerifier` (tests in the trusted process, calls in the sandbox, the prompt's helpers from the prompt),
  alternating in one run, on the 164 HumanEval canonical solutions (target: <= 1.3x the wall time, 164/164 passing)
  and the 974 MBPP reference solutions.

- adversarial: the worst case of one reward call on pathological model text (issue 26): repeated letters, spaces,
  braces, nested boxes, dollar signs, equals signs, up to the length the verifier reads (`TAIL_CHARS`), and responses
  of the code verifier's size cap whose values all hash alike. Each shape is timed three ways: the parse alone in
  this process (what a worker spends on it), one `math_reward` call through the workers (bounded by the deadline),
  and the trainer-side work of that call (slicing the text).

```bash
PYTHONPATH=. python benchmarks/verifiers.py   # all; --part math, --part code or --part adversarial for one
PYTHONPATH=. python benchmarks/verifiers.py --part code --rounds 2 --mbpp_rounds 1
PYTHONPATH=. python benchmarks/verifiers.py --part adversarial
```
"""

import gzip
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from math_verify import parse, verify

from trl_kimi.verifiers import CodeVerifier, MathVerifier
from trl_kimi.verifiers._math_answers import _as_exact_number
from trl_kimi.verifiers.math_verifier import TAIL_CHARS, extract_answer, normalise_answer


DATA = Path(os.environ.get("TRL_KIMI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _load_items() -> tuple[list[str], list[str]]:
    """Completions and gold solutions: `\\boxed{answer}` vs MATH-500 solution, `#### final` vs GSM8K answer."""
    completions, solutions = [], []
    for line in (DATA / "math500" / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        completions.append("The final answer is $\\boxed{" + record["answer"] + "}$.")
        solutions.append(record["solution"])
    for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        completions.append("#### " + record["answer"].split("####")[-1].strip())
        solutions.append(record["answer"])
    return completions, solutions


def _naive(
    completions: list[str], solutions: list[str], warm: tuple[list[str], list[str]] = ([], [])
) -> tuple[float, list[float]]:
    """Seconds and rewards of `verify(parse(gold), parse(pred))` per item, serially in one process, after an untimed
    pass over the `warm` pairs (like `MathVerifier`'s long-lived workers, math-verify's ANTLR parser gets faster as its
    prediction cache fills)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for gold, pred in zip(warm[1], warm[0]):
        verify(parse(gold), parse(pred))
    start = time.perf_counter()
    rewards = [float(verify(parse(gold), parse(pred))) for gold, pred in zip(solutions, completions)]
    return time.perf_counter() - start, rewards


def _naive_cold(
    completions: list[str], solutions: list[str], warm: tuple[list[str], list[str]] = ([], [])
) -> tuple[float, list[float]]:
    # A fresh interpreter per measurement: math-verify and sympy memoise parses, and both runs share strings, so a
    # second run in the same process would be timed warm on these very strings while our workers start cold.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        return executor.submit(_naive, completions, solutions, warm).result()


def bench_math(num_workers: int = 2) -> dict:
    """Time naive math-verify and `MathVerifier` side by side on the same items; print and return the figures."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    completions, solutions = _load_items()
    n = len(completions)

    # (a) the naive way: parse both sides and verify, serially in one process.
    naive_s, naive = _naive_cold(completions, solutions)

    # (b) ours. Start-up (spawning workers, importing sympy + math-verify) is timed separately by a warm-up batch
    # whose items need a worker (no fast path), one per worker.
    verifier = MathVerifier(num_workers=num_workers)
    start = time.perf_counter()
    verifier(["\\boxed{x + 1}"] * num_workers, ["1 + x"] * num_workers)
    startup_s = time.perf_counter() - start
    start = time.perf_counter()
    ours, reasons = verifier.verify_batch(completions, solutions)
    ours_s = time.perf_counter() - start
    verifier.close()

    figures = {
        "items": n,
        "naive_s": naive_s,
        "ours_s": ours_s,
        "ours_startup_s": startup_s,
        "naive_items_per_s": n / naive_s,
        "ours_items_per_s": n / ours_s,
        "ours_items_per_s_with_startup": n / (ours_s + startup_s),
        "speedup": naive_s / ours_s,
        "speedup_with_startup": naive_s / (ours_s + startup_s),
        "naive_correct": int(sum(naive)),
        "ours_correct": int(sum(ours)),
        "both_correct": sum(a == b == 1.0 for a, b in zip(naive, ours)),
        "disagreements": [i for i, (a, b) in enumerate(zip(naive, ours)) if a != b],
        "ours_fast_path": sum(r in ("fast_path", "exact") for r in reasons),
        "ours_worker_items": sum(r not in ("fast_path", "exact") for r in reasons),
    }
    print(f"items: {n} (MATH-500 500 + GSM8K {n - 500}), {num_workers} workers")
    print(f"naive math-verify : {figures['naive_items_per_s']:8.1f} items/s ({naive_s:.2f} s)")
    print(f"MathVerifier      : {figures['ours_items_per_s']:8.1f} items/s ({ours_s:.2f} s) without start-up")
    print(
        f"MathVerifier      : {figures['ours_items_per_s_with_startup']:8.1f} items/s ({ours_s + startup_s:.2f} s) "
        f"with start-up ({startup_s:.2f} s)"
    )
    print(
        f"speed-up          : {figures['speedup']:.1f}x without start-up, {figures['speedup_with_startup']:.1f}x with"
    )
    print(
        f"correct           : naive {figures['naive_correct']}/{n}, ours {figures['ours_correct']}/{n}, both "
        f"{figures['both_correct']}; disagreements at {figures['disagreements']}"
    )
    print(
        f"ours decided without sympy (exact/fast path): {figures['ours_fast_path']}, "
        f"by math-verify: {figures['ours_worker_items']} (all in the workers)"
    )

    figures.update(bench_sympy_path(completions[:500], solutions[:500], num_workers))
    return figures


def _ours_math(
    completions: list[str], solutions: list[str], num_workers: int, warm: tuple[list[str], list[str]] = ([], [])
) -> tuple[float, list[float], list[str]]:
    """Seconds, rewards and reasons of a new `MathVerifier`, its pool started and run on the `warm` pairs first
    (untimed), its result cache emptied before the timed batch (the workers keep their parsed gold answers, as in
    training)."""
    verifier = MathVerifier(num_workers=num_workers)
    verifier._get_pool().wait_ready()  # every worker started (imports done), so start-up is not timed
    if warm[0]:
        verifier.verify_batch(*warm)
    verifier._cache.clear()
    start = time.perf_counter()
    rewards, reasons = verifier.verify_batch(completions, solutions)
    seconds = time.perf_counter() - start
    verifier.close()
    return seconds, rewards, reasons


def _plain_numbers(completion: str, solution: str) -> bool:
    """Both final answers are plain numbers (int, decimal, `a/b`, `\\frac{a}{b}`): no sympy needed by anyone."""
    answers = extract_answer(completion), extract_answer(solution, require_anchor=False)
    return all(a is not None and _as_exact_number(normalise_answer(a)) is not None for a in answers)


def _timed_rounds(timed: list, warm: list, num_workers: int, rounds: int) -> dict:
    """Both sides on `timed` after an untimed pass over `warm`, alternating for `rounds` rounds in new processes."""
    preds, golds = [c for c, _ in timed], [s for _, s in timed]
    warm_lists = ([c for c, _ in warm], [s for _, s in warm])
    ratios, rates = [], []
    for _ in range(rounds):
        naive_s, naive = _naive_cold(preds, golds, warm_lists)
        ours_s, ours, _ = _ours_math(preds, golds, num_workers, warm_lists)
        ratios.append(naive_s / ours_s)
        rates.append((len(timed) / naive_s, len(timed) / ours_s))
    ratio = sorted(ratios)[len(ratios) // 2]
    naive_rate, ours_rate = rates[ratios.index(ratio)]
    return {
        "items": len(timed),
        "naive_items_per_s": round(naive_rate, 1),
        "ours_items_per_s": round(ours_rate, 1),
        "ratio_median": round(ratio, 2),
        "ratios": [round(r, 2) for r in ratios],
        "naive_correct": int(sum(naive)),
        "ours_correct": int(sum(ours)),
    }


def bench_sympy_path(completions: list[str], solutions: list[str], num_workers: int = 2, rounds: int = 3) -> dict:
    """Throughput where sympy is needed: mismatched MATH-500 pairs whose answers are not both plain numbers.

    Each gold solution is paired with the answers of the next `k` records (`k = 1`, and `k = 4` like a GRPO group of
    four generations), respaced. The sympy path is every such pair that math-verify cannot settle by reading two plain
    numbers (one side is a closed form, an expression, a tuple, text...), fixed by the data, not by how `MathVerifier`
    routes it; the subset `MathVerifier` still sends to its workers is timed too ("worker items"). Both sides run in
    steady state (a training run keeps its workers): first an untimed pass over the pairs of records 250-499, then the
    timed pairs of records 0-249. They alternate for `rounds` rounds on the shared machine, each side in new
    processes every round; the median of the per-round ratios is reported.
    """
    figures = {}
    for k in (1, 4):
        # Predictions get spaces after `{` and `,` (the same LaTeX): a record's answer is also the next record's gold,
        # and neither side should reuse a parse of the identical string across the two roles.
        pairs = [
            (completions[(i + j) % 500].replace("{", "{ ").replace(",", " , "), solutions[i])
            for i in range(500)
            for j in range(1, k + 1)
        ]
        _, _, reasons = _ours_math([c for c, _ in pairs], [s for _, s in pairs], num_workers)
        sympy = [pair for pair in pairs if not _plain_numbers(*pair)]
        workers = [pair for pair, reason in zip(pairs, reasons) if reason in ("math_verify", "cached", "timeout")]
        for name, subset in (("sympy", sympy), ("workers", workers)):
            half = len([pair for pair in subset if pair[1] in solutions[:250]])
            result = figures[f"{name}_k{k}"] = _timed_rounds(subset[:half], subset[half:], num_workers, rounds)
            label = "sympy path" if name == "sympy" else "  of which math-verify items"
            print(
                f"{label}, {len(pairs)} mismatched MATH-500 pairs ({k} per gold), {len(subset)} items, timed "
                f"{result['items']} after {len(subset) - half} warm-up: naive {result['naive_items_per_s']:.1f} "
                f"items/s, ours {result['ours_items_per_s']:.1f} items/s, ratio {result['ratio_median']:.2f}x "
                f"(rounds {result['ratios']}); equal: naive {result['naive_correct']}, ours {result['ours_correct']}"
            )
        figures[f"sympy_k{k}"]["decided_in_parent"] = len(sympy) - len(workers)
    return figures


def _adversarial_texts(n: int) -> dict[str, str]:
    """Pathological completions of about `n` characters (the shapes of issue 26 and their relatives)."""
    prose = "because we multiplied the numbers together and then divided them evenly among the students "
    return {
        "box with prose": "\\boxed{5 " + (prose * (n // len(prose) + 1))[: n - 12] + "(see above)}",
        "box with a run of letters": "\\boxed{5 " + "a" * (n - 10) + "}",
        "anchor then letters": "The answer is 5 " + "a" * (n - 16),
        "anchor then spaces": "The answer is 5" + " " * (n - 16) + "x",
        "spaces then a number": " " * (n - 1) + "5",
        "run of letters": "a" * n,
        "words and spaces": "ab " * (n // 3),
        "non-word run": "5" + "!?" * (n // 2),
        "equals signs": "5" + " =" * (n // 2),
        "open braces": "\\boxed{" + "{" * (n - 8),
        "nested boxes": "\\boxed{" * (n // 8) + "5" + "}" * (n // 8),
        "boxes in a row": "\\boxed{5}" * (n // 9),
        "dollar signs": "$" * n,
        "inline math opens": "\\(" * (n // 2),
        "text macros": "\\boxed{5 " + "\\text{a}" * ((n - 10) // 9) + "}",
        "digit groups": "\\boxed{" + "1," * ((n - 8) // 2) + "1}",
        "sentences": "So 5. " * (n // 6),
    }


def _parse_seconds(text: str, gold: str) -> float:
    """Seconds a worker spends reading `text` before math-verify: extraction, normalisation, the grammar."""
    from trl_kimi.verifiers._math_answers import _decide_without_sympy, _normalise

    start = time.perf_counter()
    answer = extract_answer(text[-TAIL_CHARS:])
    if answer is not None:
        _decide_without_sympy(_normalise(extract_answer(gold, require_anchor=False)), _normalise(answer))
    return time.perf_counter() - start


def bench_adversarial(timeout: float = 10.0) -> dict:
    """Worst case of one reward call on pathological text, up to the length the verifiers read; see the module doc."""
    from trl_kimi.verifiers import _remote_tests

    results = {"math": {}, "code": {}}
    verifier = MathVerifier(timeout=timeout, num_workers=1)
    verifier._get_pool().wait_ready()
    print(f"math: one item per call, deadline {timeout:g} s, 1 worker; text cut to the last {TAIL_CHARS} characters")
    print(f"{'shape':28} {'chars':>8} {'parse s':>8} {'call s':>8} {'parent s':>9} reward reason")
    for n in (64, 1000, TAIL_CHARS, 1 << 20):
        for name, text in _adversarial_texts(n).items():
            if n > TAIL_CHARS and name not in ("box with prose", "run of letters", "spaces then a number"):
                continue  # longer texts are cut to the same tail: the parent's slice is all that grows
            parse_s = _parse_seconds(text, "5")
            verifier._cache.clear()
            start = time.perf_counter()
            prepared = verifier._prepare(text)
            parent_s = time.perf_counter() - start
            start = time.perf_counter()
            rewards, reasons = verifier.verify_batch([text], ["5"])
            call_s = time.perf_counter() - start
            results["math"][f"{name} ({len(text)})"] = {
                "parse_s": round(parse_s, 4),
                "call_s": round(call_s, 4),
                "parent_s": round(parent_s, 6),
                "reward": rewards[0],
            }
            del prepared
            print(
                f"{name:28} {len(text):8d} {parse_s:8.4f} {call_s:8.4f} {parent_s:9.6f} {rewards[0]:6.1f} "
                f"{reasons[0][:60]}"
            )
    verifier.close()

    # Code: decoding responses of the size cap in this (the trainer's) process.
    pipes = [os.pipe(), os.pipe()]
    channel = _remote_tests.Channel(pipes[0][1], pipes[0][0], pipes[1][0], time.monotonic() + 60, 1 << 20)
    p = (1 << 61) - 1  # integers that differ by multiples of 2**61 - 1 hash alike
    count = _remote_tests.MAX_RESPONSE_BYTES // 24
    responses = {
        "set of colliding ints": ["s", *(["i", hex(p * k)] for k in range(1, count))],
        "dict of colliding ints": ["d", *(x for k in range(1, count // 2) for x in (["i", hex(p * k)], 0))],
        "list of colliding ints": ["l", *(["i", hex(p * k)] for k in range(1, count))],
        "set of distinct ints": ["s", *range(count * 2)],
        "list of equal tuples": ["l", *(["t", 1, 2, 3] for _ in range(count // 2))],
        "largest integer allowed": ["i", "f" * (_remote_tests._MAX_INT_BITS // 4)],
    }
    nested = 0
    for _ in range(200):
        nested = ["t", nested]
    responses["nested tuples, depth 200"] = ["l", *([nested] * (count // 400))]
    print(f"code: decoding one response of up to {_remote_tests.MAX_RESPONSE_BYTES} bytes in the trainer's process")
    for name, data in responses.items():
        size = len(json.dumps(data))
        start = time.perf_counter()
        channel.failure = None
        try:
            channel.decode(data)
            verdict = "decoded"
        except _remote_tests.Violation as error:
            verdict = f"refused: {error}"
        seconds = time.perf_counter() - start
        results["code"][name] = {"bytes": size, "seconds": round(seconds, 4), "verdict": verdict}
        print(f"{name:28} {size:9d} bytes {seconds:8.4f} s  {verdict[:70]}")
    channel.close()
    for fd in (*pipes[0], *pipes[1]):
        os.close(fd)
    return results


TIMEOUT = 10.0


def _humaneval() -> list[dict]:
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def _mbpp() -> list[dict]:
    with open(DATA / "mbpp" / "mbpp.jsonl") as f:
        return [json.loads(line) for line in f]


def _bare(programs: list[str], parallel: int) -> tuple[float, list[bool]]:
    """No sandbox: each full script in a temp file, `python file.py`, exit status 0 = pass."""

    def run(source: str) -> bool:
        with tempfile.TemporaryDirectory() as workdir:
            path = os.path.join(workdir, "program.py")
            Path(path).write_text(source)
            try:
                completed = subprocess.run(
                    [sys.executable, path], cwd=workdir, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired:
                return False
            return completed.returncode == 0

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        passed = list(pool.map(run, programs))
    return time.perf_counter() - start, passed


def _ours_code(verifier: CodeVerifier, programs: list[str], **columns) -> tuple[float, list[float], float]:
    """Seconds, rewards and the fraction of rows whose tests could not run (bad rows)."""
    metrics = {}
    start = time.perf_counter()
    rewards = verifier(programs, log_metric=metrics.__setitem__, **columns)
    return time.perf_counter() - start, rewards, metrics["code_verifier/bad_rows"]


def _alternate(rounds: int, bare, ours) -> tuple[list[float], list[float], list, list]:
    """Runs both sides `rounds` times each, alternating which goes first (the machine is shared: load drifts)."""
    bare_times, ours_times, bare_result, ours_result = [], [], None, None
    for round_index in range(rounds):
        for side in ("bare", "ours") if round_index % 2 == 0 else ("ours", "bare"):
            if side == "bare":
                seconds, bare_result = bare()
                bare_times.append(seconds)
            else:
                seconds, *ours_result = ours()
                ours_times.append(seconds)
    return bare_times, ours_times, bare_result, ours_result


def bench_code(rounds: int = 2, mbpp_rounds: int = 1) -> dict:
    """
    Times a bare subprocess harness and `CodeVerifier` on HumanEval (164) and MBPP (974) references, alternating the
    two sides `rounds` (`mbpp_rounds`) times; the ratio is total sandboxed time over total bare time.
    """
    verifier = CodeVerifier(timeout=TIMEOUT)
    parallel = verifier.max_parallel
    results = {"parallel": parallel, "sandbox": verifier.sandbox, "memory_accounting": verifier.memory_accounting}

    humaneval = _humaneval()
    programs = [p["prompt"] + p["canonical_solution"] for p in humaneval]
    scripts = [prog + "\n" + p["test"] + "\n" + f"check({p['entry_point']})\n" for prog, p in zip(programs, humaneval)]
    columns = {
        "test": [p["test"] for p in humaneval],
        "entry_point": [p["entry_point"] for p in humaneval],
        "prompts": [p["prompt"] for p in humaneval],  # the prompt's helpers are bound from it
    }
    bare_times, ours_times, bare_passed, (rewards, bad_rows) = _alternate(
        rounds, lambda: _bare(scripts, parallel), lambda: _ours_code(verifier, programs, **columns)
    )
    results["humaneval"] = {
        "n": len(humaneval),
        "bare_s": [round(t, 2) for t in bare_times],
        "bare_passed": sum(bare_passed),
        "ours_s": [round(t, 2) for t in ours_times],
        "ours_passed": int(sum(rewards)),
        "bad_rows": round(bad_rows * len(humaneval)),
        "ratio": round(sum(ours_times) / sum(bare_times), 3),
        "failed": [p["task_id"] for p, r in zip(humaneval, rewards) if r != 1.0],
    }
    print(json.dumps({"humaneval": results["humaneval"]}), flush=True)

    mbpp = _mbpp()
    scripts = [r["code"] + "\n" + r["test_setup_code"] + "\n" + "\n".join(r["test_list"]) + "\n" for r in mbpp]
    columns = {"test_list": [r["test_list"] for r in mbpp], "test_setup_code": [r["test_setup_code"] for r in mbpp]}
    bare_times, ours_times, bare_passed, (rewards, bad_rows) = _alternate(
        mbpp_rounds,
        lambda: _bare(scripts, parallel),
        lambda: _ours_code(verifier, [r["code"] for r in mbpp], **columns),
    )
    results["mbpp"] = {
        "n": len(mbpp),
        "bare_s": [round(t, 2) for t in bare_times],
        "bare_passed": sum(bare_passed),
        "ours_s": [round(t, 2) for t in ours_times],
        "ours_passed": int(sum(rewards)),
        "bad_rows": round(bad_rows * len(mbpp)),
        "ratio": round(sum(ours_times) / sum(bare_times), 3),
        "failed_ours": [r["task_id"] for r, x in zip(mbpp, rewards) if x != 1.0],
        "failed_bare": [r["task_id"] for r, x in zip(mbpp, bare_passed) if not x],
    }
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["math", "code", "adversarial", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=2, help="alternating HumanEval rounds per side (code part)")
    parser.add_argument("--mbpp_rounds", type=int, default=1, help="alternating MBPP rounds per side (code part)")
    arguments = parser.parse_args()
    part = arguments.part
    logging.basicConfig(level=logging.WARNING)
    if part in ("math", "all"):
        print("== math ==")
        bench_math()
    if part in ("code", "all"):
        print("== code ==")
        print(json.dumps(bench_code(arguments.rounds, arguments.mbpp_rounds), indent=1))
    if part in ("adversarial", "all"):
        print("== adversarial ==")
        bench_adversarial()
