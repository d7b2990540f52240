"""Launched by tests/test_partial_rollouts.py as `torchrun --nproc_per_node 2 <this> OUT_DIR` (CPU, gloo).

The round-limit agreement of [`PartialRolloutMixin._generate_round`] in vLLM server mode, without vLLM: the
generation below stands in for TRL's server path in lock-step (gather every process's sequences, generate them all on
the main process with *its* `vllm_generation.max_completion_length`, broadcast, each process takes its slice). A fake
policy (no model) gives each prompt a fixed answer length. Budget 4, overall maximum 11 (not a multiple of 4), one
sample per group:

- `starved`: rank 0's answers finish in 2 rounds, rank 1 has one of 30 tokens (truncated at 11): in round 3 rank 0
  has nothing to continue, rank 1 needs 3 more tokens.
- `over_limit`: rank 0 continues an answer with 8 tokens left (its limit: 4), rank 1 one with 2 left (its limit: 2).

Each rank writes, per scenario, the limits it asked for, the limits the server used, and its trajectories, to
OUT_DIR/rank{N}.json.
"""

import json
import os
import sys
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from trl_kimi import PartialRolloutBuffer
from trl_kimi.partial_rollouts import generate_until_ready
from trl_kimi.trainer.partial_rollout_mixin import PartialRolloutMixin


EOS, BUDGET, MAX_LENGTH = 0, 4, 11
# prompt id -> answer length if unlimited (EOS included)
TARGETS = {1: 6, 2: 3, 3: 30, 4: 2, 5: 30, 6: 30}
SCENARIOS = {
    # rank -> [(prompt id, tokens already generated)]
    "starved": {0: [(1, 0), (2, 0)], 1: [(3, 0), (4, 0)]},
    "over_limit": {0: [(5, 3)], 1: [(6, 9)]},
}


class FakeVLLMServer:
    """TRL's `_generate_single_turn` in vLLM server mode, with a fake policy instead of the server."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        all_prompts = gather_object([list(p) for p in prompt_ids])
        max_tokens = self.vllm_generation.max_completion_length  # the main process's value is the one sent
        outputs = None
        if self.accelerator.is_main_process:
            self.server_max_tokens.append(max_tokens)
            outputs = []
            for ids in all_prompts:
                remaining = TARGETS[ids[0]] - (len(ids) - 1)  # ids = 1 prompt token + the completion so far
                n = min(max_tokens, remaining)
                outputs.append([7] * (n - 1) + [EOS] if n == remaining else [7] * n)
        box = [outputs]
        broadcast_object_list(box, from_process=0)
        start = self.accelerator.process_index * len(prompt_ids)
        return box[0][start : start + len(prompt_ids)], None


class Harness(PartialRolloutMixin, FakeVLLMServer):
    use_vllm = True

    def __init__(self, accelerator: Accelerator, buffer: PartialRolloutBuffer):
        self.accelerator, self.rollout_buffer = accelerator, buffer
        self.vllm_generation = SimpleNamespace(max_completion_length=MAX_LENGTH)
        self.server_max_tokens, self.local_limits = [], []

    def _generate_round(self, inputs, max_new_tokens):
        self.local_limits.append(max_new_tokens)
        ids, logprobs = super()._generate_round(inputs, max_new_tokens)
        assert all(len(x) <= max_new_tokens for x in ids)
        return ids, logprobs


def main(out_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    results = {"world_size": accelerator.num_processes}
    for name, scenario in SCENARIOS.items():
        buffer = PartialRolloutBuffer(1, token_budget=BUDGET, max_length=MAX_LENGTH, eos_token_ids=[EOS])
        for prompt, done in scenario[rank]:
            buffer.add([{"prompt": str(prompt)}], [[prompt]])
            if done:
                traj = buffer.trajectories[-1]
                traj.completion_ids, traj.segments, traj.num_continuations = [7] * done, [[0, done]], 0
        buffer.begin_iteration()
        harness = Harness(accelerator, buffer)
        rounds = generate_until_ready(
            buffer, harness._generate_round, len(scenario[rank]), any_process_needs_more=harness._any_process
        )
        results[name] = {
            "rounds": len(rounds),
            "local_limits": harness.local_limits,
            "server_max_tokens": harness.server_max_tokens,
            "lengths": [len(t.completion_ids) for t in buffer.trajectories],
            "segments": [[n for _, n in t.segments] for t in buffer.trajectories],
            "statuses": [t.status for t in buffer.trajectories],
            "tokens_discarded": buffer.tokens_discarded,
        }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    accelerator.end_training()  # destroy the process group before exit (see two_process_advantages.end)
    with open(os.path.join(out_dir, f"rank{rank}.end.json"), "w") as f:
        json.dump({"process_group_alive": torch.distributed.is_initialized()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
