"""The shipped accelerate configs parse with accelerate's own loader and say what the README says they do."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file


CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate_configs"


@pytest.mark.parametrize(
    "name, distributed_type, num_machines",
    [
        ("cpu_2proc.yaml", "MULTI_GPU", 1),  # torchrun launcher; use_cpu makes it gloo on CPU (tested end to end)
        ("multi_gpu.yaml", "MULTI_GPU", 1),
        ("deepspeed_zero2.yaml", "DEEPSPEED", 1),
        ("deepspeed_zero3.yaml", "DEEPSPEED", 1),
        ("fsdp2.yaml", "FSDP", 1),
        ("multi_node.yaml", "MULTI_GPU", 2),
    ],
)
def test_config_loads(name, distributed_type, num_machines):
    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type == distributed_type
    assert config.num_machines == num_machines
    assert config.num_processes % num_machines == 0


def test_sharding_settings():
    assert load_config_from_file(str(CONFIGS / "deepspeed_zero2.yaml")).deepspeed_config["zero_stage"] == 2
    zero3 = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3 and zero3["zero3_save_16bit_model"]  # a loadable checkpoint, not shards
    fsdp = load_config_from_file(str(CONFIGS / "fsdp2.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert load_config_from_file(str(CONFIGS / "cpu_2proc.yaml")).use_cpu


def test_every_shipped_config_is_covered():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {
        "cpu_2proc.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp2.yaml",
        "multi_node.yaml",
    }  # fmt: skip
