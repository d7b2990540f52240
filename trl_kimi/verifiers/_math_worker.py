"""Subprocess worker pool of the math verifier: fresh interpreters that read model text and run math-verify, with a
hard per-item deadline.

Every parse of model text happens here, never in the trainer's process: extraction, normalisation, the grammar and
math-verify all run under the item's deadline, past which the worker is SIGKILLed (a regular expression stuck in C
code cannot be interrupted otherwise).

The verifier's modules are loaded in the worker from their files into a package of their own (`_trl_kimi_math`), not
as `trl_kimi...`, so a worker never imports torch/trl through `trl_kimi/__init__.py`: start-up costs only sympy +
math-verify. This module and the rule modules it loads import nothing but the standard library.
"""

import ctypes
import itertools
import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any


logger = logging.getLogger(__name__)


_PR_SET_PDEATHSIG = 1
_WORKER_PARSE_CACHE_SIZE = 4096
_CRASH_RETRIES = 1
_AFFINITY_SCAN = 64  # pending items scanned for one with the worker's last gold answer

_WORKER_BOOTSTRAP = """
import importlib, os, sys, types
package = types.ModuleType("_trl_kimi_math")
package.__path__ = [os.path.dirname(sys.argv[1])]
sys.modules["_trl_kimi_math"] = package
importlib.import_module("_trl_kimi_math._math_worker")._worker_main(int(sys.argv[2]), float(sys.argv[3]))
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
    """Serve `{"gold": solution, "text": completion}` requests from stdin, one JSON line each, until EOF; each reply
    is `{"ok": bool, "reason": str}` (the reasons of `MathVerifier.verify_batch`)."""
    _die_with_parent(parent_pid)
    # The protocol owns the original stdout; anything else printed (library warnings) goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="ascii")
    os.dup2(2, 1)
    from math_verify import LatexExtractionConfig, parse, verify

    from ._math_answers import (
        _THINK_CLOSE,
        _THINK_OPEN,
        _decide_without_sympy,
        _looks_like_interval,
        _normalise,
        as_tuple_if_bare_list,
        extract_answer,
    )

    # The parent sends extracted answers, wrapped here in `\boxed{}`: the LaTeX extractor alone finds them, and
    # skipping math-verify's second (plain-expression) extractor saves time; it stays the fallback when LaTeX fails.
    latex_only = [LatexExtractionConfig(boxed_match_priority=0)]

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
            parsed = parse("\\boxed{" + answer + "}", latex_only, parsing_timeout=seconds)
            if not parsed:
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

    golds: dict = {}  # gold solution -> its normalised answer (a gold is read once per generation of its prompt)

    def handle(request: dict) -> dict:
        solution, text = request["gold"], request["text"]
        gold_answer = golds.get(solution)
        if gold_answer is None:
            answer = extract_answer(solution, require_anchor=False)
            if answer is None:
                return {"ok": False, "reason": f"error: no gold answer in solution {solution[:80]!r}"}
            if len(golds) >= _WORKER_PARSE_CACHE_SIZE:
                golds.clear()
            gold_answer = golds[solution] = _normalise(answer)
        pred_answer = extract_answer(text)
        if pred_answer is None:
            think_open = _THINK_OPEN in text and text.rfind(_THINK_CLOSE) < text.rfind(_THINK_OPEN)
            return {
                "ok": False,
                "reason": "no_answer: " + ("unfinished <think> block" if think_open else "no (complete) answer"),
            }
        pred_answer = _normalise(pred_answer)
        decision = _decide_without_sympy(gold_answer, pred_answer)
        if decision is not None:
            return {"ok": decision[0], "reason": decision[1]}
        gold_text, pred_text = as_tuple_if_bare_list(gold_answer.text, pred_answer.text)
        intervals = _looks_like_interval(gold_answer.text) or _looks_like_interval(pred_answer.text)
        return verify_pair(gold_text, pred_text, intervals)

    def verify_pair(gold_text: str, pred_text: str, intervals: bool) -> dict:
        gold, gold_timed_out = timed(parse_answer, gold_text)
        if not gold:
            return {"ok": False, "reason": "timeout" if gold_timed_out else "error: gold answer unparsable"}
        pred, pred_timed_out = timed(parse_answer, pred_text)
        if not pred:
            return {"ok": False, "reason": "timeout" if pred_timed_out else "unparsable"}
        ok, timed_out = timed(verify, gold, pred, timeout_seconds=seconds, allow_set_relation_comp=intervals)
        return {"ok": bool(ok), "reason": "timeout" if timed_out and not ok else "math_verify"}

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
        self.last_gold: str | None = None
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

    def wait_ready(self) -> None:
        """Block until every worker has imported math-verify (benchmarks time the pool without its start-up)."""
        for worker in self.workers:
            if not worker.ready:
                line = worker.process.stdout.readline()  # bounded by the worker's own start-up; EOF if it died
                worker.ready, worker.deadline = line == "ready\n", math.inf

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

    def _send(self, worker: _Worker, pending: deque, requests: list[dict]) -> None:  # requests: {"gold", "text"}
        # Prefer an item with the gold answer this worker parsed last: its parse is cached there (a GRPO group is one
        # gold answer against several generations). A short scan keeps this O(1) per item.
        index = pending[0]
        for candidate in itertools.islice(pending, _AFFINITY_SCAN):
            if requests[candidate]["gold"] == worker.last_gold:
                index = candidate
                break
        pending.remove(index)
        try:
            worker.process.stdin.write(json.dumps(requests[index]) + "\n")
            worker.process.stdin.flush()
        except OSError:  # died between items: the item never started, so it goes back in the queue
            pending.appendleft(index)
            return
        worker.item, worker.deadline, worker.last_gold = (
            index,
            time.monotonic() + self.timeout,
            requests[index]["gold"],
        )

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
