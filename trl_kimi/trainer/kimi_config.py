import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from .._checks import check_choice, check_number
from ..losses import BASELINES, L2_NORMALIZATIONS, LOGPROB_REDUCTIONS
from ..partial_rollouts import PARTIAL_ROLLOUT_SCHEDULES
from ..sampling import CURRICULUM_SCHEDULES, SAMPLING_STRATEGIES, _check_curriculum_steps


# Optimizer steps per generated batch when the user sets none of `steps_per_generation`, `generation_batch_size` and
# `num_iterations`: `steps_per_generation = DEFAULT_STEPS_PER_GENERATION_FACTOR × gradient_accumulation_steps`. The tau
# term has zero gradient on a batch's first step (θ = θi), so with TRL's default (one step per batch) the method would
# be REINFORCE with a mean baseline. 2 is the smallest number of steps per batch at which tau acts. Cost: each
# generated batch is twice as large and generated half as often, so the 2nd step trains on samples from a policy one
# step older.
DEFAULT_STEPS_PER_GENERATION_FACTOR = 2

# GRPOConfig options that select another objective than the mirror-descent loss. Each maps to the only value the Kimi
# trainer accepts and the reason; a different value would be silently ignored by our `_compute_loss`, so it is refused.
_FIXED_BY_THE_METHOD = {
    "loss_type": (
        "mirror_descent",
        "the loss is always the mirror-descent loss; use trl.GRPOTrainer for other losses",
    ),
    "scale_rewards": ("none", "the advantage is r - mean(r) over the group, never divided by a standard deviation"),
    "multi_objective_aggregation": (
        "sum_then_normalize",
        "rewards are summed with `reward_weights` and only then given a mean baseline",
    ),
    "epsilon": (None, "there is no PPO clip: the l2 pull towards the iteration's policy (tau) is the trust region"),
    "epsilon_high": (
        None,
        "there is no PPO clip: the l2 pull towards the iteration's policy (tau) is the trust region",
    ),
    "delta": (None, "there is no two-sided PPO clip: the l2 pull (tau) is the trust region"),
    "importance_sampling_level": ("token", "the loss uses sequence log-probabilities and no importance ratio"),
    "off_policy_mask_threshold": (None, "off-policy sequence masking is not part of the mirror-descent objective"),
    "top_entropy_quantile": (1.0, "every completion token enters the sequence log-probability"),
    "entropy_coef": (0.0, "an entropy bonus is not part of the mirror-descent objective"),
    "use_adaptive_entropy": (False, "an entropy bonus is not part of the mirror-descent objective"),
}


@dataclass
class KimiConfig(GRPOConfig):
    r"""
    Configuration class for the [`KimiMirrorDescentTrainer`].

    Online mirror descent from [Kimi k1.5: Scaling Reinforcement Learning with
    LLMs](https://huggingface.co/papers/2501.12599), §2.3.2. [`KimiConfig`] inherits every parameter from
    [`~trl.GRPOConfig`] (generation, vLLM, logging, `beta` KL to a fixed reference, ...) and adds the fields below.
    GRPO options that define another objective (PPO clipping, std-scaled advantages, other loss types, entropy
    terms) are fixed by the method: setting them raises an error instead of being silently ignored.

    Parameters:
        > Parameters that control the mirror-descent objective

        tau (`float`, *optional*, defaults to `0.1`):
            τ > 0, the strength of the l2 pull ``(τ/2)·(log πθ − log πθi)²`` towards πθi, the policy at the start of
            the iteration (when the batch was generated). It has zero gradient at θ = θi, so it only acts on the
            2nd, 3rd, ... optimizer steps made on the same generated batch. Hence the default below: when none of
            `steps_per_generation`, `generation_batch_size` and `num_iterations` is set, `steps_per_generation` is
            `DEFAULT_STEPS_PER_GENERATION_FACTOR` (2) × `gradient_accumulation_steps`, i.e. two optimizer steps per
            generated batch. Its cost: a generation batch twice as large, generated half as often. Settings that
            give one step per batch (`steps_per_generation × num_iterations <= gradient_accumulation_steps`) make
            the update REINFORCE with a mean baseline, and the config warns. The report gives no value for τ; 0.1
            is the value this package's measurement on a pretrained chat model supports (a small model trained from
            scratch on short answers did better with 1). Watch the logged `kimi/pull_ratio` (``τ·|ρ|/|A|`` on the
            batch's later steps): above 1 the pull cancels the advantage (lower τ); far below 0.1 it does not bind
            and there is no trust region (raise τ if training is erratic). With `logprob_reduction="sum"` ρ, and
            with it the pull at a fixed τ, grows with the number of answer tokens whose probability moves and with
            sparser rewards; see `docs/mirror_descent.md` ("Choosing τ").
        logprob_reduction (`str`, *optional*, defaults to `"sum"`):
            How per-token log-probabilities become the sequence log-probability ``log π(y|x)``. `"sum"`: the
            report's sequence log-probability. `"mean"`: divided by the completion length; for very long answers,
            where ρ = log πθ − log πθi summed over thousands of tokens makes the τ term dominate. It changes the
            objective (shorter answers get relatively larger per-token gradients).
        l2_normalization (`str`, *optional*, defaults to `"sequence"`):
            Normalisation of each sample's term of the loss. `"sequence"`: the report's form,
            ``A_j·logp_j − (τ/2)·ρ_j²``. `"length"`: the same divided by the completion's length ``T_j`` (the
            squared residual ``(A_j − τ·ρ_j)²`` divided by the answer length, as an open re-implementation does);
            the balance of reward and pull is unchanged, long answers weigh less in the batch.
        baseline (`str`, *optional*, defaults to `"mean"`):
            Estimate of ``τ·log Z`` subtracted from the rewards. `"mean"`: the report's group mean reward r̄ (TRL's
            advantages with `scale_rewards="none"`). `"log_mean_exp"`: the exact ``τ·log mean_k exp(r_k/τ)`` of the
            group, which normalises the target policy (it tends to r̄ as τ grows; for small τ it sits near the best
            reward of the group, so most advantages are negative).
        reset_optimizer_each_iteration (`bool`, *optional*, defaults to `False`):
            Whether to clear the optimizer state (e.g. Adam moments) at each new generated batch. The report does so,
            because each iteration is a new optimisation problem; turn it on for the paper's recipe. Off by default
            because TRL users expect the optimizer state to persist. The learning-rate schedule is not reset. With
            one optimizer step per batch, every step would be Adam's first (a sign-SGD step), and the config warns.

        > Parameters that control which problems are sampled (§2.3.4, [`trl_kimi.sampling`])

        sampling_strategy (`str`, *optional*, defaults to `"uniform"`):
            `"uniform"`: TRL's `RepeatSampler` (a fresh permutation per epoch). `"curriculum"`: easy to hard, by
            `difficulty_column` and `curriculum_schedule` ([`~trl_kimi.sampling.CurriculumSampler`]).
            `"prioritized"`: problem i with probability ∝ ``max(1 − s_i, prioritized_epsilon)``, s_i its success rate
            ([`~trl_kimi.sampling.PrioritizedSampler`]). Both keep TRL's sampler contract and save their state in
            checkpoints. An update of the success rates takes effect from the next generated batch drawn after it.
        difficulty_column (`str`, *optional*, defaults to `"difficulty"`):
            Curriculum: the dataset column of finite numbers, higher = harder (labels, or ``1 − pass_rate`` from
            [`~trl_kimi.curation.estimate_pass_rates`]).
        curriculum_schedule (`str`, *optional*, defaults to `"staged"`):
            `"staged"`: K boundaries in `curriculum_steps` make K + 1 stages, each sampling uniformly from its own pool
            of problems, easiest first. `"linear"`: `curriculum_steps` = [T]; the batch mixes the easier and harder
            halves, the harder one's share growing linearly from 0 at step 0 to 1 at step T.
        curriculum_steps (`list[int]` or `None`, *optional*, defaults to `None`):
            Optimizer steps: the stage boundaries (staged) or the ramp length T (linear). Required by the curriculum.
        success_reward (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function that says whether a sample is correct (TRL names a function by its
            `__name__`, a model by its name). `None`: the only reward function (an error when there are several).
        success_threshold (`float`, *optional*, defaults to `1.0`):
            A sample is a success when its `success_reward` is ≥ this value.
        success_ema_alpha (`float`, *optional*, defaults to `0.5`):
            α in (0, 1] of the success rate's moving average ``s_i ← (1 − α) s_i + α · mean correctness of the group``.
        success_prior (`float`, *optional*, defaults to `0.5`):
            s_i of a problem not seen yet, in [0, 1].
        prioritized_epsilon (`float`, *optional*, defaults to `0.05`):
            ε in [0, 1], the floor on the prioritised weight, so solved problems (s_i = 1) still come back.
        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            Keep generating groups until the generated batch holds `generation_batch_size / num_generations` groups
            whose total rewards are not all equal (beyond the report: with a mean baseline an all-equal group has zero
            advantage). Extra groups are drawn from the sampler's distribution (uniform, prioritised or the
            curriculum's stage), seeded by (seed, batch, try, process), so resuming is exact; only the first try's
            groups feed the prioritised success rates. Logged: `dynamic_sampling/tries`,
            `dynamic_sampling/informative_fraction` (of the first try), `dynamic_sampling/generated_groups`,
            `dynamic_sampling/uninformative_groups_kept`. Needs whole groups on each process
            (`per_device_train_batch_size × steps_per_generation` a multiple of `num_generations`) and no partial
            rollouts.
        dynamic_sampling_max_tries (`int`, *optional*, defaults to `4`):
            Most generation rounds per generated batch (the first included); when they run out, the batch is topped
            up with the earliest uninformative groups, as plain GRPO would train on them.

        > Parameters that control partial rollouts (§2.6, [`trl_kimi.partial_rollouts`])

        partial_rollout_budget (`int` or `None`, *optional*, defaults to `None`):
            Token budget per trajectory and iteration; `None` turns partial rollouts off (TRL's full rollouts). With
            the default `partial_rollout_schedule`, every trajectory advances at most this many new tokens per
            iteration; what is still unfinished waits in a [`~trl_kimi.PartialRolloutBuffer`] and is continued by the
            next policy. A group is scored and trained on only when all its `num_generations` samples are done.
            Needs `1 <= budget <= max length`.
        partial_rollout_schedule (`str`, *optional*, defaults to `"budget_per_iteration"`):
            How an iteration fills its batch of complete groups. `"budget_per_iteration"` (the report's): one round
            of at most the budget for every running trajectory; while the batch is not full, new prompts drawn from
            `train_dataset` get one round each; a group not finished waits for the next iteration. Only when the
            buffer already holds `ceil(max length / budget)` iterations' worth of groups does a further round continue
            trajectories that had one (logged as `partial_rollouts/over_budget_rounds`). `"rounds_until_full"`: rounds
            of at most the budget repeat for every running trajectory until the batch is full (a trajectory may then
            advance several budgets in one iteration). See `docs/partial_rollouts.md` for a side-by-side measurement.
        partial_rollout_max_length (`int` or `None`, *optional*, defaults to `None`):
            Overall maximum completion length across continuations; a trajectory reaching it is truncated. `None`:
            `max_completion_length`.
        partial_rollout_extra_groups (`int` or `None`, *optional*, defaults to `None`):
            Groups kept in flight on each process on top of one generated batch, so that a batch can be made of
            finished groups while long ones are still being continued. Drawn once from `train_dataset` (seeded) when
            the run starts, then trained like any other group. `None`: one generated batch's worth (double
            buffering); `0`: none (every batch then waits for its slowest group, in rounds of the budget).
        partial_rollout_max_continuations (`int` or `None`, *optional*, defaults to `None`):
            The most generation rounds after a trajectory's first; still unfinished after them, it is truncated.
            `None`: only the overall maximum length bounds it.
        partial_rollout_stale_tokens_in_loss (`bool`, *optional*, defaults to `True`):
            Whether every token of a continued trajectory counts in the sequence log-probability (the spec's default,
            as slime's), including the segments generated by earlier policies; their old log-probs are those of the
            training iteration's policy πθi, the anchor of the Kimi objective, so they are off-policy samples of it.
            `False`: only each trajectory's newest segment counts (the tokens of the policy that finished it); the
            earlier segments are excluded ([`~trl_kimi.partial_rollouts.loss_token_mask`]). Either way a sample
            that waited in the buffer for its group, or its group for a batch, keeps its tokens, and the reward judges
            the whole answer. The masked fraction is logged as `partial_rollouts/masked_token_fraction`. Why all
            tokens by default: excluding the earlier segments trains the first tokens of a long answer (those that
            choose between a short and a long answer) only when it finishes within one round (measurement in
            `docs/partial_rollouts.md`).
        partial_rollout_repetition_ngram_size (`int` or `None`, *optional*, defaults to `32`):
            Repeat detection during partial rollouts ([`~trl_kimi.rewards.find_repetition`]): a trajectory whose last
            n tokens already occurred `partial_rollout_repetition_max_repeats` times is cut there and its row's
            `rollout_status` is `"repeated"`, which [`~trl_kimi.rewards.RepetitionPenaltyReward`] penalises. `None`
            turns it off.
        partial_rollout_repetition_max_repeats (`int`, *optional*, defaults to `3`):
            Occurrences (≥ 2) of the last n-gram that count as a repetition.
        partial_rollout_repetition_penalty (`float`, *optional*, defaults to `-0.5`):
            Added to the total reward of a repeated trajectory, before the group's mean baseline (≤ 0), by a
            `RepetitionPenaltyReward` column (`partial_rollout_repetition_penalty`) added to the reward functions.
            When `reward_funcs` already holds a `RepetitionPenaltyReward` (e.g. `trl-kimi train --reward ...
            repetition`), no column is added: that reward penalises the cut trajectories too, once, with its own
            value.

    > [!NOTE]
    > These parameters have default values different from [`~trl.GRPOConfig`]:
    > - `loss_type`: `"mirror_descent"` (the only accepted value).
    > - `scale_rewards`: `"none"` (the only accepted value): the advantage is ``r − r̄``.
    > - `epsilon`: `None` (the only accepted value): there is no clipping.
    > - `steps_per_generation`: `2 × gradient_accumulation_steps` when neither it, `generation_batch_size` nor
    >   `num_iterations` is set (two optimizer steps per generated batch, so that `tau` acts).

    Example:
    ```python
    >>> from trl_kimi import KimiConfig
    >>> args = KimiConfig(
    ...     output_dir="kimi-run", tau=0.1, num_generations=8,
    ...     use_cpu=True, bf16=False,  # on a CPU-only machine; drop both on a GPU
    ... )
    >>> args.tau, args.logprob_reduction, args.scale_rewards
    (0.1, 'sum', 'none')
    >>> args.steps_per_generation, args.gradient_accumulation_steps  # two optimizer steps per generated batch
    (2, 1)

    ```
    """

    tau: float = field(
        default=0.1,
        metadata={
            "help": "tau > 0: strength of the l2 pull (tau/2)*(log pi_theta - log pi_theta_i)^2 towards the policy at "
            "the start of the iteration. It only acts on the 2nd, 3rd, ... optimizer steps made on one generated "
            "batch (steps_per_generation > gradient_accumulation_steps, or num_iterations > 1); unless set, "
            "steps_per_generation defaults to 2 x gradient_accumulation_steps for that reason. The report gives no "
            "value; 0.1 is the measured default. Watch the logged kimi/pull_ratio: above 1 the pull cancels the "
            "advantage (docs/mirror_descent.md)."
        },
    )
    logprob_reduction: str = field(
        default="sum",
        metadata={
            "help": "How token log-probabilities form the sequence log-probability: 'sum' (the report's, default) or "
            "'mean' (divided by the completion length, for very long answers).",
            "choices": list(LOGPROB_REDUCTIONS),
        },
    )
    l2_normalization: str = field(
        default="sequence",
        metadata={
            "help": "Normalisation of each sample's loss term: 'sequence' (the report's, default) or 'length' "
            "(divided by the completion length, i.e. the squared residual (A - tau*rho)^2 / length).",
            "choices": list(L2_NORMALIZATIONS),
        },
    )
    baseline: str = field(
        default="mean",
        metadata={
            "help": "Estimate of tau*log Z subtracted from the rewards: 'mean' (the group's mean reward, the report's "
            "choice, default) or 'log_mean_exp' (exact tau*log mean exp(r/tau) over the group).",
            "choices": list(BASELINES),
        },
    )
    reset_optimizer_each_iteration: bool = field(
        default=False,
        metadata={
            "help": "Clear the optimizer state (Adam moments) at each new generated batch, as the report does. "
            "The learning-rate schedule is not reset."
        },
    )

    # Sampling (§2.3.4): see trl_kimi/sampling.py.
    sampling_strategy: str = field(
        default="uniform",
        metadata={
            "help": "Which problems each generated batch holds: 'uniform' (TRL's shuffling), 'curriculum' (easy to "
            "hard by --difficulty_column) or 'prioritized' (probability proportional to max(1 - success rate, "
            "--prioritized_epsilon)).",
            "choices": list(SAMPLING_STRATEGIES),
        },
    )
    difficulty_column: str = field(
        default="difficulty",
        metadata={"help": "Curriculum: dataset column of finite numbers, higher = harder."},
    )
    curriculum_schedule: str = field(
        default="staged",
        metadata={
            "help": "Curriculum: 'staged' (K boundaries in --curriculum_steps make K+1 pools, easiest first) or "
            "'linear' (--curriculum_steps T: the harder half's share grows from 0 to 1 over T steps).",
            "choices": list(CURRICULUM_SCHEDULES),
        },
    )
    curriculum_steps: list[int] | None = field(
        default=None,
        metadata={"help": "Curriculum: optimizer steps of the stage boundaries (staged) or the ramp length (linear)."},
    )
    success_reward: str | None = field(
        default=None,
        metadata={
            "help": "Name of the reward function whose value decides whether a sample is a success (tracked success "
            "rates). Default: the only reward function."
        },
    )
    success_threshold: float = field(
        default=1.0,
        metadata={"help": "A sample is a success when its success_reward is >= this value."},
    )
    success_ema_alpha: float = field(
        default=0.5,
        metadata={"help": "alpha in (0, 1] of the success rates' moving average over a problem's groups."},
    )
    success_prior: float = field(
        default=0.5,
        metadata={"help": "Success rate of a problem not seen yet, in [0, 1]."},
    )
    prioritized_epsilon: float = field(
        default=0.05,
        metadata={"help": "Floor in [0, 1] on the prioritised weight 1 - success rate, so solved problems come back."},
    )

    # Dynamic sampling (beyond the report): see trl_kimi/sampling.py (pure parts) and the trainer's
    # `_generate_informative_groups`.
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "Keep generating groups until the batch holds enough whose rewards are not all equal (those "
            "have zero advantage with a mean baseline)."
        },
    )
    dynamic_sampling_max_tries: int = field(
        default=4,
        metadata={"help": "Dynamic sampling: most generation rounds per batch; then uninformative groups fill it."},
    )

    # Partial rollouts (§2.6): see trl_kimi/partial_rollouts.py and trl_kimi/trainer/partial_rollout_mixin.py.
    partial_rollout_budget: int | None = field(
        default=None,
        metadata={
            "help": "Token budget per trajectory and iteration (partial rollouts); unset = off. Unfinished "
            "trajectories are continued at the next iteration; max_completion_length is the overall maximum. See "
            "--partial_rollout_schedule."
        },
    )
    partial_rollout_schedule: str = field(
        default="budget_per_iteration",
        metadata={
            "help": "Partial rollouts: 'budget_per_iteration' (the report's: each trajectory advances at most the "
            "budget per iteration, new prompts fill the batch, unfinished groups wait for the next iteration) or "
            "'rounds_until_full' (rounds of the budget repeat until the batch is full).",
            "choices": list(PARTIAL_ROLLOUT_SCHEDULES),
        },
    )
    partial_rollout_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Partial rollouts: overall maximum completion length across continuations; unset = "
            "max_completion_length."
        },
    )
    partial_rollout_extra_groups: int | None = field(
        default=None,
        metadata={
            "help": "Partial rollouts: groups kept in flight per process on top of one generated batch (drawn once "
            "from train_dataset at the start); unset = one batch's worth, 0 = none."
        },
    )
    partial_rollout_max_continuations: int | None = field(
        default=None,
        metadata={"help": "Partial rollouts: most generation rounds after a trajectory's first, then truncated."},
    )
    partial_rollout_stale_tokens_in_loss: bool = field(
        default=True,
        metadata={
            "help": "Partial rollouts: count the segments generated by earlier policies in the loss (default). False: "
            "only each trajectory's newest segment counts."
        },
    )
    partial_rollout_repetition_ngram_size: int | None = field(
        default=32,
        metadata={"help": "Partial rollouts: n of the repeat detector (cut, mark, penalise); unset = off."},
    )
    partial_rollout_repetition_max_repeats: int = field(
        default=3,
        metadata={"help": "Partial rollouts: occurrences (>= 2) of the last n-gram that make a repetition."},
    )
    partial_rollout_repetition_penalty: float = field(
        default=-0.5,
        metadata={"help": "Partial rollouts: reward added to a repeated trajectory (<= 0)."},
    )

    # GRPOConfig fields whose default changes: see `_FIXED_BY_THE_METHOD` for why each is fixed.
    loss_type: str = field(
        default="mirror_descent",
        metadata={"help": "Fixed to 'mirror_descent': the Kimi k1.5 mirror-descent loss."},
    )
    scale_rewards: str = field(
        default="none",
        metadata={"help": "Fixed to 'none': the advantage is r - mean(r) over the prompt's group, not std-scaled."},
    )
    epsilon: float | None = field(
        default=None,
        metadata={"help": "Must stay unset: the mirror-descent loss has no PPO clip; tau is its trust region."},
    )

    def __post_init__(self):
        # Checked before GRPOConfig's own check so that the message gives the Kimi reason and the fix.
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2, got {self.num_generations}: the mean reward of a prompt's samples is "
                "the baseline, so each prompt needs at least 2 samples. Pass --num_generations 8 (the default)."
            )
        given_generation_batch_size = self._default_generation_sizes()
        super().__post_init__()
        self._check_given_generation_batch_size(given_generation_batch_size)

        check_number(
            "tau",
            self.tau,
            0,
            low_open=True,
            finite=True,
            fix="it is the strength of the pull towards the previous iteration's policy and a KL weight cannot be zero "
            "or negative. Pass a positive value, e.g. --tau 0.1.",
        )
        check_choice(
            "logprob_reduction",
            self.logprob_reduction,
            LOGPROB_REDUCTIONS,
            "pass --logprob_reduction sum (the report's sequence log-probability) or mean.",
        )
        check_choice(
            "l2_normalization",
            self.l2_normalization,
            L2_NORMALIZATIONS,
            "pass --l2_normalization sequence (the report's form) or length (divided by the completion length).",
        )
        check_choice(
            "baseline",
            self.baseline,
            BASELINES,
            "pass --baseline mean (the report's group mean reward) or log_mean_exp (the exact tau*log mean exp(r/tau)).",
        )

        # GRPOConfig normalises scale_rewards=False to "none"; compare after that.
        for name, (required, reason) in _FIXED_BY_THE_METHOD.items():
            value = getattr(self, name)
            if value != required:
                raise ValueError(
                    f"{name}={value!r} contradicts the Kimi mirror-descent method: {reason}. "
                    f"Leave {name} at its KimiConfig default ({required!r})."
                )

        if (
            self.use_vllm
            and self.vllm_importance_sampling_correction
            and not self.vllm_importance_sampling_mode.startswith("sequence_")
        ):
            raise ValueError(
                f"vllm_importance_sampling_mode={self.vllm_importance_sampling_mode!r} gives one importance ratio per "
                "token, but the mirror-descent loss is written over whole-sequence log-probabilities and needs one per "
                "sample. Use 'sequence_mask' (the default) or 'sequence_truncate', or set "
                "vllm_importance_sampling_correction=False."
            )

        self._check_sampling()
        self._check_dynamic_sampling()
        self._check_partial_rollouts()
        self._warn_if_tau_is_inert()

    def _default_generation_sizes(self) -> int | None:
        """Before GRPOConfig derives the generation sizes: the default that makes tau act. Returns the
        generation_batch_size given together with steps_per_generation, which GRPOConfig would refuse."""
        if self.steps_per_generation is None and self.generation_batch_size is None:
            if self.num_iterations == 1:  # num_iterations > 1 already reuses each batch: TRL's default is enough
                self.steps_per_generation = DEFAULT_STEPS_PER_GENERATION_FACTOR * self.gradient_accumulation_steps
            return None
        if self.steps_per_generation is None or self.generation_batch_size is None:
            return None
        # A config rebuilt from a built one (`dataclasses.replace`, `KimiConfig(**args.to_dict())`) carries both
        # sizes. steps_per_generation decides, as in GRPOConfig, which derives generation_batch_size from it.
        given, self.generation_batch_size = self.generation_batch_size, None
        return given

    def _check_given_generation_batch_size(self, given: int | None) -> None:
        if given is None or given == self.generation_batch_size:
            return
        warnings.warn(
            f"generation_batch_size={given} and steps_per_generation={self.steps_per_generation} are both set and "
            f"disagree; using generation_batch_size={self.generation_batch_size} (per_device_train_batch_size x "
            f"{self.world_size} processes x steps_per_generation). Set only one of them.",
            stacklevel=4,
        )

    def _warn_if_tau_is_inert(self) -> None:
        """Settings that give one optimizer step per generated batch: the tau term never acts (and a reset Adam is
        sign-SGD). Correct but most likely not what a Kimi user wants, hence a warning, not an error."""
        if self.steps_per_generation * self.num_iterations > self.gradient_accumulation_steps:
            return
        sizes = (
            f"steps_per_generation ({self.steps_per_generation}) x num_iterations ({self.num_iterations}) <= "
            f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
        )
        fix = (
            f"Pass --steps_per_generation {2 * self.gradient_accumulation_steps} (or leave steps_per_generation and "
            "generation_batch_size unset), or --num_iterations 2"
        )
        warnings.warn(
            f"One optimizer step per generated batch ({sizes}): the tau term has zero gradient and the update is "
            f"REINFORCE with a mean baseline, not mirror descent. {fix}.",
            stacklevel=4,
        )
        if self.reset_optimizer_each_iteration:
            warnings.warn(
                f"reset_optimizer_each_iteration=True with one optimizer step per generated batch ({sizes}): every "
                "step is Adam's first after a reset, m / sqrt(v) = sign(gradient), i.e. sign-SGD. "
                f"{fix}, or set reset_optimizer_each_iteration=False.",
                stacklevel=4,
            )

    def _check_sampling(self) -> None:
        check_choice(
            "sampling_strategy",
            self.sampling_strategy,
            SAMPLING_STRATEGIES,
            "pass --sampling_strategy uniform (TRL's), curriculum or prioritized.",
        )
        for name, low_open in [("prioritized_epsilon", False), ("success_prior", False), ("success_ema_alpha", True)]:
            check_number(name, getattr(self, name), 0, 1, low_open=low_open, fix="see --help for its meaning.")
        if self.sampling_strategy == "uniform":
            return
        if self.sampling_strategy == "curriculum":
            check_choice("curriculum_schedule", self.curriculum_schedule, CURRICULUM_SCHEDULES)
            _check_curriculum_steps(self.curriculum_schedule, self.curriculum_steps)
        # The sampler resumes exactly only from a checkpoint between two generated batches: TRL regenerates a
        # half-used batch on resume (with the new weights), which would feed its success back twice.
        self._check_checkpoints_between_batches(f"sampling_strategy={self.sampling_strategy!r}")

    def _check_checkpoints_between_batches(self, feature: str) -> None:
        batch_micro_steps = self.steps_per_generation * self.num_iterations
        if (
            self.save_strategy == "steps"
            and self.save_steps >= 1
            and (int(self.save_steps) * self.gradient_accumulation_steps) % batch_micro_steps
        ):
            raise ValueError(
                f"With {feature}, checkpoints must fall between generated batches: save_steps ({self.save_steps}) x "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be a multiple of "
                f"steps_per_generation x num_iterations ({batch_micro_steps}). Pick save_steps accordingly."
            )

    def _check_whole_groups_per_process(self, feature: str) -> None:
        per_process = self.per_device_train_batch_size * self.steps_per_generation
        if per_process % self.num_generations:
            raise ValueError(
                f"{feature} needs whole groups on each process: per_device_train_batch_size "
                f"({self.per_device_train_batch_size}) x steps_per_generation ({self.steps_per_generation}) = "
                f"{per_process} must be a multiple of num_generations ({self.num_generations})."
            )

    def _check_dynamic_sampling(self) -> None:
        check_number("dynamic_sampling_max_tries", self.dynamic_sampling_max_tries, 1, integer=True, fix="e.g. 4.")
        if not self.dynamic_sampling:
            return
        if self.partial_rollout_budget is not None:
            raise ValueError(
                "dynamic_sampling=True with partial_rollout_budget set: the partial-rollout buffer already decides "
                "which groups make a batch. Use one of them."
            )
        self._check_whole_groups_per_process("dynamic_sampling")
        # The refills of generated batch g are seeded by g, read from the optimizer step at which g starts; that is
        # one number per batch only when every batch starts on an optimizer step, and a resume must start on one.
        batch_micro_steps = self.steps_per_generation * self.num_iterations
        if batch_micro_steps % self.gradient_accumulation_steps:
            raise ValueError(
                f"dynamic_sampling needs each generated batch to start on an optimizer step: steps_per_generation "
                f"({self.steps_per_generation}) x num_iterations ({self.num_iterations}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})."
            )
        self._check_checkpoints_between_batches("dynamic_sampling")

    def _check_partial_rollouts(self) -> None:
        budget = self.partial_rollout_budget
        if budget is None:
            if self.partial_rollout_max_continuations is not None or self.partial_rollout_max_length is not None:
                raise ValueError(
                    f"partial_rollout_max_continuations={self.partial_rollout_max_continuations} and "
                    f"partial_rollout_max_length={self.partial_rollout_max_length} need partial rollouts; set "
                    "--partial_rollout_budget (tokens per trajectory and iteration) or unset them."
                )
            return
        # Integer settings: (name, smallest value, what unset means; None: must be set).
        for name, low, unset in [
            ("partial_rollout_budget", 1, None),
            ("partial_rollout_max_length", 1, "max_completion_length"),
            ("partial_rollout_extra_groups", 0, "one generated batch's worth"),
            ("partial_rollout_max_continuations", 0, "only the maximum length bounds a trajectory"),
            ("partial_rollout_repetition_ngram_size", 1, "no repeat detection"),
            ("partial_rollout_repetition_max_repeats", 2, None),
        ]:
            fix = "see --help for its meaning (e.g. --partial_rollout_budget 256, new tokens per trajectory and iteration)."
            check_number(name, getattr(self, name), low, integer=True, unset=unset, fix=fix)
        max_length = self.partial_rollout_max_length or self.max_completion_length
        if budget > max_length:
            raise ValueError(
                f"partial_rollout_budget ({budget}) is larger than the overall maximum length ({max_length}, "
                "partial_rollout_max_length or else max_completion_length): every trajectory would finish in one "
                "round. Pass a smaller budget or raise the maximum length."
            )
        check_choice("partial_rollout_schedule", self.partial_rollout_schedule, PARTIAL_ROLLOUT_SCHEDULES)
        if self.save_only_model:
            raise ValueError(
                "save_only_model=True writes no trainer state, so the partial-rollout buffer (kimi_rollout_buffer.pt) "
                "would not be saved and its trajectories would be lost on resume. Set save_only_model=False."
            )
        check_number(
            "partial_rollout_repetition_penalty",
            self.partial_rollout_repetition_penalty,
            high=0,
            finite=True,
            fix="it is a penalty added to a repeated trajectory's reward (default -0.5).",
        )
        # The samplers feed each group's success back to the batch they drew; a partial-rollout batch holds groups
        # drawn at earlier iterations, so the feedback would credit the wrong problems.
        if self.sampling_strategy != "uniform":
            raise ValueError(
                f"partial_rollout_budget and sampling_strategy={self.sampling_strategy!r} cannot be combined: the "
                "sampler credits each generated batch's success to the prompts it drew for that batch, but with "
                "partial rollouts a trained batch holds groups started at earlier iterations. Use "
                "sampling_strategy='uniform', or leave partial_rollout_budget unset."
            )
        if self.use_transformers_continuous_batching:
            raise ValueError(
                "partial_rollout_budget is supported with HF generate and vLLM (colocate or server), not with "
                "use_transformers_continuous_batching=True; turn one of them off."
            )
        # Each process keeps its own buffer of whole groups, so a process's share of a generated batch must be made
        # of whole groups.
        self._check_whole_groups_per_process("partial rollouts")
        # TRL regenerates a half-used batch on resume: the buffer saved in the middle of one would be replayed twice.
        self._check_checkpoints_between_batches("partial rollouts")
