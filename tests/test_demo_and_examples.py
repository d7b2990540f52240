import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.utils import tiny_model
from trl_kimi import demo
from trl_kimi.tasks import arithmetic


REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
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
    results = demo.cli(
        [
            "--output_dir",
            str(tmp_path),
            "--num_sft_examples",
            "64",
            "--sft_steps",
            "3",
            "--rl_steps",
            "2",
            "--num_train_prompts",
            "16",
            "--num_eval_prompts",
            "8",
            "--eval_samples",
            "1",
            "--hidden_size",
            "32",
            "--num_layers",
            "1",
            "--prompts_per_batch",
            "2",
            "--num_generations",
            "2",
            "--max_completion_length",
            "16",
        ]
    )
    for phase in ("before", "after"):
        assert 0.0 <= results[phase]["accuracy"] <= 1.0 and results[phase]["mean_tokens"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["after"] == results["after"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "Results on the embedded task" in card and "2501.12599" in card and "trl-kimi" in card
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "model" / "tokenizer.json").exists()
    assert (tmp_path / "warm_start" / "model.safetensors").exists()
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_gsm8k_example_row_formats():
    example = load_example("kimi_gsm8k")
    gsm8k = example.to_prompt_and_solution({"question": "How many?", "answer": "2 + 2 = 4\n#### 1,450"}, "Box it.")
    assert gsm8k == {
        "prompt": [{"role": "system", "content": "Box it."}, {"role": "user", "content": "How many?"}],
        "solution": "1450",
    }
    math_row = example.to_prompt_and_solution({"problem": "x?", "solution": "so \\boxed{3}", "answer": "3"}, "")
    assert math_row == {"prompt": [{"role": "user", "content": "x?"}], "solution": "3"}
    with pytest.raises(ValueError, match="Unknown row format with columns \\['text'\\]"):
        example.to_prompt_and_solution({"text": "?"}, "")


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
