"""LoRA end to end, offline: `trl-kimi train --use_peft` → `trl-kimi eval` on the adapter folder (base + merged
adapter) → results into the card (`--push_results`) → `push_to_hub` of the adapter, against a faked Hub."""

import json
import os
from types import SimpleNamespace

import pytest
import torch


pytest.importorskip("peft")

from tests.utils import TINY_TRAIN, tiny_model  # noqa: E402
from trl_kimi.cli import main  # noqa: E402
from trl_kimi.hub import load_causal_lm  # noqa: E402
from trl_kimi.scripts import train  # noqa: E402
from trl_kimi.tasks import arithmetic  # noqa: E402


def test_lora_train_eval_push(tmp_path, capsys, monkeypatch):
    base = tmp_path / "base"
    tokenizer = arithmetic.make_tokenizer()
    tiny_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = tmp_path / "lora"

    # train: LoRA on the tiny Qwen2; the output folder holds the adapter, not the whole model
    argv = [
        "--model_name_or_path",
        str(base),
        "--dataset_name",
        "chain-sum",
        "--max_train_samples",
        "8",
        "--output_dir",
        str(run),
        *TINY_TRAIN,
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--learning_rate",
        "0.05",
        "--reward",
        "tests.utils.digit_fraction_reward",
    ]  # fmt: skip  (varies within a group: nonzero gradients)
    trainer = train.train(*train.make_parser().parse_args_and_config(argv))
    files = set(os.listdir(run))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files
    assert "model.safetensors" not in files
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)

    # the adapter folder loads as its base with the adapter merged in: the trained weights, not the base's
    merged = load_causal_lm(str(run))
    base_model = load_causal_lm(str(base))
    trained = trainer.model.merge_and_unload().state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(merged.state_dict()[name], trained[name])
    assert not torch.allclose(merged.state_dict()[name], base_model.state_dict()[name])

    # eval the adapter folder and put the results into its card and a (faked) Hub card
    pushed = {}
    monkeypatch.setattr("huggingface_hub.ModelCard.load", classmethod(lambda cls, repo_id, **kw: cls("---\n---\n")))
    monkeypatch.setattr(
        "huggingface_hub.ModelCard.push_to_hub", lambda self, repo_id, **kw: pushed.update({repo_id: str(self)})
    )
    eval_dir = tmp_path / "eval"
    capsys.readouterr()
    assert main(["eval", "--model_name_or_path", str(run), "--dataset_name", "chain-sum", "--max_eval_samples", "4",
                 "--reward", "tests.utils.digit_fraction_reward",
                 "--num_samples", "2", "--k", "1", "2", "--max_completion_length", "8", "--output_dir",
                 str(eval_dir), "--progress", "false", "--push_results", "--hub_model_id", "someone/tiny-lora"]) == 0  # fmt: skip
    summary = json.loads((eval_dir / "summary.json").read_text())
    card = (run / "README.md").read_text()
    assert "model-index:" in card and "## Evaluation (trl-kimi eval)" in card
    assert f"value: {summary['accuracy']}" in card and "name: pass@2" in card and "name: avg@2" in card
    assert "- trl-kimi" in card  # the training card is kept, results added
    assert "model-index:" in pushed["someone/tiny-lora"] and "name: pass@2" in pushed["someone/tiny-lora"]

    # push the adapter (TRL's push_to_hub, faked Hub as in test_hub.py)
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return SimpleNamespace(repo_id=f"someone/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls["upload"] = (repo_id, sorted(os.listdir(folder_path)))
            return "https://huggingface.co/someone/tiny-lora/commit/0"

    monkeypatch.setattr("transformers.trainer.hf_api", lambda: FakeApi())
    monkeypatch.setattr(trainer, "hub_model_id", None)
    monkeypatch.setattr(trainer.args, "hub_model_id", "tiny-lora")
    trainer.push_to_hub(dataset_name="chain-sum")
    repo_id, uploaded = calls["upload"]
    assert repo_id == "someone/tiny-lora" and {"adapter_config.json", "adapter_model.safetensors"} <= set(uploaded)


def test_lora_folder_without_its_base_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    assert main(["eval", "--model_name_or_path", str(adapter), "--dataset_name", "chain-sum"]) == 1
    err = capsys.readouterr().err
    assert f"LoRA adapter folder {str(adapter)!r}: its base model {str(tmp_path / 'gone')!r}" in err
    assert "adapter_config.json" in err
