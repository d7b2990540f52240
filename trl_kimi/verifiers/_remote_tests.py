"""Trusted side of the code verifier's "serve" mode: run a dataset's tests here, the program's calls in the sandbox.

The tests (HumanEval `check(candidate)`, MBPP `assert f(x) == y` lines, `test_setup_code`) are executed in the
verifier's own process, in a namespace where every name they do not define themselves and that is not a builtin stands
for a global of the program. Calling such a name, reading or writing one of its attributes, sends one JSON line to the
sandboxed harness (`_sandbox_harness.serve`), which answers with plain built-in values (`_decode` here accepts nothing
else) or with an opaque handle for any other object. A handle can only be passed back to the program, called, or have
its attributes read or set; comparing it, hashing it, testing its truth or iterating it is a violation that fails the
run even when the tests swallow the exception. So the comparisons (`==`, `math.isclose`, `abs(a - b) < tol`, `set(..)`,
`sorted(..)`) run on data this process decoded itself, with builtins the program cannot reach, and the expected values
never leave this process.

Arguments the tests pass to the program travel as data too, or by reference the other way: a function or lambda of
the tests, or an iterator or generator, is kept here and called here when the program calls it (a callback), a
`range` is rebuilt in the sandbox. Any other object (an instance of a class the tests define) cannot cross, and fails
the run with `Unrewritable`: every row runs through this one harness.

Helpers that the row's prompt defines (HumanEval's `encode_shift`, `poly`) and its tests call are the prompt's: they are
defined here from the prompt, after the program ran, so a program that redefines them changes nothing.

An exception escaping a call into the program fails the run, even when the tests catch it; it is raised into the tests
as the built-in exception of that name, so their flow is unchanged. `StopIteration` and `StopAsyncIteration` are not
raised into the tests at all: they would end a loop of the tests (`all(map(...))`) as if it had succeeded.
"""

import ast
import builtins
import collections
import collections.abc
import importlib
import json
import os
import selectors
import sys
import time
from typing import Any, NoReturn


# One response line from the sandbox may hold this many bytes; a longer one fails the run (a result is plain data a
# test compares, not a payload).
MAX_RESPONSE_BYTES = 1 << 22
# Nesting depth of a decoded value; deeper fails the run rather than hitting the recursion limit mid-test.
_MAX_DEPTH = 200
# Bits of a decoded integer: arithmetic the tests do on a result (`candidate(n) ** 2`) runs in C, holding the GIL, and
# the deadline cannot interrupt it; 2**17 bits (~39,000 digits) is far beyond any test's expected value.
_MAX_INT_BITS = 1 << 17
# Distinct values with one hash a response may hold. Integers, floats and tuples have predictable hashes, so a program
# can answer with values that all hash alike; a set or dict of them costs quadratic time in C (the GIL held, the
# deadline powerless). Honest data almost never has two distinct values with one hash; 8 is generous.
_MAX_SAME_HASH = 8
# Hashing a tuple hashes everything inside it again, so nested tuples cost their size times their depth. The values
# hashed per response are capped at this many, nested ones counted at every level (a response of the size cap holds
# at most ~300,000 pairs, ~900,000): beyond it the run fails.
_MAX_HASH_WORK = 1 << 21
# Integers below this hash to themselves (`hash(-1) == hash(-2)` aside): they cannot collide, and skip the check.
_DISTINCT_HASH = (1 << 61) - 1
_SMALL_INT = 1 << 53
_FACTORIES = {"int": int, "float": float, "str": str, "list": list, "tuple": tuple, "set": set, "dict": dict}


class Violation(BaseException):
    """The program answered with something that is not plain data, or the tests used a handle as a value."""


class Deadline(BaseException):
    """The run's wall-clock deadline passed (raised in the tests' thread)."""


class SandboxGone(BaseException):
    """The sandboxed program exited or closed its end before answering."""


class OutputLimit(BaseException):
    """The program wrote more than `max_output_bytes` to stdout/stderr."""


class Unrewritable(BaseException):
    """The tests need something that cannot cross the process boundary (e.g. they pass a lambda to the program)."""


class RemoteError(Exception):
    """The program raised an exception that is not a built-in `Exception` subclass."""


# BaseException subclasses so that `except Exception:` in the tests cannot swallow them; the channel records each one
# as well, for tests that catch everything.
_CONTROL = (Violation, Deadline, SandboxGone, OutputLimit, Unrewritable)


class Channel:
    """One run's pipes to the sandboxed harness, with its deadline and output cap."""

    def __init__(self, request_fd: int, response_fd: int, output_fd: int, deadline: float, max_output_bytes: int):
        self.request_fd, self.response_fd, self.output_fd = request_fd, response_fd, output_fd
        self.deadline, self.max_output_bytes = deadline, max_output_bytes
        self.output = bytearray()
        self.calls = 0
        self.failure: BaseException | None = None  # the first control exception, kept even if the tests swallow it
        self._buffer = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(response_fd, selectors.EVENT_READ)
        self._selector.register(output_fd, selectors.EVENT_READ)
        self.callbacks: list = []  # functions and iterators of the tests the program may call back

    def register(self, target: Any) -> int:
        self.callbacks.append(target)
        return len(self.callbacks) - 1

    def close(self) -> None:
        self._selector.close()

    def record(self, error: BaseException) -> BaseException:
        """Keeps the run's first control exception: it fails the run even if the tests swallow it."""
        if self.failure is None:
            self.failure = error
        return error

    def fail(self, error: BaseException) -> NoReturn:
        """The one way a run is stopped: every rejected response, deadline, output overflow or lost sandbox."""
        raise self.record(error)

    def violation(self, what: str) -> NoReturn:
        self.fail(Violation(what))

    def receive(self) -> list:
        """The next response line, decoded as JSON (not yet as values)."""
        while b"\n" not in self._buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.fail(Deadline("the run's deadline passed"))
            for key, _ in self._selector.select(timeout=remaining):
                chunk = os.read(key.fd, 65536)
                if key.fd == self.output_fd:
                    if not chunk:
                        self._selector.unregister(self.output_fd)
                    self.output += chunk
                    if len(self.output) > self.max_output_bytes:
                        self.fail(OutputLimit(f"more than {self.max_output_bytes} bytes of output"))
                    continue
                if not chunk:
                    self.fail(SandboxGone("the program exited" + (" (after its calls)" if self.calls else "")))
                self._buffer += chunk
                if len(self._buffer) > MAX_RESPONSE_BYTES:
                    self.violation(f"a response over {MAX_RESPONSE_BYTES} bytes")
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # integers over Python's digit limit, `[[[[...` bombs
            message = None
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            self.violation(f"a malformed response (not JSON, or not a list opened by a string): {line[:100]!r}")
        return message

    def request(self, message: list) -> Any:
        """Sends one request; returns the decoded result, re-raises the program's exception."""
        if self.failure is not None:
            raise self.failure
        self.calls += 1
        self.send(message)
        response = self.receive()
        while response[0] == "callback" and len(response) == 4:
            self.send(self.call_back(*response[1:]))
            response = self.receive()
        if response[0] == "raise" and len(response) == 3:
            if response[1] in ("StopIteration", "StopAsyncIteration"):
                # Raised into a loop of the tests (`all(map(candidate, cases))`) it would end the loop as a success.
                self.violation(f"the program raised {response[1]}")
            error = _program_exception(*response[1:])
            if message[0] == "call":
                # An exception escaping a call into the program fails the run, even if the tests catch it
                # (`except Exception: pass` would turn a crash into a pass); the tests still see it raised.
                self.record(Violation(f"the program raised {type(error).__name__}: {str(error)[:200]}"))
            raise error
        if response[0] != "ok" or len(response) != 3 or not isinstance(response[2], dict):
            self.violation(f"a malformed response {str(response)[:100]!r}")
        return self.decode(response[1]), response[2]

    def send(self, message: list) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.request_fd, data) :]
        except (BrokenPipeError, OSError):
            self.fail(SandboxGone("the program closed its end"))

    def call_back(self, ident: Any, args: Any, kwargs: Any) -> list:
        """Runs a function (or `next()` of an iterator) of the tests that the program called; returns the answer."""
        if (
            type(ident) is not int
            or not 0 <= ident < len(self.callbacks)
            or type(args) is not list
            or type(kwargs) is not dict
        ):
            self.violation("a malformed callback")
        target = self.callbacks[ident]
        arguments = [self.decode(item) for item in args]
        keywords = {str(key): self.decode(item) for key, item in kwargs.items()}
        try:
            if isinstance(target, collections.abc.Iterator):
                result = next(target)
            else:
                result = target(*arguments, **keywords)
        except StopIteration:
            return ["stop"]
        except Exception as error:  # the tests' function raised: the program sees it as that exception
            return ["raise", type(error).__name__, str(error)[:1000]]
        return ["return", encode(result, self)]

    def wait_ready(self) -> None:
        """Waits until the program ran to its end; re-raises what it raised at top level."""
        response = self.receive()
        if response[0] == "raise" and len(response) == 3:
            raise _program_exception(*response[1:])
        if response != ["ready"]:
            self.violation(f"a malformed start-up line {str(response)[:100]!r}")

    def decode(self, data: Any) -> Any:
        """Strictly decodes a value written by the sandbox: plain built-in values and handles, nothing else. The cost
        is linear in the response's size (times its nesting depth for tuples): integers are size-capped, and values
        whose hashes collide are refused before any set or dict is built from them (see `_HashGuard`)."""
        return self._decode(data, 0, _HashGuard(self))

    def _decode(self, data: Any, depth: int, guard: "_HashGuard") -> Any:
        guard.decoded += 1
        kind = type(data)
        if kind is str or kind is bool or data is None:
            return data
        if kind is float:
            return guard.check(data)
        if kind is int:
            if -_DISTINCT_HASH < data < _DISTINCT_HASH:
                return data
            if data.bit_length() > _MAX_INT_BITS:
                self.violation(f"an integer over {_MAX_INT_BITS} bits")
            return guard.check(data)
        if kind is not list or not data or depth > _MAX_DEPTH:
            self.violation(f"a value that is not plain data: {str(data)[:100]!r}")
        tag, items = data[0], data[1:]
        try:
            if tag == "r" and len(items) == 1 and type(items[0]) is int:
                return RemoteObject(self, ["r", items[0]])
            if tag == "i" and len(items) == 1 and type(items[0]) is str:
                if len(items[0]) > _MAX_INT_BITS // 4 + 2:
                    self.violation(f"an integer over {_MAX_INT_BITS} bits")
                return guard.check(int(items[0], 16))
            if tag in ("b", "B") and len(items) == 1 and type(items[0]) is str:
                return (bytes if tag == "b" else bytearray).fromhex(items[0])
            if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
                return guard.check(complex(*items))
            if tag == "D":
                if items[:1] and items[0] is not None and items[0] not in _FACTORIES:
                    self.violation(f"a defaultdict with the default factory {str(items[0])[:20]!r}")
                factory = _FACTORIES.get(items[0]) if items[:1] else None
                values = [self._decode(item, depth + 1, guard) for item in items[1:]]
                return collections.defaultdict(factory, _pairs(values))
            if tag == "q" and items and (items[0] is None or type(items[0]) is int):
                return collections.deque([self._decode(item, depth + 1, guard) for item in items[1:]], items[0])
            before = guard.decoded
            values = [self._decode(item, depth + 1, guard) for item in items]
            if tag == "l":
                return values
            if tag == "t":
                return guard.check(tuple(values), guard.decoded - before)
            if tag == "s":
                return set(values)
            if tag == "f":
                return guard.check(frozenset(values), guard.decoded - before)
            if tag == "d":
                return dict(_pairs(values))
            if tag == "C":
                return collections.Counter(dict(_pairs(values)))
            if tag == "O":
                return collections.OrderedDict(_pairs(values))
        except (TypeError, ValueError, OverflowError) as error:  # unhashable keys, odd pair counts, bad hex
            self.violation(f"a malformed {tag!r} value: {error}")
        self.violation(f"an unknown value tag {str(tag)[:20]!r}")


class _HashGuard:
    """Counts the distinct values per hash among the integers, floats, complex numbers, tuples and frozensets of one
    response (strings and bytes have randomised hashes); more than `_MAX_SAME_HASH` fails the run. Each value is
    compared with at most `_MAX_SAME_HASH` others, so the check is linear too."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.seen: dict[int, list] = {}
        self.decoded = 0  # values decoded so far in this response
        self.work = 0  # values hashed so far, nested ones counted at every level

    def check(self, value: Any, size: int = 1) -> Any:
        self.work += size
        if self.work > _MAX_HASH_WORK:
            self.channel.violation("a response whose tuples are nested too deeply to hash in bounded time")
        try:
            key = hash(value)
        except TypeError:  # a tuple holding a list: unhashable, so it never enters a set or dict
            return value
        same = self.seen.setdefault(key, [])
        if len(same) < _MAX_SAME_HASH:
            if not any(other is value or _same(other, value) for other in same):
                same.append(value)
        elif not any(other is value or _same(other, value) for other in same):
            self.channel.violation(f"more than {_MAX_SAME_HASH} distinct values with one hash")
        return value


def _same(a: Any, b: Any) -> bool:
    """`a == b` for decoded values, where `nan` (unequal to itself) is one value."""
    return type(a) is type(b) and (a == b or (a != a and b != b))


def _pairs(values: list) -> list:
    if len(values) % 2:
        raise ValueError("odd number of mapping items")
    return list(zip(values[::2], values[1::2]))


def _program_exception(name: Any, message: Any) -> Exception:
    """The program's exception as one the tests can catch: the built-in class of that name, or `RemoteError`."""
    kind = getattr(builtins, name, None) if isinstance(name, str) else None
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = RemoteError
    try:
        return kind(str(message))
    except Exception:  # a built-in whose constructor needs other arguments (UnicodeDecodeError)
        return RemoteError(f"{name}: {message}")


def encode(value: Any, channel: Channel, depth: int = 0) -> Any:
    """Encodes an argument the tests pass to the program: plain data as such, a `range` to rebuild, functions and
    iterators by reference (callbacks); raises `Unrewritable` for anything else."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_SMALL_INT < value < _SMALL_INT else ["i", hex(value)]
    if kind is RemoteObject:
        return object.__getattribute__(value, "_key")
    if depth > _MAX_DEPTH:
        raise Unrewritable("an argument nested too deeply")
    depth += 1
    if kind in (list, tuple, set, frozenset):
        return [{list: "l", tuple: "t", set: "s", frozenset: "f"}[kind], *(encode(x, channel, depth) for x in value)]
    if kind is dict:
        return ["d", *(encode(x, channel, depth) for pair in value.items() for x in pair)]
    if kind is bytes or kind is bytearray:
        return ["b" if kind is bytes else "B", value.hex()]
    if kind is complex:
        return ["c", value.real, value.imag]
    if kind is collections.Counter or kind is collections.OrderedDict:
        return [
            "C" if kind is collections.Counter else "O",
            *(encode(x, channel, depth) for p in value.items() for x in p),
        ]
    if kind is collections.defaultdict:
        name = {v: k for k, v in _FACTORIES.items()}.get(value.default_factory)
        if value.default_factory is not None and name is None:
            raise Unrewritable(f"a defaultdict with factory {value.default_factory!r}")
        return ["D", name, *(encode(x, channel, depth) for pair in value.items() for x in pair)]
    if kind is collections.deque:
        return ["q", value.maxlen, *(encode(x, channel, depth) for x in value)]
    if kind is type and getattr(builtins, value.__name__, None) is value:  # `remove_datatype(t, int)` (MBPP 476)
        return ["T", value.__name__]
    if kind is range:
        return ["range", *(encode(x, channel, depth) for x in (value.start, value.stop, value.step))]
    if isinstance(value, collections.abc.Iterator):  # generators, `map`, `iter(...)`
        return ["it", channel.register(value)]
    if callable(value) and not isinstance(value, type):  # functions, lambdas, bound methods, `functools.partial`
        return ["cb", channel.register(value)]
    raise Unrewritable(f"the tests pass a {kind.__qualname__} to the program")


def _refuse(operation: str):
    def refuse(self, *args: Any) -> Any:
        channel = object.__getattribute__(self, "_channel")
        channel.violation(f"the tests {operation} an object the program returned, not plain data")

    return refuse


class RemoteObject:
    """A program global or an object the program returned: callable, attributes readable and settable, nothing else."""

    __slots__ = ("_channel", "_key")

    def __init__(self, channel: Channel, key: list):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_key", key)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = object.__getattribute__(self, "_channel")
        encoded_args = [encode(a, channel) for a in args]
        encoded_kwargs = {k: encode(v, channel) for k, v in kwargs.items()}
        result, changed = channel.request(
            ["call", object.__getattribute__(self, "_key"), encoded_args, encoded_kwargs]
        )
        for key, data in changed.items():  # in-place changes the program made to mutable arguments
            target = args[int(key)] if key.isdigit() and int(key) < len(args) else kwargs.get(key)
            value = channel.decode(data)
            if type(target) is not type(value) or type(target) not in (list, dict, set, bytearray):
                channel.violation(f"a malformed update of argument {key!r}")
            if isinstance(target, (dict, set)):
                target.clear()
                target.update(value)
            else:
                target[:] = value
        return result

    def __getattr__(self, name: str) -> Any:
        channel = object.__getattribute__(self, "_channel")
        return channel.request(["getattr", object.__getattribute__(self, "_key"), name])[0]

    def __setattr__(self, name: str, value: Any) -> None:
        channel = object.__getattribute__(self, "_channel")
        channel.request(["setattr", object.__getattribute__(self, "_key"), name, encode(value, channel)])

    __eq__ = _refuse("compared")
    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__
    __hash__ = _refuse("hashed")
    __bool__ = _refuse("tested the truth of")
    __len__ = __iter__ = __contains__ = __getitem__ = _refuse("iterated or indexed")
    __index__ = __int__ = __float__ = __complex__ = _refuse("converted")
    __repr__ = __str__ = __format__ = _refuse("printed")
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __mod__ = __neg__ = __abs__ = _refuse(
        "did arithmetic on"
    )


class _ProgramGlobals(dict):
    """Test globals: a name the tests neither define nor find in builtins is the program's global of that name."""

    def __init__(self, channel: Channel, safe_builtins: dict):
        super().__init__(__builtins__=safe_builtins, __name__="__tests__")
        self._channel = channel

    def __missing__(self, name: str) -> Any:
        if name in self["__builtins__"] or name.startswith("__"):
            raise KeyError(name)  # CPython then looks the name up in the builtins
        # The global's value: plain data as such, functions and other objects as handles (kept: calls are frequent).
        value = self._channel.request(["get", ["g", name]])[0]
        if type(value) is RemoteObject:
            self[name] = value
        return value


def _tested_builtins(tests: str) -> set[str]:
    """
    MBPP tests whose only free names are builtins (task 126 tests its own `sum`): the builtin called in every `assert`
    is the function under test. Otherwise the tests' builtins stay the real ones, so a program's `def abs` or `def set`
    cannot stand in for them.
    """
    tree = ast.parse(tests)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    stored |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stored |= {
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - stored
    if loaded - set(vars(builtins)):
        return set()
    asserts = [node for node in tree.body if isinstance(node, ast.Assert)]
    called = [
        {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        for node in asserts
    ]
    return set.intersection(*called) - stored if called else set()


def _stdlib_modules_used(code: str) -> set[str]:
    """
    Standard-library modules the tests use (`math.isclose(...)`) without importing them, relying on the program's
    import: the tests get the real module, not whatever the program bound to that name (a fake `math`).
    """
    tree = ast.parse(code)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    used = {
        node.value.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in sys.stdlib_module_names
    }
    return used - stored


def _quiet_print(*args: Any, **kwargs: Any) -> None:
    """`print` for the tests: they run in the trainer's process, whose output is not theirs to write to."""


def prompt_code(prompt: Any) -> str | None:
    """The definitions in a row's prompt, as code, or `None`: from the last fenced block of its text (the last user
    message of a conversational prompt), else from the whole text if it parses (HumanEval's `prompt` column). Only
    imports, `def`, `class` and assignments of literals are kept: statements that would run something (a call, a
    loop) are not definitions of helpers."""
    if isinstance(prompt, list):
        texts = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        prompt = texts[-1] if texts else None
        if isinstance(prompt, list):  # multimodal parts
            prompt = "".join(part.get("text", "") for part in prompt if isinstance(part, dict))
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    if "```" in prompt:
        blocks = prompt.split("```")[1::2]  # the text inside each pair of fences
        code = None
        for block in blocks:
            first, _, rest = block.partition("\n")
            if first.strip().lower() in ("", "python", "py", "python3"):
                code = rest
        prompt = code or ""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError):
        # Prose, then code without a fence ("Complete this function:\n\ndef f(x): ..."): the code from its first
        # `def`/`class`/`import` line on.
        lines = prompt.splitlines(keepends=True)
        first = next(
            (i for i, line in enumerate(lines) if line.startswith(("def ", "class ", "import ", "from "))), None
        )
        try:
            tree = ast.parse("".join(lines[first:])) if first is not None else None
        except (SyntaxError, ValueError):
            tree = None
        if tree is None:
            return None
    tree.body = [node for node in tree.body if _is_definition(node)]
    return ast.unparse(tree) if tree.body else None


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        try:
            ast.literal_eval(node.value)  # `FIX = """..."""` (HumanEval/64), constants
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False
        return True
    return False


def _prompt_helpers(code: str, entry_point: str | None, tests_define: set[str]) -> set[str]:
    """Top-level names the prompt defines (functions, classes, assignments, imports), but the entry point and the
    names the tests define themselves."""
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    return names - {entry_point} - tests_define


def run_tests(channel: Channel, setup: str, tests: str, entry_point: str | None, prompt: str | None = None) -> None:
    """
    Runs `setup` and `tests` (and `check(<entry_point>)` for HumanEval rows) here, the program's calls in the sandbox.
    The helpers of `prompt` (the row's prompt code, see `prompt_code`) are defined here, after the program ran.
    Returns when every test passed; raises the tests' exception (or a control exception) otherwise.
    """
    setup_code = compile(setup, "<test_setup>", "exec", dont_inherit=True, optimize=0)
    test_code = compile(tests, "<tests>", "exec", dont_inherit=True, optimize=0)
    safe_builtins = dict(vars(builtins), print=_quiet_print)
    namespace = _ProgramGlobals(channel, safe_builtins)
    for name in _tested_builtins(tests) if entry_point is None else ():
        namespace[name] = RemoteObject(channel, ["g", name])
    for name in _stdlib_modules_used(setup + "\n" + tests):
        try:
            namespace[name] = importlib.import_module(name)
        except ImportError:  # not importable here (`msvcrt` on Linux): left to the program, like any other name
            pass
    channel.wait_ready()
    if prompt is not None:
        tree = ast.parse(setup + "\n" + tests)
        tests_define = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        helpers = _prompt_helpers(prompt, entry_point, tests_define)
        if helpers:
            # The prompt is the dataset's code, like the tests: it runs here. Its copy of the entry point is a stub,
            # so inside the prompt's helpers that name is the program's function.
            prompt_namespace = {"__builtins__": safe_builtins, "__name__": "__prompt__"}
            try:
                exec(compile(prompt, "<prompt>", "exec", dont_inherit=True), prompt_namespace)
            except Exception as error:
                # Fail closed: without the prompt's helpers, the tests would call the program's.
                raise Unrewritable(
                    f"the prompt's definitions do not run in the verifier's process ({error!r})"
                ) from None
            if entry_point is not None:
                prompt_namespace[entry_point] = RemoteObject(channel, ["g", entry_point])
            for name in helpers:
                if name in prompt_namespace:
                    namespace[name] = prompt_namespace[name]
    exec(setup_code, namespace)
    exec(test_code, namespace)
    if entry_point is not None:
        check = dict.get(namespace, "check")
        if not callable(check):
            raise ValueError("the HumanEval-style `test` code defines no `check(candidate)` function")
        check(RemoteObject(channel, ["g", entry_point]))
    if channel.failure is not None:  # swallowed by the tests (`except BaseException`)
        raise channel.failure
