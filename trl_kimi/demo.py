r"""
The main job on the embedded default: Kimi k1.5 mirror-descent RL on a tiny model, offline, on CPU, in minutes.

1. Build a character-level tokenizer and a small Qwen2 from scratch (`trl_kimi.tasks.arithmetic`).
2. Warm start: a short SFT with TRL's `SFTTrainer` on a mix of long (chain of thought) and short answers, as
   imperfect as real demonstrations: half of the short answers are one too high.
3. Measure accuracy on a held-out split (pass@1 averaged over samples at the RL temperature, and greedy) and length.
4. RL with [`KimiMirrorDescentTrainer`], the task's exact verifier as reward and the recipe's length penalty
   ([`LengthPenaltyReward`], switched on after a warm-up: the report trains without it first).
5. Measure again; save the model, its tokenizer and a model card; plot before/after and the training curves.

Written to `--output_dir`: `model/` (weights, tokenizer, card with the results), `warm_start/` (the SFT model),
`training_curves.png` and `results.json`. One progress bar covers the whole run.

```bash
python -m trl_kimi.demo --output_dir runs/demo
```

Every flag has a default that fits 2 CPU cores; `python -m trl_kimi.demo --help` lists them. Importing this module
changes nothing (no environment variable, no thread count): only `main` acts.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

import torch
from datasets import Dataset, disable_progress_bars
from tqdm.auto import tqdm
from transformers import HfArgumentParser, PrinterCallback, TrainerCallback, set_seed
from transformers.utils import logging as transformers_logging
from trl import SFTConfig, SFTTrainer

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.model_card import CARD_METRICS, card_config_values, card_metrics, generate_kimi_model_card
from trl_kimi.tasks import arithmetic


DATASET_NAME = "chain-sum"  # the card's dataset: the builtin task of `trl-kimi train --dataset_name chain-sum`
ACCURACY_KEY = "rewards/addition_reward/mean"  # the verifier's column of TRL's log: accuracy without the penalty


@dataclass
class DemoArguments:
    """Sizes of the embedded run. The defaults fit a 2-core CPU (see the README for the measured times)."""

    output_dir: str = field(default="runs/demo", metadata={"help": "Where the model, card, plot and results go."})
    seed: int = field(default=0, metadata={"help": "Seed of the datasets, the model initialisation and training."})
    max_terms: int = field(default=7, metadata={"help": "Largest number of terms in a problem (2 to 10)."})
    num_sft_examples: int = field(default=4000, metadata={"help": "Size of the warm-start SFT set."})
    sft_steps: int = field(default=400, metadata={"help": "Optimizer steps of the warm-start SFT."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of the SFT (cosine)."})
    long_fraction: float = field(
        default=0.5, metadata={"help": "Fraction of SFT answers written with the chain of thought."}
    )
    long_slip_rate: float = field(
        default=0.0, metadata={"help": "Fraction of SFT chains of thought with one arithmetic slip."}
    )
    short_slip_rate: float = field(
        default=0.5, metadata={"help": "Fraction of SFT answers-without-working that are off by one (guesses)."}
    )
    rl_warmup_steps: int = field(default=20, metadata={"help": "Linear learning-rate warm-up of the RL phase."})
    num_train_prompts: int = field(default=2000, metadata={"help": "Prompts of the RL training split."})
    num_eval_prompts: int = field(default=200, metadata={"help": "Prompts of the held-out split."})
    eval_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt for the sampled pass@1."})
    rl_steps: int = field(default=200, metadata={"help": "Optimizer steps of the RL phase."})
    rl_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of the RL phase (constant)."})
    tau: float = field(
        default=1.0,
        metadata={"help": "Kimi tau: the l2 pull towards the iteration's policy (1.0: short answers, as here)."},
    )
    length_penalty_weight: float = field(
        default=0.5, metadata={"help": "Weight of the length penalty (0 turns it off)."}
    )
    length_penalty_warmup: float = field(
        default=0.25, metadata={"help": "Fraction of the RL steps trained without the length penalty first."}
    )
    num_generations: int = field(default=8, metadata={"help": "Samples per prompt, k."})
    prompts_per_batch: int = field(default=16, metadata={"help": "Prompts per generated batch."})
    steps_per_generation: int = field(
        default=2, metadata={"help": "Optimizer steps per generated batch (tau acts from the 2nd on)."}
    )
    max_completion_length: int = field(default=64, metadata={"help": "Token cap of a completion."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the tiny Qwen2."})
    num_layers: int = field(default=4, metadata={"help": "Depth of the tiny Qwen2."})
    num_threads: int = field(
        default=1,
        metadata={
            "help": "CPU threads of torch. The model is tiny: more threads add overhead, and far more on a busy CPU."
        },
    )


def make_datasets(args: DemoArguments) -> tuple[Dataset, Dataset, Dataset]:
    """The demo's SFT, held-out and RL datasets (`benchmarks/learning.py` starts from the same ones)."""
    sft_dataset = arithmetic.make_sft_dataset(
        args.num_sft_examples,
        seed=args.seed,
        max_terms=args.max_terms,
        long_fraction=args.long_fraction,
        long_slip_rate=args.long_slip_rate,
        short_slip_rate=args.short_slip_rate,
    )
    eval_dataset = arithmetic.make_rl_dataset(
        args.num_eval_prompts, seed=args.seed + 1, max_terms=args.max_terms, exclude=sft_dataset
    )
    train_dataset = arithmetic.make_rl_dataset(
        args.num_train_prompts,
        seed=args.seed + 2,
        max_terms=args.max_terms,
        exclude=eval_dataset,  # RL may revisit SFT prompts, never held-out ones
    )
    return sft_dataset, eval_dataset, train_dataset


class _RunProgress(TrainerCallback):
    """One tqdm bar over the demo's whole run: each SFT and RL optimizer step is one unit, each evaluation a few."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        reward = (logs or {}).get(ACCURACY_KEY)
        if reward is not None:
            self.bar.set_postfix(reward=f"{reward:.2f}", refresh=False)


def _quiet(trainer, bar: tqdm):
    """The trainer without its per-log printing (the demo's bar reports progress), with the bar's callback."""
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_RunProgress(bar))
    return trainer


def warm_start(args: DemoArguments, model, tokenizer, sft_dataset, bar: tqdm | None = None) -> None:
    """Short SFT on both answer formats with TRL's SFTTrainer (loss on the completion only)."""
    config = SFTConfig(
        output_dir=str(Path(args.output_dir) / "sft"),
        use_cpu=True,
        bf16=False,
        max_steps=args.sft_steps,
        per_device_train_batch_size=64,
        learning_rate=args.sft_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.sft_steps // 12),
        completion_only_loss=True,
        max_length=128,
        gradient_checkpointing=False,  # a 1M-parameter model has nothing to checkpoint
        logging_steps=max(1, args.sft_steps // 5),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=sft_dataset, processing_class=tokenizer)
    if bar is not None:
        _quiet(trainer, bar)
    trainer.train()


def rl_rewards(args: DemoArguments) -> list:
    """The exact verifier, then (with a weight > 0) the length penalty judged by it after its warm-up."""
    rewards = [arithmetic.addition_reward]
    if args.length_penalty_weight > 0:
        rewards.append(
            LengthPenaltyReward(
                correctness_reward=arithmetic.addition_reward.__name__,
                weight=args.length_penalty_weight,
                warmup_steps=args.length_penalty_warmup,
            )
        )
    return rewards


def rl_config(args: DemoArguments) -> KimiConfig:
    batch = args.prompts_per_batch * args.num_generations
    if batch % args.steps_per_generation:
        raise ValueError(
            f"prompts_per_batch * num_generations ({batch}) must be divisible by steps_per_generation "
            f"({args.steps_per_generation})."
        )
    return KimiConfig(
        output_dir=str(Path(args.output_dir) / "rl"),
        use_cpu=True,
        bf16=False,
        seed=args.seed,
        max_steps=args.rl_steps,
        learning_rate=args.rl_learning_rate,
        lr_scheduler_type="constant_with_warmup",  # a fresh Adam state moves every weight by ~lr at first
        warmup_steps=args.rl_warmup_steps,
        per_device_train_batch_size=batch // args.steps_per_generation,
        steps_per_generation=args.steps_per_generation,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=1.0,
        tau=args.tau,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def _running_mean(values: list[float], window: int) -> list[float]:
    return [fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_results(before: dict, after: dict, log_history: list[dict], path: Path, penalty_from: int | None) -> None:
    """One PNG read at a glance: held-out pass@1 and mean length before/after RL as bars, then the training accuracy
    and completion length per step, smoothed (skipped, with the fix, without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print(f"[trl-kimi demo] no plot ({path.name}): matplotlib is missing; pip install 'trl-kimi[plot]'.")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1, 0.8, 1.6, 1.6]})
    colors = ["tab:gray", "tab:green"]
    labels = ["after SFT", "after Kimi RL"]
    ax = axes[0]
    for i, key in enumerate(("accuracy", "greedy_accuracy")):
        for j, result in enumerate((before, after)):
            bar = ax.bar(i + (j - 0.5) * 0.38, result[key], 0.36, color=colors[j], label=labels[j] if i == 0 else None)
            ax.bar_label(bar, fmt="%.2f", fontsize=8)
    ax.set(xticks=[0, 1], xticklabels=["pass@1 (T=1)", "greedy"], ylim=(0, 1), title="Held-out accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    for j, result in enumerate((before, after)):
        ax.bar_label(ax.bar(j, result["mean_tokens"], 0.6, color=colors[j]), fmt="%.1f", fontsize=8)
    ax.set(xticks=[0, 1], xticklabels=labels, ylabel="tokens", title="Held-out answer length")

    rows = [row for row in log_history if ACCURACY_KEY in row]
    steps = [row["step"] for row in rows]
    window = max(1, len(rows) // 8)  # one generated batch is noisy: a running mean shows the trend
    for ax, key, color, title in (
        (axes[2], ACCURACY_KEY, "tab:blue", "Training reward (accuracy)"),
        (axes[3], "completions/mean_length", "tab:orange", "Training answer length (tokens)"),
    ):
        values = [row[key] for row in rows]
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, _running_mean(values, window), color=color, linewidth=2, label=f"running mean ({window})")
        if penalty_from is not None:
            ax.axvline(penalty_from, color="black", linestyle=":", linewidth=1, label="length penalty on")
        ax.set(xlabel="RL step", title=title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("trl-kimi demo: SFT warm start, then KimiMirrorDescentTrainer (chain-sum task)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(args: DemoArguments, model, tokenizer, dataset) -> dict[str, float]:
    sampled = arithmetic.evaluate_accuracy(
        model,
        tokenizer,
        dataset,
        num_samples=args.eval_samples,
        temperature=1.0,
        max_new_tokens=args.max_completion_length,
        seed=args.seed,
    )
    greedy = arithmetic.evaluate_accuracy(
        model, tokenizer, dataset, temperature=0, max_new_tokens=args.max_completion_length
    )
    return {
        "accuracy": sampled["accuracy"],
        "mean_tokens": sampled["mean_tokens"],
        "greedy_accuracy": greedy["accuracy"],
        "greedy_mean_tokens": greedy["mean_tokens"],
    }


def demo_model_card(args: DemoArguments, before: dict, after: dict, seconds: float, trainer) -> str:
    """The card of the demo model, through the package's one card writer (`trl_kimi.model_card`): method, config,
    training metrics, then what the model is, what it scored and how to reproduce it."""
    penalty = (
        f" plus Kimi's length penalty (weight {args.length_penalty_weight}, on after "
        f"{args.length_penalty_warmup:.0%} of the RL steps)"
        if args.length_penalty_weight > 0
        else ""
    )
    results = f"""## Results on the embedded task

A {args.hidden_size}-wide, {args.num_layers}-layer Qwen2 (character-level tokenizer) trained from scratch on the \
chain-sum task of trl-kimi (`trl_kimi.tasks.arithmetic`): a short SFT warm start with TRL's `SFTTrainer`, then Kimi \
k1.5 online mirror descent with `KimiMirrorDescentTrainer` and an exact verifier. A demonstration model, not a general \
one: it only knows this task, e.g. `a3b5c8d2=` (3 + 5 + 8 + 2) → `=18` or `a3:3,b5:8,c8:16,d2:18=18`.

Held-out split of {args.num_eval_prompts} problems (2 to {args.max_terms} terms), pass@1 averaged over
{args.eval_samples} samples at temperature 1.0, and greedy decoding.

| | pass@1 (T=1.0) | mean tokens | greedy accuracy |
|---|---|---|---|
| after SFT warm start ({args.sft_steps} steps) | {before["accuracy"]:.3f} | {before["mean_tokens"]:.1f} | \
{before["greedy_accuracy"]:.3f} |
| after Kimi RL ({args.rl_steps} steps, tau={args.tau}, k={args.num_generations}) | {after["accuracy"]:.3f} | \
{after["mean_tokens"]:.1f} | {after["greedy_accuracy"]:.3f} |

SFT: {args.num_sft_examples} examples, {args.long_fraction:.0%} with the chain of thought; \
{args.short_slip_rate:.0%} of the answers given without working and {args.long_slip_rate:.0%} of the chains of thought \
carry a slip (imperfect demonstrations). RL: {args.rl_steps} optimizer steps, {args.prompts_per_batch} prompts x \
{args.num_generations} samples per generated batch, {args.steps_per_generation} optimizer steps per batch, learning \
rate {args.rl_learning_rate} (warm-up {args.rl_warmup_steps} steps), tau = {args.tau}, reward 1 for an exact final \
answer{penalty}.

Reproduce: `python -m trl_kimi.demo --seed {args.seed}` ({seconds / 60:.1f} min on the machine of this run).
"""
    card = generate_kimi_model_card(
        model_name="kimi-chain-sum-tiny",
        model_id=f"{args.output_dir}/model",
        base_model=None,
        dataset_name=DATASET_NAME,
        tags=list(trainer._tag_names),
        trainer_name=trainer._name,
        paper=trainer._paper,
        config_values=card_config_values(trainer.args),
        metrics=card_metrics(trainer.state.log_history, names=CARD_METRICS),
        extra_sections=results,
        license_fields={"license": "apache-2.0"},  # trained from scratch by this package's (Apache-2.0) code
    )
    return str(card)


def main(args: DemoArguments) -> dict:
    """Run the demo (SFT warm start, evaluation, Kimi RL, evaluation, save) and return its figures."""
    if not 0.0 <= args.length_penalty_warmup < 1.0:
        raise ValueError(
            f"length_penalty_warmup is a fraction of rl_steps in [0, 1), got {args.length_penalty_warmup}."
        )
    start = time.perf_counter()
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    disable_progress_bars()  # datasets' and transformers' bars per map and per save: the demo's own bar says it all
    transformers_logging.disable_progress_bar()
    eval_units = max(1, args.rl_steps // 20)  # an evaluation takes about as long as this many RL steps
    bar = tqdm(total=args.sft_steps + args.rl_steps + 2 * eval_units, desc="SFT warm start", unit="step")

    # ----------------------------------------------------------------- model and data
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=args.seed)
    sft_dataset, eval_dataset, train_dataset = make_datasets(args)
    bar.write(f"[trl-kimi demo] tiny Qwen2: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

    # ----------------------------------------------------------------- warm start
    timings = {"setup_s": time.perf_counter() - start}  # where the minutes go, in results.json
    mark = time.perf_counter()
    warm_start(args, model, tokenizer, sft_dataset, bar)
    timings["sft_s"], mark = time.perf_counter() - mark, time.perf_counter()
    model.save_pretrained(out / "warm_start")  # the starting point of examples/kimi_arithmetic.py and long2short
    tokenizer.save_pretrained(out / "warm_start")
    bar.set_description("held-out evaluation")
    before = evaluate(args, model, tokenizer, eval_dataset)
    bar.update(eval_units)
    timings["eval_before_s"], mark = time.perf_counter() - mark, time.perf_counter()
    bar.write(f"[trl-kimi demo] after SFT warm start: {json.dumps(before)}")

    # ----------------------------------------------------------------- Kimi RL
    bar.set_description("Kimi RL")
    trainer = KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=rl_rewards(args),
        args=rl_config(args),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    _quiet(trainer, bar).train()
    timings["rl_s"], mark = time.perf_counter() - mark, time.perf_counter()
    bar.set_description("held-out evaluation")
    after = evaluate(args, trainer.model, tokenizer, eval_dataset)
    bar.update(eval_units)
    timings["eval_after_s"] = time.perf_counter() - mark
    bar.set_description("done")
    bar.close()
    print(f"[trl-kimi demo] after Kimi RL:        {json.dumps(after)}")

    # ----------------------------------------------------------------- save, card, plot
    final_dir = out / "model"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    seconds = time.perf_counter() - start
    (final_dir / "README.md").write_text(demo_model_card(args, before, after, seconds, trainer))
    penalty_from = round(args.length_penalty_warmup * args.rl_steps) if args.length_penalty_weight > 0 else None
    plot_results(before, after, trainer.state.log_history, out / "training_curves.png", penalty_from)

    timings = {name: round(value, 1) for name, value in timings.items()}
    curve = [row[ACCURACY_KEY] for row in trainer.state.log_history if ACCURACY_KEY in row]
    tenth = max(1, len(curve) // 10)
    results = {
        "before": before,
        "after": after,
        "training_accuracy": {"first_tenth": fmean(curve[:tenth]), "last_tenth": fmean(curve[-tenth:])}
        if curve
        else None,
        "seconds": round(seconds, 1),
        "timings": timings,
        "args": asdict(args),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"[trl-kimi demo] seconds per phase: {json.dumps(timings)}")
    print(
        f"[trl-kimi demo] pass@1 (T=1.0) {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
        f"greedy {before['greedy_accuracy']:.3f} -> {after['greedy_accuracy']:.3f}, "
        f"mean tokens {before['mean_tokens']:.1f} -> {after['mean_tokens']:.1f}, {seconds / 60:.1f} min. "
        f"Model and card: {final_dir}, plot: {out / 'training_curves.png'}"
    )
    return results


def cli(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    return main(args)


if __name__ == "__main__":
    cli()
