"""
`trl-kimi verify`: score a JSON Lines file of answers with our verifiers, without a model. Each output line is the
input line plus `reward`; the summary gives the mean reward and, when lines carry a `prompt_id` (as the
`samples.jsonl` of `trl-kimi eval` do), avg@n and pass@k over the samples of each problem.

```bash
trl-kimi verify --input_file answers.jsonl --verifier math --completion_column completion --solution_column solution
trl-kimi verify --input_file mbpp.jsonl --verifier code --completion_column code  # rows of an MBPP copy
```

A line with `"finished": false` (cut by the generation cap) scores 0 without reaching the verifier, as in
`trl-kimi eval`.
"""

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from trl import TrlParser

from ..evaluation import avg_at_n, mean_pass_at_k
from ._common import _ANSWER_COLUMN


VERIFIERS = ("math", "code", "chain-sum")


@dataclass
class VerifyArguments:
    """
    Flags of `trl-kimi verify`.

    Args:
        input_file (`str`):
            JSON Lines file, one answer per line.
        output_file (`str`, *optional*):
            Where the scored lines go; defaults to `<input_file stem>.scored.jsonl` next to the input.
        verifier (`str`, *optional*, defaults to `"math"`):
            `math` (`math_reward`: gold answer in `solution_column`), `code` (`code_reward`: HumanEval `test` and
            `entry_point`, or MBPP `test_list` columns), or `chain-sum` (the embedded task: gold in
            `solution_column`).
        completion_column (`str`, *optional*, defaults to `"completion"`):
            Column with the answer text (or a list of chat messages, the last one graded).
        solution_column (`str`, *optional*):
            Column with the gold answer; defaults to `solution` (math) or `answer` (chain-sum). Unused for code.
        k (`list[int]`, *optional*, defaults to `[1]`):
            The k of pass@k when lines carry `prompt_id`.
    """

    input_file: str = field(metadata={"help": "JSON Lines file, one answer per line."})
    output_file: str | None = field(default=None, metadata={"help": "Scored lines; default <input>.scored.jsonl."})
    verifier: str = field(default="math", metadata={"help": "Verifier to score with.", "choices": list(VERIFIERS)})
    completion_column: str = field(default="completion", metadata={"help": "Column with the answer text."})
    solution_column: str | None = field(
        default=None, metadata={"help": "Column with the gold answer (default: solution; chain-sum: answer)."}
    )
    k: list[int] = field(default_factory=lambda: [1], metadata={"help": "The k of pass@k (lines with prompt_id)."})


def make_parser(prog: str = "trl-kimi verify") -> TrlParser:
    return TrlParser(VerifyArguments, prog=prog)


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSON Lines file; a bad line raises a `ValueError` with its number."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"No such file: {path!r}; pass --input_file <answers.jsonl>.")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}).") from error
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def verify(args: VerifyArguments) -> dict:
    """Score the file, write the scored lines, return the summary."""
    from ._common import check_reward_columns, reward_function

    rows = read_jsonl(args.input_file)
    columns = sorted(set().union(*rows))
    if args.completion_column not in columns:
        raise ValueError(
            f"No {args.completion_column!r} column in {args.input_file} (columns: {columns}); pass --completion_column."
        )
    kwargs = {}
    if args.verifier == "code":
        for name in ("test", "entry_point", "test_list", "test_setup_code"):
            if name in columns:
                kwargs[name] = [row.get(name) for row in rows]
        check_reward_columns("code", columns)
    else:
        solution_column = args.solution_column or _ANSWER_COLUMN[args.verifier]
        if solution_column not in columns:
            raise ValueError(
                f"No {solution_column!r} column with gold answers in {args.input_file} (columns: {columns}); pass "
                "--solution_column."
            )
        kwargs[_ANSWER_COLUMN[args.verifier]] = [str(row.get(solution_column)) for row in rows]

    scored = [i for i, row in enumerate(rows) if row.get("finished", True)]  # truncated answers score 0, unverified
    values = reward_function(args.verifier)(
        [rows[i][args.completion_column] for i in scored],
        **{name: [col[i] for i in scored] for name, col in kwargs.items()},
    )
    rewards = [0.0] * len(rows)
    for i, value in zip(scored, values, strict=True):
        rewards[i] = float(value or 0.0)

    output = Path(args.output_file or Path(args.input_file).with_suffix("").with_suffix(".scored.jsonl"))
    with open(output, "w") as f:
        for row, reward in zip(rows, rewards, strict=True):
            f.write(json.dumps({**row, "reward": reward}, ensure_ascii=False) + "\n")
    summary = {"num_rows": len(rows), "mean_reward": fmean(rewards), "output_file": str(output)}
    if all("prompt_id" in row for row in rows):
        groups: dict = defaultdict(list)
        for row, reward in zip(rows, rewards, strict=True):
            groups[row["prompt_id"]].append(float(reward >= 1.0))
        correct = list(groups.values())
        # pass_at_k refuses a k above a problem's number of samples, naming both.
        summary.update(
            num_problems=len(correct),
            avg_at_n=avg_at_n(correct),
            pass_at_k={f"pass@{x}": mean_pass_at_k(correct, x) for x in args.k},
        )
    return summary


def main(argv: list[str] | None = None, prog: str = "trl-kimi verify") -> int:
    (args,) = make_parser(prog).parse_args_and_config(argv)
    print(json.dumps(verify(args), indent=2))
    return 0
