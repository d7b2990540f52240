"""
Sampling n completions per prompt outside a trainer, with HF `generate` or a vLLM `LLM`.

Evaluation (avg@n, pass@k) and long2short's rejection sampling both need "n answers to each prompt, with their
token lengths and whether they finished"; this module is that one loop, so both read lengths and truncation the same
way the trainer does (tokens up to and including EOS; no EOS within `max_new_tokens` = truncated).

```python
>>> from trl_kimi.generation import sample_completions
>>> from trl_kimi.tasks import arithmetic
>>> tokenizer, model = arithmetic.make_tokenizer(), arithmetic.make_model(arithmetic.make_tokenizer())
>>> samples = sample_completions(model, tokenizer, ["3+4="], num_samples=2, max_new_tokens=5)
>>> len(samples), len(samples[0]), samples[0][0].num_tokens <= 5
(1, 2, True)

```
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ._checks import check_number


Prompt = str | list[dict[str, Any]]  # standard text, or a conversation (TRL's conversational format)


@dataclass
class Completion:
    """One sampled answer. `token_ids` run up to and including EOS; `finished` is False when `max_new_tokens` cut
    it (then there is no EOS and the answer is truncated)."""

    text: str
    token_ids: list[int]
    finished: bool

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def prompt_texts(processing_class: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[str]:
    """Prompts as the model reads them: conversations through the chat template (with the generation prompt)."""
    if not prompts:
        raise ValueError("No prompts to sample from (the dataset is empty).")
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
            texts.append(processing_class.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
        else:
            raise TypeError(
                f"A prompt must be a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}: "
                f"{str(prompt)[:80]!r}"
            )
    return texts


def _eos_ids(model, processing_class) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = processing_class.eos_token_id
    if eos is None:
        raise ValueError("Neither the model's generation_config nor the tokenizer defines an eos_token_id.")
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


@torch.no_grad()
def sample_completions(
    model,
    processing_class: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    num_samples: int = 1,
    *,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    llm: Any = None,
    progress: bool = False,
) -> list[list[Completion]]:
    """
    `num_samples` completions for each prompt: `result[i][j]` is sample j of prompt i.

    With `llm` (a `vllm.LLM`) generation goes through vLLM (`model` may then be `None`); otherwise through
    `model.generate`, over the prompt list with each prompt repeated `num_samples` times consecutively, in chunks of
    `batch_size` sequences, after `torch.manual_seed(seed)`: the same arguments give the same samples.
    `temperature=0` decodes greedily; the greedy answer is then generated once and repeated `num_samples` times.
    """
    check_number("num_samples", num_samples, 1)
    check_number("max_new_tokens", max_new_tokens, 1)
    check_number("temperature", temperature, 0, fix="0 is greedy decoding.")
    texts = prompt_texts(processing_class, prompts)
    greedy = temperature == 0
    draws = 1 if greedy else num_samples
    if llm is not None:
        flat = _sample_with_vllm(llm, texts, draws, max_new_tokens, temperature, top_p, top_k, seed)
    else:
        flat = _sample_with_generate(
            model,
            processing_class,
            texts,
            draws,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            batch_size,
            seed,
            progress,
        )
    grouped = [flat[i * draws : (i + 1) * draws] for i in range(len(texts))]
    return [group * num_samples if greedy else group for group in grouped]


# Logits processors a checkpoint's generation_config may switch on, at the values that switch them off.
NEUTRAL_SAMPLING = {
    "repetition_penalty": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
}


def _sample_with_generate(
    model, tokenizer, texts, draws, max_new_tokens, temperature, top_p, top_k, batch_size, seed, progress
) -> list[Completion]:
    eos_ids = _eos_ids(model, tokenizer)
    repeated = [t for t in texts for _ in range(draws)]
    sampling = (
        {"do_sample": False}
        if temperature == 0
        else {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    )
    # Only these settings shape the distribution, as in training and on the vLLM path: `generate` fills every setting
    # left unset from the checkpoint's generation_config (e.g. a repetition penalty or min_p), so neutralise them.
    sampling.update(NEUTRAL_SAMPLING)
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generate appends to the right end of every row
    torch.manual_seed(seed)
    starts = range(0, len(repeated), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="sampling", unit="batch")
    completions = []
    try:
        for start in starts:
            batch = tokenizer(
                repeated[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, **sampling)
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                end = next((k + 1 for k, token in enumerate(row) if token in eos_ids), None)
                ids = row[:end] if end is not None else row
                completions.append(
                    Completion(tokenizer.decode(ids, skip_special_tokens=True), ids, finished=end is not None)
                )
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return completions


def _sample_with_vllm(llm, texts, draws, max_new_tokens, temperature, top_p, top_k, seed) -> list[Completion]:
    from vllm import SamplingParams

    params = SamplingParams(
        n=draws,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k if top_k > 0 else -1,
        max_tokens=max_new_tokens,
        seed=seed,
    )
    completions = []
    for request in llm.generate(texts, params, use_tqdm=False):
        for output in request.outputs:
            completions.append(
                Completion(output.text, list(output.token_ids), finished=output.finish_reason == "stop")
            )
    return completions
