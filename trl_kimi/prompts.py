r"""
Benchmark rows → TRL prompts: the one prompt format per benchmark, used alike for training (`trl-kimi train`, the
examples) and evaluation (`trl-kimi eval`), so that a model is evaluated on the prompts it was trained on.

A [`BenchmarkFormat`] names the problem column and the gold-answer column; [`make_prompt_dataset`] writes TRL's
`prompt` column (the problem and a request for a `\boxed{}` answer, as a user message or plain text) and the
`solution` column that the math verifier reads.

```python
>>> from datasets import Dataset
>>> rows = Dataset.from_dict({"problem": ["1 + 1?"], "solution": ["It is $\\boxed{2}$."]})
>>> row = make_prompt_dataset(rows, "math", conversational=False)[0]
>>> row["prompt"].splitlines()[0], row["solution"]
('1 + 1?', 'It is $\\boxed{2}$.')

```
"""

from dataclasses import dataclass

from datasets import Dataset


__all__ = ["BENCHMARK_FORMATS", "BOXED_INSTRUCTION", "BenchmarkFormat", "make_prompt_dataset"]

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class BenchmarkFormat:
    """
    Which column of a benchmark holds the problem and which the gold answer, and how the problem is asked.

    Args:
        prompt_column (`str`): column with the problem text.
        answer_column (`str`): column with the gold answer (bare, `\\boxed{}` solution or GSM8K `#### 18`), passed to
            the verifier as `solution`.
        instruction (`str`): appended to the problem (blank line between), e.g. the request for a `\\boxed{}` answer.
    """

    prompt_column: str
    answer_column: str
    instruction: str = BOXED_INSTRUCTION


# The formats of the local JSONL copies of the benchmarks (as the tests use them) and of their Hub versions. AIME
# sets on the Hub (e.g. AI-MO/aimo-validation-aime, the report's AIME 2024) use the MATH-500 columns: problem/answer;
# MATH training sets (e.g. DigitalLearningGmbH/MATH-lighteval, EleutherAI/hendrycks_math) have problem/solution, the
# solution ending in a \boxed{} answer that the math verifier reads.
BENCHMARK_FORMATS: dict[str, BenchmarkFormat] = {
    "math500": BenchmarkFormat("problem", "answer"),
    "gsm8k": BenchmarkFormat("question", "answer"),
    "aime": BenchmarkFormat("problem", "answer"),
    "math": BenchmarkFormat("problem", "solution"),
}


def make_prompt_dataset(
    dataset: Dataset,
    benchmark: str | BenchmarkFormat = "math500",
    conversational: bool = True,
    system_prompt: str | None = None,
) -> Dataset:
    r"""
    A benchmark's rows → `prompt` (a user message asking for a `\boxed{}` answer, or plain text) and `solution`.

    Other columns are kept (a verifier may need them, e.g. `test_list` for code). Raises a `ValueError` naming the
    missing column and the columns present.

    ```python
    >>> rows = Dataset.from_dict({"question": ["2 + 2?"], "answer": ["2 + 2 = 4\n#### 4"]})
    >>> make_prompt_dataset(rows, "gsm8k", conversational=False)[0]["prompt"]
    '2 + 2?\n\nPlease reason step by step, and put your final answer within \\boxed{}.'

    ```
    """
    if isinstance(benchmark, str):
        if benchmark not in BENCHMARK_FORMATS:
            raise ValueError(
                f"Unknown benchmark format {benchmark!r}; use one of {sorted(BENCHMARK_FORMATS)}, or pass "
                "--prompt_column and --answer_column."
            )
        benchmark = BENCHMARK_FORMATS[benchmark]
    missing = [c for c in (benchmark.prompt_column, benchmark.answer_column) if c not in dataset.column_names]
    if missing:
        formats = ", ".join(f"{k}: {v.prompt_column}/{v.answer_column}" for k, v in BENCHMARK_FORMATS.items())
        raise ValueError(
            f"The dataset has no column {missing[0]!r} (columns: {dataset.column_names}). Pick the benchmark format "
            f"that matches ({formats}) or name the columns with --prompt_column / --answer_column."
        )

    def convert(row: dict) -> dict:
        text = row[benchmark.prompt_column]
        text = f"{text}\n\n{benchmark.instruction}" if benchmark.instruction else text
        if not conversational:
            return {"prompt": text, "solution": str(row[benchmark.answer_column])}
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": text})
        return {"prompt": messages, "solution": str(row[benchmark.answer_column])}

    drop = [c for c in ("prompt", "solution") if c in dataset.column_names]
    return dataset.map(convert, remove_columns=drop)
