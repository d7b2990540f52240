r"""Code correctness reward of [Kimi k1.5](https://huggingface.co/papers/2501.12599) (spec §7): run the completion's
program against the dataset's tests in a sandbox, reward 1.0 only with positive proof that every test ran.

Each run goes through three layers:

1. **Sandbox** ([bubblewrap](https://github.com/containers/bubblewrap)): read-only root, a private writable temp dir as
   `/tmp` and cwd, new pid/net/ipc/uts namespaces (no network), a new session, a cleared environment, `--die-with-parent`.
   When the trainer runs as root, the sandbox also drops to a random unprivileged uid: root ignores `RLIMIT_NPROC`, and
   that limit is what stops a fork bomb. Directories the unprivileged uid cannot traverse (a Python under `/root`) are
   hidden behind a tmpfs and only the Python installation is bound back, read-only.
2. **Limits**: `RLIMIT_AS`, `RLIMIT_CPU`, `RLIMIT_FSIZE`, `RLIMIT_NPROC`, no core files, a wall-clock timeout, stdout
   and stderr capped at `max_output_bytes` (the run is stopped beyond it). At the end the whole tree is killed: the
   sandbox's pid namespace dies with its init, and the session's process group is killed as well.
3. **Harness** (`_sandbox_harness.py`, passed as `python -I -B -c` source, never a file the program can edit): reads a
   per-run secret token from a memfd and closes it before the program runs, restores and checks builtins and module
   attributes between the program and the tests, requires plain built-in return values from the tested functions, and
   writes the token to a dedicated result pipe only after the last test. Exit status 0 proves nothing.
"""

import json
import logging
import os
import random
import secrets
import selectors
import shutil
import signal
import stat
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
def _hidden_path_binds() -> list[str]:
    """
    bwrap arguments that let an unprivileged uid reach the Python installation: every ancestor directory the uid cannot
    traverse (e.g. `/root`, mode 700) is covered by a tmpfs, and the needed directories are bound back read-only.
    """
    needed = {
        os.path.realpath(path)
        for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path)
        if path and os.path.isdir(path)
    }
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    hidden, binds = set(), []
    for path in sorted(needed):
        ancestor = "/"
        for part in Path(path).parts[1:]:
            ancestor = os.path.join(ancestor, part)
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                hidden.add(ancestor)
                if not any(path == bound or path.startswith(bound + os.sep) for _, bound in binds):
                    binds.append((ancestor, path))
                break
    arguments = []
    for ancestor in sorted(hidden):
        arguments += ["--tmpfs", ancestor]
    for ancestor, path in binds:
        directory = ancestor
        for part in Path(path).relative_to(ancestor).parts[:-1]:
            directory = os.path.join(directory, part)
            arguments += ["--perms", "0755", "--dir", directory]  # bwrap would create them 0700, unreachable
        arguments += ["--ro-bind", path, path]
    return arguments


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
    status: str  # "pass", "fail", "timeout", "output_limit", "sandbox_error", "no_program"
    reason: str = ""


class CodeVerifier:
    r"""
    Scores code completions by running them against tests in a sandbox: 1.0 when every test passed, 0.0 otherwise.

    Callable with TRL's reward signature; each row uses either the HumanEval convention (columns `test`, defining
    `check(candidate)`, and `entry_point`; the harness calls `check(<entry_point>)`) or the MBPP convention (column
    `test_list` of `assert` lines, optionally `test_setup_code`, run between the program and the tests). The program
    is the last fenced Python block of the completion, or the whole completion when it has no fence; a completion cut
    inside a fence scores 0. A batch runs in parallel, each run bounded by `timeout`.

    A run scores 1.0 only when the sandboxed harness wrote back this run's secret token, which it does after the last
    test; see the module docstring for the sandbox and the reward hacks it defeats. Failures are logged at debug level;
    with TRL's `log_metric`, the fractions of runs that timed out, hit a sandbox error or had no program are logged as
    `code_verifier/timeouts`, `code_verifier/sandbox_errors` and `code_verifier/no_program`.

    Args:
        timeout (`float`, *optional*, defaults to `10.0`):
            Wall-clock seconds per run, the harness's own start-up included.
        memory_limit_mb (`int`, *optional*, defaults to `2048`):
            Address-space limit (`RLIMIT_AS`) of the program, in MiB.
        cpu_seconds (`int` or `None`, *optional*, defaults to `None`):
            CPU-time limit (`RLIMIT_CPU`) per process; `None` uses `ceil(timeout)`.
        max_output_bytes (`int`, *optional*, defaults to `1048576`):
            Bytes of stdout plus stderr a run may write; beyond it the run is stopped and scores 0.
        max_processes (`int`, *optional*, defaults to `64`):
            `RLIMIT_NPROC` inside the sandbox (processes and threads of the run's uid); stops fork bombs.
        max_parallel (`int` or `None`, *optional*, defaults to `None`):
            Runs at a time; `None` uses `os.cpu_count()`.
        sandbox (`str`, *optional*, defaults to `"bwrap"`):
            `"bwrap"` (bubblewrap, required unless you opt out) or `"none"`: no namespaces, no read-only filesystem,
            no network isolation; rlimits, a process group, the timeout and the tree kill still apply. Use `"none"`
            only where the machine itself is a sandbox.

    Example:
    ```python
    >>> verifier = CodeVerifier(timeout=5.0)
    >>> completions = ["```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a - b"]
    >>> verifier(completions, test_list=[["assert add(1, 2) == 3"]] * 2)
    [1.0, 0.0]

    ```
    """

    def __init__(
        self,
        timeout: float = 10.0,
        memory_limit_mb: int = 2048,
        cpu_seconds: int | None = None,
        max_output_bytes: int = 1 << 20,
        max_processes: int = 64,
        max_parallel: int | None = None,
        sandbox: str = "bwrap",
    ):
        if sandbox not in ("bwrap", "none"):
            raise ValueError(f"sandbox must be 'bwrap' or 'none', got {sandbox!r}.")
        for name, value in (
            ("timeout", timeout),
            ("memory_limit_mb", memory_limit_mb),
            ("max_output_bytes", max_output_bytes),
            ("max_processes", max_processes),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}.")
        if cpu_seconds is not None and cpu_seconds < 1:
            raise ValueError(f"cpu_seconds must be >= 1 (RLIMIT_CPU counts whole seconds), got {cpu_seconds}.")
        if max_parallel is not None and max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1 or None (os.cpu_count()), got {max_parallel}.")
        self.timeout = float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.cpu_seconds = cpu_seconds if cpu_seconds is not None else max(1, int(-(-timeout // 1)))
        self.max_output_bytes = max_output_bytes
        self.max_processes = max_processes
        self.max_parallel = max_parallel or os.cpu_count() or 1
        self.sandbox = sandbox
        self.__name__ = "code_reward"  # TRL names the reward's metrics after it
        # Root ignores RLIMIT_NPROC, so as root the sandbox drops to an unprivileged uid (see the module docstring).
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
        arguments = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        if self._drop_privileges:
            arguments += _hidden_path_binds()
            # Root's bwrap does not create a user namespace and would keep every capability: keep only what the
            # harness needs to drop to its uid (the kernel clears them at that point).
            namespaces = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            capabilities = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            namespaces, capabilities = ["--unshare-all"], []
        return [
            *arguments,
            *namespaces,
            *capabilities,
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", _PATH,
            "--setenv", "HOME", "/tmp",
            "--setenv", "LANG", "C.UTF-8",
        ]  # fmt: skip

    def _probe(self) -> None:
        """Runs a trivial program once per process and configuration; raises if the sandbox cannot start."""
        key = tuple(self._bwrap_arguments)
        with _probe_lock:
            if key in _probed_sandboxes:
                return
            outcome = self._run("x = 1", setup="", tests="assert x == 1", entry_point=None)
            if outcome.status != "pass":
                raise RuntimeError(
                    f"The code verifier's bubblewrap sandbox failed to run a trivial program ({outcome.status}: "
                    f"{outcome.reason}). {_INSTALL_HINT}"
                )
            _probed_sandboxes.add(key)

    # ------------------------------------------------------------------------------------------------------- runs
    def _run(self, program: str, setup: str, tests: str, entry_point: str | None) -> _Outcome:
        """Runs one program against its tests in a fresh sandbox; never leaves a process behind."""
        token = secrets.token_hex(16)
        uid = _SANDBOX_UID_BASE + random.randrange(_SANDBOX_UID_BASE) if self._drop_privileges else None
        limits = {
            "RLIMIT_AS": self.memory_limit_mb * 1024 * 1024,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_FSIZE": _MAX_FILE_BYTES,
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_CORE": 0,
        }
        payload = {
            "token": token,
            "program": program,
            "setup": setup,
            "tests": tests,
            "entry_point": entry_point,
            "limits": limits,
            "uid": uid,
        }
        workdir = tempfile.mkdtemp(prefix="trl_kimi_code_")
        # The payload travels in a memfd, not a file in the workdir: the harness closes it before the program runs.
        payload_fd = os.memfd_create("trl_kimi_code_payload")
        result_read, result_write = os.pipe()
        output_read, output_write = os.pipe()
        process = None
        try:
            os.write(payload_fd, json.dumps(payload).encode())
            os.lseek(payload_fd, 0, os.SEEK_SET)
            harness = [sys.executable, "-I", "-B", "-c", _HARNESS_SOURCE, str(payload_fd), str(result_write)]
            if self.sandbox == "bwrap":
                if uid is not None:
                    os.chown(workdir, uid, uid)
                    # bwrap enters the directory after dropping CAP_DAC_OVERRIDE: "others" need search permission.
                    os.chmod(workdir, 0o701)
                command = [*self._bwrap_arguments, "--bind", workdir, "/tmp", "--chdir", "/tmp", "--", *harness]
                env = {"PATH": _PATH}
                marker = None
            else:
                command = harness
                marker = f"{_RUN_MARKER}={token[:16]}"
                env = {"PATH": _PATH, "HOME": workdir, "LANG": "C.UTF-8", _RUN_MARKER: token[:16]}
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,  # a program waiting on input() gets EOF
                stdout=output_write,
                stderr=output_write,
                pass_fds=(payload_fd, result_write),
                cwd=workdir,
                env=env,
                start_new_session=True,  # its own process group, killed as a whole at the end
            )
            for fd in (payload_fd, result_write, output_write):
                os.close(fd)
            payload_fd = result_write = output_write = -1
            status, output, result = self._collect(process, output_read, result_read)
        finally:
            for fd in (payload_fd, result_write, output_write, output_read, result_read):
                if fd >= 0:
                    os.close(fd)
            if process is not None:
                self._kill_tree(process, marker if self.sandbox == "none" else None)
            shutil.rmtree(
                workdir, onerror=lambda *args: logger.warning("Could not remove %s: %s", args[1], args[2][1])
            )

        if status != "done":
            return _Outcome(status, f"after {self.timeout:g}s" if status == "timeout" else "")
        if result == f"PASS {token}\n".encode():
            return _Outcome("pass")
        text = output.decode("utf-8", errors="replace")
        if not result and process.returncode != 0 and text.startswith("bwrap:"):
            return _Outcome("sandbox_error", text.strip()[-500:])
        reason = result.decode("utf-8", errors="replace").strip() or f"no result (exit status {process.returncode})"
        return _Outcome("fail", f"{reason}; output: {text[-300:]!r}")

    def _collect(self, process: subprocess.Popen, output_fd: int, result_fd: int) -> tuple[str, bytes, bytes]:
        """Reads output (capped) and the result until both pipes close, the process is gone, or the deadline."""
        deadline = time.monotonic() + self.timeout
        buffers = {output_fd: bytearray(), result_fd: bytearray()}
        exited_at = None
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                now = time.monotonic()
                if now >= deadline:
                    return "timeout", bytes(buffers[output_fd]), bytes(buffers[result_fd])
                if exited_at is None and os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    exited_at = now  # leftover children may hold the pipes open: read what is there, then stop
                if exited_at is not None and now - exited_at > _EXIT_GRACE_SECONDS:
                    break
                for key, _ in selector.select(timeout=min(deadline - now, _EXIT_GRACE_SECONDS)):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    buffers[key.fd] += chunk
                    if len(buffers[output_fd]) > self.max_output_bytes:
                        return "output_limit", bytes(buffers[output_fd]), bytes(buffers[result_fd])
                    if len(buffers[result_fd]) > 4096:  # the harness writes one short line
                        return "done", bytes(buffers[output_fd]), bytes(buffers[result_fd])
        return "done", bytes(buffers[output_fd]), bytes(buffers[result_fd])

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

    # --------------------------------------------------------------------------------------------------- reward
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
        jobs: list[tuple[str, str, str, str | None] | None] = []
        outcomes: list[_Outcome | None] = []
        for row, completion in enumerate(completions):
            if test is not None and test[row] and entry_point is not None and entry_point[row]:
                if not entry_point[row].isidentifier():
                    raise ValueError(
                        f"entry_point of row {row} must be a Python identifier, got {entry_point[row]!r}."
                    )
                tests, setup, name = f"{test[row]}\ncheck({entry_point[row]})\n", "", entry_point[row]
            elif test_list is not None and test_list[row] is not None:
                tests, name = "\n".join(test_list[row]) + "\n", None
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
            text = completion_text(completion)
            program = _extract_program(text) if text else None
            if not program or not program.strip():
                reason = "empty completion" if not text else "no complete Python code block (truncated?)"
                logger.debug("code_reward row %d scores 0: %s.", row, reason)
                outcomes.append(_Outcome("no_program", reason))
                jobs.append(None)
            else:
                outcomes.append(None)
                jobs.append((program, setup, tests, name))

        def run(job: tuple[str, str, str, str | None]) -> _Outcome:
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

    Example:
    ```python
    >>> solution = "```python\ndef double(x):\n    return 2 * x\n```"
    >>> code_reward([solution, "```python\nimport os\nos._exit(0)\n```"],
    ...             test=["def check(candidate):\n    assert candidate(2) == 4\n"] * 2, entry_point=["double"] * 2)
    [1.0, 0.0]

    ```
    """
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = CodeVerifier()
    return _default_verifier(completions, test=test, entry_point=entry_point, test_list=test_list, **kwargs)
