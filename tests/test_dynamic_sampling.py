"""Dynamic sampling (KimiConfig(dynamic_sampling=True)): the pure parts against hand computations, then the trainer:
no group whose rewards are all equal reaches the loss, the bounded fallback, the length penalty and prioritised
sampling, exact resume, and two processes."""

import json

import pytest
import torch

from tests.test_multiprocess import run_two_processes
from tests.test_sampling import answer_not_multiple_of_3_reward
from tests.utils import tiny_config, tiny_model
from trl_kimi import KimiConfig, KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.sampling import informative_groups, merge_generated_batches, refill_indices, select_groups
from trl_kimi.tasks import arithmetic


# ---------------------------------------------------------------------------------------------------- pure parts
def test_informative_groups_by_hand():
    nan = float("nan")
    # columns: correctness, length penalty (weight 0.5); groups of 3
    rewards = torch.tensor(
        [
            [1.0, 0.5], [1.0, 0.5], [1.0, 0.5],  # all right, same lengths: totals 1.25 x 3 -> uninformative
            [1.0, 0.5], [1.0, -0.5], [1.0, 0.0],  # all right, lengths differ: 1.25, 0.75, 1.0 -> informative
            [0.0, nan], [nan, nan], [0.0, nan],  # one unscorable sample, the others equal -> uninformative
            [nan, nan], [nan, nan], [nan, nan],  # nothing scorable -> uninformative
            [0.0, nan], [nan, nan], [1.0, nan],  # 0 and 1 -> informative
        ]
    )  # fmt: skip
    flags = informative_groups(rewards, torch.tensor([1.0, 0.5]), num_generations=3)
    assert flags.tolist() == [False, True, False, False, True]
    with pytest.raises(ValueError, match="do not make groups of 4"):
        informative_groups(rewards, torch.tensor([1.0, 0.5]), num_generations=4)


def test_select_groups_takes_informative_groups_in_order_then_tops_up():
    assert select_groups([[False, True], [True, True]], quota=2) == ([(0, 1), (1, 0)], 0)
    assert select_groups([[False, False], [False, True]], quota=2) == ([(0, 0), (1, 1)], 1)
    assert select_groups([[False, False]], quota=2) == ([(0, 0), (0, 1)], 2)
    with pytest.raises(ValueError, match="fewer than the 3"):
        select_groups([[True, True]], quota=3)


def test_refill_indices_are_counter_based_and_follow_the_distribution():
    draw = refill_indices(50, 20, seed=0, batch_id=3, attempt=1, rank=0)
    assert draw == refill_indices(50, 20, 0, 3, 1, 0)  # the same counters, the same draw
    others = [
        refill_indices(50, 20, 0, 3, 2, 0),
        refill_indices(50, 20, 0, 3, 1, 1),
        refill_indices(50, 20, 0, 4, 1, 0),
    ]
    assert all(other != draw for other in others)  # another try, process or batch draws differently
    probabilities = torch.zeros(50, dtype=torch.float64)
    probabilities[[7, 9]] = 1.0
    assert set(refill_indices(50, 40, 0, 3, 1, 0, probabilities)) == {7, 9}


def test_merge_generated_batches_regroups_and_repads():
    pad = 0
    first = {
        "prompt_ids": torch.tensor([[0, 5], [0, 5], [6, 6], [6, 6]]),  # left padded
        "prompt_mask": torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]]),
        "completion_ids": torch.tensor([[7, 0], [7, 7], [8, 0], [8, 0]]),  # right padded
        "completion_mask": torch.tensor([[1, 0], [1, 1], [1, 0], [1, 0]]),
        "old_per_token_logps": torch.tensor([[-1.0, 0.0], [-1.0, -2.0], [-3.0, 0.0], [-3.0, 0.0]]),
        "advantages": torch.tensor([0.5, -0.5, 0.0, 0.0]),
        "num_items_in_batch": torch.tensor(5),
    }
    second = {
        "prompt_ids": torch.tensor([[4, 4, 4], [4, 4, 4]]),
        "prompt_mask": torch.ones(2, 3, dtype=torch.long),
        "completion_ids": torch.tensor([[9], [3]]),
        "completion_mask": torch.ones(2, 1, dtype=torch.long),
        "old_per_token_logps": torch.tensor([[-0.5], [-0.25]]),
        "advantages": torch.tensor([1.0, -1.0]),
        "num_items_in_batch": torch.tensor(2),
    }
    merged = merge_generated_batches([first, second], [(0, 0), (1, 0)], num_generations=2, pad_token_id=pad)
    assert merged["prompt_ids"].tolist() == [[0, 0, 5], [0, 0, 5], [4, 4, 4], [4, 4, 4]]
    assert merged["prompt_mask"].tolist() == [[0, 0, 1], [0, 0, 1], [1, 1, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[7, 0], [7, 7], [9, 0], [3, 0]]
    assert merged["completion_mask"].tolist() == [[1, 0], [1, 1], [1, 0], [1, 0]]
    assert merged["old_per_token_logps"].tolist() == [[-1.0, 0.0], [-1.0, -2.0], [-0.5, 0.0], [-0.25, 0.0]]
    assert merged["advantages"].tolist() == [0.5, -0.5, 1.0, -1.0]
    assert "num_items_in_batch" not in merged
    with pytest.raises(ValueError, match="pixel_values"):
        merge_generated_batches([{**second, "pixel_values": torch.zeros(1)}], [(0, 0)], 2, pad)


def test_config_checks(monkeypatch):
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="dynamic_sampling_max_tries must be an integer >= 1"):
            tiny_config("out", dynamic_sampling=True, dynamic_sampling_max_tries=bad)
    with pytest.raises(ValueError, match="partial_rollout_budget"):
        tiny_config("out", dynamic_sampling=True, partial_rollout_budget=4)
    with pytest.raises(ValueError, match="start on an optimizer step"):
        tiny_config("out", dynamic_sampling=True, gradient_accumulation_steps=2, steps_per_generation=1)
    # 2 processes x 3 prompts x 2 steps = 12 = 3 groups of 4, but 6 rows per process would split a group
    monkeypatch.setattr(KimiConfig, "world_size", property(lambda self: 2))
    tiny_config("out", per_device_train_batch_size=3, steps_per_generation=2, num_generations=4)  # fine without
    with pytest.raises(ValueError, match="whole groups on each process"):
        tiny_config(
            "out", dynamic_sampling=True, per_device_train_batch_size=3, steps_per_generation=2, num_generations=4
        )
    monkeypatch.undo()
    assert KimiConfig.dynamic_sampling is False  # off by default


# ---------------------------------------------------------------------------------------------------- trainer
def first_char_digit_reward(completions, **kwargs):
    """Right when the completion starts with a digit: about 40% of an untrained model's samples, so groups of 3 are
    all equal about a quarter of the time."""
    return [float(c[:1].isdigit()) for c in completions]


class RecordingTrainer(KimiMirrorDescentTrainer):
    """Records each generated batch (what TRL buffers for the loss) and the advantages each loss call sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.loss_advantages = [], []

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        self.batches.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return batch

    def _compute_loss(self, model, inputs):
        self.loss_advantages.append(inputs["advantages"].clone())
        return super()._compute_loss(model, inputs)


def make_trainer(output_dir, reward_funcs=first_char_digit_reward, dataset=None, **overrides):
    tokenizer = arithmetic.make_tokenizer()
    return RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=reward_funcs,
        args=tiny_config(output_dir, **overrides),
        train_dataset=dataset if dataset is not None else arithmetic.make_rl_dataset(16, seed=0, max_terms=4),
        processing_class=tokenizer,
    )


def uninformative_groups(batch: dict, num_generations: int = 3) -> int:
    # advantages r - mean(r) are all zero exactly when the group's rewards are all equal
    return int((batch["advantages"].view(-1, num_generations).abs().max(dim=1).values < 1e-9).sum())


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"sampling_strategy": "prioritized"},
        {"reward_funcs": [first_char_digit_reward, LengthPenaltyReward(correctness_reward="first_char_digit_reward")]},
    ],
    ids=["uniform", "prioritized", "length_penalty"],
)
def test_no_all_equal_group_reaches_the_loss(tmp_path, setting):
    setting = dict(setting)
    reward_funcs = setting.pop("reward_funcs", first_char_digit_reward)
    # With the length penalty a group's rewards differ whenever its lengths do, so all-equal groups are rare there and
    # the test only checks that it runs with it; otherwise they do occur without dynamic sampling.
    penalised = isinstance(reward_funcs, list)
    if not penalised:
        plain = make_trainer(tmp_path / "plain", reward_funcs, max_steps=6, **setting)
        plain.train()
        assert sum(uninformative_groups(b) for b in plain.batches) > 0

    trainer = make_trainer(tmp_path / "dynamic", reward_funcs, max_steps=6, dynamic_sampling=True, **setting)
    trainer.train()
    assert len(trainer.batches) == 6
    for batch, seen in zip(trainer.batches, trainer.loss_advantages, strict=True):
        assert uninformative_groups(batch) == 0
        assert batch["advantages"].shape == (6,)  # 2 groups of 3, as without dynamic sampling
        assert sorted(seen.tolist()) == sorted(batch["advantages"].tolist())  # the loss trains on exactly these rows
        assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
    logged = [row for row in trainer.state.log_history if "dynamic_sampling/tries" in row]
    assert len(logged) == 6
    assert penalised or max(row["dynamic_sampling/tries"] for row in logged) > 1  # refills happened
    assert all(row["dynamic_sampling/uninformative_groups_kept"] == 0 for row in logged)
    assert all(row["dynamic_sampling/generated_groups"] == 2 * row["dynamic_sampling/tries"] for row in logged)


def test_tries_are_bounded_and_the_batch_is_topped_up(tmp_path):
    # success decided by the problem alone: every group is all right or all wrong, so no try can help
    trainer = make_trainer(
        tmp_path, answer_not_multiple_of_3_reward, max_steps=2, dynamic_sampling=True, dynamic_sampling_max_tries=3
    )
    trainer.train()
    logged = [row for row in trainer.state.log_history if "dynamic_sampling/tries" in row]
    assert [row["dynamic_sampling/tries"] for row in logged] == [3, 3]
    assert [row["dynamic_sampling/uninformative_groups_kept"] for row in logged] == [2, 2]
    assert [row["dynamic_sampling/informative_fraction"] for row in logged] == [0.0, 0.0]
    # topped up with the first try's groups: the data loader's own rows, as plain training would have used
    assert all(uninformative_groups(b) == 2 for b in trainer.batches)


def test_resume_is_exact(tmp_path):
    config = dict(sampling_strategy="prioritized", dynamic_sampling=True, max_steps=6, save_strategy="steps")
    full = make_trainer(tmp_path / "full", save_steps=3, **config)
    full.train()
    assert max(r["dynamic_sampling/tries"] for r in full.state.log_history if "dynamic_sampling/tries" in r) > 1
    resumed = make_trainer(tmp_path / "full", save_steps=3, **config)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert len(resumed.batches) == 3
    for before, after in zip(full.batches[3:], resumed.batches, strict=True):
        for key in ("prompt_ids", "completion_ids", "advantages"):
            assert torch.equal(before[key], after[key]), key
    assert torch.equal(resumed.sampler.tracker.rates, full.sampler.tracker.rates)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_two_processes_agree(tmp_path):
    run_two_processes("two_process_dynamic_sampling.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # the same number of tries on both processes for every batch (the stop is decided on both at once), refills
    # happened, every kept group is informative, and the sampler's rates are the same everywhere
    assert ranks[0]["tries"] == ranks[1]["tries"] and max(ranks[0]["tries"]) > 1
    for rank in ranks:
        assert all(count == 0 for count in rank["uninformative"])
    assert ranks[0]["rates"] == ranks[1]["rates"]
    # each process trains on its own groups: the refills were drawn apart (seeded by process)
    assert ranks[0]["prompts"] != ranks[1]["prompts"]
