r"""
Trainer glue for prioritised and curriculum sampling (§2.3.4 of [Kimi k1.5](https://huggingface.co/papers/2501.12599)):
a [`~trl_kimi.sampling.KimiSampler`] in place of TRL's `RepeatSampler`, fed with each group's success.

The sampler itself (which problems a generated batch holds, the success rates) is pure and lives in
[`trl_kimi.sampling`]; this mixin builds it, hands it to TRL's data loader, feeds it the success of each generated
batch from the gathered rewards, and saves it with every checkpoint.

Tested against TRL 1.16 (`_get_train_sampler`, `_save_optimizer_and_scheduler`, `_load_optimizer_and_scheduler`,
`_metrics`, `_step`); `tests/test_trl_seams.py` pins their signatures.
"""

import os

import torch

from .._checks import check_map_style
from ..sampling import CurriculumSampler, KimiSampler, PrioritizedSampler, read_difficulties


SAMPLING_STATE_NAME = "kimi_sampling_state.pt"  # written next to the optimizer state in each checkpoint


class SamplingMixin:
    """
    Curriculum or prioritised sampling for a `GRPOTrainer` subclass (placed before `GRPOTrainer` in the bases); active
    when `args.sampling_strategy` is not `"uniform"`, a pass-through otherwise. The subclass calls `_init_sampler()`
    at the end of its `__init__`.

    The trainer's `_calculate_rewards` calls `_feed_back_success` after TRL's gather: each group's success (from
    `args.success_reward`) → the sampler's success rates, plus `sampling/*` metrics.

    Overrides, each wrapping `super()`:
    - `_get_train_sampler`: the [`~trl_kimi.sampling.KimiSampler`] built once (`self.sampler`): its state must survive
      every `get_train_dataloader`;
    - `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: the sampler's state, in
      `kimi_sampling_state.pt`. Both are called once per checkpoint and once per resume on every backend (plain,
      DeepSpeed, FSDP), and the load comes before the data loader is first iterated, so the Trainer's skipping of
      already-trained batches replays frozen batches instead of drawing new ones.
    """

    sampler: KimiSampler | None = None

    def _init_sampler(self) -> None:
        args = self.args
        if args.sampling_strategy == "uniform":
            return
        check_map_style(
            self.train_dataset, f"sampling_strategy={args.sampling_strategy!r}", "use sampling_strategy='uniform'"
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
        self._success_column = self.reward_func_names.index(args.success_reward or self.reward_func_names[0])
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
            self.sampler = PrioritizedSampler(len(self.train_dataset), epsilon=args.prioritized_epsilon, **common)
        else:
            difficulties = read_difficulties(self.train_dataset, args.difficulty_column)
            self.sampler = CurriculumSampler(
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

    def _feed_back_success(self, inputs: list[dict], rewards: torch.Tensor) -> None:
        """Success of each group of the generated batch → the sampler's success rates, plus `sampling/*` metrics.
        `rewards` (N_global,) is the success reward of every process's samples, in TRL's gathered order."""
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

        rewards = rewards.double()  # (N_global,)
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

    # ------------------------------------------------------------------ checkpoints
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
