"""GPU checks: HF generate in bf16 on CUDA, vLLM colocated (with sleep mode) and vLLM server mode.

Skipped without CUDA (and the vLLM ones without vLLM), so the CPU suite passes; run them on a GPU machine with
`python -m pytest -q tests/test_gpu.py`. The tiny model is saved to disk because vLLM loads models by path.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from trl.import_utils import is_vllm_available

from tests.utils import digit_fraction_reward, tiny_config
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.tasks import arithmetic


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
needs_vllm = pytest.mark.skipif(not is_vllm_available(), reason='needs vLLM: pip install "trl-kimi[vllm]"')


def gpu_config(output_dir, **overrides):
    # bf16 on the GPU; 4 steps over 2 generated batches, so the tau term acts on the second step of each batch.
    return tiny_config(output_dir, use_cpu=False, bf16=True, max_steps=4, steps_per_generation=2, **overrides)


@pytest.fixture
def saved_model(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, hidden_size=64, num_layers=2, num_heads=2)
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), tokenizer


def train_and_check(model_path, tokenizer, args):
    trainer = KimiMirrorDescentTrainer(
        model=model_path,
        reward_funcs=digit_fraction_reward,  # varies within a group even untrained
        args=args,
        train_dataset=arithmetic.make_rl_dataset(32, seed=0, max_terms=3),
        processing_class=tokenizer,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    return trainer


def test_hf_generate_bf16_on_cuda(tmp_path, saved_model):
    trainer = train_and_check(*saved_model, gpu_config(tmp_path / "run"))
    assert next(trainer.model.parameters()).device.type == "cuda"
    assert torch.cuda.max_memory_allocated() > 0


@needs_vllm
def test_vllm_colocate_with_sleep_mode(tmp_path, saved_model):
    args = gpu_config(
        tmp_path / "run",
        use_vllm=True,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.2,
        vllm_enable_sleep_mode=True,
    )
    train_and_check(*saved_model, args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_vllm
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="server mode needs a GPU for the server and one to train")
def test_vllm_server_mode(tmp_path, saved_model):
    model_path, tokenizer = saved_model
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "trl.cli", "vllm-serve", "--model", model_path, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=2)
                break
            except OSError:
                time.sleep(2)
        args = gpu_config(
            tmp_path / "run",
            use_vllm=True,
            vllm_mode="server",
            vllm_server_host="127.0.0.1",
            vllm_server_port=port,
        )
        train_and_check(model_path, tokenizer, args)
    finally:
        server.kill()
        server.wait()
