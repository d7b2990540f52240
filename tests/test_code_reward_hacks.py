"""Reward hacks against `code_reward` (issue 19): wrong programs that tried to forge a verdict score 0, right ones 1,
and the sandbox keeps host files, host sockets, memory and disk out of a run's reach (as root and as another uid)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from trl_kimi.verifiers.code_verifier import CodeVerifier


needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (`apt-get install -y bubblewrap`) is needed to sandbox code"
)
STANDALONE = Path(__file__).parent / "scripts" / "code_reward_standalone.py"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
CORRECT_ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return 0\n"
ALWAYS_EQUAL = (
    "class AlwaysEqual:\n"
    "    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n"
    "    __hash__ = object.__hash__\n"
    "    def __bool__(self):\n        return True\n"
)
SOLUTION_TESTS = ["assert Solution().add(1, 2) == 3", "assert Solution().add(-1, 1) == 0"]
COUNTS_TESTS = ["assert counts('aab')['a'] == 2", "assert counts('aab')['b'] == 1"]
HE_ADD = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"

# name: (wrong program, tests). The tests are MBPP `test_list` lines, or a HumanEval `test` (str, entry point `add`).
HACKS = {
    "class whose __new__ returns an always-equal object": (
        ALWAYS_EQUAL + "class add:\n    def __new__(cls, *args):\n        return AlwaysEqual()\n",
        ADD_TESTS,
    ),
    "the same, HumanEval convention": (
        ALWAYS_EQUAL + "class add:\n    def __new__(cls, *args):\n        return AlwaysEqual()\n",
        HE_ADD,
    ),
    "metaclass __call__": (
        ALWAYS_EQUAL
        + "class Meta(type):\n    def __call__(cls, *args):\n        return AlwaysEqual()\n"
        + "class add(metaclass=Meta):\n    pass\n",
        HE_ADD,
    ),
    "Solution().method returning an always-equal object": (
        ALWAYS_EQUAL + "class Solution:\n    def add(self, a, b):\n        return AlwaysEqual()\n",
        SOLUTION_TESTS,
    ),
    "defaultdict of always-equal objects read by key": (
        ALWAYS_EQUAL + "from collections import defaultdict\ndef counts(s):\n    return defaultdict(AlwaysEqual)\n",
        COUNTS_TESTS,
    ),
    "program-level def abs": (
        "def abs(x):\n    return 0\ndef half(x):\n    return 0\n",
        ["assert abs(half(3) - 1.5) < 1e-9"],
    ),
    "program-level def set": (
        "def set(x):\n    return 0\ndef pair(x):\n    return []\n",
        ["assert set(pair(1)) == set([1, 2])"],
    ),
    "fake math global": (
        "class math:\n    isclose = staticmethod(lambda *args, **kwargs: True)\ndef half(x):\n    return 0\n",
        ["assert math.isclose(half(3), 1.5)"],
    ),
    "__builtins__ swapped for a dict whose __import__ fakes math": (
        "import builtins\n"
        "class FakeMath:\n    isclose = staticmethod(lambda *args, **kwargs: True)\n"
        "real_import = builtins.__import__\n"
        "def fake_import(name, *args, **kwargs):\n"
        "    return FakeMath() if name == 'math' else real_import(name, *args, **kwargs)\n"
        "__builtins__ = dict(vars(builtins), __import__=fake_import)\n"
        "builtins.__import__ = fake_import\n"
        "def half(x):\n    return 0\n",
        ["import math", "assert math.isclose(half(3), 1.5)"],
    ),
    "harness functions called through sys._getframe(1)": (
        "import sys\nframe = sys._getframe(1)\n"
        "for name in ('report', 'send'):\n"
        "    function = frame.f_locals.get(name) or frame.f_globals.get(name)\n"
        "    for argument in (True, ['ready'], ['ok', 3, {}]):\n"
        "        try:\n            function(argument)\n        except BaseException:\n            pass\n" + WRONG_ADD,
        ADD_TESTS,
    ),
    "harness functions found with gc.get_objects()": (
        "import gc\n"
        "for obj in gc.get_objects():\n"
        "    if callable(obj) and getattr(obj, '__name__', '') in ('report', 'send', 'write'):\n"
        "        for argument in (True, ['ok', True, {}]):\n"
        "            try:\n                obj(argument)\n            except BaseException:\n                pass\n"
        + WRONG_ADD,
        ADD_TESTS,
    ),
    "pass line written to every fd": (
        "import os\nfor fd in range(3, 64):\n    for line in (b'PASS ' + b'0' * 32 + b'\\n', b'[\"ok\", 3, {}]\\n'):\n"
        "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n" + WRONG_ADD,
        ADD_TESTS,
    ),
    "harness type guard and encoder rebound": (
        "import sys\nharness = sys._getframe(1).f_globals\n"
        "harness['_first_non_plain_type'] = lambda value: None\n"
        "harness['_encode'] = lambda value, handles, depth=0: 3\n" + ALWAYS_EQUAL + "def add(a, b):\n"
        "    return AlwaysEqual()\n",
        ADD_TESTS,
    ),
    "oracle: expected values from the callers' bytecode and locals": (
        "import dis, sys\n"
        "def add(a, b):\n"
        "    frame, found = sys._getframe(1), []\n"
        "    while frame is not None:  # the guard wrapper, then the tests' frame: the constant after the call\n"
        "        later = [i.argval for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti]\n"
        "        found += [v for v in later if type(v) is int and v > 1000]\n"
        "        found += [v for v in frame.f_locals.values() if type(v) is int and v > 1000]\n"
        "        frame = frame.f_back\n"
        "    return found[0] if found else 0\n",
        ["assert add(12000, 345) == 12345"],
    ),
    "int subclass with __eq__": (
        "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return I(0)\n",
        ADD_TESTS,
    ),
    "always-equal object inside a list": (
        ALWAYS_EQUAL + "def pair(x):\n    return [AlwaysEqual()]\n",
        ["assert pair(1) == [2]"],
    ),
    "always-equal object as a truth value": (
        ALWAYS_EQUAL + "def is_even(n):\n    return AlwaysEqual()\n",
        ["assert is_even(2)", "assert not is_even(3)"],
    ),
    "guard exception swallowed by the tests": (
        ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()\n",
        ["try:\n    assert add(1, 2) == 3\nexcept BaseException:\n    pass\nassert add(-1, 1) == 0"],
    ),
    "responses queued on the harness's pipe": (
        "import os, sys\nos.write(int(sys.argv[2]), b'[\"ready\"]\\n' + b'[\"ok\", 3, {}]\\n' * 10)\n" + WRONG_ADD,
        ADD_TESTS,
    ),
    "deeply nested raw response": (
        "import os, sys\nos.write(int(sys.argv[2]), b'[' * 100000 + b'\\n')\n" + CORRECT_ADD,
        ADD_TESTS,
    ),
    "os._exit inside the function": ("import os\ndef add(a, b):\n    os._exit(0)\n", ADD_TESTS),
    "sys.exit at top level": ("import sys\nsys.exit(0)\n", ADD_TESTS),
    "response too large": ("def add(a, b):\n    return [0] * 5_000_000\n", ADD_TESTS),
}
# Right solutions for the same tests, each must score 1 in the same batch.
RIGHT = {
    "add": (CORRECT_ADD, ADD_TESTS),
    "add, HumanEval convention": ("class add:\n    def __new__(cls, a, b):\n        return a + b\n", HE_ADD),
    "Solution().add": ("class Solution:\n    def add(self, a, b):\n        return a + b\n", SOLUTION_TESTS),
    "counts": ("from collections import Counter\ndef counts(s):\n    return Counter(s)\n", COUNTS_TESTS),
    "half with abs": ("def half(x):\n    return x / 2\n", ["assert abs(half(3) - 1.5) < 1e-9"]),
    "pair with set": ("def pair(x):\n    return [x, x + 1]\n", ["assert set(pair(1)) == set([1, 2])"]),
    "half with math.isclose": ("import math\ndef half(x):\n    return x / 2\n", ["assert math.isclose(half(3), 1.5)"]),
    "add 12345": (CORRECT_ADD, ["assert add(12000, 345) == 12345"]),
    "is_even": ("def is_even(n):\n    return n % 2 == 0\n", ["assert is_even(2)", "assert not is_even(3)"]),
}


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier(timeout=5.0)


def _score(verifier: CodeVerifier, cases: dict, **kwargs) -> dict[str, float]:
    """Scores `{name: (program, tests)}` in one batch; `tests` is a `test_list` or a HumanEval `test` string."""
    cases = list(cases.items())
    he = [isinstance(tests, str) for _, (_, tests) in cases]
    rewards = verifier(
        [program for _, (program, _) in cases],
        test=[tests if h else None for h, (_, (_, tests)) in zip(he, cases)],
        entry_point=["add" if h else None for h in he],
        test_list=[None if h else tests for h, (_, (_, tests)) in zip(he, cases)],
        **kwargs,
    )
    return {name: reward for (name, _), reward in zip(cases, rewards)}


@needs_bwrap
def test_forged_verdicts_score_zero_and_right_solutions_one(verifier):
    metrics = {}
    scores = _score(verifier, {**HACKS, **RIGHT}, log_metric=metrics.__setitem__)
    assert {name: scores[name] for name in HACKS if scores[name] != 0.0} == {}
    assert {name: scores[name] for name in RIGHT} == dict.fromkeys(RIGHT, 1.0)
    assert metrics["code_verifier/bad_rows"] == 0.0  # every one of these tests ran in the trusted process


@needs_bwrap
def test_callbacks_in_place_updates_and_trusted_loops(verifier):
    # A lambda of the tests stays in the trusted process: the program calls it back (one harness for every row).
    metrics = {}
    lambda_tests = ["assert apply(lambda x: x + 1, 2) == 3"]
    rewards = verifier(
        ["def apply(f, x):\n    return f(x)\n", "def apply(f, x):\n    return 0\n", CORRECT_ADD],
        test_list=[lambda_tests, lambda_tests, ADD_TESTS],
        log_metric=metrics.__setitem__,
    )
    assert rewards == [1.0, 0.0, 1.0]
    assert metrics["code_verifier/bad_rows"] == 0.0
    # Arguments the program changes in place come back to the tests (`list.sort`-style tasks).
    in_place = ["x = [3, 1, 2]", "sort_in_place(x)", "assert x == [1, 2, 3]"]
    programs = ["def sort_in_place(values):\n    values.sort()\n", "def sort_in_place(values):\n    pass\n"]
    assert verifier(programs, test_list=[in_place] * 2) == [1.0, 0.0]
    # A trusted loop over a value the program chose is stopped at the deadline, not left spinning.
    quick = CodeVerifier(timeout=1.5)
    loop = ["for _ in range(big()):\n    pass"]
    assert quick(["def big():\n    return 10 ** 12\n", "def big():\n    return 3\n"], test_list=[loop] * 2) == [
        0.0,
        1.0,
    ]


# A program that reports what it could reach of the host; `probe()` returns the list of what worked.
def _reach_program(socket_path: str, secret_path: str) -> str:
    return (
        "import os, socket\n"
        "def probe():\n"
        "    reached = []\n"
        "    try:\n"
        "        client = socket.socket(socket.AF_UNIX)\n"
        f"        client.connect({socket_path!r})\n"
        "        client.sendall(b'escaped')\n"
        "        reached.append('unix socket')\n"
        "    except OSError:\n"
        "        pass\n"
        f"    for path in ({secret_path!r}, '/etc/passwd', {str(Path(__file__).resolve())!r}, '/root/.bashrc'):\n"
        "        try:\n"
        "            open(path).read()\n"
        "            reached.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    for path in ('/var/tmp/trl_kimi_written', '/dev/shm/trl_kimi_written', '/usr/trl_kimi_written'):\n"
        "        try:\n"
        "            open(path, 'w').write('x')\n"
        "            reached.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return reached\n"
    )


# Four children each hold 100 MiB at once; `held()` counts those still alive with their memory after 3 s.
MEMORY_PROGRAM = """
import os, time
read_end, write_end = os.pipe()
children = []
for _ in range(4):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            with open('/proc/self/oom_score_adj', 'w') as f:
                f.write('1000')  # the OOM killer picks a child, not the program answering the calls
        except OSError:
            pass
        try:
            block = b'x' * (100 * 1024 * 1024)  # written, so every page is really held
            os.write(write_end, b'%d\\n' % os.getpid())
        except MemoryError:
            pass
        time.sleep(30)
        os._exit(0)
    children.append(pid)
time.sleep(3)
os.set_blocking(read_end, False)
try:
    allocated = {int(x) for x in os.read(read_end, 4096).split()}
except BlockingIOError:
    allocated = set()
alive = {pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)}
def held():
    return len(allocated & alive)
"""
# Writes 15 MiB files into /tmp until the disk is full; `written()` is the total.
DISK_PROGRAM = """
import os
total = 0
for i in range(20):
    try:
        with open(f'/tmp/fill{i}', 'wb') as f:
            for _ in range(15):
                f.write(b'x' * (1024 * 1024))
                f.flush()
                total += 1024 * 1024
    except OSError:
        break
def written():
    return total
"""
BOUND_TESTS = [
    ["assert probe() == []"],
    ["assert held() <= 2"],  # 256 MiB for the run: at most two children of 100 MiB at once
    ["assert 15 * 2**20 <= written() <= 32 * 2**20"],  # 32 MiB of /tmp, and the writes did work up to it
]


class _HostResources:
    """A unix socket and a secret file in /var/tmp (outside the sandbox's /tmp), readable by any uid on the host."""

    def __enter__(self):
        self.directory = Path(tempfile.mkdtemp(dir="/var/tmp"))
        self.directory.chmod(0o755)
        self.secret = self.directory / "secret.txt"
        self.secret.write_text("host secret")
        self.secret.chmod(0o644)
        self.socket_path = str(self.directory / "listener.sock")
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.socket_path)
        os.chmod(self.socket_path, 0o777)
        self.server.listen()
        self.server.setblocking(False)
        return self

    def received(self) -> bool:
        try:
            connection, _ = self.server.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def __exit__(self, *exc):
        self.server.close()
        shutil.rmtree(self.directory)


def _bound_programs(host: _HostResources) -> list[str]:
    return [_reach_program(host.socket_path, str(host.secret)), MEMORY_PROGRAM, DISK_PROGRAM]


@needs_bwrap
def test_host_files_sockets_memory_and_disk_are_bounded():
    verifier = CodeVerifier(timeout=10.0, memory_limit_mb=256, disk_limit_mb=32)
    with _HostResources() as host:
        rewards = verifier(_bound_programs(host), test_list=BOUND_TESTS)
        assert not host.received()
    assert rewards == [1.0, 1.0, 1.0], verifier.memory_accounting
    for path in ("/var/tmp/trl_kimi_written", "/usr/trl_kimi_written"):
        assert not os.path.exists(path)


def _standalone(python: str, request: dict, prefix: list[str] = ()) -> dict:
    """Runs `tests/scripts/code_reward_standalone.py` under `python` (optionally as another user)."""
    completed = subprocess.run(
        [*prefix, python, str(STANDALONE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


@needs_bwrap
def test_interpreter_in_a_venv_under_tmp(tmp_path):
    # `tmp_path` is under /tmp, which the sandbox replaces by its own tmpfs: the venv must be bound back over it.
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    request = {
        "verifier": {"timeout": 5.0},
        "completions": [CORRECT_ADD, WRONG_ADD, HACKS["class whose __new__ returns an always-equal object"][0]],
        "columns": {"test_list": [ADD_TESTS] * 3},
    }
    result = _standalone(python, request)
    assert result["executable"] == python
    assert result["rewards"] == [1.0, 0.0, 0.0]


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid (as non-root the tests above are)")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs `setpriv` (util-linux) to run as another uid")
def test_non_root_user(tmp_path):
    # The non-root uid needs an interpreter it can read: the system's (this one may live under /root).
    python = shutil.which("python3", path="/usr/bin:/bin")
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    if (
        python is None
        or subprocess.run([*nobody, python, "-c", "import sys; assert sys.version_info >= (3, 10)"]).returncode
    ):
        pytest.skip("no Python >= 3.10 under /usr/bin that uid 65534 can run")
    if subprocess.run([*nobody, "bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"]).returncode:
        pytest.skip("unprivileged user namespaces are disabled here: bwrap cannot run as a non-root user")
    with _HostResources() as host:
        result = _standalone(
            python,
            {
                "verifier": {"timeout": 10.0, "memory_limit_mb": 256, "disk_limit_mb": 32},
                "completions": [CORRECT_ADD, WRONG_ADD, HACKS["metaclass __call__"][0], *_bound_programs(host)],
                "columns": {"test_list": [ADD_TESTS, ADD_TESTS, ADD_TESTS, *BOUND_TESTS]},
            },
            prefix=nobody,
        )
        assert not host.received()
    # Without a cgroup of its own, the memory bound is RLIMIT_AS x RLIMIT_NPROC (see `CodeVerifier`).
    assert result["memory_accounting"] in ("rlimit", "cgroup")
    assert result["rewards"] == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
