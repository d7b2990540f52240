"""
Step time and peak memory of `KimiMirrorDescentTrainer` against TRL's `GRPOTrainer`, side by side in one run.

Each measurement is a fresh subprocess (so peak memory is its own), alternating Kimi, GRPO, Kimi, GRPO, ... on the
same model, prompts, batch and generation settings. Completions are forced to exactly `--completion_length` tokens
(`min_new_tokens` = `max_completion_length`), so both trainers process identical shapes at every step even after their
policies diverge. Both make 2 optimizer steps per generated batch (so both compute the old log-probabilities).

Reported: median seconds per optimizer step (after `--warmup_steps`), peak memory (CUDA: max allocated; CPU: peak RSS
of the process, and its growth during `train()`), and Kimi/GRPO ratios. Targets: time <= 1.00x, memory <= 1.02x.

```bash
python benchmarks/trainer_overhead.py                      # CPU, tiny Qwen2 (~7M parameters)
python benchmarks/trainer_overhead.py --repeats 5 --hidden_size 512 --num_layers 8   # on a GPU machine
```
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this process: build, train, report."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trl_kimi import KimiConfig, KimiMirrorDescentTrainer
    from trl_kimi.tasks import arithmetic

    cuda = torch.cuda.is_available()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._start = [], None

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)

    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, num_heads=args.hidden_size // 32)
    dataset = arithmetic.make_rl_dataset(512, seed=0, max_terms=7)
    common = dict(
        output_dir=f"/tmp/trl-kimi-bench-{args.trainer}",
        use_cpu=not cuda,
        bf16=cuda,
        seed=0,
        max_steps=args.warmup_steps + args.steps,
        learning_rate=1e-5,
        per_device_train_batch_size=args.batch_size,
        steps_per_generation=2,
        num_generations=8,
        max_completion_length=args.completion_length,
        generation_kwargs={"min_new_tokens": args.completion_length},  # identical shapes for both trainers
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    if args.trainer == "kimi":
        trainer_cls, config = KimiMirrorDescentTrainer, KimiConfig(**common, tau=0.1)
    else:
        trainer_cls, config = GRPOTrainer, GRPOConfig(**common)  # TRL's defaults: loss_type="dapo", clip 0.2
    timer = StepTimer()
    trainer = trainer_cls(
        model=model,
        reward_funcs=arithmetic.addition_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_mb()
    trainer.train()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "trainer": args.trainer,
        "step_s": statistics.median(timer.times[args.warmup_steps :]),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_rss_mb": peak_rss,
        "rss_growth_mb": peak_rss - rss_before,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu x{torch.get_num_threads()} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="Measurements per trainer, alternated.")
    parser.add_argument("--steps", type=int, default=8, help="Timed optimizer steps per measurement.")
    parser.add_argument("--warmup_steps", type=int, default=2, help="Untimed first steps.")
    parser.add_argument("--batch_size", type=int, default=32, help="per_device_train_batch_size.")
    parser.add_argument("--completion_length", type=int, default=48, help="Exact completion length in tokens.")
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=8)
    parser.add_argument("--trainer", choices=["kimi", "grpo"], help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()

    if args.trainer:
        print(json.dumps(worker(args)))
        return

    results = {"kimi": [], "grpo": []}
    for repeat in range(args.repeats):
        for name in ("kimi", "grpo") if repeat % 2 == 0 else ("grpo", "kimi"):  # alternate who goes first
            command = [sys.executable, __file__, "--trainer", name] + [
                f"--{k}={v}" for k, v in vars(args).items() if k not in ("trainer", "repeats") and v is not None
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"{name} worker failed:\n{out.stderr[-4000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results[name].append(row)
            print(
                f"repeat {repeat} {name:4s}: {row['step_s']:.4f} s/step, peak RSS {row['peak_rss_mb']:.0f} MB "
                f"(+{row['rss_growth_mb']:.0f} during train)"
                + (f", peak CUDA {row['peak_cuda_mb']:.0f} MB" if row["peak_cuda_mb"] else ""),
                flush=True,
            )

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    print(
        f"\ndevice: {results['kimi'][0]['device']}; {args.repeats} alternating repeats, {args.steps} timed steps each"
    )
    for name in results:  # completion tokens trained on per second (each step trains on `batch_size` completions)
        for row in results[name]:
            row["tokens_per_s"] = args.batch_size * args.completion_length / row["step_s"]
    ratios = {"step time (median s/step)": ("step_s", "{:.4f}"), "completion tokens/s": ("tokens_per_s", "{:.0f}")}
    if results["kimi"][0]["peak_cuda_mb"]:
        ratios["peak CUDA memory (MB)"] = ("peak_cuda_mb", "{:.0f}")
    ratios["peak RSS (MB)"] = ("peak_rss_mb", "{:.0f}")
    ratios["RSS growth during train (MB)"] = ("rss_growth_mb", "{:.0f}")
    print(f"{'':32s} {'kimi':>10s} {'grpo':>10s} {'kimi/grpo':>10s}")
    for label, (key, fmt) in ratios.items():
        kimi, grpo = median("kimi", key), median("grpo", key)
        print(f"{label:32s} {fmt.format(kimi):>10s} {fmt.format(grpo):>10s} {kimi / grpo:>9.3f}x")


if __name__ == "__main__":
    main()
