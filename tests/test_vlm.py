"""
Image + text prompts (TRL's VLM datasets: a conversational `prompt` with `{"type": "image"}` parts and an `image`
column) train with `KimiMirrorDescentTrainer`, on a tiny LLaVA built locally: random weights, a character tokenizer
with an `<image>` token and a chat template, and a CLIP image processor (PIL backend), so nothing is downloaded.

Why LLaVA and not Qwen2-VL or SmolVLM: their processors need a video processor, which needs torchvision, not a
dependency here; LLaVA's processor is an image processor and a tokenizer only.
"""

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from tests.utils import tiny_config
from trl_kimi import KimiMirrorDescentTrainer


PAD, EOS, IMAGE = "<pad>", "<eos>", "<image>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}:"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)
IMAGE_SIZE, PATCH_SIZE = 28, 14  # 2 x 2 patches: 4 <image> tokens per image


def tiny_llava():
    """A ~54k-parameter LLaVA (1-layer CLIP vision tower, 2-layer Qwen2 text model) and its processor."""
    vocab = {t: i for i, t in enumerate([PAD, EOS, IMAGE, *"abcdefghijklmnopqrstuvwxyz0123456789 =+?.,:\n"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"<image>|<eos>|[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    # "default" drops CLIP's class token from the features; the processor counts it and removes it the same way.
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_id=vocab[IMAGE],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def image_dataset(num: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)) for _ in range(num)]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "how many dots?"}]}]
    return Dataset.from_dict({"prompt": [prompt] * num, "image": images})


def odd_length_reward(completions, **kwargs):
    """Varies within a group for an untrained model; conversational completions (a VLM prompt is a chat)."""
    return [float(len(c[0]["content"]) % 2) for c in completions]


@pytest.fixture(scope="module")
def vlm():
    return tiny_llava()


def test_processor_puts_image_tokens_and_pixels(vlm):
    _, processor = vlm
    text = processor.apply_chat_template(image_dataset(1)[0]["prompt"], add_generation_prompt=True)
    inputs = processor(images=[image_dataset(1)[0]["image"]], text=[text], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(IMAGE)).sum().item() == 4


def test_kimi_trainer_trains_on_image_text_prompts(vlm, tmp_path):
    model, processor = vlm
    trainer = KimiMirrorDescentTrainer(
        model=model,
        reward_funcs=odd_length_reward,
        args=tiny_config(tmp_path, max_steps=1),
        train_dataset=image_dataset(),
        processing_class=processor,
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()
    log = trainer.state.log_history[0]
    assert "loss" in log and "kimi/policy_term" in log
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    # the images reached the loss: the vision tower and the projector got gradients
    assert any(name.startswith("model.vision_tower.") for name in changed)
    assert any(name.startswith("model.multi_modal_projector.") for name in changed)
    assert any(name.startswith("model.language_model.") for name in changed)

    # save and reload the multimodal checkpoint (model, processor, card) from the folder
    trainer.save_model(str(tmp_path / "model"))
    trainer.create_model_card(dataset_name="local-images")
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path / "model")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    assert isinstance(reloaded_processor, LlavaProcessor) and isinstance(reloaded, LlavaForConditionalGeneration)
    assert (tmp_path / "README.md").is_file()
