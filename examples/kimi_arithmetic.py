# /// script
# dependencies = [
#     "trl-kimi @ git+https://github.com/<owner>/trl-kimi",  # placeholder: the maintainer fills in the owner
#     "trl==1.16.*",
# ]
# ///

"""
Kimi k1.5 online mirror descent on the embedded chain-sum task, from a warm-started tiny model, on CPU or GPU.

`python -m trl_kimi.demo` saves its warm-start model (SFT only) to `runs/demo/warm_start`; this script continues from
any such checkpoint with every `KimiConfig` flag exposed, and runs under `accelerate launch` with one process or many.

One process on CPU:

```bash
python examples/kimi_arithmetic.py --model_name_or_path runs/demo/warm_start --output_dir runs/arithmetic \
    --use_cpu --bf16 False --max_steps 120 --learning_rate 5e-5 --per_device_train_batch_size 64 \
    --steps_per_generation 2 --num_generations 8 --max_completion_length 64 --tau 1 --report_to none
```

Two CPU processes (gloo); a prompt's 8 samples may be dealt to both, the baseline is taken after the gather:

```bash
accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml examples/kimi_arithmetic.py \
    --model_name_or_path runs/demo/warm_start --output_dir runs/arithmetic-2proc \
    --use_cpu --bf16 False --max_steps 60 --learning_rate 5e-5 --per_device_train_batch_size 32 \
    --steps_per_generation 2 --num_generations 8 --max_completion_length 64 --report_to none
```
"""

from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer
from trl_kimi.distributed import end_training
from trl_kimi.tasks import arithmetic


@dataclass
class ArithmeticScriptArguments:
    """
    Args:
        num_train_prompts (`int`, *optional*, defaults to `2000`):
            Problems in the training split (drawn with `--seed`).
        num_eval_prompts (`int`, *optional*, defaults to `200`):
            Held-out problems for the accuracy printed before and after training.
        max_terms (`int`, *optional*, defaults to `7`):
            Largest number of terms in a problem.
    """

    num_train_prompts: int = field(default=2000, metadata={"help": "Problems in the training split."})
    num_eval_prompts: int = field(default=200, metadata={"help": "Held-out problems for the printed accuracy."})
    max_terms: int = field(default=7, metadata={"help": "Largest number of terms in a problem."})


def main(script_args: ArithmeticScriptArguments, training_args: KimiConfig, model_args: ModelConfig) -> None:
    ################
    # Model
    ################
    if model_args.model_name_or_path is None:
        raise ValueError("Pass --model_name_or_path, e.g. runs/demo/warm_start (saved by `python -m trl_kimi.demo`).")
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, padding_side="left")

    ################
    # Dataset
    ################
    eval_dataset = arithmetic.make_rl_dataset(
        script_args.num_eval_prompts, seed=training_args.seed + 1, max_terms=script_args.max_terms
    )
    train_dataset = arithmetic.make_rl_dataset(
        script_args.num_train_prompts,
        seed=training_args.seed + 2,
        max_terms=script_args.max_terms,
        exclude=eval_dataset,
    )

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=arithmetic.addition_reward,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    max_tokens = training_args.max_completion_length
    before = arithmetic.evaluate_accuracy(trainer.model, tokenizer, eval_dataset, max_new_tokens=max_tokens)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    after = arithmetic.evaluate_accuracy(trainer.model, tokenizer, eval_dataset, max_new_tokens=max_tokens)
    trainer.accelerator.print(f"held-out pass@1 (T=1.0): {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name="trl_kimi.tasks.arithmetic")
    end_training(trainer)  # destroy the process group before exit (multi-process runs), in an order that cannot hang


if __name__ == "__main__":
    parser = TrlParser((ArithmeticScriptArguments, KimiConfig, ModelConfig))
    main(*parser.parse_args_and_config())
