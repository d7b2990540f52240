# /// script
# dependencies = [
#     "trl-kimi @ git+https://github.com/<owner>/trl-kimi",  # placeholder: the maintainer fills in the owner
#     "trl==1.16.*",
#     "math-verify[antlr4_13_2]",
# ]
# ///

"""
Kimi k1.5 online mirror descent on GSM8K (or a MATH-style dataset) with a Hub model, on one GPU or many.

The reward is `trl_kimi.verifiers.math_reward` (math-verify plus the normalisations it misses, never a false
positive), optionally with Kimi's length penalty (`--length_penalty_weight`, report §2.3.3) and the repetition
penalty (`--repetition_penalty_reward`). Prompts are built exactly as `trl-kimi train` and `trl-kimi eval` build them
(`trl_kimi.prompts.make_prompt_dataset`: the problem and the `\\boxed{}` instruction in the user turn), so a model
trained here is evaluated on the prompts it was trained on. GSM8K rows (`question`, `answer` ending in `#### 42`) and
MATH rows (`problem` with `answer`, or with a `solution` ending in `\\boxed{}`) are understood; data comes from the Hub (`--dataset_name`) or local JSON Lines
files (`--train_file`, `--eval_file`).

One GPU, vLLM colocated (`pip install "trl-kimi[vllm]"`); 2 optimizer steps per generated batch, so tau acts:

```bash
accelerate launch examples/kimi_gsm8k.py \
    --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \
    --output_dir Qwen2.5-1.5B-Kimi-GSM8K \
    --tau 0.1 --num_generations 8 --per_device_train_batch_size 16 --gradient_accumulation_steps 2 \
    --steps_per_generation 4 --learning_rate 1e-6 --max_completion_length 1024 --bf16 true \
    --use_vllm --vllm_mode colocate --length_penalty_weight 0.5 --logging_steps 5 --report_to trackio
```

Eight GPUs, a 7B model sharded with ZeRO-3 (`pip install "trl-kimi[deepspeed]"`; FSDP2:
`examples/accelerate_configs/fsdp2.yaml`), bf16 weights, vLLM colocated:

```bash
accelerate launch --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/kimi_gsm8k.py \
    --model_name_or_path Qwen/Qwen2.5-7B-Instruct --dataset_name openai/gsm8k --dataset_config main \
    --output_dir Qwen2.5-7B-Kimi-GSM8K --bf16 true --gradient_checkpointing true \
    --per_device_train_batch_size 8 --gradient_accumulation_steps 2 --steps_per_generation 4 \
    --use_vllm --vllm_mode colocate --vllm_enable_sleep_mode true --report_to wandb --push_to_hub
```

`--steps_per_generation` larger than `--gradient_accumulation_steps` makes several optimizer steps per generated
batch, which is where `--tau` (the pull towards the iteration's policy) acts.

Curation (report §2.2, `trl_kimi.curation`): before training, the rules drop hackable formats (multiple choice,
true/false, yes/no, proofs), exact and near duplicates and, with an evaluation set, training problems sharing a
13-word n-gram with it (`--curate false` turns this off). Cost: seconds on a CPU (GSM8K's 7,473 training problems: 3
near duplicates; 4 share a 13-gram with its test split). The model steps of the report (drop problems the model
answers right in any of 8 answer-only tries; label difficulty by pass rate over 10 samples) need generation, so they
are a separate command whose output this script trains on; they cost about N x (8 x 32 + 10 x max_new_tokens)
generated tokens for N problems (the pass rates dominate; `--num_samples 0` skips them):

```bash
trl-kimi curate --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --dataset_name openai/gsm8k --dataset_config main \
    --eval_dataset_name openai/gsm8k --eval_dataset_config main --use_vllm --output_dir gsm8k-curated
accelerate launch examples/kimi_gsm8k.py --train_file gsm8k-curated/kept.jsonl ...  # flags as above
```
"""

from dataclasses import dataclass, field

from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer, LengthPenaltyReward
from trl_kimi.curation import CurationConfig, curate
from trl_kimi.distributed import end_training
from trl_kimi.hub import load_dataset_any
from trl_kimi.prompts import make_prompt_dataset
from trl_kimi.rewards import RepetitionPenaltyReward
from trl_kimi.verifiers import math_reward


@dataclass
class KimiMathScriptArguments(ScriptArguments):
    """
    Script arguments for the Kimi math example, on top of TRL's `ScriptArguments` (`--dataset_name`, ...).

    Args:
        train_file (`str`, *optional*):
            Local JSON Lines file to train on (GSM8K or MATH columns). Used instead of `--dataset_name` when set.
        eval_file (`str`, *optional*):
            Local JSON Lines file to evaluate on, with `--eval_strategy`.
        max_train_samples (`int`, *optional*):
            Keep only the first N training rows (quick runs).
        max_eval_samples (`int`, *optional*):
            Keep only the first N evaluation rows.
        system_prompt (`str`, *optional*):
            System message put before each problem (none by default, as in `trl-kimi train`/`eval`).
        length_penalty_weight (`float`, *optional*, defaults to `0.0`):
            Weight of Kimi's length penalty (0 = off; the report uses 0.5 after a warm-up).
        length_penalty_warmup_steps (`float`, *optional*, defaults to `0.1`):
            Steps before it starts: an integer >= 1, or a fraction of `max_steps`.
        repetition_penalty_reward (`float`, *optional*, defaults to `0.0`):
            Reward of a completion with a 32-token n-gram repeated 3 times (0 = off; the spec uses -0.5).
        curate (`bool`, *optional*, defaults to `True`):
            Drop hackable formats, duplicates and problems overlapping the evaluation set before training
            (`trl_kimi.curation.curate` without a model).
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset, e.g. openai/gsm8k."})
    train_file: str | None = field(default=None, metadata={"help": "Local JSON Lines training file."})
    eval_file: str | None = field(default=None, metadata={"help": "Local JSON Lines evaluation file."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message before each problem."})
    length_penalty_weight: float = field(default=0.0, metadata={"help": "Kimi length penalty weight (0 = off)."})
    length_penalty_warmup_steps: float = field(
        default=0.1, metadata={"help": "Steps before the length penalty starts (int >= 1 or a fraction)."}
    )
    repetition_penalty_reward: float = field(
        default=0.0, metadata={"help": "Reward of a repeated completion (0 = off, e.g. -0.5)."}
    )
    curate: bool = field(
        default=True, metadata={"help": "Drop hackable formats, duplicates and eval-set overlap before training."}
    )


def load_split(script_args: KimiMathScriptArguments, file: str | None, split: str, limit: int | None):
    """GSM8K (`question`/`answer`) or MATH (`problem`/`answer` or `problem`/`solution`) rows → TRL's conversational `prompt` + `solution`,
    the format of `trl-kimi train` and `trl-kimi eval`."""
    if file is None and script_args.dataset_name is None:
        raise ValueError("Pass --train_file (a local JSON Lines file) or --dataset_name (a Hub dataset).")
    dataset = load_dataset_any(
        file or script_args.dataset_name, script_args.dataset_config, split=split, num_rows=limit
    )
    columns = dataset.column_names
    if "prompt" in columns and "solution" in columns:  # already in TRL's format (e.g. `trl-kimi curate`'s kept.jsonl)
        return dataset
    benchmark = (
        "gsm8k"
        if "question" in columns
        else "math500"
        if {"problem", "answer"} <= set(columns)
        else "math"
        if {"problem", "solution"} <= set(columns)
        else None
    )
    if benchmark is None:
        raise ValueError(
            f"Unknown row format with columns {sorted(columns)}: expected GSM8K (question, answer) or MATH "
            "(problem, answer; or problem, solution)."
        )
    return make_prompt_dataset(dataset, benchmark, conversational=True, system_prompt=script_args.system_prompt)


def reward_funcs(script_args: KimiMathScriptArguments) -> list:
    """math_reward, plus the length and repetition penalties when their flags switch them on."""
    rewards = [math_reward]
    if script_args.length_penalty_weight:
        warmup = script_args.length_penalty_warmup_steps
        rewards.append(
            LengthPenaltyReward(
                correctness_reward="math_reward",
                weight=script_args.length_penalty_weight,
                warmup_steps=int(warmup) if warmup >= 1 else warmup,
            )
        )
    if script_args.repetition_penalty_reward:
        rewards.append(RepetitionPenaltyReward(penalty=script_args.repetition_penalty_reward))
    return rewards


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
    if script_args.curate:
        # The rules only (no model): cheap, and the same on every process.
        result = curate(train_dataset, config=CurationConfig(), eval_dataset=eval_dataset)
        print(
            f"Curation kept {result.summary['num_kept']} of {len(train_dataset)} problems: {result.summary['dropped']}"
        )
        train_dataset = result.kept.remove_columns(["pass_rate", "difficulty"])

    ################
    # Training
    ################
    trainer = KimiMirrorDescentTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs(script_args),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name or script_args.train_file)
    end_training(trainer)  # destroy the process group before exit (multi-process runs), in an order that cannot hang


if __name__ == "__main__":
    parser = TrlParser((KimiMathScriptArguments, KimiConfig, ModelConfig))
    main(*parser.parse_args_and_config())
