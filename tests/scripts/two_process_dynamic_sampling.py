"""Launched by tests/test_dynamic_sampling.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo).

Trains 4 steps with dynamic sampling and the prioritised sampler; a generated batch is 4 prompts x 3 generations, 2
whole groups per process. Each rank writes, per generated batch, the number of tries, how many uninformative groups it
kept and the prompt ids it trained on, plus the final success rates, to OUT_DIR/rank{N}.json.
"""

import json
import os
import sys

from tests.scripts.two_process_advantages import end
from tests.test_dynamic_sampling import RecordingTrainer, first_char_digit_reward, uninformative_groups
from tests.utils import tiny_config, tiny_model
from trl_kimi.tasks import arithmetic


def main(out_dir: str):
    tokenizer = arithmetic.make_tokenizer()
    args = tiny_config(
        os.path.join(out_dir, "run"),
        max_steps=4,
        per_device_train_batch_size=6,
        sampling_strategy="prioritized",
        dynamic_sampling=True,
    )
    trainer = RecordingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=first_char_digit_reward,
        args=args,
        train_dataset=arithmetic.make_rl_dataset(24, seed=0, max_terms=4),
        processing_class=tokenizer,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    tries = [
        int(row["dynamic_sampling/tries"]) for row in trainer.state.log_history if "dynamic_sampling/tries" in row
    ]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "world_size": trainer.accelerator.num_processes,
                "tries": tries,
                "uninformative": [uninformative_groups(b) for b in trainer.batches],
                "prompts": [b["prompt_ids"].tolist() for b in trainer.batches],
                "rates": trainer.sampler.tracker.rates.tolist(),
            },
            f,
        )
    return trainer


if __name__ == "__main__":
    end(main(sys.argv[1]), sys.argv[1])
