"""Issue 28 reduced measurement (docs/benchmarks.md): one warm start (seed 0) shared by three RL seeds.

Run from the repository root: python benchmarks/results/sampling_issue28_wide_spread_30steps_run.py
"""

import shutil
import sys
from pathlib import Path


sys.argv = [sys.argv[0]]
sys.path.insert(0, "benchmarks")
import sampling as bench  # noqa: E402


args = bench.BenchmarkArguments(
    output_dir="runs/bench-sampling-issue28",
    train_set="wide_spread",
    seeds=[0, 1, 2],
    rl_steps=30,
    eval_every=15,
    num_workers=3,
    sft_steps=400,
    pool_size=1000,
    num_eval_prompts=100,
    strategies=["uniform", "prioritized", "dynamic", "prioritized_dynamic", "curated"],
)
if __name__ == "__main__":  # the benchmark's workers are spawned: they import this file
    Path(args.output_dir, "seed0").mkdir(parents=True, exist_ok=True)
    bench.torch.set_num_threads(1)
    bench.warm_start_seed(args, 0)
    for seed in (1, 2):
        target = Path(args.output_dir, f"seed{seed}")
        target.mkdir(parents=True, exist_ok=True)
        for name in ("warm_start.pt", "wide_spread_train.json", "curated_train.json", "curated_summary.json"):
            shutil.copy(Path(args.output_dir, "seed0", name), target / name)
    print("[bench] warm start of seed 0 shared by seeds 1 and 2", flush=True)
    bench.main(args)
