"""Packaging: the built wheel holds the package, its card template, the examples and the accelerate configs; installed
in a fresh virtual environment (outside the repository) it runs `trl-kimi` and a few steps of the demo."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_built_wheel_installs_in_a_fresh_venv_and_runs_the_demo(tmp_path):
    # Build offline from the checkout (no build isolation: setuptools is already installed).
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("trl_kimi-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for name in ("trl_kimi/templates/kimi_model_card.md", "trl_kimi/examples/kimi_gsm8k.py",
                 "trl_kimi/examples/accelerate_configs/fsdp2.yaml", "trl_kimi/examples/accelerate_configs/cpu_2proc.yaml",
                 "trl_kimi/scripts/train.py"):  # fmt: skip
        assert name in names, name
    assert not any(n.startswith("tests/") for n in names)
    assert "Requires-Python: >=3.11" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [line for line in requires if "extra ==" not in line]
    assert not any("peft" in line or "matplotlib" in line for line in core)  # extras, not hard dependencies
    assert any("peft" in line and 'extra == "peft"' in line for line in requires)
    assert any("matplotlib" in line and 'extra == "plot"' in line for line in requires)
    assert any("deepspeed>=0.18.6" in line for line in requires)  # TRL 1.16's own minimum

    # A fresh venv anywhere (here under the test's tmp dir); torch & co. come from the system site-packages.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    where = subprocess.run(
        [str(python), "-c", "import trl_kimi, trl_kimi.cli as c; print(trl_kimi.__file__); print(c.examples_dir())"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env=env,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(str(venv)) for path in where), where  # the wheel's copy, not the checkout
    assert (Path(where[1]) / "accelerate_configs" / "deepspeed_zero3.yaml").is_file()
    out = subprocess.run(
        [str(venv / "bin" / "trl-kimi"), "--help"], check=True, capture_output=True, text=True, env=env
    )
    assert "train" in out.stdout and "examples" in out.stdout

    demo = subprocess.run(
        [str(python), "-m", "trl_kimi.demo", "--output_dir", str(tmp_path / "demo"), "--num_sft_examples", "32",
         "--sft_steps", "2", "--rl_steps", "2", "--num_train_prompts", "8", "--num_eval_prompts", "4",
         "--eval_samples", "1", "--hidden_size", "32", "--num_layers", "1", "--prompts_per_batch", "2",
         "--num_generations", "2", "--steps_per_generation", "2", "--max_completion_length", "8"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["args"]["rl_steps"] == 2 and (tmp_path / "demo" / "model" / "README.md").is_file()
