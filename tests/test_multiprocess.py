import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trl_kimi.losses import mean_baseline_advantages
from trl_kimi.rewards import length_penalty
from trl_kimi.tasks import arithmetic


REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(script: str, out_dir: Path, launcher: str = "torchrun") -> None:
    """Run `tests/scripts/<script> <out_dir>` in 2 CPU processes (gloo); fails the test on error. `launcher` is
    "torchrun" or "accelerate" (`accelerate launch` with the shipped examples/accelerate_configs/cpu_2proc.yaml)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    port = str(free_port())
    if launcher == "torchrun":
        command = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
        command += ["--master_port", port]
    else:
        config = REPO / "examples" / "accelerate_configs" / "cpu_2proc.yaml"
        command = ["-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", port]
    command = [sys.executable, *command, str(REPO / "tests" / "scripts" / script), str(out_dir)]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    # The teardown: each rank destroyed its process group before exiting (left alive, gloo's threads made a rank abort
    # at interpreter exit now and then: "terminate called without an active exception", exit -6).
    assert "terminate called" not in result.stderr
    # trl_kimi.distributed.end_training: no DDP wrapper outlived the group (its Reducer, freed after the group was
    # destroyed, joined gloo's threads holding the GIL: the exit hung in about one run in ten).
    ends = [json.loads((out_dir / f"rank{rank}.end.json").read_text()) for rank in (0, 1)]
    if script == "two_process_partial_rollout_rounds.py":  # no model, plain Accelerator
        assert ends == [{"process_group_alive": False}] * 2
    else:
        assert ends == [{"process_group_alive": False, "ddp_alive": 0}] * 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_group_split_across_two_processes_gets_the_one_process_advantages_and_length_penalty(tmp_path, launcher):
    run_two_processes("two_process_advantages.py", tmp_path, launcher)

    straddling = slice(4, 8)  # 3 prompts x 4 generations, 6 per process: the middle group is split 2 + 2
    checked_advantages = checked_penalty = 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["distributed_type"] for r in ranks] == ["DistributedType.MULTI_CPU"] * 2
    assert len(ranks[0]["batches"]) == 2
    # One model: the same logged (process-averaged) losses and the same trained weights on both ranks, moved by training.
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 4
    assert ranks[0]["weights_after"] == ranks[1]["weights_after"]
    assert ranks[0]["weights_before"] == ranks[1]["weights_before"]
    moved = [n for n, v in ranks[0]["weights_after"].items() if abs(v - ranks[0]["weights_before"][n]) > 1e-6]
    assert len(moved) > len(ranks[0]["weights_after"]) // 2
    for batch0, batch1 in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        # The generated batch in global order is rank 0's slice then rank 1's.
        prompts = batch0["prompts"] + batch1["prompts"]
        assert len(prompts) == 12
        assert all(len(set(prompts[g : g + 4])) == 1 for g in range(0, 12, 4))
        assert batch0["prompts"][-1] == batch1["prompts"][0]  # the middle group straddles the two processes
        assert batch0["rewards_per_func"] == batch1["rewards_per_func"]  # both ranks hold the gathered rewards
        correctness, penalty = torch.tensor(batch0["rewards_per_func"], dtype=torch.float64).T  # (12,) each
        lengths = batch0["lengths"] + batch1["lengths"]

        # Length penalty: the one-process value on whole groups (weight 0.5, no warm-up)...
        one_process_penalty = [0.5 * p for p in length_penalty(lengths, (correctness >= 0.25).tolist(), 4)]
        assert penalty.tolist() == pytest.approx(one_process_penalty, abs=1e-6)
        # ...and not what a per-process reward function would see: half groups of 2 (the mistake this guards against).
        per_process = [
            0.5 * p
            for rank, batch in enumerate((batch0, batch1))
            for p in length_penalty(batch["lengths"], (correctness[6 * rank : 6 * rank + 6] >= 0.25).tolist(), 2)
        ]
        if per_process[straddling] != pytest.approx(one_process_penalty[straddling], abs=1e-6):
            checked_penalty += 1

        # Advantages: the one-process mean baseline of the total reward...
        rewards = correctness + penalty
        advantages = batch0["advantages"] + batch1["advantages"]
        one_process = mean_baseline_advantages(rewards, num_generations=4)
        assert advantages == pytest.approx(one_process.tolist(), abs=1e-6)
        # ...and not each process's own half-group baseline.
        local = [r - rewards[g : g + 2].mean() for g in range(0, 12, 2) for r in rewards[g : g + 2]]
        if abs(rewards[4:6].sum() - rewards[6:8].sum()) > 1e-6:
            assert advantages[straddling] != pytest.approx([x.item() for x in local[straddling]], abs=1e-6)
            checked_advantages += 1
    assert checked_advantages > 0 and checked_penalty > 0


@pytest.mark.slow
def test_two_processes_draw_the_same_prioritized_batches_and_hold_the_same_success_rates(tmp_path):
    run_two_processes("two_process_sampling.py", tmp_path)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    dataset = arithmetic.make_rl_dataset(24, seed=0, max_terms=4)
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 2  # 4 steps, 2 per generated batch
    for batch0, batch1 in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        # Same draw, drawn after the same number of updates, on both processes...
        assert batch0["indices"] == batch1["indices"] and batch0["version"] == batch1["version"]
        # ...and the processes' slices, in rank order, are exactly those problems, each 4 times in a row.
        expected = [dataset[i]["prompt"] for i in batch0["indices"] for _ in range(4)]
        assert batch0["prompts"] + batch1["prompts"] == expected
    # Success rates from the gathered rewards: identical, and covering the problems of both processes' slices.
    assert ranks[0]["rates"] == ranks[1]["rates"]
    rates = torch.tensor(ranks[0]["rates"], dtype=torch.float64)
    drawn = {i for batch in ranks[0]["batches"] for i in batch["indices"]}
    assert {i for i in range(24) if rates[i] != 0.5} == drawn  # every problem a process trained on, none other


@pytest.mark.slow
def test_two_processes_keep_partial_rollout_groups_and_buffers_consistent(tmp_path):
    from trl_kimi.trainer.partial_rollout_mixin import ROLLOUT_BUFFER_NAME

    run_two_processes("two_process_partial_rollouts.py", tmp_path)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 4
    for rank in ranks:
        trained = [tuple(k) for batch in rank["batches"] for k in batch["keys"]]
        assert len(trained) == len(set(trained)) == 24  # each trajectory trained once
        for batch in rank["batches"]:
            # Whole groups of 3 on each process: one prompt, samples 0..2, all done.
            assert [k[1] for k in batch["keys"]] == [0, 1, 2, 0, 1, 2]
            assert len(set(batch["prompts"][:3])) == 1 and len(set(batch["prompts"][3:])) == 1
            assert "running" not in batch["statuses"]
    for batch0, batch1 in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        # Both processes ran the same number of generation rounds (a collective call in vLLM / ZeRO-3 / FSDP)...
        assert batch0["generate_calls"] == batch1["generate_calls"] >= 1
        # ...hold the same gathered rewards, and their advantages are the mean baseline over each whole group.
        assert batch0["rewards_per_func"] == batch1["rewards_per_func"]
        rewards = torch.tensor(batch0["rewards_per_func"], dtype=torch.float64).sum(dim=1)
        expected = mean_baseline_advantages(rewards, num_generations=3).tolist()
        assert batch0["advantages"] + batch1["advantages"] == pytest.approx(expected, abs=1e-6)
    # The checkpoint at step 2 holds each process's buffer, as the third batch found it.
    saved = torch.load(tmp_path / "run" / "checkpoint-2" / ROLLOUT_BUFFER_NAME, weights_only=True)
    assert saved["world_size"] == 2
    assert [saved["processes"][r] for r in (0, 1)] == [ranks[r]["batches"][2]["state"] for r in (0, 1)]
    assert saved["processes"][0] != saved["processes"][1]  # each process has its own trajectories


def rank_marking_reward(completions: list[str], **kwargs) -> list[float]:
    """A reward (the fraction of digits) that leaves a file named after the process's rank in $RANKS_DIR."""
    Path(os.environ["RANKS_DIR"], os.environ.get("RANK", "none")).touch()
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


@pytest.mark.slow
def test_trl_kimi_train_with_num_processes_runs_two_processes(tmp_path):
    """`trl-kimi train --num_processes 2 --accelerate_config cpu_2proc ...`, the `trl grpo` habit: the command
    relaunches itself under `accelerate launch` and both processes train one model."""
    from tests.utils import tiny_model

    tokenizer = arithmetic.make_tokenizer()
    tiny_model(tokenizer).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "ranks").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.update(RANKS_DIR=str(tmp_path / "ranks"))
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, "-m", "trl_kimi.cli", "train", "--num_processes", "2", "--accelerate_config",
               "cpu_2proc", "--main_process_port", str(free_port()), "--model_name_or_path", str(tmp_path / "base"),
               "--dataset_name", "chain-sum", "--max_train_samples", "12", "--output_dir", str(tmp_path / "run"),
               "--reward", "tests.test_multiprocess.rank_marking_reward",
               "--max_steps", "2", "--per_device_train_batch_size", "3", "--num_generations", "3",
               "--steps_per_generation", "2", "--max_completion_length", "8", "--use_cpu", "true", "--bf16", "false",
               "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true"]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "terminate called" not in result.stderr
    # Two processes scored completions, one model and one card were written.
    assert sorted(os.listdir(tmp_path / "ranks")) == ["0", "1"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "| `per_device_train_batch_size` | 3 |" in card and (tmp_path / "run" / "model.safetensors").is_file()
