"""Issue 26 against `code_reward`: the prompt's helpers are the prompt's, one harness for every row (callbacks for the
tests' functions, iterators and ranges), any StopIteration from the program fails, responses are decoded in bounded
time, bad rows are warned about, and no user namespace can be made in the sandbox (as root and as another uid)."""

import json
import logging
import os
import shutil
import subprocess
import time

import pytest

from tests.test_code_reward_hacks import _standalone
from trl_kimi.verifiers import _remote_tests
from trl_kimi.verifiers.code_verifier import CodeVerifier, _seccomp_filter


needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (`apt-get install -y bubblewrap`) is needed to sandbox code"
)


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier(timeout=10.0)


# HumanEval/50-like: the tests call the prompt's `encode_shift`.
PROMPT = (
    "def encode_shift(s: str):\n    return ''.join(chr((ord(c) - 97 + 5) % 26 + 97) for c in s)\n\n\n"
    'def decode_shift(s: str):\n    """Inverse of encode_shift."""\n'
)
SHIFT_TEST = (
    "def check(candidate):\n    for s in ['abc', 'hello', 'xyz']:\n        assert candidate(encode_shift(s)) == s\n"
)
RIGHT_SHIFT = PROMPT + "    return ''.join(chr((ord(c) - 97 - 5) % 26 + 97) for c in s)\n"
IDENTITY_PAIR = "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n"


@needs_bwrap
def test_prompt_helpers_are_the_prompts(verifier):
    chat = [{"role": "user", "content": f"Complete this function:\n```python\n{PROMPT}```"}]
    unfenced = [{"role": "user", "content": f"Complete this function.\n\n{PROMPT}"}]
    rewards = verifier(
        [RIGHT_SHIFT, IDENTITY_PAIR, IDENTITY_PAIR, "```python\n" + RIGHT_SHIFT + "```", IDENTITY_PAIR],
        test=[SHIFT_TEST] * 5,
        entry_point=["decode_shift"] * 5,
        prompts=[PROMPT, PROMPT, chat, chat, unfenced],
    )
    assert rewards == [1.0, 0.0, 0.0, 1.0, 0.0]
    # A prompt helper that calls the entry point calls the program's.
    prompt = "def twice(x):\n    return 2 * half(x)\n\ndef half(x):\n    pass\n"
    test = "def check(candidate):\n    assert twice(8) == 8\n"
    rewards = verifier(
        ["def half(x):\n    return x // 2\n", "def half(x):\n    return x\ndef twice(x):\n    return 8\n"],
        test=[test] * 2,
        entry_point=["half"] * 2,
        prompts=[prompt] * 2,
    )
    assert rewards == [1.0, 0.0]


@needs_bwrap
def test_one_harness_for_lambdas_ranges_generators(verifier):
    rows = [
        ["assert apply(lambda x: x * 3, 2) == 6", "assert apply(abs, -4) == 4"],
        ["assert total(range(5)) == 10", "assert total(range(10**18, 10**18 + 2)) == 2 * 10**18 + 1"],
        ["assert total(x * x for x in range(4)) == 14", "assert total(map(int, '123')) == 6"],
        ["assert apply(lambda x: apply(lambda y: y + 1, x), 1) == 2"],  # a callback that calls the program again
    ]
    right = [
        "def apply(f, x):\n    return f(x)\n",
        "def total(xs):\n    return sum(xs)\n",
        "def total(xs):\n    return sum(xs)\n",
        "def apply(f, x):\n    return f(x)\n",
    ]
    wrong = [
        "def apply(f, x):\n    return 6\n",
        "def total(xs):\n    return 10\n",
        "def total(xs):\n    return 14\n",
        "def apply(f, x):\n    return f\n",  # a handle to the tests' function is not data
    ]
    metrics = {}
    rewards = verifier(right + wrong, test_list=rows + rows, log_metric=metrics.__setitem__)
    assert rewards == [1.0] * 4 + [0.0] * 4
    assert metrics["code_verifier/bad_rows"] == 0.0
    # An object of the tests' own class cannot cross: that row scores 0 and is warned about, never run in-process.
    tests = ["class Box:\n    pass", "assert size(Box()) == 0"]
    assert verifier(["def size(box):\n    return 0\n"], test_list=[tests]) == [0.0]


@needs_bwrap
def test_stop_iteration_from_the_program_fails(verifier):
    he_test = (
        "def check(candidate):\n    assert all(map(candidate, [1, 2, 3]))\n    assert any(candidate(x) for x in [4])\n"
    )
    programs = ["def positive(x):\n    return x > 0\n", "def positive(x):\n    raise StopIteration\n"]
    assert verifier(programs, test=[he_test] * 2, entry_point=["positive"] * 2) == [1.0, 0.0]
    mbpp = ["assert all(map(positive, [1, 2]))", "assert list(filter(positive, [1, -1])) == [1]"]
    assert verifier(programs, test_list=[mbpp] * 2) == [1.0, 0.0]
    # Any exception escaping the program fails the run, even one the tests catch (none of HumanEval's or MBPP's tests
    # expects one); the tests still see it raised as the built-in exception.
    swallows = ["try:\n    positive(0)\nexcept Exception:\n    pass", "assert positive(1)"]
    raising = ["def positive(x):\n    if x <= 0:\n        raise ValueError(x)\n    return True\n", programs[0]]
    assert verifier(raising, test_list=[swallows] * 2) == [0.0, 1.0]
    seen = ["try:\n    positive(0)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass"]
    assert verifier(raising[:1], test_list=[seen]) == [0.0]


def test_responses_are_decoded_in_bounded_time():
    pipes = [os.pipe(), os.pipe()]
    channel = _remote_tests.Channel(pipes[0][1], pipes[0][0], pipes[1][0], time.monotonic() + 60, 1 << 20)
    p = (1 << 61) - 1  # integers that differ by multiples of 2**61 - 1 hash alike
    try:
        for tag in ("s", "l", "t", "f"):
            with pytest.raises(_remote_tests.Violation, match="one hash"):
                channel.decode([tag, *(["i", hex(p * k)] for k in range(1, 5000))])
            channel.failure = None
        with pytest.raises(_remote_tests.Violation, match="bits"):
            channel.decode(["i", "f" * 40000])
        channel.failure = None
        nested = 0
        for _ in range(150):
            nested = ["t", nested]
        with pytest.raises(_remote_tests.Violation, match="nested"):
            channel.decode(["l", *([nested] * 1000)])
        channel.failure = None
        # Honest data: repeated values, distinct small ints, the int/float/bool that hash alike, nan.
        value = channel.decode(["l", *([["t", 1, 2]] * 1000), ["s", *range(10000)], ["s", 1, 1.0, True], float("nan")])
        assert len(value[1000]) == 10000 and value[1001] == {1}
    finally:
        channel.close()
        for fd in (*pipes[0], *pipes[1]):
            os.close(fd)


@needs_bwrap
def test_colliding_hashes_score_zero_quickly():
    program = "def f(n):\n    return {(2**61 - 1) * k for k in range(1, n)}\n"
    verifier = CodeVerifier(timeout=5.0)
    start = time.monotonic()
    assert verifier([program], test_list=[["assert len(f(50000)) == 49999"]]) == [0.0]
    assert time.monotonic() - start < 30.0  # generous: the response is refused before any set is built


@needs_bwrap
def test_bad_rows_are_warned_once_per_column(verifier, caplog):
    program = "def f(x):\n    return x\n"
    with caplog.at_level(logging.WARNING, logger="trl_kimi.verifiers.code_verifier"):
        rewards = verifier(
            [program] * 4,
            test_list=["assert f(1) == 1", "assert f(2) == 2", ["assert f(1) == 1"], ["assert f(1) ==="]],
        )
    assert rewards == [0.0, 0.0, 1.0, 0.0]
    messages = [record.getMessage() for record in caplog.records]
    as_str = [m for m in messages if "is a str" in m]
    assert len(as_str) == 1 and "row 0" in as_str[0] and "dataset.map" in as_str[0]
    assert len([m for m in messages if "does not compile" in m and "row 3" in m]) == 1


# Makes a user namespace (to be root in it) and mounts a 1 GiB tmpfs there, then writes 100 MiB into it; `escaped()`
# says how far it got, `written()` how much it wrote anywhere (its /tmp is the fallback).
ESCAPE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
def _try():
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        return "unshare refused: " + os.strerror(ctypes.get_errno()), "/tmp"
    os.makedirs("/tmp/big", exist_ok=True)
    if libc.mount(b"none", b"/tmp/big", b"tmpfs", 0, b"size=1g") != 0:
        return "mount refused: " + os.strerror(ctypes.get_errno()), "/tmp"
    return "mounted", "/tmp/big"
STATE, WHERE = _try()
TOTAL = 0
try:
    with open(WHERE + "/fill", "wb") as f:
        for _ in range(100):
            f.write(b"x" * 2**20)
            f.flush()
            TOTAL += 2**20
except OSError:
    pass
def escaped():
    return STATE
def written():
    return TOTAL
"""
ESCAPE_TESTS = ["assert escaped().startswith('unshare refused')", "assert written() <= 32 * 2**20"]


@needs_bwrap
def test_no_user_namespace_in_the_sandbox():
    assert _seccomp_filter() is not None or os.uname().machine not in ("x86_64", "aarch64")
    verifier = CodeVerifier(timeout=10.0, disk_limit_mb=32)
    assert verifier([ESCAPE], test_list=[ESCAPE_TESTS]) == [1.0]
    # The same through the other namespace calls: `clone` with CLONE_NEWUSER, and `unshare -U` from util-linux.
    clone = (
        "import subprocess\n"
        "def via_binary():\n"
        "    return subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode\n"
    )
    if shutil.which("unshare"):
        assert verifier([clone], test_list=[["assert via_binary() != 0"]]) == [1.0]


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid (as non-root the test above is)")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs `setpriv` (util-linux) to run as another uid")
def test_no_user_namespace_as_another_user():
    python = shutil.which("python3", path="/usr/bin:/bin")
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    if (
        python is None
        or subprocess.run([*nobody, python, "-c", "import sys; assert sys.version_info >= (3, 11)"]).returncode
    ):
        pytest.skip("no Python >= 3.11 under /usr/bin that uid 65534 can run")
    if subprocess.run([*nobody, "bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"]).returncode:
        pytest.skip("unprivileged user namespaces are disabled here: bwrap cannot run as a non-root user")
    result = _standalone(
        python,
        {
            "verifier": {"timeout": 10.0, "memory_limit_mb": 256, "disk_limit_mb": 32},
            "completions": [ESCAPE],
            "columns": {"test_list": [ESCAPE_TESTS]},
        },
        prefix=nobody,
    )
    assert result["rewards"] == [1.0], json.dumps(result)
