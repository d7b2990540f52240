import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, HfArgumentParser, PreTrainedTokenizerFast

from tests.utils import SHARED_DATA, tiny_model
from trl_kimi import demo
from trl_kimi.hub import load_dataset_any
from trl_kimi.tasks import arithmetic


REPO = Path(__file__).resolve().parents[1]
GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"
# Each run is shrunk to seconds: a 1-layer, 32-wide model, a handful of prompts, 1-3 steps.
TINY_RUN = [
    "--use_cpu",
    "--bf16",
    "False",
    "--max_steps",
    "1",
    "--per_device_train_batch_size",
    "4",
    "--num_generations",
    "2",
    "--max_completion_length",
    "8",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
]


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_demo_writes_model_card_plot_and_results(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--num_sft_examples", "64", "--sft_steps", "3", "--rl_steps", "2",
            "--num_train_prompts", "16", "--num_eval_prompts", "8", "--eval_samples", "2", "--hidden_size", "32",
            "--num_layers", "1", "--prompts_per_batch", "2", "--num_generations", "2", "--steps_per_generation", "2",
            "--max_completion_length", "16"]  # fmt: skip
    results = demo.cli(argv)
    # The reported figures are those of the saved models: re-measured from disk on the same held-out split, they
    # agree exactly (seeded sampling), and the card shows them.
    (args,) = HfArgumentParser(demo.DemoArguments).parse_args_into_dataclasses(args=argv)
    tokenizer = arithmetic.make_tokenizer()
    sft = arithmetic.make_sft_dataset(
        args.num_sft_examples, seed=args.seed, max_terms=args.max_terms, long_fraction=args.long_fraction,
        long_slip_rate=args.long_slip_rate, short_slip_rate=args.short_slip_rate,
    )  # fmt: skip
    held_out = arithmetic.make_rl_dataset(
        args.num_eval_prompts, seed=args.seed + 1, max_terms=args.max_terms, exclude=sft
    )
    for phase, folder in (("before", "warm_start"), ("after", "model")):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / folder)
        assert demo.evaluate(args, model, tokenizer, held_out) == results[phase]
        assert results[phase]["mean_tokens"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["after"] == results["after"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Results on the embedded task" in card and "2501.12599" in card and "trl-kimi" in card
    assert f"| {results['after']['accuracy']:.3f} |" in card and "| `tau` | 1.0 |" in card
    assert "license: apache-2.0" in card and "length penalty (weight 0.5" in card
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "model" / "tokenizer.json").exists()
    assert (tmp_path / "warm_start" / "model.safetensors").exists()
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["training_accuracy"]) == {"first_tenth", "last_tenth"}


def test_demo_length_penalty_follows_the_recipe():
    """The demo's rewards: the exact verifier, then Kimi's length penalty judged by it and switched on after a
    warm-up (the report trains without it first); a weight of 0 leaves the verifier alone."""
    args = demo.DemoArguments(rl_steps=200)
    verifier, penalty = demo.rl_rewards(args)
    assert verifier is arithmetic.addition_reward and penalty.correctness_reward == "addition_reward"
    assert penalty.scale(49, max_steps=200) == 0.0 and penalty.scale(50, max_steps=200) == 1.0
    rewards = penalty.compute([3, 10, 26, 26], [True, True, True, False], num_generations=4, step=60, max_steps=200)
    assert rewards == pytest.approx([0.25, 0.5 * (0.5 - 7 / 23), -0.25, -0.25])  # weight 0.5 x the spec's lambda
    assert demo.rl_rewards(demo.DemoArguments(length_penalty_weight=0.0)) == [arithmetic.addition_reward]


def test_arithmetic_example(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    tiny_model(tokenizer).save_pretrained(tmp_path / "warm")
    tokenizer.save_pretrained(tmp_path / "warm")
    result = run_script(
        "examples/kimi_arithmetic.py",
        "--model_name_or_path",
        str(tmp_path / "warm"),
        "--output_dir",
        str(tmp_path / "out"),
        "--num_train_prompts",
        "8",
        "--num_eval_prompts",
        "4",
        *TINY_RUN,
    )
    assert "held-out pass@1 (T=1.0)" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gsm8k_example_prompts_are_those_of_train_and_eval(tmp_path):
    """One prompt format per benchmark: the example, `trl-kimi train` and `trl-kimi eval` build the same rows."""
    from types import SimpleNamespace

    from trl_kimi.scripts._common import prepare_dataset

    example = load_example("kimi_gsm8k")
    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text(json.dumps({"question": "How many?", "answer": "2 + 2 = 4\n#### 1,450"}) + "\n")
    args = SimpleNamespace(dataset_name=None, dataset_config=None, system_prompt=None)
    row = example.load_split(args, str(rows), "train", None)[0]
    assert row["prompt"] == [
        {
            "role": "user",
            "content": "How many?\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    chat = SimpleNamespace(chat_template="{{ messages }}")
    cli_row = prepare_dataset(load_dataset_any(str(rows)), "auto", chat)[0]
    assert cli_row["prompt"] == row["prompt"] and cli_row["solution"] == row["solution"]
    (math_rows := tmp_path / "math.jsonl").write_text(json.dumps({"problem": "x?", "answer": "3"}) + "\n")
    assert example.load_split(args, str(math_rows), "train", None)[0]["solution"] == "3"
    (bad := tmp_path / "bad.jsonl").write_text(json.dumps({"text": "?"}) + "\n")
    with pytest.raises(ValueError, match="Unknown row format with columns \\['text'\\]"):
        example.load_split(args, str(bad), "train", None)
    # the length and repetition penalties are switched on from the example's flags
    options = SimpleNamespace(
        length_penalty_weight=0.5, length_penalty_warmup_steps=10.0, repetition_penalty_reward=-0.5
    )
    names = [getattr(f, "__name__", None) for f in example.reward_funcs(options)]
    assert names == ["math_reward", "length_penalty", "repetition_penalty"]


def tiny_text_model_dir(path: Path) -> Path:
    """A word-level tokenizer fitted on a few GSM8K lines, with a chat template, and a tiny Qwen2: no Hub."""
    lines = [json.loads(line)["question"] for line in GSM8K.read_text().splitlines()[:50]]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }} {% endfor %}"
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k")
def test_gsm8k_example(tmp_path):
    model_dir = tiny_text_model_dir(tmp_path / "tiny")
    run_script(
        "examples/kimi_gsm8k.py",
        "--model_name_or_path",
        str(model_dir),
        "--train_file",
        str(GSM8K),
        "--max_train_samples",
        "8",
        "--output_dir",
        str(tmp_path / "out"),
        "--dtype",
        "float32",
        *TINY_RUN,
    )
    assert (tmp_path / "out" / "model.safetensors").exists()
