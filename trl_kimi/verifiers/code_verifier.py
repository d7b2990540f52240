r"""Code correctness reward of [Kimi k1.5](https://huggingface.co/papers/2501.12599) (spec §7): run the completion's
program against the dataset's tests in a sandbox, reward 1.0 only when every test passed.

Each run goes through three layers:

1. **Verdict outside the program's interpreter** (`_remote_tests.py`): the tests run in *this* process; every call
   they make to a name of the program (`candidate(x)`, `f(x)`, `Solution().method(x)`, attribute reads and writes)
   is sent to the sandboxed harness, which answers with plain built-in values (JSON of `int`, `float`, `str`, `list`,
   `tuple`, `dict`, `set`, ..., size-limited) or an opaque handle for any other object. Comparisons, `math.isclose`,
   `abs(a - b) < tol`, `set(...)`, `sorted(...)` run here on data decoded here, with builtins and standard modules the
   program cannot touch; the expected values never enter the sandbox. Comparing, hashing or testing the truth of a
   handle fails the run. Responses are decoded in time linear in their size (capped at 4 MiB): integers are capped
   at 2**17 bits and values whose hashes collide are refused before any set or dict is built. Every row runs this
   way: a function, lambda or iterator the tests pass stays here and the program calls it back; helpers the row's
   prompt defines are defined here from the prompt (a program redefining them changes nothing); any exception
   escaping a call into the program fails the run, even if the tests catch it (`StopIteration` would end a loop of
   the tests as a success).
2. **Sandbox** ([bubblewrap](https://github.com/containers/bubblewrap)): only what the program needs is mounted:
   `/usr` and the interpreter's prefixes read-only (a venv anywhere, `/tmp` included, is bound back), a private
   size-limited tmpfs as `/tmp` and cwd, a read-only minimal `/dev`, the namespace's `/proc`; host files and unix
   sockets elsewhere do not exist in there. New pid/net/ipc/uts namespaces (no network), a new session, a cleared
   environment, `--die-with-parent`. No user namespace can be created inside (a seccomp filter refuses
   `CLONE_NEWUSER`, and bwrap's `--disable-userns` where bwrap makes the sandbox's own user namespace): in one, the
   program would be root and could mount a filesystem past the limits below. As root the sandbox also drops to a
   random unprivileged uid: root ignores `RLIMIT_NPROC`, and that limit is what stops a fork bomb.
3. **Limits**: the run's memory (all processes and its `/tmp` together) is bounded by a memory cgroup per run where
   this process may create one, else by `RLIMIT_AS` x `RLIMIT_NPROC`; disk by the tmpfs size; plus `RLIMIT_CPU`,
   `RLIMIT_FSIZE`, no core files, a wall-clock timeout and capped output. At the end the whole tree is killed: the
   sandbox's pid namespace dies with its init, and the session's process group is killed as well. The harness
   (`_sandbox_harness.py`) is passed as `python -I -B -c` source, never a file the program can edit.
"""

import ctypes
import errno
import json
import logging
import os
import platform
import random
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._checks import check_choice, check_number
from . import _remote_tests
from ._completion import completion_text


logger = logging.getLogger(__name__)

_HARNESS_SOURCE = (Path(__file__).parent / "_sandbox_harness.py").read_text(encoding="utf-8")
_INSTALL_HINT = (
    "Install bubblewrap (`apt-get install -y bubblewrap`, or your distribution's `bubblewrap` package; it needs user "
    "or mount namespaces, so inside Docker run with `--security-opt seccomp=unconfined` or as a privileged container), "
    'or pass `sandbox="none"` to run untrusted code without isolation.'
)
# Written files are the program's scratch space, not its output: 16 MiB is plenty and bounds the disk a run can fill.
_MAX_FILE_BYTES = 16 * 1024 * 1024
# After the program's main process exited, how long to keep reading pipes that leftover children may still hold.
_EXIT_GRACE_SECONDS = 0.25
# Random uids for the sandbox are drawn from [2**30, 2**31): far from system and regular user ids, and one per run, so
# that parallel runs do not share an `RLIMIT_NPROC` count.
_SANDBOX_UID_BASE = 1 << 30
_PATH = "/usr/local/bin:/usr/bin:/bin"
# The environment variable that tags processes of a `sandbox="none"` run, so the tree kill finds escaped daemons.
_RUN_MARKER = "TRL_KIMI_CODE_RUN"

_probe_lock = threading.Lock()
_probed_sandboxes: set[tuple[str, ...]] = set()


# ------------------------------------------------------------------------------------------------------ extraction
def _extract_program(text: str) -> str | None:
    r"""
    The last fenced Python block of `text` (```` ```python ````, ```` ```py ````, ```` ``` ````), the whole text if it
    has no fence, or `None` when the text ends inside an unclosed fence (a truncated completion) or has fences but no
    Python block.

    Example:
    ```python
    >>> _extract_program("Try:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```")
    'x = 2\n'
    >>> _extract_program("x = 3") is None, _extract_program("```python\nx = 4") is None
    (False, True)

    ```
    """
    blocks, current, language = [], None, ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if current is None:
            if stripped.startswith("```"):
                current, language = [], stripped[3:].strip().lower()
        elif stripped == "```":
            blocks.append((language, "".join(current)))
            current = None
        else:
            current.append(line)
    if current is not None:
        return None  # the completion was cut inside a code block: never run half a program
    if not blocks:
        return text if "```" not in text else None
    python_blocks = [code for lang, code in blocks if lang in ("", "python", "py", "python3")]
    return python_blocks[-1] if python_blocks else None


# ------------------------------------------------------------------------------------------------------- sandboxing
def _interpreter_paths() -> list[tuple[str, str]]:
    """
    `(source, destination)` pairs to bind read-only so the interpreter runs in the sandbox wherever it lives: its
    prefixes (a venv and the Python it was made from), the real executable's directory and its site-packages, both at
    their real path and at the path the interpreter knows them by (a symlinked venv). Paths under `/usr` are skipped:
    the sandbox binds `/usr` whole.
    """
    import site

    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)]
    paths += [os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.__file__)]
    paths += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    pairs = set()
    for path in paths:
        if not path or not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        for destination in {os.path.abspath(path), real}:
            # `/` or `/tmp` as a prefix would expose the host (or hide the private `/tmp`): refuse rather than leak.
            if destination in ("/", "/tmp"):
                raise RuntimeError(
                    f"The code verifier cannot sandbox an interpreter whose installation is {destination!r} itself "
                    f"(from {path!r}); use a Python installed in, or a venv made in, a directory of its own."
                )
            if destination != "/usr" and not destination.startswith("/usr/"):
                pairs.add((real, destination))
    # Keep only outermost destinations: a bind inside another bind of the same tree adds nothing.
    chosen: list[tuple[str, str]] = []
    for real, destination in sorted(pairs, key=lambda pair: pair[1]):
        if not any(destination.startswith(outer + os.sep) for _, outer in chosen):
            chosen.append((real, destination))
    return chosen


def _system_binds() -> list[str]:
    """bwrap arguments for the system's libraries: `/usr`, the merged-`/usr` links (or directories) and ld's cache."""
    arguments = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    return [*arguments, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]


def _interpreter_binds() -> list[str]:
    """bwrap arguments binding `_interpreter_paths()`, creating their parent directories world-traversable."""
    arguments, created = [], {"/", "/tmp", "/usr", "/proc", "/dev"}
    for real, destination in _interpreter_paths():
        directory = "/"
        for part in Path(destination).parts[1:-1]:
            directory = os.path.join(directory, part)
            if directory not in created:
                created.add(directory)
                # bwrap would create them 0700, which the sandbox's unprivileged uid could not traverse.
                arguments += ["--perms", "0755", "--dir", directory]
        arguments += ["--ro-bind", real, destination]
    return arguments


class _MemoryCgroups:
    """
    Per-run memory cgroups (v1 or v2) under this process's own cgroup, when it may create them (typically as root or
    with a delegated cgroup): the limit then covers every process of the run together, and its `/tmp` pages too.
    """

    def __init__(self):
        self.base, self.version = self._find()

    @staticmethod
    def _find() -> tuple[str | None, int]:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None, 0
        candidates = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                candidates.append((os.path.join("/sys/fs/cgroup/memory", path.lstrip("/")), 1))
            elif controllers == "":
                candidates.append((os.path.join("/sys/fs/cgroup", path.lstrip("/")), 2))
        for base, version in candidates:
            probe = os.path.join(base, f"trl_kimi_probe_{os.getpid()}_{secrets.token_hex(4)}")
            try:
                os.mkdir(probe)
            except OSError:
                continue
            try:
                Path(probe, "memory.limit_in_bytes" if version == 1 else "memory.max").write_text(str(1 << 30))
                return base, version
            except OSError:
                continue
            finally:
                os.rmdir(probe)
        return None, 0

    def create(self, name: str, limit_bytes: int) -> str:
        path = os.path.join(self.base, name)
        os.mkdir(path)
        try:
            if self.version == 1:
                Path(path, "memory.limit_in_bytes").write_text(str(limit_bytes))
                if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):  # no escape into swap
                    Path(path, "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            else:
                Path(path, "memory.max").write_text(str(limit_bytes))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    Path(path, "memory.swap.max").write_text("0")
        except OSError:
            os.rmdir(path)
            raise
        return path

    @staticmethod
    def remove(path: str) -> None:
        for _ in range(100):  # the kernel frees the cgroup once its last (already killed) process is gone
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
        logger.warning("Could not remove the code verifier's cgroup %s.", path)


# Classic BPF for seccomp (linux/filter.h, linux/seccomp.h, linux/audit.h): the filter of `_seccomp_filter`.
_BPF_LD_W_ABS, _BPF_JEQ, _BPF_JGE, _BPF_JSET, _BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_CLONE_NEWUSER = 0x10000000
# Per architecture: (AUDIT_ARCH_*, unshare, clone, clone3) syscall numbers.
_SYSCALLS = {"x86_64": (0xC000003E, 272, 56, 435), "aarch64": (0xC00000B7, 97, 220, 435)}


def _seccomp_filter() -> bytes | None:
    """
    A seccomp program refusing new user namespaces: `unshare` and `clone` with `CLONE_NEWUSER` fail with EPERM,
    `clone3` (whose flags a filter cannot read) with ENOSYS, so the C library falls back to `clone`; syscalls of
    another ABI (32-bit, x32) fail with ENOSYS. `None` on architectures without a table entry.
    """
    if platform.machine() not in _SYSCALLS:
        return None
    arch, unshare, clone, clone3 = _SYSCALLS[platform.machine()]
    eperm, enosys = _SECCOMP_RET_ERRNO | errno.EPERM, _SECCOMP_RET_ERRNO | errno.ENOSYS
    program = [  # (code, jump if true, jump if false, k); jumps count the instructions skipped
        (_BPF_LD_W_ABS, 0, 0, 4),  # 0: A = seccomp_data.arch
        (_BPF_JEQ, 1, 0, arch),  # 1: native ABI -> 3
        (_BPF_RET, 0, 0, enosys),  # 2: another ABI
        (_BPF_LD_W_ABS, 0, 0, 0),  # 3: A = seccomp_data.nr
        (_BPF_JGE, 0, 1, 0x40000000),  # 4: x32 syscall numbers -> 5, else 6
        (_BPF_RET, 0, 0, enosys),  # 5
        (_BPF_JEQ, 0, 1, clone3),  # 6: clone3 -> 7, else 8
        (_BPF_RET, 0, 0, enosys),  # 7
        (_BPF_JEQ, 2, 0, unshare),  # 8: unshare -> 11
        (_BPF_JEQ, 1, 0, clone),  # 9: clone -> 11
        (_BPF_RET, 0, 0, _SECCOMP_RET_ALLOW),  # 10
        (_BPF_LD_W_ABS, 0, 0, 16),  # 11: A = low 32 bits of args[0] (the flags of unshare and clone)
        (_BPF_JSET, 0, 1, _CLONE_NEWUSER),  # 12: CLONE_NEWUSER -> 13, else 14
        (_BPF_RET, 0, 0, eperm),  # 13
        (_BPF_RET, 0, 0, _SECCOMP_RET_ALLOW),  # 14
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


def _supports_disable_userns(bwrap: str) -> bool:
    """Whether this bubblewrap has `--disable-userns` (0.8.0 and later)."""
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--disable-userns" in usage


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from `/proc`."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _kill_marked_processes(marker: str) -> None:
    """SIGKILL every process whose environment carries `marker` (`sandbox="none"` runs have no pid namespace)."""
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone already, or another user's process (which cannot be ours)


@dataclass
class _Outcome:
    status: str  # "pass", "fail", "timeout", "output_limit", "sandbox_error", "no_program", "bad_row"
    reason: str = ""


class CodeVerifier:
    r"""
    Scores code completions by running them against tests in a sandbox: 1.0 when every test passed, 0.0 otherwise.

    Callable with TRL's reward signature; each row uses either the HumanEval convention (columns `test`, defining
    `check(candidate)`, and `entry_point`; `check(<entry_point>)` is called) or the MBPP convention (column `test_list`
    of `assert` lines, optionally `test_setup_code`, run before the tests). The program is the last fenced Python block
    of the completion, or the whole completion when it has no fence; a completion cut inside a fence scores 0. A batch
    runs in parallel, each run bounded by `timeout`.

    The verdict is computed in this process, not in the program's: the sandboxed program only answers the calls the
    tests make, with plain built-in values (see the module docstring). Helpers that the row's prompt (TRL's `prompts`)
    defines are the prompt's. A row whose tests cannot run (`test_list` given as one string, tests that do not
    compile, an argument that cannot be sent to the program) scores 0 and is warned about once per column, with the
    fix. With TRL's `log_metric`, the fractions `code_verifier/timeouts`, `code_verifier/sandbox_errors`,
    `code_verifier/no_program` and `code_verifier/bad_rows` are logged. Failures are logged at debug level.

    Args:
        timeout (`float`, *optional*, defaults to `10.0`):
            Wall-clock seconds per run, the sandbox's start-up and the tests included.
        memory_limit_mb (`int`, *optional*, defaults to `2048`):
            Memory of a run, all its processes and its `/tmp` together, in MiB: a memory cgroup per run where this
            process may create one (as root, or with a delegated cgroup). Without one, each process gets an
            address-space limit (`RLIMIT_AS`) of `memory_limit_mb / max_processes`, so the run still stays within it.
        disk_limit_mb (`int`, *optional*, defaults to `64`):
            Size of the run's private `/tmp` (a tmpfs), the only writable place in the sandbox.
        cpu_seconds (`int` or `None`, *optional*, defaults to `None`):
            CPU-time limit (`RLIMIT_CPU`) per process; `None` uses `ceil(timeout)`.
        max_output_bytes (`int`, *optional*, defaults to `1048576`):
            Bytes of stdout plus stderr a run may write; beyond it the run is stopped and scores 0.
        max_processes (`int` or `None`, *optional*, defaults to `None`):
            `RLIMIT_NPROC` of the run (processes and threads, the harness included): stops fork bombs. `None` uses 64
            with a memory cgroup and 4 without one (see `memory_limit_mb`).
        max_parallel (`int` or `None`, *optional*, defaults to `None`):
            Runs at a time; `None` uses `os.cpu_count()`.
        sandbox (`str`, *optional*, defaults to `"bwrap"`):
            `"bwrap"` (bubblewrap, required unless you opt out) or `"none"`: no namespaces, no private filesystem,
            no network isolation; rlimits, a process group, the timeout and the tree kill still apply. Use `"none"`
            only where the machine itself is a sandbox.

    Example (needs bubblewrap, so the doctest skips it):
    ```python
    >>> verifier = CodeVerifier(timeout=5.0)  # doctest: +SKIP
    >>> completions = ["```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a - b"]
    >>> verifier(completions, test_list=[["assert add(1, 2) == 3"]] * 2)  # doctest: +SKIP
    [1.0, 0.0]

    ```
    """

    def __init__(
        self,
        timeout: float = 10.0,
        memory_limit_mb: int = 2048,
        disk_limit_mb: int = 64,
        cpu_seconds: int | None = None,
        max_output_bytes: int = 1 << 20,
        max_processes: int | None = None,
        max_parallel: int | None = None,
        sandbox: str = "bwrap",
    ):
        check_choice("sandbox", sandbox, ("bwrap", "none"))
        for name, value in (
            ("timeout", timeout),
            ("memory_limit_mb", memory_limit_mb),
            ("disk_limit_mb", disk_limit_mb),
            ("max_output_bytes", max_output_bytes),
            ("max_processes", 1 if max_processes is None else max_processes),
        ):
            check_number(name, value, 0, low_open=True)
        check_number("cpu_seconds", cpu_seconds, 1, unset="from timeout", fix="RLIMIT_CPU counts whole seconds.")
        check_number("max_parallel", max_parallel, 1, unset="os.cpu_count()")
        self.timeout = float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.disk_limit_mb = disk_limit_mb
        self.cpu_seconds = cpu_seconds if cpu_seconds is not None else max(1, int(-(-timeout // 1)))
        self.max_output_bytes = max_output_bytes
        self.max_parallel = max_parallel or os.cpu_count() or 1
        self.sandbox = sandbox
        self.__name__ = "code_reward"  # TRL names the reward's metrics after it
        self._warned: set[str] = set()  # dataset problems already warned about, by column
        self._cgroups = _MemoryCgroups()
        self.memory_accounting = "cgroup" if self._cgroups.base else "rlimit"
        self.max_processes = max_processes or (64 if self._cgroups.base else 4)
        # Root ignores RLIMIT_NPROC, so as root each run has a uid of its own (see the module docstring).
        self._drop_privileges = sandbox == "bwrap" and os.geteuid() == 0
        if sandbox == "none":
            warnings.warn(
                "CodeVerifier(sandbox='none') runs untrusted code without namespaces: it can read and write your "
                "files and reach the network, and as root RLIMIT_NPROC does not stop fork bombs. Only rlimits, the "
                "timeout and the process-group kill apply. " + _INSTALL_HINT.split(", or pass")[0] + " to sandbox it.",
                UserWarning,
                stacklevel=2,
            )
            self._bwrap_arguments: list[str] = []
        else:
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                raise RuntimeError(
                    f"The code verifier's sandbox needs the `bwrap` executable, not found on PATH. {_INSTALL_HINT}"
                )
            self._bwrap_arguments = self._build_bwrap_arguments(bwrap)
            self._probe()

    # ---------------------------------------------------------------------------------------------- sandbox set-up
    def _build_bwrap_arguments(self, bwrap: str) -> list[str]:
        # No user namespace may be created inside the sandbox: in one, the program would be root and could mount a
        # tmpfs of any size over the disk and memory limits. Two locks: a seccomp filter refusing CLONE_NEWUSER (as
        # root and not), and, where bwrap itself makes a user namespace (not as root), `--disable-userns`.
        if self._drop_privileges:
            # Root's bwrap does not create a user namespace (mapping the sandbox to host root would exempt it from
            # RLIMIT_NPROC) and would keep every capability: keep only what the harness needs to drop to its uid (the
            # kernel clears them at that point).
            namespaces = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            capabilities = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            namespaces, capabilities = ["--unshare-all", "--unshare-user"], []
            if _supports_disable_userns(bwrap):
                namespaces.append("--disable-userns")
        if _seccomp_filter() is None:
            warnings.warn(
                f"The code verifier has no seccomp filter for this architecture ({platform.machine()}): a program may "
                "create a user namespace inside the sandbox and mount a filesystem beyond its disk and memory limits"
                + (" (bubblewrap's --disable-userns still prevents it)." if "--disable-userns" in namespaces else "."),
                UserWarning,
                stacklevel=3,
            )
        # Only what the program needs is mounted: the system's libraries and the interpreter read-only, a private
        # size-limited tmpfs as `/tmp` (bound first, so a venv under the host's `/tmp` is bound back over it), a
        # minimal read-only `/dev` (its `shm` would be an unbounded writable tmpfs) and the namespace's `/proc`.
        # Host files and unix sockets elsewhere (`/var/tmp`, `/run`, home directories) do not exist in there.
        return [
            bwrap,
            *_system_binds(),
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "01777", "--size", str(self.disk_limit_mb * 1024 * 1024), "--tmpfs", "/tmp",
            *_interpreter_binds(),
            "--remount-ro", "/dev",
            *namespaces,
            *capabilities,
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", _PATH,
            "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8",
            "--chdir", "/tmp",
        ]  # fmt: skip

    def _probe(self) -> None:
        """Runs a trivial program once per process and configuration; raises if the sandbox cannot start."""
        key = tuple(self._bwrap_arguments)
        with _probe_lock:
            if key in _probed_sandboxes:
                return
            outcome = self._run("x = 1", setup="", tests="assert x == 1", entry_point=None)
            if outcome.status != "pass":
                hint = _INSTALL_HINT
                if outcome.reason.startswith("bwrap: execvp"):
                    hint = (
                        f"bwrap runs, but not the interpreter {sys.executable!r} inside the sandbox; its prefix "
                        f"({sys.prefix!r}) should be bound read-only. Please report this with your Python's location."
                    )
                raise RuntimeError(
                    f"The code verifier's bubblewrap sandbox failed to run a trivial program ({outcome.status}: "
                    f"{outcome.reason}). {hint}"
                )
            _probed_sandboxes.add(key)

    # ------------------------------------------------------------------------------------------------------- runs
    def _limits(self) -> dict[str, int]:
        memory = self.memory_limit_mb * 1024 * 1024
        return {
            # With a cgroup for the run's total, one process may use all of it; without, the processes share it.
            "RLIMIT_AS": memory if self.memory_accounting == "cgroup" else memory // self.max_processes,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_FSIZE": min(_MAX_FILE_BYTES, self.disk_limit_mb * 1024 * 1024),
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_CORE": 0,
        }

    def _run(
        self, program: str, setup: str, tests: str, entry_point: str | None, prompt: str | None = None
    ) -> _Outcome:
        """
        Runs one program against its tests in a fresh sandbox; never leaves a process behind. The tests run here and
        only the program's calls in the sandbox (one harness for every row).
        """
        uid = _SANDBOX_UID_BASE + random.randrange(_SANDBOX_UID_BASE) if self._drop_privileges else None
        payload = {"program": program, "limits": self._limits(), "uid": uid}
        workdir = tempfile.mkdtemp(prefix="trl_kimi_code_") if self.sandbox == "none" else None
        token = secrets.token_hex(8)
        cgroup = None
        # The payload travels in a memfd, not a file: the harness closes it before the program runs.
        payload_fd = os.memfd_create("trl_kimi_code_payload")
        response_read, response_write = os.pipe()
        output_read, output_write = os.pipe()
        request_read, request_write = os.pipe()
        seccomp_fd = -1
        process = None
        try:
            os.write(payload_fd, json.dumps(payload).encode())
            os.lseek(payload_fd, 0, os.SEEK_SET)
            harness = [sys.executable, "-I", "-B", "-c", _HARNESS_SOURCE]
            harness += [str(payload_fd), str(response_write), str(request_read)]
            pass_fds = [payload_fd, response_write, request_read]
            if self.sandbox == "bwrap":
                seccomp = []
                if _seccomp_filter() is not None:  # bwrap reads the filter from a file descriptor, once per run
                    seccomp_fd = os.memfd_create("trl_kimi_seccomp")
                    os.write(seccomp_fd, _seccomp_filter())
                    os.lseek(seccomp_fd, 0, os.SEEK_SET)
                    seccomp, pass_fds = ["--seccomp", str(seccomp_fd)], [*pass_fds, seccomp_fd]
                command = [*self._bwrap_arguments, *seccomp, "--", *harness]
                env = {"PATH": _PATH}
                marker = None
            else:
                command = harness
                marker = f"{_RUN_MARKER}={token}"
                env = {"PATH": _PATH, "HOME": workdir, "LANG": "C.UTF-8", _RUN_MARKER: token}
            if self._cgroups.base:
                cgroup = self._cgroups.create(f"trl_kimi_{token}", self.memory_limit_mb * 1024 * 1024)
                # The shell joins the cgroup before exec'ing the sandbox, so no process of the run starts outside it.
                procs = os.path.join(cgroup, "cgroup.procs")
                command = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,  # a program waiting on input() gets EOF
                stdout=output_write,
                stderr=output_write,
                pass_fds=pass_fds,
                cwd=workdir or "/",
                env=env,
                start_new_session=True,  # its own process group, killed as a whole at the end
            )
            for fd in (payload_fd, response_write, output_write, request_read, seccomp_fd):
                if fd >= 0:
                    os.close(fd)
            payload_fd = response_write = output_write = request_read = seccomp_fd = -1
            return self._judge(setup, tests, entry_point, prompt, request_write, response_read, output_read)
        finally:
            for fd in (payload_fd, response_write, output_write, output_read, response_read, request_read, seccomp_fd):
                if fd >= 0:
                    os.close(fd)
            if request_write >= 0:
                os.close(request_write)
            if process is not None:
                self._kill_tree(process, marker if self.sandbox == "none" else None)
            if cgroup is not None:
                self._cgroups.remove(cgroup)
            if workdir is not None:
                shutil.rmtree(
                    workdir, onerror=lambda *args: logger.warning("Could not remove %s: %s", args[1], args[2][1])
                )

    def _judge(
        self,
        setup: str,
        tests: str,
        entry_point: str | None,
        prompt: str | None,
        request_fd: int,
        response_fd: int,
        output_fd: int,
    ) -> _Outcome:
        """Runs the tests in this thread, the program's calls in the sandbox."""
        deadline = time.monotonic() + self.timeout
        channel = _remote_tests.Channel(request_fd, response_fd, output_fd, deadline, self.max_output_bytes)
        # The tests are the dataset's code, but the values they loop over come from the program: a pure-Python loop
        # here (`for _ in range(candidate(x))`) is interrupted at the deadline by an exception sent to this thread.
        thread_id, lock, state = threading.get_ident(), threading.Lock(), {"active": True, "fired": False}

        def interrupt() -> None:
            with lock:
                if state["active"]:
                    state["fired"] = True
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(thread_id), ctypes.py_object(_remote_tests.Deadline)
                    )

        timer = threading.Timer(self.timeout + _EXIT_GRACE_SECONDS, interrupt)
        timer.daemon = True
        timer.start()
        try:
            try:
                _remote_tests.run_tests(channel, setup, tests, entry_point, prompt)
            finally:
                with lock:
                    state["active"] = False
                timer.cancel()
                if state["fired"]:
                    # The exception is delivered at an instruction boundary: if the tests ended just before it, take
                    # it here (at a loop's back edge) rather than let it hit the caller. (Clearing it with a NULL
                    # exception instead would leave CPython's eval breaker set for good.)
                    try:
                        for _ in range(1_000_000):
                            pass
                    except _remote_tests.Deadline:
                        pass
        except _remote_tests.Unrewritable as error:
            return _Outcome("bad_row", f"{error}")
        except _remote_tests.Deadline:
            return _Outcome("timeout", f"after {self.timeout:g}s")
        except _remote_tests.OutputLimit:
            return _Outcome("output_limit")
        except _remote_tests.SandboxGone as error:
            text = channel.output.decode("utf-8", errors="replace")
            if not channel.calls and text.startswith("bwrap:"):
                return _Outcome("sandbox_error", text.strip()[-500:])
            return _Outcome("fail", f"{error}; output: {text[-300:]!r}")
        except (Exception, SystemExit, _remote_tests.Violation) as error:  # noqa: B036 - the tests' SystemExit fails
            return _Outcome("fail", f"{error!r}"[:1000])
        finally:
            channel.close()
        if channel.failure is not None:  # swallowed by the tests
            return _Outcome("fail", f"{channel.failure!r}"[:1000])
        return _Outcome("pass")

    def _kill_tree(self, process: subprocess.Popen, marker: str | None) -> None:
        """Kills everything the run started and reaps it."""
        # `waitid(WNOWAIT)` rather than `poll()`: the process must stay unreaped, so its pid (the process group id)
        # cannot be reused before `killpg`.
        running = not os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if running and self.sandbox == "bwrap":
            # Killing the namespace's init (bwrap's child) makes the kernel kill every process of the namespace, and
            # bwrap itself exits only once that is done, so nothing outlives the `wait` below.
            for child in _children(process.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the session started with the run (fails once it is empty)
        except (ProcessLookupError, PermissionError):
            pass
        if marker is not None:
            _kill_marked_processes(marker)
        process.wait()

    # ---------------------------------------------------------------------------------------------------- reward
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _bad_row(self, row: int, column: str, tests: Any, setup: str) -> str | None:
        """Why a row's tests cannot run (warned once per column, with the fix), or `None`."""
        if column == "test_list" and (
            not isinstance(tests, (list, tuple)) or not all(isinstance(line, str) for line in tests)
        ):
            fix = (
                "wrap it: dataset.map(lambda row: {'test_list': [row['test_list']]})"
                if isinstance(tests, str)
                else "give a list of `assert` lines"
            )
            problem = f"`test_list` of row {row} is a {type(tests).__name__}, not a list of str"
            self._warn_once("test_list", f"{self.__name__}: {problem}; every completion of such rows scores 0; {fix}.")
            return problem
        if column == "test" and not isinstance(tests, str):
            problem = f"`test` of row {row} is a {type(tests).__name__}, not a str"
            self._warn_once(
                "test", f"{self.__name__}: {problem}; such rows score 0; give the `check(candidate)` code."
            )
            return problem
        code = "\n".join(tests) if column == "test_list" else tests
        for name, source in (("test_setup_code", setup), (column, code)):
            try:
                compile(source, f"<{name}>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as error:
                problem = f"`{name}` of row {row} does not compile ({error})"
                self._warn_once(
                    f"{name} compile", f"{self.__name__}: {problem}; such rows score 0; fix the dataset's tests."
                )
                return problem
        return None

    def __call__(
        self,
        completions: list[Any],
        test: list[str | None] | None = None,
        entry_point: list[str | None] | None = None,
        test_list: list[list[str] | None] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        """Scores `completions` against the row's tests; returns 1.0 (all tests ran and passed) or 0.0 per row."""
        setup_codes = kwargs.get("test_setup_code")
        prompts = kwargs.get("prompts")
        jobs: list[tuple[str, str, str, str | None, str | None] | None] = []
        outcomes: list[_Outcome | None] = []
        for row, completion in enumerate(completions):
            if test is not None and test[row] and entry_point is not None and entry_point[row]:
                if not entry_point[row].isidentifier():
                    raise ValueError(
                        f"entry_point of row {row} must be a Python identifier, got {entry_point[row]!r}."
                    )
                tests, setup, name = f"{test[row]}\ncheck({entry_point[row]})\n", "", entry_point[row]
                column = "test"
            elif test_list is not None and test_list[row] is not None:
                tests, name, column = test_list[row], None, "test_list"
                setup = (setup_codes[row] or "") if setup_codes is not None else ""
            else:
                columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
                raise ValueError(
                    f"{self.__name__} needs, for every row, either the `test` and `entry_point` columns (HumanEval "
                    f"convention) or the `test_list` column (MBPP convention); row {row} has neither (test="
                    f"{None if test is None else test[row]!r:.40}, entry_point={None if entry_point is None else entry_point[row]!r}, "
                    f"test_list={None if test_list is None else test_list[row]!r:.40}; other columns: {columns}). "
                    "Add those columns to the dataset."
                )
            problem = self._bad_row(row, column, tests, setup)
            if problem is not None:
                outcomes.append(_Outcome("bad_row", problem))
                jobs.append(None)
                continue
            if column == "test_list":
                tests = "\n".join(tests) + "\n"
            prompt = _remote_tests.prompt_code(prompts[row]) if prompts is not None else None
            text = completion_text(completion)
            program = _extract_program(text) if text else None
            if not program or not program.strip():
                reason = "empty completion" if not text else "no complete Python code block (truncated?)"
                logger.debug("code_reward row %d scores 0: %s.", row, reason)
                outcomes.append(_Outcome("no_program", reason))
                jobs.append(None)
            else:
                outcomes.append(None)
                jobs.append((program, setup, tests, name, prompt))

        def run(job: tuple[str, str, str, str | None, str | None]) -> _Outcome:
            try:
                return self._run(*job)
            except Exception as error:
                # A verifier bug must not stop training nor pass as a solved task: score 0, log it loudly, count it.
                logger.error("code_reward: the verifier itself failed on a run, scoring it 0.", exc_info=error)
                return _Outcome("sandbox_error", f"verifier error: {error!r}")

        pending = [job for job in jobs if job is not None]
        if pending:
            with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(pending))) as pool:
                results = iter(pool.map(run, pending))
            outcomes = [next(results) if outcome is None else outcome for outcome in outcomes]

        for row, outcome in enumerate(outcomes):
            if outcome.status == "bad_row" and not outcome.reason.startswith("`"):  # found while running
                self._warn_once(
                    outcome.reason.split(" ", 2)[1],
                    f"{self.__name__}: row {row} scores 0: {outcome.reason}. Plain data, functions, iterators and "
                    "ranges can be sent to the sandboxed program, and a prompt's definitions must run in this process "
                    "(they replace the program's); fix that row.",
                )
            if outcome.status in ("timeout", "output_limit", "sandbox_error"):
                logger.debug("code_reward row %d scores 0: %s %s", row, outcome.status, outcome.reason)
            elif outcome.status == "fail":
                logger.debug("code_reward row %d scores 0: %s", row, outcome.reason)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and outcomes:
            for status, name in (
                ("timeout", "timeouts"),
                ("sandbox_error", "sandbox_errors"),
                ("no_program", "no_program"),
                ("bad_row", "bad_rows"),
            ):
                log_metric(f"code_verifier/{name}", sum(o.status == status for o in outcomes) / len(outcomes))
        return [1.0 if outcome.status == "pass" else 0.0 for outcome in outcomes]


_default_verifier: CodeVerifier | None = None
_default_lock = threading.Lock()


def code_reward(
    completions: list[Any],
    test: list[str | None] | None = None,
    entry_point: list[str | None] | None = None,
    test_list: list[list[str] | None] | None = None,
    **kwargs: Any,
) -> list[float]:
    r"""
    Code correctness reward: 1.0 when the completion's program passes every test of its row, else 0.0.

    Runs a default [`CodeVerifier`] (bubblewrap sandbox, 10 s per run, 2 GiB, `os.cpu_count()` runs at a time),
    created on first use; build your own [`CodeVerifier`] for other limits. Rows follow the HumanEval convention
    (`test` defining `check(candidate)`, and `entry_point`) or the MBPP one (`test_list`, optional `test_setup_code`).

    Args:
        completions (`list[str]` or `list[list[dict[str, str]]]`):
            Completions, plain or conversational (the last assistant message is used).
        test (`list[str]`, *optional*):
            HumanEval-style test code defining `check(candidate)`.
        entry_point (`list[str]`, *optional*):
            Name of the function `check` is called with.
        test_list (`list[list[str]]`, *optional*):
            MBPP-style `assert` lines.
        **kwargs:
            Other dataset columns (`test_setup_code` is used) and TRL's `log_metric`.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example (needs bubblewrap, so the doctest skips it):
    ```python
    >>> solution = "```python\ndef double(x):\n    return 2 * x\n```"
    >>> code_reward(  # doctest: +SKIP
    ...     [solution, "```python\nimport os\nos._exit(0)\n```"],
    ...     test=["def check(candidate):\n    assert candidate(2) == 4\n"] * 2,
    ...     entry_point=["double"] * 2,
    ... )
    [1.0, 0.0]

    ```
    """
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = CodeVerifier()
    return _default_verifier(completions, test=test, entry_point=entry_point, test_list=test_list, **kwargs)
