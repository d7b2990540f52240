"""
Uniform vs prioritised vs curriculum sampling (Kimi k1.5 §2.3.4) on the embedded chain-sum task, same steps, several
seeds, one run.

For each seed: the demo's SFT warm start (`trl_kimi.demo.warm_start`, same data and settings), then one RL run per
strategy from that same warm start, evaluated on a held-out split every `--eval_every` steps (pass@1 averaged over
`--eval_samples` samples at temperature 1). The difficulty of a problem is its number of terms (2 to `--max_terms`).
Two curricula: `curriculum` is staged (three pools, fewest terms first, boundaries at 1/3 and 2/3 of `--rl_steps`);
`curriculum_linear` mixes the easier and the harder half, the harder half's share growing from 0 to 1 over the first
2/3 of the steps.

Reported per strategy: accuracy after `--rl_steps` steps (mean ± std over seeds) and the first evaluated step at which
held-out accuracy reaches `--target_accuracy` (mean over the seeds that reach it, and how many do).

```bash
python benchmarks/sampling.py                                   # full: 3 seeds x 4 strategies x 200 steps
python benchmarks/sampling.py --num_workers 6                   # the same, 6 runs side by side (>= 12 cores)
python benchmarks/sampling.py --seeds 0 --rl_steps 4 --sft_steps 20 --eval_every 2 --num_eval_prompts 20  # smoke
```
"""

import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from transformers import HfArgumentParser, TrainerCallback, set_seed  # noqa: E402

from trl_kimi import KimiMirrorDescentTrainer  # noqa: E402
from trl_kimi.demo import DemoArguments, rl_config, warm_start  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


STRATEGIES = ("uniform", "prioritized", "curriculum", "curriculum_linear")


@dataclass
class BenchmarkArguments(DemoArguments):
    """The demo's arguments (sizes of the warm start and the RL runs) plus the benchmark's own."""

    output_dir: str = field(default="runs/bench-sampling", metadata={"help": "Where results.json goes."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One warm start and 3 runs each."})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={"help": "Strategies to run."})
    eval_every: int = field(default=25, metadata={"help": "Held-out evaluation every this many RL steps."})
    target_accuracy: float = field(default=0.48, metadata={"help": "Accuracy whose first crossing is reported."})
    prioritized_epsilon: float = field(default=0.05, metadata={"help": "Floor of the prioritised weight."})
    num_workers: int = field(
        default=1, metadata={"help": "Processes running seeds and strategies side by side (cores are split evenly)."}
    )


class HeldOutEvaluation(TrainerCallback):
    """Held-out accuracy every `every` optimizer steps (and at the last one)."""

    def __init__(self, args: BenchmarkArguments, tokenizer, dataset):
        self.args, self.tokenizer, self.dataset, self.curve = args, tokenizer, dataset, []

    def on_step_end(self, train_args, state, control, model=None, **kwargs):
        if state.global_step % self.args.eval_every == 0 or state.global_step == state.max_steps:
            accuracy = arithmetic.evaluate_accuracy(
                model,
                self.tokenizer,
                self.dataset,
                num_samples=self.args.eval_samples,
                temperature=1.0,
                max_new_tokens=self.args.max_completion_length,
                seed=self.args.seeds[0],
            )["accuracy"]
            self.curve.append((state.global_step, accuracy))


def with_difficulty(dataset):
    # `a3b5c8d2=`: two characters per term, then `=`.
    return dataset.map(lambda row: {"difficulty": (len(row["prompt"]) - 1) // 2})


def _datasets(args: BenchmarkArguments, seed: int):
    sft = arithmetic.make_sft_dataset(
        args.num_sft_examples,
        seed=seed,
        max_terms=args.max_terms,
        long_fraction=args.long_fraction,
        long_slip_rate=args.long_slip_rate,
        short_slip_rate=args.short_slip_rate,
    )
    held_out = arithmetic.make_rl_dataset(args.num_eval_prompts, seed=seed + 1, max_terms=args.max_terms, exclude=sft)
    train = with_difficulty(
        arithmetic.make_rl_dataset(args.num_train_prompts, seed=seed + 2, max_terms=args.max_terms, exclude=held_out)
    )
    return sft, held_out, train


def _seed_args(args: BenchmarkArguments, seed: int) -> BenchmarkArguments:
    return BenchmarkArguments(**{**vars(args), "seed": seed, "output_dir": f"{args.output_dir}/seed{seed}"})


def warm_start_seed(args: BenchmarkArguments, seed: int) -> float:
    """The seed's SFT warm start, saved to `<output_dir>/seed<seed>/warm_start.pt`; returns its held-out accuracy."""
    set_seed(seed)
    seed_args = _seed_args(args, seed)
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=seed)
    sft, held_out, _ = _datasets(args, seed)
    warm_start(seed_args, model, tokenizer, sft)
    torch.save(model.state_dict(), Path(seed_args.output_dir) / "warm_start.pt")
    accuracy = arithmetic.evaluate_accuracy(
        model, tokenizer, held_out, num_samples=args.eval_samples, max_new_tokens=args.max_completion_length, seed=seed
    )["accuracy"]
    print(f"[bench] seed {seed}: warm start accuracy {accuracy:.3f}", flush=True)
    return accuracy


def run_strategy(args: BenchmarkArguments, seed: int, strategy: str) -> dict:
    """One RL run of `strategy` from the seed's saved warm start, with its held-out accuracy curve."""
    set_seed(seed)
    seed_args = _seed_args(args, seed)
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=seed)
    model.load_state_dict(torch.load(Path(seed_args.output_dir) / "warm_start.pt", weights_only=True))
    _, held_out, train = _datasets(args, seed)
    third = max(1, args.rl_steps // 3)
    config = rl_config(seed_args)
    config.output_dir = f"{seed_args.output_dir}/{strategy}"
    config.logging_steps = max(1, args.eval_every)
    config.sampling_strategy = strategy.split("_")[0]  # "curriculum_linear" -> "curriculum"
    config.prioritized_epsilon = args.prioritized_epsilon
    if strategy == "curriculum_linear":
        config.curriculum_schedule, config.curriculum_steps = "linear", [2 * third]
    else:
        config.curriculum_steps = [third, 2 * third]
    config._check_sampling()  # the fields were set after __post_init__
    evaluation = HeldOutEvaluation(seed_args, tokenizer, held_out)
    started = time.perf_counter()
    KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=arithmetic.addition_reward,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[evaluation],
    ).train()
    reached = [step for step, accuracy in evaluation.curve if accuracy >= args.target_accuracy]
    result = {
        "curve": evaluation.curve,
        "final_accuracy": evaluation.curve[-1][1],
        "steps_to_target": reached[0] if reached else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"[bench] seed {seed} {strategy}: {json.dumps(result)}", flush=True)
    return result


def _in_worker(threads: int, function, *arguments):
    torch.set_num_threads(threads)
    return function(*arguments)


def run_all(args: BenchmarkArguments) -> dict[int, dict]:
    """Warm starts, then every (seed, strategy) run; in `num_workers` processes when > 1 (same results as serial:
    each run starts from its seed's saved warm start with its own seeds)."""
    for seed in args.seeds:
        Path(_seed_args(args, seed).output_dir).mkdir(parents=True, exist_ok=True)
    runs = [(seed, strategy) for seed in args.seeds for strategy in args.strategies]
    if args.num_workers <= 1:
        starts = {seed: warm_start_seed(args, seed) for seed in args.seeds}
        finished = {run: run_strategy(args, *run) for run in runs}
    else:
        threads = max(1, (os.cpu_count() or 1) // args.num_workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.num_workers, mp_context=context) as pool:
            futures = {seed: pool.submit(_in_worker, threads, warm_start_seed, args, seed) for seed in args.seeds}
            starts = {seed: future.result() for seed, future in futures.items()}
            futures = {run: pool.submit(_in_worker, threads, run_strategy, args, *run) for run in runs}
            finished = {run: future.result() for run, future in futures.items()}
    return {
        seed: {"warm_start_accuracy": starts[seed], **{s: finished[(seed, s)] for s in args.strategies}}
        for seed in args.seeds
    }


def summarise(args: BenchmarkArguments, per_seed: dict[int, dict]) -> str:
    lines = [
        f"| strategy | accuracy after {args.rl_steps} steps (mean ± std, {len(per_seed)} seeds) | "
        f"steps to {args.target_accuracy:.2f} (mean of seeds reaching it) | seeds reaching it |",
        "|---|---|---|---|",
    ]
    for strategy in args.strategies:
        finals = [r[strategy]["final_accuracy"] for r in per_seed.values()]
        steps = [r[strategy]["steps_to_target"] for r in per_seed.values() if r[strategy]["steps_to_target"]]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        mean_steps = f"{statistics.fmean(steps):.0f}" if steps else "not reached"
        lines.append(
            f"| {strategy} | {statistics.fmean(finals):.3f} ± {std:.3f} | {mean_steps} | {len(steps)}/{len(finals)} |"
        )
    warm = statistics.fmean(r["warm_start_accuracy"] for r in per_seed.values())
    lines.append(f"\nWarm start accuracy (mean over seeds): {warm:.3f}.")
    return "\n".join(lines)


def main(args: BenchmarkArguments) -> dict:
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"Unknown strategies {sorted(unknown)}; choose from {STRATEGIES}.")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    per_seed = run_all(args)
    table = summarise(args, per_seed)
    print(table)
    (Path(args.output_dir) / "results.json").write_text(
        json.dumps({"per_seed": per_seed, "args": vars(args)}, indent=2)
    )
    return per_seed


if __name__ == "__main__":
    (benchmark_args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    main(benchmark_args)
