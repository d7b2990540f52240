import copy
import math
import shutil

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, TrainerCallback
from trl import GRPOConfig
from trl.rewards import accuracy_reward

from tests.utils import digit_fraction_reward, eos_prone_model, tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.losses import mean_baseline_advantages
from trl_kimi.tasks import arithmetic


@pytest.fixture(scope="module")
def tokenizer():
    return arithmetic.make_tokenizer()


@pytest.fixture(scope="module")
def dataset():
    return arithmetic.make_rl_dataset(32, seed=0, max_terms=4)


class RecordingTrainer(KimiMirrorDescentTrainer):
    """Records what the loss sees (weights, batch) and what each generated batch holds, for recomputation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_calls, self.generated = [], []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.generated.append({"inputs": inputs, "output": {k: v for k, v in output.items() if torch.is_tensor(v)}})
        return output

    def _compute_loss(self, model, inputs):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        batch = {k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)}
        self.loss_calls.append({"state": state, "inputs": batch, "global_step": self.state.global_step})
        return super()._compute_loss(model, inputs)


def float64_sequence_logps(model, state, prompt_ids, prompt_mask, completion_ids, completion_mask):
    """Independent recomputation: a fresh float64 model with `state`, full forward, log-softmax, gather, sum."""
    # A fresh instance, not a deepcopy: TRL patches `model.forward` in place, and a copy's forward would still run
    # the original (trained) weights through that closure.
    model64 = type(model)(copy.deepcopy(model.config)).double()
    model64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        logits = model64(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, P+C, V)
    completion_logits = logits[:, prompt_ids.size(1) - 1 : -1]  # (B, C, V): the logits that predict each token
    per_token = torch.log_softmax(completion_logits, dim=-1).gather(2, completion_ids.unsqueeze(2)).squeeze(2)
    return (per_token * completion_mask).sum(dim=1)  # (B,)


def test_training_changes_weights_and_logs_metrics(tokenizer, dataset, tmp_path):
    model = tiny_model(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    # No generation options: KimiConfig's default makes 2 optimizer steps per generated batch, so on the second step
    # theta != theta_i and the tau term has a gradient (tau * rho / B, rho = |log-ratio| > 0).
    args = tiny_config(tmp_path, max_steps=4, per_device_train_batch_size=3, steps_per_generation=None)
    assert (args.steps_per_generation, args.generation_batch_size) == (2, 6)
    trainer = KimiMirrorDescentTrainer(
        model=model, reward_funcs=digit_fraction_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()

    for name, param in trainer.model.named_parameters():
        assert not torch.equal(param, before[name]), f"{name} did not change"

    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == 4
    generation_steps, reuse_steps = logs[0::2], logs[1::2]
    for row in generation_steps:  # what a practitioner watches, logged with each generated batch
        for key in (
            "reward",
            "reward_std",
            "completions/mean_length",
            "completions/max_length",
            "completions/clipped_ratio",
        ):
            assert key in row, key
        assert row["reward_std"] > 0
        assert row["kimi/abs_log_ratio_mean"] == 0.0  # theta = theta_i on the batch's first step
    for row in logs:
        for key in ("kimi/squared_residual_mean", "kimi/policy_term", "kimi/l2_term", "entropy"):
            assert key in row, key
    for row in reuse_steps:
        assert row["kimi/abs_log_ratio_mean"] > 1e-4  # the policy moved since the batch was generated
        # l2_term = mean (tau/2) rho^2 > 0, so rho != 0 and the tau term's gradient -tau * rho / B is non-zero.
        assert row["kimi/l2_term"] > 1e-9
    for row in logs:  # the reported loss is the sum of the two logged terms
        assert row["loss"] == pytest.approx(-(row["kimi/policy_term"] - row["kimi/l2_term"]), rel=1e-5, abs=1e-6)


def test_reported_loss_matches_float64_recomputation(tokenizer, dataset, tmp_path):
    tau = 0.7  # large, so a wrong l2 term would show
    args = tiny_config(tmp_path, max_steps=4, steps_per_generation=2, per_device_train_batch_size=3, tau=tau)
    model = tiny_model(tokenizer)
    trainer = RecordingTrainer(
        model=model, reward_funcs=digit_fraction_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(trainer.loss_calls) == 4

    for step, call in enumerate(trainer.loss_calls):
        batch = call["inputs"]
        ids = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
        logps = float64_sequence_logps(model, call["state"], *ids)
        # pi_theta_i is the model when the batch was generated: the weights at the first step of its iteration.
        iteration_start = trainer.loss_calls[step - step % 2]["state"]
        old_logps = float64_sequence_logps(model, iteration_start, *ids)
        advantages = batch["advantages"].double()
        expected = -(advantages * logps - tau / 2 * (logps - old_logps) ** 2).mean().item()
        assert losses[step] == pytest.approx(expected, rel=1e-4, abs=1e-5), f"step {step}"
    # The recomputation is not vacuous: on reused batches the l2 term is there.
    assert any(row.get("kimi/l2_term", 0) > 1e-6 for row in trainer.state.log_history)


def sometimes_declined_reward(completions: list[str], **kwargs) -> list[float | None]:
    """Depends on the completion; `None` (TRL's "not applicable") for about half of them."""
    return [None if len(c) % 2 == 0 else sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_advantages_are_trls_mean_baseline_of_the_filled_rewards(tokenizer, dataset, tmp_path):
    # TRL computes the advantages (KimiConfig fixes scale_rewards="none"): they must be our mean baseline of the total
    # reward, with the length penalty column filled, declined samples left out of the mean, groups of 3 straddling
    # the micro-batches of 2.
    penalty = LengthPenaltyReward(correctness_reward="digit_fraction_reward", threshold=0.2, warmup_steps=0)
    args = tiny_config(
        tmp_path, max_steps=3, per_device_train_batch_size=2, steps_per_generation=3, reward_weights=[1.0, 0.5, 1.0]
    )
    trainer = RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[digit_fraction_reward, sometimes_declined_reward, penalty],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    assert len(trainer.generated) == 1  # one batch of 2 groups, three optimizer steps on it
    out = trainer.generated[0]["output"]
    ids = [row[mask.bool()].tolist() for row, mask in zip(out["completion_ids"], out["completion_mask"], strict=True)]
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    digits = digit_fraction_reward(completions)
    declined = sometimes_declined_reward(completions)
    lengths = penalty.compute([len(x) for x in ids], [d >= 0.2 for d in digits], num_generations=3, step=0)
    total = torch.tensor(
        [d + (0.0 if s is None else 0.5 * s) + p for d, s, p in zip(digits, declined, lengths, strict=True)],
        dtype=torch.float64,
    )
    expected = mean_baseline_advantages(total, num_generations=3)
    torch.testing.assert_close(out["advantages"].double(), expected, atol=1e-5, rtol=1e-5)
    assert expected.abs().max() > 1e-3  # not a vacuous comparison of zeros
    assert any(x is None for x in declined) and any(x is not None for x in declined)
    # What TRL logs is what the model trains on: the filled length-penalty column and the total reward.
    logged = {name: list(trainer._logs["rewards"][name])[-6:] for name in trainer.reward_func_names}
    assert logged["length_penalty"] == pytest.approx(lengths, abs=1e-6)
    assert trainer.state.log_history[0]["reward"] == pytest.approx(total.mean().item(), abs=1e-5)


def test_reward_funcs_list_of_the_caller_is_left_unchanged(tokenizer, dataset, tmp_path):
    penalty = LengthPenaltyReward(correctness_reward="digit_fraction_reward", threshold=0.2, warmup_steps=0)
    reward_funcs = [digit_fraction_reward, penalty]
    for run in range(2):  # a second trainer from the same list (a resume, a sweep) still applies the penalty
        trainer = KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=reward_funcs,
            args=tiny_config(tmp_path / str(run), max_steps=1),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        assert reward_funcs == [digit_fraction_reward, penalty]
        assert trainer._length_penalties == {1: penalty}
        trainer.train()
        logged = list(trainer._logs["rewards"]["length_penalty"])
        assert len(logged) == 6 and not any(math.isnan(x) for x in logged)
        assert any(abs(x) > 1e-3 for x in logged)


def test_loss_is_scaled_for_gradient_accumulation(tokenizer, dataset, tmp_path):
    # One SGD step on the same generated batch of 6, as 1 micro-batch of 6 or as 2 accumulated micro-batches of 3,
    # must move the weights identically: each micro-loss is a mean divided by the number of micro-batches.
    def one_step(per_device, accumulation):
        args = tiny_config(
            tmp_path / f"ga{accumulation}",
            max_steps=1,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
        )
        trainer = KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=digit_fraction_reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train()
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}

    init = dict(tiny_model(tokenizer).named_parameters())
    single, accumulated = one_step(6, 1), one_step(3, 2)
    moved = max((single[n] - init[n]).abs().max().item() for n in single)
    assert moved > 1e-3
    for name in single:
        torch.testing.assert_close(accumulated[name], single[name], rtol=1e-5, atol=1e-6)


class AdamStepRecorder(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        param = next(p for group in optimizer.param_groups for p in group["params"])
        self.steps.append(int(optimizer.state[param]["step"]))


@pytest.mark.parametrize("reset, expected", [(True, [1, 2, 1, 2]), (False, [1, 2, 3, 4])])
def test_reset_optimizer_each_iteration(tokenizer, dataset, tmp_path, reset, expected):
    recorder = AdamStepRecorder()
    args = tiny_config(
        tmp_path,
        max_steps=4,
        steps_per_generation=2,
        per_device_train_batch_size=3,
        reset_optimizer_each_iteration=reset,
    )
    trainer = KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    trainer.train()
    assert recorder.steps == expected  # Adam's step count restarts with each generated batch


def test_beta_kl_to_a_fixed_reference(tokenizer, dataset, tmp_path):
    # TRL's KL to a fixed reference stays available; the reference is loaded from the model's path.
    model_dir = tmp_path / "tiny"
    tiny_model(tokenizer).save_pretrained(model_dir)
    args = tiny_config(tmp_path / "out", beta=0.5)
    trainer = KimiMirrorDescentTrainer(
        model=str(model_dir),
        reward_funcs=digit_fraction_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert trainer.ref_model is not None
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert logs[-1]["kl"] > 0  # the policy left the reference at step 2
    for row in logs:
        expected = -(row["kimi/policy_term"] - row["kimi/l2_term"]) + 0.5 * row["kl"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def boxed_tokenizer() -> PreTrainedTokenizerFast:
    """Whole-word tokens, so that a random model writes well-formed \\boxed{} answers (and some right ones)."""
    words = ["<pad>", "<eos>", "\\boxed{5}", "\\boxed{7}", "so", "Q"]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }} {% endfor %}"
    return tokenizer


def test_trl_accuracy_reward_works_unchanged(tmp_path):
    tokenizer = boxed_tokenizer()
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "Q"}]] * 8, "solution": ["5", "7"] * 4})
    args = tiny_config(tmp_path, max_completion_length=3, max_steps=2)
    trainer = RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=accuracy_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    # TRL keeps the completions of the last generated batch in its completion log.
    last = trainer.generated[-1]
    num = len(last["inputs"])
    rewards = list(trainer._logs["rewards"]["accuracy_reward"])[-num:]
    completions = list(trainer._logs["completion"])[-num:]
    assert rewards == accuracy_reward(completions, [x["solution"] for x in last["inputs"]])  # called as TRL does
    logged = [row["rewards/accuracy_reward/mean"] for row in trainer.state.log_history if "reward" in row]
    assert 0 < max(logged)  # some completions were right, so the advantages were not all zero
    assert any(g["output"]["advantages"].abs().sum() > 0 for g in trainer.generated)


def test_a_grpo_config_is_refused(tokenizer, dataset, tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    with pytest.raises(TypeError, match="args must be a KimiConfig, got GRPOConfig .*PPO clip"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=digit_fraction_reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )


def test_model_card_names_the_method(tokenizer, dataset, tmp_path):
    trainer = KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=tiny_config(tmp_path),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.create_model_card(model_name="tiny-kimi")
    card = (tmp_path / "README.md").read_text()
    assert "2501.12599" in card and "Kimi k1.5" in card and "trl-kimi" in card


def test_repetition_penalty_is_a_reward_column_trl_logs(tokenizer, dataset, tmp_path):
    # Partial rollouts cut and penalise repeated trajectories; the penalty is a reward column filled after the gather,
    # so TRL's logged rewards, total reward and advantages all include it. n = 1, 2 repeats: most samples repeat.
    reward_funcs = [digit_fraction_reward]
    trainer = KimiMirrorDescentTrainer(
        model=eos_prone_model(tokenizer),
        reward_funcs=reward_funcs,
        args=tiny_config(
            tmp_path,
            max_steps=1,
            partial_rollout_budget=4,
            partial_rollout_repetition_ngram_size=1,
            partial_rollout_repetition_max_repeats=2,
            partial_rollout_repetition_penalty=-1.0,
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert reward_funcs == [digit_fraction_reward]  # the column is added to TRL's copy only
    assert trainer.reward_func_names == ["digit_fraction_reward", "partial_rollout_repetition_penalty"]
    trainer.train()
    logged = trainer._logs["rewards"]
    penalties = list(logged["partial_rollout_repetition_penalty"])
    assert len(penalties) == 6 and set(penalties) == {0.0, -1.0}
    row = trainer.state.log_history[0]
    total = [d + p for d, p in zip(logged["digit_fraction_reward"], penalties, strict=True)]
    assert row["reward"] == pytest.approx(sum(total) / 6, abs=1e-6)
    assert row["rewards/partial_rollout_repetition_penalty/mean"] == pytest.approx(sum(penalties) / 6, abs=1e-6)


def test_an_infinite_reward_is_an_error_naming_the_function_and_the_sample(tokenizer, dataset, tmp_path):
    # +-inf would turn the advantages, then every weight, into NaN; NaN and None keep TRL's "not applicable".
    def spiky_reward(completions, **kwargs):
        return [float("nan"), None, *[0.0] * (len(completions) - 3), -math.inf]

    trainer = KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=[digit_fraction_reward, spiky_reward],
        args=tiny_config(tmp_path, max_steps=1),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"'spiky_reward' returned -inf for sample 5 of the batch \(prompt '"):
        trainer.train()
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())  # no step was taken

    def declining_reward(completions, **kwargs):  # NaN / None only: the samples stay "not applicable"
        return [float("nan"), None, *[1.0] * (len(completions) - 2)]

    trainer = RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=declining_reward,
        args=tiny_config(tmp_path, max_steps=1),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.generated[0]["output"]["advantages"].tolist() == [0.0] * 6  # declined: advantage 0, the rest 1 - 1


def test_evaluate_before_train_with_every_shipped_reward(tokenizer, tmp_path):
    # The spec audit's bug: a LengthPenaltyReward with a warm-up given as a fraction of max_steps raised before train()
    # (TRL's max_steps is 0 until train() starts). Every reward the package ships, in one trainer.
    from trl_kimi.rewards import repetition_penalty
    from trl_kimi.verifiers import code_reward, math_reward

    rows = arithmetic.make_rl_dataset(6, seed=0, max_terms=3)
    rows = rows.add_column("solution", list(rows["answer"]))
    rows = rows.add_column("test_list", [["assert 1 + 1 == 2"]] * len(rows))
    funcs = [
        arithmetic.addition_reward,
        math_reward,
        LengthPenaltyReward(correctness_reward="math_reward"),  # warm-up: 10% of the run
        repetition_penalty,
    ]
    if shutil.which("bwrap") is not None:  # code_reward refuses to run model output without its sandbox
        funcs.insert(2, code_reward)
    for config in (dict(max_steps=20), dict(max_steps=-1, num_train_epochs=2)):
        trainer = KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=funcs,
            args=tiny_config(tmp_path, per_device_eval_batch_size=6, partial_rollout_budget=4, **config),
            train_dataset=rows,
            eval_dataset=rows,
            processing_class=tokenizer,
        )
        metrics = trainer.evaluate()
        assert set(trainer.reward_func_names) <= {k.split("/")[1] for k in metrics if k.startswith("eval_rewards/")}
        assert metrics["eval_rewards/length_penalty/mean"] == 0.0  # step 0 is in the warm-up
        assert trainer.state.max_steps == 0  # evaluate() did not start a run


# ---------------------------------------------------------------------------------------------------- issue 27
def test_pull_ratio_and_log_ratio_spread_match_float64_recomputation(tokenizer, dataset, tmp_path):
    # kimi/pull_ratio = mean over samples with A != 0 of tau*|rho|/|A|; kimi/log_ratio_std = std of rho. Both are 0 on
    # a generated batch's first step (theta = theta_i) and recomputed here from the weights on the second.
    tau = 0.7
    args = tiny_config(tmp_path, max_steps=4, steps_per_generation=2, per_device_train_batch_size=3, tau=tau)
    model = tiny_model(tokenizer)
    trainer = RecordingTrainer(
        model=model, reward_funcs=digit_fraction_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == len(trainer.loss_calls) == 4
    for step, (row, call) in enumerate(zip(logs, trainer.loss_calls, strict=True)):
        if step % 2 == 0:
            assert row["kimi/pull_ratio"] == 0.0 and row["kimi/log_ratio_std"] == 0.0
            continue
        batch = call["inputs"]
        ids = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
        rho = float64_sequence_logps(model, call["state"], *ids) - float64_sequence_logps(
            model, trainer.loss_calls[step - 1]["state"], *ids
        )
        advantages = batch["advantages"].double()
        nonzero = advantages != 0
        assert nonzero.any()
        expected = (tau * rho[nonzero].abs() / advantages[nonzero].abs()).mean().item()
        assert expected > 1e-4  # not a vacuous comparison
        assert row["kimi/pull_ratio"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
        assert row["kimi/log_ratio_std"] == pytest.approx(rho.std().item(), rel=1e-3, abs=1e-6)


def test_length_normalization_loss_matches_float64_recomputation(tokenizer, dataset, tmp_path):
    tau = 0.7
    args = tiny_config(
        tmp_path,
        max_steps=2,
        steps_per_generation=2,
        per_device_train_batch_size=3,
        tau=tau,
        l2_normalization="length",
    )
    model = tiny_model(tokenizer)
    trainer = RecordingTrainer(
        model=model, reward_funcs=digit_fraction_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    for step, call in enumerate(trainer.loss_calls):
        batch = call["inputs"]
        ids = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
        logps = float64_sequence_logps(model, call["state"], *ids)
        old_logps = float64_sequence_logps(model, trainer.loss_calls[0]["state"], *ids)
        lengths = batch["completion_mask"].sum(dim=1).double()
        advantages = batch["advantages"].double()
        expected = -((advantages * logps - tau / 2 * (logps - old_logps) ** 2) / lengths).mean().item()
        assert losses[step] == pytest.approx(expected, rel=1e-4, abs=1e-6), f"step {step}"
    assert (trainer.loss_calls[0]["inputs"]["completion_mask"].sum(dim=1) > 1).any()  # the division is not by 1


def test_log_mean_exp_baseline_replaces_trls_advantages(tokenizer, dataset, tmp_path):
    tau = 0.05  # small: the exact baseline is far from the mean
    args = tiny_config(
        tmp_path, max_steps=1, per_device_train_batch_size=6, tau=tau, baseline="log_mean_exp", num_generations=3
    )
    trainer = RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    out = trainer.generated[0]["output"]
    ids = [row[mask.bool()].tolist() for row, mask in zip(out["completion_ids"], out["completion_mask"], strict=True)]
    rewards = digit_fraction_reward(tokenizer.batch_decode(ids, skip_special_tokens=True))
    expected = []
    for g in range(0, len(rewards), 3):  # by hand: r - tau * log mean exp(r / tau) over each group of 3
        group = rewards[g : g + 3]
        top = max(group)
        baseline = top + tau * math.log(sum(math.exp((r - top) / tau) for r in group) / 3)
        expected += [r - baseline for r in group]
    assert out["advantages"].tolist() == pytest.approx(expected, abs=1e-5)
    mean_adv = mean_baseline_advantages(torch.tensor(rewards), 3)
    assert (out["advantages"] - mean_adv).abs().max() > 1e-3  # differs from the mean baseline
