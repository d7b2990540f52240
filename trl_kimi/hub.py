r"""
Loading a checkpoint by Hub id or local folder, and loading a dataset by Hub id, local file or folder, with errors
that say what was tried and how to fix it.

Why a module: the CLI, the examples and the evaluation all take "a Hub id or a local path"; transformers and datasets
answer a typo with a long traceback about repositories and cache folders. These helpers call the same
`from_pretrained` / `load_dataset` and turn their failures into one line naming the value and the fix. Publishing is
TRL's: `trainer.push_to_hub()` uploads the output folder (weights, tokenizer, the card of
[`~trl_kimi.model_card`]).

```python
>>> import tempfile, pathlib
>>> from trl_kimi.hub import load_dataset_any
>>> rows = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
>>> _ = rows.write_text('{"problem": "1 + 1?", "solution": "2"}\n')
>>> load_dataset_any(str(rows)).column_names
['problem', 'solution']

```
"""

import json
import os
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk
from transformers import AutoConfig, AutoProcessor, AutoTokenizer


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def adapter_base_model(name_or_path: str) -> str | None:
    """The base model of a LoRA adapter folder (`adapter_config.json`, as `trl-kimi train --use_peft` saves it), else
    `None`."""
    config = Path(name_or_path) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"LoRA adapter folder {name_or_path!r} names no base model (base_model_name_or_path in "
            "adapter_config.json); set it to the Hub id or folder of the model the adapter was trained on."
        )
    return base


def _require_peft(what: str) -> None:
    from transformers.utils import is_peft_available

    if not is_peft_available():
        raise ImportError(f"{what} needs peft: pip install 'trl-kimi[peft]'.")


def check_model_name_or_path(
    name_or_path: str | None, revision: str | None = None, what: str = "model", trust_remote_code: bool = False
) -> None:
    """
    Raise a `ValueError` unless `name_or_path` is a folder with a `config.json`, a LoRA adapter folder whose base
    model resolves, or a Hub model id that resolves (with its own code when `trust_remote_code`).

    Offline (`HF_HUB_OFFLINE=1`) a Hub id resolves only when it is already in the local cache.
    """
    if not name_or_path:
        raise ValueError(f"No {what} given: pass --model_name_or_path <Hub id or local folder>.")
    path = Path(name_or_path)
    base = adapter_base_model(name_or_path) if path.is_dir() else None
    if base is not None:
        try:
            check_model_name_or_path(base, what="base model", trust_remote_code=trust_remote_code)
        except ValueError as error:
            raise ValueError(
                f"LoRA adapter folder {name_or_path!r}: its base model {base!r} (base_model_name_or_path in "
                "adapter_config.json) cannot be loaded. Make it reachable (that folder, or the Hub id in the cache or "
                f"online), or edit adapter_config.json to point at a copy. ({error})"
            ) from error
        return
    if path.exists():
        config = path / "config.json"
        if not path.is_dir() or not config.is_file() or not os.access(config, os.R_OK):
            raise ValueError(
                f"{what} {name_or_path!r} is not a model folder (no config.json in it, or not readable: check its "
                "permissions). Pass the folder written by save_pretrained / trainer.save_model (e.g. runs/demo/model), "
                "or a Hub id."
            )
        return
    try:
        AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "False", "")
        hint = " (HF_HUB_OFFLINE is set: a Hub id must already be in the cache)" if offline else ""
        raise ValueError(
            f"Cannot load {what} {name_or_path!r}: no such local folder, and not a Hub model id that resolves{hint}. "
            f"Pass a local folder written by save_pretrained or a Hub id such as Qwen/Qwen2.5-0.5B-Instruct. "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error


def load_processing_class(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The processor of a multimodal checkpoint, else its tokenizer (left padding, as generation needs). For a LoRA
    adapter folder: the tokenizer saved with it, else its base model's."""
    check_model_name_or_path(name_or_path, revision, trust_remote_code=trust_remote_code)
    base = adapter_base_model(name_or_path) if Path(name_or_path).is_dir() else None
    if base is not None:
        source = name_or_path if (Path(name_or_path) / "tokenizer_config.json").is_file() else base
        return AutoTokenizer.from_pretrained(source, padding_side="left", trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    return processor


def load_causal_lm(name_or_path: str, revision: str | None = None, **kwargs):
    """`AutoModelForCausalLM.from_pretrained`, or for a LoRA adapter folder its base model with the adapter merged in
    (generation then runs at the base model's speed)."""
    from transformers import AutoModelForCausalLM

    check_model_name_or_path(name_or_path, revision, trust_remote_code=kwargs.get("trust_remote_code", False))
    base = adapter_base_model(name_or_path) if Path(name_or_path).is_dir() else None
    if base is None:
        return AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, **kwargs)
    _require_peft(f"The LoRA adapter folder {name_or_path!r}")
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    return PeftModel.from_pretrained(model, name_or_path).merge_and_unload()


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of a checkpoint, padding on the left."""
    check_model_name_or_path(name_or_path, revision, trust_remote_code=trust_remote_code)
    return AutoTokenizer.from_pretrained(
        name_or_path, revision=revision, padding_side="left", trust_remote_code=trust_remote_code
    )


def load_dataset_any(
    name: str,
    config: str | None = None,
    split: str = "train",
    num_rows: int | None = None,
) -> Dataset:
    """
    One split of a dataset given as a local file (`.json`, `.jsonl`, `.csv`, `.parquet`, optionally `.gz`), a folder
    (`save_to_disk` output, or data files) or a Hub id. A file holds one split: `split` does not apply to it.

    `num_rows` keeps the first N rows.
    """
    path = Path(name)
    try:
        if path.is_file():
            suffixes = [s for s in path.suffixes if s != ".gz"]
            builder = _FILE_BUILDERS.get(suffixes[-1] if suffixes else "")
            if builder is None:
                raise ValueError(
                    f"Dataset file {name!r} has an unknown extension; use one of {sorted(_FILE_BUILDERS)} "
                    "(optionally gzipped)."
                )
            dataset = load_dataset(builder, data_files=str(path), split="train")
        elif path.is_dir() and (path / "dataset_info.json").is_file():
            dataset = load_from_disk(str(path))
            if not isinstance(dataset, Dataset):
                dataset = dataset[split]
        elif path.is_dir():
            dataset = load_dataset(str(path), config, split=split)
        else:
            dataset = load_dataset(name, config, split=split)
    except (FileNotFoundError, ConnectionError, KeyError) as error:
        raise ValueError(
            f"Cannot load dataset {name!r} (split {split!r}): not a local file or folder, and not a Hub dataset "
            f"that resolves. Pass a .jsonl/.json/.csv/.parquet file, a folder or a Hub id. "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})"
        ) from error
    if num_rows is not None:
        dataset = dataset.select(range(min(num_rows, len(dataset))))
    return dataset
