import pytest
import torch

from trl_kimi.generation import Completion, prompt_texts, sample_completions
from trl_kimi.tasks import arithmetic


@pytest.fixture(scope="module")
def tiny():
    tokenizer = arithmetic.make_tokenizer()
    return arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2), tokenizer


def test_shapes_lengths_and_determinism(tiny):
    model, tokenizer = tiny
    model.train()
    prompts = ["3+4=", "a1b2=", "9="]
    first = sample_completions(model, tokenizer, prompts, 3, max_new_tokens=6, batch_size=4, seed=1)
    again = sample_completions(model, tokenizer, prompts, 3, max_new_tokens=6, batch_size=4, seed=1)
    assert [len(group) for group in first] == [3, 3, 3]
    assert first == again  # seeded
    for completion in (c for group in first for c in group):
        assert 1 <= completion.num_tokens <= 6
        # finished <=> the last token is EOS; a truncated one has exactly max_new_tokens tokens and no EOS
        assert completion.finished == (completion.token_ids[-1] == tokenizer.eos_token_id)
        assert completion.finished or completion.num_tokens == 6
        assert tokenizer.eos_token_id not in completion.token_ids[:-1]
    assert model.training  # restored after generating in eval mode
    assert tokenizer.padding_side == "left"


def test_eos_cut_and_decode():
    # A model that always emits "7" then EOS: the completion stops at EOS and the text omits it.
    tokenizer = arithmetic.make_tokenizer()
    model = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    seven, eos = tokenizer.convert_tokens_to_ids("7"), tokenizer.eos_token_id
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: zero logits everywhere but the bias we add below
    calls = []

    def forward_hook(module, args, output):
        logits = output.logits
        logits[:] = -1e9
        logits[..., seven if not calls else eos] = 0.0
        calls.append(1)
        return output

    handle = model.register_forward_hook(forward_hook)
    try:
        ((sample,),) = sample_completions(model, tokenizer, ["1+1="], 1, max_new_tokens=5, temperature=0)
    finally:
        handle.remove()
    assert sample == Completion("7", [seven, eos], finished=True)


def test_greedy_is_generated_once_and_repeated(tiny):
    model, tokenizer = tiny
    (group,) = sample_completions(model, tokenizer, ["12="], 4, max_new_tokens=5, temperature=0)
    assert len(group) == 4 and all(c == group[0] for c in group)


def test_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="num_samples"):
        sample_completions(model, tokenizer, ["1="], 0)
    with pytest.raises(ValueError, match="empty"):
        sample_completions(model, tokenizer, [], 1)
    with pytest.raises(TypeError, match="prompt must be"):
        prompt_texts(tokenizer, [{"role": "user"}])
    with pytest.raises(ValueError, match="temperature"):
        sample_completions(model, tokenizer, ["1="], 1, temperature=-1)
