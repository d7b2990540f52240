"""trl-kimi: the Kimi k1.5 reinforcement-learning recipe as drop-in TRL trainers.

```python
from trl_kimi import KimiConfig, KimiMirrorDescentTrainer  # in place of trl's GRPOConfig, GRPOTrainer
```
"""

from .losses import mean_baseline_advantages, mirror_descent_loss
from .partial_rollouts import PartialRolloutBuffer
from .rewards import LengthPenaltyReward
from .trainer import KimiConfig, KimiMirrorDescentTrainer


__version__ = "0.1.0.dev0"

__all__ = [
    "KimiConfig",
    "KimiMirrorDescentTrainer",
    "LengthPenaltyReward",
    "PartialRolloutBuffer",
    "mean_baseline_advantages",
    "mirror_descent_loss",
]
