"""Packaging that setup.cfg cannot express: `examples/` (scripts and accelerate configs) ships inside the wheel as
`trl_kimi.examples`, so an installed package can run them (`python -m trl_kimi.examples.kimi_gsm8k`,
`accelerate launch --config_file $(python -c "import trl_kimi; print(trl_kimi.examples_dir())")/accelerate_configs/...`)
while the repository keeps them at the top level, where TRL keeps its own."""

from setuptools import find_packages, setup


setup(
    packages=[
        *find_packages(include=["trl_kimi", "trl_kimi.*"]),
        "trl_kimi.examples",
        "trl_kimi.examples.accelerate_configs",
    ],
    package_dir={"trl_kimi.examples": "examples"},
    package_data={
        "trl_kimi": ["templates/*.md"],
        "trl_kimi.examples": ["*.py"],
        "trl_kimi.examples.accelerate_configs": ["*.yaml"],
    },
)
