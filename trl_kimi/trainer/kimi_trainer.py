import textwrap
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from transformers.utils import logging
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from ..losses import mean_baseline_advantages, mirror_descent_loss, sequence_logps, squared_residuals
from ..rewards import LengthPenaltyReward
from .kimi_config import KimiConfig


logger = logging.get_logger(__name__)

# Model-forward inputs that TRL's `_generate_and_score_completions` may put in a batch (multimodal models); they are
# passed through unchanged to `_get_per_token_logps_and_entropies`.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


class KimiMirrorDescentTrainer(GRPOTrainer):
    r"""
    Trainer for the online mirror descent of [Kimi k1.5](https://huggingface.co/papers/2501.12599) (§2.3.2).

    A drop-in replacement for [`~trl.GRPOTrainer`]: k samples per prompt, the group's mean reward as baseline (no std
    scaling), and the loss ``−(1/B) Σ_j [A_j · log πθ(y_j|x) − (τ/2) · (log πθ(y_j|x) − log πθi(y_j|x))²]`` over
    sequence log-probabilities, where πθi is the policy when the batch was generated. No value network, no clipping,
    no importance ratio. Generation (HF `generate` or vLLM), reward functions, dataset handling, the optional `beta`
    KL to a fixed reference and logging are TRL's.

    What differs from `GRPOTrainer`, each through the smallest hook:
    - `_calculate_rewards` keeps the rewards gathered from all processes, and `_generate_and_score_completions`
      replaces TRL's advantages with [`~trl_kimi.losses.mean_baseline_advantages`] of those gathered rewards (a
      prompt's samples may live on several processes);
    - `_compute_loss` computes [`~trl_kimi.losses.mirror_descent_loss`]. The log-probabilities of πθi are TRL's
      `old_per_token_logps`, computed once per generated batch from the model as it is then (no second copy of the
      model); with a single optimizer step per batch they equal the detached current ones;
    - `_prepare_inputs` clears the optimizer state at each new batch when `reset_optimizer_each_iteration=True`;
    - a [`~trl_kimi.LengthPenaltyReward`] among `reward_funcs` is a group quantity: TRL's per-process reward loop
      skips it (`None`), and `_calculate_rewards` fills its column from the gathered lengths and correctness.

    Example:
    ```python
    >>> from datasets import Dataset
    >>> from trl.rewards import accuracy_reward
    >>> from trl_kimi import KimiConfig, KimiMirrorDescentTrainer

    >>> dataset = Dataset.from_dict({"prompt": ["What is 2 + 3? Answer in \\boxed{}."], "solution": ["5"]})
    >>> trainer = KimiMirrorDescentTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=accuracy_reward,
    ...     args=KimiConfig(output_dir="kimi-run", tau=0.1, steps_per_generation=2),
    ...     train_dataset=dataset,
    ... )  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```

    Args:
        model, reward_funcs, train_dataset, eval_dataset, processing_class, ...:
            As for [`~trl.GRPOTrainer`].
        args ([`KimiConfig`], *optional*):
            Configuration for this trainer. If `None`, `KimiConfig("<model name>-Kimi")` is used. A plain
            `GRPOConfig` is refused, because several of its defaults (std-scaled advantages, the PPO clip) contradict
            the method.
    """

    _tag_names = ["trl", "trl-kimi", "kimi-k1.5", "mirror-descent"]
    _name = "Kimi k1.5 online mirror descent"
    _paper = {
        "title": "Kimi k1.5: Scaling Reinforcement Learning with LLMs",
        "id": "2501.12599",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{kimiteam2025kimik15,
                title        = {{Kimi k1.5: Scaling Reinforcement Learning with LLMs}},
                author       = {{Kimi Team}},
                year         = 2025,
                eprint       = {arXiv:2501.12599},
            }"""),
    }

    def __init__(self, model, reward_funcs=None, args: KimiConfig | None = None, **kwargs: Any):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = KimiConfig(f"{model_name.split('/')[-1]}-Kimi")
        elif not isinstance(args, KimiConfig):
            kind = type(args).__name__
            hint = (
                " (a GRPOConfig defaults to std-scaled advantages and a PPO clip)"
                if isinstance(args, GRPOConfig)
                else ""
            )
            raise TypeError(
                f"args must be a KimiConfig, got {kind}{hint}. Build a trl_kimi.KimiConfig with the same arguments."
            )
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._length_penalties = self._take_out_group_rewards()

        if args.reset_optimizer_each_iteration and self.is_deepspeed_enabled:
            raise ValueError(
                "reset_optimizer_each_iteration=True is not supported with DeepSpeed, whose optimizer keeps its state "
                "in partitioned buffers that cannot be cleared from here. Turn it off, or train with DDP/FSDP."
            )
        updates_per_batch = args.steps_per_generation * args.num_iterations
        if updates_per_batch <= args.gradient_accumulation_steps:
            logger.info(
                "One optimizer step per generated batch: the tau term has zero gradient and the update is REINFORCE "
                "with a mean baseline. Set steps_per_generation > gradient_accumulation_steps or num_iterations > 1 "
                "for tau to act."
            )
        self._gathered_rewards_per_func: torch.Tensor | None = None

    # ------------------------------------------------------------------ rewards
    def _take_out_group_rewards(self) -> dict[int, LengthPenaltyReward]:
        """Replace each LengthPenaltyReward in TRL's reward list by a stand-in that returns `None` per process; the
        penalty itself is evaluated in `_calculate_rewards` after the gather."""
        penalties = {i: f for i, f in enumerate(self.reward_funcs) if isinstance(f, LengthPenaltyReward)}
        for i, penalty in penalties.items():
            name = penalty.correctness_reward
            if name is not None and (name not in self.reward_func_names or name == penalty.__name__):
                others = [n for j, n in enumerate(self.reward_func_names) if j not in penalties]
                raise ValueError(
                    f"LengthPenaltyReward(correctness_reward={name!r}): no reward function of that name; the trainer's "
                    f"correctness rewards are {others}. Pass one of those names, or correctness_column=..."
                )
            self.reward_funcs[i] = _EvaluatedAfterGather(penalty.__name__)
        return penalties

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL returns the rewards of every process (N_global, num_reward_funcs); keep them for the group baseline.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self._length_penalties:
            self._fill_length_penalties(rewards_per_func, inputs, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _fill_length_penalties(self, rewards_per_func, inputs, completion_ids_list) -> None:
        """Evaluate each LengthPenaltyReward on whole groups of the gathered batch, in place."""
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        device = rewards_per_func.device
        # Token lengths (EOS included) of every process's completions, in the same order as the gathered rewards.
        local_lengths = torch.tensor([len(ids) for ids in completion_ids_list], device=device)
        lengths = gather(local_lengths).tolist()  # (N_global,)
        for i, penalty in self._length_penalties.items():
            if penalty.correctness_reward is not None:
                values = rewards_per_func[:, self.reward_func_names.index(penalty.correctness_reward)].tolist()
            else:
                column = penalty.correctness_column
                if column not in inputs[0]:
                    raise ValueError(
                        f"LengthPenaltyReward(correctness_column={column!r}): the dataset has no such column "
                        f"(columns: {sorted(inputs[0])})."
                    )
                values = gather_object([example[column] for example in inputs])
            step, max_steps = self.state.global_step, self.state.max_steps
            rewards = penalty.compute(
                lengths, [penalty.is_correct(v) for v in values], num_generations, step, max_steps
            )
            rewards_per_func[:, i] = torch.tensor(
                [torch.nan if r is None else r for r in rewards], dtype=rewards_per_func.dtype, device=device
            )
            self._metrics[mode][f"{penalty.__name__}/scale"].append(penalty.scale(step, max_steps))

    # ------------------------------------------------------------------ advantages

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval

        # Total reward as TRL forms it: weighted sum over reward functions, NaN where every function returned None.
        rewards_per_func = self._gathered_rewards_per_func  # (N_global, F)
        self._gathered_rewards_per_func = None
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # (N_global,)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        advantages = mean_baseline_advantages(rewards, num_generations)  # (N_global,)

        local_size = output["completion_ids"].size(0)
        start = self.accelerator.process_index * local_size
        output["advantages"] = advantages[start : start + local_size]  # (B_local,)
        self._metrics[mode]["kimi/advantage_std"].append(advantages.std().item())
        return output

    # ------------------------------------------------------------------ optimizer reset
    def _prepare_inputs(self, generation_batch):
        if self.model.training and self.args.reset_optimizer_each_iteration and self.optimizer is not None:
            # Same condition as GRPOTrainer._prepare_inputs uses to generate a new batch: a new iteration starts.
            generate_every = self.args.steps_per_generation * self.num_iterations
            if self._step % generate_every == 0 or self._buffered_inputs is None:
                self.optimizer.state.clear()  # Adam & co. re-create their state lazily at the next step
        return super()._prepare_inputs(generation_batch)

    # ------------------------------------------------------------------ loss
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P+C)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (B, P+C)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]  # (B, C)

        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _FORWARD_KEYS},
        )  # (B, C)
        # πθi: TRL computes old_per_token_logps once per generated batch when several optimizer steps use it;
        # otherwise θ = θi and the detached current values are exact.
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()

        reduction = self.args.logprob_reduction
        logps = sequence_logps(per_token_logps, mask, reduction)  # (B,)
        old_logps = sequence_logps(old_per_token_logps, mask, reduction)  # (B,)
        advantages = inputs["advantages"]  # (B,)
        sample_weights = inputs.get("importance_sampling_ratio")  # (B, 1) with vLLM's sequence-level correction
        if sample_weights is not None:
            sample_weights = sample_weights.view(-1)
        tau = self.args.tau
        loss = mirror_descent_loss(logps, old_logps, advantages, tau, sample_weights=sample_weights)

        if self.beta != 0.0:
            # TRL's k3 estimator of KL(πθ ‖ π_ref) per token, averaged over each completion, then over the batch.
            ref_per_token_logps = inputs["ref_per_token_logps"]
            per_token_kl = (
                torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
            )
            kl = sequence_logps(per_token_kl, mask, "mean")  # (B,)
            loss = loss + self.beta * kl.mean()

        # TRL turns off transformers' loss scaling (`loss_is_scaled_for_ga`): each micro-batch loss is a mean over its
        # samples divided by the number of accumulated micro-batches, so an optimizer step sees the mean over all.
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather(aux_loss.detach()).mean().item())
        loss = loss / normalizer

        # Diagnostics, gathered over processes. policy_term - l2_term = -loss (beta = 0).
        with torch.no_grad():
            log_ratio = logps.detach() - old_logps  # (B,)
            gathered = self.accelerator.gather(
                torch.stack(
                    [
                        advantages * logps.detach(),
                        0.5 * tau * log_ratio.pow(2),
                        log_ratio.abs(),
                        squared_residuals(logps.detach(), old_logps, advantages, tau),
                        logps.detach(),
                    ],
                    dim=1,
                )
            ).mean(dim=0)  # (5,)
        policy_term, l2_term, abs_log_ratio, residual, logp = gathered.tolist()
        self._metrics[mode]["kimi/policy_term"].append(policy_term)
        self._metrics[mode]["kimi/l2_term"].append(l2_term)
        self._metrics[mode]["kimi/abs_log_ratio_mean"].append(abs_log_ratio)
        self._metrics[mode]["kimi/squared_residual_mean"].append(residual)
        self._metrics[mode]["kimi/logp_mean"].append(logp)
        # Token-weighted mean over all processes, as GRPOTrainer logs it.
        totals = self.accelerator.reduce(torch.stack([(entropies * mask).sum(), mask.sum().float()]), reduction="sum")
        self._metrics[mode]["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(self.accelerator.gather(kl.detach()).mean().item())
        return loss


class _EvaluatedAfterGather:
    """Stands in for a group reward in TRL's per-process reward loop: `None` ("not applicable") for every sample,
    until `KimiMirrorDescentTrainer._calculate_rewards` fills the column from the gathered batch."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, completions: list, **kwargs: Any) -> list[None]:
        return [None] * len(completions)
