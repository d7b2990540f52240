"""Launch checks: configs that cannot work fail in the trainer's __init__, before the model is wrapped or anything is
generated, naming the conflict and the fix."""

import http.server
import threading
import time
from types import SimpleNamespace

import pytest

from tests.utils import tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.tasks import arithmetic
from trl_kimi.trainer import preflight
from trl_kimi.trainer.preflight import (
    check_deepspeed_conflicts,
    check_vllm_installed,
    check_vllm_server_reachable,
    check_zero3_conflicts,
    vllm_server_url,
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_config(tmp_path, port: int, timeout: float = 1.0):
    return tiny_config(
        str(tmp_path), use_vllm=True, vllm_mode="server", vllm_server_host="127.0.0.1", vllm_server_port=port,
        vllm_server_timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def health_server():
    """A stand-in for `trl vllm-serve`'s health route on a free local port."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == preflight.HEALTH_ROUTE else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_server_url_prefers_base_url(tmp_path):
    args = server_config(tmp_path, 8000)
    assert vllm_server_url(args) == "http://127.0.0.1:8000"
    args.vllm_server_base_url = "http://gpu-node-7:9000/"
    assert vllm_server_url(args) == "http://gpu-node-7:9000"


def test_unreachable_server_fails_within_its_timeout_naming_the_url_and_the_fix(tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ConnectionError) as error:
        check_vllm_server_reachable(server_config(tmp_path, port, timeout=1.0), retry_interval=0.2)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert f"http://127.0.0.1:{port}/health/" in message
    assert "trl vllm-serve" in message and "--vllm_mode colocate" in message


def test_reachable_server_passes(tmp_path, health_server):
    check_vllm_server_reachable(server_config(tmp_path, health_server, timeout=2.0))  # no exception


def test_colocate_and_plain_generation_are_not_probed(tmp_path):
    args = server_config(tmp_path, free_port())
    args.vllm_mode = "colocate"
    check_vllm_server_reachable(args)
    args.use_vllm, args.vllm_mode = False, "server"
    check_vllm_server_reachable(args)


def test_missing_vllm_names_our_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "is_vllm_available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install "trl-kimi\[vllm\]"'):
        check_vllm_installed(server_config(tmp_path, 8000))
    check_vllm_installed(tiny_config(str(tmp_path)))  # use_vllm=False needs nothing


def test_zero3_with_vllm_needs_the_gather(tmp_path):
    args = server_config(tmp_path, 8000)
    args.ds3_gather_for_generation = False
    with pytest.raises(ValueError, match="ds3_gather_for_generation"):
        check_zero3_conflicts(args, zero_stage=3)
    check_zero3_conflicts(args, zero_stage=2)  # ZeRO-2 keeps full parameters on every process
    args.ds3_gather_for_generation = True
    check_zero3_conflicts(args, zero_stage=3)


def test_optimizer_reset_is_refused_under_any_deepspeed_stage(tmp_path):
    args = tiny_config(str(tmp_path), reset_optimizer_each_iteration=True)
    for stage in (0, 1, 2, 3):
        with pytest.raises(ValueError, match="reset_optimizer_each_iteration"):
            check_deepspeed_conflicts(args, stage)
    check_deepspeed_conflicts(args, None)


def test_zero_stage_is_read_from_the_deepspeed_plugin(tmp_path):
    args = tiny_config(str(tmp_path))
    assert preflight.deepspeed_zero_stage(args) is None
    args.deepspeed_plugin = SimpleNamespace(zero_stage=3)  # what `accelerate launch` with a ZeRO-3 config sets
    assert preflight.deepspeed_zero_stage(args) == 3


def test_trainer_checks_before_building_anything(tmp_path, monkeypatch):
    """Server mode with no server: the trainer raises before GRPOTrainer.__init__ runs (no model wrapping, no
    generation), even though vLLM is (pretend) installed."""
    monkeypatch.setattr(preflight, "is_vllm_available", lambda: True)
    reached = []
    monkeypatch.setattr("trl.GRPOTrainer.__init__", lambda *a, **k: reached.append(True))
    tokenizer = arithmetic.make_tokenizer()
    with pytest.raises(ConnectionError, match="no vLLM server answered"):
        KimiMirrorDescentTrainer(
            model=tiny_model(tokenizer),
            reward_funcs=arithmetic.addition_reward,
            args=server_config(tmp_path, free_port(), timeout=0.5),
            train_dataset=arithmetic.make_rl_dataset(8, seed=0, max_terms=3),
            processing_class=tokenizer,
        )
    assert not reached
