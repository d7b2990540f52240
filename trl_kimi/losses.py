"""The maths of Kimi k1.5's online mirror descent (https://huggingface.co/papers/2501.12599, §2.3.2), as pure functions.

Each iteration i solves ``max_θ E[r] − τ·KL(πθ ‖ πθi)``. With the mean reward r̄ of the k samples of a prompt as the
estimate of τ·log Z, the report's update (its eq. 3) is

    g = (1/k) Σ_j [ ∇ log πθ(y_j|x) · (r_j − r̄)  −  (τ/2) · ∇ (log πθ(y_j|x) − log πθi(y_j|x))² ]

so the loss whose negative gradient is ``g`` averaged over a batch of B samples is

    L = −(1/B) Σ_j [ A_j · logp_j − (τ/2) · (logp_j − old_logp_j)² ],      A_j = r_j − r̄.

No clipping, no importance ratio, no value network: the l2 pull towards πθi is the only trust region. At θ = θi the
pull has zero gradient, so with one optimizer step per generated batch the update is REINFORCE with a mean baseline.

Nothing here touches a trainer: the functions take tensors and return tensors, and are tested against the worked
example of the spec on CPU.
"""

import torch

from ._checks import check_choice, check_number


__all__ = [
    "log_mean_exp_baseline_advantages",
    "mean_baseline_advantages",
    "mirror_descent_loss",
    "pull_ratio",
    "sequence_logps",
    "squared_residuals",
]

LOGPROB_REDUCTIONS = ("sum", "mean")
L2_NORMALIZATIONS = ("sequence", "length")
BASELINES = ("mean", "log_mean_exp")


def mean_baseline_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    r"""
    Advantages with the group's mean reward as baseline: ``A_j = r_j − mean(r over the group of j)``.

    The batch is made of consecutive groups of `num_generations` samples of the same prompt (TRL's `RepeatSampler`
    layout). Unlike GRPO, the advantage is **not** divided by the group's standard deviation: the mirror-descent
    update needs ``r − τ·log Z`` itself, and r̄ estimates τ·log Z.

    A NaN reward (TRL's marker for a sample that every reward function declined to score) is left out of its group's
    mean, and its advantage is 0, so it neither biases the baseline nor moves the policy.

    Args:
        rewards (`torch.Tensor` of shape `(B,)`):
            Total reward of each sample, all processes gathered, groups consecutive.
        num_generations (`int`):
            Samples per prompt, k. `B` must be a multiple of it.

    Returns:
        `torch.Tensor` of shape `(B,)`: the advantages, same dtype as `rewards`.

    Example:
    ```python
    >>> import torch
    >>> mean_baseline_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]), num_generations=4)
    tensor([ 0.5000, -0.5000,  0.5000, -0.5000,  0.0000,  0.0000,  0.0000,  0.0000])

    ```
    """
    if num_generations < 1 or rewards.dim() != 1 or rewards.numel() % num_generations != 0:
        raise ValueError(
            f"Rewards of shape {tuple(rewards.shape)} cannot be split into groups of num_generations={num_generations}"
            "; pass one total reward per sample, shape (B,), for whole prompt groups (gather them from every process "
            "first)."
        )
    grouped = rewards.view(-1, num_generations)  # (G, k)
    baseline = torch.nanmean(grouped, dim=1, keepdim=True)  # (G, 1)
    advantages = (grouped - baseline).view(-1)  # (B,)
    return torch.nan_to_num(advantages, nan=0.0)


def log_mean_exp_baseline_advantages(rewards: torch.Tensor, num_generations: int, tau: float) -> torch.Tensor:
    r"""
    Advantages with the exact baseline of the mirror-descent target: ``A_j = r_j − τ·log mean_k exp(r_k/τ)`` over
    the group of j.

    The report's optimum is ``π* = πθi·exp(r/τ)/Z``; ``τ·log Z`` estimated from the k samples of a prompt is
    ``τ·log mean_k exp(r_k/τ)``, which lies between the group's mean reward (its limit as τ grows, see
    [`mean_baseline_advantages`]) and its best reward (its limit as τ → 0). With it the implied target policy is
    normalised over the group. The baseline sits above the mean (for 0/1 rewards and small τ, near 1), so more of the
    advantages are negative than with the mean baseline.

    The baseline is shift-equivariant (``τ·lme((r + c)/τ) = c + τ·lme(r/τ)``), so the result is the same when
    `rewards` are already mean-centred advantages. NaN rewards are left out of their group's baseline and get 0.

    Args:
        rewards (`torch.Tensor` of shape `(B,)`):
            Total reward of each sample, all processes gathered, groups of `num_generations` consecutive.
        num_generations (`int`):
            Samples per prompt, k.
        tau (`float`):
            τ > 0 of the loss.

    Returns:
        `torch.Tensor` of shape `(B,)`, same dtype as `rewards`.

    Example:
    ```python
    >>> import torch
    >>> log_mean_exp_baseline_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), num_generations=4, tau=1.0)
    tensor([ 0.3799, -0.6201,  0.3799, -0.6201])

    ```
    """
    centred = mean_baseline_advantages(rewards, num_generations)  # validates the shapes; NaN → 0
    check_number("tau", tau, 0, low_open=True)
    grouped = centred.view(-1, num_generations) / tau  # (G, k)
    valid = ~torch.isnan(rewards.view(-1, num_generations))  # (G, k)
    masked = grouped.masked_fill(~valid, float("-inf"))
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)  # (G, 1)
    baseline = tau * (torch.logsumexp(masked, dim=1, keepdim=True) - torch.log(count.to(grouped.dtype)))  # (G, 1)
    baseline = torch.nan_to_num(baseline, nan=0.0, neginf=0.0)  # a group with no valid reward
    advantages = (centred.view(-1, num_generations) - baseline) * valid  # (G, k)
    return advantages.view(-1)


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    r"""
    Sequence log-probability ``log π(y|x)`` from per-token log-probabilities.

    Args:
        per_token_logps (`torch.Tensor` of shape `(B, T)`):
            Log-probability of each completion token (prompt excluded).
        mask (`torch.Tensor` of shape `(B, T)`):
            1 for tokens that belong to the completion, 0 for padding (and for tokens excluded from the loss).
        reduction (`str`, *optional*, defaults to `"sum"`):
            `"sum"`: the report's sequence log-probability ``Σ_t log π(y_t|x, y_<t)``. `"mean"`: the same sum divided
            by the number of unmasked tokens (a different objective that keeps both loss terms O(1) for very long
            answers; shorter answers then get relatively larger per-token gradients).

    Returns:
        `torch.Tensor` of shape `(B,)`.

    Example:
    ```python
    >>> import torch
    >>> logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    >>> mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> sequence_logps(logps, mask), sequence_logps(logps, mask, reduction="mean")
    (tensor([-6., -1.]), tensor([-2.0000, -0.5000]))

    ```
    """
    check_choice("reduction", reduction, LOGPROB_REDUCTIONS)
    if per_token_logps.shape != mask.shape:
        raise ValueError(
            f"per_token_logps {tuple(per_token_logps.shape)} and mask {tuple(mask.shape)} must have the same shape."
        )
    mask = mask.to(per_token_logps.dtype)
    summed = (per_token_logps * mask).sum(dim=-1)  # (B,)
    return summed if reduction == "sum" else summed / mask.sum(dim=-1).clamp(min=1.0)


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        raise ValueError(f"Expected tensors of the same shape (B,), got {shapes}.")


def mirror_descent_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    tau: float,
    sample_weights: torch.Tensor | None = None,
    l2_normalization: str = "sequence",
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    Kimi k1.5 mirror-descent loss ``L = −(1/B) Σ_j [ A_j · logp_j − (τ/2) · (logp_j − old_logp_j)² ]``.

    Its gradient with respect to ``logp_j`` is ``−(A_j − τ·ρ_j)/B`` with ``ρ_j = logp_j − old_logp_j``: exactly the
    report's update (eq. 3) averaged over the batch. `old_logps` and `advantages` are constants (detached here).

    With `l2_normalization="length"` each sample's term is divided by its length ``T_j``:
    ``L = −(1/B) Σ_j [ A_j · logp_j − (τ/2) · ρ_j² ] / T_j``, the gradient of the squared residual divided by the
    answer length, ``(1/B) Σ_j (A_j − τ·ρ_j)² / (2τ·T_j)`` (the two differ by a constant). The balance of the policy
    term and the pull is unchanged; long answers weigh less in the batch.

    Args:
        logps (`torch.Tensor` of shape `(B,)`):
            Sequence log-probabilities under the policy being trained, πθ (with gradient).
        old_logps (`torch.Tensor` of shape `(B,)`):
            Sequence log-probabilities under πθi, the policy at the start of the iteration (when the batch was
            generated).
        advantages (`torch.Tensor` of shape `(B,)`):
            ``r_j − r̄``, see [`mean_baseline_advantages`].
        tau (`float`):
            τ > 0, strength of the l2 pull towards πθi (checked once, by [`KimiConfig`]).
        sample_weights (`torch.Tensor` of shape `(B,)`, *optional*):
            Constant per-sample weights, e.g. an importance ratio correcting for samples drawn by an inference engine
            (vLLM) whose probabilities differ slightly from πθi. `None` means all ones.
        l2_normalization (`str`, *optional*, defaults to `"sequence"`):
            `"sequence"`: the report's form. `"length"`: each sample's term divided by its length (`lengths`).
        lengths (`torch.Tensor` of shape `(B,)`, *optional*):
            Number of completion tokens of each sample; required by `l2_normalization="length"`.

    Returns:
        `torch.Tensor`: the scalar loss.

    Example (the worked example of the spec, k = 4, τ = 0.1):
    ```python
    >>> import torch
    >>> logps = torch.tensor([-10.0, -12.0, -8.0, -15.0])
    >>> old_logps = torch.tensor([-10.5, -12.0, -7.5, -14.0])
    >>> advantages = torch.tensor([0.5, -0.5, 0.5, -0.5])
    >>> mirror_descent_loss(logps, old_logps, advantages, tau=0.1)
    tensor(-1.1063)

    ```
    """
    check_choice("l2_normalization", l2_normalization, L2_NORMALIZATIONS)
    _check_same_shape(logps=logps, old_logps=old_logps, advantages=advantages)
    log_ratio = logps - old_logps.detach()  # (B,) ρ_j
    per_sample = advantages.detach() * logps - 0.5 * tau * log_ratio.pow(2)  # (B,)
    if sample_weights is not None:
        _check_same_shape(logps=logps, sample_weights=sample_weights)
        per_sample = sample_weights.detach() * per_sample
    if l2_normalization == "length":
        if lengths is None:
            raise ValueError('l2_normalization="length" needs the completion lengths: pass lengths=mask.sum(-1).')
        _check_same_shape(logps=logps, lengths=lengths)
        per_sample = per_sample / lengths.detach().to(per_sample.dtype).clamp(min=1.0)
    return -per_sample.mean()


def pull_ratio(log_ratio: torch.Tensor, advantages: torch.Tensor, tau: float) -> torch.Tensor:
    r"""
    How hard the l2 pull binds: ``τ·|ρ_j| / |A_j|`` for each sample with ``A_j ≠ 0`` (others are dropped).

    The gradient on ``logp_j`` is ``A_j − τ·ρ_j``: below ~0.1 the pull barely changes the update (it is REINFORCE
    with a baseline), at 1 it cancels the advantage (the sample has reached the iteration's target). It is 0 on a
    generated batch's first optimizer step (θ = θi). The normalisation of the l2 term does not change it. No
    gradient.

    Example:
    ```python
    >>> import torch
    >>> pull_ratio(torch.tensor([0.5, 0.0, -0.5, -1.0]), torch.tensor([0.5, -0.5, 0.0, -0.5]), tau=0.1)
    tensor([0.1000, 0.0000, 0.2000])

    ```
    """
    _check_same_shape(log_ratio=log_ratio, advantages=advantages)
    with torch.no_grad():
        nonzero = advantages != 0
        return tau * log_ratio[nonzero].abs() / advantages[nonzero].abs()


def squared_residuals(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, tau: float
) -> torch.Tensor:
    r"""
    Per-sample residual of the report's squared surrogate, ``(A_j − τ·ρ_j)²`` with ``ρ_j = logp_j − old_logp_j``.

    The report fits ``r − τ·log Z = τ·log(πθ/πθi)``; this is how far each sample is from that identity, a diagnostic
    worth logging (it starts at ``A²`` and shrinks as the policy fits the iteration's target). No gradient.

    Example (the worked example of the spec: mean 0.22875):
    ```python
    >>> import torch
    >>> squared_residuals(
    ...     torch.tensor([-10.0, -12.0, -8.0, -15.0]), torch.tensor([-10.5, -12.0, -7.5, -14.0]),
    ...     torch.tensor([0.5, -0.5, 0.5, -0.5]), tau=0.1,
    ... )
    tensor([0.2025, 0.2500, 0.3025, 0.1600])

    ```
    """
    _check_same_shape(logps=logps, old_logps=old_logps, advantages=advantages)
    with torch.no_grad():
        return (advantages - tau * (logps - old_logps)).pow(2)
