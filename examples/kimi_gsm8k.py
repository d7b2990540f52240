# /// script
# dependencies = [
#     "trl-kimi",
#     "trl==1.16.*",
#     "math-verify[antlr4_13_2]",
# ]
# ///

"""
Kimi k1.5 online mirror descent on GSM8K (or a MATH-style dataset) with a Hub model, on one GPU or many.

The reward is `trl_kimi.verifiers.math_reward` (math-verify plus the normalisations it misses, never a false positive). The data comes from a local
JSON Lines file (the GSM8K/MATH copies in `../shared/data/`, or your own) or from the Hub (`--dataset_name`). GSM8K
rows (`question`, `answer` ending in `#### 42`) and MATH rows (`problem`, `solution` with a `\\boxed{}`) are both
understood.

One GPU:

```bash
accelerate launch examples/kimi_gsm8k.py \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \
    --train_file ../shared/data/gsm8k/train.jsonl \
    --output_dir Qwen2.5-1.5B-Kimi-GSM8K \
    --tau 0.1 --num_generations 8 --steps_per_generation 4 --gradient_accumulation_steps 2 \
    --per_device_train_batch_size 16 --learning_rate 1e-6 --max_completion_length 1024 \
    --use_vllm --vllm_mode colocate --logging_steps 5 --report_to none
```

Eight GPUs (DDP):

```bash
accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/kimi_gsm8k.py \
    --model_name_or_path Qwen/Qwen2.5-7B-Instruct --dataset_name openai/gsm8k --dataset_config main \
    --output_dir Qwen2.5-7B-Kimi-GSM8K --use_vllm --vllm_mode colocate --push_to_hub
```

`--steps_per_generation` larger than `--gradient_accumulation_steps` makes several optimizer steps per generated
batch, which is where `--tau` (the pull towards the iteration's policy) acts.
"""

import re
from dataclasses import dataclass, field

from datasets import load_dataset
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer
from trl_kimi.verifiers import math_reward


SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class KimiMathScriptArguments(ScriptArguments):
    """
    Script arguments for the Kimi math example, on top of TRL's `ScriptArguments` (`--dataset_name`, ...).

    Args:
        train_file (`str`, *optional*):
            Local JSON Lines file to train on (GSM8K or MATH columns). Used instead of `--dataset_name` when set.
        eval_file (`str`, *optional*):
            Local JSON Lines file to evaluate on (e.g. `../shared/data/gsm8k/test.jsonl`), with `--eval_strategy`.
        max_train_samples (`int`, *optional*):
            Keep only the first N training rows (quick runs).
        max_eval_samples (`int`, *optional*):
            Keep only the first N evaluation rows.
        system_prompt (`str`, *optional*):
            System message put before each problem. Empty to send the problem alone.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset, e.g. openai/gsm8k."})
    train_file: str | None = field(default=None, metadata={"help": "Local JSON Lines training file."})
    eval_file: str | None = field(default=None, metadata={"help": "Local JSON Lines evaluation file."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "System message; empty for none."})


def to_prompt_and_solution(row: dict, system_prompt: str) -> dict:
    """GSM8K (`question`/`answer`) or MATH (`problem`/`solution`) row → TRL's conversational `prompt` + `solution`."""
    if "question" in row and "answer" in row:  # GSM8K: the final answer follows "####", maybe with commas
        question, solution = row["question"], row["answer"].split("####")[-1].strip().replace(",", "")
    elif "problem" in row and ("answer" in row or "solution" in row):  # MATH: a bare answer or a \boxed{} solution
        question, solution = row["problem"], row.get("answer") or row["solution"]
    else:
        raise ValueError(
            f"Unknown row format with columns {sorted(row)}: expected GSM8K (question, answer) or MATH "
            "(problem, solution or answer)."
        )
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    return {"prompt": messages, "solution": re.sub(r"\s+", " ", str(solution)).strip()}


def load_split(script_args: KimiMathScriptArguments, file: str | None, split: str, limit: int | None):
    if file is not None:
        dataset = load_dataset("json", data_files=file, split="train")
    elif script_args.dataset_name is not None:
        dataset = load_dataset(script_args.dataset_name, script_args.dataset_config, split=split)
    else:
        raise ValueError("Pass --train_file (a local JSON Lines file) or --dataset_name (a Hub dataset).")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.map(
        to_prompt_and_solution,
        fn_kwargs={"system_prompt": script_args.system_prompt},
        remove_columns=dataset.column_names,
    )


def main(script_args: KimiMathScriptArguments, training_args: KimiConfig, model_args: ModelConfig) -> None:
    ################
    # Model
    ################
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    ################
    # Dataset
    ################
    train_dataset = load_split(
        script_args, script_args.train_file, script_args.dataset_train_split, script_args.max_train_samples
    )
    eval_dataset = None
    if training_args.eval_strategy != "no":
        if script_args.eval_file is None and script_args.dataset_name is None:
            raise ValueError("--eval_strategy needs --eval_file or --dataset_name.")
        eval_dataset = load_split(
            script_args, script_args.eval_file, script_args.dataset_test_split, script_args.max_eval_samples
        )

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=math_reward,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name or script_args.train_file)


if __name__ == "__main__":
    parser = TrlParser((KimiMathScriptArguments, KimiConfig, ModelConfig))
    main(*parser.parse_args_and_config())
