"""Test harness that runs *inside* the sandbox of [`~trl_kimi.verifiers.CodeVerifier`].

The verifier passes this file's source to `python -I -B -c`, so the harness is never a file the program can edit:

    python -I -B -c <this source> <payload_fd> <response_fd> <request_fd>

`payload_fd` is a memfd holding a JSON object with the `program`, the resource `limits` and the `uid` to drop to (or
`null`); the harness reads and closes it, sets the limits, drops to the uid, runs the program, then only answers
calls. The trusted verifier runs the tests in its own
process and sends each call the tests make to a program name (`candidate(...)`, `f(x)`, `obj.method(...)`, attribute
reads and writes) as one JSON line on `request_fd`; the harness evaluates it and writes the result back on
`response_fd`, serialised as plain built-in values (see `_encode`), non-plain objects as opaque handles. Expected
values and comparisons never enter the sandbox, so nothing the program does here can change a verdict: at worst it
answers with plain data an honest function could have returned (and the verifier decodes that data strictly).

Arguments the tests pass that are not data travel by reference too, the other way: a function or lambda of the tests
(`["cb", id]`) and an iterator or generator (`["it", id]`) become proxies here whose calls (`next()` for iterators)
are sent back to the verifier as `["callback", id, args, kwargs]` lines and answered with `["return", value]`,
`["raise", name, message]` or `["stop"]`; a `range` is rebuilt here. While it waits for such an answer, the harness
keeps serving the calls the verifier makes (the tests' function may call the program in turn).
"""

import builtins
import os
import sys


# Modules programs commonly use, imported before the program (their import is not counted in the program's time).
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
# Standard containers that reference solutions return (MBPP: `Counter`, `defaultdict`), sent as data (exact types only).
_COLLECTIONS = ("Counter", "defaultdict", "OrderedDict", "deque")


_collection_types: frozenset = frozenset()


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
    if tag == "range":
        return range(*(_decode(item, namespace, handles) for item in items))
    if tag == "cb":
        return _proxy_function(items[0])
    if tag == "it":
        return _RemoteIterator(items[0])
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


# Set by `serve`: sends a callback to the verifier and returns its answer (see the module docstring).
_call_back = None


def _proxy_function(ident: int):
    def call(*args: object, **kwargs: object) -> object:
        return _call_back(ident, args, kwargs)

    return call


class _RemoteIterator:
    """An iterator of the tests: each `next()` is answered by the verifier."""

    def __init__(self, ident: int):
        self._ident = ident

    def __iter__(self) -> "_RemoteIterator":
        return self

    def __next__(self) -> object:
        return _call_back(self._ident, (), {})


def serve(payload: dict, request_fd: int, response_fd: int) -> None:
    """Runs the program, then answers the verifier's calls until it closes the request pipe."""
    import json

    global _call_back, _collection_types
    dumps, loads, write, exit_now = json.dumps, json.loads, os.write, os._exit
    for module_name in _PREIMPORTED:
        __import__(module_name)
    collections = sys.modules["collections"]
    _collection_types = frozenset(getattr(collections, name) for name in _COLLECTIONS)
    handles: dict = {}
    requests = os.fdopen(request_fd, "rb")

    def send(message: list) -> None:
        data = (dumps(message) + "\n").encode()
        while data:
            data = data[write(response_fd, data) :]

    def error(exception: BaseException) -> list:
        return ["raise", type(exception).__name__, str(exception)[:1000]]

    main_module = type(sys)("__main__")
    namespace = vars(main_module)
    namespace["__builtins__"] = builtins

    def answer(request: list) -> None:
        try:
            operation, target = request[0], _decode(request[1], namespace, handles)
            if operation == "get":  # a program global the tests read: its value, or a handle to call
                send(["ok", _encode(target, handles), {}])
                return
            if operation == "getattr":
                send(["ok", _encode(getattr(target, request[2]), handles), {}])
                return
            if operation == "setattr":
                setattr(target, request[2], _decode(request[3], namespace, handles))
                send(["ok", None, {}])
                return
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

    def call_back(ident: int, args: tuple, kwargs: dict) -> object:
        send(
            [
                "callback",
                ident,
                [_encode(a, handles) for a in args],
                {k: _encode(v, handles) for k, v in kwargs.items()},
            ]
        )
        while True:
            line = requests.readline()
            if not line:
                exit_now(0)
            message = loads(line)
            if message[0] == "return":
                return _decode(message[1], namespace, handles)
            if message[0] == "stop":
                raise StopIteration
            if message[0] == "raise":
                kind = getattr(builtins, message[1], None)
                raise (kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError)(message[2])
            answer(message)  # the tests' function called the program in turn

    _call_back = call_back
    sys.modules["__main__"] = main_module
    try:
        exec(compile(payload["program"], "<program>", "exec", dont_inherit=True), namespace)
    except BaseException as exception:  # noqa: B036 - SystemExit must fail the run, not end it
        send(error(exception))
        exit_now(0)
    send(["ready"])
    for line in requests:
        answer(loads(line))


def main() -> None:
    import json
    import resource

    payload_fd, response_fd, request_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with os.fdopen(payload_fd, "rb") as payload_file:  # closes the fd before the program runs
        payload = json.loads(payload_file.read())
    for name, value in payload["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if payload["uid"] is not None:
        # Running as root makes RLIMIT_NPROC a no-op (a fork bomb would not be stopped), so the sandbox drops to an
        # unprivileged uid of its own. Rlimits are set above while still allowed to.
        uid = payload["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    serve(payload, request_fd, response_fd)
    os._exit(0)  # skip atexit handlers and thread joins the program may have set up


if __name__ == "__main__":
    main()
