import os
import textwrap
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from .._checks import check_map_style
from ..losses import (
    log_mean_exp_baseline_advantages,
    mirror_descent_loss,
    pull_ratio,
    sequence_logps,
    squared_residuals,
)
from ..model_card import CARD_METRICS, card_config_values, card_metrics, generate_kimi_model_card
from ..rewards import LengthPenaltyReward, RepetitionPenaltyReward
from ..sampling import informative_groups, merge_generated_batches, refill_indices, select_groups
from .kimi_config import KimiConfig
from .partial_rollout_mixin import PartialRolloutMixin
from .preflight import check_launch_config
from .sampling_mixin import SamplingMixin


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


class KimiMirrorDescentTrainer(SamplingMixin, PartialRolloutMixin, GRPOTrainer):
    r"""
    Trainer for the online mirror descent of [Kimi k1.5](https://huggingface.co/papers/2501.12599) (§2.3.2).

    A drop-in replacement for [`~trl.GRPOTrainer`]: k samples per prompt, the group's mean reward as baseline (no std
    scaling), and the loss ``−(1/B) Σ_j [A_j · log πθ(y_j|x) − (τ/2) · (log πθ(y_j|x) − log πθi(y_j|x))²]`` over
    sequence log-probabilities, where πθi is the policy when the batch was generated. No value network, no clipping,
    no importance ratio. Generation (HF `generate` or vLLM), reward functions, dataset handling, the optional `beta`
    KL to a fixed reference and logging are TRL's.

    What differs from `GRPOTrainer`, each through the smallest hook:
    - the advantages are TRL's own: [`KimiConfig`] fixes `scale_rewards="none"`, so TRL's `r − mean(r)` over each
      group of the gathered rewards is [`~trl_kimi.losses.mean_baseline_advantages`] (a prompt's samples may live on
      several processes; a sample every reward function declined is left out of the mean and gets advantage 0);
    - `_calculate_rewards` is the one reward path: TRL runs the per-process reward functions and gathers them; an
      infinite reward raises; a repetition penalty column is set to NaN where every other reward function declined
      the sample; then the group steps run on whole groups, in this order: each [`~trl_kimi.LengthPenaltyReward`]
      column (TRL's per-process loop saw a stand-in returning `None`; the column is computed from the gathered
      lengths and correctness), then the sampler's feedback. TRL's logged `reward`, its completion table and its
      advantages all see the filled columns. The caller's `reward_funcs` list is left as it was (TRL is given a copy);
    - `_compute_loss` computes [`~trl_kimi.losses.mirror_descent_loss`]. The log-probabilities of πθi are TRL's
      `old_per_token_logps`, computed once per generated batch from the model as it is then (no second copy of the
      model); with a single optimizer step per batch they equal the detached current ones;
    - `_generate_and_score_completions`, which TRL calls when it starts a new generated batch, first clears the
      optimizer state when `reset_optimizer_each_iteration=True`; with `dynamic_sampling=True` it then runs
      `_generate_informative_groups`: TRL's generation and scoring again on refill prompts until the batch holds
      enough groups whose rewards are not all equal (pure parts in [`trl_kimi.sampling`]);
    - with `sampling_strategy="curriculum"` or `"prioritized"` (§2.3.4),
      [`~trl_kimi.trainer.sampling_mixin.SamplingMixin`] hands TRL's data loader a
      [`~trl_kimi.sampling.KimiSampler`] (`self.sampler`), is fed each group's success from the gathered rewards
      and saves it with every checkpoint;
    - with `partial_rollout_budget` set (§2.6), [`~trl_kimi.trainer.partial_rollout_mixin.PartialRolloutMixin`]
      routes generation through a [`~trl_kimi.PartialRolloutBuffer`] (`self.rollout_buffer`): at most the budget of
      new tokens per trajectory and iteration (new prompts fill the batch), complete groups only, earlier segments kept in the loss (or masked on
      request), the buffer's verdict as a `rollout_status` column read by one
      [`~trl_kimi.rewards.RepetitionPenaltyReward`], the buffer saved in `kimi_rollout_buffer.pt` with every
      checkpoint.

    The TRL methods and attributes used are pinned in `tests/test_trl_seams.py`.

    Example:
    ```python
    >>> from datasets import Dataset
    >>> from trl.rewards import accuracy_reward
    >>> from trl_kimi import KimiConfig, KimiMirrorDescentTrainer

    >>> dataset = Dataset.from_dict({"prompt": ["What is 2 + 3? Answer in \\boxed{}."], "solution": ["5"]})
    >>> trainer = KimiMirrorDescentTrainer(
    ...     model="Qwen/Qwen2.5-0.5B-Instruct",
    ...     reward_funcs=accuracy_reward,
    ...     args=KimiConfig(output_dir="kimi-run", tau=0.1),  # 2 optimizer steps per generated batch
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
        check_launch_config(args)  # before the model is wrapped or anything generated
        # TRL keeps the lists it is given as `self.reward_funcs` / `self.reward_processing_classes` and edits them
        # (reward-model names become models, the length penalty becomes a stand-in below, partial rollouts add a
        # column): pass copies, so that another trainer built from the caller's list (a resume in the same process,
        # a sweep, a notebook re-run) still gets the LengthPenaltyReward.
        if isinstance(reward_funcs, list):
            reward_funcs = list(reward_funcs)
        if isinstance(kwargs.get("reward_processing_classes"), list):
            kwargs["reward_processing_classes"] = list(kwargs["reward_processing_classes"])
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._length_penalties = self._take_out_group_rewards()
        self._init_sampler()
        self._init_partial_rollouts()
        if self.args.dynamic_sampling:
            check_map_style(self.train_dataset, "dynamic_sampling", "set dynamic_sampling=False")

    # ------------------------------------------------------------------ model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        eval_results: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Write `README.md` in `output_dir`: TRL's tags and paper fields (`_tag_names`, `_name`, `_paper`) rendered
        with [`~trl_kimi.model_card.generate_kimi_model_card`], which adds the key config values, the last logged
        metrics and `eval_results` (e.g. the summary of `trl-kimi eval`). Called by `push_to_hub` and at each
        checkpoint, as TRL's is.
        """
        if not self.is_world_process_zero():
            return
        model_id = get_config_model_id(self.model.config)
        base_model = model_id if model_id and not os.path.isdir(model_id) else None
        tags = {tags} if isinstance(tags, str) else set(tags or ())
        tags.update(self._tag_names)
        card = generate_kimi_model_card(
            model_name=model_name or os.path.basename(os.path.abspath(self.args.output_dir)),
            model_id=self.hub_model_id or self.args.hub_model_id or self.args.output_dir,
            base_model=base_model,
            dataset_name=dataset_name,
            tags=sorted(tags),
            trainer_name=self._name,
            paper=self._paper,
            config_values=card_config_values(self.args),
            metrics=card_metrics(self.state.log_history, names=CARD_METRICS),
            eval_results=eval_results,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    # ------------------------------------------------------------------ rewards
    def _take_out_group_rewards(self) -> dict[int, LengthPenaltyReward]:
        """Replace each LengthPenaltyReward in TRL's (copied) reward list by a stand-in that returns `None` per
        process; the penalty itself is evaluated in `_calculate_rewards` after the gather."""
        penalties = {i: f for i, f in enumerate(self.reward_funcs) if isinstance(f, LengthPenaltyReward)}
        for i, penalty in penalties.items():
            name = penalty.correctness_reward
            if name is not None and (name not in self.reward_func_names or name == penalty.__name__):
                others = [n for j, n in enumerate(self.reward_func_names) if j not in penalties]
                raise ValueError(
                    f"LengthPenaltyReward(correctness_reward={name!r}): no reward function of that name; the trainer's "
                    f"correctness rewards are {others}. Pass one of those names, or correctness_column=..."
                )
            if self.args.sampling_strategy != "uniform" and self.args.success_reward == penalty.__name__:
                raise ValueError(
                    f"success_reward={penalty.__name__!r} names the length penalty, which says nothing about "
                    "correctness; pass the name of the correctness reward."
                )
            self.reward_funcs[i] = _EvaluatedAfterGather(penalty.__name__)
        return penalties

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # 1. TRL runs every per-process reward function and gathers the columns of every process: (N_global, F).
        #    The group rewards are stand-ins returning None (NaN) there.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        _refuse_infinite(
            rewards_per_func, self.reward_func_names, prompts, completions, self.accelerator.process_index
        )
        # 2. A repetition penalty never makes scorable a sample that every other reward function declined (NaN): its
        #    column stays NaN there, as TRL treats such a sample.
        self._keep_declined_samples_unscorable(rewards_per_func)
        # 3. The group steps, on whole groups of the gathered batch, in this order: the length penalty columns (from
        #    the correctness columns), then the sampler's feedback (from the success column). TRL forms the total
        #    reward, the advantages and its logs from what is returned.
        if self._length_penalties:
            self._fill_length_penalties(rewards_per_func, inputs, completion_ids_list)
        if self.sampler is not None and self.model.training and self._dynamic_attempt == 0:
            self._feed_back_success(inputs, rewards_per_func[:, self._success_column])
        self._last_rewards_per_func = rewards_per_func  # read by _generate_informative_groups
        return rewards_per_func

    def _keep_declined_samples_unscorable(self, rewards_per_func: torch.Tensor) -> None:
        shaping = [i for i, f in enumerate(self.reward_funcs) if isinstance(f, RepetitionPenaltyReward)]
        others = [i for i in range(len(self.reward_funcs)) if i not in shaping and i not in self._length_penalties]
        if shaping and others:
            declined = torch.isnan(rewards_per_func[:, others]).all(dim=1)  # (N,)
            rewards_per_func[declined.nonzero(), torch.tensor(shaping, device=rewards_per_func.device)] = torch.nan

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
            step, max_steps = self.state.global_step, self._run_length()
            rewards = penalty.compute(
                lengths, [penalty.is_correct(v) for v in values], num_generations, step, max_steps
            )
            rewards_per_func[:, i] = torch.tensor(
                [torch.nan if r is None else r for r in rewards], dtype=rewards_per_func.dtype, device=device
            )
            self._metrics[mode][f"{penalty.__name__}/scale"].append(penalty.scale(step, max_steps))

    def _run_length(self) -> int | None:
        """The run's number of optimizer steps: TRL's `state.max_steps` once `train()` has started; before it (e.g.
        `evaluate()` first) the number `train()` will compute, or `None` without a training set to count."""
        if self.state.max_steps > 0:
            return self.state.max_steps
        if self.args.max_steps > 0:
            return self.args.max_steps
        if self.train_dataset is None:
            return None
        return self.set_initial_training_values(self.args, self.get_train_dataloader())[-1]

    # ------------------------------------------------------------------ optimizer reset, baseline
    def _generate_and_score_completions(self, inputs):
        # In training TRL calls this exactly when it starts a new generated batch (a new iteration).
        if self.model.training and self.args.reset_optimizer_each_iteration and self.optimizer is not None:
            self.optimizer.state.clear()  # Adam & co. re-create their state lazily at the next step
        if self.model.training and self.args.dynamic_sampling:
            return self._generate_informative_groups(inputs)
        return self._generate_and_score_with_baseline(inputs)

    def _generate_and_score_with_baseline(self, inputs):
        """TRL's generate-and-score, with the advantages of `KimiConfig.baseline`."""
        output = super()._generate_and_score_completions(inputs)
        if self.args.baseline == "log_mean_exp":
            # TRL's advantages are r − r̄ for this process's slice (equal slices, in process order); the exact
            # baseline needs whole groups, and is shift-equivariant, so it is applied to the gathered r − r̄.
            num_generations = self.num_generations if self.model.training else self.num_generations_eval
            local = output["advantages"]  # (N,)
            gathered = log_mean_exp_baseline_advantages(self.accelerator.gather(local), num_generations, self.args.tau)
            start = self.accelerator.process_index * local.size(0)
            output["advantages"] = gathered[start : start + local.size(0)]
        return output

    # ------------------------------------------------------------------ dynamic sampling
    _dynamic_attempt = 0  # which generation round of the current batch TRL is scoring (0 = the data loader's rows)

    def _generate_informative_groups(self, inputs):
        """
        Dynamic sampling: TRL's generate-and-score on the data loader's rows, then on refill rows, until every process
        holds `len(inputs) / num_generations` groups whose rewards are not all equal, or `dynamic_sampling_max_tries`
        rounds ran; the batch is assembled from those groups (topped up with uninformative ones if the rounds ran
        out). Every process runs the same number of rounds (the stop is decided on the minimum over processes), as
        TRL's gathers need. Refill problems come from the sampler's distribution for this batch (uniform without a
        sampler), seeded by (seed, batch, round, process); only round 0 feeds the sampler's success rates.
        """
        args, num_generations = self.args, self.num_generations  # train_dataset: map-style, checked at init
        quota = len(inputs) // num_generations  # groups per process (whole groups: checked by KimiConfig)
        batch_id = (
            self.state.global_step
            * args.gradient_accumulation_steps
            // (args.steps_per_generation * self.num_iterations)
        )
        rank = self.accelerator.process_index
        outputs, informative, rows = [], [], inputs
        try:
            for attempt in range(args.dynamic_sampling_max_tries):
                self._dynamic_attempt = attempt
                if attempt:
                    probabilities = self.sampler.probabilities(batch_id) if self.sampler is not None else None
                    problems = refill_indices(
                        len(self.train_dataset), quota, args.seed, batch_id, attempt, rank, probabilities
                    )
                    rows = [self.train_dataset[i] for i in problems for _ in range(num_generations)]
                outputs.append(self._generate_and_score_with_baseline(rows))
                local = slice(rank * quota, (rank + 1) * quota)  # this process's groups among the gathered ones
                flags = informative_groups(self._last_rewards_per_func, self.reward_weights, num_generations)
                informative.append(flags[local].tolist())
                if attempt == 0:
                    first_try_fraction = flags.double().mean().item()
                found = torch.tensor([sum(map(sum, informative))], device=self.accelerator.device)
                if self.accelerator.gather(found).min().item() >= quota:
                    break
        finally:
            self._dynamic_attempt = 0
        picks, filled = select_groups(informative, quota)
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)  # a processor holds one
        batch = merge_generated_batches(outputs, picks, num_generations, tokenizer.pad_token_id)
        mask = batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()  # as TRL counts it
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/tries"].append(len(outputs))
        metrics["dynamic_sampling/informative_fraction"].append(first_try_fraction)
        metrics["dynamic_sampling/generated_groups"].append(len(outputs) * quota * self.accelerator.num_processes)
        filled_all = self.accelerator.gather(torch.tensor([filled], device=self.accelerator.device)).sum().item()
        metrics["dynamic_sampling/uninformative_groups_kept"].append(filled_all)
        return batch

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
        lengths = mask.sum(dim=-1)  # (B,)
        loss = mirror_descent_loss(
            logps,
            old_logps,
            advantages,
            tau,
            sample_weights=sample_weights,
            l2_normalization=self.args.l2_normalization,
            lengths=lengths,
        )

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
            # How hard the pull binds (0 on a batch's first step): τ·|ρ|/|A| over samples with A ≠ 0, and ρ's spread.
            all_log_ratio = self.accelerator.gather(log_ratio)  # (B_global,)
            ratios = pull_ratio(all_log_ratio, self.accelerator.gather(advantages), tau)
            pull = ratios.mean().item() if ratios.numel() else 0.0
            log_ratio_std = all_log_ratio.std().item() if all_log_ratio.numel() > 1 else 0.0
        policy_term, l2_term, abs_log_ratio, residual, logp = gathered.tolist()
        self._metrics[mode]["kimi/pull_ratio"].append(pull)
        self._metrics[mode]["kimi/log_ratio_std"].append(log_ratio_std)
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


def _refuse_infinite(rewards_per_func, names, prompts, completions, process_index) -> None:
    """A reward of ±inf turns the advantages, then every weight, into NaN: raise, naming the function and the sample.
    NaN stays TRL's "not applicable" (a function returned `None`)."""
    infinite = torch.isinf(rewards_per_func).nonzero()  # (M, 2): (global sample, function)
    if not len(infinite):
        return
    row, column = infinite[0].tolist()
    local = row - process_index * len(prompts)  # TRL gathers equal-sized per-process batches in process order
    where = (
        f" (prompt {str(prompts[local])[:200]!r}, completion {str(completions[local])[:200]!r})"
        if 0 <= local < len(prompts)
        else ""
    )
    raise ValueError(
        f"Reward function {names[column]!r} returned {rewards_per_func[row, column].item()} for sample {row} of the "
        f"batch{where}; {len(infinite)} infinite reward(s) in all. A reward must be a finite number, or None for "
        '"not applicable"; fix or clip the function.'
    )


class _EvaluatedAfterGather:
    """Stands in for a group reward in TRL's per-process reward loop: `None` ("not applicable") for every sample,
    until `KimiMirrorDescentTrainer._calculate_rewards` fills the column from the gathered batch."""

    def __init__(self, name: str):
        self.__name__ = name

    def __call__(self, completions: list, **kwargs: Any) -> list[None]:
        return [None] * len(completions)
