"""What the subcommands share: the datasets they read (a Hub id, a local file or folder, or the builtin toy task,
which only the command line serves), turned into TRL prompts with one prompt format per benchmark
(`trl_kimi.prompts.make_prompt_dataset`, used by `train`, `eval` and the examples), and the rewards that score them."""

import contextlib
import importlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..hub import load_dataset_any
from ..prompts import BENCHMARK_FORMATS, BenchmarkFormat, make_prompt_dataset


BUILTIN_DATASET = "chain-sum"  # trl_kimi.tasks.arithmetic: generated offline, no download; asked for by name
DEFAULT_BUILTIN_ROWS = 2000


REWARDS = ("auto", "math", "code", "chain-sum")
# Shaping rewards that `trl-kimi train --reward` adds to a verifier (they judge a group, or the completion's tokens).
SHAPING_REWARDS = ("length_penalty", "repetition")
REWARD_HELP = (
    "Reward functions: a verifier (auto = chain-sum for the builtin task, code when rows carry unit tests, else math; "
    "math, code, chain-sum), length_penalty (Kimi's group length reward, --length_penalty_* options), repetition "
    "(-0.5 for a repeated n-gram, --repetition_* options), or any importable module.function with TRL's reward "
    "signature. Weights: --reward_weights, one per reward."
)
DATASET_FORMATS = ("auto", "prompt", *BENCHMARK_FORMATS)
_CODE_COLUMNS = ("test", "test_list")  # HumanEval / MBPP tests, read by code_reward
# The column each reward reads its gold answer from (code_reward reads `test` or `test_list`).
_ANSWER_COLUMN = {"math": "solution", "chain-sum": "answer"}


def resolve_reward(name: str, dataset_name: str | None, column_names: list[str]) -> str:
    """`auto` → `chain-sum` for the builtin task, `code` when the rows carry unit tests, else `math`."""
    if name not in REWARDS:
        raise ValueError(
            f"Unknown reward {name!r}; use one of {', '.join(REWARDS)} (train also takes "
            f"{', '.join(SHAPING_REWARDS)} and module.function)."
        )
    if name != "auto":
        return name
    if dataset_name == BUILTIN_DATASET:
        return "chain-sum"
    return "code" if any(c in column_names for c in _CODE_COLUMNS) else "math"


def import_reward(spec: str) -> Callable:
    """`package.module.function` → the function, with an error naming `spec` and the fix when it cannot be imported.

    The working directory comes first on `sys.path`, as in TRL's `trl grpo` script, so `my_rewards.fn` next to the
    command imports in every process a launcher starts."""
    module_name, _, attribute = spec.rpartition(".")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"Cannot import reward function {spec!r} ({type(error).__name__}: {error}). Pass a builtin reward "
            f"({', '.join(REWARDS + SHAPING_REWARDS)}) or module.function importable from the working directory "
            "(PYTHONPATH)."
        ) from error
    if not callable(function):
        raise ValueError(f"Reward {spec!r} is not callable; pass a function with TRL's reward signature.")
    return function


def check_sandbox(verifier: str) -> None:
    """The code verifier runs answers in a bubblewrap sandbox: say so before any model is loaded, not at the first
    reward call."""
    if verifier == "code" and shutil.which("bwrap") is None:
        raise ValueError(
            "The code reward runs answers in a bubblewrap sandbox and `bwrap` is not on PATH. Install it "
            "(`apt-get install -y bubblewrap`) or choose another reward with --reward."
        )


# Where each verifier lives, imported on use (the code verifier's module probes for its sandbox).
_VERIFIER_FUNCTIONS = {
    "math": ("trl_kimi.verifiers", "math_reward"),
    "code": ("trl_kimi.verifiers", "code_reward"),
    "chain-sum": ("trl_kimi.tasks.arithmetic", "addition_reward"),
}


def reward_function(name: str) -> Callable:
    """The TRL reward function of a reward name resolved by `resolve_reward` or `split_rewards` (which refuse unknown
    names)."""
    module, attribute = _VERIFIER_FUNCTIONS[name]
    return getattr(importlib.import_module(module), attribute)


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
            f"The {reward} reward needs a {needed!r} column with the gold answers; the dataset has {column_names} and "
            "no recognisable answer column. Pass --dataset_format (gsm8k, math500, aime) or --answer_column (with "
            "--prompt_column) to convert benchmark rows, or rename the column."
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
    columns = dataset.column_names  # an unknown `dataset_format` is refused by `make_prompt_dataset`
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
    return make_prompt_dataset(dataset, benchmark, conversational=conversational, system_prompt=system_prompt)


def check_dataset_name(name: str | None) -> None:
    """No dataset is an error: training never falls back to the toy task."""
    if not name:
        raise ValueError(
            "No dataset given: pass --dataset_name <Hub id, local .jsonl/.json/.csv/.parquet file or folder>, or "
            f"--dataset_name {BUILTIN_DATASET} for the builtin toy task (chain sums, generated offline)."
        )


def require_vllm() -> None:
    """`--use_vllm` of `eval` and `curate`: vLLM must be installed."""
    from trl.import_utils import is_vllm_available

    if not is_vllm_available():
        raise ImportError("--use_vllm needs vLLM: pip install 'trl-kimi[vllm]' (on a machine with a GPU).")


def load_rows(name: str | None, config: str | None, split: str, num_rows: int | None, seed: int) -> Dataset:
    """The rows of `--dataset_name`: the builtin toy task by its name (`num_rows` problems drawn with `seed`), else
    [`~trl_kimi.hub.load_dataset_any`]; see `check_dataset_name`."""
    check_dataset_name(name)
    if name == BUILTIN_DATASET:
        from ..tasks import arithmetic

        return arithmetic.make_rl_dataset(num_rows or DEFAULT_BUILTIN_ROWS, seed=seed)
    return load_dataset_any(name, config, split=split, num_rows=num_rows)


def load_task(
    args,
    processing_class,
    *,
    split: str,
    num_rows: int | None,
    seed: int,
    reward: str | None = None,
    dataset_name: str | None = None,
) -> tuple[Dataset, str]:
    """The dataset every subcommand trains or evaluates on, in TRL's prompt format, and the name of the verifier that
    scores it (checked against the dataset's columns). `args` holds the shared dataset flags (`dataset_name`,
    `dataset_config`, `dataset_format`, `system_prompt`, `prompt_column`, `answer_column`); `dataset_name` overrides
    `args.dataset_name`; `reward` is the verifier asked for (default `args.reward`); `"custom"` (imported functions
    only) skips the column check."""
    name = args.dataset_name if dataset_name is None else dataset_name
    dataset = load_rows(name, args.dataset_config, split, num_rows, seed)
    dataset = prepare_dataset(
        dataset, args.dataset_format, processing_class, args.system_prompt, args.prompt_column, args.answer_column
    )
    reward = args.reward if reward is None else reward
    if reward == "custom":
        return dataset, reward
    reward = resolve_reward(reward, name, dataset.column_names)
    check_reward_columns(reward, dataset.column_names)
    return dataset, reward


def split_rewards(names: list[str]) -> tuple[str, list[str]]:
    """`--reward` values → the verifier (the one builtin verifier, `auto` when there is none and no custom function,
    `custom` when imported functions replace it) and the rest in order. Unknown names raise a `ValueError`."""
    verifiers = [n for n in names if n in REWARDS]
    unknown = [n for n in names if n not in REWARDS and n not in SHAPING_REWARDS and "." not in n]
    if unknown:
        raise ValueError(
            f"Unknown reward {unknown[0]!r}; use {', '.join(REWARDS + SHAPING_REWARDS)} or an importable "
            "module.function (e.g. my_rewards.format_reward)."
        )
    if len(verifiers) > 1:
        raise ValueError(f"--reward names {len(verifiers)} verifiers ({verifiers}); keep one.")
    if verifiers:
        return verifiers[0], names
    custom = any("." in n for n in names)
    return ("custom" if custom else "auto"), names if custom else ["auto", *names]


def repetition_reward(ngram_size: int, max_repeats: int, value: float) -> Callable:
    """[`~trl_kimi.rewards.RepetitionPenaltyReward`] with these options (picklable; TRL logs
    `rewards/repetition_penalty`). With partial rollouts it also penalises, once, the trajectories the buffer cut."""
    from ..rewards import RepetitionPenaltyReward

    return RepetitionPenaltyReward(ngram_size=ngram_size, max_repeats=max_repeats, penalty=value)


def build_reward_funcs(names: list[str], verifier: str, script_args: Any) -> list[Callable]:
    """The reward functions of `--reward`, in order: the resolved verifier, the length penalty (judged by the
    verifier), the repetition penalty and imported functions."""
    from ..rewards import LengthPenaltyReward

    functions: list[Callable] = []
    verifier_function = reward_function(verifier) if verifier != "custom" else None
    for name in names:
        if name in REWARDS:
            functions.append(verifier_function)
        elif name == "length_penalty":
            if verifier_function is None:
                raise ValueError(
                    "--reward length_penalty needs a verifier to judge correctness (math, code or chain-sum) in "
                    f"--reward; got only imported functions {names}."
                )
            warmup = script_args.length_penalty_warmup_steps
            functions.append(
                LengthPenaltyReward(
                    correctness_reward=verifier_function.__name__,
                    threshold=script_args.length_penalty_threshold,
                    weight=script_args.length_penalty_weight,
                    warmup_steps=int(warmup) if warmup >= 1 else warmup,
                    ramp_steps=script_args.length_penalty_ramp_steps,
                )
            )
        elif name == "repetition":
            functions.append(
                repetition_reward(
                    script_args.repetition_ngram_size,
                    script_args.repetition_max_repeats,
                    script_args.repetition_reward,
                )
            )
        else:
            functions.append(import_reward(name))
    return functions


def eval_source(dataset_name: str, test_split: str) -> tuple[str, str]:
    """Where the eval rows of `trl-kimi train` come from: `(dataset, split)`. A local file holds one split (the
    training rows), so its eval rows must come from another file, given as `--dataset_test_split path`."""
    if Path(test_split).is_file():
        return test_split, "train"
    if Path(dataset_name).is_file():
        raise ValueError(
            f"--dataset_name {dataset_name!r} is one file: it holds the training rows only, and evaluating on them "
            f"would measure memorisation. Pass the eval rows' file as --dataset_test_split <path.jsonl> (now "
            f"{test_split!r}), or a folder with train and test files as --dataset_name."
        )
    return dataset_name, test_split


@contextlib.contextmanager
def user_code_errors(what: str) -> Iterator[None]:
    """Errors raised while training or scoring (often in a user's reward function) keep their traceback: the command
    line prints a `ValueError` of bad input as one line, so re-raise these as a `RuntimeError` chained to them."""
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError) as error:
        raise RuntimeError(f"{what} failed: {type(error).__name__}: {error} (traceback above)") from error
