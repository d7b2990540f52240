"""
Launch checks run by `KimiMirrorDescentTrainer.__init__` before the model is wrapped and before anything is generated.

A multi-GPU job that dies at its first generation, after minutes of model loading and sharding, is the expensive way
to learn that vLLM is missing, that the vLLM server is not where the config says, or that DeepSpeed ZeRO-3 was asked
to generate with vLLM from sharded weights. Each check here raises with the conflicting values and the fix.

```python
>>> from trl_kimi import KimiConfig
>>> from trl_kimi.trainer.preflight import check_launch_config
>>> check_launch_config(KimiConfig("out", use_cpu=True, bf16=False))  # HF generate, one process: nothing to check

```
"""

import time
import urllib.error
import urllib.request

from trl.import_utils import is_vllm_available

from .kimi_config import KimiConfig


# The vLLM server's health route, as served by `trl vllm-serve`.
HEALTH_ROUTE = "/health/"


def vllm_server_url(args: KimiConfig) -> str:
    """The base URL the trainer's vLLM client will use: `vllm_server_base_url`, else `http://host:port`."""
    if args.vllm_server_base_url:
        return args.vllm_server_base_url.rstrip("/")
    return f"http://{args.vllm_server_host}:{args.vllm_server_port}"


def check_vllm_installed(args: KimiConfig) -> None:
    """`use_vllm=True` needs vLLM in this environment (also in server mode: the client syncs weights over NCCL)."""
    if args.use_vllm and not is_vllm_available():
        raise ImportError(
            "use_vllm=True but vLLM is not installed (or its version is outside what TRL 1.16 accepts, 0.22 to 0.31). "
            'Install it with `pip install "trl-kimi[vllm]"` (vLLM 0.31 with torch 2.13), or pass --use_vllm False to '
            "generate with transformers."
        )


def check_vllm_server_reachable(args: KimiConfig, retry_interval: float = 2.0) -> None:
    """In server mode, wait up to `vllm_server_timeout` seconds for the server's health route, as TRL's client does
    (a SLURM job may start the server and the trainers together), then fail naming the URL and how to start it."""
    if not (args.use_vllm and args.vllm_mode == "server"):
        return
    url = vllm_server_url(args)
    deadline = time.monotonic() + args.vllm_server_timeout
    while True:
        try:
            with urllib.request.urlopen(url + HEALTH_ROUTE, timeout=max(0.5, min(5.0, args.vllm_server_timeout))) as r:
                status = r.status
        except urllib.error.HTTPError as error:
            status, reason = error.code, f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            status, reason = None, f"{type(error).__name__}: {getattr(error, 'reason', error)}"
        else:
            if status == 200:
                return
            reason = f"HTTP {status}"
        if time.monotonic() + retry_interval > deadline:
            break
        time.sleep(retry_interval)
    raise ConnectionError(
        f"vllm_mode='server' but no vLLM server answered at {url}{HEALTH_ROUTE} within vllm_server_timeout="
        f"{args.vllm_server_timeout} s (last attempt: {reason}). Start one on a GPU the trainers do not use, e.g. "
        f"`CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model <model> --port {args.vllm_server_port}`, and point the "
        "trainer at it with --vllm_server_host/--vllm_server_port or --vllm_server_base_url; or generate inside the "
        "training processes with --vllm_mode colocate."
    )


def deepspeed_zero_stage(args: KimiConfig) -> int | None:
    """The ZeRO stage of the DeepSpeed config the Trainer will use (from `--deepspeed` or `accelerate launch`), else
    None."""
    plugin = args.deepspeed_plugin
    return None if plugin is None else plugin.zero_stage


def check_zero3_conflicts(args: KimiConfig, zero_stage: int | None) -> None:
    """Options that need the full parameters on every process, which ZeRO-3 does not keep."""
    if zero_stage != 3:
        return
    if args.use_vllm and not args.ds3_gather_for_generation:
        raise ValueError(
            "DeepSpeed ZeRO-3 with use_vllm=True and ds3_gather_for_generation=False: vLLM needs the full weights, "
            "gathered from the ZeRO-3 shards at every weight sync, and ds3_gather_for_generation=False forbids that "
            "gather. Keep --ds3_gather_for_generation True (the default), or generate with transformers "
            "(--use_vllm False) if the gathered model does not fit on one GPU."
        )


def check_deepspeed_conflicts(args: KimiConfig, zero_stage: int | None) -> None:
    """Kimi options DeepSpeed (any stage) cannot honour."""
    if zero_stage is not None and args.reset_optimizer_each_iteration:
        raise ValueError(
            "reset_optimizer_each_iteration=True is not supported with DeepSpeed, whose optimizer keeps its state "
            "in partitioned buffers that cannot be cleared from here. Turn it off, or train with DDP/FSDP."
        )


def check_launch_config(args: KimiConfig) -> None:
    """All launch checks, in the order a user would fix them."""
    check_vllm_installed(args)
    zero_stage = deepspeed_zero_stage(args)
    check_deepspeed_conflicts(args, zero_stage)
    check_zero3_conflicts(args, zero_stage)
    check_vllm_server_reachable(args)
