import os
import textwrap
from typing import Any

import torch
from accelerate.utils import gather, gather_object
from datasets import Dataset
from transformers.utils import logging
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from ..losses import mean_baseline_advantages, mirror_descent_loss, sequence_logps, squared_residuals
from ..model_card import CARD_METRICS, card_config_values, card_metrics, generate_kimi_model_card
from ..rewards import LengthPenaltyReward
from ..sampling import CurriculumSampler, KimiSampler, PrioritizedSampler, read_difficulties
from .kimi_config import KimiConfig
from .partial_rollout_mixin import PartialRolloutMixin
from .preflight import check_launch_config


logger = logging.get_logger(__name__)

SAMPLING_STATE_NAME = "kimi_sampling_state.pt"  # written next to the optimizer state in each checkpoint

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


class KimiMirrorDescentTrainer(PartialRolloutMixin, GRPOTrainer):
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
    - with `sampling_strategy="curriculum"` or `"prioritized"` (§2.3.4), `_get_train_sampler` returns the
      [`~trl_kimi.sampling.KimiSampler`] built once in `__init__` (`self.sampler`), `_generate_and_score_completions`
      feeds it each group's success (from the gathered rewards) and logs `sampling/*`, and
      `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler` save and restore its state with the
      optimizer's: both are called once per checkpoint and once per resume on every backend (plain, DeepSpeed,
      FSDP), and the load comes before the data loader is first iterated, so the Trainer's skipping of
      already-trained batches replays frozen batches instead of drawing new ones.
    - with `partial_rollout_budget` set (§2.6), [`~trl_kimi.trainer.partial_rollout_mixin.PartialRolloutMixin`]
      routes generation through a [`~trl_kimi.PartialRolloutBuffer`] (`self.rollout_buffer`): rounds of at most the
      budget, complete groups only, stale segments masked out of the loss, repeated trajectories penalised here
      before the mean baseline, the buffer saved in `kimi_rollout_buffer.pt` with every checkpoint.

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
        check_launch_config(args)  # before the model is wrapped or anything generated
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._length_penalties = self._take_out_group_rewards()

        updates_per_batch = args.steps_per_generation * args.num_iterations
        if updates_per_batch <= args.gradient_accumulation_steps:
            logger.info(
                "One optimizer step per generated batch: the tau term has zero gradient and the update is REINFORCE "
                "with a mean baseline. Set steps_per_generation > gradient_accumulation_steps or num_iterations > 1 "
                "for tau to act."
            )
        self._gathered_rewards_per_func: torch.Tensor | None = None
        self.sampler = self._make_sampler() if args.sampling_strategy != "uniform" else None
        self._init_partial_rollouts()

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
        if mode == "train" and self.sampler is not None:
            self._feed_back_success(inputs, rewards_per_func)
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # (N_global,)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        if self._repetition_penalties is not None:  # partial rollouts: repeated trajectories, cut and penalised
            rewards = rewards + self._repetition_penalties.to(rewards)
            self._repetition_penalties = None
        advantages = mean_baseline_advantages(rewards, num_generations)  # (N_global,)

        local_size = output["completion_ids"].size(0)
        start = self.accelerator.process_index * local_size
        output["advantages"] = advantages[start : start + local_size]  # (B_local,)
        self._metrics[mode]["kimi/advantage_std"].append(advantages.std().item())
        return output

    # ------------------------------------------------------------------ sampling (§2.3.4)
    def _make_sampler(self) -> KimiSampler:
        args = self.args
        if not isinstance(self.train_dataset, Dataset):
            raise ValueError(
                f"sampling_strategy={args.sampling_strategy!r} needs a map-style datasets.Dataset (it picks problems "
                f"by index), got {type(self.train_dataset).__name__}. Load the dataset without streaming, or use "
                "sampling_strategy='uniform'."
            )
        if args.success_reward is None and len(self.reward_func_names) > 1:
            raise ValueError(
                f"There are {len(self.reward_func_names)} reward functions {self.reward_func_names}; name the one that "
                "says whether a sample is correct with --success_reward <name>."
            )
        if args.success_reward is not None and args.success_reward not in self.reward_func_names:
            raise ValueError(
                f"success_reward={args.success_reward!r} is not one of the reward functions {self.reward_func_names}; "
                "pass one of these names."
            )
        common = dict(
            num_generations=self.num_generations,
            prompts_per_batch=args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * args.steps_per_generation,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            seed=args.seed,
            success_alpha=args.success_ema_alpha,
            success_prior=args.success_prior,
        )
        if args.sampling_strategy == "prioritized":
            return PrioritizedSampler(len(self.train_dataset), epsilon=args.prioritized_epsilon, **common)
        difficulties = read_difficulties(self.train_dataset, args.difficulty_column)
        return CurriculumSampler(
            difficulties, schedule=args.curriculum_schedule, boundaries=args.curriculum_steps, **common
        )

    def _get_train_sampler(self, dataset=None):
        if self.sampler is None:
            return super()._get_train_sampler(dataset)
        if dataset is not None and len(dataset) != self.sampler.num_problems:
            raise ValueError(
                f"The sampler was built for the {self.sampler.num_problems} problems of train_dataset, but the data "
                f"loader holds {len(dataset)}; do not replace trainer.train_dataset after building the trainer."
            )
        return self.sampler  # one object for the whole run: its state must survive every `get_train_dataloader`

    def _feed_back_success(self, inputs: list[dict], rewards_per_func: torch.Tensor) -> None:
        """Success of each group of the generated batch → the sampler's success rates, plus `sampling/*` metrics."""
        sampler, args = self.sampler, self.args
        batch_id = sampler.num_updates  # batches are generated in the order they were drawn
        indices = sampler.batch_indices(batch_id)  # (B,) problems of the batch, in global order
        # The batch in hand must be the one the sampler drew: same global order as the sampler's, rank r holding
        # slice r (accelerate's per-process batches). Anything else (dispatch_batches, a replaced data loader)
        # would silently credit the wrong problems.
        local_size = len(inputs)
        start = self.accelerator.process_index * local_size
        expected = [indices[j // self.num_generations] for j in range(start, start + local_size)]
        prompts = {i: self.train_dataset[i]["prompt"] for i in set(expected)}
        if [prompts[i] for i in expected] != [x["prompt"] for x in inputs]:
            raise RuntimeError(
                f"Generated batch {batch_id} on process {self.accelerator.process_index} does not hold the prompts "
                f"the {type(sampler).__name__} drew for it. The sampler needs accelerate's default data loading "
                "(each process iterates the sampler, no dispatch_batches or split_batches)."
            )

        name = args.success_reward or self.reward_func_names[0]
        rewards = rewards_per_func[:, self.reward_func_names.index(name)].double()  # (N_global,)
        success = torch.where(torch.isnan(rewards), torch.nan, (rewards >= args.success_threshold).double())
        groups = success.view(-1, self.num_generations)  # (B, G)
        valid = ~torch.isnan(groups)
        group_success = torch.where(
            valid.any(dim=1), groups.nan_to_num(0.0).sum(dim=1) / valid.sum(dim=1).clamp(min=1), torch.nan
        )  # (B,)

        metrics = self._metrics["train"]
        metrics["sampling/success_rate_mean"].append(sampler.tracker.rates[indices].mean().item())
        metrics["sampling/solved_fraction"].append((group_success == 1.0).double().mean().item())
        metrics["sampling/weights_staleness"].append(batch_id - sampler.batch_version(batch_id))
        if isinstance(sampler, CurriculumSampler):
            if sampler.schedule == "staged":
                metrics["sampling/curriculum_stage"].append(sampler.stage_of_batch(batch_id))
            else:
                metrics["sampling/curriculum_hard_fraction"].append(sampler.hard_fraction_of_batch(batch_id))
        sampler.update(batch_id, group_success.tolist())

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.sampler is None or not self.args.should_save:
            return  # every process holds the same sampler state; the main one writes it
        state = self.sampler.state_dict()
        # TRL regenerates a half-used batch on resume; KimiConfig only allows checkpoints between batches.
        state["between_batches"] = self._step % (self.args.steps_per_generation * self.num_iterations) == 0
        torch.save(state, os.path.join(output_dir, SAMPLING_STATE_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.sampler is None:
            return
        path = os.path.join(checkpoint, SAMPLING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"sampling_strategy={self.args.sampling_strategy!r} but the checkpoint {checkpoint} has no "
                f"{SAMPLING_STATE_NAME}: it was saved with another sampling strategy. Resume with that strategy."
            )
        if self.args.ignore_data_skip:
            raise ValueError(
                "ignore_data_skip=True restarts the epoch's data from its beginning, but the sampler resumes exactly "
                "where it stopped; set ignore_data_skip=False to resume with a curriculum or prioritised sampler."
            )
        state = torch.load(path, weights_only=True)
        if not state.pop("between_batches"):
            raise ValueError(
                f"The checkpoint {checkpoint} was saved in the middle of a generated batch, which TRL regenerates on "
                "resume: its success would be fed back twice. Resume from a checkpoint between generated batches."
            )
        self.sampler.load_state_dict(state)

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
