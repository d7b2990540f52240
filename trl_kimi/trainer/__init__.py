from .kimi_config import KimiConfig
from .kimi_trainer import KimiMirrorDescentTrainer


__all__ = ["KimiConfig", "KimiMirrorDescentTrainer"]
