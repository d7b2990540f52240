import pickle

import pytest
import torch
from datasets import Dataset

from tests.utils import digit_fraction_reward, tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.rewards import RepetitionPenaltyReward, find_repetition, length_penalty, repetition_penalty
from trl_kimi.tasks import arithmetic


# ------------------------------------------------------------------------------------------------ length_penalty
@pytest.mark.parametrize(
    "lengths, correct, k, expected",
    [
        # The spec's worked example.
        ([100, 200, 300, 500], [1, 1, 0, 0], 4, [0.5, 0.25, 0.0, -0.5]),
        # All lengths equal: no penalty, whatever the correctness.
        ([7, 7, 7, 7], [1, 0, 1, 0], 4, [0.0, 0.0, 0.0, 0.0]),
        # A short wrong answer is not rewarded (min(0, λ)); a long correct one is penalised (λ < 0).
        ([10, 30], [0, 1], 2, [0.0, -0.5]),
        # Groups are independent: min/max are taken per group of k.
        ([1, 3, 100, 300], [1, 1, 1, 1], 2, [0.5, -0.5, 0.5, -0.5]),
        # Lengths between the extremes: λ = 0.5 − (len − min)/(max − min).
        ([0, 25, 50, 100], [1, 1, 0, 0], 4, [0.5, 0.25, 0.0, -0.5]),
    ],
)
def test_length_penalty_hand_computed(lengths, correct, k, expected):
    assert length_penalty(lengths, [bool(c) for c in correct], k) == pytest.approx(expected)


def test_length_penalty_with_weight_matches_spec_rewards():
    # Spec: with w = 0.5 the rewards [1, 1, 0, 0] become [1.25, 1.125, 0.0, -0.25] and their mean is 0.53125.
    penalty = LengthPenaltyReward(correctness_reward="acc", weight=0.5, warmup_steps=0)
    shaped = [c + p for c, p in zip([1, 1, 0, 0], penalty.compute([100, 200, 300, 500], [1, 1, 0, 0], 4, step=0))]
    assert shaped == [1.25, 1.125, 0.0, -0.25]
    assert sum(shaped) / 4 == 0.53125


@pytest.mark.parametrize(
    "lengths, correct, k, match",
    [
        ([1, 2, 3], [True, True, True], 2, "whole groups"),
        ([1, 2], [True], 2, "must match"),
        ([1, 2], [True, True], 0, "num_generations"),
    ],
)
def test_length_penalty_bad_input(lengths, correct, k, match):
    with pytest.raises(ValueError, match=match):
        length_penalty(lengths, correct, k)


# ------------------------------------------------------------------------------------------ LengthPenaltyReward
def test_warmup_step_switch_and_ramp():
    step_switch = LengthPenaltyReward(correctness_reward="acc", warmup_steps=10)
    assert [step_switch.scale(s) for s in (0, 9, 10, 50)] == [0.0, 0.0, 1.0, 1.0]
    ramp = LengthPenaltyReward(correctness_reward="acc", warmup_steps=10, ramp_steps=4)
    assert [ramp.scale(s) for s in (9, 10, 11, 13, 14)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    # Default: 10 % of max_steps, as the spec suggests.
    default = LengthPenaltyReward(correctness_reward="acc")
    assert [default.scale(s, max_steps=200) for s in (19, 20)] == [0.0, 1.0]
    with pytest.raises(ValueError, match="fraction of max_steps"):
        default.scale(5, max_steps=None)


def test_unknown_correctness_makes_the_whole_group_none():
    penalty = LengthPenaltyReward(correctness_column="ok", warmup_steps=0, weight=1.0)
    correct = [penalty.is_correct(v) for v in [1.0, float("nan"), 0.0, 1.0, True, False]]
    assert correct == [True, None, False, True, True, False]
    assert penalty.compute([1, 2, 3, 4, 5, 6], correct, 3, step=0) == [None, None, None, 0.5, 0.0, -0.5]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"correctness_reward": "a", "correctness_column": "b"}, "exactly one"),
        ({"correctness_reward": "a", "warmup_steps": 1.5}, r"\[0, 1\)"),
        ({"correctness_reward": "a", "ramp_steps": -1}, ">= 0"),
    ],
)
def test_length_penalty_reward_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LengthPenaltyReward(**kwargs)


def test_calling_it_per_process_is_refused():
    # A per-process call would compute min/max over half groups: refuse rather than return a silently wrong value.
    with pytest.raises(RuntimeError, match="group reward"):
        LengthPenaltyReward(correctness_reward="acc")(completions=["a"], completion_ids=[[1]])


# ------------------------------------------------------------------------------------------------ in the trainer
class RewardRecordingTrainer(KimiMirrorDescentTrainer):
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        lengths = [len(ids) for ids in completion_ids_list]
        self.recorded.append((self.state.global_step, lengths, rewards_per_func.clone(), inputs))
        return rewards_per_func


def test_trainer_fills_the_penalty_from_token_lengths_after_warmup(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    penalty = LengthPenaltyReward(correctness_reward="digit_fraction_reward", threshold=0.25, warmup_steps=1)
    trainer = RewardRecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[digit_fraction_reward, penalty],
        args=tiny_config(tmp_path, max_steps=3, per_device_train_batch_size=6, num_generations=3),
        train_dataset=arithmetic.make_rl_dataset(32, seed=0, max_terms=4),
        processing_class=tokenizer,
    )
    trainer.recorded = []
    trainer.train()

    assert [step for step, *_ in trainer.recorded] == [0, 1, 2]
    nonzero = 0
    for step, lengths, rewards, _ in trainer.recorded:
        correct = (rewards[:, 0] >= 0.25).tolist()
        expected = [0.0] * 6 if step == 0 else [0.5 * p for p in length_penalty(lengths, correct, 3)]
        assert rewards[:, 1].tolist() == pytest.approx(expected, abs=1e-6)
        nonzero += any(e != 0 for e in expected)
    assert nonzero > 0  # the lengths varied, so the check above was not 0 == 0
    logged = [h for h in trainer.state.log_history if "length_penalty/scale" in h]
    assert [h["length_penalty/scale"] for h in logged] == [0.0, 1.0, 1.0]
    # TRL's own per-function reward metric sees the filled column, not the per-process None.
    assert all("rewards/length_penalty/mean" in h for h in logged)


def test_trainer_reads_correctness_from_a_column(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    # Correctness fixed by the dataset: prompt i is "correct" iff i is even.
    dataset = Dataset.from_dict({"prompt": ["a1b2=", "a3b4="] * 8, "is_correct": [True, False] * 8})
    penalty = LengthPenaltyReward(correctness_column="is_correct", warmup_steps=0, weight=1.0)
    trainer = RewardRecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[digit_fraction_reward, penalty],
        args=tiny_config(tmp_path, max_steps=2),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.recorded = []
    trainer.train()
    for _, lengths, rewards, inputs in trainer.recorded:
        expected = length_penalty(lengths, [x["is_correct"] for x in inputs], 3)
        assert rewards[:, 1].tolist() == pytest.approx(expected, abs=1e-6)


def test_trainer_rejects_an_unknown_correctness_reward(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    with pytest.raises(ValueError, match=r"no reward function of that name.*\['digit_fraction_reward'\]"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=[digit_fraction_reward, LengthPenaltyReward(correctness_reward="math_reward")],
            args=tiny_config(tmp_path),
            train_dataset=arithmetic.make_rl_dataset(8, seed=0),
            processing_class=tokenizer,
        )


def test_trainer_names_a_missing_correctness_column(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    trainer = KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[digit_fraction_reward, LengthPenaltyReward(correctness_column="is_correct")],
        args=tiny_config(tmp_path),
        train_dataset=arithmetic.make_rl_dataset(8, seed=0),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="'is_correct'.*no such column"):
        trainer.train()


# ---------------------------------------------------------------------------------------------------- repetition
@pytest.mark.parametrize(
    "ids, n, r, expected",
    [
        # "5 6 7" three times: the third occurrence ends at token 9.
        ([5, 6, 7, 5, 6, 7, 5, 6, 7, 8], 3, 3, 9),
        # Twice is not enough for r = 3.
        ([5, 6, 7, 5, 6, 7, 8, 9], 3, 3, None),
        # A run of one token: overlapping n-grams count (1 1), (1 1), (1 1) → cut after 4 tokens.
        ([1, 1, 1, 1, 1, 1], 2, 3, 4),
        # Shorter than one n-gram: nothing to detect.
        ([1, 2], 3, 2, None),
        # Repetition late in a long, otherwise varied completion.
        (list(range(100)) + [200, 201] * 3, 2, 3, 106),
    ],
)
def test_find_repetition(ids, n, r, expected):
    assert find_repetition(ids, ngram_size=n, max_repeats=r) == expected


def test_find_repetition_spec_defaults_and_bad_arguments():
    loop = list(range(40))  # a 40-token paragraph repeated: with n = 32, r = 3 it is caught in the third copy
    assert find_repetition(loop * 3) == 40 * 2 + 32
    assert find_repetition(loop * 2) is None
    with pytest.raises(ValueError, match="max_repeats >= 2"):
        find_repetition([1, 2], ngram_size=1, max_repeats=1)


def test_repetition_penalty_as_a_trl_reward():
    completion_ids = [[1, 2] * 10, list(range(20)), []]
    reward = RepetitionPenaltyReward(ngram_size=2, max_repeats=3)
    assert reward(completion_ids=completion_ids, completions=["", "", ""]) == [-0.5, 0.0, 0.0]
    assert torch.tensor(repetition_penalty([list(range(200))])).item() == 0.0  # the spec's defaults
    loop = list(range(40))
    assert repetition_penalty([loop * 3, loop * 2]) == [-0.5, 0.0]
    with pytest.raises(TypeError, match=r"RepetitionPenaltyReward\(ngram_size=...\)"):
        repetition_penalty([[1]], ngram_size=2)  # an option passed per call would be silently ignored
    with pytest.raises(ValueError, match="max_repeats >= 2"):
        RepetitionPenaltyReward(max_repeats=1)


def test_repetition_penalty_reads_the_buffer_verdict_once_and_pickles():
    # The partial-rollout buffer cut the first completion where its own detector fired (other settings): the
    # `rollout_status` column says so. A completion both cut and repeated by this reward's detector is penalised once.
    reward = RepetitionPenaltyReward(ngram_size=2, max_repeats=3, penalty=-0.25)
    completion_ids = [[1, 1], [1, 2] * 3, [1, 2] * 3, [3, 4]]
    statuses = ["repeated", "repeated", "finished", "truncated"]
    assert reward(completion_ids, rollout_status=statuses) == [-0.25, -0.25, -0.25, 0.0]
    clone = pickle.loads(pickle.dumps(reward))  # TRL asks reward functions to be picklable
    assert clone(completion_ids, rollout_status=statuses) == [-0.25, -0.25, -0.25, 0.0]
    assert clone.__name__ == "repetition_penalty"
