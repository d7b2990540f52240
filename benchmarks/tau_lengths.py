"""
τ against answer length (issue 27): Kimi's τ grid × l2 normalisation against `GRPOTrainer`, at controlled lengths.

The workload is the chain-sum task (`trl_kimi.tasks.arithmetic`) in its long (worked) format only, with two-letter tags
and a narrow band of terms, so that the answer length is the controlled variable:

| length | terms | answer tokens | completion cap |
|---|---|---|---|
| short | 2–4 | ~23 | 40 |
| medium | 10–12 | ~78 | 112 |
| long | 10–12, worked out 3 times | ~240 | 320 |

Each length gets its own SFT warm start (cached in `<output_dir>/<length>/warm_start_sft...`): a small Qwen2 on
demonstrations of which `--sft_slip_rate` carry one arithmetic slip carried to the answer, so the warm start is wrong
about as often at every length and RL has the same room (`--sft_init_from` continues a shorter length's warm start,
a curriculum that learns long chains in far fewer steps than from scratch). Then each trainer × seed runs from it with the same data
order, batch, k, learning rate, steps and generation (`benchmarks/learning.py`'s `train_one`); after training:
held-out pass@1 (temperature 1), greedy accuracy, mean tokens, seconds per step, and from the Kimi logs the mean
pull ratio τ·|ρ|/|A| and the spread of ρ on the steps where the pull acts (a batch's 2nd step).

Results go to `<output_dir>/results_<length>.json` (one file per length, so lengths can run as separate jobs of
different sizes); `--report` merges every such file into a markdown table and `tau_lengths.png` (pass@1 against τ
per length and normalisation, GRPO as horizontal lines; pull ratio against τ).

```bash
python benchmarks/tau_lengths.py --lengths short --seeds 0 --steps 60
python benchmarks/tau_lengths.py --lengths long --seeds 0 --steps 30 --prompts_per_batch 8 --num_eval_prompts 50
python benchmarks/tau_lengths.py --report
```
"""

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/learning.py, whatever the working directory

import torch  # noqa: E402
from learning import _common_config, _mean_std, arithmetic_metrics, parse_trainer, run_record, train_one  # noqa: E402
from transformers import AutoModelForCausalLM, set_seed  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from trl_kimi.tasks import arithmetic  # noqa: E402


# length → (min_terms, max_terms, re-checks, max_completion_length). The long answers work the medium chain out three
# times (two re-checks, as an overthinking long-CoT model does) rather than summing 33–35 terms: the tiny model did not
# learn to look terms up past the ~17th in 800 SFT steps (every warm start stayed at 0–2.5 % correct).
LENGTHS = {"short": (2, 4, 0, 40), "medium": (10, 12, 0, 112), "long": (10, 12, 2, 320)}
TAUS = (0.01, 0.1, 1.0)
DEFAULT_TRAINERS = [
    *(f"kimi:tau={tau},l2_normalization={norm}" for norm in ("sequence", "length") for tau in TAUS),
    "grpo",
    "grpo:loss_type=grpo",
]
TAG_WIDTH = 2


@dataclass
class TauLengthArguments:
    output_dir: str = field(default="runs/bench-tau-lengths", metadata={"help": "Results, plots, warm starts."})
    lengths: list[str] = field(default_factory=lambda: ["short"], metadata={"help": f"Of {list(LENGTHS)}."})
    trainers: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRAINERS),
        metadata={
            "help": "`kimi` or `grpo`, optionally `:field=value,...` config overrides (as benchmarks/learning.py)."
        },
    )
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "RL seeds (data order, sampling)."})
    steps: int = field(default=60, metadata={"help": "Optimizer steps of each RL run."})
    learning_rate: float = field(default=5e-5, metadata={"help": "RL learning rate (constant after 10%% warm-up)."})
    steps_per_generation: int = field(default=2, metadata={"help": "Optimizer steps per generated batch (all)."})
    prompts_per_batch: int = field(default=16, metadata={"help": "Prompts per generated batch."})
    num_generations: int = field(default=8, metadata={"help": "Samples per prompt, k."})
    num_eval_prompts: int = field(default=100, metadata={"help": "Held-out prompts."})
    eval_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt (pass@1 at T=1)."})
    num_sft_examples: int = field(default=4000, metadata={"help": "Warm-start SFT examples."})
    sft_steps: int = field(default=400, metadata={"help": "Warm-start SFT optimizer steps."})
    sft_batch_size: int = field(default=64, metadata={"help": "Warm-start SFT batch size."})
    sft_init_from: str | None = field(
        default=None,
        metadata={
            "help": "Start the SFT from this saved model (e.g. the shorter length's warm start: a curriculum, much "
            "cheaper than learning the long chains from scratch) instead of a fresh initialisation."
        },
    )
    sft_slip_rate: float = field(default=0.5, metadata={"help": "Fraction of SFT demonstrations with one slip."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the tiny Qwen2."})
    num_layers: int = field(default=4, metadata={"help": "Depth of the tiny Qwen2."})
    report: bool = field(default=False, metadata={"help": "Only merge the results files into a table and a PNG."})


def warm_start(args: TauLengthArguments, length: str, tokenizer, sft) -> Path:
    """SFT of a fresh tiny Qwen2 on this length's demonstrations, built once and cached."""
    name = f"warm_start_sft{args.sft_steps}x{args.sft_batch_size}"
    if args.sft_init_from:
        name += "_from_" + Path(args.sft_init_from).parent.name  # the length it continues
    out = Path(args.output_dir) / length / name
    if (out / "config.json").exists():
        return out
    set_seed(0)
    if args.sft_init_from:
        model = AutoModelForCausalLM.from_pretrained(args.sft_init_from)
    else:
        model = arithmetic.make_model(
            tokenizer, args.hidden_size, args.num_layers, seed=0, max_position_embeddings=512
        )
    config = SFTConfig(
        output_dir=str(out.parent / "sft"), use_cpu=True, bf16=False, max_steps=args.sft_steps,
        per_device_train_batch_size=args.sft_batch_size, learning_rate=3e-3, lr_scheduler_type="cosine",
        warmup_steps=max(1, args.sft_steps // 12), completion_only_loss=True, max_length=512,
        gradient_checkpointing=False, logging_steps=max(1, args.sft_steps // 5), save_strategy="no",
        report_to="none", disable_tqdm=True, seed=0,
    )  # fmt: skip
    started = time.perf_counter()
    SFTTrainer(model=model, args=config, train_dataset=sft, processing_class=tokenizer).train()
    model.save_pretrained(out)
    print(f"[tau] {length}: warm start in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return out


def run_length(args: TauLengthArguments, length: str) -> None:
    min_terms, max_terms, rechecks, max_len = LENGTHS[length]
    out = Path(args.output_dir)
    path = out / f"results_{length}.json"
    everything = json.loads(path.read_text()) if path.exists() else {"runs": {}}  # resumable, extendable
    everything["args"] = {**asdict(args), "lengths": [length]}
    tokenizer = arithmetic.make_tokenizer()
    shape = dict(min_terms=min_terms, max_terms=max_terms, tag_width=TAG_WIDTH)
    sft = arithmetic.make_sft_dataset(
        args.num_sft_examples, seed=0, long_fraction=1.0, long_slip_rate=args.sft_slip_rate,
        recheck_rate=1.0 if rechecks else 0.0, max_rechecks=rechecks, **shape,
    )  # fmt: skip
    held_out = arithmetic.make_rl_dataset(args.num_eval_prompts, seed=1, exclude=sft, **shape)
    train = arithmetic.make_rl_dataset(args.steps * args.prompts_per_batch, seed=2, exclude=held_out, **shape)
    start_dir = warm_start(args, length, tokenizer, sft)

    def evaluate(model, seed: int) -> dict:
        return arithmetic_metrics(model, tokenizer, held_out, args.eval_samples, max_len, seed)

    if "warm_start" not in everything:
        everything["warm_start"] = evaluate(AutoModelForCausalLM.from_pretrained(start_dir), 0)
    print(f"[tau] {length} warm start: {json.dumps(everything['warm_start'])}", flush=True)
    common = _common_config(
        str(out / length / "rl"), args.steps, args.learning_rate, max(1, args.steps // 10), max_len
    )
    for seed in args.seeds:
        for spec in args.trainers:
            if str(seed) in everything["runs"].get(spec, {}):
                continue  # already measured (a rerun extends the file)
            model = AutoModelForCausalLM.from_pretrained(start_dir)
            trained, log = train_one(
                spec, seed, model, tokenizer, arithmetic.addition_reward, train, common,
                args.prompts_per_batch, args.num_generations, args.steps_per_generation,
            )  # fmt: skip
            run = run_record(log, args.steps, evaluate(trained, seed))
            everything["runs"].setdefault(spec, {})[str(seed)] = run
            shown = {k: round(v, 4) for k, v in run.items() if not isinstance(v, list)}
            print(f"[tau] {length} seed {seed} {spec}: {json.dumps(shown)}", flush=True)
            path.write_text(json.dumps(everything, indent=2))  # a job cut short keeps what finished


# ---------------------------------------------------------------------------------------------------- report
def _label(spec: str) -> tuple[str, dict]:
    kind, overrides = parse_trainer(spec)
    return kind, overrides


def report(out: Path) -> str:
    """One markdown table over every `results_<length>.json` and the PNG next to them."""
    lines = [
        "| length | trainer | seeds | held-out pass@1 | greedy | mean tokens | s/step | pull ratio | std(ρ) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_length = {}
    for length in LENGTHS:
        path = out / f"results_{length}.json"
        if not path.exists():
            continue
        results = per_length[length] = json.loads(path.read_text())
        warm = results["warm_start"]
        lines.append(
            f"| {length} | warm start | | {warm['pass@1']:.3f} | {warm['greedy']:.3f} | {warm['mean_tokens']:.1f} "
            "| | | |"
        )
        for spec, per_seed in results["runs"].items():
            runs = list(per_seed.values())
            cells = []
            for key, digits in (("pass@1", 3), ("greedy", 3), ("mean_tokens", 1)):
                mean, std = _mean_std([r[key] for r in runs])
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if len(runs) > 1 else f"{mean:.{digits}f}")
            cells.append(f"{statistics.fmean(r['seconds_per_step'] for r in runs):.2f}")
            for key in ("pull_ratio", "log_ratio_std"):
                values = [r[key] for r in runs if key in r]
                cells.append(f"{statistics.fmean(values):.3g}" if values else "")
            lines.append(f"| {length} | {spec} | {len(runs)} | " + " | ".join(cells) + " |")
    if per_length:
        plot(per_length, out / "tau_lengths.png")
        lines += ["", *best_tau_table(per_length)]
    return "\n".join(lines)


def best_tau_table(per_length: dict) -> list[str]:
    """Per length and l2 normalisation: the τ with the best mean held-out pass@1 (settings with ≥ 3 seeds; the
    screened ones otherwise), against GRPO's default loss."""
    lines = ["| length | normalisation | best τ | pass@1 | seeds | GRPO default loss |", "|---|---|---|---|---|---|"]
    for length, results in per_length.items():
        best, grpo = {}, ""
        for spec, per_seed in results["runs"].items():
            kind, overrides = _label(spec)
            mean, std = _mean_std([r["pass@1"] for r in per_seed.values()])
            if kind == "grpo" and not overrides:
                grpo = f"{mean:.3f} ± {std:.3f}"
            if kind != "kimi" or set(overrides) - {"tau", "l2_normalization"}:
                continue
            norm = overrides.get("l2_normalization", "sequence")
            key = (len(per_seed) >= 3, mean)
            if norm not in best or key > best[norm][0]:
                best[norm] = (key, overrides.get("tau", 0.1), mean, std, len(per_seed))
        for norm, (_, tau, mean, std, seeds) in sorted(best.items()):
            lines.append(f"| {length} | {norm} | {tau:g} | {mean:.3f} ± {std:.3f} | {seeds} | {grpo} |")
    return lines


def plot(per_length: dict, path: Path) -> None:
    """Per length: held-out pass@1 against τ (one line per normalisation, GRPO as horizontal lines), and the pull
    ratio against τ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(per_length), figsize=(4.2 * len(per_length), 7), squeeze=False)
    for column, (length, results) in enumerate(per_length.items()):
        ax_acc, ax_pull = axes[0][column], axes[1][column]
        series = {}
        for spec, per_seed in results["runs"].items():
            kind, overrides = _label(spec)
            runs = list(per_seed.values())
            mean, std = _mean_std([r["pass@1"] for r in runs])
            if kind == "grpo":
                loss_type = overrides.get("loss_type")
                name = f"GRPO loss_type={loss_type}" if loss_type else "GRPO default loss"
                color, style = ("tab:red", "-.") if loss_type else ("black", "--")
                ax_acc.axhline(mean, color=color, linestyle=style, label=f"{name} ({len(runs)} seeds)")
                if std:
                    ax_acc.axhspan(mean - std, mean + std, color=color, alpha=0.08)
                continue
            if set(overrides) - {"tau", "l2_normalization"}:
                continue  # other Kimi variants: table only
            norm = overrides.get("l2_normalization", "sequence")
            pulls = [r["pull_ratio"] for r in runs if "pull_ratio" in r]
            series.setdefault(norm, []).append(
                (overrides.get("tau", 0.1), mean, std, statistics.fmean(pulls) if pulls else float("nan"))
            )
        for norm, points in series.items():
            points.sort()
            taus = [p[0] for p in points]
            ax_acc.errorbar(
                taus, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", label=f"Kimi {norm}"
            )
            ax_pull.plot(taus, [p[3] for p in points], marker="o", label=f"Kimi {norm}")
        warm = results["warm_start"]["pass@1"]
        ax_acc.axhline(warm, color="grey", linestyle=":", label="warm start")
        ax_acc.set(xscale="log", xlabel="τ", ylabel="held-out pass@1", title=f"{length} (~{_tokens(results)} tokens)")
        ax_pull.set(xscale="log", xlabel="τ", ylabel="pull ratio τ·|ρ|/|A| (2nd steps)")
        if any(p[3] > 0 for points in series.values() for p in points):
            ax_pull.set_yscale("log")
        for ax in (ax_acc, ax_pull):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        "Kimi mirror descent: τ × l2 normalisation against GRPOTrainer, by answer length\n"
        "(error bars and bands: std over seeds where a setting has several; seeds per setting in the table)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tokens(results: dict) -> int:
    return round(results["warm_start"]["mean_tokens"])


def main(args: TauLengthArguments) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        unknown = set(args.lengths) - set(LENGTHS)
        if unknown:
            raise ValueError(f"Unknown lengths {sorted(unknown)}; choose from {list(LENGTHS)}.")
        for spec in args.trainers:
            parse_trainer(spec)  # fail before any training
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
        for length in args.lengths:
            started = time.perf_counter()
            run_length(args, length)
            print(f"[tau] {length}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    print(report(out))


if __name__ == "__main__":
    from transformers import HfArgumentParser

    (tau_args,) = HfArgumentParser(TauLengthArguments).parse_args_into_dataclasses()
    main(tau_args)
