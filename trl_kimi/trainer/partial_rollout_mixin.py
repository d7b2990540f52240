r"""
Trainer glue for partial rollouts (§2.6 of [Kimi k1.5](https://huggingface.co/papers/2501.12599)): a
[`~trl_kimi.PartialRolloutBuffer`] between TRL's data loader and its scoring.

TRL's generated batch is `_generate_and_score_completions(inputs)`: generate one completion per row of `inputs`, score
them, compute the log-probabilities. With partial rollouts the rows of `inputs` enter the buffer as new groups; the
buffer is driven by rounds of at most `partial_rollout_budget` new tokens (TRL's own `_generate_single_turn`, HF
`generate` or vLLM, with its maximum length lowered to the round's budget) until enough groups are complete, as
`partial_rollout_schedule` says (by default each trajectory gets one round per iteration and new prompts drawn from
`train_dataset` fill the batch; [`~trl_kimi.partial_rollouts.generate_iteration`]); then
TRL's `_generate_and_score_completions` runs unchanged on the rows of those complete groups, and its
`_generate_single_turn` hands back their stored completions instead of generating. Batch shapes are TRL's.

Tested against TRL 1.16 (`_generate_and_score_completions`, `_generate`, `_generate_single_turn`,
`_tokenize_prompts`, `generation_config` / `vllm_generation.max_completion_length`, the reward
lists `reward_funcs` / `reward_func_names` / `reward_processing_classes` / `reward_weights`);
`tests/test_trl_seams.py` pins them.
"""

import contextlib
import os
import random
import time
from typing import Any

import torch
from accelerate.utils import gather_object

from .._checks import check_map_style
from ..partial_rollouts import (
    PartialRolloutBuffer,
    RoundStats,
    generate_iteration,
    generate_until_ready,
    loss_token_mask,
)
from ..rewards import ROLLOUT_STATUS_COLUMN, RepetitionPenaltyReward


ROLLOUT_BUFFER_NAME = "kimi_rollout_buffer.pt"  # written next to the optimizer state in each checkpoint


def _has_image_block(prompt: Any) -> bool:
    """Whether a conversational prompt holds an image content block (TRL's multimodal message format)."""
    if not isinstance(prompt, list):
        return False
    return any(
        isinstance(part, dict) and part.get("type") == "image"
        for message in prompt
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in message["content"]
    )


class PartialRolloutMixin:
    """
    Partial rollouts for a `GRPOTrainer` subclass (placed before `GRPOTrainer` in the bases); active when
    `args.partial_rollout_budget` is set, a pass-through otherwise. The subclass calls `_init_partial_rollouts()` at
    the end of its `__init__`.

    While TRL scores the complete groups, `_ready_trajectories` holds them (`None` otherwise): the hooks TRL calls
    from `_generate_and_score_completions` read it. The rows TRL scores carry the buffer's verdict on each trajectory
    in a `rollout_status` column (`finished`, `truncated` or `repeated`). With repeat detection on, a
    [`~trl_kimi.rewards.RepetitionPenaltyReward`] reads it: the caller's, or one the mixin adds to TRL's reward lists
    (`partial_rollout_repetition_penalty`, weight 1), so a repeated trajectory is penalised once and TRL's total
    reward, advantages and logs include it.

    Overrides, each wrapping `super()`:
    - `_generate_and_score_completions`: new rows → buffer; rounds (per `partial_rollout_schedule`) until
      `generation_batch_size / num_generations` groups (per process share) are complete; TRL scores those groups
      (their rows plus `rollout_status`); the groups leave the buffer only once scored;
    - `_generate_single_turn`: the stored completions of the complete groups (TRL's path otherwise);
    - `_generate`: with `partial_rollout_stale_tokens_in_loss=False`, the loss mask of the segments before each
      trajectory's newest (TRL's `tool_mask`, which the loss multiplies in);
    - `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: the buffer of every process, in
      `kimi_rollout_buffer.pt`.
    """

    rollout_buffer: PartialRolloutBuffer | None = None
    _ready_trajectories: list | None = None

    def _init_partial_rollouts(self) -> None:
        args = self.args
        if args.partial_rollout_budget is None:
            return
        unsupported = {
            "tools": bool(self.tools),
            "environment_factory": self.environment_factories is not None,
            "rollout_func": self.rollout_func is not None,
        }
        if any(unsupported.values()):
            names = [name for name, used in unsupported.items() if used]
            raise ValueError(
                f"partial_rollout_budget cannot be combined with {names}: a continuation resumes a plain completion. "
                "Leave partial_rollout_budget unset for multi-turn or custom rollouts."
            )
        columns = getattr(self.train_dataset, "column_names", None) or []  # None for some iterable datasets
        self._refuse_images([c for c in ("image", "images") if c in columns])
        per_process = args.per_device_train_batch_size * args.steps_per_generation
        self._groups_per_batch = per_process // self.num_generations
        extra = args.partial_rollout_extra_groups
        self._extra_groups = self._groups_per_batch if extra is None else extra
        per_iteration = args.partial_rollout_schedule == "budget_per_iteration"
        if self._extra_groups or per_iteration:
            check_map_style(
                self.train_dataset,
                f"partial_rollout_extra_groups={self._extra_groups} with partial_rollout_schedule="
                f"{args.partial_rollout_schedule!r}",
                "set partial_rollout_extra_groups=0 and partial_rollout_schedule='rounds_until_full'",
            )
        max_length = args.partial_rollout_max_length or self.max_completion_length
        # Groups in flight: one batch's worth plus the extra groups arrive per iteration, and a trajectory lives at
        # most ceil(max_length / budget) iterations. The budget-per-iteration schedule draws new prompts up to this.
        lifetime = -(-max_length // args.partial_rollout_budget) if per_iteration else 1
        self._max_groups = (self._groups_per_batch + self._extra_groups) * lifetime
        self.rollout_buffer = PartialRolloutBuffer(
            num_generations=self.num_generations,
            token_budget=args.partial_rollout_budget,
            max_length=max_length,
            max_continuations=args.partial_rollout_max_continuations,
            eos_token_ids=self.eos_token_ids,
            repetition_ngram_size=args.partial_rollout_repetition_ngram_size,
            repetition_max_repeats=args.partial_rollout_repetition_max_repeats,
            # Never more than `_max_groups` plus the batch the data loader adds: a larger size means a bug, and raises.
            capacity=(self._max_groups + self._groups_per_batch) * self.num_generations,
        )
        if args.partial_rollout_repetition_ngram_size is not None:
            self._add_repetition_reward()

    def _add_repetition_reward(self) -> None:
        """The buffer cuts repeated trajectories and marks them `rollout_status="repeated"`; a
        [`~trl_kimi.rewards.RepetitionPenaltyReward`] reads that column. One already among the reward functions (e.g.
        `trl-kimi train --reward repetition`) is the penalty; otherwise one is added to TRL's reward lists (weight
        1, named `partial_rollout_repetition_penalty`), as TRL adds an environment's reward. Either way a repeated
        trajectory is penalised once."""
        if any(isinstance(f, RepetitionPenaltyReward) for f in self.reward_funcs):
            return
        args = self.args
        reward = RepetitionPenaltyReward(
            ngram_size=args.partial_rollout_repetition_ngram_size,
            max_repeats=args.partial_rollout_repetition_max_repeats,
            penalty=args.partial_rollout_repetition_penalty,
        )
        reward.__name__ = "partial_rollout_repetition_penalty"
        if reward.__name__ in self.reward_func_names:
            raise ValueError(
                f"A reward function is named {reward.__name__!r}, the name of the partial rollouts' repetition "
                "penalty; rename it, or turn repeat detection off with partial_rollout_repetition_ngram_size=None."
            )
        self.reward_funcs.append(reward)
        self.reward_func_names.append(reward.__name__)
        self.reward_processing_classes.append(None)
        self.reward_weights = torch.cat([self.reward_weights, torch.ones(1)])

    # ------------------------------------------------------------------ generation
    def _generate_and_score_completions(self, inputs):
        buffer = self.rollout_buffer
        if buffer is None or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._check_rows(inputs)
        if buffer.iteration == 0 and not buffer.trajectories and self._extra_groups:
            self._prime(inputs)
        buffer.add(inputs, self._tokenize_prompts([x["prompt"] for x in inputs])[0])
        buffer.begin_iteration()

        start = time.perf_counter()
        collective = self.accelerator.num_processes > 1
        round_times: list[float] = []

        def timed(round_inputs, max_new_tokens):
            round_start = time.perf_counter()
            out = self._generate_round(round_inputs, max_new_tokens)
            round_times.append(time.perf_counter() - round_start)
            return out

        any_process = self._any_process if collective else None
        if self.args.partial_rollout_schedule == "budget_per_iteration":
            columns = set(inputs[0])
            rounds = generate_iteration(
                buffer,
                timed,
                self._groups_per_batch,
                add_groups=lambda n: self._draw_groups(n, columns),
                max_groups=self._max_groups,
                any_process_needs_more=any_process,
            )
        else:
            rounds = generate_until_ready(buffer, timed, self._groups_per_batch, any_process_needs_more=any_process)
        generation_time = time.perf_counter() - start

        ready = buffer.peek_groups(self._groups_per_batch)
        self._ready_trajectories = ready
        try:
            # The buffer's verdict on each trajectory is a column of the rows TRL scores (RepetitionPenaltyReward
            # reads it).
            rows = [{**t.row, ROLLOUT_STATUS_COLUMN: t.status} for t in ready]
            output = super()._generate_and_score_completions(rows)
        finally:
            self._ready_trajectories = None
        # Only a scored batch leaves the buffer: if scoring raised, its groups are still there (nothing lost), and a
        # checkpoint (taken between batches) never holds a group that was already trained.
        buffer.pop_groups(self._groups_per_batch)
        self._log_partial_rollouts(ready, rounds, round_times, generation_time)
        return output

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        ready = self._ready_trajectories
        if ready is None:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        if [t.prompt_ids for t in ready] != [list(ids) for ids in prompt_ids]:
            raise RuntimeError(
                "The prompts TRL tokenized for the batch differ from the ones the partial-rollout buffer generated "
                "from; the tokenizer or chat template changed during the run."
            )
        logprobs = [t.logprobs for t in ready]
        return [list(t.completion_ids) for t in ready], None if any(lp is None for lp in logprobs) else logprobs

    def _generate(self, prompts: list):
        result = super()._generate(prompts)  # TRL's metrics see the whole completions
        ready = self._ready_trajectories
        if ready is None or self.args.partial_rollout_stale_tokens_in_loss:
            return result
        # Only each trajectory's newest segment counts in the loss (never judged against the training iteration: a
        # group that waited in the buffer keeps its tokens). TRL's tool_mask (1 = trained) carries it to the loss, to
        # num_items_in_batch and to vLLM's importance-sampling ratio. The reward still reads the whole answer.
        masks = [loss_token_mask(t.versions, exclude_stale_segments=True) for t in ready]
        prompt_ids, completion_ids, _tool_mask, completions, logprobs, extra_fields, images, tool_images = result
        return prompt_ids, completion_ids, masks, completions, logprobs, extra_fields, images, tool_images

    def _generate_round(self, inputs: list[list[int]], max_new_tokens: int):
        """One budgeted round through TRL's generation (a continuation is a generation from a longer prompt)."""
        num_local, local_limit = len(inputs), max_new_tokens
        if self.accelerator.num_processes > 1:
            # vLLM server and TP colocate slice their gathered outputs by this process's count, so every process
            # sends as many sequences: pad with copies (their outputs are dropped). At least one: FSDP, ZeRO-3 and
            # vLLM make generation a collective call. The round's token limit is agreed too: vLLM server mode
            # generates every process's sequences with the main process's limit, so all processes use the largest
            # (a process with nothing to continue must not starve the others to its 1 token) and trim their own
            # outputs to their own limit below.
            local = torch.tensor([num_local, max_new_tokens], device=self.accelerator.device)
            count, max_new_tokens = (int(x) for x in self.accelerator.reduce(local, "max"))
            filler = inputs[-1] if inputs else self.rollout_buffer.trajectories[-1].prompt_ids  # never empty here
            inputs = inputs + [filler] * (max(count, 1) - num_local)
        if not inputs:
            return [], None
        # One call for the whole round, fresh prompts and continuations together (left-padded to the longest): a
        # call per length class would repeat the round's decode steps, which cost more than the padding.
        with self._generation_limit(max_new_tokens):
            ids, logprobs = super()._generate_single_turn(
                prompt_ids=inputs, images=None, multimodal_fields={}, num_generations=1
            )
        ids = [list(x)[:local_limit] for x in ids[:num_local]]
        return ids, None if logprobs is None else [list(lp)[:local_limit] for lp in logprobs[:num_local]]

    @contextlib.contextmanager
    def _generation_limit(self, max_new_tokens: int):
        """TRL's maximum completion length, lowered to one round's budget for the duration of the round."""
        if self.use_vllm:
            target, key = self.vllm_generation, "max_completion_length"
        else:
            target, key = self.generation_config, "max_new_tokens"
        saved = getattr(target, key)
        setattr(target, key, max_new_tokens)
        try:
            yield
        finally:
            setattr(target, key, saved)

    def _any_process(self, need: bool) -> bool:
        return bool(self.accelerator.reduce(torch.tensor(int(need), device=self.accelerator.device), "sum") > 0)

    def _refuse_images(self, sources: list[str]) -> None:
        if sources:
            raise ValueError(
                f"partial_rollout_budget cannot be combined with image prompts (found: {', '.join(sources)}): a "
                "continuation is generated from the prompt's token ids plus the completion so far, without the "
                "images' pixel values, so the continued answer would not see the images. Leave partial_rollout_budget "
                "unset for prompts with images, or drop the image columns."
            )

    def _check_rows(self, inputs: list[dict[str, Any]]) -> None:
        """Every buffered trajectory is scored with its own row: the columns must stay those the buffer holds."""
        # Image columns were refused at init when the dataset lists its columns; images may also be content blocks
        # of conversational prompts.
        if ROLLOUT_STATUS_COLUMN in inputs[0]:
            raise ValueError(
                f"The dataset has a column {ROLLOUT_STATUS_COLUMN!r}, the column partial rollouts add to each row "
                "(the buffer's verdict on the trajectory); rename that column."
            )
        sources = [c for c in ("image", "images") if c in inputs[0]]
        if any(_has_image_block(x["prompt"]) for x in inputs):
            sources.append("an image content block in a prompt")
        self._refuse_images(sources)
        buffered = self.rollout_buffer.trajectories
        if not buffered:
            return
        new, old = set(inputs[0]), set(buffered[0].row)
        if new != old:
            raise ValueError(
                f"The dataset rows changed columns between iterations: buffered trajectories have {sorted(old)}, the "
                f"new batch has {sorted(new)} (missing {sorted(old - new)}, new {sorted(new - old)}). The reward "
                "functions of a buffered trajectory need its row as it was; keep train_dataset's columns fixed "
                "during a run, or resume from a checkpoint written with the same dataset."
            )

    def _prime(self, inputs: list[dict[str, Any]]) -> None:
        """Fill the buffer once with `_extra_groups` groups drawn from train_dataset (seeded, per process)."""
        rng = random.Random(self.args.seed * 7919 + self.accelerator.process_index)
        size = len(self.train_dataset)
        self._add_rows(rng.sample(range(size), min(self._extra_groups, size)), set(inputs[0]))

    def _draw_groups(self, num_groups: int, columns: set[str]) -> list:
        """`num_groups` new groups drawn from train_dataset, seeded by the buffer's state (so a resumed run draws the
        same ones); returns their trajectories."""
        buffer = self.rollout_buffer
        rng = random.Random(
            (self.args.seed * 7919 + self.accelerator.process_index) * 1_000_003 + buffer.next_group_id
        )
        size = len(self.train_dataset)
        indices = rng.sample(range(size), min(num_groups, size))
        self._add_rows(indices, columns)
        return buffer.trajectories[len(buffer) - len(indices) * self.num_generations :]

    def _add_rows(self, indices: list[int], columns: set[str]) -> None:
        """Add the groups of these train_dataset rows, with the columns the data loader hands out (it may drop some)."""
        rows = [{k: v for k, v in self.train_dataset[i].items() if k in columns} for i in indices]
        rows = [row for row in rows for _ in range(self.num_generations)]
        if rows:
            self.rollout_buffer.add(rows, self._tokenize_prompts([x["prompt"] for x in rows])[0])

    # ------------------------------------------------------------------ metrics
    def _log_partial_rollouts(
        self, ready, rounds: list[RoundStats], round_times: list[float], generation_time: float
    ) -> None:
        buffer = self.rollout_buffer
        versions = [v for t in ready for v in t.versions]
        masked = (
            0
            if self.args.partial_rollout_stale_tokens_in_loss
            else sum(len(t.versions) - sum(loss_token_mask(t.versions, exclude_stale_segments=True)) for t in ready)
        )
        # Time the batch waited on its longest sample: in each round, the decode steps after the average sequence
        # had its tokens, as a share of the round's time.
        waiting = sum(
            seconds * (1 - r.mean_decode / r.longest_decode)
            for r, seconds in zip(rounds, round_times, strict=False)  # a round with nothing to do makes no call
            if r.longest_decode
        )
        # Summed over processes, then the maxima over processes: one gather for both.
        sums = {
            "buffer_size": len(buffer),
            "resumed": sum(r.num_resumed for r in rounds),
            "sequences": sum(r.num_sequences for r in rounds),
            "tokens_generated": sum(r.tokens_generated for r in rounds),
            "tokens_generated_total": buffer.tokens_generated,
            "tokens_popped_total": buffer.tokens_popped,
            "tokens_in_flight": sum(len(t.completion_ids) for t in buffer.trajectories),
            "continuations": sum(t.num_continuations for t in ready),
            "samples": len(ready),
            "repeated": sum(t.status == "repeated" for t in ready),
            "truncated": sum(t.status == "truncated" for t in ready),
            "masked_tokens": masked,
            "tokens": len(versions),
        }
        maxes = {
            "continuations_max": max(t.num_continuations for t in ready),
            "rounds": len(rounds),
            "over_budget_rounds": sum(r.over_budget for r in rounds),
            "longest_sample_wait_s": waiting,
            "generation_time_s": generation_time,
        }
        local = torch.tensor(
            [[*sums.values(), *maxes.values()]], dtype=torch.float64, device=self.accelerator.device
        )  # (1, S + M)
        gathered = self.accelerator.gather(local)  # (P, S + M)
        s = dict(zip(sums, gathered[:, : len(sums)].sum(dim=0).tolist(), strict=True))
        m = dict(zip(maxes, gathered[:, len(sums) :].max(dim=0).values.tolist(), strict=True))
        metrics = self._metrics["train"]
        metrics["partial_rollouts/buffer_size"].append(s["buffer_size"])
        metrics["partial_rollouts/resumed_fraction"].append(s["resumed"] / max(s["sequences"], 1))
        metrics["partial_rollouts/tokens_generated"].append(s["tokens_generated"])
        # Tokens that ended in a trained sample / tokens generated, since the start (tokens still in flight count
        # as generated and not yet useful; `useful_token_fraction_settled` leaves them out).
        generated, popped = s["tokens_generated_total"], s["tokens_popped_total"]
        metrics["partial_rollouts/useful_token_fraction"].append(popped / max(generated, 1))
        metrics["partial_rollouts/useful_token_fraction_settled"].append(
            popped / max(generated - s["tokens_in_flight"], 1)
        )
        metrics["partial_rollouts/continuations_mean"].append(s["continuations"] / max(s["samples"], 1))
        metrics["partial_rollouts/continuations_max"].append(m["continuations_max"])
        metrics["partial_rollouts/repeated_fraction"].append(s["repeated"] / max(s["samples"], 1))
        metrics["partial_rollouts/truncated_fraction"].append(s["truncated"] / max(s["samples"], 1))
        metrics["partial_rollouts/masked_token_fraction"].append(s["masked_tokens"] / max(s["tokens"], 1))
        metrics["partial_rollouts/rounds"].append(m["rounds"])
        metrics["partial_rollouts/over_budget_rounds"].append(m["over_budget_rounds"])
        metrics["partial_rollouts/longest_sample_wait_s"].append(m["longest_sample_wait_s"])
        metrics["partial_rollouts/generation_time_s"].append(m["generation_time_s"])

    # ------------------------------------------------------------------ checkpoints
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.rollout_buffer is None:
            return
        states = gather_object([self.rollout_buffer.state_dict()])  # collective: one state per process, in order
        if self.args.should_save:
            torch.save({"world_size": len(states), "processes": states}, os.path.join(output_dir, ROLLOUT_BUFFER_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.rollout_buffer is None:
            return
        path = os.path.join(checkpoint, ROLLOUT_BUFFER_NAME)
        if not os.path.isfile(path):
            raise ValueError(
                f"partial_rollout_budget={self.args.partial_rollout_budget} but the checkpoint {checkpoint} has no "
                f"{ROLLOUT_BUFFER_NAME}: it was written without partial rollouts. Resume with the settings of that run "
                "(leave partial_rollout_budget unset), or start a new run."
            )
        saved = torch.load(path, weights_only=True)
        if saved["world_size"] != self.accelerator.num_processes:
            raise ValueError(
                f"{path} holds the buffers of {saved['world_size']} processes, this run has "
                f"{self.accelerator.num_processes}. Resume with {saved['world_size']} processes."
            )
        self.rollout_buffer.load_state_dict(saved["processes"][self.accelerator.process_index])
