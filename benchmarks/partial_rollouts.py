"""
Full rollouts vs budgeted partial rollouts (Kimi k1.5 §2.6) on a long-tailed answer-length workload, one run.

1. Workload: the embedded chain-sum task's tiny Qwen2, briefly SFT'd (TRL's `SFTTrainer`, the demo's `warm_start`) on
   answers whose lengths are long-tailed: mostly the bare answer (``=18``, 3-4 tokens), sometimes the chain of thought
   (``a3:3,b5:8,...=18``, 10-40 tokens), rarely the chain of thought written out twice (a re-check, up to ~80 tokens).
   The SFT model's sampled answer lengths on the RL prompts are measured and printed (median, p90, p99, p99/median).
2. RL runs from that same model, same prompts, same seed, same wall-clock budget (`--time_budget` seconds each):
   `full` (TRL's rollouts: every batch waits for its longest answer), `partial` (`partial_rollout_budget` with every
   other setting at its default: each answer advances at most `--budget` new tokens per iteration, new prompts fill
   the batch, unfinished answers continued at the next iteration, every token in the loss),
   `partial_rounds_until_full` (rounds of the budget repeat within an iteration until the batch is full) and
   `partial_exclude_stale` (the default schedule, only each answer's newest segment in the loss). The runs are **interleaved** in one process: each run is a thread, and a baton lets exactly one of them
   make one training iteration at a time, in turn, so a shared machine's load falls on all of them alike; each run's
   clock counts only its own turns.

Reported: wall time per iteration (mean over the iterations after each run's first: with partial rollouts some
iterations need no generation at all, which a median would flatter) and the ratio full / partial (target >= 1.8), the
useful-token fraction of the partial runs (tokens that end in a trained sample / tokens generated; target >= 0.95;
also without the tokens still in flight at the end), and the reward (exact-answer accuracy of the trained samples) of
every run over the same wall time.

```bash
python benchmarks/partial_rollouts.py                                     # default: SFT + 3 x 120 s of RL
python benchmarks/partial_rollouts.py --time_budget 20 --sft_steps 60     # smoke
python benchmarks/partial_rollouts.py --learning_rate 0 --runs full partial  # the rollouts alone, policy held fixed
```
"""

import json
import os
import random
import statistics
import threading
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


# name -> partial-rollout settings on top of the common config (None: TRL's full rollouts)
RUNS = {
    "full": None,
    # every partial-rollout setting at its default: the report's budget per iteration, every token in the loss
    "partial": {},
    # the alternative schedule: rounds of the budget repeat within an iteration until the batch is full
    "partial_rounds_until_full": {"partial_rollout_schedule": "rounds_until_full"},
    # the option: only each trajectory's newest segment counts in the loss
    "partial_exclude_stale": {"partial_rollout_stale_tokens_in_loss": False},
}


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
    budget: int = field(default=8, metadata={"help": "Partial rollouts: new tokens per trajectory and iteration."})
    extra_groups: int | None = field(
        default=None,
        metadata={"help": "Partial rollouts: groups in flight on top of one batch; unset = KimiConfig's default."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "RL learning rate (constant)."})
    time_budget: float = field(default=120.0, metadata={"help": "Wall-clock seconds of each RL run (its turns)."})
    min_iterations: int = field(default=8, metadata={"help": "Iterations each run makes even past the budget."})
    num_length_samples: int = field(default=400, metadata={"help": "Samples measuring the length distribution."})
    threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    reuse_sft: bool = field(
        default=False, metadata={"help": "Load output_dir/sft_model from an earlier run instead of repeating the SFT."}
    )
    runs: list[str] = field(
        default_factory=lambda: list(RUNS),
        metadata={
            "help": f"Runs, in this order (on a shared machine, reorder them to see the effect of other jobs): {RUNS}."
        },
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
class Baton:
    """Lets one run at a time make a training iteration, in turn (round robin over the runs not yet done)."""

    def __init__(self, names: list[str]):
        self.names, self.done, self.holder = list(names), set(), names[0]
        self.condition = threading.Condition()

    def wait(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.holder == name)

    def pass_on(self, name: str, finished: bool = False) -> None:
        with self.condition:
            if finished:
                self.done.add(name)
            i = self.names.index(name)
            following = self.names[i + 1 :] + self.names[: i + 1]
            self.holder = next((n for n in following if n not in self.done), None)
            self.condition.notify_all()


class WallClock(TrainerCallback):
    """Counts the run's own time (its turns of the baton), stops it after `budget` seconds (and `min_iterations`),
    and records the time and the trained batch's reward at each step."""

    def __init__(self, budget: float, min_iterations: int, name: str, baton: Baton):
        self.budget, self.min_iterations, self.name, self.baton = budget, min_iterations, name, baton
        self.points, self.elapsed, self.cpu, self.steps = [], 0.0, 0.0, 0
        self.turn_start = self.turn_start_cpu = None

    def _start_turn(self) -> None:
        self.turn_start, self.turn_start_cpu = time.perf_counter(), time.process_time()

    def _end_turn(self) -> None:
        self.elapsed += time.perf_counter() - self.turn_start
        self.cpu += time.process_time() - self.turn_start_cpu

    def now(self) -> dict[str, float]:
        return {
            "time": self.elapsed + time.perf_counter() - self.turn_start,
            "cpu": self.cpu + time.process_time() - self.turn_start_cpu,
        }

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_turn()  # the thread holds the baton since before `train()`

    def on_step_begin(self, args, state, control, **kwargs):
        if self.steps:  # one iteration per turn: hand over, wait for the next turn
            self._end_turn()
            self.baton.pass_on(self.name)
            self.baton.wait(self.name)
            self._start_turn()
        self.steps += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.points.append({**self.now(), "step": state.global_step, **logs})

    def on_step_end(self, args, state, control, **kwargs):
        if self.now()["time"] >= self.budget and len(self.points) >= self.min_iterations:
            control.should_training_stop = True


def make_trainer(
    args: BenchmarkArguments, name: str, model_dir: Path, dataset: Dataset, clock: WallClock
) -> KimiMirrorDescentTrainer:
    set_seed(args.seed)
    tokenizer = arithmetic.make_tokenizer()
    model = type(arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers)).from_pretrained(model_dir)
    partial = (
        {}
        if RUNS[name] is None
        else dict(
            partial_rollout_budget=args.budget,
            partial_rollout_max_length=args.max_completion_length,
            **({} if args.extra_groups is None else {"partial_rollout_extra_groups": args.extra_groups}),
            **RUNS[name],
        )
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
    return KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=arithmetic.addition_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )


def run_interleaved(args: BenchmarkArguments, model_dir: Path, dataset: Dataset) -> dict[str, dict]:
    """Every run of `args.runs` in its own thread, one training iteration per turn of the baton."""
    baton = Baton(args.runs)
    clocks = {name: WallClock(args.time_budget, args.min_iterations, name, baton) for name in args.runs}
    trainers = {name: make_trainer(args, name, model_dir, dataset, clocks[name]) for name in args.runs}
    errors: dict[str, BaseException] = {}

    def train(name: str) -> None:
        baton.wait(name)
        try:
            trainers[name].train()
        except BaseException as error:  # re-raised in the main thread; the other runs must not wait for this one
            errors[name] = error
        finally:
            baton.pass_on(name, finished=True)

    threads = [threading.Thread(target=train, args=(name,), name=name) for name in args.runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"The {name} run failed") from error
    return {name: summarise_run(name, clocks[name]) for name in args.runs}


def summarise_run(name: str, clock: WallClock) -> dict:
    # Mean over the iterations after the first (warm-up, priming the buffer): with partial rollouts an iteration may
    # need no generation at all (its groups finished earlier), so a median would flatter it; the mean is what a run
    # of many iterations pays.
    first, last = clock.points[0], clock.points[-1]
    steps = len(clock.points) - 1
    result = {
        "iterations": len(clock.points),
        "seconds_per_iteration": (last["time"] - first["time"]) / steps,
        # CPU seconds of the process during this run's turns: the same measure, less sensitive to other jobs.
        "cpu_seconds_per_iteration": (last["cpu"] - first["cpu"]) / steps,
        "reward_curve": [(round(p["time"], 2), p["reward"]) for p in clock.points],
        "mean_completion_length": statistics.fmean(p["completions/mean_length"] for p in clock.points),
    }
    if RUNS[name] is not None:
        result.update(
            {
                "useful_token_fraction": last["partial_rollouts/useful_token_fraction"],
                "useful_token_fraction_settled": last["partial_rollouts/useful_token_fraction_settled"],
                "masked_token_fraction": statistics.fmean(
                    p["partial_rollouts/masked_token_fraction"] for p in clock.points
                ),
                "resumed_fraction": statistics.fmean(p["partial_rollouts/resumed_fraction"] for p in clock.points),
                "rounds_per_iteration": statistics.fmean(p["partial_rollouts/rounds"] for p in clock.points),
                "over_budget_rounds_per_iteration": statistics.fmean(
                    p["partial_rollouts/over_budget_rounds"] for p in clock.points
                ),
                "continuations_max": max(p["partial_rollouts/continuations_max"] for p in clock.points),
            }
        )
    return result


def reward_at(curve: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Mean reward of the batches trained in the wall-time window [t0, t1)."""
    window = [r for t, r in curve if t0 <= t < t1]
    return statistics.fmean(window) if window else None


def summarise(args: BenchmarkArguments, lengths: dict, results: dict[str, dict]) -> str:
    full = results["full"]
    lines = [
        f"Answer lengths of the SFT model (tokens, {args.num_length_samples} samples, temperature 1): median "
        f"{lengths['median']:.0f}, p90 {lengths['p90']:.0f}, p99 {lengths['p99']:.0f}, max {lengths['max']:.0f}; "
        f"p99/median = {lengths['p99_over_median']:.1f}",
        "",
        "| run | iterations | wall s / iteration | full / this | CPU s / iteration | mean length | rounds / iteration "
        "| over-budget rounds / iteration | stale tokens masked | useful-token fraction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        label = "full rollouts" if RUNS[name] is None else f"{name} (budget {args.budget})"
        partial = RUNS[name] is not None
        useful = (
            f"{r['useful_token_fraction']:.3f} ({r['useful_token_fraction_settled']:.3f} without tokens in flight)"
            if partial
            else "1.000"
        )
        lines.append(
            f"| {label} | {r['iterations']} | {r['seconds_per_iteration']:.3f} | "
            f"{full['seconds_per_iteration'] / r['seconds_per_iteration']:.2f}x | {r['cpu_seconds_per_iteration']:.3f} | "
            f"{r['mean_completion_length']:.1f} | {r['rounds_per_iteration']:.2f} | "
            f"{r['over_budget_rounds_per_iteration']:.2f} | {r['masked_token_fraction']:.3f} | {useful} |"
            if partial
            else f"| {label} | {r['iterations']} | {r['seconds_per_iteration']:.3f} | 1.00x | "
            f"{r['cpu_seconds_per_iteration']:.3f} | {r['mean_completion_length']:.1f} | - | - | - | {useful} |"
        )
    lines += [
        "",
        "Wall time per iteration: mean over each run's iterations after its first. Target: full / partial >= 1.8x, "
        "useful-token fraction >= 0.95.",
        "",
        "Reward (accuracy of trained samples) over the same wall time:",
        "| wall time (s) | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    edges = [args.time_budget * i / 6 for i in range(7)]
    for t0, t1 in zip(edges, edges[1:], strict=False):
        cells = [reward_at(r["reward_curve"], t0, t1) for r in results.values()]
        lines.append(f"| {t0:.0f}-{t1:.0f} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
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
    model_dir = out / "sft_model"
    if args.reuse_sft and (model_dir / "config.json").is_file():
        model = type(model).from_pretrained(model_dir)  # the same SFT, from an earlier run with the same arguments
    else:
        warm_start(args, model, tokenizer, sft)
        model.save_pretrained(model_dir)
    dataset = arithmetic.make_rl_dataset(args.num_train_prompts, seed=args.seed + 1, exclude=sft)
    lengths = length_profile(model, tokenizer, dataset["prompt"][: args.num_length_samples], args)
    print(f"SFT done in {time.perf_counter() - start:.0f} s; lengths {lengths}", flush=True)

    unknown = set(args.runs) - set(RUNS)
    if unknown or "full" not in args.runs:
        raise ValueError(f"--runs takes names from {list(RUNS)}, 'full' included; got {args.runs}.")
    runs = run_interleaved(args, model_dir, dataset)
    print({name: r["iterations"] for name, r in runs.items()}, "iterations", flush=True)
    summary = summarise(args, lengths, runs)
    ratios = {n: runs["full"]["seconds_per_iteration"] / r["seconds_per_iteration"] for n, r in runs.items()}
    results = {"args": asdict(args), "lengths": lengths, **runs, "ratios": ratios}
    results["total_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(summary)
    print(f"\nTotal {results['total_seconds']:.0f} s; results in {out / 'results.json'}")
    return results


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    main(arguments)
