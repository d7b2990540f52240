r"""
Long2short (Kimi k1.5 §2.4): transfer long-CoT skill into shorter answers, with four methods.

- [`merge_models`]: weight averaging of a long-CoT and a short-CoT model.
- [`shortest_rejection_sampling`]: the shortest correct of n samples per prompt, as an SFT dataset.
- [`build_dpo_pairs`]: shortest correct vs wrong or ≥ 1.5× longer answers, as a DPO dataset.
- [`long2short_rl_config`] + [`long2short_length_penalty`] + [`ZeroIfTruncatedReward`]: the Kimi trainer with a
  lower token cap, the length penalty from step 0, and no reward for an answer the cap cut.

[`Long2ShortTrainer`] runs one of them or a chain (e.g. rejection-sampling SFT → DPO → RL) with TRL's `SFTTrainer`
and `DPOTrainer` and our `KimiMirrorDescentTrainer`; [`Long2ShortConfig`] is its configuration.
"""

from .config import Long2ShortConfig
from .merging import merge_models
from .rejection import (
    build_dpo_pairs,
    dpo_pairs_for_prompt,
    select_shortest_correct,
    shortest_rejection_sampling,
)
from .rl import ZeroIfTruncatedReward, long2short_length_penalty, long2short_rl_config
from .trainer import Long2ShortTrainer


__all__ = [
    "Long2ShortConfig",
    "Long2ShortTrainer",
    "ZeroIfTruncatedReward",
    "build_dpo_pairs",
    "dpo_pairs_for_prompt",
    "long2short_length_penalty",
    "long2short_rl_config",
    "merge_models",
    "select_shortest_correct",
    "shortest_rejection_sampling",
]
