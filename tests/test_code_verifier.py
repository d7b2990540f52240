import gzip
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.utils import SHARED_DATA  # noqa: E402
from trl_kimi.verifiers import code_verifier
from trl_kimi.verifiers.code_verifier import CodeVerifier, code_reward


DATA = SHARED_DATA
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (`apt-get install -y bubblewrap`) is needed to sandbox code"
)
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
CORRECT_ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier(timeout=5.0)


def _sleepers() -> list[str]:
    """Host processes whose command line is `sleep 1000`/`sleep 1001` (what the containment programs leave)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline in (b"sleep\x001000\x00", b"sleep\x001001\x00"):
                found.append(entry)
    return found


@needs_bwrap
def test_humaneval_and_mbpp_conventions(verifier):
    he_test = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"
    completions = [
        "```python\ndef total(xs):\n    return sum(xs)\n```",  # fenced, correct
        "def total(xs):\n    return sum(xs) + 1\n",  # no fence, wrong
        [
            {"role": "user", "content": "sum?"},
            {"role": "assistant", "content": "```py\ndef total(xs):\n    return sum(xs)\n```"},
        ],
        "```python\ndef total(xs):\n    return 0\n```\nfixed:\n```python\ndef total(xs):\n    return sum(xs)\n```",  # last wins
        "```python\ndef total(xs):\n    return sum(xs)\n```\n```python\ndef total(xs):\n    return sum(xs)",  # truncated
        "",  # empty
        None,  # missing
    ]
    rewards = verifier(completions, test=[he_test] * 7, entry_point=["total"] * 7)
    assert rewards == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert all(type(r) is float for r in rewards)

    # MBPP: `test_setup_code` runs between the program and the asserts; rows may mix both conventions.
    mbpp = verifier(
        [
            CORRECT_ADD,
            "def add(a, b):\n    return a * b\n",
            CORRECT_ADD,
            "```python\ndef total(xs): return sum(xs)\n```",
        ],
        test=[None, None, None, he_test],
        entry_point=[None, None, None, "total"],
        test_list=[ADD_TESTS, ADD_TESTS, ["assert add(X, 1) == 3"], None],
        test_setup_code=["", "", "X = 2", ""],
    )
    assert mbpp == [1.0, 0.0, 1.0, 1.0]


@needs_bwrap
def test_reward_hacks_score_zero(verifier, tmp_path):
    harness = Path(code_verifier.__file__).with_name("_sandbox_harness.py")
    harness_before = harness.read_bytes()
    wrong = "def add(a, b):\n    return 0\n"
    # Patches of the program's own interpreter (builtins, `math`, tracing) cannot reach the tests, which run in the
    # verifier's process: with a wrong `add` they must score 0 (with a right one they would honestly score 1).
    hacks = {
        "os._exit at top level": "import os\nos._exit(0)\n",
        "sys.exit at top level": "import sys\nsys.exit(0)\n",
        "os._exit in the function": "import os\ndef add(a, b):\n    os._exit(0)\n",
        "sys.exit in the function": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
        "__eq__ always True": "class Any:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Any()\n",
        "int subclass": "class I(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return I(0)\n",
        "evil object in a list": "class A:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return [A()]\n",
        "read tests from stdin": "import sys\ndata = sys.stdin.read()\nexec(data)\n" + wrong,
        "input() at top level": "x = input()\n" + CORRECT_ADD,
        "edit the harness": f"try:\n    open({str(harness)!r}, 'w').write('')\nexcept OSError:\n    pass\n" + wrong,
        "print a fake token": "print('PASS ' + '0' * 32)\nimport os\nos._exit(0)\n",
        "patch builtins.abs": "import builtins\nbuiltins.abs = lambda x: 0\n" + wrong,
        "patch builtins.isinstance": "import builtins\nbuiltins.isinstance = lambda *a: True\n" + wrong,
        "patch builtins.print": "import builtins\nbuiltins.print = lambda *a: None\n" + wrong,
        "patch sys.exit": "import sys\nsys.exit = lambda *a: None\n" + wrong,
        "patch math.isclose": "import math\nmath.isclose = lambda *a, **k: True\n" + wrong,
        "settrace": "import sys\nsys.settrace(lambda *a: None)\n" + wrong,
        "patch in a thread": "import threading, time\nthreading.Thread(target=time.sleep, args=(3,)).start()\n"
        + wrong,
        "patch during the tests": "import builtins\ndef add(a, b):\n    builtins.abs = lambda x: 0\n    return 0\n",
        "swallowed guard error": "class A:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return A()\n",
    }
    programs = list(hacks.values())
    tests = [ADD_TESTS] * len(hacks)
    # The exception of the guard is swallowed by the test itself: the run must still fail.
    tests[-1] = ["try:\n    assert add(1, 2) == 3\nexcept TypeError:\n    pass"]
    rewards = verifier(programs + [CORRECT_ADD], test_list=tests + [ADD_TESTS])
    passed = [name for name, reward in zip(hacks, rewards) if reward != 0.0]
    assert passed == [], f"reward hacks that scored: {passed}"
    assert rewards[-1] == 1.0  # control: the honest program passes in the same batch
    assert harness.read_bytes() == harness_before

    # A patched `unittest` is evicted before the tests: they import a fresh one.
    unittest_hack = "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n" + wrong
    unittest_tests = ["import unittest", "unittest.TestCase().assertEqual(add(1, 2), 3)"]
    assert verifier([unittest_hack, CORRECT_ADD], test_list=[unittest_tests] * 2) == [0.0, 1.0]


@needs_bwrap
def test_containment(verifier):
    outside_dir = Path(tempfile.mkdtemp(dir="/var/tmp"))  # not under /tmp, which the sandbox replaces
    try:
        victim = outside_dir / "victim.txt"
        victim.write_text("keep me")
        created = outside_dir / "created.txt"
        host_tmp_file = Path(f"/tmp/trl_kimi_escape_{os.getpid()}")
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            programs = {
                "files": (
                    "import os\n"
                    f"for action in (lambda: os.remove({str(victim)!r}), lambda: open({str(created)!r}, 'w'),\n"
                    f"               lambda: open({str(host_tmp_file)!r}, 'w').write('x')):\n"
                    "    try:\n        action()\n    except OSError:\n        pass\n" + CORRECT_ADD
                ),
                "sleepers": (
                    "import os, subprocess\n"
                    "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
                    "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '1001'])\n"
                    "    os._exit(0)\n" + CORRECT_ADD
                ),
                "memory hog": "x = bytearray(8 * 1024 ** 3)\n" + CORRECT_ADD,
                "network": (
                    "import socket\ndef add(a, b):\n    try:\n"
                    f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
                    "        return 'connected'\n    except OSError:\n        return a + b\n"
                ),
                "huge stdout": "while True:\n    print('x' * 100000)\n",
                "non-UTF-8 output": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80' * 100)\n" + CORRECT_ADD,
            }
            start = time.monotonic()
            rewards = verifier(list(programs.values()), test_list=[ADD_TESTS] * len(programs))
            elapsed = time.monotonic() - start
        assert dict(zip(programs, rewards)) == {
            "files": 1.0,  # the program ran, but its writes and deletes outside its temp dir failed
            "sleepers": 1.0,
            "memory hog": 0.0,  # MemoryError from RLIMIT_AS, quickly
            "network": 1.0,  # no network in the sandbox: the connection failed
            "huge stdout": 0.0,  # capped: the run is stopped
            "non-UTF-8 output": 1.0,
        }
        assert elapsed < 5.0, f"containment batch took {elapsed:.1f}s"
        assert victim.read_text() == "keep me"
        assert not created.exists()
        assert not host_tmp_file.exists()
        assert _sleepers() == []
    finally:
        shutil.rmtree(outside_dir)


@needs_bwrap
def test_timeouts_and_fork_bomb():
    verifier = CodeVerifier(timeout=2.0, max_processes=32)
    fork_bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    metrics = {}
    start = time.monotonic()
    rewards = verifier(
        ["while True:\n    pass\n", fork_bomb, "import time\ntime.sleep(60)\n", CORRECT_ADD],
        test_list=[ADD_TESTS] * 4,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    elapsed = time.monotonic() - start
    assert rewards == [0.0, 0.0, 0.0, 1.0]
    assert elapsed < 8.0, f"timeouts took {elapsed:.1f}s"  # three 2 s timeouts on two workers
    assert metrics["code_verifier/timeouts"] == 0.75
    assert metrics["code_verifier/sandbox_errors"] == 0.0
    # RLIMIT_NPROC applies inside the sandbox (as root too, through the dropped uid): forking stops below the limit.
    count_forks = (
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\ndef add(a, b):\n    return n\n"
    )
    assert verifier([count_forks], test_list=[["assert 0 < add(0, 0) < 32"]]) == [1.0]
    # The host is fine: it still starts processes, and none of the bomb's survived.
    assert verifier([CORRECT_ADD], test_list=[ADD_TESTS]) == [1.0]
    bomb_survivors = [
        entry
        for entry in os.listdir("/proc")
        if entry.isdigit()
        and os.path.exists(f"/proc/{entry}/status")
        and "trl_kimi" not in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        and b"_sandbox_harness" in Path(f"/proc/{entry}/cmdline").read_bytes()
    ]
    assert bomb_survivors == []


@needs_bwrap
def test_reference_solutions_pass(verifier):
    if not (DATA / "humaneval").is_dir():
        pytest.skip(
            f"{DATA} has no HumanEval: the public data beside the checkout (../shared/data), or set TRL_KIMI_DATA"
        )
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        problems = [json.loads(line) for line in f][:20]
    rewards = verifier(
        [p["prompt"] + p["canonical_solution"] for p in problems],
        test=[p["test"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
    )
    assert rewards == [1.0] * 20
    with open(DATA / "mbpp" / "mbpp.jsonl") as f:
        records = [json.loads(line) for line in f][10:30]  # task_ids 11-30, the start of the test split
    rewards = verifier(
        [r["code"] for r in records],
        test_list=[r["test_list"] for r in records],
        test_setup_code=[r["test_setup_code"] for r in records],
    )
    assert rewards == [1.0] * 20


@needs_bwrap
def test_code_reward_and_pickling():
    assert code_reward([CORRECT_ADD, None], test_list=[ADD_TESTS] * 2) == [1.0, 0.0]
    verifier = pickle.loads(pickle.dumps(CodeVerifier(timeout=3.0)))
    assert verifier.__name__ == "code_reward"
    assert verifier([CORRECT_ADD], test_list=[ADD_TESTS]) == [1.0]


def test_missing_columns_raise():
    verifier = CodeVerifier.__new__(CodeVerifier)  # no sandbox needed: the columns are checked first
    verifier.__name__ = "code_reward"
    with pytest.raises(ValueError, match=r"`test_list` column.*row 0 has neither.*other columns: \['solution'\]"):
        verifier([CORRECT_ADD], solution=["3"])
    with pytest.raises(ValueError, match="Python identifier"):
        verifier([CORRECT_ADD], test=["def check(c): pass"], entry_point=["not valid"])


def test_sandbox_none_warns_and_still_runs():
    with pytest.warns(UserWarning, match="without namespaces"):
        verifier = CodeVerifier(timeout=5.0, sandbox="none")
    rewards = verifier(
        [CORRECT_ADD, "import os\nos._exit(0)\n", "def add(a, b):\n    return 1\n"], test_list=[ADD_TESTS] * 3
    )
    assert rewards == [1.0, 0.0, 0.0]


def test_missing_bwrap_raises(monkeypatch):
    monkeypatch.setattr(code_verifier.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install -y bubblewrap.*sandbox=\"none\""):
        CodeVerifier()
    # bwrap present but unable to create namespaces: the probe run fails.
    monkeypatch.setattr(code_verifier.shutil, "which", lambda name: "/bin/false")
    monkeypatch.setattr(CodeVerifier, "_build_bwrap_arguments", lambda self, bwrap: [bwrap])
    with pytest.raises(RuntimeError, match="failed to run a trivial program"):
        CodeVerifier()


def test_bad_options_raise():
    with pytest.raises(ValueError, match="sandbox must be"):
        CodeVerifier(sandbox="docker")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        CodeVerifier(timeout=0)
