"""Launched by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo).

Trains 4 steps with the prioritised sampler; a generated batch is 3 prompts x 4 generations, dealt 6 per process.
Each rank writes, per generated batch, the problems the sampler drew, the update count they were drawn with and the
prompts this rank trained on, plus the final success rates, to OUT_DIR/rank{N}.json.
"""

import json
import os
import sys

from tests.scripts.two_process_advantages import end
from tests.test_sampling import answer_not_multiple_of_3_reward
from tests.utils import tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.tasks import arithmetic


class DumpingTrainer(KimiMirrorDescentTrainer):
    def _feed_back_success(self, inputs, rewards_per_func):
        batch_id = self.sampler.num_updates
        self.dumps.append(
            {
                "indices": self.sampler.batch_indices(batch_id),
                "version": self.sampler.batch_version(batch_id),
                "prompts": [x["prompt"] for x in inputs],
            }
        )
        super()._feed_back_success(inputs, rewards_per_func)


def main(out_dir: str) -> KimiMirrorDescentTrainer:
    tokenizer = arithmetic.make_tokenizer()
    args = tiny_config(
        os.path.join(out_dir, "run"),
        max_steps=4,
        num_generations=4,
        per_device_train_batch_size=3,
        steps_per_generation=2,
        sampling_strategy="prioritized",
    )
    trainer = DumpingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=answer_not_multiple_of_3_reward,
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
                "batches": trainer.dumps,
                "rates": trainer.sampler.tracker.rates.tolist(),
            },
            f,
        )
    return trainer


if __name__ == "__main__":
    end(main(sys.argv[1]), sys.argv[1])
