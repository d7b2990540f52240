"""Model merging (Kimi k1.5 §2.4, long2short method 1): average the weights of a long-CoT and a short-CoT model."""

import copy

import torch
from torch import nn
from transformers.utils import logging

from .._checks import check_number


logger = logging.get_logger(__name__)


def detached_copy(model: nn.Module) -> nn.Module:
    """
    A deep copy of `model` that computes with its own weights.

    A model that went through a `transformers.Trainer` carries an instance attribute `forward`: accelerate's wrapper
    around the *original* object's bound `forward`. `copy.deepcopy` keeps that wrapper, so the copy would silently run
    the original's weights (a merged model answering like the long model; a DPO reference that trains). Dropping the
    instance attribute restores the class's `forward`, bound to the copy.
    """
    duplicate = copy.deepcopy(model)
    for module in duplicate.modules():
        module.__dict__.pop("forward", None)
        module.__dict__.pop("_original_forward", None)
    return duplicate


def merge_models(long_model: nn.Module, short_model: nn.Module, alpha: float = 0.5) -> nn.Module:
    r"""
    Weight average of two models of the same architecture: ``θ = α·θ_long + (1 − α)·θ_short``.

    The report merges a long-CoT and a short-CoT model with a plain average (α = 0.5) to get answers of intermediate
    length without training. Why it can work: both models are fine-tuned from the same base, so their weights lie in
    one basin and their average is a model in between (it does not work for models trained from different
    initialisations). Neither input is modified: the result is a deep copy of `long_model` with the averaged weights,
    so it keeps `long_model`'s config and generation config and can be `save_pretrained` / `push_to_hub`-ed.

    Every floating-point tensor of the state dict is averaged in float32 and cast back to its dtype; non-float
    tensors (integer buffers) must be equal in both models. Tied weights stay tied (they are one tensor).

    Args:
        long_model (`torch.nn.Module`):
            The long-CoT model (weight `alpha`), e.g. a `PreTrainedModel`.
        short_model (`torch.nn.Module`):
            The short-CoT model (weight `1 − alpha`), same class, same parameter names and shapes.
        alpha (`float`, *optional*, defaults to `0.5`):
            Weight of the long model, in [0, 1].

    Returns:
        `torch.nn.Module`: a new model.

    Raises:
        `ValueError`: different classes or `model_type`s, different parameter names, different shapes (e.g. another
        vocabulary size or width), different non-float buffers, or `alpha` outside [0, 1].

    Example:
    ```python
    >>> from trl_kimi.long2short import merge_models
    >>> from trl_kimi.tasks import arithmetic
    >>> tokenizer = arithmetic.make_tokenizer()
    >>> long_model = arithmetic.make_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=0)
    >>> short_model = arithmetic.make_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=1)
    >>> merged = merge_models(long_model, short_model, alpha=0.5)
    >>> w = "model.norm.weight"
    >>> bool(torch.allclose(merged.state_dict()[w], (long_model.state_dict()[w] + short_model.state_dict()[w]) / 2))
    True

    ```
    """
    check_number("alpha", alpha, 0, 1, fix="it is the weight of the long model.")
    long_type = getattr(getattr(long_model, "config", None), "model_type", None)
    short_type = getattr(getattr(short_model, "config", None), "model_type", None)
    if type(long_model) is not type(short_model) or long_type != short_type:
        raise ValueError(
            f"Cannot merge a {type(long_model).__name__} (model_type {long_type!r}) with a "
            f"{type(short_model).__name__} (model_type {short_type!r}): merging averages weights, so both models must "
            "have the same architecture (e.g. two fine-tunes of one base model)."
        )
    long_state, short_state = long_model.state_dict(), short_model.state_dict()
    if long_state.keys() != short_state.keys():
        only_long = sorted(long_state.keys() - short_state.keys())[:5]
        only_short = sorted(short_state.keys() - long_state.keys())[:5]
        raise ValueError(
            f"The models have different parameters: only in the long model {only_long}, only in the short model "
            f"{only_short}. Merge two models of the same architecture and configuration."
        )
    for name, tensor in long_state.items():
        if tensor.shape != short_state[name].shape:
            hint = " (different vocabulary sizes)" if "embed" in name or "lm_head" in name else ""
            raise ValueError(
                f"Parameter {name!r} has shape {tuple(tensor.shape)} in the long model but "
                f"{tuple(short_state[name].shape)} in the short model{hint}; both models need the same configuration "
                "and tokenizer."
            )

    merged_state = {}
    for name, tensor in long_state.items():
        other = short_state[name].to(tensor.device)
        if torch.is_floating_point(tensor):
            merged_state[name] = (alpha * tensor.float() + (1.0 - alpha) * other.float()).to(tensor.dtype)
        elif torch.equal(tensor, other):
            merged_state[name] = tensor.clone()
        else:
            raise ValueError(f"Non-float tensor {name!r} differs between the models and cannot be averaged.")
    merged = detached_copy(long_model)
    merged.load_state_dict(merged_state)
    logger.info(f"Merged {len(merged_state)} tensors with alpha={alpha} (weight of the long model).")
    return merged
