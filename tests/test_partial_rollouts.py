import copy

import pytest
import torch

from tests.utils import digit_fraction_reward, eos_prone_model, tiny_config
from trl_kimi import KimiMirrorDescentTrainer, PartialRolloutBuffer
from trl_kimi.partial_rollouts import generate_until_ready, loss_token_mask
from trl_kimi.tasks import arithmetic
from trl_kimi.trainer.partial_rollout_mixin import ROLLOUT_BUFFER_NAME


EOS = 0


def fixed_length_generator(buffer: PartialRolloutBuffer, targets: dict[int, int]):
    """A fake policy: sample j's answer is `targets[j]` tokens long (EOS last) if nothing stops it; token 7 else."""

    def generate(inputs, max_new_tokens):
        out = []
        for traj in buffer.running():
            remaining = targets[traj.sample_index] - len(traj.completion_ids)
            n = min(max_new_tokens, remaining)
            out.append([7] * (n - 1) + [EOS] if n == remaining else [7] * n)
        assert len(out) == len(inputs)
        return out, None

    return generate


# ---------------------------------------------------------------------------------------------------- the buffer
def test_spec_worked_token_accounting():
    # KIMI_SPEC §5: budget 256, overall maximum 1024, answers of 100, 600 and 1100 tokens; one round per iteration.
    buffer = PartialRolloutBuffer(num_generations=3, token_budget=256, max_length=1024, eos_token_ids=[EOS])
    buffer.add([{"prompt": "p"}] * 3, [[5]] * 3)
    generate = fixed_length_generator(buffer, {0: 100, 1: 600, 2: 1100})
    a, b, c = buffer.trajectories
    table = []
    for _ in range(4):
        iteration = buffer.begin_iteration()
        stats = buffer.generate_round(generate)
        table.append((stats.tokens_generated, stats.longest_decode, [len(t.completion_ids) for t in (a, b, c)]))
        if iteration == 3:
            # b finished with 88 new tokens: with masking its loss covers exactly those.
            assert sum(loss_token_mask(b.versions, iteration)) == 88
            assert b.segments == [[1, 256], [2, 256], [3, 88]]
            assert sum(loss_token_mask(b.versions, iteration, stale_tokens_in_loss=True)) == 600
    assert table == [
        (612, 256, [100, 256, 256]),
        (512, 256, [100, 512, 512]),
        (344, 256, [100, 600, 768]),
        (256, 256, [100, 600, 1024]),
    ]
    assert [t.status for t in (a, b, c)] == ["finished", "finished", "truncated"]
    assert [t.num_continuations for t in (a, b, c)] == [0, 2, 3]
    assert buffer.num_ready_groups() == 1
    assert [len(t.completion_ids) for t in buffer.pop_groups(1)] == [100, 600, 1024]
    assert (buffer.tokens_generated, buffer.tokens_popped, buffer.tokens_discarded) == (1724, 1724, 0)
    assert buffer.useful_token_fraction == 1.0 and len(buffer) == 0


def test_groups_leave_only_complete_and_in_order():
    buffer = PartialRolloutBuffer(num_generations=2, token_budget=4, max_length=16, eos_token_ids=[EOS])
    buffer.add([{"prompt": "x", "i": 0}] * 2 + [{"prompt": "y", "i": 1}] * 2, [[1]] * 2 + [[2]] * 2)
    # Group 0: 3 and 9 tokens; group 1: 2 and 4 tokens.
    lengths = {(0, 0): 3, (0, 1): 9, (1, 0): 2, (1, 1): 4}

    def generate(inputs, max_new_tokens):
        out = []
        for t in buffer.running():
            remaining = lengths[t.group_id, t.sample_index] - len(t.completion_ids)
            n = min(max_new_tokens, remaining)
            out.append([7] * (n - 1) + [EOS] if n == remaining else [7] * n)
        return out, None

    buffer.begin_iteration()
    rounds = generate_until_ready(buffer, generate, num_groups=1)
    assert len(rounds) == 1  # group 1 is complete after one round, group 0 is not (9 > 4)
    assert buffer.num_ready_groups() == 1
    with pytest.raises(RuntimeError, match="Asked for 2 complete groups, only 1"):
        buffer.pop_groups(2)
    popped = buffer.pop_groups(1)
    assert [(t.group_id, t.row["i"], len(t.completion_ids)) for t in popped] == [(1, 1, 2), (1, 1, 4)]
    # Group 0's finished sample waits in the buffer for its sibling.
    assert [(t.status, len(t.completion_ids)) for t in buffer.trajectories] == [("finished", 3), ("running", 4)]
    buffer.begin_iteration()
    assert len(generate_until_ready(buffer, generate, num_groups=1)) == 2  # 4 → 8 → 9 tokens
    (first, second) = buffer.pop_groups(1)
    assert second.segments == [[1, 4], [2, 4], [2, 1]] and second.num_continuations == 2
    assert loss_token_mask(first.versions, 2) == [0, 0, 0]  # finished at iteration 1: all stale
    assert sum(loss_token_mask(second.versions, 2)) == 5


def test_repeat_detection_cuts_and_marks_the_trajectory():
    buffer = PartialRolloutBuffer(
        num_generations=1, token_budget=8, max_length=32, repetition_ngram_size=2, repetition_max_repeats=3
    )
    buffer.add([{"prompt": "p"}], [[1]])
    buffer.begin_iteration()
    stats = buffer.generate_round(lambda inputs, n: ([[3, 4, 3, 4, 3, 4, 5, 6]], None))
    (traj,) = buffer.trajectories
    # [3, 4] occurs the third time at the end of the 6th token: cut there.
    assert (traj.status, traj.completion_ids, traj.segments) == ("repeated", [3, 4, 3, 4, 3, 4], [[1, 6]])
    assert (stats.tokens_generated, stats.tokens_discarded) == (8, 2)
    assert buffer.pop_groups(1)[0].status == "repeated"
    assert buffer.useful_token_fraction == 6 / 8


def test_max_continuations_truncates():
    buffer = PartialRolloutBuffer(num_generations=1, token_budget=2, max_length=10, max_continuations=1)
    buffer.add([{"prompt": "p"}], [[1]])
    for _ in range(2):
        buffer.begin_iteration()
        buffer.generate_round(lambda inputs, n: ([[7] * n for _ in inputs], None))
    assert [(t.status, len(t.completion_ids), t.num_continuations) for t in buffer.trajectories] == [
        ("truncated", 4, 1)
    ]


def test_state_dict_round_trip_and_refuses_another_config():
    buffer = PartialRolloutBuffer(num_generations=2, token_budget=3, max_length=9, eos_token_ids=[EOS])
    buffer.add([{"prompt": "x", "answer": "1"}] * 2, [[1, 2]] * 2)
    buffer.begin_iteration()
    buffer.generate_round(lambda inputs, n: ([[7, 7, 7], [7, EOS]], [[-0.5] * 3, [-0.1, -0.2]]))
    state = buffer.state_dict()
    restored = PartialRolloutBuffer(num_generations=2, token_budget=3, max_length=9, eos_token_ids=[EOS])
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    assert restored.trajectories[0].logprobs == [-0.5] * 3
    other = PartialRolloutBuffer(num_generations=2, token_budget=4, max_length=9, eos_token_ids=[EOS])
    with pytest.raises(ValueError, match=r"token_budget: saved 3, now 4.*Resume with the settings"):
        other.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(token_budget=0), r"token_budget must be in \[1, max_length=8\], got 0"),
        (dict(token_budget=9), r"token_budget must be in \[1, max_length=8\], got 9"),
        (dict(token_budget=2, capacity=1), r"capacity must hold at least one group \(2\), got 1"),
        (dict(token_budget=2, max_continuations=-1), r"max_continuations must be >= 0"),
    ],
)
def test_buffer_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PartialRolloutBuffer(num_generations=2, max_length=8, **kwargs)


def test_buffer_rejects_groups_with_different_prompts_and_overflow():
    buffer = PartialRolloutBuffer(num_generations=2, token_budget=2, max_length=8, capacity=2)
    with pytest.raises(ValueError, match="should be the 2 samples of one prompt"):
        buffer.add([{"prompt": "x"}, {"prompt": "y"}], [[1], [2]])
    buffer.add([{"prompt": "x"}] * 2, [[1]] * 2)
    with pytest.raises(RuntimeError, match="above its capacity 2"):
        buffer.add([{"prompt": "x"}] * 2, [[1]] * 2)


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(partial_rollout_budget=0), r"partial_rollout_budget must be an integer >= 1.*got 0"),
        (
            dict(partial_rollout_budget=9),
            r"partial_rollout_budget \(9\) is larger than the overall maximum length \(8",
        ),
        (
            dict(partial_rollout_budget=4, partial_rollout_max_length=3),
            r"partial_rollout_budget \(4\) is larger than the overall maximum length \(3",
        ),
        (dict(partial_rollout_max_continuations=2), r"need partial rollouts; set --partial_rollout_budget"),
        (dict(partial_rollout_budget=4, partial_rollout_repetition_penalty=0.5), r"penalty must be a finite .* <= 0"),
        (dict(partial_rollout_budget=4, sampling_strategy="prioritized"), r"cannot be combined"),
        (dict(partial_rollout_budget=4, save_only_model=True), r"save_only_model=True.*Set save_only_model=False"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


def test_partial_rollouts_are_off_by_default(tmp_path):
    config = tiny_config(tmp_path)
    assert config.partial_rollout_budget is None
    assert config.partial_rollout_stale_tokens_in_loss is False
    assert (config.partial_rollout_repetition_ngram_size, config.partial_rollout_repetition_max_repeats) == (32, 3)
    assert config.partial_rollout_repetition_penalty == -0.5


# ---------------------------------------------------------------------------------------------------- trainer
class RecordingTrainer(KimiMirrorDescentTrainer):
    """Records, per generated batch, the trained trajectories and what TRL built from them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []
        self.buffer_states = []  # the buffer as each generated batch starts

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self._ready_trajectories is not None:
            ready = self._ready_trajectories
            self.batches.append(
                {
                    "keys": [(t.group_id, t.sample_index) for t in ready],
                    "completions": [list(t.completion_ids) for t in ready],
                    "versions": [t.versions for t in ready],
                    "statuses": [t.status for t in ready],
                    "iteration": self.rollout_buffer.iteration,
                }
            )
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _generate_and_score_completions(self, inputs):
        if self.rollout_buffer is not None and self.model.training:
            self.buffer_states.append(copy.deepcopy(self.rollout_buffer.state_dict()))
        output = super()._generate_and_score_completions(inputs)
        if self.rollout_buffer is not None and self.model.training:
            self.batches[-1]["tool_mask"] = output["tool_mask"].tolist() if "tool_mask" in output else None
            self.batches[-1]["completion_mask"] = output["completion_mask"].tolist()
            self.batches[-1]["advantages"] = output["advantages"].tolist()
        return output


def make_trainer(output_dir, reward_funcs=digit_fraction_reward, dataset=None, **overrides):
    tokenizer = arithmetic.make_tokenizer()
    return RecordingTrainer(
        model=eos_prone_model(tokenizer),
        reward_funcs=reward_funcs,
        args=tiny_config(output_dir, **overrides),
        train_dataset=dataset if dataset is not None else arithmetic.make_rl_dataset(24, seed=0, max_terms=3),
        processing_class=tokenizer,
    )


def test_trainer_keeps_groups_whole_masks_stale_segments_and_logs(tmp_path):
    # 2 groups of 3 per batch, budget 3 of at most 8 tokens: trajectories need up to 3 rounds.
    trainer = make_trainer(tmp_path, max_steps=6, partial_rollout_budget=3, partial_rollout_extra_groups=1)
    trainer.train()
    assert len(trainer.batches) == 6
    seen = set()
    stale_tokens = 0
    for batch in trainer.batches:
        keys = batch["keys"]
        # Whole groups of num_generations samples, in order, each trajectory trained once.
        assert [k[1] for k in keys] == [0, 1, 2, 0, 1, 2]
        assert keys[0][0] == keys[2][0] and keys[3][0] == keys[5][0]
        assert not seen & set(keys)
        seen |= set(keys)
        assert all(s != "running" for s in batch["statuses"])
        # The loss mask: completion tokens of the current iteration only.
        for row, (versions, tool_mask, completion_mask) in enumerate(
            zip(batch["versions"], batch["tool_mask"], batch["completion_mask"], strict=True)
        ):
            expected = loss_token_mask(versions, batch["iteration"])
            assert tool_mask[: len(versions)] == expected, row
            assert sum(completion_mask) == len(versions)
            stale_tokens += len(versions) - sum(expected)
    assert stale_tokens > 0  # some trained samples did carry stale segments
    logs = trainer.state.log_history[:-1]
    for name in (
        "buffer_size",
        "resumed_fraction",
        "continuations_mean",
        "continuations_max",
        "tokens_generated",
        "useful_token_fraction",
        "longest_sample_wait_s",
        "masked_token_fraction",
    ):
        assert all(f"partial_rollouts/{name}" in log for log in logs), name
    assert max(log["partial_rollouts/continuations_max"] for log in logs) == 2
    assert any(log["partial_rollouts/resumed_fraction"] > 0 for log in logs)
    # Conservation: every token generated is trained, thrown away or still in the buffer.
    buffer = trainer.rollout_buffer
    in_flight = sum(len(t.completion_ids) for t in buffer.trajectories)
    assert buffer.tokens_generated == buffer.tokens_popped + buffer.tokens_discarded + in_flight
    assert buffer.tokens_popped == sum(len(c) for b in trainer.batches for c in b["completions"])


def test_stale_tokens_in_loss_option_trains_every_token(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, partial_rollout_budget=3, partial_rollout_stale_tokens_in_loss=True)
    trainer.train()
    assert all(batch["tool_mask"] is None for batch in trainer.batches)
    assert all(log["partial_rollouts/masked_token_fraction"] == 0 for log in trainer.state.log_history[:-1])


def test_each_round_is_one_generate_call_of_at_most_the_budget(tmp_path, monkeypatch):
    # Fresh prompts and continuations share one call per round (a call per length class would repeat the round's
    # decode steps), with TRL's length limit lowered to the budget for that call only.
    from trl import GRPOTrainer

    calls = []
    original = GRPOTrainer._generate_single_turn

    def counting(self, prompt_ids, *args, **kwargs):
        if self._ready_trajectories is None:  # a generation round, not the hand-back of stored completions
            calls.append(
                {"lengths": sorted({len(p) for p in prompt_ids}), "max_new": self.generation_config.max_new_tokens}
            )
        return original(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", counting)
    trainer = make_trainer(tmp_path, max_steps=4, partial_rollout_budget=3, partial_rollout_extra_groups=1)
    trainer.train()
    rounds = sum(log["partial_rollouts/rounds"] for log in trainer.state.log_history[:-1])
    assert len(calls) == rounds > 4
    assert all(call["max_new"] == 3 for call in calls)
    assert any(len(call["lengths"]) > 1 for call in calls)  # prompts and continuations of other lengths, together
    assert trainer.generation_config.max_new_tokens == trainer.max_completion_length  # restored after each round


def test_repeated_trajectories_are_penalised_through_the_reward(tmp_path):
    # n = 1, 2 repeats: any token seen twice is a repetition, so almost every sample of the untrained model repeats.
    trainer = make_trainer(
        tmp_path,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        max_steps=2,
        partial_rollout_budget=4,
        partial_rollout_repetition_ngram_size=1,
        partial_rollout_repetition_max_repeats=2,
        partial_rollout_repetition_penalty=-1.0,
    )
    trainer.train()
    for batch in trainer.batches:
        penalties = torch.tensor([-1.0 if s == "repeated" else 0.0 for s in batch["statuses"]])
        assert "repeated" in batch["statuses"]
        for completion, status in zip(batch["completions"], batch["statuses"], strict=True):
            assert (status == "repeated") == (len(set(completion)) < len(completion))
        # Zero task reward: the advantage is the penalty minus its group mean.
        expected = penalties - penalties.view(-1, 3).mean(dim=1).repeat_interleave(3)
        assert batch["advantages"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_off_by_default_trainer_has_no_buffer(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    trainer.train()
    assert trainer.rollout_buffer is None and trainer.batches == []
    assert not any(k.startswith("partial_rollouts/") for k in trainer.state.log_history[0])


def test_checkpoint_kill_resume_gives_the_same_buffer_and_next_batches(tmp_path):
    config = dict(max_steps=5, partial_rollout_budget=3, save_strategy="steps", save_steps=2)
    full = make_trainer(tmp_path / "full", **config)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-2"
    saved = torch.load(checkpoint / ROLLOUT_BUFFER_NAME, weights_only=True)
    assert saved["world_size"] == 1 and saved["processes"][0]["iteration"] == 2

    assert full.buffer_states[2] == saved["processes"][0]
    assert any(t["status"] == "running" for t in saved["processes"][0]["trajectories"])  # mid-trajectory state

    resumed = make_trainer(tmp_path / "full", **config)  # a new process: the first run is gone
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.buffer_states[0] == saved["processes"][0]
    assert len(resumed.batches) == 3 and resumed.batches == full.batches[2:]
    assert resumed.rollout_buffer.state_dict() == full.rollout_buffer.state_dict()


def test_resume_refuses_a_buffer_from_another_config(tmp_path):
    make_trainer(tmp_path, max_steps=1, partial_rollout_budget=3, save_strategy="steps", save_steps=1).train()
    other = make_trainer(tmp_path, max_steps=2, partial_rollout_budget=4, save_strategy="steps", save_steps=1)
    with pytest.raises(ValueError, match=r"token_budget: saved 3, now 4"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    plain = make_trainer(tmp_path / "plain", max_steps=1, save_strategy="steps", save_steps=1)
    plain.train()
    budgeted = make_trainer(tmp_path / "plain", max_steps=2, partial_rollout_budget=3)
    with pytest.raises(ValueError, match=r"has no kimi_rollout_buffer.pt.*written without partial rollouts"):
        budgeted.train(resume_from_checkpoint=str(tmp_path / "plain" / "checkpoint-1"))


class FailingReward:
    """Raises on its `fail_at`-th call (a crash between generation and the optimizer step)."""

    __name__ = "failing_reward"

    def __init__(self, fail_at: int):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, completions, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("reward server down")
        return digit_fraction_reward(completions)


def test_a_crash_after_generation_loses_no_trajectory_and_trains_none_twice(tmp_path):
    reward = FailingReward(fail_at=3)
    trainer = make_trainer(tmp_path, reward_funcs=reward, max_steps=4, partial_rollout_budget=3)
    with pytest.raises(RuntimeError, match="reward server down"):
        trainer.train()
    buffer = trainer.rollout_buffer
    # The third batch was generated but not scored: its groups are still in the buffer, complete.
    failed = trainer.batches[2]["keys"]
    assert set(failed) <= {(t.group_id, t.sample_index) for t in buffer.trajectories}
    assert buffer.peek_groups(2) and [(t.group_id, t.sample_index) for t in buffer.peek_groups(2)] == failed
    trained = [k for b in trainer.batches[:2] for k in b["keys"]]
    assert len(trained) == len(set(trained)) == 12
    assert not set(trained) & {(t.group_id, t.sample_index) for t in buffer.trajectories}


def test_trainer_rejects_rows_whose_columns_change(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, partial_rollout_budget=3)
    trainer.rollout_buffer.add([{"prompt": "a1b2=", "answer": "3"}] * 3, [[1, 2]] * 3)
    with pytest.raises(ValueError, match=r"rows changed columns.*missing \['answer'\]"):
        trainer._check_rows([{"prompt": "a1b2="}] * 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs CUDA")
@pytest.mark.parametrize("mode", ["colocate"])
def test_vllm_partial_rollouts(tmp_path, mode):
    pytest.importorskip("vllm")
    trainer = make_trainer(
        tmp_path,
        max_steps=2,
        partial_rollout_budget=3,
        use_cpu=False,
        use_vllm=True,
        vllm_mode=mode,
        vllm_gpu_memory_utilization=0.2,
    )
    trainer.train()
    assert all(len(batch["keys"]) == 6 for batch in trainer.batches)
