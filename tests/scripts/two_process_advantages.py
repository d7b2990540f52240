"""Launched by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo, DDP), or with
`accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml` (what the README shows).

Trains 4 steps where the 3 prompts x 4 generations of a generated batch are dealt 6 per process, so the middle
prompt's group straddles the two processes. The rewards are a correctness stand-in (the fraction of digits) and a
LengthPenaltyReward judged by it. Each rank writes, per generated batch, its prompts, its completions' token lengths,
the gathered rewards per function and its advantages to OUT_DIR/rank{N}.json, plus the distributed type, the logged
losses and a per-tensor checksum of the weights before and after training.
"""

import json
import os
import sys

import torch

from tests.utils import digit_fraction_reward, tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.distributed import end_training, wrapped_models_alive
from trl_kimi.tasks import arithmetic


class DumpingTrainer(KimiMirrorDescentTrainer):
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.dumps.append(
            {
                "prompts": [x["prompt"] for x in inputs],
                "lengths": [len(ids) for ids in completion_ids_list],
                "rewards_per_func": rewards_per_func.tolist(),
            }
        )
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.dumps[-1]["advantages"] = output["advantages"].tolist()
        return output


def main(out_dir: str) -> KimiMirrorDescentTrainer:
    tokenizer = arithmetic.make_tokenizer()
    args = tiny_config(
        os.path.join(out_dir, "run"),
        max_steps=4,
        num_generations=4,
        per_device_train_batch_size=3,
        steps_per_generation=2,
    )
    penalty = LengthPenaltyReward(correctness_reward="digit_fraction_reward", threshold=0.25, warmup_steps=0)
    model = tiny_model(tokenizer)
    before = {name: tensor.double().sum().item() for name, tensor in sorted(model.state_dict().items())}
    trainer = DumpingTrainer(
        model=model,
        reward_funcs=[digit_fraction_reward, penalty],
        args=args,
        train_dataset=arithmetic.make_rl_dataset(24, seed=0, max_terms=4),
        processing_class=tokenizer,
    )
    trainer.dumps = []
    trainer.train()
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "world_size": trainer.accelerator.num_processes,
                "distributed_type": str(trainer.accelerator.distributed_type),
                "batches": trainer.dumps,
                "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
                "weights_before": before,
                "weights_after": checksums(trainer),
            },
            f,
        )
    return trainer


def checksums(trainer) -> dict[str, float]:
    """Sum of each weight tensor of the trained model, as `accelerator.get_state_dict` returns it for saving."""
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return {name: tensor.double().sum().item() for name, tensor in sorted(state.items())}


def end(trainer, out_dir: str) -> None:
    """`trl_kimi.distributed.end_training`, as every multi-process script ends; records that it left neither the
    process group nor a DDP wrapper (whose Reducer, freed after the group was destroyed, could hang the exit)."""
    rank = trainer.accelerator.process_index
    end_training(trainer)
    with open(os.path.join(out_dir, f"rank{rank}.end.json"), "w") as f:
        json.dump({"process_group_alive": torch.distributed.is_initialized(), "ddp_alive": wrapped_models_alive()}, f)


if __name__ == "__main__":
    end(main(sys.argv[1]), sys.argv[1])
