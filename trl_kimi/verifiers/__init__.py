"""Verifiers: correctness rewards for math and code, read from `datasets` columns, with TRL's reward signature."""

from .code_verifier import CodeVerifier, code_reward
from .math_verifier import MathVerifier, math_reward


__all__ = ["CodeVerifier", "MathVerifier", "code_reward", "math_reward"]
