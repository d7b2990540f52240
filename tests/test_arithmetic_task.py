import pytest
import torch

from tests.utils import eos_prone_model
from trl_kimi.generation import sample_completions
from trl_kimi.tasks import arithmetic


def answer_of(completion: str) -> int:
    return int(arithmetic.extract_answer(completion))


def test_long_and_short_solutions_agree_and_slips_carry_on():
    terms = [3, 5, 8, 2]
    assert arithmetic.long_solution(terms) == "a3:3,b5:8,c8:16,d2:18=18"
    assert arithmetic.long_solution(terms, slip_at=1) == "a3:3,b5:9,c8:17,d2:19=19"
    assert answer_of(arithmetic.short_solution(terms)) == answer_of(arithmetic.long_solution(terms)) == 18
    assert arithmetic.short_solution(terms, slip=True) == "=19"


def test_sft_dataset_slip_rates_apply_per_format():
    dataset = arithmetic.make_sft_dataset(2000, seed=3, long_fraction=0.5, long_slip_rate=0.0, short_slip_rate=0.5)
    right = {"long": [], "short": []}
    for prompt, completion in zip(dataset["prompt"], dataset["completion"], strict=True):
        terms = [int(c) for c in prompt[1::2]]  # "a3b5=" -> [3, 5]
        form = "short" if completion.startswith("=") else "long"
        right[form].append(answer_of(completion) == sum(terms))
    assert 0.45 < len(right["long"]) / len(dataset) < 0.55
    assert all(right["long"])  # no slips in the chains of thought
    assert 0.45 < 1 - sum(right["short"]) / len(right["short"]) < 0.55  # half of the guesses are off by one


def test_rechecks_repeat_the_chain_and_follow_the_rate():
    assert arithmetic.long_solution([3, 5], rechecks=2) == "a3:3,b5:8,a3:3,b5:8,a3:3,b5:8=8"
    dataset = arithmetic.make_sft_dataset(3000, seed=0, long_fraction=1.0, recheck_rate=0.5, max_rechecks=2)
    counts = [0, 0, 0]
    for prompt, completion in zip(dataset["prompt"], dataset["completion"], strict=True):
        chain = arithmetic.long_solution([int(c) for c in prompt[1::2]]).split("=")[0]
        passes = completion.split("=")[0].split(",").count(chain.split(",")[0])  # the first step, once per pass
        assert completion == arithmetic.long_solution([int(c) for c in prompt[1::2]], rechecks=passes - 1)
        counts[passes - 1] += 1
    # P(0) = 0.5, P(1) = 0.25, P(2) = 0.25 (the second re-check is the last)
    assert [abs(c / len(dataset) - p) < 0.03 for c, p in zip(counts, [0.5, 0.25, 0.25], strict=True)] == [True] * 3
    with pytest.raises(ValueError, match="recheck_rate must be in"):
        arithmetic.make_sft_dataset(10, recheck_rate=-0.1)


def test_sft_dataset_rejects_rates_outside_unit_interval():
    with pytest.raises(ValueError, match="short_slip_rate must be in \\[0, 1\\], got 1.5"):
        arithmetic.make_sft_dataset(10, short_slip_rate=1.5)


def test_rl_splits_are_disjoint_and_answers_exact():
    sft = arithmetic.make_sft_dataset(500, seed=0)
    held_out = arithmetic.make_rl_dataset(200, seed=1, exclude=sft)
    assert not set(held_out["prompt"]) & set(sft["prompt"])
    for prompt, answer in zip(held_out["prompt"], held_out["answer"], strict=True):
        assert int(answer) == sum(int(c) for c in prompt[1::2])
    with pytest.raises(ValueError, match="distinct problems"):
        arithmetic.make_rl_dataset(200, seed=0, max_terms=2)  # only 100 two-digit problems exist


def test_reward_needs_the_end_of_sequence_token():
    tokenizer = arithmetic.make_tokenizer()
    finished = tokenizer("=18").input_ids + [arithmetic.EOS_ID]
    cut = tokenizer("a3:3,b5:8,c8:16,d2:18=18").input_ids  # cut by max_completion_length: no EOS
    rewards = arithmetic.addition_reward(["=18", "=18"], answer=["18", "18"], completion_ids=[finished, cut])
    assert rewards == [1.0, 0.0]


def test_tokenizer_is_one_token_per_character_and_pads_left():
    tokenizer = arithmetic.make_tokenizer()
    batch = tokenizer(["a3b5=", "a3="], padding=True)
    assert len(batch.input_ids[0]) == 5 and batch.input_ids[1][:2] == [arithmetic.PAD_ID] * 2
    assert tokenizer.decode(batch.input_ids[0]) == "a3b5="


def test_greedy_evaluation_counts_tokens_up_to_eos():
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    with torch.no_grad():  # all logits equal: greedy picks token 0 (<pad>) until the cap, never EOS
        model.lm_head.weight.zero_()
    dataset = arithmetic.make_rl_dataset(4, seed=0)
    result = arithmetic.evaluate_accuracy(model, tokenizer, dataset, temperature=0, max_new_tokens=5)
    assert result["mean_tokens"] == 5  # truncated completions count every token
    assert result["accuracy"] == 0.0
    assert result["truncated_fraction"] == 1.0


def test_evaluation_counts_a_none_reward_as_wrong_instead_of_crashing():
    tokenizer = arithmetic.make_tokenizer()
    model = eos_prone_model(tokenizer, p_eos=0.5)  # answers that stop within the cap, so the reward is called
    dataset = arithmetic.make_rl_dataset(4, seed=0, max_terms=3)

    def digit_first_or_none_reward(completions, **kwargs):
        # 1.0 for an answer that starts with a digit, None ("not applicable") otherwise: sum() of these used to raise
        return [1.0 if c[:1].isdigit() else None for c in completions]

    result = arithmetic.evaluate_accuracy(
        model, tokenizer, dataset, digit_first_or_none_reward, num_samples=8, max_new_tokens=6
    )
    groups = sample_completions(model, tokenizer, dataset["prompt"], 8, max_new_tokens=6, batch_size=256)
    flat = [c for group in groups for c in group]
    assert result["accuracy"] == pytest.approx(sum(c.finished and c.text[:1].isdigit() for c in flat) / len(flat))
    assert 0.0 < result["accuracy"] < 1.0
