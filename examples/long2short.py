# /// script
# dependencies = [
#     "trl-kimi @ git+https://github.com/<owner>/trl-kimi",  # placeholder: the maintainer fills in the owner
#     "trl==1.16.*",
#     "matplotlib",
# ]
# ///

"""
Long2short on the embedded chain-sum task: the four methods of Kimi k1.5 §2.4 side by side, on CPU, in minutes.

1. Models: a tiny Qwen2 warm-started with TRL's `SFTTrainer` on chain-of-thought answers that overthink, as long-CoT
   models do: 70 % of them re-check the worked chain (write it out again), half of those twice, before answering
   (the *long* model); and a short-CoT sibling fine-tuned from it on answers without working (the *short* model, for
   merging).
2. Each method runs with [`Long2ShortTrainer`] from the long model: `merge`, `rejection_sft`, `dpo`, `rl`, and the
   chain `rejection_sft → dpo → rl`.
3. A table of methods × (accuracy, mean completion tokens) on a held-out split, and `accuracy_vs_tokens.png`, the
   report's figure in miniature. Everything goes under `--output_dir` (each run's stages, datasets and models too).

```bash
python examples/long2short.py --output_dir runs/long2short
```

On 2 CPU cores (`OMP_NUM_THREADS=1`) the five runs took 12.6 minutes and the two warm starts about 7 more;
`--long_model_path` / `--short_model_path` reuse warm starts from an earlier run.
On a machine shared with other jobs, `OMP_NUM_THREADS=1` avoids thread oversubscription. `--help` lists the sizes.
Measured figures are in the README's Long2short section.

GPU recipe (the same `Long2ShortTrainer`, Hub models; the long-CoT checkpoint is yours, e.g. the output of
`examples/kimi_gsm8k.py`, and the short model a short-CoT fine-tune of the same base):

```python
from datasets import load_dataset
from trl_kimi import Long2ShortConfig, Long2ShortTrainer
from trl_kimi.verifiers import math_reward

dataset = load_dataset("openai/gsm8k", "main")  # map to `prompt` (chat messages) and `solution` columns first
args = Long2ShortConfig(
    output_dir="runs/qwen-long2short", methods=["rejection_sft", "dpo", "rl"], bf16=True,
    num_samples=8, max_new_tokens=4096, sampling_batch_size=256, rl_max_completion_length=1024,
    rl_overrides={"use_vllm": True, "vllm_mode": "colocate"},
)
Long2ShortTrainer(
    "runs/qwen2.5-1.5b-kimi-long",  # long-CoT checkpoint (e.g. RL from Qwen/Qwen2.5-1.5B-Instruct)
    args, train_dataset=dataset["train"], eval_dataset=dataset["test"], reward_funcs=math_reward,
    short_model="Qwen/Qwen2.5-1.5B-Instruct",  # only for "merge"; same architecture and vocabulary
).train()
```
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, HfArgumentParser, set_seed  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from trl_kimi import Long2ShortConfig, Long2ShortTrainer  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


RUNS = {  # table row -> chain of methods, each run from the long model
    "merge": ["merge"],
    "shortest rejection SFT": ["rejection_sft"],
    "DPO": ["dpo"],
    "long2short RL": ["rl"],
    "chain: rejection SFT -> DPO -> RL": ["rejection_sft", "dpo", "rl"],
}


@dataclass
class ExampleArguments:
    """Sizes of the embedded run (see the module docstring for timings)."""

    output_dir: str = field(default="runs/long2short", metadata={"help": "Where runs, table, plot and results go."})
    seed: int = field(default=0, metadata={"help": "Seed of data, initialisation, sampling and training."})
    runs: list[str] = field(
        default_factory=lambda: list(RUNS), metadata={"help": f"Table rows to run, from {list(RUNS)}."}
    )
    # ----- task and models
    long_model_path: str | None = field(
        default=None, metadata={"help": "Reuse this long model (e.g. runs/demo/warm_start) instead of training one."}
    )
    short_model_path: str | None = field(
        default=None,
        metadata={"help": "Reuse this short model (a fine-tune of the long one) instead of training one."},
    )
    max_terms: int = field(default=5, metadata={"help": "Largest number of terms in a problem."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the tiny Qwen2."})
    num_layers: int = field(default=4, metadata={"help": "Depth of the tiny Qwen2."})
    num_sft_examples: int = field(default=4000, metadata={"help": "Warm-start SFT examples."})
    long_fraction: float = field(default=1.0, metadata={"help": "Fraction of warm-start answers with the CoT."})
    recheck_rate: float = field(
        default=0.7,
        metadata={"help": "The long model's overthinking: chance to re-check a worked chain (at most twice)."},
    )
    long_sft_steps: int = field(default=400, metadata={"help": "Warm-start SFT steps of the long model."})
    short_sft_steps: int = field(default=100, metadata={"help": "SFT steps from the long model to the short one."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate of the warm starts."})
    # ----- long2short
    num_train_prompts: int = field(default=400, metadata={"help": "Prompts sampled for rejection SFT / DPO / RL."})
    num_eval_prompts: int = field(default=200, metadata={"help": "Held-out prompts of the table."})
    eval_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt (pass@1 averaged)."})
    num_samples: int = field(default=8, metadata={"help": "n, samples per prompt for rejection SFT and DPO."})
    max_new_tokens: int = field(default=96, metadata={"help": "Token cap of sampling (the long model's)."})
    sft_epochs: float = field(default=4.0, metadata={"help": "Epochs of rejection-sampling SFT."})
    sft_stage_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of rejection SFT."})
    dpo_epochs: float = field(default=1.0, metadata={"help": "Epochs of DPO."})
    dpo_learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate of DPO."})
    dpo_beta: float = field(default=0.2, metadata={"help": "DPO beta."})
    rl_steps: int = field(default=60, metadata={"help": "Optimizer steps of long2short RL."})
    rl_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of long2short RL."})
    rl_max_completion_length: int = field(default=40, metadata={"help": "The lowered token cap of long2short RL."})
    rl_length_penalty_weight: float = field(default=0.5, metadata={"help": "w of the length penalty."})


def train_warm_starts(args: ExampleArguments, tokenizer, out: Path):
    """The long model (SFT on mostly chain-of-thought answers) and the short one, fine-tuned from it on answers
    without working: two fine-tunes of one base, so that their weights can be averaged."""

    def sft(model, dataset, steps, name):
        config = SFTConfig(
            output_dir=str(out / name),
            use_cpu=True,
            bf16=False,
            max_steps=steps,
            per_device_train_batch_size=64,
            learning_rate=args.sft_learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, steps // 12),
            completion_only_loss=True,
            max_length=128,
            gradient_checkpointing=False,  # a 1M-parameter model has nothing to checkpoint
            logging_steps=max(1, steps // 4),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=args.seed,
        )
        SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer).train()
        model.save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
        return model

    def data(long_fraction, seed, recheck_rate=0.0):
        return arithmetic.make_sft_dataset(
            args.num_sft_examples,
            seed=seed,
            max_terms=args.max_terms,
            long_fraction=long_fraction,
            recheck_rate=recheck_rate,
        )

    long_data = data(args.long_fraction, args.seed, args.recheck_rate)
    if args.long_model_path is None:
        model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=args.seed)
        sft(model, long_data, args.long_sft_steps, "long_model")
        args.long_model_path = str(out / "long_model")
    if args.short_model_path is None:
        # a fine-tune of the long model, reloaded from disk (a deep copy of a trained model would keep the Trainer's
        # forward wrapper, bound to the original)
        short_model = AutoModelForCausalLM.from_pretrained(args.long_model_path)
        sft(short_model, data(0.0, args.seed + 10), args.short_sft_steps, "short_model")
        args.short_model_path = str(out / "short_model")
    return long_data


def long2short_config(args: ExampleArguments, output_dir: Path, methods: list[str]) -> Long2ShortConfig:
    return Long2ShortConfig(
        output_dir=str(output_dir),
        methods=methods,
        seed=args.seed,
        use_cpu=True,
        gradient_checkpointing=False,
        logging_steps=10,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        sampling_batch_size=256,
        sft_learning_rate=args.sft_stage_learning_rate,
        sft_num_train_epochs=args.sft_epochs,
        sft_per_device_train_batch_size=32,
        sft_overrides={"disable_tqdm": True, "max_length": 128, "warmup_steps": 0.1},
        dpo_beta=args.dpo_beta,
        dpo_learning_rate=args.dpo_learning_rate,
        dpo_num_train_epochs=args.dpo_epochs,
        dpo_per_device_train_batch_size=32,
        dpo_overrides={"disable_tqdm": True, "max_length": 128, "warmup_steps": 0.1},
        rl_max_completion_length=args.rl_max_completion_length,
        rl_length_penalty_weight=args.rl_length_penalty_weight,
        rl_learning_rate=args.rl_learning_rate,
        rl_max_steps=args.rl_steps,
        rl_num_generations=8,
        rl_per_device_train_batch_size=64,
        rl_steps_per_generation=2,
        # A fresh Adam state moves every weight by about lr in its first steps: warm the learning rate up.
        rl_overrides={"disable_tqdm": True, "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10},
        eval_num_samples=args.eval_samples,
        eval_temperature=1.0,
    )


def plot(rows: list[dict], path: Path) -> None:
    """Accuracy vs mean completion tokens, one point per model, like the report's long2short figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in rows:
        ax.scatter(row["mean_tokens"], 100 * row["accuracy"], s=40)
        ax.annotate(row["method"], (row["mean_tokens"], 100 * row["accuracy"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set(xlabel="mean completion tokens", ylabel="accuracy (pass@1, %)", title="Long2short on the chain-sum task")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: ExampleArguments) -> dict:
    start = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        raise ValueError(f"Unknown runs {unknown}; choose from {list(RUNS)}.")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)

    ################
    # Models and data
    ################
    tokenizer = arithmetic.make_tokenizer()
    sft_data = train_warm_starts(args, tokenizer, out)
    short_model = AutoModelForCausalLM.from_pretrained(args.short_model_path)
    eval_dataset = arithmetic.make_rl_dataset(
        args.num_eval_prompts, seed=args.seed + 1, max_terms=args.max_terms, exclude=sft_data
    )
    train_dataset = arithmetic.make_rl_dataset(
        args.num_train_prompts, seed=args.seed + 2, max_terms=args.max_terms, exclude=eval_dataset
    )

    ################
    # Long2short runs, each from the long model
    ################
    rows, reports = [], {}
    for name in args.runs:
        methods = RUNS[name]
        model = AutoModelForCausalLM.from_pretrained(args.long_model_path)  # every run starts from the long model
        run_dir = out / "_".join(methods)
        trainer = Long2ShortTrainer(
            model,
            long2short_config(args, run_dir, methods),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            reward_funcs=arithmetic.addition_reward,
            processing_class=tokenizer,
            short_model=short_model if "merge" in methods else None,
        )
        report = trainer.train()
        reports[name] = report["stages"]
        if not rows:
            rows.append({"method": "long model (start)", **report["stages"][0]["before"]})
        rows.append({"method": name, **report["stages"][-1]["after"]})
        print(f"[long2short example] {name}: {json.dumps(report['stages'][-1]['after'])}")
    short_eval = Long2ShortTrainer(
        short_model,
        long2short_config(args, out / "short_eval", ["merge"]),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        reward_funcs=arithmetic.addition_reward,
        processing_class=tokenizer,
        short_model=short_model,
    ).evaluate()
    rows.insert(1, {"method": "short model", **short_eval})

    ################
    # Table and figure
    ################
    base = rows[0]
    table = ["| model | accuracy | mean tokens | Δ accuracy (pts) | Δ tokens |", "|---|---|---|---|---|"]
    for row in rows:
        row["delta_accuracy_pts"] = 100 * (row["accuracy"] - base["accuracy"])
        row["delta_tokens_pct"] = 100 * (row["mean_tokens"] / base["mean_tokens"] - 1)
        table.append(
            f"| {row['method']} | {100 * row['accuracy']:.1f} % | {row['mean_tokens']:.1f} | "
            f"{row['delta_accuracy_pts']:+.1f} | {row['delta_tokens_pct']:+.0f} % |"
        )
    plot(rows, out / "accuracy_vs_tokens.png")
    seconds = time.perf_counter() - start
    results = {"table": rows, "stages": reports, "seconds": round(seconds, 1), "args": asdict(args)}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"[long2short example] {seconds / 60:.1f} min; plot: {out / 'accuracy_vs_tokens.png'}")
    return results


def cli(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ExampleArguments).parse_args_into_dataclasses(args=argv)
    return main(args)


if __name__ == "__main__":
    cli()
