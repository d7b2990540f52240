"""
Uniform vs prioritised vs curriculum sampling (Kimi k1.5 §2.3.4) on the embedded chain-sum task, same steps, several
seeds, one run.

For each seed: the demo's SFT warm start (`trl_kimi.demo.warm_start`, same data and settings), then one RL run per
strategy from that same warm start, evaluated on a held-out split every `--eval_every` steps (pass@1 averaged over
`--eval_samples` samples at temperature 1). The difficulty of a problem is its number of terms (2 to `--max_terms`).
The curriculum is staged: three pools (fewest terms first) with boundaries at 1/3 and 2/3 of `--rl_steps`.

Reported per strategy: accuracy after `--rl_steps` steps (mean ± std over seeds) and the first evaluated step at which
held-out accuracy reaches `--target_accuracy` (mean over the seeds that reach it, and how many do).

```bash
python benchmarks/sampling.py                                   # full: 3 seeds x 3 strategies x 200 steps
python benchmarks/sampling.py --seeds 0 --rl_steps 4 --sft_steps 20 --eval_every 2 --num_eval_prompts 20  # smoke
```
"""

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from transformers import HfArgumentParser, TrainerCallback, set_seed  # noqa: E402

from trl_kimi import KimiMirrorDescentTrainer  # noqa: E402
from trl_kimi.demo import DemoArguments, rl_config, warm_start  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


STRATEGIES = ("uniform", "prioritized", "curriculum")


@dataclass
class BenchmarkArguments(DemoArguments):
    """The demo's arguments (sizes of the warm start and the RL runs) plus the benchmark's own."""

    output_dir: str = field(default="runs/bench-sampling", metadata={"help": "Where results.json goes."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One warm start and 3 runs each."})
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES), metadata={"help": "Strategies to run."})
    eval_every: int = field(default=25, metadata={"help": "Held-out evaluation every this many RL steps."})
    target_accuracy: float = field(default=0.48, metadata={"help": "Accuracy whose first crossing is reported."})
    prioritized_epsilon: float = field(default=0.05, metadata={"help": "Floor of the prioritised weight."})


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


def run_seed(args: BenchmarkArguments, seed: int) -> dict:
    set_seed(seed)
    seed_args = BenchmarkArguments(**{**vars(args), "seed": seed, "output_dir": f"{args.output_dir}/seed{seed}"})
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, args.hidden_size, args.num_layers, seed=seed)
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
    warm_start(seed_args, model, tokenizer, sft)
    warm_state = {k: v.clone() for k, v in model.state_dict().items()}
    start_accuracy = arithmetic.evaluate_accuracy(
        model, tokenizer, held_out, num_samples=args.eval_samples, max_new_tokens=args.max_completion_length, seed=seed
    )["accuracy"]
    print(f"[bench] seed {seed}: warm start accuracy {start_accuracy:.3f}", flush=True)

    results = {"warm_start_accuracy": start_accuracy}
    third = max(1, args.rl_steps // 3)
    for strategy in args.strategies:
        model.load_state_dict(warm_state)
        config = rl_config(seed_args)
        config.output_dir = f"{seed_args.output_dir}/{strategy}"
        config.logging_steps = max(1, args.eval_every)
        config.sampling_strategy = strategy
        config.prioritized_epsilon = args.prioritized_epsilon
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
        results[strategy] = {
            "curve": evaluation.curve,
            "final_accuracy": evaluation.curve[-1][1],
            "steps_to_target": reached[0] if reached else None,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"[bench] seed {seed} {strategy}: {json.dumps(results[strategy])}", flush=True)
    return results


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
    per_seed = {seed: run_seed(args, seed) for seed in args.seeds}
    table = summarise(args, per_seed)
    print(table)
    (Path(args.output_dir) / "results.json").write_text(
        json.dumps({"per_seed": per_seed, "args": vars(args)}, indent=2)
    )
    return per_seed


if __name__ == "__main__":
    (benchmark_args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    main(benchmark_args)
