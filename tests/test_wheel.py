"""Packaging: the built wheel holds the package, its card template, the examples and the accelerate configs; installed
in a fresh virtual environment (outside the repository) it runs `trl-kimi` and a few steps of the demo. That venv sees
torch & co. in the running environment's site-packages, never the base interpreter's (empty on a fresh machine)."""

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


def running_site_packages() -> list[str]:
    """The site-packages directories of the running environment (a venv's own, or the interpreter's), in order.

    Plain directories only: the repository checkout (PYTHONPATH, an editable install's path) is not among them, so the
    fresh venv imports the installed wheel's `trl_kimi`.
    """
    dirs = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    dirs += [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    return [d for d in dict.fromkeys(os.path.abspath(d) for d in dirs) if os.path.isdir(d)]


def test_the_fresh_venv_sees_the_running_environments_packages_not_the_checkout():
    import torch

    dirs = running_site_packages()
    assert any(Path(torch.__file__).resolve().is_relative_to(Path(d).resolve()) for d in dirs), dirs
    assert not any(Path(d).resolve() == REPO for d in dirs)


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

    # A fresh venv anywhere (here under the test's tmp dir) that sees torch & co. where the running interpreter sees
    # them: its site-packages, not the base interpreter's (which is what --system-site-packages would give from
    # inside a venv, and holds nothing on a fresh machine).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Without PYTHONPATH (a checkout on it, with the egg-info the build left there, reads as "already installed").
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, cwd=tmp_path, env=env)
    # Only after the install, so that pip neither skips the wheel nor touches the running environment.
    (Path(venv_site) / "_running_env.pth").write_text("\n".join(running_site_packages()) + "\n")
    where = subprocess.run(
        [str(python), "-c", "import trl_kimi, trl_kimi.cli as c; print(trl_kimi.__file__); print(c.examples_dir())"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-3000:]
    where = where.stdout.split()
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
