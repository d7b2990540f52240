import pytest
import torch
from datasets import Dataset

from tests.utils import tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.sampling import (
    CurriculumSampler,
    PrioritizedSampler,
    _batch_generator,
    difficulty_pools,
    prioritized_weights,
    read_difficulties,
)
from trl_kimi.tasks import arithmetic


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs / probs.sum() * counts.sum()
    return ((counts - expected) ** 2 / expected).sum().item()


# ---------------------------------------------------------------------------------------------------- distributions
def test_prioritized_frequencies_follow_one_minus_success_rate():
    sampler = PrioritizedSampler(num_problems=5, num_generations=2, prompts_per_batch=5, epsilon=0.05, seed=3)
    # s = [0, 0.5, 0.9, 1 (solved: floor 0.05), unseen (prior 0.5)] -> weights 1 : 0.5 : 0.1 : 0.05 : 0.5
    sampler.tracker.rates = torch.tensor([0.0, 0.5, 0.9, 1.0, 0.5], dtype=torch.float64)
    target = torch.tensor([1.0, 0.5, 0.1, 0.05, 0.5], dtype=torch.float64)
    drawn = torch.tensor([i for g in range(4000) for i in sampler.batch_indices(g)])  # 20,000 draws
    counts = torch.bincount(drawn, minlength=5).double()
    # 4 degrees of freedom: P(chi2 > 25) = 5e-5 under the target; the floor alone (0.05 vs 0.1) moves it by ~500.
    assert chi_square(counts, target) < 25
    assert chi_square(counts, prioritized_weights(sampler.tracker.rates, epsilon=0.1)) > 200  # a wrong floor fails
    assert chi_square(counts, torch.ones(5, dtype=torch.float64)) > 1000  # uniform sampling fails


def test_curriculum_staged_draws_each_stage_from_its_pool_in_order():
    difficulty = [3, 1, 2, 3, 1, 2, 2, 3, 1]
    sampler = CurriculumSampler(
        difficulty,
        schedule="staged",
        boundaries=[2, 4],
        num_generations=2,
        prompts_per_batch=3,
        repeat_count=2,
        gradient_accumulation_steps=1,  # two optimizer steps per generated batch
    )
    assert sampler.pools == [[1, 4, 8], [2, 5, 6], [0, 3, 7]]
    # Steps 0-1 stage 0, steps 2-3 stage 1, steps 4.. stage 2; generated batch g starts at step 2g.
    assert [sampler.stage_of_batch(g) for g in range(5)] == [0, 1, 2, 2, 2]
    for g in range(5):
        assert {difficulty[i] for i in sampler.batch_indices(g)} <= {1 + sampler.stage_of_batch(g)}


def test_curriculum_linear_mix_moves_from_easy_to_hard():
    difficulty = list(range(400))  # pools: 0-199 easy, 200-399 hard
    sampler = CurriculumSampler(
        difficulty, schedule="linear", boundaries=[100], num_generations=2, prompts_per_batch=400
    )
    batches = [sampler.batch_indices(g) for g in range(151)]  # batch g trains at step g; drawn in order
    for step, expected_hard in [(0, 0.0), (25, 0.25), (50, 0.5), (100, 1.0), (150, 1.0)]:
        hard = sum(i >= 200 for i in batches[step]) / 400
        # Binomial(400, p): std <= 0.025; 0.1 is 4 standard deviations.
        assert abs(hard - expected_hard) < 0.1, (step, hard)
        assert sampler.hard_fraction_of_batch(step) == min(1.0, step / 100)


def test_iteration_keeps_repeat_sampler_layout_and_length():
    sampler = PrioritizedSampler(num_problems=7, num_generations=3, prompts_per_batch=2, repeat_count=2, seed=0)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 3 * 2 * 3 * 2  # 3 batches per epoch (7 // 2)
    for g in range(3):
        block = indices[g * 12 : (g + 1) * 12]
        assert block[:6] == block[6:]  # the generated batch is repeated
        chosen = sampler.batch_indices(g)
        assert block[:6] == [chosen[0]] * 3 + [chosen[1]] * 3  # each prompt num_generations times in a row


def test_same_seed_and_updates_give_the_same_sequence_and_another_seed_does_not():
    def run(seed):
        sampler = PrioritizedSampler(num_problems=20, num_generations=2, prompts_per_batch=4, seed=seed)
        out = []
        for g in range(6):
            out.append(sampler.batch_indices(g))
            sampler.update(g, [float(i % 2) for i in sampler.batch_indices(g)])
        return out, sampler.tracker.rates

    (a, rates_a), (b, rates_b), (c, _) = run(0), run(0), run(1)
    assert a == b and torch.equal(rates_a, rates_b)
    assert a != c


# ---------------------------------------------------------------------------------------------------- prefetch
def test_update_takes_effect_from_the_next_batch_drawn_after_it():
    # Prefetch: the data loader asks for batch 1 before batch 0 has been scored.
    sampler = PrioritizedSampler(num_problems=9, num_generations=1, prompts_per_batch=3, epsilon=0.0, seed=0)
    stream = iter(sampler)
    batch0 = [next(stream) for _ in range(3)]
    first_of_batch1 = next(stream)  # draws all of batch 1, with the weights of before any update
    sampler.update(0, [1.0] * 3)  # batch 0's problems are solved...
    batch1 = [first_of_batch1] + [next(stream) for _ in range(2)]
    assert batch0 == sampler.batch_indices(0)
    assert batch1 == sampler.batch_indices(1)
    assert sampler.batch_version(1) == 0  # ...which batch 1, already drawn, does not see
    uniform = torch.multinomial(torch.ones(9, dtype=torch.float64), 3, True, generator=_batch_generator(0, 1))
    assert batch1 == uniform.tolist()

    batch2 = [next(stream) for _ in range(3)]  # drawn after the update
    assert sampler.batch_version(2) == 1
    weights = prioritized_weights(sampler.tracker.rates, 0.0)
    assert batch2 == torch.multinomial(weights, 3, True, generator=_batch_generator(0, 2)).tolist()
    # The update did change the weights: solved problems went from the prior's 0.5 to 1 - 0.75 (or less).
    assert all(weights[i] <= 0.25 for i in batch0) and (weights == 0.5).sum() == 9 - len(set(batch0))


def test_state_dict_resumes_the_exact_sequence_with_prefetched_batches():
    def make():
        return PrioritizedSampler(num_problems=10, num_generations=1, prompts_per_batch=2, seed=5)

    reference, interrupted = make(), make()
    for sampler in (reference, interrupted):
        for g in range(3):
            sampler.batch_indices(g)
            sampler.update(g, [0.0, 1.0])
        sampler.batch_indices(3)  # drawn ahead (prefetch) before the checkpoint
    state = interrupted.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the Trainer iterates the resumed epoch from its start to skip what was trained
    skipped = [next(iter(resumed)) for _ in range(1)]
    assert skipped == [0]  # batch 0 was used and dropped: a placeholder, only yielded to be skipped
    for g in range(3, 8):
        assert resumed.batch_indices(g) == reference.batch_indices(g)
        resumed.update(g, [1.0, 0.0])
        reference.update(g, [1.0, 0.0])
    assert torch.equal(resumed.tracker.rates, reference.tracker.rates)


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_errors_that_name_the_value_and_the_fix(tmp_path):
    data = Dataset.from_dict({"prompt": ["a", "b", "c"], "level": ["easy", "hard", "easy"], "terms": [2, 2, 2]})
    with pytest.raises(ValueError, match=r"no column 'difficulty'.*--difficulty_column"):
        read_difficulties(data, "difficulty")
    with pytest.raises(ValueError, match=r"row 0 holds 'easy'"):
        read_difficulties(data, "level")
    with pytest.raises(ValueError, match=r"stage 1 of 2 is empty.*1 distinct difficulty"):
        difficulty_pools(read_difficulties(data, "terms"), 2)
    with pytest.raises(ValueError, match=r"3 problems, fewer than the 4 prompts"):
        PrioritizedSampler(num_problems=3, num_generations=2, prompts_per_batch=4)
    for epsilon in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"prioritized_epsilon must be in \[0, 1\], got {epsilon}"):
            tiny_config(tmp_path, sampling_strategy="prioritized", prioritized_epsilon=epsilon)
    with pytest.raises(ValueError, match=r"staged curriculum needs curriculum_steps"):
        tiny_config(tmp_path, sampling_strategy="curriculum")
    with pytest.raises(ValueError, match=r"strictly increasing, got \[20, 10\]"):
        tiny_config(tmp_path, sampling_strategy="curriculum", curriculum_steps=[20, 10])
    with pytest.raises(ValueError, match=r"linear curriculum needs curriculum_steps = \[T\]"):
        tiny_config(tmp_path, sampling_strategy="curriculum", curriculum_schedule="linear", curriculum_steps=[5, 9])
    with pytest.raises(ValueError, match=r"must be one of .*got 'random'"):
        tiny_config(tmp_path, sampling_strategy="random")
    with pytest.raises(ValueError, match=r"save_steps \(3\) x gradient_accumulation_steps \(1\)"):
        tiny_config(
            tmp_path, sampling_strategy="prioritized", steps_per_generation=2, save_strategy="steps", save_steps=3
        )


def test_trainer_rejects_bad_datasets(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    small = arithmetic.make_rl_dataset(1, seed=0, max_terms=3)  # one problem, two prompts per batch
    with pytest.raises(ValueError, match=r"1 problems, fewer than the 2 prompts.*Add problems"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=arithmetic.addition_reward,
            args=tiny_config(tmp_path, sampling_strategy="prioritized"),
            train_dataset=small,
            processing_class=tokenizer,
        )
    with pytest.raises(ValueError, match=r"no column 'difficulty'"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=arithmetic.addition_reward,
            args=tiny_config(tmp_path, sampling_strategy="curriculum", curriculum_steps=[1]),
            train_dataset=arithmetic.make_rl_dataset(8, seed=0, max_terms=3),
            processing_class=tokenizer,
        )


# ---------------------------------------------------------------------------------------------------- trainer
def answer_not_multiple_of_3_reward(completions, answer, **kwargs) -> list[float]:
    """Success decided by the problem alone, so that success rates do not depend on what the model generates."""
    return [float(int(a) % 3 != 0) for a in answer]


class PromptRecordingTrainer(KimiMirrorDescentTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _generate_and_score_completions(self, inputs):
        self.batches.append([x["prompt"] for x in inputs])
        return super()._generate_and_score_completions(inputs)


def make_trainer(output_dir, dataset, **overrides):
    tokenizer = arithmetic.make_tokenizer()
    return PromptRecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=answer_not_multiple_of_3_reward,
        args=tiny_config(output_dir, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def test_resume_continues_the_exact_index_sequence(tmp_path):
    # 12 problems, 2 per generated batch: an epoch is 6 steps, so the run crosses an epoch; checkpoints at 3 and 6.
    dataset = arithmetic.make_rl_dataset(12, seed=0, max_terms=4)
    config = dict(sampling_strategy="prioritized", max_steps=8, save_strategy="steps", save_steps=3)
    full = make_trainer(tmp_path / "full", dataset, **config)
    full.train()
    assert len(full.batches) == 8
    rates = full.sampler.tracker.rates
    assert rates.min() < 0.5 < rates.max()  # the success rates moved both ways, so the weights did change

    for step in (3, 6):  # mid-epoch (the Trainer skips 3 batches by iterating the loader) and at an epoch's end
        resumed = make_trainer(tmp_path / "full", dataset, **config)
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{step}"))
        assert resumed.batches == full.batches[step:]
        assert torch.equal(resumed.sampler.tracker.rates, rates)
        assert resumed.sampler.num_updates == full.sampler.num_updates == 8


def test_curriculum_trainer_logs_stage_and_success_metrics(tmp_path):
    dataset = arithmetic.make_rl_dataset(12, seed=0, max_terms=5)
    dataset = dataset.map(lambda row: {"difficulty": (len(row["prompt"]) - 1) // 2})  # number of terms
    trainer = make_trainer(tmp_path, dataset, sampling_strategy="curriculum", curriculum_steps=[2], max_steps=4)
    trainer.train()
    terms = [[(len(p) - 1) // 2 for p in batch] for batch in trainer.batches]
    pools = trainer.sampler.pools
    assert max(max(t) for t in terms[:2]) <= min(dataset["difficulty"][i] for i in pools[1])  # easy first
    assert min(min(t) for t in terms[2:]) >= max(dataset["difficulty"][i] for i in pools[0])  # then hard
    logged = [row for row in trainer.state.log_history if "sampling/curriculum_stage" in row]
    assert [row["sampling/curriculum_stage"] for row in logged] == [0, 0, 1, 1]
    for row in logged:
        assert 0.0 <= row["sampling/success_rate_mean"] <= 1.0
        assert 0.0 <= row["sampling/solved_fraction"] <= 1.0
    assert logged[0]["sampling/success_rate_mean"] == 0.5  # nothing seen yet: the prior


def test_success_reward_must_name_a_reward_function(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    with pytest.raises(ValueError, match=r"success_reward='accuracy' is not one of the reward functions"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=answer_not_multiple_of_3_reward,
            args=tiny_config(tmp_path, sampling_strategy="prioritized", success_reward="accuracy"),
            train_dataset=arithmetic.make_rl_dataset(8, seed=0, max_terms=3),
            processing_class=tokenizer,
        )
