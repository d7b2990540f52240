r"""
[`Long2ShortTrainer`]: the four long2short methods of Kimi k1.5 (§2.4), alone or chained, driving TRL's trainers.

The class owns no training loop: `"merge"` is [`merge_models`], `"rejection_sft"` is TRL's `SFTTrainer` on
[`shortest_rejection_sampling`], `"dpo"` is TRL's `DPOTrainer` on [`build_dpo_pairs`], `"rl"` is
[`~trl_kimi.KimiMirrorDescentTrainer`] with [`long2short_rl_config`] and the length penalty on from step 0. It keeps
the bookkeeping between them: each stage starts from the previous stage's model, writes its data and its model under
`output_dir/<method>/`, and is measured (accuracy, mean completion tokens) before and after on `eval_dataset`.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, set_seed
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from ..evaluation import EvalResult, sample_and_score
from ..generation import _eos_ids
from ..trainer import KimiMirrorDescentTrainer
from .config import Long2ShortConfig
from .merging import detached_copy, merge_models
from .rejection import build_dpo_pairs, select_shortest_correct, shortest_rejection_sampling
from .rl import ZeroIfTruncatedReward, long2short_length_penalty, long2short_rl_config


logger = logging.get_logger(__name__)

RewardFunc = Callable[..., list[float | None]]  # TRL's reward signature: (completions, **columns) -> rewards


class Long2ShortTrainer:
    r"""
    Runs a chain of long2short methods ([Kimi k1.5](https://huggingface.co/papers/2501.12599) §2.4) on a long-CoT
    model: `args.methods`, in order, each starting from the model the previous one produced.

    Stages, each writing `output_dir/<method>/` (`dataset/` when it has data, `model/` with the tokenizer):

    - `"merge"`: [`merge_models`]`(model, short_model, args.merge_alpha)`; needs `short_model`.
    - `"rejection_sft"`: `args.num_samples` samples per train prompt from the current model, verified with the first
      reward function; TRL's `SFTTrainer` on the shortest correct one of each prompt (completion-only loss).
    - `"dpo"`: fresh samples from the current model; TRL's `DPOTrainer` on (shortest correct, wrong or
      ≥ `args.dpo_length_ratio`× longer) pairs, the reference being the model at the start of the stage.
    - `"rl"`: [`~trl_kimi.KimiMirrorDescentTrainer`] with `reward_funcs` plus a length penalty active from step 0
      ([`long2short_length_penalty`]) and the lowered `args.rl_max_completion_length`; each reward function is
      wrapped in [`ZeroIfTruncatedReward`], so an answer the cap cuts gets no reward.

    Sampling and scoring (the data stages and the evaluation) go through [`~trl_kimi.evaluation.sample_and_score`],
    with its rules (truncated answers score 0, a `None` reward is wrong).

    Args:
        model (`str` or `PreTrainedModel`):
            The long-CoT model, or its id / path (loaded with `AutoModelForCausalLM`).
        args ([`Long2ShortConfig`]):
            The chain and each stage's settings.
        train_dataset (`datasets.Dataset`):
            Prompts (`prompt` column, standard or conversational) plus whatever the reward functions read (e.g.
            `solution`, `answer`). The samples of rejection sampling and DPO, and the RL prompts, come from it.
        eval_dataset (`datasets.Dataset`, *optional*):
            Held-out prompts, same columns; without it no accuracy is reported.
        reward_funcs (callable or `list` of callables, *optional*):
            TRL-style reward functions. The first one decides correctness (reward ≥ `args.correctness_threshold`);
            the RL stage uses them all. Defaults to [`~trl_kimi.verifiers.math_reward`] (reads a `solution` column).
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            The tokenizer; loaded from `model` when it is a string.
        short_model (`str` or `PreTrainedModel`, *optional*):
            The short-CoT model of the `"merge"` stage, same architecture and tokenizer as `model`.

    Example:
    ```python
    >>> import tempfile
    >>> from trl_kimi import Long2ShortConfig, Long2ShortTrainer
    >>> from trl_kimi.tasks import arithmetic
    >>> tokenizer = arithmetic.make_tokenizer()
    >>> model = arithmetic.make_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    >>> args = Long2ShortConfig(output_dir=tempfile.mkdtemp(), methods=["merge"], merge_alpha=0.5)
    >>> short = arithmetic.make_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=1)
    >>> trainer = Long2ShortTrainer(model, args, train_dataset=arithmetic.make_rl_dataset(4, seed=0),
    ...                             reward_funcs=arithmetic.addition_reward, processing_class=tokenizer,
    ...                             short_model=short)
    >>> [stage["method"] for stage in trainer.train()["stages"]]
    ['merge']

    ```
    """

    def __init__(
        self,
        model,
        args: Long2ShortConfig,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        short_model=None,
    ):
        if not isinstance(args, Long2ShortConfig):
            raise TypeError(f"args must be a Long2ShortConfig, got {type(args).__name__}.")
        for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if dataset is None and name == "eval_dataset":
                continue
            if dataset is None or len(dataset) == 0 or "prompt" not in dataset.column_names:
                raise ValueError(
                    f"{name} is empty or has no 'prompt' column ({None if dataset is None else len(dataset)} rows, "
                    f"columns {None if dataset is None else dataset.column_names}): long2short needs a 'prompt' "
                    "column of prompts to sample and train on (pass eval_dataset=None to skip the evaluation)."
                )
        if "merge" in args.methods and short_model is None:
            raise ValueError(
                "methods contains 'merge' but no short_model was given; pass short_model= (a short-CoT model of the "
                "same architecture) or remove 'merge' from methods."
            )
        if processing_class is None:
            if not isinstance(model, str):
                raise ValueError("processing_class is required when model is not a model id or path.")
            processing_class = AutoTokenizer.from_pretrained(model)
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model)
        if isinstance(short_model, str):
            short_model = AutoModelForCausalLM.from_pretrained(short_model)
        if reward_funcs is None:
            from ..verifiers import math_reward

            reward_funcs = [math_reward]
        self.reward_funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        if not self.reward_funcs:
            raise ValueError("reward_funcs is empty; the first reward function decides correctness.")
        self.model = model
        self.args = args
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class
        self.short_model = short_model

    @property
    def correctness_reward(self) -> RewardFunc:
        return self.reward_funcs[0]

    # ------------------------------------------------------------------ sampling and evaluation
    def _sample(self, dataset: Dataset, num_samples: int, temperature: float, max_new_tokens: int) -> EvalResult:
        return sample_and_score(
            self.model,
            self.processing_class,
            dataset,
            self.correctness_reward,
            num_samples,
            success_threshold=self.args.correctness_threshold,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            batch_size=self.args.sampling_batch_size,
            seed=self.args.seed,
        )

    def evaluate(self) -> dict[str, Any] | None:
        """
        The summary of [`~trl_kimi.evaluation.sample_and_score`] for the current model on `eval_dataset`
        (`eval_num_samples` samples per prompt, the first reward function, `correctness_threshold`): `accuracy`
        (pass@1 averaged over the samples), `mean_tokens`, `truncated_fraction`, ...; `None` without an
        `eval_dataset`. The same call as `trl-kimi eval` with the same model, prompts, reward, seed, temperature, cap
        and batch size (`sampling_batch_size`), so both report the same accuracy.
        """
        if self.eval_dataset is None:
            return None
        args = self.args
        return self._sample(
            self.eval_dataset, args.eval_num_samples, args.eval_temperature, args.eval_max_new_tokens
        ).to_dict()

    # ------------------------------------------------------------------ stages
    def _common(self, stage_dir: Path) -> dict[str, Any]:
        args = self.args
        return dict(
            output_dir=str(stage_dir / "checkpoints"),
            seed=args.seed,
            use_cpu=args.use_cpu,
            bf16=args.bf16,
            report_to=args.report_to,
            logging_steps=args.logging_steps,
            gradient_checkpointing=args.gradient_checkpointing,
            save_strategy="no",  # the stage's model is saved once, at the end, to <stage>/model
        )

    def _training_samples(self) -> EvalResult:
        args = self.args
        return self._sample(self.train_dataset, args.num_samples, args.sampling_temperature, args.max_new_tokens)

    def _stage_merge(self, stage_dir: Path, report: dict) -> None:
        self.model = merge_models(self.model, self.short_model, alpha=self.args.merge_alpha)
        report["alpha"] = self.args.merge_alpha

    def _stage_rejection_sft(self, stage_dir: Path, report: dict) -> None:
        args = self.args
        sampled = self._training_samples()
        dataset = shortest_rejection_sampling(self.train_dataset, sampled.samples)
        report.update(_sample_stats(sampled), num_examples=len(dataset))
        dataset.save_to_disk(str(stage_dir / "dataset"))
        config = SFTConfig(
            **self._common(stage_dir),
            learning_rate=args.sft_learning_rate,
            num_train_epochs=args.sft_num_train_epochs,
            max_steps=args.sft_max_steps,
            per_device_train_batch_size=args.sft_per_device_train_batch_size,
            completion_only_loss=True,  # learn the short answer, not the prompt
            **args.sft_overrides,
        )
        trainer = SFTTrainer(self.model, args=config, train_dataset=dataset, processing_class=self.processing_class)
        report["train_loss"] = trainer.train().training_loss
        self.model = trainer.model

    def _stage_dpo(self, stage_dir: Path, report: dict) -> None:
        args = self.args
        sampled = self._training_samples()
        dataset = build_dpo_pairs(
            self.train_dataset,
            sampled.samples,
            ratio=args.dpo_length_ratio,
            max_pairs_per_prompt=args.dpo_max_pairs_per_prompt,
        )
        report.update(_sample_stats(sampled), num_examples=len(dataset))
        dataset.save_to_disk(str(stage_dir / "dataset"))
        config = DPOConfig(
            **self._common(stage_dir),
            beta=args.dpo_beta,
            learning_rate=args.dpo_learning_rate,
            num_train_epochs=args.dpo_num_train_epochs,
            max_steps=args.dpo_max_steps,
            per_device_train_batch_size=args.dpo_per_device_train_batch_size,
            **args.dpo_overrides,
        )
        # The reference is the model at the start of the stage. TRL would reload it from `config.name_or_path`, which
        # is the long model's checkpoint (or nothing, for a model built in memory), not this stage's starting point.
        ref_model = detached_copy(self.model).eval().requires_grad_(False)
        trainer = DPOTrainer(
            self.model,
            ref_model=ref_model,
            args=config,
            train_dataset=dataset,
            processing_class=self.processing_class,
        )
        report["train_loss"] = trainer.train().training_loss
        self.model = trainer.model

    def _stage_rl(self, stage_dir: Path, report: dict) -> None:
        args = self.args
        base = {
            **self._common(stage_dir),
            "learning_rate": args.rl_learning_rate,
            "max_steps": args.rl_max_steps,
            "num_generations": args.rl_num_generations,
            "per_device_train_batch_size": args.rl_per_device_train_batch_size,
            "tau": args.rl_tau,
            "temperature": args.rl_temperature,
            "max_completion_length": args.max_new_tokens,  # the long-CoT cap the RL phase lowers
        }
        if args.rl_steps_per_generation is not None:
            base["steps_per_generation"] = args.rl_steps_per_generation
        if "max_completion_length" in args.rl_overrides:
            raise ValueError("Set the RL token cap with rl_max_completion_length, not in rl_overrides.")
        base.update(args.rl_overrides)
        config = long2short_rl_config(base, max_completion_length=args.rl_max_completion_length)
        name = getattr(self.correctness_reward, "__name__", None)
        if name is None:
            raise ValueError(
                "The first reward function has no __name__, which the length penalty needs to find correctness; give "
                "it one (a def function or a class with __name__)."
            )
        penalty = long2short_length_penalty(
            name, weight=args.rl_length_penalty_weight, threshold=args.correctness_threshold
        )
        # Answers cut by the lowered cap get no reward (the report's rule, and the one evaluation applies); the
        # length penalty then sees them as wrong.
        eos_ids = _eos_ids(self.model, self.processing_class)
        if self.processing_class.eos_token_id is not None:  # TRL stops at it too (GRPOTrainer.eos_token_ids)
            eos_ids.add(self.processing_class.eos_token_id)
        rewards = [ZeroIfTruncatedReward(f, sorted(eos_ids)) for f in self.reward_funcs]
        self.train_dataset.save_to_disk(str(stage_dir / "dataset"))  # the RL prompts
        trainer = KimiMirrorDescentTrainer(
            self.model,
            reward_funcs=[*rewards, penalty],
            args=config,
            train_dataset=self.train_dataset,
            processing_class=self.processing_class,
        )
        report["train_loss"] = trainer.train().training_loss
        report["num_examples"] = len(self.train_dataset)
        self.model = trainer.model

    # ------------------------------------------------------------------ the chain
    def train(self) -> dict[str, Any]:
        """
        Run the chain. Returns (and writes to `output_dir/results.json`) `{"stages": [...], "final_model": path}`,
        one entry per stage: `method`, `before` / `after` (the summary of [`evaluate`]: accuracy, mean tokens,
        truncated fraction, ...; `None` without `eval_dataset`),
        sample counts of the data stages (`num_prompts`, `num_without_correct`, `num_examples`), `train_loss`,
        `model_dir`, `dataset_dir` and `seconds`.
        """
        args = self.args
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        set_seed(args.seed)
        stages, current = [], self.evaluate()
        for method in args.methods:
            start = time.perf_counter()
            stage_dir = out / method
            stage_dir.mkdir(parents=True, exist_ok=True)
            report: dict[str, Any] = {"method": method, "before": current}
            getattr(self, f"_stage_{method}")(stage_dir, report)
            self.model.save_pretrained(str(stage_dir / "model"))
            self.processing_class.save_pretrained(str(stage_dir / "model"))
            current = self.evaluate()
            report.update(
                after=current,
                model_dir=str(stage_dir / "model"),
                dataset_dir=str(stage_dir / "dataset") if (stage_dir / "dataset").exists() else None,
                seconds=round(time.perf_counter() - start, 1),
            )
            logger.info(f"long2short stage {method}: {json.dumps(_round(report))}")
            stages.append(report)
        results = {"stages": stages, "final_model": stages[-1]["model_dir"], "config": args.to_dict()}
        (out / "results.json").write_text(json.dumps(_round(results), indent=2, default=str))
        return results

    # ------------------------------------------------------------------ saving and sharing (the CLI's calls)
    def save_model(self, output_dir: str | None = None) -> None:
        """Save the current model and its tokenizer to `output_dir` (default `args.output_dir`)."""
        output_dir = output_dir or self.args.output_dir
        self.model.save_pretrained(output_dir)
        self.processing_class.save_pretrained(output_dir)

    def create_model_card(self, dataset_name: str | None = None) -> str:
        """Write `README.md` in `args.output_dir`: the chain and each stage's accuracy and mean tokens (after
        [`train`]). Returns its text."""
        results_path = Path(self.args.output_dir) / "results.json"
        stages = json.loads(results_path.read_text())["stages"] if results_path.exists() else []
        rows = []
        for stage in stages:
            before, after = stage["before"] or {}, stage["after"] or {}
            rows.append(
                f"| {stage['method']} | {before.get('accuracy', float('nan')):.3f} → "
                f"{after.get('accuracy', float('nan')):.3f} | {before.get('mean_tokens', float('nan')):.1f} → "
                f"{after.get('mean_tokens', float('nan')):.1f} |"
            )
        card = (
            "---\nlibrary_name: transformers\ntags:\n- trl\n- trl-kimi\n- long2short\n---\n\n"
            f"# {Path(self.args.output_dir).name}\n\nLong2short ([Kimi k1.5](https://huggingface.co/papers/2501.12599) "
            f"§2.4) with trl-kimi's `Long2ShortTrainer`: {' → '.join(self.args.methods)}"
            + (f", on {dataset_name}" if dataset_name else "")
            + ".\n\n| stage | accuracy | mean tokens |\n|---|---|---|\n"
            + "\n".join(rows)
            + "\n"
        )
        (Path(self.args.output_dir) / "README.md").write_text(card)
        return card

    def push_to_hub(self, dataset_name: str | None = None) -> str:
        """Push the current model, its tokenizer and the card to `args.hub_model_id` (default: the output_dir's
        name). Returns the repository id."""
        repo_id = self.args.hub_model_id or Path(self.args.output_dir).name
        self.create_model_card(dataset_name)
        self.model.push_to_hub(repo_id)
        self.processing_class.push_to_hub(repo_id)
        from huggingface_hub import upload_file

        upload_file(
            path_or_fileobj=str(Path(self.args.output_dir) / "README.md"), path_in_repo="README.md", repo_id=repo_id
        )
        return repo_id


def _sample_stats(sampled: EvalResult) -> dict[str, int | float]:
    """Counts of one sampling round: prompts, prompts without a correct sample (skipped), accuracy, mean tokens."""
    return {
        "num_prompts": sampled.num_problems,
        "num_without_correct": sum(select_shortest_correct(group) is None for group in sampled.samples),
        "sample_accuracy": sampled.accuracy,
        "sample_mean_tokens": sampled.mean_tokens,
    }


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value
