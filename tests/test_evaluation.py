"""avg@n, the unbiased pass@k estimator (hand values), percentiles, the one sample-and-score loop and its rules on the
tiny model, `trl-kimi eval` agreeing with the long2short report, bad input."""

import json
from math import comb

import numpy as np
import pytest
import torch
from datasets import Dataset

from tests.utils import eos_prone_model, tiny_model
from trl_kimi import Long2ShortConfig, Long2ShortTrainer
from trl_kimi.evaluation import (
    accuracy_within_budget,
    avg_at_n,
    mean_pass_at_k,
    pass_at_k,
    percentile,
    sample_and_score,
    score_finished,
    to_eval_dataset,
)
from trl_kimi.scripts.evaluate import EvalArguments, run_eval
from trl_kimi.tasks import arithmetic
from trl_kimi.verifiers import math_reward


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
    result = sample_and_score(
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
    again = sample_and_score(
        model, tokenizer, dataset, even_length_reward, num_samples=4, k=[1], max_new_tokens=6, seed=0
    )
    assert again.accuracy == result.accuracy and again.mean_tokens == result.mean_tokens


def test_evaluate_bad_input(tiny):
    model, tokenizer = tiny
    dataset = arithmetic.make_rl_dataset(2, seed=0)
    with pytest.raises(ValueError, match="num_samples .* must be >= 1"):
        sample_and_score(model, tokenizer, dataset, even_length_reward, num_samples=0)
    with pytest.raises(ValueError, match="raise --num_samples"):
        sample_and_score(model, tokenizer, dataset, even_length_reward, num_samples=2, k=[1, 4])
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        sample_and_score(model, tokenizer, dataset.rename_column("prompt", "question"), even_length_reward)


# ---------------------------------------------------------------------------------------------------- the one loop
def test_sample_and_score_passes_trls_arguments_and_applies_the_rules():
    tokenizer = arithmetic.make_tokenizer()
    # conversational prompts need a chat template; this one writes the messages' contents back to back
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    model = eos_prone_model(tokenizer, p_eos=0.4)  # a mix of finished and truncated answers within 4 tokens
    plain = arithmetic.make_rl_dataset(4, seed=0, max_terms=3)
    chat = plain.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    seen = []

    def recording_reward(prompts, completions, completion_ids, trainer_state, answer, **kwargs):
        seen.append({"prompts": prompts, "completions": completions, "ids": completion_ids, "answer": answer})
        assert trainer_state is None and callable(kwargs["log_metric"]) and callable(kwargs["log_extra"])
        # None ("not applicable") for answers starting with a digit, else 1.0
        return [None if ids[0] in digit_ids else 1.0 for ids in completion_ids]

    digit_ids = set(tokenizer.convert_tokens_to_ids(list("0123456789")))
    for dataset in (plain, chat):
        seen.clear()
        result = sample_and_score(model, tokenizer, dataset, recording_reward, num_samples=6, max_new_tokens=4)
        flat = [s for group in result.samples for s in group]
        (call,) = seen  # one call, with keywords, for the finished answers only
        finished = [s for s in flat if s.finished]
        assert len(call["ids"]) == len(finished) and 0 < len(finished) < len(flat)
        assert call["ids"] == [s.token_ids for s in finished]
        assert all(ids[-1] == tokenizer.eos_token_id for ids in call["ids"])  # EOS included
        owners = [p for p, group in enumerate(result.samples) for s in group if s.finished]
        assert call["answer"] == [dataset[p]["answer"] for p in owners]  # the dataset's columns, per sample
        assert call["prompts"] == [dataset[p]["prompt"] for p in owners]
        if dataset is plain:
            assert call["completions"] == [s.text for s in finished]
        else:  # in the prompt's format: one assistant message, as TRL builds it
            assert call["completions"] == [[{"role": "assistant", "content": s.text}] for s in finished]
        for s in flat:
            if not s.finished:  # truncated: 0 without reaching the reward function, never correct
                assert (s.reward, s.correct) == (0.0, False)
            elif s.token_ids[0] in digit_ids:  # None: kept, counted, wrong
                assert (s.reward, s.correct) == (None, False)
            else:
                assert (s.reward, s.correct) == (1.0, True)
        assert result.num_not_applicable == sum(s.reward is None for s in flat) > 0
        assert result.accuracy == pytest.approx(np.mean([s.correct for s in flat]))
        assert result.truncated_fraction == pytest.approx(np.mean([not s.finished for s in flat]))
    # the same seed gives the same samples whatever the prompt format (no chat markup in this template)
    assert [s.text for g in sample_and_score(model, tokenizer, plain, recording_reward, 6, max_new_tokens=4).samples
            for s in g] == [s.text for s in flat]  # fmt: skip


def test_truncated_answers_score_0_even_when_the_text_is_right():
    # The report's rule, from issue 19: a correct box written before the cap is not an answer.
    text = "So the area is \\boxed{5}. Wait, let me double-check this by recomputing the"
    assert math_reward([text], solution=["5"]) == [1.0]  # the verifier alone cannot know
    assert score_finished(math_reward, [False, True], completions=[text, text], solution=["5", "5"]) == [0.0, 1.0]


def sft_on(model, tokenizer, dataset, steps: int):
    """A few Adam steps on `prompt=answer<eos>`: a tiny model that is right part of the time, deterministically."""
    texts = [p + "=" + a for p, a in zip(dataset["prompt"], dataset["answer"])]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids = torch.cat([batch.input_ids, torch.full((len(texts), 1), arithmetic.EOS_ID)], 1)
    mask = torch.cat([batch.attention_mask, torch.ones(len(texts), 1, dtype=torch.long)], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_trl_kimi_eval_and_long2short_report_agree(tmp_path):
    # Same model, prompts, reward, seed, temperature, cap and batch size: `trl-kimi eval` and the accuracy the
    # long2short results.json reports are the same numbers (they are the same function).
    tokenizer = arithmetic.make_tokenizer()
    dataset = arithmetic.make_rl_dataset(6, seed=1, max_terms=2)
    torch.manual_seed(0)
    model = sft_on(tiny_model(tokenizer), tokenizer, dataset, steps=25)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    dataset.to_json(tmp_path / "problems.jsonl")

    summary = run_eval(
        EvalArguments(
            model_name_or_path=str(tmp_path / "model"), dataset_name=str(tmp_path / "problems.jsonl"),
            dataset_test_split="train", reward="chain-sum", num_samples=4, max_completion_length=8, batch_size=8, seed=0,
            output_dir=str(tmp_path / "eval"), progress=False,
        )
    )  # fmt: skip
    args = Long2ShortConfig(
        output_dir=str(tmp_path / "l2s"), methods=["merge"], use_cpu=True, seed=0, eval_num_samples=4,
        eval_max_new_tokens=8, sampling_batch_size=8,
    )  # fmt: skip
    Long2ShortTrainer(
        str(tmp_path / "model"), args, train_dataset=dataset, eval_dataset=dataset,
        reward_funcs=arithmetic.addition_reward, short_model=str(tmp_path / "model"),  # merging a model with itself
    ).train()  # fmt: skip
    stage = json.loads((tmp_path / "l2s" / "results.json").read_text())["stages"][0]
    assert 0.0 < summary["accuracy"] < 1.0  # a figure that can disagree
    assert summary["num_problems"] == 6 and summary["num_samples"] == 4
    for phase in ("before", "after"):
        for name in ("accuracy", "mean_tokens", "truncated_fraction", "p90_tokens"):
            assert stage[phase][name] == pytest.approx(summary[name], abs=1e-4), (phase, name)  # results.json rounds
