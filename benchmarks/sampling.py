"""
Uniform vs prioritised vs curriculum sampling (Kimi k1.5 §2.3.4) on the embedded chain-sum task, same steps, several
seeds, one run.

For each seed: the demo's SFT warm start (`trl_kimi.demo.warm_start`, same data and settings), then one RL run per
strategy from that same warm start, evaluated on a held-out split every `--eval_every` steps (pass@1 averaged over
`--eval_samples` samples at temperature 1). The difficulty of a problem is its number of terms (2 to `--max_terms`).
Two curricula: `curriculum` is staged (three pools, fewest terms first, boundaries at 1/3 and 2/3 of `--rl_steps`);
`curriculum_linear` mixes the easier and the harder half, the harder half's share growing from 0 to 1 over the first
2/3 of the steps.

Issue 28 adds three: `dynamic` (uniform with `dynamic_sampling=True`: groups whose rewards are all equal are replaced
by fresh ones, at most `dynamic_sampling_max_tries` rounds per batch), `prioritized_dynamic` (both), and `curated`
(uniform on the training set after `trl_kimi.curation.curate` with the warm start: guessable prompts dropped, i.e. any
of 8 answer-only tries (4 tokens: `=NN` and EOS) correct; saved to `<seed>/curated_train.json`). Each curve point also
records the completion tokens generated so far (every try of dynamic sampling counted) and the seconds since the start.

Reported per strategy: accuracy after `--rl_steps` steps (mean ± std over seeds) and the first evaluated step at which
held-out accuracy reaches `--target_accuracy` (mean over the seeds that reach it, and how many do).

`--train_set wide_spread` trains on the case the report's argument is about, a wide spread of difficulty: the warm
start's pass rate is estimated on a pool of `--pool_size` problems (`--pool_samples` samples each, temperature 1), and
the training set is made of problems it always solves (pass rate ≥ `--solved_rate`), problems it never solves (0) and
some in between, in the proportions `--spread_fractions` (saved to `<seed>/wide_spread_train.json`, reused). The
held-out split is unchanged. Difficulty for the curricula is then 1 − the estimated pass rate.

```bash
python benchmarks/sampling.py                                   # full: 3 seeds x 4 strategies x 200 steps
python benchmarks/sampling.py --num_workers 6                   # the same, 6 runs side by side (>= 12 cores)
python benchmarks/sampling.py --seeds 0 --rl_steps 4 --sft_steps 20 --eval_every 2 --num_eval_prompts 20  # smoke
python benchmarks/sampling.py --train_set wide_spread --strategies uniform prioritized --rl_steps 60 --eval_every 10
python benchmarks/sampling.py --train_set wide_spread --seeds 0 1 --rl_steps 30 --eval_every 10 --num_workers 2 \
    --strategies uniform prioritized dynamic prioritized_dynamic curated   # issue 28, reduced
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
from datasets import Dataset  # noqa: E402
from transformers import HfArgumentParser, TrainerCallback, set_seed  # noqa: E402

from trl_kimi import KimiMirrorDescentTrainer  # noqa: E402
from trl_kimi.curation import CurationConfig, curate, estimate_pass_rates  # noqa: E402
from trl_kimi.demo import DemoArguments, rl_config, warm_start  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


STRATEGIES = ("uniform", "prioritized", "curriculum", "curriculum_linear", "dynamic", "prioritized_dynamic", "curated")
TRAIN_SETS = ("terms", "wide_spread")


@dataclass
class BenchmarkArguments(DemoArguments):
    """The demo's arguments (sizes of the warm start and the RL runs) plus the benchmark's own."""

    output_dir: str = field(default="runs/bench-sampling", metadata={"help": "Where results.json goes."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One warm start and 3 runs each."})
    strategies: list[str] = field(
        default_factory=lambda: list(STRATEGIES[:4]),  # the earlier runs' four; issue 28's three are asked for by name
        metadata={"help": f"Strategies to run, of {STRATEGIES}."},
    )
    eval_every: int = field(default=25, metadata={"help": "Held-out evaluation every this many RL steps."})
    target_accuracy: float = field(default=0.48, metadata={"help": "Accuracy whose first crossing is reported."})
    prioritized_epsilon: float = field(default=0.05, metadata={"help": "Floor of the prioritised weight."})
    num_workers: int = field(
        default=1, metadata={"help": "Processes running seeds and strategies side by side (cores are split evenly)."}
    )
    train_set: str = field(
        default="terms",
        metadata={
            "help": "'terms': the demo's RL split, difficulty = number of terms. 'wide_spread': problems the warm "
            "start always / never / sometimes solves, difficulty = 1 - its pass rate.",
            "choices": list(TRAIN_SETS),
        },
    )
    pool_size: int = field(default=2000, metadata={"help": "wide_spread: problems whose pass rate is estimated."})
    pool_samples: int = field(default=8, metadata={"help": "wide_spread: samples per pool problem."})
    solved_rate: float = field(default=0.875, metadata={"help": "wide_spread: pass rate counted as always solved."})
    spread_fractions: list[float] = field(
        default_factory=lambda: [0.4, 0.4, 0.2],
        metadata={"help": "wide_spread: shares of always-solved, never-solved and in-between problems."},
    )


class HeldOutEvaluation(TrainerCallback):
    """Held-out accuracy every `every` optimizer steps (and at the last one)."""

    def __init__(self, args: BenchmarkArguments, tokenizer, dataset, strategy: str = "", reward=None):
        self.args, self.tokenizer, self.dataset, self.curve = args, tokenizer, dataset, []
        self.strategy, self.reward, self.started = strategy, reward, time.perf_counter()
        self.costs = []  # (generated completion tokens, seconds) at each evaluation

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
            tokens = self.reward.tokens if self.reward is not None else None
            self.costs.append((tokens, round(time.perf_counter() - self.started, 1)))
            # One line per evaluation, so a run cut short still leaves its curve in the log.
            print(
                f"[bench] seed {train_args.seed} {self.strategy} step {state.global_step}: {accuracy:.4f}", flush=True
            )


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
    if args.train_set == "wide_spread":
        saved = Path(_seed_args(args, seed).output_dir) / "wide_spread_train.json"
        train = Dataset.from_list(json.loads(saved.read_text())) if saved.exists() else None
    else:
        train = with_difficulty(
            arithmetic.make_rl_dataset(
                args.num_train_prompts, seed=seed + 2, max_terms=args.max_terms, exclude=held_out
            )
        )
    return sft, held_out, train


def wide_spread_train_set(args: BenchmarkArguments, seed: int, model, tokenizer, held_out) -> Dataset:
    """Problems the warm start always solves, never solves and sometimes solves, from its estimated pass rates."""
    pool = arithmetic.make_rl_dataset(args.pool_size, seed=seed + 2, max_terms=args.max_terms, exclude=held_out)
    pool = estimate_pass_rates(
        model, tokenizer, pool, arithmetic.addition_reward, num_samples=args.pool_samples,
        max_new_tokens=args.max_completion_length, batch_size=256, seed=seed,
    )  # fmt: skip
    rates = pool["pass_rate"]
    groups = {
        "solved": [i for i, r in enumerate(rates) if r >= args.solved_rate],
        "unsolved": [i for i, r in enumerate(rates) if r == 0],
        "between": [i for i, r in enumerate(rates) if 0 < r < args.solved_rate],
    }
    # The shares are kept even when a group is short (a well-trained warm start solves few problems always and fails
    # few always): the set shrinks until every group can fill its share, rather than filling up with in-between ones.
    total = min(
        [args.num_train_prompts]
        + [int(len(rows) / share) for rows, share in zip(groups.values(), args.spread_fractions) if share > 0]
    )
    wanted = [round(share * total) for share in args.spread_fractions]
    picked = [i for (name, rows), n in zip(groups.items(), wanted) for i in rows[:n]]
    counts = {name: min(len(rows), n) for (name, rows), n in zip(groups.items(), wanted)}
    print(
        f"[bench] seed {seed}: wide-spread pool { ({k: len(v) for k, v in groups.items()}) }, kept {counts}",
        flush=True,
    )
    return pool.select(sorted(picked)).map(lambda row: {"difficulty": 1.0 - row["pass_rate"]})


def curated_train_set(args: BenchmarkArguments, seed: int, model, tokenizer, train: Dataset) -> Dataset:
    """The training set curated with the warm start (trl_kimi.curation.curate): the report's guessing test on the
    chain-sum task (no instruction, a 4-token cap: only the short answer `=NN` fits) and new pass rates."""
    started = time.perf_counter()
    rows = train.remove_columns([c for c in ("pass_rate", "difficulty") if c in train.column_names])
    config = CurationConfig(
        solution_column="answer", guess_instruction="", guess_max_new_tokens=4, num_samples=args.pool_samples,
        max_new_tokens=args.max_completion_length, batch_size=256, seed=seed,
    )  # fmt: skip
    result = curate(rows, model, tokenizer, arithmetic.addition_reward, config)
    summary = {k: v for k, v in result.summary.items() if k != "config"}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (Path(_seed_args(args, seed).output_dir) / "curated_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[bench] seed {seed}: curated {summary['num_kept']} of {summary['num_rows']}: {summary}", flush=True)
    return result.kept


def _seed_args(args: BenchmarkArguments, seed: int) -> BenchmarkArguments:
    return BenchmarkArguments(**{**vars(args), "seed": seed, "output_dir": f"{args.output_dir}/seed{seed}"})


def warm_start_seed(args: BenchmarkArguments, seed: int) -> float:
    """The seed's SFT warm start, saved to `<output_dir>/seed<seed>/warm_start.pt` (reused when that file exists, so an
    interrupted benchmark restarts from its warm starts); returns its held-out accuracy."""
    set_seed(seed)
    seed_args = _seed_args(args, seed)
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=seed)
    sft, held_out, train = _datasets(args, seed)
    saved = Path(seed_args.output_dir) / "warm_start.pt"
    if saved.exists():
        model.load_state_dict(torch.load(saved, weights_only=True))
    else:
        warm_start(seed_args, model, tokenizer, sft)
        torch.save(model.state_dict(), saved)
    if args.train_set == "wide_spread" and train is None:
        train = wide_spread_train_set(args, seed, model, tokenizer, held_out)
        (Path(seed_args.output_dir) / "wide_spread_train.json").write_text(json.dumps(train.to_list()))
    curated_file = Path(seed_args.output_dir) / "curated_train.json"
    if "curated" in args.strategies and not curated_file.exists():
        curated = curated_train_set(args, seed, model, tokenizer, train)
        curated_file.write_text(json.dumps(curated.to_list()))
    accuracy = arithmetic.evaluate_accuracy(
        model, tokenizer, held_out, num_samples=args.eval_samples, max_new_tokens=args.max_completion_length, seed=seed
    )["accuracy"]
    print(f"[bench] seed {seed}: warm start accuracy {accuracy:.3f}", flush=True)
    return accuracy


class CountingReward:
    """`addition_reward` that also counts the completion tokens it is shown (every generated sample is scored once,
    the refills of dynamic sampling included)."""

    __name__ = "addition_reward"

    def __init__(self):
        self.tokens = 0

    def __call__(self, completions, completion_ids=None, **kwargs):
        self.tokens += sum(len(ids) for ids in completion_ids or [])
        return arithmetic.addition_reward(completions, completion_ids=completion_ids, **kwargs)


def run_strategy(args: BenchmarkArguments, seed: int, strategy: str) -> dict:
    """One RL run of `strategy` from the seed's saved warm start, with its held-out accuracy curve."""
    set_seed(seed)
    seed_args = _seed_args(args, seed)
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=seed)
    model.load_state_dict(torch.load(Path(seed_args.output_dir) / "warm_start.pt", weights_only=True))
    _, held_out, train = _datasets(args, seed)
    if strategy == "curated":
        train = Dataset.from_list(json.loads((Path(seed_args.output_dir) / "curated_train.json").read_text()))
        if len(train) < args.prompts_per_batch:
            print(f"[bench] seed {seed} curated: only {len(train)} problems kept, fewer than a batch", flush=True)
            return {"curve": [], "costs": [], "final_accuracy": float("nan"), "steps_to_target": None, "seconds": 0.0,
                    "generated_tokens": 0, "train_size": len(train)}  # fmt: skip
    third = max(1, args.rl_steps // 3)
    config = rl_config(seed_args)
    config.output_dir = f"{seed_args.output_dir}/{strategy}"
    config.logging_steps = max(1, args.eval_every)
    # "curriculum_linear" -> "curriculum", "prioritized_dynamic" -> "prioritized"; dynamic and curated are uniform
    config.sampling_strategy = {"dynamic": "uniform", "curated": "uniform"}.get(strategy, strategy.split("_")[0])
    config.dynamic_sampling = strategy.endswith("dynamic")
    config.prioritized_epsilon = args.prioritized_epsilon
    if strategy == "curriculum_linear":
        config.curriculum_schedule, config.curriculum_steps = "linear", [2 * third]
    else:
        config.curriculum_steps = [third, 2 * third]
    config._check_sampling()  # the fields were set after __post_init__
    config._check_dynamic_sampling()
    reward = CountingReward()
    evaluation = HeldOutEvaluation(seed_args, tokenizer, held_out, strategy, reward)
    started = time.perf_counter()
    KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[evaluation],
    ).train()
    reached = [step for step, accuracy in evaluation.curve if accuracy >= args.target_accuracy]
    result = {
        "curve": evaluation.curve,
        "costs": evaluation.costs,
        "final_accuracy": evaluation.curve[-1][1],
        "steps_to_target": reached[0] if reached else None,
        "seconds": round(time.perf_counter() - started, 1),
        "generated_tokens": reward.tokens,
        "train_size": len(train),
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
        f"steps to {args.target_accuracy:.2f} (mean of seeds reaching it) | seeds reaching it | generated tokens to it "
        "(mean) | seconds to it (mean) | generated tokens, whole run (mean) | seconds, whole run (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy in args.strategies:
        runs = [r[strategy] for r in per_seed.values()]
        finals = [r["final_accuracy"] for r in runs]
        # first evaluation at or above the target, per run (from the curve, so a table can use another target)
        firsts = [next((i for i, (_, a) in enumerate(r["curve"]) if a >= args.target_accuracy), None) for r in runs]
        reached = [(r, i) for r, i in zip(runs, firsts) if i is not None]
        std = statistics.stdev(finals) if len(finals) > 1 else 0.0
        if reached:
            steps = f"{statistics.fmean(r['curve'][i][0] for r, i in reached):.0f}"
            tokens = f"{statistics.fmean(r['costs'][i][0] for r, i in reached):,.0f}"
            seconds = f"{statistics.fmean(r['costs'][i][1] for r, i in reached):.0f}"
        else:
            steps = tokens = seconds = "not reached"
        all_tokens = statistics.fmean(r["generated_tokens"] for r in runs)
        all_seconds = statistics.fmean(r["seconds"] for r in runs)
        lines.append(
            f"| {strategy} | {statistics.fmean(finals):.3f} ± {std:.3f} | {steps} | {len(reached)}/{len(finals)} | "
            f"{tokens} | {seconds} | {all_tokens:,.0f} | {all_seconds:.0f} |"
        )
    warm = statistics.fmean(r["warm_start_accuracy"] for r in per_seed.values())
    lines.append(f"\nWarm start accuracy (mean over seeds): {warm:.3f}.")
    return "\n".join(lines)


def plot_curves(args: BenchmarkArguments, per_seed: dict[int, dict], path: Path) -> None:
    """Held-out pass@1 over RL steps (mean over seeds, the range shaded) and over generated completion tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_tokens) = plt.subplots(1, 2, figsize=(11, 4))
    warm = statistics.fmean(r["warm_start_accuracy"] for r in per_seed.values())
    for strategy in args.strategies:
        pairs = [(r["warm_start_accuracy"], r[strategy]) for r in per_seed.values() if r[strategy]["curve"]]
        if not pairs:
            continue
        runs = [run for _, run in pairs]
        steps = [0] + [step for step, _ in runs[0]["curve"]]
        curves = [[start] + [a for _, a in run["curve"]] for start, run in pairs]
        mean = [statistics.fmean(points) for points in zip(*curves)]
        line = by_step.plot(steps, mean, marker="o", label=strategy)[0]
        by_step.fill_between(steps, [min(p) for p in zip(*curves)], [max(p) for p in zip(*curves)], alpha=0.12,
                             color=line.get_color())  # fmt: skip
        tokens = [0] + [statistics.fmean(points) for points in zip(*[[t for t, _ in run["costs"]] for run in runs])]
        by_tokens.plot(tokens, mean, marker="o", label=strategy, color=line.get_color())
    for ax, label in ((by_step, "RL optimizer step"), (by_tokens, "generated completion tokens (mean over seeds)")):
        ax.axhline(warm, color="gray", linestyle=":", linewidth=1)
        ax.set(xlabel=label, ylabel="held-out pass@1")
        ax.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    by_step.set_title(f"{args.train_set} set, {len(per_seed)} seeds (mean, range shaded)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: BenchmarkArguments) -> dict:
    unknown = set(args.strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"Unknown strategies {sorted(unknown)}; choose from {STRATEGIES}.")
    if args.train_set not in TRAIN_SETS:
        raise ValueError(f"Unknown train_set {args.train_set!r}; choose from {TRAIN_SETS}.")
    if len(args.spread_fractions) != 3 or min(args.spread_fractions) < 0:
        raise ValueError(
            f"spread_fractions must be 3 shares >= 0 (always solved, never solved, in between), got "
            f"{args.spread_fractions}."
        )
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    per_seed = run_all(args)
    table = summarise(args, per_seed)
    print(table)
    (Path(args.output_dir) / "results.json").write_text(
        json.dumps({"per_seed": per_seed, "args": vars(args)}, indent=2)
    )
    plot_curves(args, per_seed, Path(args.output_dir) / "curves.png")
    return per_seed


if __name__ == "__main__":
    (benchmark_args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    main(benchmark_args)
