"""
Guard density (issue 30): `raise` statements per line of code, trl_kimi against TRL, the measure of "check at the
public entry points, not again on internal paths".

A line of code is a physical line holding a token that is not a comment and not part of a docstring (module, class
or function); blank lines do not count. A guard is an `ast.Raise` node.

```bash
python benchmarks/guard_density.py            # totals and the ratio
python benchmarks/guard_density.py --per_file # and the raises per trl_kimi module
```
"""

import argparse
import ast
import io
import tokenize
from pathlib import Path

import trl

import trl_kimi


_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def count(root: Path) -> dict[str, tuple[int, int]]:
    """Per module under `root`: (raises, lines of code)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        docstrings = _docstring_lines(tree)
        code = set()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in _SKIPPED:
                code.update(line for line in range(token.start[0], token.end[0] + 1) if line not in docstrings)
        out[str(path.relative_to(root))] = (sum(isinstance(n, ast.Raise) for n in ast.walk(tree)), len(code))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_file", action="store_true", help="Also list the raises per trl_kimi module.")
    args = parser.parse_args()
    ours, theirs = count(Path(trl_kimi.__file__).parent), count(Path(trl.__file__).parent)
    (r1, l1), (r2, l2) = (tuple(map(sum, zip(*c.values()))) for c in (ours, theirs))
    print(f"trl_kimi: {r1} raises / {l1} lines = 1 per {l1 / r1:.1f}")
    print(f"trl {trl.__version__}: {r2} raises / {l2} lines = 1 per {l2 / r2:.1f}")
    print(f"density ratio: {(r1 / l1) / (r2 / l2):.2f}x (target <= 1.5x: at most {1.5 * r2 / l2 * l1:.0f} raises)")
    if args.per_file:
        for name, (raises, lines) in sorted(ours.items(), key=lambda item: -item[1][0]):
            if raises:
                print(f"{raises:4d} {lines:5d} {name}")


if __name__ == "__main__":
    main()
