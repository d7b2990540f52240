import collections
import copy

import pytest
import torch

from tests.utils import digit_fraction_reward, eos_prone_model, tiny_config
from trl_kimi import KimiMirrorDescentTrainer, PartialRolloutBuffer
from trl_kimi.partial_rollouts import generate_iteration, generate_until_ready, loss_token_mask
from trl_kimi.rewards import RepetitionPenaltyReward
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
            # b finished with 88 new tokens: with exclusion its loss covers exactly those, by default all 600.
            assert sum(loss_token_mask(b.versions, exclude_stale_segments=True)) == 88
            assert b.segments == [[1, 256], [2, 256], [3, 88]]
            assert sum(loss_token_mask(b.versions)) == 600
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
    # The first sample finished at iteration 1 and waited for its sibling: its tokens are not stale, even with
    # exclusion; the sibling's newest segment (iteration 2) is 5 tokens.
    assert loss_token_mask(first.versions, exclude_stale_segments=True) == [1, 1, 1]
    assert sum(loss_token_mask(second.versions, exclude_stale_segments=True)) == 5


def replay_trainer_calls(low: int, high: int, exclude_stale_segments: bool, iterations: int = 8):
    """The buffer calls the trainer makes per generated batch (priming with the default extra groups, one batch's
    worth; add the batch; rounds until enough complete groups; mask; pop), with answers of `low`..`high` tokens.
    Returns, per batch, (tokens in the loss, tokens, tokens in the loss under the old rule "this iteration only")."""
    import random

    rng = random.Random(0)
    k, groups_per_batch = 4, 2
    buffer = PartialRolloutBuffer(num_generations=k, token_budget=256, max_length=1024, eos_token_ids=[EOS])
    targets = {}

    def add(num_groups):
        first = buffer.next_group_id
        buffer.add([{"prompt": "p"}] * (num_groups * k), [[5]] * (num_groups * k))
        for g in range(first, buffer.next_group_id):
            for j in range(k):
                targets[g, j] = rng.randint(low, high)

    def generate(inputs, max_new_tokens):
        out = []
        for t in buffer.running():
            n = min(max_new_tokens, targets[t.group_id, t.sample_index] - len(t.completion_ids))
            out.append(
                [7] * (n - 1) + [EOS] if len(t.completion_ids) + n == targets[t.group_id, t.sample_index] else [7] * n
            )
        return out, None

    add(groups_per_batch)  # the extra groups, drawn once
    batches = []
    for _ in range(iterations):
        add(groups_per_batch)
        iteration = buffer.begin_iteration()
        generate_until_ready(buffer, generate, groups_per_batch)
        ready = buffer.pop_groups(groups_per_batch)
        in_loss = sum(sum(loss_token_mask(t.versions, exclude_stale_segments)) for t in ready)
        assert all(sum(loss_token_mask(t.versions, exclude_stale_segments)) >= 1 for t in ready)  # none dropped
        old_rule = sum(v == iteration for t in ready for v in t.versions)
        batches.append((in_loss, sum(len(t.completion_ids) for t in ready), old_rule))
    return batches


@pytest.mark.parametrize("exclude_stale_segments", [False, True])
@pytest.mark.parametrize(("low", "high"), [(20, 200), (20, 900)])
def test_replay_every_batch_has_tokens_in_the_loss(low, high, exclude_stale_segments):
    # The replay: groups that finished early wait in the buffer a batch or more; the old rule (tokens of the
    # training iteration only) left whole batches with no token in the loss.
    batches = replay_trainer_calls(low, high, exclude_stale_segments)
    assert all(in_loss > 0 for in_loss, _, _ in batches), batches
    assert any(old_rule == 0 for _, _, old_rule in batches)  # the replay does make groups wait
    if not exclude_stale_segments:
        assert all(in_loss == total for in_loss, total, _ in batches)  # the default: every token
    elif high <= 256:
        assert all(in_loss == total for in_loss, total, _ in batches)  # one round each: nothing stale
    else:
        assert any(0 < in_loss < total for in_loss, total, _ in batches)  # continued answers lose their start


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
        (dict(token_budget=0), r"token_budget must be in \[1, 8\], got 0.*max_length=8"),
        (dict(token_budget=9), r"token_budget must be in \[1, 8\], got 9.*max_length=8"),
        (
            dict(token_budget=2, capacity=1),
            r"capacity must be >= 2 or None \(unbounded\), got 1; it must hold at least one group",
        ),
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
    assert config.partial_rollout_stale_tokens_in_loss is True  # the spec's default: every token in the loss
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
                    "prompts": [t.row["prompt"] for t in ready],
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
    trainer = make_trainer(
        tmp_path,
        max_steps=6,
        partial_rollout_budget=3,
        partial_rollout_extra_groups=1,
        partial_rollout_stale_tokens_in_loss=False,
    )
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
        # The loss mask: each trajectory's newest segment only.
        for row, (versions, tool_mask, completion_mask) in enumerate(
            zip(batch["versions"], batch["tool_mask"], batch["completion_mask"], strict=True)
        ):
            expected = loss_token_mask(versions, exclude_stale_segments=True)
            assert tool_mask[: len(versions)] == expected, row
            assert sum(completion_mask) == len(versions)
            stale_tokens += len(versions) - sum(expected)
            assert sum(expected) >= 1  # every trained sample keeps its newest segment
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


def fake_generate(inputs, max_new_tokens):
    """A fake policy: the answer to prompt [n] is n tokens, EOS (0) last."""
    out = []
    for ids in inputs:
        left = ids[0] - (len(ids) - 1)
        out.append([9] * (left - 1) + [0] if left <= max_new_tokens else [9] * max_new_tokens)
    return out, None


def test_budget_per_iteration_fills_the_batch_with_new_prompts_then_over_budget_rounds():
    buffer = PartialRolloutBuffer(num_generations=1, token_budget=2, max_length=8, eos_token_ids=[0])
    lengths = iter([7, 7, 1, 1, 1, 1, 7, 7, 7, 7, 7, 7])

    def add_groups(n):
        buffer.add([{"prompt": "p"}] * n, [[next(lengths)] for _ in range(n)])
        return buffer.trajectories[-n:]

    add_groups(2)
    buffer.begin_iteration()
    rounds = generate_iteration(buffer, fake_generate, num_groups=2, add_groups=add_groups, max_groups=6)
    # Round 1: the two 7-token answers get 2 tokens and wait. None finished: 4 x 2 missing = 8 new prompts allowed,
    # the buffer has room for 4: the four 1-token answers finish in their one round.
    assert [(r.num_sequences, r.over_budget) for r in rounds] == [(2, False), (4, False)]
    assert [len(t.completion_ids) for t in buffer.trajectories] == [2, 2, 1, 1, 1, 1]
    buffer.pop_groups(4)
    # Next iteration, only long answers: new prompts up to the buffer's 6 groups, then over-budget rounds.
    add_groups(2)
    buffer.begin_iteration()
    rounds = generate_iteration(buffer, fake_generate, num_groups=2, add_groups=add_groups, max_groups=6)
    assert [(r.num_sequences, r.over_budget) for r in rounds[:3]] == [(4, False), (2, False), (6, True)]
    assert all(r.over_budget for r in rounds[2:]) and buffer.num_ready_groups() >= 2
    iterations = [[i for i, _ in t.segments] for t in buffer.trajectories]
    assert any(len(set(its)) < len(its) for its in iterations)  # a second round in one iteration, and only then


@pytest.mark.parametrize("schedule", ["budget_per_iteration", "rounds_until_full"])
def test_schedules_in_the_trainer(tmp_path, schedule):
    # Budget 2 of at most 8 tokens; answers are geometric (EOS about 1/4 likely per step), most need several rounds.
    trainer = make_trainer(
        tmp_path,
        max_steps=4,
        partial_rollout_budget=2,
        partial_rollout_extra_groups=0,
        partial_rollout_schedule=schedule,
    )
    trainer.train()
    logs = trainer.state.log_history[:-1]  # one generated batch (iteration) per step
    over_budget = {i + 1: log["partial_rollouts/over_budget_rounds"] for i, log in enumerate(logs)}
    tokens = collections.Counter()  # (trajectory, iteration) -> tokens generated at that iteration
    for batch in trainer.batches:
        for key, versions in zip(batch["keys"], batch["versions"], strict=True):
            tokens.update((key, v) for v in versions)
    if schedule == "budget_per_iteration":
        # At most the budget per iteration, unless that iteration had to give over-budget rounds (logged).
        assert all(n <= 2 * (1 + over_budget[it]) for (_, it), n in tokens.items())
        assert trainer.rollout_buffer.next_group_id > 4 * 2  # new prompts beyond the data loader's were drawn
    else:
        assert sum(over_budget.values()) > 0 and max(tokens.values()) > 2  # several budgets in one iteration


def test_default_trains_every_token(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, partial_rollout_budget=3)
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


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def test_a_given_repetition_reward_and_partial_rollouts_penalise_once(tmp_path):
    # `trl-kimi train --reward ... repetition` with partial rollouts: the buffer cuts repeated trajectories (n = 1,
    # 2 repeats) and the given RepetitionPenaltyReward reads its verdict; no second column is added, so a repeated
    # trajectory gets -1, not -2. The reward's own detector (n = 50) would find nothing in these short completions.
    reward = RepetitionPenaltyReward(ngram_size=50, max_repeats=2, penalty=-1.0)
    trainer = make_trainer(
        tmp_path,
        reward_funcs=[zero_reward, reward],
        max_steps=1,
        partial_rollout_budget=4,
        partial_rollout_repetition_ngram_size=1,
        partial_rollout_repetition_max_repeats=2,
        partial_rollout_repetition_penalty=-1.0,
    )
    assert trainer.reward_func_names == ["zero_reward", "repetition_penalty"]
    trainer.train()
    batch = trainer.batches[0]
    assert "repeated" in batch["statuses"]
    penalties = torch.tensor([-1.0 if s == "repeated" else 0.0 for s in batch["statuses"]])
    assert list(trainer._logs["rewards"]["repetition_penalty"]) == penalties.tolist()
    expected = penalties - penalties.view(-1, 3).mean(dim=1).repeat_interleave(3)
    assert batch["advantages"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_a_sample_every_task_reward_declined_stays_unscorable_with_the_repetition_column(tmp_path):
    # The repetition column is a number (0 or the penalty), but it must not turn a sample the task reward declined
    # (None) into a scored one: TRL leaves such a sample out of its group's mean and gives it advantage 0.
    def odd_length_reward(completion_ids, **kwargs):
        return [None if len(ids) % 2 else 1.0 for ids in completion_ids]

    trainer = make_trainer(
        tmp_path,
        reward_funcs=odd_length_reward,
        max_steps=2,
        partial_rollout_budget=4,
        partial_rollout_repetition_ngram_size=1,
        partial_rollout_repetition_max_repeats=2,
        partial_rollout_repetition_penalty=-1.0,
    )
    trainer.train()
    declined_repeated = scored = 0
    for batch in trainer.batches:
        rewards = [
            None if len(c) % 2 else 1.0 + (-1.0 if s == "repeated" else 0.0)
            for c, s in zip(batch["completions"], batch["statuses"], strict=True)
        ]
        for start in range(0, len(rewards), 3):
            group = rewards[start : start + 3]
            known = [r for r in group if r is not None]
            for j, r in enumerate(group):
                expected = 0.0 if r is None else r - sum(known) / len(known)
                assert batch["advantages"][start + j] == pytest.approx(expected, abs=1e-6)
        declined_repeated += sum(
            r is None and s == "repeated" for r, s in zip(rewards, batch["statuses"], strict=True)
        )
        scored += sum(r is not None for r in rewards)
    assert declined_repeated and scored  # repeated samples the task reward declined: penalty column NaN, advantage 0


def test_rows_carry_the_rollout_status_and_a_dataset_column_of_that_name_is_refused(tmp_path):
    seen = []

    def status_reward(completions, rollout_status, **kwargs):
        seen.extend(rollout_status)
        return [0.0] * len(completions)

    trainer = make_trainer(tmp_path / "a", reward_funcs=status_reward, max_steps=1, partial_rollout_budget=3)
    trainer.train()
    assert seen == trainer.batches[0]["statuses"] and set(seen) <= {"finished", "truncated", "repeated"}

    dataset = arithmetic.make_rl_dataset(24, seed=0, max_terms=3)
    dataset = dataset.add_column("rollout_status", ["x"] * len(dataset))
    trainer = make_trainer(tmp_path / "b", dataset=dataset, max_steps=1, partial_rollout_budget=3)
    with pytest.raises(ValueError, match="column 'rollout_status'"):
        trainer.train()


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
    saved = (tmp_path / "checkpoint-1" / ROLLOUT_BUFFER_NAME).read_bytes()
    other = make_trainer(tmp_path, max_steps=2, partial_rollout_budget=4, save_strategy="steps", save_steps=1)
    with pytest.raises(ValueError, match=r"token_budget: saved 3, now 4"):  # another budget: refused, not mixed
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert (tmp_path / "checkpoint-1" / ROLLOUT_BUFFER_NAME).read_bytes() == saved  # nothing lost: resumable as it was
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


def test_image_prompts_are_refused_at_init_and_per_batch(tmp_path):
    dataset = arithmetic.make_rl_dataset(24, seed=0, max_terms=3)
    with pytest.raises(ValueError, match=r"cannot be combined with image prompts \(found: image\)"):
        make_trainer(tmp_path, dataset=dataset.add_column("image", [None] * 24), partial_rollout_budget=3)
    make_trainer(tmp_path, dataset=dataset.add_column("image", [None] * 24))  # without partial rollouts: TRL's path
    # Images inside conversational prompts are only seen per batch, before anything enters the buffer.
    trainer = make_trainer(tmp_path, partial_rollout_budget=3)
    prompt = [{"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": "a1b2="}]}]
    with pytest.raises(ValueError, match=r"image prompts \(found: an image content block in a prompt\)"):
        trainer._check_rows([{"prompt": "a1b2="}] * 3 + [{"prompt": prompt}] * 3)
    assert len(trainer.rollout_buffer) == 0


def no_reward(prompt: str) -> bool:
    return sum(map(ord, prompt)) % 2 == 0


class NoneForSomeGroups:
    """Returns `None` (TRL's "not applicable") for every sample of some prompts (those of even character sum)."""

    __name__ = "none_for_some_groups"

    def __call__(self, prompts, completions, **kwargs):
        rewards = digit_fraction_reward(completions)
        return [None if no_reward(p) else r for p, r in zip(prompts, rewards, strict=True)]


def test_a_reward_returning_none_for_a_group_trains_it_with_zero_advantage_and_loses_nothing(tmp_path):
    # Documented behaviour: TRL turns None into NaN; a sample with no reward is left out of its group's baseline and
    # gets advantage 0, so a group without any reward is scored (it leaves the buffer) but moves nothing.
    trainer = make_trainer(tmp_path, reward_funcs=NoneForSomeGroups(), max_steps=4, partial_rollout_budget=3)
    trainer.train()
    groups = {True: 0, False: 0}
    for batch in trainer.batches:
        for g in range(0, 6, 3):
            advantages = torch.tensor(batch["advantages"][g : g + 3])
            groups[no_reward(batch["prompts"][g])] += 1
            assert torch.isfinite(advantages).all()
            if no_reward(batch["prompts"][g]):
                assert advantages.abs().max() == 0
    assert groups[True] > 0 and groups[False] > 0
    trained = [k for b in trainer.batches for k in b["keys"]]
    assert len(trained) == len(set(trained)) == 24
    buffer = trainer.rollout_buffer
    in_flight = sum(len(t.completion_ids) for t in buffer.trajectories)
    assert buffer.tokens_generated == buffer.tokens_popped + buffer.tokens_discarded + in_flight


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


@pytest.mark.slow
def test_two_processes_agree_the_round_limit_like_a_vllm_server(tmp_path):
    # tests/scripts/two_process_partial_rollout_rounds.py: the server generates everyone's sequences with the main
    # process's limit. Budget 4, maximum 11 (not a multiple of 4).
    import json

    from tests.test_multiprocess import run_two_processes

    run_two_processes("two_process_partial_rollout_rounds.py", tmp_path)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["world_size"] == 2

    # Round 3: rank 0 has nothing to continue (limit 1), rank 1 needs 3 tokens: the server used 3, not rank 0's 1.
    starved0, starved1 = rank0["starved"], rank1["starved"]
    assert starved0["local_limits"] == [4, 4, 1] and starved1["local_limits"] == [4, 4, 3]
    assert starved0["server_max_tokens"] == [4, 4, 3]  # the maximum over the processes, each round
    assert starved0["rounds"] == starved1["rounds"] == 3
    assert starved1["segments"] == [[4, 4, 3], [2]] and starved1["statuses"] == ["truncated", "finished"]
    assert starved0["segments"] == [[4, 2], [3]] and starved0["statuses"] == ["finished", "finished"]

    # Round 1: rank 0's limit 4, rank 1's 2: the server generated 4 for both, rank 1 kept its 2.
    over0, over1 = rank0["over_limit"], rank1["over_limit"]
    assert over0["server_max_tokens"] == [4, 4] and over1["local_limits"][0] == 2
    assert over1["segments"] == [[9, 2]] and over1["lengths"] == [11] and over1["statuses"] == ["truncated"]
    assert over0["segments"] == [[3, 4, 4]] and over0["lengths"] == [11]
    assert over0["tokens_discarded"] == over1["tokens_discarded"] == 0  # trimmed before the buffer, not generated
