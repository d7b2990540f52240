"""
The TRL seams trl-kimi relies on, pinned: every private `GRPOTrainer` method the package overrides or calls, the
values some of them return, and the attributes it reads. A TRL upgrade that changes one fails here, with a message
naming the seam and the trl-kimi code that uses it, instead of misbehaving somewhere in a training run. The
`setup.cfg` pin comment lists the same seams; keep the two in step.
"""

import inspect
import re

import pytest
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration

from tests.utils import digit_fraction_reward, tiny_config, tiny_model
from trl_kimi import KimiMirrorDescentTrainer
from trl_kimi.tasks import arithmetic
from trl_kimi.trainer.kimi_trainer import _FORWARD_KEYS


KIMI = "trl_kimi/trainer/kimi_trainer.py"
SAMPLING = "trl_kimi/trainer/sampling_mixin.py"
PARTIAL = "trl_kimi/trainer/partial_rollout_mixin.py"

# name -> (parameters after `self`, as TRL 1.16 declares them, the trl-kimi modules that override or call it)
METHOD_SEAMS = {
    "_calculate_rewards": (["inputs", "prompts", "completions", "completion_ids_list"], [KIMI]),
    "_generate_and_score_completions": (["inputs"], [KIMI, PARTIAL]),
    "_generate": (["prompts"], [PARTIAL]),
    # PartialRolloutMixin._generate_round calls it by keyword: prompt_ids, images, multimodal_fields, num_generations.
    "_generate_single_turn": (
        ["prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images=False"],
        [PARTIAL],
    ),
    "_tokenize_prompts": (["prompts"], [PARTIAL]),
    "_get_train_sampler": (["dataset=None"], [SAMPLING]),
    "_compute_loss": (["model", "inputs"], [KIMI]),
    "_save_optimizer_and_scheduler": (["output_dir"], [SAMPLING, PARTIAL]),
    "_load_optimizer_and_scheduler": (["checkpoint"], [SAMPLING, PARTIAL]),
}

# Source lines whose meaning trl-kimi depends on (a return order, the advantage formula, the gather).
SOURCE_SEAMS = {
    # PartialRolloutMixin._generate unpacks this tuple by name and replaces `tool_mask` with its loss mask.
    "_generate": [
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images"
    ],
    # PartialRolloutMixin._generate_single_turn hands back stored completions in this shape.
    "_generate_single_turn": ["return completion_ids, logprobs"],
    # PartialRolloutMixin takes the token ids, the first element.
    "_tokenize_prompts": ["return prompt_ids, images, multimodal_fields"],
    # The group reward columns are filled after this gather, on the rewards of every process.
    "_calculate_rewards": ["rewards_per_func = gather(rewards_per_func)", "return rewards_per_func"],
    # The Kimi trainer lets TRL compute the advantages: with scale_rewards="none" they are r - group mean, declined
    # samples (NaN) left out of the mean and given 0.
    "_generate_and_score_completions": [
        "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
        "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
        "advantages = rewards - mean_grouped_rewards",
        'if self.scale_rewards != "none":',
        "advantages = torch.nan_to_num(advantages, nan=0.0)",
        '"advantages": advantages,',
        'output["tool_mask"] = tool_mask',
        'output["old_per_token_logps"] = old_per_token_logps',
    ],
    # KimiMirrorDescentTrainer._compute_loss divides by the accumulation steps as TRL's loss does (set by the
    # Trainer's training loop, so not an attribute of a freshly built trainer).
    "_compute_loss": ['normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0'],
    # KimiMirrorDescentTrainer._generate_and_score_completions resets the optimizer: in training TRL calls it
    # exactly when it starts a new generated batch (and in evaluation, where the model is not training).
    "_prepare_inputs": [
        'if mode == "train":',
        "if self._step % generate_every == 0 or self._buffered_inputs is None:",
        "generation_batch = self._generate_and_score_completions(generation_batch)",
        "inputs = self._generate_and_score_completions(generation_batch)",
    ],
}

# Attributes of a built GRPOTrainer that trl-kimi reads or extends, and who does.
ATTRIBUTE_SEAMS = {
    "_metrics": [KIMI, SAMPLING, PARTIAL],
    "_step": [SAMPLING],
    "num_generations": [KIMI, SAMPLING, PARTIAL],
    "num_generations_eval": [KIMI],
    "num_iterations": [KIMI, SAMPLING],
    "reward_funcs": [KIMI, PARTIAL],
    "reward_func_names": [KIMI, SAMPLING, PARTIAL],
    "reward_processing_classes": [PARTIAL],
    "reward_weights": [PARTIAL],
    "beta": [KIMI],
    "aux_loss_enabled": [KIMI],
    "router_aux_loss_coef": [KIMI],
    "eos_token_ids": [PARTIAL],
    "max_completion_length": [PARTIAL],
    "use_vllm": [PARTIAL],
    "generation_config": [PARTIAL],  # its max_new_tokens, lowered for one partial-rollout round
    "tools": [PARTIAL],
    "environment_factories": [PARTIAL],
    "rollout_func": [PARTIAL],
}


def _parameters_of(function) -> list[str]:
    """Names and defaults (annotations left out: TRL adds them without changing the contract)."""
    parameters = inspect.signature(function).parameters.values()
    return [str(p.replace(annotation=inspect.Parameter.empty)) for p in parameters]


def _parameters(method) -> list[str]:
    return _parameters_of(method)[1:]  # without self


@pytest.mark.parametrize("name", sorted(METHOD_SEAMS))
def test_method_signatures(name):
    expected, users = METHOD_SEAMS[name]
    assert hasattr(GRPOTrainer, name), f"TRL seam GRPOTrainer.{name} is gone; used by {', '.join(users)}."
    got = _parameters(getattr(GRPOTrainer, name))
    assert got == expected, (
        f"TRL seam GRPOTrainer.{name} changed its signature: expected ({', '.join(expected)}), got "
        f"({', '.join(got)}). Used by {', '.join(users)}; adapt them, then update this pin and setup.cfg."
    )


def test_module_level_helpers():
    # Imported from TRL modules that are not its top-level API.
    from trl.import_utils import is_vllm_available
    from trl.trainer.utils import get_config_model_id

    assert _parameters_of(get_config_model_id) == ["config"], (
        f"TRL helper trl.trainer.utils.get_config_model_id changed; {KIMI} (model card, default output_dir) calls it."
    )
    required = [p for p in inspect.signature(is_vllm_available).parameters.values() if p.default is p.empty]
    assert not required, (
        "TRL helper trl.import_utils.is_vllm_available changed; trl_kimi/trainer/preflight.py and "
        "trl_kimi/scripts/evaluate.py call it."
    )


def test_logps_and_entropies_take_the_keywords_the_loss_passes():
    parameters = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    positional = list(parameters)[1:5]
    assert positional == ["model", "input_ids", "attention_mask", "logits_to_keep"], (
        f"TRL seam GRPOTrainer._get_per_token_logps_and_entropies changed its leading parameters to {positional}; "
        f"{KIMI} (_compute_loss) passes (model, input_ids, attention_mask, logits_to_keep) by position."
    )
    missing = [key for key in ("compute_entropy", "compute_aux_loss", *_FORWARD_KEYS) if key not in parameters]
    assert not missing, (
        f"TRL seam GRPOTrainer._get_per_token_logps_and_entropies no longer takes {missing}; {KIMI} (_compute_loss, "
        "_FORWARD_KEYS) passes them."
    )


@pytest.mark.parametrize("name", sorted(SOURCE_SEAMS))
def test_source_lines_we_rely_on(name):
    source = re.sub(r"[ \t]+", " ", inspect.getsource(getattr(GRPOTrainer, name)))
    for line in SOURCE_SEAMS[name]:
        assert re.sub(r"[ \t]+", " ", line) in source, (
            f"TRL seam GRPOTrainer.{name} no longer contains `{line}`; see its comment in tests/test_trl_seams.py for "
            "the trl-kimi code that relies on it."
        )


def test_vllm_generation_limit_is_an_attribute():
    # PartialRolloutMixin._generation_limit lowers `trainer.vllm_generation.max_completion_length` for one round.
    assert "max_completion_length" in inspect.signature(VLLMGeneration.__init__).parameters
    assert "self.max_completion_length = max_completion_length" in inspect.getsource(VLLMGeneration.__init__), (
        f"TRL seam VLLMGeneration.max_completion_length changed; {PARTIAL} (_generation_limit) sets it per round."
    )
    assert "self.vllm_generation = VLLMGeneration(" in inspect.getsource(GRPOTrainer.__init__), (
        f"TRL seam GRPOTrainer.vllm_generation changed; {PARTIAL} (_generation_limit) sets its max_completion_length."
    )


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    tokenizer = arithmetic.make_tokenizer()
    return KimiMirrorDescentTrainer(
        model=tiny_model(tokenizer),
        reward_funcs=digit_fraction_reward,
        args=tiny_config(tmp_path_factory.mktemp("seams")),
        train_dataset=arithmetic.make_rl_dataset(8, seed=0),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("name", sorted(ATTRIBUTE_SEAMS))
def test_attributes_we_read(trainer, name):
    assert hasattr(trainer, name), (
        f"TRL seam GRPOTrainer.{name} (an attribute set by GRPOTrainer.__init__) is gone; read by "
        f"{', '.join(ATTRIBUTE_SEAMS[name])}."
    )


def test_generation_config_holds_the_round_limit(trainer):
    assert trainer.generation_config.max_new_tokens == trainer.max_completion_length, (
        f"TRL seam GRPOTrainer.generation_config.max_new_tokens no longer holds max_completion_length; {PARTIAL} "
        "(_generation_limit) lowers it for one partial-rollout round."
    )


def test_reward_lists_are_parallel(trainer):
    # PartialRolloutMixin appends a column to these four, as TRL does for an environment's reward.
    sizes = [
        len(trainer.reward_funcs),
        len(trainer.reward_func_names),
        len(trainer.reward_processing_classes),
        trainer.reward_weights.numel(),
    ]
    assert len(set(sizes)) == 1, f"TRL's reward lists are no longer parallel ({sizes}); {PARTIAL} extends them."
