"""Test harness that runs *inside* the sandbox of [`~trl_kimi.verifiers.CodeVerifier`].

It has two modes, chosen by the payload's `mode`:

- `"serve"` (the default path): the harness runs the program, then only answers calls. The trusted verifier runs the
  tests in its own process and sends each call the tests make to a program name (`candidate(...)`, `f(x)`,
  `obj.method(...)`, attribute reads and writes) as one JSON line on `request_fd`; the harness evaluates it and writes
  the result back on `response_fd`, serialised as plain built-in values (see `_encode`), non-plain objects as opaque
  handles. Expected values and comparisons never enter the sandbox, so nothing the program does here can change a
  verdict: at worst it answers with plain data an honest function could have returned.
- `"inprocess"` (the fallback for tests that cannot be evaluated that way, e.g. ones passing a lambda to the program):
  program and tests share this interpreter, and the checks below make the common hacks score 0.

In-process protocol:

The verifier passes this file's source to `python -I -B -c`, so the harness is never a file the candidate program can
edit, and its protocol is:

    python -I -B -c <this source> <payload_fd> <result_fd> [<request_fd>]

`payload_fd` is a memfd holding a JSON object with the per-run secret `token`, the `program`, the `setup` and `tests`
code, the `entry_point` (or `null`), the resource `limits` and the `uid` to drop to (or `null`). The harness reads it and
closes it *before* the program runs, so the program cannot read the token from it. Only after every test ran, and after
the checks below, does it write `PASS <token>` to `result_fd`; on failure it writes `FAIL <reason>`. The parent scores 1
only for the exact `PASS <token>` line: exiting early (`os._exit(0)`, `sys.exit(0)`) leaves no token.

Checks against reward hacks, all done by this trusted code between the program and the tests:
- builtins and the attributes of every module loaded before the program are snapshotted, then restored before the tests;
  a program that replaced a builtin or a module function (`builtins.abs`, `math.isclose`, `sys.exit`, ...) fails;
- `sys.settrace`/`sys.setprofile` are disabled (a trace function can jump over `assert` lines);
- the program may not leave threads running (a thread could re-patch helpers while the tests run);
- the functions the tests call return plain built-in values only (an object whose `__eq__` always returns `True` would
  pass every `assert f(x) == y`); anything else fails the run, even when the test code swallows the exception;
- the tests are compiled here with `optimize=0`, so their `assert` statements cannot be stripped.

This is an in-process harness: a program that goes out of its way (`ctypes`, walking the garbage collector for the
harness's closures) can still reach the token. The sandbox around it is the security boundary; the token makes the
common hacks score 0.
"""

import builtins
import os
import sys


# Modules the tests commonly use, imported before the program so that their pristine attributes are in the snapshot.
# `unittest` is left out on purpose: it costs ~25 ms a run; modules the program imports itself are evicted instead.
_PREIMPORTED = (
    "math",
    "cmath",
    "re",
    "string",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "operator",
)
_PLAIN_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_PLAIN_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
# Standard containers that reference solutions return (MBPP: `Counter`, `defaultdict`). Exact types only, and the one
# pure-Python class among them, `Counter`, has its class dict checked like a module's (see `restore`).
_COLLECTIONS = ("Counter", "defaultdict", "OrderedDict", "deque")
# Rebinding these is legitimate (a program redirecting its own output); they are restored without failing the run.
_SYS_HOOKS = frozenset({"stdin", "stdout", "stderr", "displayhook", "excepthook", "breakpointhook", "unraisablehook"})


_collection_types: frozenset = frozenset()


def _first_non_plain_type(value: object) -> type | None:
    """Returns the first type in `value` that is not a plain built-in value (exact types only), or `None`."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _PLAIN_SCALARS:
            continue
        if kind not in _PLAIN_CONTAINERS and kind not in _collection_types:
            return kind
        if id(item) in seen:  # self-referencing containers
            continue
        seen.add(id(item))
        if isinstance(item, dict):  # exact dict, Counter, defaultdict or OrderedDict
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            stack.extend(item)
    return None


# ----------------------------------------------------------------------------------------------------- serve mode
# Wire format of values, shared with `trl_kimi/verifiers/_remote_tests.py` (which decodes strictly): JSON, where `str`,
# `float`, `bool`, `None` and small `int` are themselves and everything else is a list whose first item is a tag.
_SMALL_INT = 1 << 53
_MUTABLE = frozenset({list, dict, set, bytearray})
_FACTORIES = {int: "int", float: "float", str: "str", list: "list", tuple: "tuple", set: "set", dict: "dict"}


def _encode(value: object, handles: dict, depth: int = 0) -> object:
    """Plain data as JSON-ready lists; any other object becomes `["r", handle]`, kept in `handles`."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_SMALL_INT < value < _SMALL_INT else ["i", hex(value)]
    if depth > 200:
        raise ValueError("value nested deeper than 200 levels")
    depth += 1
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        tag = {list: "l", tuple: "t", set: "s", frozenset: "f"}[kind]
        return [tag, *(_encode(item, handles, depth) for item in value)]
    if kind is dict:
        return ["d", *(_encode(x, handles, depth) for pair in value.items() for x in pair)]
    if kind is bytes or kind is bytearray:
        return ["b" if kind is bytes else "B", value.hex()]
    if kind is complex:
        return ["c", value.real, value.imag]
    if kind in _collection_types:
        name = kind.__name__
        if name == "deque":
            return ["q", value.maxlen, *(_encode(item, handles, depth) for item in value)]
        items = [_encode(x, handles, depth) for pair in dict.items(value) for x in pair]
        if name == "defaultdict":
            return ["D", _FACTORIES.get(value.default_factory), *items]
        return ["C" if name == "Counter" else "O", *items]
    handle = len(handles)
    handles[handle] = value
    return ["r", handle]


def _decode(data: object, namespace: dict, handles: dict) -> object:
    """Arguments sent by the verifier: plain data, handles and program globals (`["g", name]`)."""
    if not isinstance(data, list):
        return data
    tag, items = data[0], data[1:]
    if tag == "r":
        return handles[items[0]]
    if tag == "g":
        if items[0] not in namespace:
            raise NameError(f"name {items[0]!r} is not defined")
        return namespace[items[0]]
    if tag == "i":
        return int(items[0], 16)
    if tag == "T":
        return getattr(builtins, items[0])
    if tag in ("b", "B"):
        return (bytes if tag == "b" else bytearray).fromhex(items[0])
    if tag == "c":
        return complex(items[0], items[1])
    values = [_decode(item, namespace, handles) for item in items]
    if tag in ("l", "t", "s", "f"):
        return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](values)
    if tag == "d":
        return dict(zip(values[::2], values[1::2]))
    collections = sys.modules["collections"]
    if tag == "C" or tag == "O":
        return (collections.Counter if tag == "C" else collections.OrderedDict)(zip(values[::2], values[1::2]))
    if tag == "D":
        factory = {name: kind for kind, name in _FACTORIES.items()}.get(items[0])
        return collections.defaultdict(factory, zip(values[1::2], values[2::2]))
    if tag == "q":
        return collections.deque(values[1:], items[0])
    raise ValueError(f"unknown tag {tag!r}")


def serve(payload: dict, request_fd: int, response_fd: int) -> None:
    """Runs the program, then answers the verifier's calls until it closes the request pipe."""
    import json

    dumps, loads, write = json.dumps, json.loads, os.write
    for module_name in _PREIMPORTED:
        __import__(module_name)
    global _collection_types
    collections = sys.modules["collections"]
    _collection_types = frozenset(getattr(collections, name) for name in _COLLECTIONS)
    handles: dict = {}

    def send(message: list) -> None:
        data = (dumps(message) + "\n").encode()
        while data:
            data = data[write(response_fd, data) :]

    def error(exception: BaseException) -> list:
        return ["raise", type(exception).__name__, str(exception)[:1000]]

    main_module = type(sys)("__main__")
    namespace = vars(main_module)
    namespace["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    try:
        exec(compile(payload["program"], "<program>", "exec", dont_inherit=True), namespace)
    except BaseException as exception:  # noqa: B036 - SystemExit must fail the run, not end it
        send(error(exception))
        os._exit(0)
    send(["ready"])
    with os.fdopen(request_fd, "rb") as requests:
        for line in requests:
            try:
                request = loads(line)
                operation, target = request[0], _decode(request[1], namespace, handles)
                if operation == "get":  # a program global the tests read: its value, or a handle to call
                    send(["ok", _encode(target, handles), {}])
                    continue
                if operation == "getattr":
                    send(["ok", _encode(getattr(target, request[2]), handles), {}])
                    continue
                if operation == "setattr":
                    setattr(target, request[2], _decode(request[3], namespace, handles))
                    send(["ok", None, {}])
                    continue
                args = [_decode(item, namespace, handles) for item in request[2]]
                kwargs = {key: _decode(item, namespace, handles) for key, item in request[3].items()}
                result = target(*args, **kwargs)
                # Arguments the call mutated in place (`lst.sort()` style tasks) travel back with the result.
                changed = {}
                for key, before, value in (
                    *zip(range(len(args)), request[2], args),
                    *((key, request[3][key], value) for key, value in kwargs.items()),
                ):
                    if type(value) in _MUTABLE or type(value) in _collection_types:
                        after = _encode(value, handles)
                        if after != before:
                            changed[key] = after
                send(["ok", _encode(result, handles), changed])
            except BaseException as exception:  # noqa: B036 - a SystemExit from the program is its answer
                send(error(exception))


def main() -> None:
    import _thread
    import ast
    import functools
    import json
    import resource

    payload_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    # Private references: the program may rebind `os.write` or `os._exit`, these stay the originals.
    write, exit_now, update_wrapper = os.write, os._exit, functools.update_wrapper
    with os.fdopen(payload_fd, "rb") as payload_file:  # closes the fd: the payload (and the token) cannot be re-read
        payload = json.loads(payload_file.read())
    token = payload.pop("token", None)

    def report(passed: bool, reason: str = "") -> None:
        line = f"PASS {token}" if passed else "FAIL " + " ".join(reason.split())[:1000]
        write(result_fd, (line + "\n").encode("utf-8", "replace"))
        exit_now(0)  # skip atexit handlers and thread joins the program may have set up

    limits = payload["limits"]
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if payload["uid"] is not None:
        # Running as root makes RLIMIT_NPROC a no-op (a fork bomb would not be stopped), so the sandbox drops to an
        # unprivileged uid of its own. Rlimits are set above while still allowed to.
        uid = payload["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    if payload.get("mode") == "serve":
        serve(payload, int(sys.argv[3]), result_fd)
        exit_now(0)

    def refuse_tracing(*args: object) -> None:
        raise RuntimeError("sys.settrace and sys.setprofile are disabled in the code verifier's sandbox")

    sys.settrace = sys.setprofile = refuse_tracing
    for module_name in _PREIMPORTED:
        __import__(module_name)
    global _collection_types
    collections = sys.modules["collections"]
    _collection_types = frozenset(getattr(collections, name) for name in _COLLECTIONS)
    counter_attributes = dict(vars(collections.Counter))
    modules = {
        name: module for name, module in sys.modules.items() if type(module) is type(sys) and name != "__main__"
    }
    attributes = {name: dict(vars(module)) for name, module in modules.items()}
    search_state = (list(sys.path), list(sys.meta_path), list(sys.path_hooks))
    stdlib_dir = os.path.dirname(os.__file__) + os.sep
    missing = object()
    main_module = type(sys)("__main__")

    def restore() -> list[str]:
        """Restores the snapshot; returns what the program had tampered with."""
        tampered = []
        for name, module in modules.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
                tampered.append(f"sys.modules[{name!r}]")
            current, saved = vars(module), attributes[name]
            for key, value in saved.items():
                if current.get(key, missing) is not value:
                    current[key] = value
                    if module is builtins or (callable(value) and not (module is sys and key in _SYS_HOOKS)):
                        tampered.append(f"{name}.{key}")
            if module is builtins:
                for key in set(current) - set(saved):
                    del current[key]
                    tampered.append(f"builtins.{key} (added)")
        for key, value in counter_attributes.items():
            if vars(collections.Counter).get(key, missing) is not value:
                setattr(collections.Counter, key, value)
                tampered.append(f"collections.Counter.{key}")
        if set(vars(collections.Counter)) != set(counter_attributes):
            tampered.append("collections.Counter (added attributes)")
        if sys.modules.get("__main__") is not main_module:
            sys.modules["__main__"] = main_module
            tampered.append("sys.modules['__main__']")
        sys.path[:], sys.meta_path[:], sys.path_hooks[:] = search_state
        sys.path_importer_cache.clear()
        # Pure-Python stdlib modules the program imported (e.g. `unittest`) are not in the snapshot and may have been
        # patched: evict them so that a test importing them gets a fresh copy.
        for name, module in list(sys.modules.items()):
            origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
            if (
                name not in modules
                and origin.startswith(stdlib_dir)
                and origin.endswith(".py")
                and "site-packages" not in origin
            ):
                del sys.modules[name]
        if sys.gettrace() is not None or sys.getprofile() is not None:  # set through a C-level hook
            tampered.append("a trace or profile function")
        return tampered

    try:
        program = compile(payload["program"], "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        report(False, f"program does not compile: {error!r}")
    try:
        setup = compile(payload["setup"], "<test_setup>", "exec", dont_inherit=True, optimize=0)
        tests = compile(payload["tests"], "<tests>", "exec", dont_inherit=True, optimize=0)
        tested_names = {node.id for node in ast.walk(ast.parse(payload["tests"])) if isinstance(node, ast.Name)}
    except (SyntaxError, ValueError) as error:
        report(False, f"tests do not compile (a dataset problem): {error!r}")

    # The program runs as `python program.py` would run it: as `__main__`, in a module of its own.
    namespace = vars(main_module)
    namespace["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    try:
        exec(program, namespace)
    except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt must fail the run, not end it
        report(False, f"program raised {error!r}")
    if _thread._count():
        report(False, "program left threads running")
    tampered = restore()
    if tampered:
        report(False, "program tampered with " + ", ".join(tampered[:10]))

    violations = []

    def guard(name: str, function: object) -> object:
        def guarded(*args: object, **kwargs: object) -> object:
            result = function(*args, **kwargs)
            bad_type = _first_non_plain_type(result)
            if bad_type is not None:
                violations.append(f"{name} returned a {bad_type.__qualname__}, not a plain built-in value")
                raise TypeError(violations[-1])
            return result

        try:
            return update_wrapper(guarded, function)
        except (AttributeError, TypeError):  # callables without `__name__`/`__dict__`; the guard still works
            return guarded

    test_namespace = dict(namespace)
    for name in tested_names | ({payload["entry_point"]} if payload["entry_point"] else set()):
        value = namespace.get(name, missing)
        # Classes are not guarded: tests build instances to pass in (MBPP's `Pair(5, 24)`), what must be plain is what
        # the tested functions return.
        if value is not missing and callable(value) and not isinstance(value, (type, type(sys))):
            test_namespace[name] = guard(name, value)
    try:
        exec(setup, test_namespace)
        exec(tests, test_namespace)
    except BaseException as error:  # noqa: B036 - see above
        report(False, f"tests failed: {error!r}")
    if violations:
        report(False, violations[0])
    if _thread._count():
        report(False, "program started threads while being tested")
    tampered = restore()
    if tampered:
        report(False, "program tampered with " + ", ".join(tampered[:10]) + " while being tested")
    report(True)


if __name__ == "__main__":
    main()
