"""
Full rollouts vs budgeted partial rollouts (Kimi k1.5 §2.6) on a long-tailed answer-length workload, one run.

1. Workload: the embedded chain-sum task's tiny Qwen2, briefly SFT'd (TRL's `SFTTrainer`, the demo's `warm_start`) on
   answers whose lengths are long-tailed: mostly the bare answer (``=18``, 3-4 tokens), sometimes the chain of thought
   (``a3:3,b5:8,...=18``, 10-40 tokens), rarely the chain of thought written out twice (a re-check, up to ~80 tokens).
   The SFT model's sampled answer lengths on the RL prompts are measured and printed (median, p90, p99, p99/median).
2. Two RL runs from that same model, same prompts, same seed, same wall-clock budget (`--time_budget` seconds each):
   `full` (TRL's rollouts: every batch waits for its longest answer) and `partial` (`partial_rollout_budget`: rounds
   of at most `--budget` new tokens, unfinished answers continued at the next iteration).

Reported: wall time per iteration (median over iterations after the first) and its ratio full / partial (target
>= 1.8), the useful-token fraction of the partial run (tokens that end in a trained sample / tokens generated; target
>= 0.95; also without the tokens still in flight at the end), and the reward (exact-answer accuracy of the trained
samples) of both runs over the same wall time.

```bash
python benchmarks/partial_rollouts.py                                     # default: 8-10 min on a shared 2-core CPU
python benchmarks/partial_rollouts.py --time_budget 20 --sft_steps 60     # smoke
```
"""

import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import HfArgumentParser, TrainerCallback, set_seed  # noqa: E402

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer  # noqa: E402
from trl_kimi.demo import warm_start  # noqa: E402
from trl_kimi.generation import sample_completions  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="runs/bench-partial-rollouts", metadata={"help": "Where results.json goes."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the SFT and both RL runs."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the tiny Qwen2."})
    num_layers: int = field(default=2, metadata={"help": "Depth of the tiny Qwen2."})
    num_sft_examples: int = field(default=3000, metadata={"help": "Size of the long-tailed SFT set."})
    sft_steps: int = field(default=200, metadata={"help": "Optimizer steps of the SFT."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of the SFT (cosine)."})
    long_fraction: float = field(default=0.12, metadata={"help": "SFT answers with the chain of thought."})
    recheck_fraction: float = field(default=0.04, metadata={"help": "SFT answers with the chain of thought twice."})
    num_train_prompts: int = field(default=2000, metadata={"help": "RL prompts (same for both runs)."})
    num_generations: int = field(default=4, metadata={"help": "Samples per prompt, k."})
    prompts_per_batch: int = field(default=8, metadata={"help": "Prompts per generated batch."})
    max_completion_length: int = field(default=96, metadata={"help": "Overall maximum answer length (both runs)."})
    budget: int = field(default=16, metadata={"help": "Partial rollouts: new tokens per trajectory and iteration."})
    extra_groups: int = field(
        default=16, metadata={"help": "Partial rollouts: groups in flight on top of one batch (long answers need ~4)."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "RL learning rate (constant)."})
    time_budget: float = field(default=150.0, metadata={"help": "Wall-clock seconds of each RL run."})
    min_iterations: int = field(default=8, metadata={"help": "Iterations each run makes even past the budget."})
    num_length_samples: int = field(default=400, metadata={"help": "Samples measuring the length distribution."})
    threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    order: list[str] = field(
        default_factory=lambda: ["full", "partial"],
        metadata={"help": "Order of the two runs (on a shared machine, swap it to see the effect of other jobs)."},
    )


# ---------------------------------------------------------------------------------------------------- workload
def long_tailed_sft_dataset(args: BenchmarkArguments) -> Dataset:
    """Prompt/completion pairs whose completion lengths are long-tailed (see the module docstring)."""
    rng = random.Random(args.seed)
    rows = {"prompt": [], "completion": []}
    seen = set()
    while len(rows["prompt"]) < args.num_sft_examples:
        terms = [rng.randint(0, 9) for _ in range(rng.randint(arithmetic.MIN_TERMS, 7))]
        prompt = arithmetic.prompt_text(terms)
        if prompt in seen:
            continue
        seen.add(prompt)
        u = rng.random()
        if u < args.recheck_fraction:
            cot = arithmetic.long_solution(terms)
            completion = cot + "," + cot
        elif u < args.recheck_fraction + args.long_fraction:
            completion = arithmetic.long_solution(terms)
        else:
            completion = arithmetic.short_solution(terms)
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
    return Dataset.from_dict(rows)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def length_profile(model, tokenizer, prompts: list[str], args: BenchmarkArguments) -> dict[str, float]:
    samples = sample_completions(
        model, tokenizer, prompts, 1, max_new_tokens=args.max_completion_length, seed=args.seed, batch_size=100
    )
    lengths = [group[0].num_tokens for group in samples]
    median = statistics.median(lengths)
    p99 = percentile(lengths, 0.99)
    return {
        "median": median,
        "p90": percentile(lengths, 0.90),
        "p99": p99,
        "max": max(lengths),
        "p99_over_median": p99 / median,
        "truncated_fraction": sum(not group[0].finished for group in samples) / len(samples),
    }


# ---------------------------------------------------------------------------------------------------- RL runs
class WallClock(TrainerCallback):
    """Stops the run after `budget` seconds (and `min_iterations`); records the time and the trained batch's reward at each step."""

    def __init__(self, budget: float, min_iterations: int):
        self.budget, self.min_iterations, self.start, self.points = budget, min_iterations, None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_cpu = time.perf_counter(), time.process_time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            now = {"time": time.perf_counter() - self.start, "cpu": time.process_time() - self.start_cpu}
            self.points.append({**now, "step": state.global_step, **logs})

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start >= self.budget and len(self.points) >= self.min_iterations:
            control.should_training_stop = True


def run(args: BenchmarkArguments, name: str, model_dir: Path, dataset: Dataset) -> dict:
    set_seed(args.seed)
    tokenizer = arithmetic.make_tokenizer()
    model = type(arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers)).from_pretrained(model_dir)
    partial = (
        dict(
            partial_rollout_budget=args.budget,
            partial_rollout_max_length=args.max_completion_length,
            partial_rollout_extra_groups=args.extra_groups,
        )
        if name == "partial"
        else {}
    )
    config = KimiConfig(
        output_dir=str(Path(args.output_dir) / name),
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        max_steps=100_000,  # the wall clock stops the run
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=args.prompts_per_batch * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        **partial,
    )
    clock = WallClock(args.time_budget, args.min_iterations)
    trainer = KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=arithmetic.addition_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.train()
    # Differences between consecutive iterations: the first (warm-up, priming the buffer) is left out.
    per_iteration = {
        key: [b[key] - a[key] for a, b in zip(clock.points, clock.points[1:], strict=False)] for key in ("time", "cpu")
    }
    last = clock.points[-1]
    result = {
        "iterations": len(clock.points),
        "seconds_per_iteration": statistics.median(per_iteration["time"]),
        "mean_seconds_per_iteration": statistics.fmean(per_iteration["time"]),
        # CPU seconds of this process: the same measure, insensitive to other jobs on a shared machine.
        "cpu_seconds_per_iteration": statistics.median(per_iteration["cpu"]),
        "reward_curve": [(round(p["time"], 2), p["reward"]) for p in clock.points],
        "mean_completion_length": statistics.fmean(p["completions/mean_length"] for p in clock.points),
    }
    if name == "partial":
        result.update(
            {
                "useful_token_fraction": last["partial_rollouts/useful_token_fraction"],
                "useful_token_fraction_settled": last["partial_rollouts/useful_token_fraction_settled"],
                "masked_token_fraction": statistics.fmean(
                    p["partial_rollouts/masked_token_fraction"] for p in clock.points
                ),
                "resumed_fraction": statistics.fmean(p["partial_rollouts/resumed_fraction"] for p in clock.points),
                "rounds_per_iteration": statistics.fmean(p["partial_rollouts/rounds"] for p in clock.points),
                "continuations_max": max(p["partial_rollouts/continuations_max"] for p in clock.points),
            }
        )
    return result


def reward_at(curve: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Mean reward of the batches trained in the wall-time window [t0, t1)."""
    window = [r for t, r in curve if t0 <= t < t1]
    return statistics.fmean(window) if window else None


def summarise(args: BenchmarkArguments, lengths: dict, full: dict, partial: dict) -> str:
    ratio = full["seconds_per_iteration"] / partial["seconds_per_iteration"]
    lines = [
        f"Answer lengths of the SFT model (tokens, {args.num_length_samples} samples, temperature 1): median "
        f"{lengths['median']:.0f}, p90 {lengths['p90']:.0f}, p99 {lengths['p99']:.0f}, max {lengths['max']:.0f}; "
        f"p99/median = {lengths['p99_over_median']:.1f}",
        "",
        "| run | iterations in budget | wall s / iteration (median) | CPU s / iteration (median) | mean length | "
        "useful-token fraction |",
        "|---|---|---|---|---|---|",
        f"| full rollouts | {full['iterations']} | {full['seconds_per_iteration']:.3f} | "
        f"{full['cpu_seconds_per_iteration']:.3f} | {full['mean_completion_length']:.1f} | 1.000 |",
        f"| partial (budget {args.budget}) | {partial['iterations']} | {partial['seconds_per_iteration']:.3f} | "
        f"{partial['cpu_seconds_per_iteration']:.3f} | {partial['mean_completion_length']:.1f} | "
        f"{partial['useful_token_fraction']:.3f} ({partial['useful_token_fraction_settled']:.3f} without tokens in "
        "flight) |",
        "",
        f"Wall time per iteration, full / partial: {ratio:.2f}x (target >= 1.8); CPU time per iteration: "
        f"{full['cpu_seconds_per_iteration'] / partial['cpu_seconds_per_iteration']:.2f}x",
        f"Partial: {partial['rounds_per_iteration']:.2f} rounds / iteration, resumed fraction "
        f"{partial['resumed_fraction']:.3f}, masked (stale) token fraction {partial['masked_token_fraction']:.3f}, "
        f"max continuations {partial['continuations_max']:.0f}",
        "",
        "Reward (accuracy of trained samples) over the same wall time:",
        "| wall time (s) | full | partial |",
        "|---|---|---|",
    ]
    edges = [args.time_budget * i / 6 for i in range(7)]
    for t0, t1 in zip(edges, edges[1:], strict=False):
        f, p = reward_at(full["reward_curve"], t0, t1), reward_at(partial["reward_curve"], t0, t1)
        lines.append(
            f"| {t0:.0f}-{t1:.0f} | {'-' if f is None else f'{f:.3f}'} | {'-' if p is None else f'{p:.3f}'} |"
        )
    return "\n".join(lines)


def main(args: BenchmarkArguments) -> dict:
    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    start = time.perf_counter()

    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=args.seed)
    sft = long_tailed_sft_dataset(args)
    warm_start(args, model, tokenizer, sft)
    model_dir = out / "sft_model"
    model.save_pretrained(model_dir)
    dataset = arithmetic.make_rl_dataset(args.num_train_prompts, seed=args.seed + 1, exclude=sft)
    lengths = length_profile(model, tokenizer, dataset["prompt"][: args.num_length_samples], args)
    print(f"SFT done in {time.perf_counter() - start:.0f} s; lengths {lengths}", flush=True)

    results = {"args": asdict(args), "lengths": lengths}
    for name in args.order:
        results[name] = run(args, name, model_dir, dataset)
        print(f"{name}: {results[name]['iterations']} iterations", flush=True)
    results["ratio"] = results["full"]["seconds_per_iteration"] / results["partial"]["seconds_per_iteration"]
    summary = summarise(args, lengths, results["full"], results["partial"])
    results["total_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(summary)
    print(f"\nTotal {results['total_seconds']:.0f} s; results in {out / 'results.json'}")
    return results


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    main(arguments)
