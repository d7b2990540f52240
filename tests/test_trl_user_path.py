"""The path of a TRL user through `trl-kimi` (issue 29): each defect found reading it as one, with its test. Offline,
on the tiny model; the few training runs take 2 steps."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.utils import TINY_TRAIN
from trl_kimi.cli import main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_error(argv, capsys) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- datasets
def test_no_dataset_is_an_error_not_the_toy_task(base_model, tmp_path, capsys):
    err = run_error(["train", "--model_name_or_path", base_model, "--output_dir", str(tmp_path), *TINY_TRAIN], capsys)
    assert "No dataset given" in err and "--dataset_name chain-sum" in err
    assert not (tmp_path / "README.md").exists()  # nothing was trained


def test_dataset_streaming_is_refused(base_model, tmp_path, capsys):
    argv = ["train", "--model_name_or_path", base_model, "--dataset_name", "chain-sum", "--dataset_streaming", "true",
            "--output_dir", str(tmp_path), *TINY_TRAIN]  # fmt: skip
    assert "--dataset_streaming is not supported" in run_error(argv, capsys)


def test_local_file_needs_its_own_eval_file(tmp_path):
    from trl_kimi.scripts._common import eval_source

    train = write_jsonl(tmp_path / "train.jsonl", [{"problem": "1+1?", "solution": "\\boxed{2}"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"problem": "2+2?", "solution": "\\boxed{4}"}])
    assert eval_source(train, test) == (test, "train")
    assert eval_source("openai/gsm8k", "test") == ("openai/gsm8k", "test")  # a Hub id keeps its split name
    with pytest.raises(ValueError, match="holds the training rows only"):
        eval_source(train, "test")  # never evaluate on the training rows


def test_math_train_set_with_problem_and_solution_columns_and_a_local_eval_file(base_model, tmp_path):
    """The MATH training command: `problem`/`solution` rows (the solution ends in a boxed answer), a local eval file
    given as --dataset_test_split, the math verifier."""
    from trl_kimi.scripts import train

    train_rows = [{"problem": f"What is {i} + {i}?", "solution": f"So \\boxed{{{2 * i}}}.", "level": "1"}
                  for i in range(6)]  # fmt: skip
    test_rows = [{"problem": f"What is {i} * 3?", "solution": f"\\boxed{{{3 * i}}}", "level": "2"} for i in range(3)]
    argv = ["--model_name_or_path", base_model, "--dataset_name", write_jsonl(tmp_path / "train.jsonl", train_rows),
            "--dataset_test_split", write_jsonl(tmp_path / "test.jsonl", test_rows), "--dataset_format", "math",
            "--reward", "math", "length_penalty", "--eval_strategy", "steps", "--eval_steps", "2",
            "--per_device_eval_batch_size", "3", "--output_dir", str(tmp_path / "run"), *TINY_TRAIN]  # fmt: skip
    trainer = train.train(*train.make_parser().parse_args_and_config(argv))
    assert trainer.reward_func_names == ["math_reward", "length_penalty"]
    assert trainer.eval_dataset["solution"] == [row["solution"] for row in test_rows]  # the eval file's rows
    assert trainer.train_dataset[0]["prompt"].startswith("What is 0 + 0?\n\nPlease reason step by step")
    assert trainer.train_dataset["solution"] == [row["solution"] for row in train_rows]
    assert any("eval_reward" in entry for entry in trainer.state.log_history)


# ---------------------------------------------------------------------------------------------------- rewards
def test_custom_reward_imports_from_the_working_directory(tmp_path, monkeypatch):
    from trl_kimi.scripts._common import import_reward

    (tmp_path / "my_rewards_29.py").write_text("def format_reward(completions, **kwargs):\n    return [1.0]\n")
    monkeypatch.chdir(tmp_path)
    # as under `trl-kimi` (a console script) or a launcher: the working directory is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert import_reward("my_rewards_29.format_reward")(completions=["x"]) == [1.0]


def raising_reward(completions, **kwargs):
    raise ValueError("my reward cannot parse this")


def test_an_error_inside_training_keeps_its_traceback(base_model, tmp_path):
    """A ValueError from a user's reward function is not printed as one line of 'bad input': it propagates chained,
    so Python prints both tracebacks (the command line only shortens errors of its own checks)."""
    argv = ["train", "--model_name_or_path", base_model, "--dataset_name", "chain-sum", "--max_train_samples", "6",
            "--reward", "chain-sum", "tests.test_trl_user_path.raising_reward", "--output_dir", str(tmp_path),
            *TINY_TRAIN]  # fmt: skip
    with pytest.raises(RuntimeError, match="Training failed: ValueError: my reward cannot parse this") as info:
        main(argv)
    assert isinstance(info.value.__cause__, ValueError)
    frames = []
    tb = info.value.__cause__.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "raising_reward"  # the traceback reaches the line that raised


# ---------------------------------------------------------------------------------------------------- models
def test_trust_remote_code_reaches_the_pre_checks(base_model, tmp_path, monkeypatch):
    from trl_kimi import hub
    from trl_kimi.scripts import train

    # A Hub model with its own code: the existence check and the tokenizer load get the flag.
    calls = []

    def from_pretrained(name, **kwargs):
        calls.append((name, kwargs.get("trust_remote_code")))
        return SimpleNamespace(tokenizer=SimpleNamespace(padding_side="right"))

    monkeypatch.setattr(hub.AutoConfig, "from_pretrained", from_pretrained)
    monkeypatch.setattr(hub.AutoProcessor, "from_pretrained", from_pretrained)
    hub.load_processing_class("org/custom-code-model", trust_remote_code=True)
    assert calls == [("org/custom-code-model", True), ("org/custom-code-model", True)]
    hub.load_processing_class("org/custom-code-model")
    assert calls[2:] == [("org/custom-code-model", False), ("org/custom-code-model", False)]

    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before the model loads

    monkeypatch.setattr(train, "load_processing_class", record)
    argv = ["--model_name_or_path", base_model, "--dataset_name", "chain-sum", "--trust_remote_code", "true",
            "--output_dir", str(tmp_path / "run"), *TINY_TRAIN]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train.train(*train.make_parser().parse_args_and_config(argv))
    assert seen == {"trust_remote_code": True}


def test_card_licence_is_the_base_models(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    from trl_kimi.model_card import generate_kimi_model_card

    def card(base_model, **kwargs):
        return generate_kimi_model_card(model_name="m", model_id="m", base_model=base_model, dataset_name=None,
                                        tags=[], trainer_name="t", paper={}, config_values={}, trackers={},
                                        **kwargs)  # fmt: skip

    cards = {
        "meta-llama/Llama-3.2-1B-Instruct": "---\nlicense: llama3.2\n---\n# Llama\n",
        "org/custom": "---\nlicense: other\nlicense_name: custom-license\nlicense_link: LICENSE\n---\n",
    }

    def load(repo_id, *args, **kwargs):
        if repo_id not in cards:
            raise OSError(f"no card for {repo_id}")
        return ModelCard(cards[repo_id])

    monkeypatch.setattr(ModelCard, "load", staticmethod(load))
    assert card("meta-llama/Llama-3.2-1B-Instruct").data.license == "llama3.2"
    other = card("org/custom").data
    assert (other.license, other.license_name, other.license_link) == ("other", "custom-license", "LICENSE")
    assert "license" not in card("org/unreachable").data.to_dict()  # unknown: no licence rather than a guess
    assert "license" not in card(None).data.to_dict()
    assert card(None, license_fields={"license": "apache-2.0"}).data.license == "apache-2.0"


def test_push_results_updates_the_hub_metadata_without_replacing_the_card(monkeypatch):
    import huggingface_hub

    from trl_kimi.scripts.evaluate import push_results

    calls = []
    monkeypatch.setattr(huggingface_hub, "metadata_update", lambda *args, **kwargs: calls.append((args, kwargs)))

    def no_card_replacement(*args, **kwargs):
        raise AssertionError("the card must not be loaded and pushed whole")

    monkeypatch.setattr(huggingface_hub.ModelCard, "load", no_card_replacement)
    monkeypatch.setattr(huggingface_hub.ModelCard, "push_to_hub", no_card_replacement)
    args = SimpleNamespace(model_name_or_path="org/model", hub_model_id=None, dataset_name="HuggingFaceH4/MATH-500",
                           dataset_config=None, dataset_test_split="test")  # fmt: skip
    summary = {"model": "org/model", "accuracy": 0.5, "num_samples": 4, "pass_at_k": {"pass@4": 0.75}}
    assert push_results(args, summary) == ["hf://org/model/README.md"]
    ((positional, options),) = calls
    assert positional[0] == "org/model" and options["overwrite"] is True
    (entry,) = positional[1]["model-index"]
    metrics = {m["name"]: m["value"] for result in entry["results"] for m in result["metrics"]}
    assert metrics == {"avg@4": 0.5, "pass@4": 0.75}
    assert entry["results"][0]["dataset"]["name"] == "HuggingFaceH4/MATH-500"


# ---------------------------------------------------------------------------------------------------- launching
def test_trl_accelerate_config_names_resolve():
    from trl_kimi.scripts.train import launch_args

    base = ["--model_name_or_path", "m", "--dataset_name", "chain-sum"]
    for name in ("zero3", "single_gpu"):  # TRL's names (trl/accelerate_configs)
        _, resolved = launch_args([*base, "--accelerate_config", name], "trl-kimi train")
        assert resolved[0] == "--config_file" and resolved[1].endswith(f"trl/accelerate_configs/{name}.yaml")
        assert os.path.isfile(resolved[1])
    _, resolved = launch_args([*base, "--accelerate_config", "cpu_2proc"], "trl-kimi train")  # ours first
    assert resolved[1].endswith(os.path.join("accelerate_configs", "cpu_2proc.yaml"))
    with pytest.raises(ValueError, match="neither a file nor a valid config.*also ships: cpu_2proc"):
        launch_args([*base, "--accelerate_config", "zero4"], "trl-kimi train")


def test_an_unknown_option_is_a_short_error():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trl_kimi.cli",
            "train",
            "--model_name_or_path",
            "m",
            "--dataset_name",
            "chain-sum",
            "--no_such_option",
            "1",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 1
    assert "Unknown flags ['--no_such_option']" in result.stderr and "usage: accelerate" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


# ---------------------------------------------------------------------------------------------------- layering
def test_imports_change_no_environment_and_the_hub_layer_knows_no_toy_task():
    code = (
        "import os, sys; before = dict(os.environ); import trl_kimi.hub;"
        "assert 'trl_kimi.tasks.arithmetic' not in sys.modules, 'hub imports the toy task';"
        "import trl_kimi.demo; assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items());"
        "print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
