import math

import pytest
import torch

from trl_kimi.losses import (
    log_mean_exp_baseline_advantages,
    mean_baseline_advantages,
    mirror_descent_loss,
    pull_ratio,
    sequence_logps,
    squared_residuals,
)


# The worked example of KIMI_SPEC.md §2: one group, k = 4, tau = 0.1.
REWARDS = [1.0, 0.0, 1.0, 0.0]
LOGPS = [-10.0, -12.0, -8.0, -15.0]
OLD_LOGPS = [-10.5, -12.0, -7.5, -14.0]
TAU = 0.1


def reference_loss(logps, old_logps, advantages, tau):
    """Independent float64 computation with plain Python: -(1/B) sum_j [A_j logp_j - tau/2 (logp_j - old_j)^2]."""
    total = 0.0
    for logp, old, adv in zip(logps, old_logps, advantages, strict=True):
        total += adv * logp - tau / 2 * (logp - old) ** 2
    return -total / len(logps)


def reference_grad(logps, old_logps, advantages, tau):
    """dL/dlogp_j = -(A_j - tau * rho_j) / B."""
    return [-(adv - tau * (logp - old)) / len(logps) for logp, old, adv in zip(logps, old_logps, advantages)]


class TestWorkedExample:
    def test_advantages(self):
        advantages = mean_baseline_advantages(torch.tensor(REWARDS), num_generations=4)
        assert advantages.tolist() == [0.5, -0.5, 0.5, -0.5]

    def test_loss_value(self):
        advantages = mean_baseline_advantages(torch.tensor(REWARDS, dtype=torch.float64), 4)
        loss = mirror_descent_loss(
            torch.tensor(LOGPS, dtype=torch.float64), torch.tensor(OLD_LOGPS, dtype=torch.float64), advantages, TAU
        )
        assert loss.item() == pytest.approx(-1.10625, abs=1e-12)  # -(4.5 - 0.075) / 4

    def test_gradient(self):
        logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
        advantages = torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64)
        mirror_descent_loss(logps, torch.tensor(OLD_LOGPS, dtype=torch.float64), advantages, TAU).backward()
        assert logps.grad.tolist() == pytest.approx([-0.1125, 0.125, -0.1375, 0.1], abs=1e-12)

    def test_squared_residuals(self):
        residuals = squared_residuals(
            torch.tensor(LOGPS, dtype=torch.float64),
            torch.tensor(OLD_LOGPS, dtype=torch.float64),
            torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64),
            TAU,
        )
        assert residuals.tolist() == pytest.approx([0.2025, 0.25, 0.3025, 0.16], abs=1e-12)
        assert residuals.mean().item() == pytest.approx(0.22875, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_inputs_against_float64_reference(seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    batch, k, tau = 24, 4, [0.05, 0.1, 1.3][seed]
    rewards = torch.rand(batch, generator=generator, dtype=torch.float64).round()
    logps = -50 * torch.rand(batch, generator=generator, dtype=torch.float64)
    old_logps = logps + torch.randn(batch, generator=generator, dtype=torch.float64)

    # independent advantages: group means by hand
    groups = [rewards[i : i + k].tolist() for i in range(0, batch, k)]
    expected_adv = [r - sum(group) / k for group in groups for r in group]
    advantages = mean_baseline_advantages(rewards.to(dtype), k)
    assert advantages.dtype == dtype
    assert advantages.tolist() == pytest.approx(expected_adv, abs=1e-6)

    x = logps.to(dtype).requires_grad_(True)
    loss = mirror_descent_loss(x, old_logps.to(dtype), advantages, tau)
    loss.backward()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    expected = reference_loss(logps.tolist(), old_logps.tolist(), expected_adv, tau)
    assert loss.item() == pytest.approx(expected, rel=tol, abs=tol)
    expected_grad = reference_grad(logps.tolist(), old_logps.tolist(), expected_adv, tau)
    assert x.grad.tolist() == pytest.approx(expected_grad, rel=tol, abs=tol)


def test_one_update_per_batch_is_reinforce_with_mean_baseline():
    # At theta = theta_i (old = current, detached) the l2 term has zero gradient: the gradient is REINFORCE's.
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 7, dtype=torch.float64)
    features = torch.randn(8, 5, dtype=torch.float64)
    actions = torch.randint(0, 7, (8,))
    advantages = mean_baseline_advantages(torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1], dtype=torch.float64), 4)

    def logps():
        return torch.log_softmax(model(features), dim=-1).gather(1, actions[:, None]).squeeze(1)  # (B,)

    current = logps()
    mirror_descent_loss(current, current.detach(), advantages, tau=5.0).backward()
    kimi_grad = model.weight.grad.clone()
    model.zero_grad()
    (-(advantages * logps()).mean()).backward()  # REINFORCE with the mean baseline
    torch.testing.assert_close(kimi_grad, model.weight.grad, rtol=1e-12, atol=1e-12)

    # ...and once the policy has moved, tau matters: the gradients differ.
    with torch.no_grad():
        model.weight.add_(0.5 * torch.randn_like(model.weight))
    model.zero_grad()
    mirror_descent_loss(logps(), current.detach(), advantages, tau=5.0).backward()
    moved_grad = model.weight.grad.clone()
    model.zero_grad()
    (-(advantages * logps()).mean()).backward()
    assert not torch.allclose(moved_grad, model.weight.grad)


def test_old_logps_and_advantages_are_constants():
    logps = torch.tensor([-1.0, -2.0], requires_grad=True)
    old = torch.tensor([-1.5, -1.0], requires_grad=True)
    advantages = torch.tensor([0.5, -0.5], requires_grad=True)
    mirror_descent_loss(logps, old, advantages, tau=0.1).backward()
    assert old.grad is None and advantages.grad is None
    assert logps.grad is not None


def test_sample_weights_scale_each_sample():
    logps = torch.tensor(LOGPS, dtype=torch.float64)
    old = torch.tensor(OLD_LOGPS, dtype=torch.float64)
    adv = torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64)
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    expected = -(1.0 * (0.5 * -10 - 0.0125) + 0.0 + 2.0 * (0.5 * -8 - 0.0125) + 1.0 * (-0.5 * -15 - 0.05)) / 4
    assert mirror_descent_loss(logps, old, adv, TAU, sample_weights=weights).item() == pytest.approx(expected)
    assert mirror_descent_loss(logps, old, adv, TAU, sample_weights=torch.ones(4, dtype=torch.float64)).item() == (
        pytest.approx(-1.10625)
    )


class TestMeanBaselineAdvantages:
    def test_no_std_scaling(self):
        # GRPO would divide by the group std (0.5 here) and give +-1; Kimi keeps r - mean.
        advantages = mean_baseline_advantages(torch.tensor([2.0, 1.0, 2.0, 1.0]), 4)
        assert advantages.tolist() == [0.5, -0.5, 0.5, -0.5]

    def test_groups_are_consecutive(self):
        advantages = mean_baseline_advantages(torch.tensor([1.0, 0.0, 5.0, 5.0, 3.0, 0.0]), 2)
        assert advantages.tolist() == [0.5, -0.5, 0.0, 0.0, 1.5, -1.5]

    def test_nan_rewards_leave_the_baseline_and_get_zero_advantage(self):
        # TRL marks a sample that every reward function declined to score with NaN.
        advantages = mean_baseline_advantages(torch.tensor([1.0, math.nan, 0.0, 0.0, math.nan, math.nan]), 3)
        assert advantages.tolist() == [0.5, 0.0, -0.5, 0.0, 0.0, 0.0]

    def test_partial_group_is_an_error(self):
        with pytest.raises(ValueError, match="cannot be split into groups of num_generations=4"):
            mean_baseline_advantages(torch.zeros(6), 4)

    def test_bad_shape_is_an_error(self):
        with pytest.raises(ValueError, match=r"shape \(B,\)"):
            mean_baseline_advantages(torch.zeros(2, 4), 4)


class TestSequenceLogps:
    per_token = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])

    def test_sum_ignores_padding(self):
        assert sequence_logps(self.per_token, self.mask).tolist() == [-6.0, -1.0]

    def test_mean_divides_by_completion_length(self):
        assert sequence_logps(self.per_token, self.mask, "mean").tolist() == [-2.0, -0.5]

    def test_unknown_reduction(self):
        with pytest.raises(ValueError, match="reduction must be one of"):
            sequence_logps(self.per_token, self.mask, "max")


def test_loss_rejects_bad_input():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="same shape"):
        mirror_descent_loss(x, torch.zeros(3), x, tau=0.1)
    with pytest.raises(ValueError, match="same shape"):
        mirror_descent_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), tau=0.1)


# ---------------------------------------------------------------------------------------------------- issue 27 options
@pytest.mark.parametrize("seed", [0, 1])
def test_length_normalization_is_the_squared_residual_divided_by_length(seed):
    # Independent computation: the squared residual (A - tau*rho)^2 / (2*tau*T), averaged over the batch, has the
    # gradient of the "length" loss; its value differs from the loss by the constant mean((A^2/(2*tau) + A*old)/T).
    generator = torch.Generator().manual_seed(seed)
    batch, tau = 12, [0.1, 1.0][seed]
    logps = -30 * torch.rand(batch, generator=generator, dtype=torch.float64)
    old = logps + torch.randn(batch, generator=generator, dtype=torch.float64)
    adv = torch.randn(batch, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, 300, (batch,), generator=generator)

    x = logps.clone().requires_grad_(True)
    loss = mirror_descent_loss(x, old, adv, tau, l2_normalization="length", lengths=lengths)
    loss.backward()

    y = logps.clone().requires_grad_(True)
    residual = ((adv - tau * (y - old)) ** 2 / (2 * tau * lengths.double())).mean()
    residual.backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-14)
    constant = ((adv**2 / (2 * tau) + adv * old) / lengths.double()).mean()
    assert loss.item() == pytest.approx(residual.item() - constant.item(), rel=1e-10, abs=1e-12)
    # by hand, plain Python
    expected = (
        -sum(
            (a * lp - tau / 2 * (lp - o) ** 2) / n
            for lp, o, a, n in zip(logps.tolist(), old.tolist(), adv.tolist(), lengths.tolist(), strict=True)
        )
        / batch
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_length_normalization_with_equal_lengths_only_rescales_the_gradient():
    logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
    old, adv = torch.tensor(OLD_LOGPS, dtype=torch.float64), torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=torch.float64)
    mirror_descent_loss(logps, old, adv, TAU, l2_normalization="length", lengths=torch.full((4,), 5)).backward()
    assert logps.grad.tolist() == pytest.approx([g / 5 for g in [-0.1125, 0.125, -0.1375, 0.1]], abs=1e-12)


def test_l2_normalization_rejects_bad_input():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="needs the completion lengths"):
        mirror_descent_loss(x, x, x, tau=0.1, l2_normalization="length")
    with pytest.raises(ValueError, match="l2_normalization must be one of"):
        mirror_descent_loss(x, x, x, tau=0.1, l2_normalization="token")
    # the default is the report's form, whatever lengths say
    lengths = torch.tensor([3, 4, 5, 6])
    logps, old = torch.tensor(LOGPS), torch.tensor(OLD_LOGPS)
    adv = torch.tensor([0.5, -0.5, 0.5, -0.5])
    assert mirror_descent_loss(logps, old, adv, TAU, lengths=lengths).item() == pytest.approx(-1.10625)


class TestLogMeanExpBaseline:
    def test_against_hand_computation(self):
        rewards, tau, k = [1.0, 0.0, 0.0, 0.0, 0.3, 0.7], 0.1, 3
        expected = []
        for g in range(0, len(rewards), k):
            group = rewards[g : g + k]
            baseline = tau * math.log(sum(math.exp(r / tau) for r in group) / k)
            expected += [r - baseline for r in group]
        got = log_mean_exp_baseline_advantages(torch.tensor(rewards, dtype=torch.float64), k, tau)
        assert got.tolist() == pytest.approx(expected, abs=1e-12)
        # with small tau the baseline sits near the group's best reward, not its mean
        assert got[0].item() == pytest.approx(1.0 - (1.0 + 0.1 * math.log(1 / 3 + 2 / 3 * math.exp(-10))), abs=1e-12)

    def test_large_tau_tends_to_the_mean_baseline(self):
        rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
        torch.testing.assert_close(
            log_mean_exp_baseline_advantages(rewards, 4, tau=1e4),
            mean_baseline_advantages(rewards, 4),
            atol=1e-4,
            rtol=0,
        )

    def test_shift_equivariant_so_centred_rewards_give_the_same(self):
        rewards = torch.tensor([0.2, 1.0, 0.0, 0.5, 3.0, 2.0], dtype=torch.float64)
        torch.testing.assert_close(
            log_mean_exp_baseline_advantages(rewards, 3, 0.3),
            log_mean_exp_baseline_advantages(mean_baseline_advantages(rewards, 3), 3, 0.3),
        )

    def test_nan_rewards_leave_the_baseline_and_get_zero(self):
        got = log_mean_exp_baseline_advantages(
            torch.tensor([1.0, math.nan, 0.0, math.nan, math.nan, math.nan]), 3, 1.0
        )
        baseline = math.log((math.e + 1) / 2)
        assert got.tolist() == pytest.approx([1 - baseline, 0.0, -baseline, 0.0, 0.0, 0.0], abs=1e-6)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="tau must be > 0"):
            log_mean_exp_baseline_advantages(torch.zeros(4), 2, 0.0)
        with pytest.raises(ValueError, match="cannot be split"):
            log_mean_exp_baseline_advantages(torch.zeros(5), 2, 0.1)

    def test_gradient_of_the_loss_with_it(self):
        # The loss is unchanged; only the advantages differ: dL/dlogp_j = -(A_j - tau*rho_j)/B with the new A.
        adv = log_mean_exp_baseline_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64), 4, TAU)
        logps = torch.tensor(LOGPS, dtype=torch.float64, requires_grad=True)
        mirror_descent_loss(logps, torch.tensor(OLD_LOGPS, dtype=torch.float64), adv, TAU).backward()
        expected = reference_grad(LOGPS, OLD_LOGPS, adv.tolist(), TAU)
        assert logps.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_pull_ratio_by_hand():
    ratios = pull_ratio(torch.tensor([0.5, 0.0, -0.5, -1.0]), torch.tensor([0.5, -0.5, 0.0, -0.25]), tau=0.1)
    assert ratios.tolist() == pytest.approx([0.1, 0.0, 0.4])
    assert pull_ratio(torch.zeros(3), torch.zeros(3), tau=1.0).numel() == 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("l2_normalization", "token", "l2_normalization must be one of"), ("baseline", "max", "baseline must be one of")],
)
def test_config_rejects_unknown_options(tmp_path, field, value, match):
    from trl_kimi import KimiConfig

    with pytest.raises(ValueError, match=match):
        KimiConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **{field: value})
    args = KimiConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (args.l2_normalization, args.baseline) == ("sequence", "mean")  # the report's forms by default
