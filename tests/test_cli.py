"""The `trl-kimi` command end to end on the tiny model, offline: train → eval → verify, YAML configs, help, errors."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.utils import TINY_TRAIN
from trl_kimi.cli import main


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top_level_help_is_fast_and_lazy():
    # `trl-kimi --help` imports neither torch nor any subcommand module
    code = "import sys; from trl_kimi.cli import main; main(['--help']); print(sorted(m for m in sys.modules if m in ('torch', 'trl', 'trl_kimi.scripts.train')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "train" in out and "long2short" in out and "eval" in out and "verify" in out
    assert out.strip().endswith("[]")


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "eval", "verify"])
def test_subcommand_help_documents_every_field(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    from trl_kimi.scripts import evaluate, train, verify

    dataclass_types = {
        "train": train.make_parser().dataclass_types,
        "eval": [evaluate.EvalArguments],
        "verify": [verify.VerifyArguments],
    }[command]
    for dataclass_type in dataclass_types:
        for f in dataclasses.fields(dataclass_type):
            if f.init:
                assert f"--{f.name}" in help_text, f.name
    if command == "train":
        assert "--tau" in help_text and "--sampling_strategy" in help_text  # KimiConfig's own fields
        for option in ("length_penalty", "repetition", "module.function", "--reward_weights", "--use_peft"):
            assert option in help_text, option  # the reward options and TRL's LoRA flags are listed


def test_train_eval_verify_end_to_end(base_model, tmp_path, capsys):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    # train, flags from a YAML file (TRL's --config) with one overridden on the command line
    config = tmp_path / "train.yaml"
    config.write_text(f"model_name_or_path: {base_model}\ndataset_name: chain-sum\nmax_train_samples: 8\ntau: 0.5\n")
    args = ["train", "--config", str(config), "--output_dir", str(run_dir), "--tau", "0.2", *TINY_TRAIN]
    assert main(args) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(os.listdir(run_dir))
    card = (run_dir / "README.md").read_text()
    assert "| `tau` | 0.2 |" in card and "`chain-sum`" in card and "- trl-kimi" in card

    # eval the trained folder
    args = ["eval", "--model_name_or_path", str(run_dir), "--dataset_name", "chain-sum", "--max_samples", "4",
            "--num_samples", "3", "--k", "1", "3", "--max_new_tokens", "12", "--output_dir", str(eval_dir),
            "--progress", "false"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["num_problems"] == 4 and summary["num_samples"] == 3 and summary["reward"] == "chain-sum"
    assert set(summary["pass_at_k"]) == {"pass@1", "pass@3"}
    assert 1 <= summary["mean_tokens"] <= 12 and summary["p50_tokens"] <= summary["p90_tokens"] <= 12
    samples = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and (eval_dir / "accuracy_vs_tokens.png").is_file()

    # verify the eval's samples: same rewards, same avg@n and pass@k
    capsys.readouterr()  # drop what train and eval printed
    assert main(["verify", "--input_file", str(eval_dir / "samples.jsonl"), "--verifier", "chain-sum",
                 "--k", "1", "3"]) == 0  # fmt: skip
    scored = [json.loads(line) for line in (eval_dir / "samples.scored.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in scored] == [r["reward"] for r in samples]
    verify_summary = json.loads(capsys.readouterr().out)
    assert verify_summary["avg_at_n"] == pytest.approx(summary["accuracy"])
    assert verify_summary["pass_at_k"]["pass@3"] == pytest.approx(summary["pass_at_k"]["pass@3"])


def test_verify_math_answers_hand_values(tmp_path, capsys):
    lines = [  # problem 0: 1 of 3 correct; problem 1: 2 of 3 (the third is right but was truncated: it scores 0)
        {"prompt_id": 0, "completion": "So \\boxed{4}.", "solution": "4"},
        {"prompt_id": 0, "completion": "So \\boxed{5}.", "solution": "4"},
        {"prompt_id": 0, "completion": "no idea", "solution": "4"},
        {"prompt_id": 1, "completion": "The answer is $\\frac{1}{2}$", "solution": "#### 0.5"},
        {"prompt_id": 1, "completion": "\\boxed{0.5}", "solution": "#### 0.5"},
        {"prompt_id": 1, "completion": "\\boxed{0.5}", "solution": "#### 0.5", "finished": False},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert (
        main(["verify", "--input_file", str(path), "--k", "1", "2", "--output_file", str(tmp_path / "o.jsonl")]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rewards == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert summary["mean_reward"] == pytest.approx(0.5)
    assert summary["avg_at_n"] == pytest.approx(0.5)  # (1/3 + 2/3) / 2
    assert summary["pass_at_k"]["pass@2"] == pytest.approx((2 / 3 + 1) / 2)  # 1 - C(2,2)/C(3,2); 1 - C(1,2)/C(3,2)


# ---------------------------------------------------------------------------------------------------- bad input
def run_error(argv, capsys) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


def test_bad_input_gives_clear_errors(base_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["--dataset_name", "chain-sum", "--output_dir", str(tmp_path / "e")]
    err = run_error(["eval", "--model_name_or_path", "no-such-org/no-such-model", *common], capsys)
    assert "trl-kimi eval: error:" in err and "not a Hub model id that resolves" in err
    (tmp_path / "not_a_model").mkdir()
    err = run_error(["eval", "--model_name_or_path", str(tmp_path / "not_a_model"), *common], capsys)
    assert "not a model folder" in err
    err = run_error(["eval", "--model_name_or_path", base_model, "--num_samples", "0", *common], capsys)
    assert "num_samples (n) must be >= 1" in err
    err = run_error(["eval", "--model_name_or_path", base_model, "--num_samples", "2", "--k", "4", *common], capsys)
    assert "k <= num_samples=2" in err

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "1 + 1?", "label": "2"}\n')
    err = run_error(["eval", "--model_name_or_path", base_model, "--dataset_name", str(rows)], capsys)
    assert "Cannot tell the dataset's format from its columns" in err and "'label'" in err
    err = run_error(["eval", "--model_name_or_path", base_model, "--dataset_name", str(rows), "--dataset_format",
                     "gsm8k"], capsys)  # fmt: skip
    assert "no column 'question'" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "1 + 1?"}\n')
    err = run_error(["train", "--model_name_or_path", base_model, "--dataset_name", str(prompts), "--reward", "math",
                     "--output_dir", str(tmp_path / "t"), *TINY_TRAIN], capsys)  # fmt: skip
    assert "needs a 'solution' column" in err
    err = run_error(["verify", "--input_file", str(tmp_path / "missing.jsonl")], capsys)
    assert "No such file" in err
    err = run_error(["verify", "--input_file", str(prompts)], capsys)
    assert "No 'completion' column" in err


def test_long2short_without_the_module_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl_kimi.long2short", None)  # as if the module were not installed
    err = run_error(["long2short", "--help"], capsys)
    assert "needs the module trl_kimi.long2short" in err


def test_long2short_help_when_available(capsys):
    pytest.importorskip("trl_kimi.long2short")
    with pytest.raises(SystemExit) as exit_info:
        main(["long2short", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--short_model_name_or_path" in help_text and "--dataset_name" in help_text


# ---------------------------------------------------------------------------------------------------- train options
def test_train_rewards_weights_and_eval_split(base_model, tmp_path):
    from trl_kimi.scripts import train

    argv = ["--model_name_or_path", base_model, "--dataset_name", "chain-sum", "--max_train_samples", "8",
            "--output_dir", str(tmp_path / "run"), *TINY_TRAIN,
            "--reward", "chain-sum", "length_penalty", "repetition", "tests.utils.digit_fraction_reward",
            "--reward_weights", "1.0", "0.5", "1.0", "0.25", "--length_penalty_warmup_steps", "0",
            "--length_penalty_weight", "0.3", "--repetition_ngram_size", "2", "--repetition_max_repeats", "2",
            "--eval_strategy", "steps", "--eval_steps", "2", "--max_eval_samples", "4",
            "--per_device_eval_batch_size", "6"]  # fmt: skip
    trainer = train.train(*train.make_parser().parse_args_and_config(argv))
    assert trainer.reward_func_names == [
        "addition_reward",
        "length_penalty",
        "repetition_penalty",
        "digit_fraction_reward",
    ]
    assert trainer.reward_weights.tolist() == [1.0, 0.5, 1.0, 0.25]
    logged = {key for entry in trainer.state.log_history for key in entry}
    for name in trainer.reward_func_names:
        assert f"rewards/{name}/mean" in logged
    assert "eval_reward" in logged  # the eval split (4 chain-sum problems, other seed) was built and evaluated
    assert len(trainer.eval_dataset) == 4 and trainer.eval_dataset[0]["prompt"] != trainer.train_dataset[0]["prompt"]


def test_reward_helpers_resolve_names_and_refuse_unknown_ones():
    from types import SimpleNamespace

    from trl_kimi.scripts._common import build_reward_funcs, split_rewards

    assert split_rewards(["length_penalty"]) == ("auto", ["auto", "length_penalty"])
    assert split_rewards(["math", "repetition"]) == ("math", ["math", "repetition"])
    assert split_rewards(["tests.utils.digit_fraction_reward"])[0] == "custom"
    with pytest.raises(ValueError, match="Unknown reward 'lenght_penalty'; use auto, math"):
        split_rewards(["math", "lenght_penalty"])
    with pytest.raises(ValueError, match="keep one"):
        split_rewards(["math", "code"])
    options = SimpleNamespace(
        repetition_ngram_size=2,
        repetition_max_repeats=2,
        repetition_reward=-0.25,
        length_penalty_weight=0.3,
        length_penalty_warmup_steps=5.0,
        length_penalty_ramp_steps=2,
        length_penalty_threshold=0.5,
    )
    verifier, penalty, repetition = build_reward_funcs(["math", "length_penalty", "repetition"], "math", options)
    assert verifier.__name__ == "math_reward" and penalty.correctness_reward == "math_reward"
    assert (penalty.weight, penalty.warmup_steps, penalty.ramp_steps, penalty.threshold) == (0.3, 5, 2, 0.5)
    assert repetition(completion_ids=[[1, 2, 1, 2], [1, 2, 3, 4]]) == [-0.25, 0.0]
    with pytest.raises(ValueError, match="Cannot import reward function 'no_such_module.f'"):
        build_reward_funcs(["no_such_module.f"], "custom", options)
    with pytest.raises(ValueError, match="needs a verifier"):
        build_reward_funcs(["length_penalty"], "custom", options)


def test_train_bad_input_fails_before_loading_a_model(base_model, tmp_path, capsys, monkeypatch):
    common = ["--model_name_or_path", base_model, "--output_dir", str(tmp_path / "t"), *TINY_TRAIN]
    err = run_error(["train", *common, "--reward", "math", "lenght_penalty"], capsys)
    assert "Unknown reward 'lenght_penalty'" in err and "module.function" in err
    err = run_error(["train", *common, "--load_in_4bit", "true"], capsys)
    assert "--load_in_4bit/--load_in_8bit" in err and "--use_peft" in err
    # the code verifier without bubblewrap: said at start, with the fix
    monkeypatch.setattr("shutil.which", lambda name: None)
    rows = tmp_path / "code.jsonl"
    rows.write_text('{"prompt": "Write f.", "test_list": ["assert f() == 1"]}\n')
    err = run_error(["train", *common, "--dataset_name", str(rows), "--reward", "code"], capsys)
    assert "`bwrap` is not on PATH" in err and "apt-get install -y bubblewrap" in err


def test_train_with_accelerate_flags_relaunches_under_accelerate(tmp_path, monkeypatch):
    """`trl-kimi train --num_processes 2 ...` (the `trl grpo` habit) becomes `accelerate launch --num_processes 2
    --module trl_kimi.cli train ...`; the launch itself is faked here (a real 2-process run: test_multiprocess.py)."""
    launched = []
    monkeypatch.setattr("accelerate.commands.launch.launch_command", launched.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["train", "--model_name_or_path", "m", "--num_processes", "2", "--output_dir", str(tmp_path),
            "--accelerate_config", "cpu_2proc", "--tau", "0.2"]  # fmt: skip
    assert main(argv) == 0
    (args,) = launched
    assert args.num_processes == 2 and args.module and args.training_script == "trl_kimi.cli"
    assert args.config_file.endswith("accelerate_configs/cpu_2proc.yaml") and os.path.isfile(args.config_file)
    assert args.training_script_args == ["train", "--model_name_or_path", "m", "--output_dir", str(tmp_path),
                                         "--tau", "0.2"]  # fmt: skip
