"""Rebuild `math_verify_pairs.jsonl` from the test suite in Math-Verify's source distribution.

Math-Verify (https://github.com/huggingface/Math-Verify, Apache-2.0, Copyright The HuggingFace Team) ships its tests
in the PyPI sdist. Every `(gold, pred, expected)` row of a `pytest.mark.parametrize` table whose test compares two
strings is written as one JSON line, with the test it came from and the options that test passes to math-verify
(`match_types`, `precision`, `strict`, `allow_set_relation_comp`), and `math_verify`: the verdict of math-verify
alone called the way a reward calls it, `verify(parse(gold), parse(pred))` with default options (the installed
version, 0.9.0 here), so that tests compare against it without re-running it:

```bash
pip download math-verify==0.9.0 --no-binary :all: --no-deps -d /tmp/mv && tar xzf /tmp/mv/math_verify-0.9.0.tar.gz -C /tmp/mv
python tests/data/make_math_verify_pairs.py /tmp/mv/math_verify-0.9.0/tests > tests/data/math_verify_pairs.jsonl
```
"""

import ast
import json
import math
import sys
from pathlib import Path


_OPTIONS = ("match_types", "precision", "strict", "allow_set_relation_comp")


def _rows(path: Path) -> list[dict]:
    rows = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize")):
                continue
            names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
            if not {"gold", "pred"} <= set(names):
                continue
            # The options the test passes to math-verify: a keyword of its `compare_strings(...)` call, constant or
            # taken from the row.
            call = next(
                (c for c in ast.walk(node) if isinstance(c, ast.Call) and ast.unparse(c.func) == "compare_strings"),
                None,
            )
            keywords = {k.arg: k.value for k in call.keywords} if call is not None else {}
            for element in decorator.args[1].elts:
                # f-strings and `math.sqrt` appear in a few rows; evaluated with nothing but `math` in scope.
                values = dict(zip(names, eval(compile(ast.Expression(element), str(path), "eval"), {"math": math})))
                options = {}
                for option in _OPTIONS:
                    if option in keywords:
                        value = keywords[option]
                        options[option] = values[value.id] if isinstance(value, ast.Name) else ast.literal_eval(value)
                    elif option in values:
                        options[option] = values[option]
                expected = values.get("expected", values.get("result"))
                rows.append(
                    {
                        "source": f"{path.name}::{node.name}",
                        "gold": values["gold"],
                        "pred": values["pred"],
                        "expected": int(expected),
                        "options": options,
                    }
                )
    return rows


def math_verify_alone(gold: str, pred: str) -> int:
    """math-verify's verdict with its default options; an error counts as "not equal", as in a reward."""
    from math_verify import parse, verify

    try:
        return int(bool(verify(parse(gold), parse(pred))))
    except Exception:  # noqa: BLE001
        return 0


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    for test_file in sorted(Path(sys.argv[1]).glob("test_*.py")):
        for row in _rows(test_file):
            row["math_verify"] = math_verify_alone(row["gold"], row["pred"])
            print(json.dumps(row, ensure_ascii=False))
