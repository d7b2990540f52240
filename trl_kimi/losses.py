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


__all__ = [
    "mean_baseline_advantages",
    "mirror_descent_loss",
    "sequence_logps",
    "squared_residuals",
]

LOGPROB_REDUCTIONS = ("sum", "mean")


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
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must have shape (B,), got {tuple(rewards.shape)}; pass one total reward per sample."
        )
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}.")
    if rewards.numel() % num_generations != 0:
        raise ValueError(
            f"The batch of {rewards.numel()} rewards cannot be split into groups of num_generations={num_generations}; "
            "pass the rewards of whole prompt groups (gather them from every process first)."
        )
    grouped = rewards.view(-1, num_generations)  # (G, k)
    baseline = torch.nanmean(grouped, dim=1, keepdim=True)  # (G, 1)
    advantages = (grouped - baseline).view(-1)  # (B,)
    return torch.nan_to_num(advantages, nan=0.0)


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
    if per_token_logps.shape != mask.shape:
        raise ValueError(
            f"per_token_logps {tuple(per_token_logps.shape)} and mask {tuple(mask.shape)} must have the same shape."
        )
    mask = mask.to(per_token_logps.dtype)
    summed = (per_token_logps * mask).sum(dim=-1)  # (B,)
    if reduction == "sum":
        return summed
    if reduction == "mean":
        return summed / mask.sum(dim=-1).clamp(min=1.0)
    raise ValueError(f"reduction must be one of {LOGPROB_REDUCTIONS}, got {reduction!r}.")


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
) -> torch.Tensor:
    r"""
    Kimi k1.5 mirror-descent loss ``L = −(1/B) Σ_j [ A_j · logp_j − (τ/2) · (logp_j − old_logp_j)² ]``.

    Its gradient with respect to ``logp_j`` is ``−(A_j − τ·ρ_j)/B`` with ``ρ_j = logp_j − old_logp_j``: exactly the
    report's update (eq. 3) averaged over the batch. `old_logps` and `advantages` are constants (detached here).

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
    _check_same_shape(logps=logps, old_logps=old_logps, advantages=advantages)
    log_ratio = logps - old_logps.detach()  # (B,) ρ_j
    per_sample = advantages.detach() * logps - 0.5 * tau * log_ratio.pow(2)  # (B,)
    if sample_weights is not None:
        _check_same_shape(logps=logps, sample_weights=sample_weights)
        per_sample = sample_weights.detach() * per_sample
    return -per_sample.mean()


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
