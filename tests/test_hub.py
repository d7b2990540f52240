"""Model cards, saved-folder layout, reload, a faked `push_to_hub`, and the loading helpers' errors (all offline)."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.utils import tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.hub import check_model_name_or_path, load_dataset_any, load_tokenizer
from trl_kimi.model_card import card_config_values, card_metrics, generate_kimi_model_card
from trl_kimi.tasks import arithmetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model after one Kimi step, saved with its tokenizer and card."""
    out = tmp_path_factory.mktemp("kimi-card")
    tokenizer = arithmetic.make_tokenizer()
    trainer = KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=arithmetic.addition_reward,
        args=tiny_config(out, max_steps=1, tau=0.3),
        train_dataset=arithmetic.make_rl_dataset(8, seed=0, max_terms=3),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out))
    trainer.create_model_card(dataset_name="chain-sum", eval_results={"accuracy": 0.125, "pass@2": 0.25})
    return trainer, out


def test_card_content(trained):
    _, out = trained
    card = (out / "README.md").read_text()
    # TRL's tags (`_tag_names`) in the metadata, the paper (`_paper`) linked and cited, TRL cited
    for tag in ("trl", "trl-kimi", "kimi-k1.5", "mirror-descent", "generated_from_trainer"):
        assert f"- {tag}\n" in card
    assert "https://huggingface.co/papers/2501.12599" in card
    assert "@article{kimiteam2025kimik15" in card and "@software{vonwerra2020trl" in card
    # the key config values, as set
    assert "| `tau` | 0.3 |" in card and "| `num_generations` | 3 |" in card and "| `max_steps` | 1 |" in card
    # the dataset, the training metrics and the evaluation results passed in
    assert "`chain-sum`" in card
    assert "| `loss` |" in card and "| `reward` |" in card
    assert "| `accuracy` | 0.125 |" in card and "| `pass@2` | 0.25 |" in card
    # how to use: from_pretrained on the folder (no Hub id was set)
    assert f'from_pretrained("{out}")' in card
    assert "\nlicense:" not in card  # a model made from scratch here has no base model licence to inherit


def test_saved_folder_layout_and_reload(trained):
    trainer, out = trained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert "training_args.bin" in names
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    for name, param in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], param, msg=name)
    assert tokenizer("a3b5=").input_ids == arithmetic.make_tokenizer()("a3b5=").input_ids


def test_push_to_hub_is_faked_and_uploads_model_tokenizer_and_card(trained, monkeypatch):
    trainer, out = trained
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create_repo"] = repo_id
            return SimpleNamespace(repo_id=f"someone/{repo_id}")

        def upload_folder(self, repo_id, folder_path, **kwargs):
            # what would be uploaded: the folder's files minus the ignore patterns (`_*`, `checkpoint-*`)
            calls["upload"] = (repo_id, sorted(os.listdir(folder_path)), kwargs["ignore_patterns"])
            calls["card"] = Path(folder_path, "README.md").read_text()
            return "https://huggingface.co/someone/kimi-tiny/commit/0"

    monkeypatch.setattr("transformers.trainer.hf_api", lambda: FakeApi())
    monkeypatch.setattr(trainer, "hub_model_id", None)
    monkeypatch.setattr(trainer.args, "hub_model_id", "kimi-tiny")
    trainer.push_to_hub(dataset_name="openai/gsm8k")

    assert calls["create_repo"] == "kimi-tiny"
    repo_id, files, ignore = calls["upload"]
    assert repo_id == "someone/kimi-tiny"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert "checkpoint-*" in ignore
    # the card pushed points at the Hub id and links the Hub dataset
    assert 'from_pretrained("someone/kimi-tiny")' in calls["card"]
    assert "[openai/gsm8k](https://huggingface.co/datasets/openai/gsm8k)" in calls["card"]
    assert "- openai/gsm8k" in calls["card"]  # card metadata: datasets


def test_card_helpers():
    history = [{"loss": 0.5, "reward": 0.25, "step": 1}, {"loss": 0.25, "step": 2, "note": "x"}]
    assert card_metrics(history) == {"loss": 0.25, "reward": 0.25}
    assert card_metrics(history, names=("reward",)) == {"reward": 0.25}
    assert card_config_values(SimpleNamespace(tau=0.1, beta=None, seed=3)) == {"tau": 0.1, "seed": 3}
    card = generate_kimi_model_card(
        model_name="m",
        model_id="org/m",
        base_model="Qwen/Qwen2.5-0.5B-Instruct",
        dataset_name="/tmp/data.jsonl",
        tags=["trl-kimi"],
        trainer_name="Kimi",
        paper=KimiMirrorDescentTrainer._paper,
        config_values={"tau": 0.1},
    )
    text = str(card)
    assert "base_model: Qwen/Qwen2.5-0.5B-Instruct" in text
    assert "[Qwen/Qwen2.5-0.5B-Instruct](https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct)" in text
    assert "`/tmp/data.jsonl`" in text and "datasets:" not in text  # a local file is named, not linked
    assert "## Metrics" not in text  # nothing logged, no empty table


# ---------------------------------------------------------------------------------------------------- bad input
def test_unknown_model_id_or_unreadable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="no such local folder, and not a Hub model id"):
        check_model_name_or_path("no-such-org/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model folder"):
        check_model_name_or_path(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="No model given"):
        check_model_name_or_path(None)
    with pytest.raises(ValueError, match="no such local folder"):
        load_tokenizer(str(tmp_path / "missing"))


def test_load_dataset_any(tmp_path):
    from trl_kimi.scripts._common import load_rows

    # the toy task is served by the command line's layer, by name; the hub layer does not know it
    assert load_rows("chain-sum", None, "train", num_rows=3, seed=0).column_names == ["prompt", "answer"]
    with pytest.raises(ValueError, match="Cannot load dataset 'chain-sum'"):
        load_dataset_any("chain-sum")
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "#### 4"}\n')
    assert load_dataset_any(str(path), num_rows=1)["question"] == ["1+1?"]
    with pytest.raises(ValueError, match="unknown extension"):
        (tmp_path / "rows.xml").write_text("<a/>")
        load_dataset_any(str(tmp_path / "rows.xml"))
    with pytest.raises(ValueError, match="Cannot load dataset"):
        load_dataset_any(str(tmp_path / "missing.jsonl"))


def test_card_brings_back_trls_tracker_badges_and_run_tags(monkeypatch):
    monkeypatch.setenv("JOB_ID", "123")
    card = str(
        generate_kimi_model_card(
            model_name="m",
            model_id="org/m",
            base_model=None,
            dataset_name=None,
            tags=["trl", "trl-kimi"],
            trainer_name="Kimi",
            paper=KimiMirrorDescentTrainer._paper,
            config_values={},
            trackers={"wandb_url": "https://wandb.ai/me/run1", "trackio_url": "me-space", "comet_url": None},
        )
    )
    assert "[<img src=" in card and "(https://wandb.ai/me/run1)" in card and "Visualize in Trackio" in card
    assert "Visualize in Comet" not in card  # no Comet run, no badge
    assert "- hf_jobs\n" in card and "- trackio:me-space\n" in card and "- trl-kimi\n" in card


def test_eval_results_go_into_the_card_as_model_index(trained):
    from huggingface_hub import ModelCard

    from trl_kimi.model_card import add_eval_results

    _, out = trained
    card = ModelCard.load(out / "README.md")
    summary = {"model": str(out), "accuracy": 0.25, "num_samples": 4, "pass_at_k": {"pass@1": 0.25, "pass@4": 0.5}}
    add_eval_results(card, summary, "HuggingFaceH4/MATH-500", dataset_split="test")
    add_eval_results(card, {**summary, "accuracy": 0.5}, "openai/gsm8k", dataset_config="main", dataset_split="test")
    add_eval_results(card, {**summary, "pass_at_k": {"pass@4": 0.75}}, "HuggingFaceH4/MATH-500", dataset_split="test")
    results = {(r.dataset_name, r.metric_name): r.metric_value for r in card.data.eval_results}
    # the second MATH-500 run replaced the first one's avg@4 and pass@4, kept its pass@1; GSM8K added alongside
    assert results == {
        ("HuggingFaceH4/MATH-500", "pass@1"): 0.25,
        ("openai/gsm8k", "avg@4"): 0.5,
        ("openai/gsm8k", "pass@1"): 0.25,
        ("openai/gsm8k", "pass@4"): 0.5,
        ("HuggingFaceH4/MATH-500", "avg@4"): 0.25,
        ("HuggingFaceH4/MATH-500", "pass@4"): 0.75,
    }
    text = str(card)
    assert (
        text.count("## Evaluation (trl-kimi eval)") == 1 and "| openai/gsm8k (main) | test | avg@4 | 0.5000 |" in text
    )
    assert "model-index:" in text and "- trl-kimi" in text and "| `tau` | 0.3 |" in text  # the training card kept
    reloaded = ModelCard(text)
    assert len(reloaded.data.eval_results) == 6
