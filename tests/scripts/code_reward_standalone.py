"""Runs `CodeVerifier` from this checkout under any Python 3.11 (a venv under /tmp, another uid's interpreter).

Only `trl_kimi/verifiers/code_verifier.py` and its two helpers are loaded (standard library only), so the interpreter
needs neither torch nor TRL. Reads `{"verifier": {...}, "completions": [...], "columns": {...}}` as JSON on stdin and
prints `{"rewards": [...], "memory_accounting": ..., "executable": ...}`.
"""

import json
import sys
import types
from pathlib import Path


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    for name, path in (("trl_kimi", root / "trl_kimi"), ("trl_kimi.verifiers", root / "trl_kimi" / "verifiers")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]  # a namespace stub: the real `__init__` would import torch and TRL
        sys.modules[name] = package

    from trl_kimi.verifiers.code_verifier import CodeVerifier

    request = json.load(sys.stdin)
    verifier = CodeVerifier(**request["verifier"])
    rewards = verifier(request["completions"], **request["columns"])
    print(
        json.dumps({"rewards": rewards, "memory_accounting": verifier.memory_accounting, "executable": sys.executable})
    )


if __name__ == "__main__":
    main()
