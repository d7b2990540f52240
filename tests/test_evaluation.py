"""avg@n, the unbiased pass@k estimator (hand values), percentiles, the evaluation loop on the tiny model, bad input."""

import json
from math import comb

import numpy as np
import pytest
from datasets import Dataset

from tests.utils import tiny_model
from trl_kimi.evaluation import (
    accuracy_within_budget,
    avg_at_n,
    evaluate,
    mean_pass_at_k,
    pass_at_k,
    percentile,
    to_eval_dataset,
)
from trl_kimi.tasks import arithmetic


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (8, 0, 4, 0.0),  # no correct sample: never passes
        (8, 5, 4, 1.0),  # n - c = 3 < k: every draw of 4 holds a correct one
        (16, 4, 1, 0.25),  # pass@1 is c/n
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_avg_at_n_and_mean_pass_at_k():
    correct = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert avg_at_n(correct) == pytest.approx(0.5)  # (1/3 + 2/3) / 2
    assert mean_pass_at_k(correct, 2) == pytest.approx((2 / 3 + 1.0) / 2)  # 1 - C(2,2)/C(3,2) = 2/3; 1 - 0 = 1
    assert mean_pass_at_k(correct, 1) == pytest.approx(avg_at_n(correct))  # pass@1 averaged is avg@n


def test_percentile_matches_numpy():
    values = [3, 1, 4, 1, 5, 9, 2, 6]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert accuracy_within_budget([3, 5, 9, 9], [1.0, 0.0, 1.0, 1.0], [4, 8, 9]) == [0.25, 0.25, 0.75]


def test_bad_n_and_k():
    with pytest.raises(ValueError, match="n .* must be >= 1"):
        pass_at_k(0, 0, 1)
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c .* must be in"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="empty"):
        avg_at_n([])


def test_to_eval_dataset_formats_and_missing_columns():
    gsm8k = Dataset.from_dict({"question": ["1 + 1?"], "answer": ["1 + 1 = 2\n#### 2"]})
    row = to_eval_dataset(gsm8k, "gsm8k", system_prompt="Be brief.")[0]
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert row["prompt"][1]["role"] == "user" and row["prompt"][1]["content"].startswith("1 + 1?\n\n")
    assert row["solution"] == "1 + 1 = 2\n#### 2"
    with pytest.raises(ValueError, match="no column 'problem'"):
        to_eval_dataset(gsm8k, "math500")
    with pytest.raises(ValueError, match="Unknown benchmark format"):
        to_eval_dataset(gsm8k, "mmlu")


@pytest.fixture(scope="module")
def tiny():
    tokenizer = arithmetic.make_tokenizer()
    return tiny_model(tokenizer), tokenizer


def even_length_reward(completions, **kwargs):
    """A deterministic stand-in verifier: correct when the answer has an even number of characters."""
    return [float(len(c) % 2 == 0) for c in completions]


def test_evaluate_on_tiny_model_writes_consistent_outputs(tiny, tmp_path):
    model, tokenizer = tiny
    dataset = arithmetic.make_rl_dataset(5, seed=0, max_terms=3)
    result = evaluate(
        model, tokenizer, dataset, even_length_reward, num_samples=4, k=[1, 2, 4], max_new_tokens=6, seed=0,
        output_dir=tmp_path,
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 4 and {r["prompt_id"] for r in rows} == set(range(5))
    assert set(rows[0]) >= {"prompt_id", "sample_id", "prompt", "completion", "num_tokens", "finished", "reward"}
    assert rows[0]["answer"] == dataset[0]["answer"]  # the dataset's other columns are kept
    # a truncated answer scores 0 whatever its text; a finished one gets the verifier's reward
    for r in rows:
        assert r["reward"] == (float(len(r["completion"]) % 2 == 0) if r["finished"] else 0.0)
        assert r["num_tokens"] <= 6
    # the summary recomputed from the per-sample lines
    correct = [[r["reward"] for r in rows if r["prompt_id"] == p] for p in range(5)]
    lengths = [r["num_tokens"] for r in rows]
    assert result.accuracy == pytest.approx(avg_at_n(correct))
    for k in (1, 2, 4):
        assert result.pass_at_k[k] == pytest.approx(mean_pass_at_k(correct, k))
    assert result.mean_tokens == pytest.approx(np.mean(lengths))
    assert result.p90_tokens == pytest.approx(np.percentile(lengths, 90))
    assert result.truncated_fraction == pytest.approx(np.mean([not r["finished"] for r in rows]))
    assert json.loads((tmp_path / "summary.json").read_text())["pass_at_k"]["pass@4"] == result.pass_at_k[4]
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # seeded: the same call gives the same samples
    again = evaluate(model, tokenizer, dataset, even_length_reward, num_samples=4, k=[1], max_new_tokens=6, seed=0)
    assert again.accuracy == result.accuracy and again.mean_tokens == result.mean_tokens


def test_evaluate_bad_input(tiny):
    model, tokenizer = tiny
    dataset = arithmetic.make_rl_dataset(2, seed=0)
    with pytest.raises(ValueError, match="num_samples .* must be >= 1"):
        evaluate(model, tokenizer, dataset, even_length_reward, num_samples=0)
    with pytest.raises(ValueError, match="raise --num_samples"):
        evaluate(model, tokenizer, dataset, even_length_reward, num_samples=2, k=[1, 4])
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        evaluate(model, tokenizer, dataset.rename_column("prompt", "question"), even_length_reward)
