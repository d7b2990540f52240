"""Tiny, local, seeded building blocks shared by the tests (no Hub access)."""

import os
import warnings
from pathlib import Path

import torch

from trl_kimi import KimiConfig
from trl_kimi.tasks import arithmetic


def tiny_model(tokenizer, seed: int = 0):
    """A 2-layer, 32-wide Qwen2 over the embedded task's character vocabulary (~30k parameters)."""
    return arithmetic.make_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, seed=seed)


def tiny_config(output_dir, **overrides) -> KimiConfig:
    """A KimiConfig for a few CPU steps: 2 prompts x 3 generations per generated batch, 8-token completions."""
    kwargs = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        seed=0,
        max_steps=2,
        learning_rate=1e-2,  # large, so that two steps visibly move a tiny model
        per_device_train_batch_size=6,
        num_generations=3,
        max_completion_length=8,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    if "steps_per_generation" not in overrides and "generation_batch_size" not in overrides:
        # One optimizer step per generated batch (TRL's default), which the batch arithmetic of these small tests was
        # written for; pass steps_per_generation=None for KimiConfig's default (2 x gradient_accumulation_steps).
        kwargs["steps_per_generation"] = kwargs.get("gradient_accumulation_steps", 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One optimizer step per generated batch")
        warnings.filterwarnings("ignore", message="reset_optimizer_each_iteration=True with one optimizer step")
        return KimiConfig(**kwargs)


def digit_fraction_reward(completions: list[str], **kwargs) -> list[float]:
    """A reward that varies within a group even for an untrained model: the fraction of digits in the completion."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def eos_prone_model(tokenizer, p_eos: float = 0.25):
    """The tiny model with a logit bias making EOS about `p_eos` likely at each step: completions of varied lengths
    (geometric), as a partial-rollout test needs; the untrained model alone almost never stops before 8 tokens."""
    model = tiny_model(tokenizer)
    bias = torch.zeros(model.config.vocab_size)
    bias[tokenizer.eos_token_id] = torch.log(torch.tensor(p_eos / (1 - p_eos) * (model.config.vocab_size - 1)))
    model.lm_head.bias = torch.nn.Parameter(bias)
    return model


# The public benchmark files (GSM8K, MATH-500, HumanEval, MBPP, AQuA) beside the checkout, as CI lays them out
# (`../shared/data`); TRL_KIMI_DATA points elsewhere. Tests that need them skip when they are absent.
SHARED_DATA = Path(os.environ.get("TRL_KIMI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


# `trl-kimi train` flags for 2 steps of 2 prompts x 3 samples, 8-token answers, on CPU, no logging backends.
TINY_TRAIN = [
    "--max_steps", "2", "--per_device_train_batch_size", "6", "--num_generations", "3",
    "--max_completion_length", "8", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
    "--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0",
]  # fmt: skip
