"""
The model card our trainers write: method, key config values, datasets, metrics, how to load it, and the citations
of the Kimi k1.5 report and of TRL.

TRL's seams are kept: the card's tags are the trainer's `_tag_names`, its method name `_name`, its paper `_paper`
(title, arXiv id, BibTeX), and it is written by `create_model_card`, which `push_to_hub` and every checkpoint save
call. Only the template differs: TRL's `lm_model_card.md` has no place for the configuration or the metrics, so the
Kimi trainers render `trl_kimi/templates/kimi_model_card.md` (linked from `model_cards/templates/`) with
[`huggingface_hub.ModelCard.from_template`], as TRL's `generate_model_card` does.

It is the one card writer of the package: the trainers' `create_model_card`, the demo's card and
`trl-kimi eval --push_results` (which adds `model-index` results to an existing card with [`add_eval_results`]) all go
through this module. As in TRL's cards, the tracker badges (Weights & Biases, Trackio, Comet) of the current run and
the `hf_jobs` / `trackio:` tags are added when they apply.

```python
>>> from trl_kimi.model_card import card_metrics
>>> card_metrics([{"loss": 0.5, "reward": 0.25, "step": 1}, {"loss": 0.4, "reward": 0.5, "step": 2}])
{'loss': 0.4, 'reward': 0.5}

```
"""

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import trl
from huggingface_hub import EvalResult, ModelCard, ModelCardData


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


def tracker_urls() -> dict[str, str | None]:
    """The Weights & Biases, Trackio and Comet URLs of the current run, as TRL's cards show them (`None` when that
    tracker is not running)."""
    from trl.trainer.utils import get_comet_experiment_url, get_trackio_space_url

    wandb_url = None
    try:
        import wandb

        wandb_url = wandb.run.url if wandb.run is not None else None
    except ImportError:
        pass
    return {"wandb_url": wandb_url, "trackio_url": get_trackio_space_url(), "comet_url": get_comet_experiment_url()}


def card_tags(tags: list[str], trackio_url: str | None = None) -> list[str]:
    """`tags` plus TRL's run tags: `hf_jobs` inside a Hugging Face Job, `trackio:<url>` when Trackio logs the run."""
    tags = [t for t in tags if not (trackio_url and t.startswith("trackio:"))]
    if "JOB_ID" in os.environ:
        tags.append("hf_jobs")
    if trackio_url:
        tags.append(f"trackio:{trackio_url}")
    return sorted(set(tags))


def eval_results_metadata(
    summary: dict[str, Any],
    dataset_name: str,
    dataset_config: str | None = None,
    dataset_split: str | None = None,
) -> list[EvalResult]:
    """
    `model-index` entries of a `trl-kimi eval` summary: avg@n (`accuracy`) and each pass@k on `dataset_name`.

    ```python
    >>> [(r.metric_name, r.metric_value) for r in eval_results_metadata(
    ...     {"accuracy": 0.5, "num_samples": 4, "pass_at_k": {"pass@4": 0.75}}, "HuggingFaceH4/MATH-500")]
    [('avg@4', 0.5), ('pass@4', 0.75)]

    ```
    """
    common = {
        "task_type": "text-generation",
        "dataset_type": dataset_name,
        "dataset_name": dataset_name,
        "dataset_config": dataset_config,
        "dataset_split": dataset_split,
    }
    n = summary.get("num_samples")
    results = [
        EvalResult(
            metric_type="accuracy",
            metric_name=f"avg@{n}" if n else "accuracy",
            metric_value=summary["accuracy"],
            **common,
        )
    ]
    for name, value in (summary.get("pass_at_k") or {}).items():
        results.append(
            EvalResult(metric_type=name.replace("@", "_at_"), metric_name=name, metric_value=value, **common)
        )
    return results


_EVAL_SECTION = re.compile(r"\n## Evaluation \(trl-kimi eval\)\n.*?(?=\n## |\Z)", re.S)


def add_eval_results(card: ModelCard, summary: dict[str, Any], dataset_name: str, **dataset: str | None) -> ModelCard:
    r"""
    Add a `trl-kimi eval` summary to `card`: `model-index` metadata (replacing earlier results on the same dataset,
    split and metric) and an "Evaluation (trl-kimi eval)" section with one table per dataset. Returns `card`.

    ```python
    >>> card = ModelCard("---\nlicense: apache-2.0\n---\n# m\n")
    >>> card = add_eval_results(card, {"accuracy": 0.5, "num_samples": 2, "pass_at_k": {}}, "openai/gsm8k")
    >>> card.data.eval_results[0].metric_value, "## Evaluation (trl-kimi eval)" in card.text
    (0.5, True)

    ```
    """
    new = eval_results_metadata(summary, dataset_name, dataset.get("dataset_config"), dataset.get("dataset_split"))
    keys = {(r.dataset_name, r.dataset_config, r.dataset_split, r.metric_name) for r in new}
    old = [
        r
        for r in (card.data.eval_results or [])
        if (r.dataset_name, r.dataset_config, r.dataset_split, r.metric_name) not in keys
    ]
    card.data.eval_results = old + new
    if card.data.model_name is None:
        card.data.model_name = Path(str(summary.get("model", "model"))).name
    rows = "\n".join(
        f"| {r.dataset_name}{f' ({r.dataset_config})' if r.dataset_config else ''} | {r.dataset_split or ''} | "
        f"{r.metric_name} | {r.metric_value:.4f} |"
        for r in card.data.eval_results
    )
    section = (
        "\n## Evaluation (trl-kimi eval)\n\n| dataset | split | metric | value |\n|---|---|---|---|\n" + rows + "\n"
    )
    text = card.text
    card.text = (
        _EVAL_SECTION.sub(lambda _: section, text) if _EVAL_SECTION.search(text) else text.rstrip() + "\n" + section
    )
    return card


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
    extra_sections: str | None = None,
    trackers: dict[str, str | None] | None = None,
) -> ModelCard:
    """
    Render the Kimi model card. `model_id` is what the quick start loads (Hub id, else the output folder); `paper`
    is a trainer's `_paper` (`title`, `id`, `citation`); `extra_sections` is Markdown put after the metrics (e.g. the
    demo's results table); `trackers` the badge URLs (default: [`tracker_urls`] of the current run).
    """
    from importlib.metadata import version

    trackers = tracker_urls() if trackers is None else trackers
    card_data = ModelCardData(
        base_model=base_model,
        datasets=[dataset_name] if _is_hub_id(dataset_name) else None,
        library_name="transformers",
        license="apache-2.0",
        model_name=model_name,
        tags=card_tags(["generated_from_trainer", *tags], trackers.get("trackio_url")),
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
        extra_sections=extra_sections,
        wandb_url=trackers.get("wandb_url"),
        trackio_url=trackers.get("trackio_url"),
        comet_url=trackers.get("comet_url"),
        trl_kimi_version=version("trl-kimi"),
        trl_version=trl.__version__,
        transformers_version=transformers.__version__,
        pytorch_version=torch.__version__,
        datasets_version=datasets.__version__,
    )
