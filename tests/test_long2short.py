import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, HfArgumentParser, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

import trl_kimi.long2short.trainer as long2short_trainer
from trl_kimi import KimiMirrorDescentTrainer, Long2ShortConfig, Long2ShortTrainer
from trl_kimi.evaluation import ScoredSample, sample_and_score
from trl_kimi.generation import sample_completions
from trl_kimi.long2short import (
    ZeroIfTruncatedReward,
    build_dpo_pairs,
    dpo_pairs_for_prompt,
    long2short_length_penalty,
    long2short_rl_config,
    merge_models,
    select_shortest_correct,
    shortest_rejection_sampling,
)
from trl_kimi.tasks import arithmetic
from trl_kimi.verifiers import math_reward


REPO = Path(__file__).resolve().parents[1]


def tiny(tokenizer, seed):
    # 1 layer, 16 wide: merging and sampling take milliseconds
    return arithmetic.make_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=seed)


def S(text, correct, num_tokens=None):
    """A hand-made sample; its length in tokens defaults to its length in characters."""
    return ScoredSample(text, len(text) if num_tokens is None else num_tokens, correct)


def at_most_4_chars_reward(completions, **kwargs):
    # A stand-in verifier for the end-to-end runs: an untrained model is right often enough, deterministically.
    return [float(len(c) <= 4) for c in completions]


# ------------------------------------------------------------------------------------------------- merging
def test_merge_is_exact_weighted_average_and_leaves_inputs_alone(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    long_model, short_model = tiny(tokenizer, 0), tiny(tokenizer, 1)
    long_before = {k: v.clone() for k, v in long_model.state_dict().items()}
    merged = merge_models(long_model, short_model, alpha=0.25)
    for name, value in merged.state_dict().items():
        expected = 0.25 * long_model.state_dict()[name] + 0.75 * short_model.state_dict()[name]
        assert torch.equal(value, expected), name
    # a hand-checked entry: 0.25 * a + 0.75 * b
    a, b = long_model.model.norm.weight[0].item(), short_model.model.norm.weight[0].item()
    assert merged.model.norm.weight[0].item() == pytest.approx(0.25 * a + 0.75 * b, abs=0)
    assert all(torch.equal(v, long_before[k]) for k, v in long_model.state_dict().items())
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()  # still tied
    # alpha = 1 is the long model, alpha = 0 the short one
    assert torch.equal(merge_models(long_model, short_model, 1.0).lm_head.weight, long_model.lm_head.weight)
    assert torch.equal(merge_models(long_model, short_model, 0.0).lm_head.weight, short_model.lm_head.weight)
    # saved and reloaded like any model
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.model.norm.weight, merged.model.norm.weight)


def test_merged_model_computes_with_its_own_weights_after_a_trainer_touched_the_input(tmp_path):
    # Regression: a Trainer leaves accelerate's `forward` wrapper, bound to the original model, on the instance; a
    # plain deep copy kept it, so the merged model answered exactly like the long model.
    tokenizer = arithmetic.make_tokenizer()
    long_model, short_model = tiny(tokenizer, 0), tiny(tokenizer, 1)
    config = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, max_steps=1, report_to="none", save_strategy="no",
        gradient_checkpointing=False, disable_tqdm=True,
    )  # fmt: skip
    SFTTrainer(
        long_model, args=config, train_dataset=arithmetic.make_sft_dataset(8), processing_class=tokenizer
    ).train()
    assert "forward" in long_model.__dict__  # the wrapper this test is about
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        merged_logits = merge_models(long_model, short_model, alpha=0.0)(ids).logits
        assert torch.equal(merged_logits, short_model(ids).logits)
        assert not torch.equal(merged_logits, long_model(ids).logits)


def test_merge_refuses_other_vocabularies_architectures_and_alphas():
    tokenizer = arithmetic.make_tokenizer()
    model = tiny(tokenizer, 0)
    bigger_vocab = tiny(tokenizer, 1)
    bigger_vocab.resize_token_embeddings(len(tokenizer) + 3)
    with pytest.raises(ValueError, match="vocabulary"):
        merge_models(model, bigger_vocab)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
        )
    )
    with pytest.raises(ValueError, match="same architecture"):
        merge_models(model, llama)
    wider = arithmetic.make_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="shape"):
        merge_models(model, wider)
    with pytest.raises(ValueError, match="alpha must be in"):
        merge_models(model, tiny(tokenizer, 1), alpha=1.5)


# ------------------------------------------------------------------------------------------------- selection rules
def test_shortest_correct_ties_and_no_correct():
    # ties: the first sampled of the shortest correct ones wins
    assert select_shortest_correct([S("=12", True), S("=13", True), S("a1:1=1", True)]).text == "=12"
    # the shortest sample is wrong: the shortest *correct* one is chosen
    assert select_shortest_correct([S("=9", False), S("a1:1=1", True)]).text == "a1:1=1"
    # no correct sample
    assert select_shortest_correct([S("=9", False), S("=8", False)]) is None
    assert select_shortest_correct([]) is None


@pytest.mark.parametrize(
    "group, ratio, max_pairs, expected",
    [
        # exactly 1.5x the chosen length (6 = 1.5 * 4) is rejected: the ratio is inclusive
        ([S("aaaa", True), S("bbbbbb", True)], 1.5, None, [("aaaa", "bbbbbb")]),
        # just under 1.5x (5 < 6) is kept out
        ([S("aaaa", True), S("bbbbb", True)], 1.5, None, []),
        # a wrong answer is rejected whatever its length, even shorter than the chosen one
        ([S("aaaa", True), S("x", False), S("yyyyyyyy", False)], 1.5, None, [("aaaa", "x"), ("aaaa", "yyyyyyyy")]),
        # the ratio is an option: at 2.0, 6 tokens is no longer rejected, 8 is
        ([S("aaaa", True), S("bbbbbb", True), S("cccccccc", True)], 2.0, None, [("aaaa", "cccccccc")]),
        # duplicates count once; sampling order is kept; max_pairs truncates
        ([S("x", False), S("aaaa", True), S("x", False), S("z", False)], 1.5, 1, [("aaaa", "x")]),
        # tie for the shortest correct: the first is chosen, the other (same length) is not rejected
        ([S("aaaa", True), S("bbbb", True), S("w", False)], 1.5, None, [("aaaa", "w")]),
        # no correct answer: no pair
        ([S("x", False), S("y", False)], 1.5, None, []),
    ],
)
def test_dpo_pair_rules(group, ratio, max_pairs, expected):
    assert dpo_pairs_for_prompt(group, ratio=ratio, max_pairs=max_pairs) == expected


def test_dpo_pair_rules_refuse_bad_options():
    with pytest.raises(ValueError, match="ratio must be > 1"):
        dpo_pairs_for_prompt([S("a", True)], ratio=1.0)
    with pytest.raises(ValueError, match="max_pairs must be >= 1"):
        dpo_pairs_for_prompt([S("a", True)], max_pairs=0)


# ------------------------------------------------------------------------------------------------- datasets
def test_shortest_rejection_sampling_dataset_skips_and_counts(caplog):
    dataset = Dataset.from_dict({"prompt": ["p1", "p2", "p3"], "answer": ["1", "2", "3"]})
    samples = [
        [S("long-correct", True), S("=1", True), S("=9", False)],
        [S("=5", False), S("=6", False)],  # no correct sample: skipped and counted
        [S("bb", True), S("aa", True)],  # tie: the first
    ]
    with caplog.at_level(logging.WARNING):
        result = shortest_rejection_sampling(dataset, samples)
    assert result.column_names == ["prompt", "completion"]
    assert result.to_dict() == {"prompt": ["p1", "p3"], "completion": ["=1", "bb"]}
    assert "1 of 3 prompts had no correct sample" in caplog.text
    # conversational prompts get an assistant message
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "a1b2="}]]})
    assert shortest_rejection_sampling(chat, [[S("=3", True)]])["completion"] == [
        [{"role": "assistant", "content": "=3"}]
    ]
    with pytest.raises(ValueError, match="No correct sample for any of the 1 prompts"):
        shortest_rejection_sampling(dataset.select([1]), [samples[1]])
    with pytest.raises(ValueError, match="one group per prompt"):
        shortest_rejection_sampling(dataset, samples[:2])
    with pytest.raises(ValueError, match="Pass either `samples`"):
        shortest_rejection_sampling(dataset)


def test_build_dpo_pairs_dataset_and_empty_error(caplog):
    dataset = Dataset.from_dict({"prompt": ["p1", "p2", "p3"]})
    samples = [
        [S("=1", True), S("=2", False), S("a1:1=1", True)],  # 2 pairs: the wrong one, the 3x longer one
        [S("=5", False)],  # no correct sample
        [S("=3", True), S("=03", True, 2)],  # all correct and under 1.5x: no pair
    ]
    with caplog.at_level(logging.WARNING):
        pairs = build_dpo_pairs(dataset, samples)
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    assert pairs.to_dict() == {"prompt": ["p1", "p1"], "chosen": ["=1", "=1"], "rejected": ["=2", "a1:1=1"]}
    assert "1 of 3 prompts had no correct sample and 1 gave no pair" in caplog.text
    assert len(build_dpo_pairs(dataset, samples, max_pairs_per_prompt=1)) == 1
    with pytest.raises(ValueError, match=r"No DPO pair from 2 prompts \(1 without a correct sample, 1 with only"):
        build_dpo_pairs(dataset.select([1, 2]), samples[1:])


def test_sampling_measures_tokens_and_fails_truncated_answers():
    tokenizer = arithmetic.make_tokenizer()
    model = tiny(tokenizer, 0)
    dataset = arithmetic.make_rl_dataset(3, seed=0, max_terms=3)
    groups = sample_and_score(model, tokenizer, dataset, at_most_4_chars_reward, 4, max_new_tokens=5, seed=0).samples
    assert [len(g) for g in groups] == [4, 4, 4]
    flat = [s for g in groups for s in g]
    assert all(1 <= s.num_tokens <= 5 for s in flat)
    assert all(s.correct == (s.finished and len(s.text) <= 4) for s in flat)
    assert not any(s.correct for s in flat if not s.finished)  # no EOS within the cap: wrong


# ------------------------------------------------------------------------------------------------- RL preset
def test_long2short_rl_config_lowers_the_cap_and_penalises_from_step_0():
    config = long2short_rl_config(
        {
            "output_dir": "unused",
            "use_cpu": True,
            "max_completion_length": 64,
            "num_generations": 2,
            "per_device_train_batch_size": 4,
        },
        max_completion_length=16,
    )
    assert config.max_completion_length == 16 and config.num_generations == 2
    again = long2short_rl_config(config, max_completion_length=8, output_dir="elsewhere")
    assert (again.max_completion_length, again.output_dir, config.max_completion_length) == (8, "elsewhere", 16)
    with pytest.warns(UserWarning, match="not lower than the base's 16"):
        long2short_rl_config(config, max_completion_length=32)
    penalty = long2short_length_penalty("addition_reward", weight=0.5)
    assert penalty.scale(step=0) == 1.0  # active from the first step
    # lengths 4 and 12 among correct answers, one wrong: (0.5, -0.5, min(0, 0.5 - (8 - 4) / 8) = 0) times w = 0.5
    assert penalty.compute([4, 12, 8], [True, True, False], num_generations=3, step=0) == [0.25, -0.25, 0.0]


def always_one_reward(completions, **kwargs):
    # What a verifier says about a cut answer whose text already holds the right number: 1.
    return [1.0] * len(completions)


def test_rl_preset_gives_0_to_an_answer_over_the_cap(tmp_path, monkeypatch):
    # issue 19: a correct answer cut at the cap kept reward 1, because reward functions never hear of truncation
    text = "So the area is \\boxed{5}. Wait, let me double-check this by recomputing the"
    reward = ZeroIfTruncatedReward(math_reward, eos_token_id=arithmetic.EOS_ID)
    over_cap, finished = [5, 6, 7], [5, 6, arithmetic.EOS_ID]
    assert math_reward([text], solution=["5"]) == [1.0]
    assert reward(completions=[text, text], completion_ids=[over_cap, finished], solution=["5", "5"]) == [0.0, 1.0]
    assert reward.__name__ == "math_reward"  # what LengthPenaltyReward and TRL's reward columns read
    with pytest.raises(ValueError, match="needs completion_ids"):
        reward(completions=[text], solution=["5"])

    # end to end: the RL stage of Long2ShortTrainer, where the untrained model rarely stops within 6 tokens
    scored = []  # (completion ids, reward of always_one_reward) of every sample the RL stage scored

    class RecordingTrainer(KimiMirrorDescentTrainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            column = self.reward_func_names.index("always_one_reward")
            scored.extend(zip(completion_ids_list, rewards[:, column].tolist(), strict=True))
            return rewards

    monkeypatch.setattr(long2short_trainer, "KimiMirrorDescentTrainer", RecordingTrainer)
    tokenizer = arithmetic.make_tokenizer()
    trainer = Long2ShortTrainer(
        tiny(tokenizer, 0), chain_config(tmp_path, ["rl"]), arithmetic.make_rl_dataset(4, seed=0, max_terms=3),
        reward_funcs=always_one_reward, processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    # rl_max_steps=2 at KimiConfig's default 2 optimizer steps per generated batch: one batch of 4 x 2 samples
    assert len(scored) == 8
    # 1 for an answer that stopped (its last token is EOS), 0 for one the cap of 6 tokens cut
    assert [r for _, r in scored] == [float(ids[-1] == arithmetic.EOS_ID) for ids, _ in scored]
    assert sum(len(ids) == 6 and ids[-1] != arithmetic.EOS_ID for ids, _ in scored) >= 4  # the cap did cut answers


# ------------------------------------------------------------------------------------------------- config
def test_config_parses_as_flags_with_help_and_checks_values():
    for name, f in Long2ShortConfig.__dataclass_fields__.items():
        assert f.metadata.get("help"), f"{name} has no help"
    (config,) = HfArgumentParser(Long2ShortConfig).parse_args_into_dataclasses(
        args=["--output_dir", "x", "--methods", "merge", "rl", "--dpo_length_ratio", "2", "--rl_overrides", '{"a": 1}']
    )
    assert config.methods == ["merge", "rl"] and config.dpo_length_ratio == 2.0 and config.rl_overrides == {"a": 1}
    assert config.eval_max_new_tokens == config.max_new_tokens == 1024
    for kwargs, message in [
        ({"methods": ["distill"]}, "Unknown long2short methods"),
        ({"methods": ["dpo", "dpo"]}, "more than once"),
        ({"methods": []}, "methods is empty"),
        ({"dpo_length_ratio": 1.0}, "dpo_length_ratio must be > 1"),
        ({"merge_alpha": -0.1}, "merge_alpha must be in"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
        ({"sft_overrides": "{not json"}, "sft_overrides must be a JSON object"),
    ]:
        with pytest.raises(ValueError, match=message):
            Long2ShortConfig(output_dir="x", **kwargs)


# ------------------------------------------------------------------------------------------------- the chain
def chain_config(tmp_path, methods):
    return Long2ShortConfig(
        output_dir=str(tmp_path),
        methods=methods,
        use_cpu=True,
        gradient_checkpointing=False,  # nothing to checkpoint in a 1-layer model
        logging_steps=1,
        num_samples=4,  # n = 4 instead of 8
        max_new_tokens=8,
        sft_max_steps=2,
        sft_per_device_train_batch_size=4,
        sft_learning_rate=1e-2,  # large enough for 2 steps to move the weights
        dpo_max_steps=2,
        dpo_per_device_train_batch_size=4,
        dpo_learning_rate=1e-2,
        rl_max_steps=2,
        rl_num_generations=2,
        rl_per_device_train_batch_size=4,
        rl_max_completion_length=6,
        rl_learning_rate=1e-2,
        eval_num_samples=2,
        sft_overrides={"disable_tqdm": True},
        dpo_overrides={"disable_tqdm": True},
        rl_overrides={"disable_tqdm": True},
    )


def test_chain_runs_end_to_end_offline(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    model, short_model = tiny(tokenizer, 0), tiny(tokenizer, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train, evaluation = arithmetic.make_rl_dataset(8, seed=0, max_terms=3), arithmetic.make_rl_dataset(4, seed=1)
    trainer = Long2ShortTrainer(
        model,
        chain_config(tmp_path, ["merge", "rejection_sft", "dpo", "rl"]),
        train_dataset=train,
        eval_dataset=evaluation,
        reward_funcs=at_most_4_chars_reward,
        processing_class=tokenizer,
        short_model=short_model,
    )
    results = trainer.train()
    stages = results["stages"]
    assert [s["method"] for s in stages] == ["merge", "rejection_sft", "dpo", "rl"]
    for before, after in zip(stages, stages[1:]):
        assert after["before"] == before["after"]  # each stage starts where the previous one ended
    # the reported figures are the scoring rule applied to the samples, recomputed here by hand for the start model
    # and the saved final model: correct = stopped within the 8-token cap and at most 4 characters
    for phase, weights in (("before", model), ("after", AutoModelForCausalLM.from_pretrained(results["final_model"]))):
        groups = sample_completions(weights, tokenizer, evaluation["prompt"], 2, max_new_tokens=8, seed=0)
        flat = [c for group in groups for c in group]
        report = stages[0 if phase == "before" else -1][phase]
        assert report["accuracy"] == pytest.approx(np.mean([c.finished and len(c.text) <= 4 for c in flat]), abs=1e-4)
        assert report["mean_tokens"] == pytest.approx(np.mean([c.num_tokens for c in flat]), abs=1e-4)
        assert report["truncated_fraction"] == pytest.approx(np.mean([not c.finished for c in flat]), abs=1e-4)
    for stage in stages:
        assert (tmp_path / stage["method"] / "model" / "model.safetensors").exists()
        assert (tmp_path / stage["method"] / "model" / "tokenizer.json").exists()
    assert stages[0]["dataset_dir"] is None  # merging has no data
    sft_data = load_from_disk(stages[1]["dataset_dir"])
    assert sft_data.column_names == ["prompt", "completion"]
    assert stages[1]["num_prompts"] == 8 and len(sft_data) == 8 - stages[1]["num_without_correct"]
    assert all(len(c) <= 4 for c in sft_data["completion"])  # only correct answers are kept
    dpo_data = load_from_disk(stages[2]["dataset_dir"])
    assert dpo_data.column_names == ["prompt", "chosen", "rejected"] and len(dpo_data) == stages[2]["num_examples"]
    for stage in stages[1:]:
        assert stage["train_loss"] == stage["train_loss"]  # logged, not NaN
    # the merge stage is exactly the average of the two input models
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merge" / "model")
    assert torch.allclose(
        merged.model.norm.weight, (start["model.norm.weight"] + short_model.model.norm.weight) / 2, atol=0
    )
    # training changed the weights; the final model is the RL stage's
    final = AutoModelForCausalLM.from_pretrained(results["final_model"])
    assert not torch.equal(final.model.norm.weight, merged.model.norm.weight)
    assert json.loads((tmp_path / "results.json").read_text())["stages"][3]["method"] == "rl"
    # what the `trl-kimi long2short` command calls after train()
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "model.safetensors").exists() and (tmp_path / "final" / "tokenizer.json").exists()
    card = trainer.create_model_card(dataset_name="chain-sum")
    assert "merge → rejection_sft → dpo → rl, on chain-sum" in card and card.count("\n| ") == 5
    assert (tmp_path / "README.md").read_text() == card


def test_trainer_refuses_bad_inputs(tmp_path):
    tokenizer = arithmetic.make_tokenizer()
    model = tiny(tokenizer, 0)
    train = arithmetic.make_rl_dataset(4, seed=0, max_terms=3)
    kwargs = {"reward_funcs": at_most_4_chars_reward, "processing_class": tokenizer}
    with pytest.raises(ValueError, match="no short_model was given"):
        Long2ShortTrainer(model, chain_config(tmp_path, ["merge"]), train, **kwargs)
    with pytest.raises(ValueError, match="train_dataset is empty"):
        Long2ShortTrainer(model, chain_config(tmp_path, ["dpo"]), train.select([]), **kwargs)
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        Long2ShortTrainer(model, chain_config(tmp_path, ["dpo"]), train.rename_column("prompt", "question"), **kwargs)
    # nothing correct at all: the rejection-sampling stage stops with the reason, instead of training on nothing
    never = Long2ShortTrainer(
        model, chain_config(tmp_path, ["rejection_sft"]), train, reward_funcs=lambda completions, **k: [0.0] * len(completions),
        processing_class=tokenizer,
    )  # fmt: skip
    with pytest.raises(ValueError, match="No correct sample for any of the 4 prompts"):
        never.train()


# ------------------------------------------------------------------------------------------------- the example
def test_example_script_smoke(tmp_path):
    args = [
        "examples/long2short.py",
        "--output_dir", str(tmp_path),
        "--hidden_size", "32", "--num_layers", "1",
        "--num_sft_examples", "64", "--long_sft_steps", "3", "--short_sft_steps", "2",
        "--num_train_prompts", "8", "--num_eval_prompts", "4", "--eval_samples", "1",
        "--num_samples", "4", "--max_new_tokens", "16", "--rl_max_completion_length", "8",
        "--rl_steps", "1", "--max_terms", "3",
        "--runs", "merge", "long2short RL",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in results["table"]] == [
        "long model (start)",
        "short model",
        "merge",
        "long2short RL",
    ]
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert "| merge |" in (tmp_path / "table.md").read_text()
