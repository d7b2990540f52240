"""
The model card our trainers write: method, key config values, datasets, metrics, how to load it, and the citations
of the Kimi k1.5 report and of TRL.

TRL's seams are kept: the card's tags are the trainer's `_tag_names`, its method name `_name`, its paper `_paper`
(title, arXiv id, BibTeX), and it is written by `create_model_card`, which `push_to_hub` and every checkpoint save
call. Only the template differs: TRL's `lm_model_card.md` has no place for the configuration or the metrics, so the
Kimi trainers render `trl_kimi/templates/kimi_model_card.md` (linked from `model_cards/templates/`) with
[`huggingface_hub.ModelCard.from_template`], as TRL's `generate_model_card` does.

```python
>>> from trl_kimi.model_card import card_metrics
>>> card_metrics([{"loss": 0.5, "reward": 0.25, "step": 1}, {"loss": 0.4, "reward": 0.5, "step": 2}])
{'loss': 0.4, 'reward': 0.5}

```
"""

import os
from importlib import resources
from typing import Any

import datasets
import torch
import transformers
import trl
from huggingface_hub import ModelCard, ModelCardData


TEMPLATE_FILE = "kimi_model_card.md"

# The configuration a reader needs to reproduce or judge a run; every other field stays in the saved training_args.
CARD_CONFIG_FIELDS = (
    "tau",
    "logprob_reduction",
    "num_generations",
    "steps_per_generation",
    "num_iterations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "max_completion_length",
    "temperature",
    "beta",
    "reset_optimizer_each_iteration",
    "sampling_strategy",
    "seed",
)

# Training metrics worth a line on the card (the last logged value of each that was logged).
CARD_METRICS = (
    "loss",
    "reward",
    "reward_std",
    "completions/mean_length",
    "completions/clipped_ratio",
    "kimi/abs_log_ratio_mean",
    "train_runtime",
    "train_loss",
)

METHOD_DESCRIPTION = (
    "Online mirror descent (Kimi k1.5, §2.3.2): k samples per prompt, the group's mean reward as baseline, and the "
    "loss `−(1/B) Σ_j [(r_j − r̄) · log πθ(y_j|x) − (τ/2) · (log πθ(y_j|x) − log πθi(y_j|x))²]`, where πθi is the "
    "policy that generated the batch: a policy gradient held near the previous iterate by a squared log-ratio, with "
    "no value network, no clipping and no importance ratio. Rewards come from exact verifiers (math answer checking, "
    "sandboxed unit tests)."
)


def card_config_values(args: Any, fields: tuple[str, ...] = CARD_CONFIG_FIELDS) -> dict[str, Any]:
    """The `fields` of a training config that it has and that are set (not `None`), in order."""
    values = {}
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return values


def card_metrics(log_history: list[dict[str, Any]], names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The last logged value of each metric of `names` (default: `CARD_METRICS`, else every key but `step`/`epoch`)."""
    last: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)):
                continue
            if names is None or key in names:
                last[key] = round(float(value), 4)
    return last


def _is_hub_id(name: str | None) -> bool:
    """`org/name` that is not a local path: worth a link to the Hub."""
    return bool(name) and not os.path.exists(name) and name.count("/") == 1 and not name.startswith((".", "/"))


def generate_kimi_model_card(
    *,
    model_name: str,
    model_id: str,
    base_model: str | None,
    dataset_name: str | None,
    tags: list[str],
    trainer_name: str,
    paper: dict[str, str],
    config_values: dict[str, Any],
    metrics: dict[str, float] | None = None,
    eval_results: dict[str, float] | None = None,
    method_description: str = METHOD_DESCRIPTION,
) -> ModelCard:
    """
    Render the Kimi model card. `model_id` is what the quick start loads (Hub id, else the output folder); `paper`
    is a trainer's `_paper` (`title`, `id`, `citation`).
    """
    from . import __version__

    card_data = ModelCardData(
        base_model=base_model,
        datasets=[dataset_name] if _is_hub_id(dataset_name) else None,
        library_name="transformers",
        license="apache-2.0",
        model_name=model_name,
        tags=["generated_from_trainer", *tags],
    )
    template = resources.files("trl_kimi").joinpath(f"templates/{TEMPLATE_FILE}")
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        model_id=model_id,
        base_model=base_model,
        dataset_name=dataset_name,
        dataset_is_hub=_is_hub_id(dataset_name),
        trainer_name=trainer_name,
        paper_title=paper.get("title"),
        paper_id=paper.get("id"),
        trainer_citation=paper.get("citation"),
        method_description=method_description,
        config_values=config_values,
        metrics=metrics or {},
        eval_results=eval_results or {},
        trl_kimi_version=__version__,
        trl_version=trl.__version__,
        transformers_version=transformers.__version__,
        pytorch_version=torch.__version__,
        datasets_version=datasets.__version__,
    )
