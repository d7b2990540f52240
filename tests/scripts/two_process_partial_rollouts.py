"""Launched by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo).

Trains 4 steps with partial rollouts (budget 3 of 8 tokens, an EOS-prone tiny model so lengths vary): each process
keeps its own buffer of whole groups (2 groups x 3 generations per generated batch and process). A checkpoint at step
2 holds both buffers. Each rank writes, per generated batch, the trained trajectories (group, sample), their prompts
and statuses, the gathered rewards and its advantages, its buffer state as the batch starts, and its number of
generation rounds, to OUT_DIR/rank{N}.json.
"""

import copy
import json
import os
import sys

import torch

from tests.utils import digit_fraction_reward, eos_prone_model, tiny_config
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.distributed import end_training, wrapped_models_alive
from trl_kimi.tasks import arithmetic


class DumpingTrainer(KimiMirrorDescentTrainer):
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self._ready_trajectories is not None:
            self.dumps.append(
                {
                    "keys": [[t.group_id, t.sample_index] for t in self._ready_trajectories],
                    "prompts": [t.row["prompt"] for t in self._ready_trajectories],
                    "statuses": [t.status for t in self._ready_trajectories],
                    "state": self._state_at_start,
                }
            )
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _generate_round(self, inputs, max_new_tokens):
        self.num_generate_calls += 1
        return super()._generate_round(inputs, max_new_tokens)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.dumps[-1]["rewards_per_func"] = rewards_per_func.tolist()
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._state_at_start = copy.deepcopy(self.rollout_buffer.state_dict())
        calls = self.num_generate_calls
        output = super()._generate_and_score_completions(inputs)
        self.dumps[-1]["advantages"] = output["advantages"].tolist()
        self.dumps[-1]["generate_calls"] = self.num_generate_calls - calls
        return output


def main(out_dir: str) -> KimiMirrorDescentTrainer:
    tokenizer = arithmetic.make_tokenizer()
    args = tiny_config(
        os.path.join(out_dir, "run"),
        max_steps=4,
        partial_rollout_budget=3,
        save_strategy="steps",
        save_steps=2,
    )
    trainer = DumpingTrainer(
        model=eos_prone_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=args,
        train_dataset=arithmetic.make_rl_dataset(48, seed=0, max_terms=4),
        processing_class=tokenizer,
    )
    trainer.dumps, trainer.num_generate_calls = [], 0
    trainer.train()
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": trainer.accelerator.num_processes, "batches": trainer.dumps}, f)

    return trainer


def end(trainer, out_dir: str) -> None:
    """`trl_kimi.distributed.end_training`, as every multi-process script ends; records that it left neither the
    process group nor a DDP wrapper (whose Reducer, freed after the group was destroyed, could hang the exit)."""
    rank = trainer.accelerator.process_index
    end_training(trainer)
    with open(os.path.join(out_dir, f"rank{rank}.end.json"), "w") as f:
        json.dump({"process_group_alive": torch.distributed.is_initialized(), "ddp_alive": wrapped_models_alive()}, f)


if __name__ == "__main__":
    end(main(sys.argv[1]), sys.argv[1])
