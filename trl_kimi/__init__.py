"""trl-kimi: the Kimi k1.5 reinforcement-learning recipe as drop-in TRL trainers.

```python
from trl_kimi import KimiConfig, KimiMirrorDescentTrainer  # in place of trl's GRPOConfig, GRPOTrainer
```
"""

import importlib
import importlib.metadata
from typing import TYPE_CHECKING


try:
    __version__ = importlib.metadata.version("trl-kimi")  # one source: setup.cfg, read from the installed metadata
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Public names and the module that defines each. They are imported on first access (PEP 562), so that
# `import trl_kimi` -- and `trl-kimi --help` -- does not pay for torch, transformers and TRL (about 8 s on 2 cores).
_LAZY_EXPORTS = {
    "KimiConfig": ".trainer",
    "KimiMirrorDescentTrainer": ".trainer",
    "LengthPenaltyReward": ".rewards",
    "Long2ShortConfig": ".long2short",
    "Long2ShortTrainer": ".long2short",
    "PartialRolloutBuffer": ".partial_rollouts",
    "RepetitionPenaltyReward": ".rewards",
    "mean_baseline_advantages": ".losses",
    "mirror_descent_loss": ".losses",
}

__all__ = [
    "KimiConfig",
    "KimiMirrorDescentTrainer",
    "LengthPenaltyReward",
    "Long2ShortConfig",
    "Long2ShortTrainer",
    "PartialRolloutBuffer",
    "RepetitionPenaltyReward",
    "mean_baseline_advantages",
    "mirror_descent_loss",
]

if TYPE_CHECKING:
    from .long2short import Long2ShortConfig, Long2ShortTrainer
    from .losses import mean_baseline_advantages, mirror_descent_loss
    from .partial_rollouts import PartialRolloutBuffer
    from .rewards import LengthPenaltyReward, RepetitionPenaltyReward
    from .trainer import KimiConfig, KimiMirrorDescentTrainer


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        value = getattr(importlib.import_module(_LAZY_EXPORTS[name], __name__), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
