"""What the subcommands share: picking the reward for a dataset and turning benchmark rows into TRL prompts."""

from collections.abc import Callable

from datasets import Dataset

from ..evaluation import BENCHMARK_FORMATS, BenchmarkFormat, to_eval_dataset
from ..hub import BUILTIN_DATASET, load_dataset_any


REWARDS = ("auto", "math", "code", "chain-sum")
DATASET_FORMATS = ("auto", "prompt", *BENCHMARK_FORMATS)
_CODE_COLUMNS = ("test", "test_list")  # HumanEval / MBPP tests, read by code_reward
# The column each reward reads its gold answer from (code_reward reads `test` or `test_list`).
_ANSWER_COLUMN = {"math": "solution", "chain-sum": "answer"}


def resolve_reward(name: str, dataset_name: str | None, column_names: list[str]) -> str:
    """`auto` → `chain-sum` for the builtin task, `code` when the rows carry unit tests, else `math`."""
    if name not in REWARDS:
        raise ValueError(f"Unknown reward {name!r}; use one of {', '.join(REWARDS)}.")
    if name != "auto":
        return name
    if dataset_name == BUILTIN_DATASET:
        return "chain-sum"
    return "code" if any(c in column_names for c in _CODE_COLUMNS) else "math"


def reward_function(name: str) -> Callable:
    """The TRL reward function of a resolved reward name."""
    if name == "math":
        from ..verifiers import math_reward

        return math_reward
    if name == "code":
        from ..verifiers import code_reward

        return code_reward
    if name == "chain-sum":
        from ..tasks.arithmetic import addition_reward

        return addition_reward
    raise ValueError(f"Unknown reward {name!r}; use one of {', '.join(REWARDS[1:])}.")


def check_reward_columns(reward: str, column_names: list[str]) -> None:
    """Raise a `ValueError` naming the column `reward` needs and the columns the dataset has."""
    if reward == "code":
        if not any(c in column_names for c in _CODE_COLUMNS):
            raise ValueError(
                f"The code verifier needs a 'test' (HumanEval) or 'test_list' (MBPP) column; the dataset has "
                f"{column_names}."
            )
        return
    needed = _ANSWER_COLUMN[reward]
    if needed not in column_names:
        raise ValueError(
            f"The {reward} reward needs a {needed!r} column with the gold answers; the dataset has {column_names}. "
            "Pass --dataset_format (gsm8k, math500, aime) or --prompt_column/--answer_column to convert benchmark "
            "rows, or rename the column."
        )


def prepare_dataset(
    dataset: Dataset,
    dataset_format: str,
    processing_class,
    system_prompt: str | None = None,
    prompt_column: str | None = None,
    answer_column: str | None = None,
) -> Dataset:
    r"""
    Rows → TRL's `prompt` column (plus the gold-answer column the reward reads).

    `dataset_format`: `prompt` keeps rows that already have a `prompt`; `gsm8k`, `math500`, `aime` read the
    benchmark's columns and ask for a `\boxed{}` answer, as a chat message when the tokenizer has a chat template;
    `auto` picks `prompt` if there is a `prompt` column, else the benchmark whose columns are present.
    `prompt_column`/`answer_column` name the columns of any other benchmark.
    """
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"Unknown --dataset_format {dataset_format!r}; use one of {', '.join(DATASET_FORMATS)}.")
    columns = dataset.column_names
    benchmark: str | BenchmarkFormat
    if prompt_column or answer_column:
        benchmark = BenchmarkFormat(prompt_column or "problem", answer_column or "answer")
    elif dataset_format == "auto":
        if "prompt" in columns:
            return dataset
        matches = [
            name for name, f in BENCHMARK_FORMATS.items() if f.prompt_column in columns and f.answer_column in columns
        ]
        if not matches:
            raise ValueError(
                f"Cannot tell the dataset's format from its columns {columns}: it needs a 'prompt' column, or the "
                f"columns of a benchmark ({', '.join(f'{k}: {v.prompt_column}/{v.answer_column}' for k, v in BENCHMARK_FORMATS.items())}). "
                "Name them with --prompt_column and --answer_column."
            )
        benchmark = matches[0]
    elif dataset_format == "prompt":
        if "prompt" not in columns:
            raise ValueError(f"--dataset_format prompt needs a 'prompt' column; the dataset has {columns}.")
        return dataset
    else:
        benchmark = dataset_format
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    conversational = getattr(tokenizer, "chat_template", None) is not None
    return to_eval_dataset(dataset, benchmark, conversational=conversational, system_prompt=system_prompt)


def load_task(args, processing_class, *, split: str, num_rows: int | None, seed: int) -> tuple[Dataset, str]:
    """The dataset every subcommand trains or evaluates on, in TRL's prompt format, and the name of the reward that
    scores it (checked against the dataset's columns). `args` holds the shared dataset flags (`dataset_name`,
    `dataset_config`, `dataset_format`, `system_prompt`, `prompt_column`, `answer_column`, `reward`)."""
    dataset = load_dataset_any(args.dataset_name, args.dataset_config, split=split, num_rows=num_rows, seed=seed)
    dataset = prepare_dataset(
        dataset, args.dataset_format, processing_class, args.system_prompt, args.prompt_column, args.answer_column
    )
    reward = resolve_reward(args.reward, args.dataset_name, dataset.column_names)
    check_reward_columns(reward, dataset.column_names)
    return dataset, reward
