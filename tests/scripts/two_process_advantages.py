"""Launched by tests/test_multiprocess.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo).

Trains 2 steps where the 3 prompts x 4 generations of a generated batch are dealt 6 per process, so the middle
prompt's group straddles the two processes; each rank writes, per generated batch, its prompts, rewards and
advantages to OUT_DIR/rank{N}.json.
"""

import json
import os
import sys

from tests.utils import digit_fraction_reward, tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.tasks import arithmetic


class DumpingTrainer(KimiMirrorDescentTrainer):
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        texts = self.processing_class.batch_decode(
            output["completion_ids"] * output["completion_mask"], skip_special_tokens=True
        )
        self.dumps.append(
            {
                "prompts": [x["prompt"] for x in inputs],
                "rewards": digit_fraction_reward(texts),
                "advantages": output["advantages"].tolist(),
            }
        )
        return output


def main(out_dir: str) -> None:
    tokenizer = arithmetic.make_tokenizer()
    args = tiny_config(
        os.path.join(out_dir, "run"),
        max_steps=2,
        num_generations=4,
        per_device_train_batch_size=3,
        steps_per_generation=2,
    )
    trainer = DumpingTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=args,
        train_dataset=arithmetic.make_rl_dataset(24, seed=0, max_terms=4),
        processing_class=tokenizer,
    )
    trainer.dumps = []
    trainer.train()
    rank = trainer.accelerator.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": trainer.accelerator.num_processes, "batches": trainer.dumps}, f)


if __name__ == "__main__":
    main(sys.argv[1])
