import dataclasses
import warnings

import pytest
from trl import GRPOConfig, TrlParser

from trl_kimi import KimiConfig


BASE = dict(output_dir="unused", use_cpu=True, bf16=False, report_to="none")


def make(**kwargs) -> KimiConfig:
    return KimiConfig(**BASE, **kwargs)


def test_defaults():
    args = make()
    assert isinstance(args, GRPOConfig)
    assert (args.tau, args.logprob_reduction, args.reset_optimizer_each_iteration) == (0.1, "sum", False)
    # Fixed by the method: plain mean baseline, no clip, our loss, no KL to a reference unless asked.
    assert (args.scale_rewards, args.epsilon, args.loss_type, args.beta) == ("none", None, "mirror_descent", 0.0)


def test_false_scale_rewards_is_accepted():
    # GRPOConfig turns scale_rewards=False into "none", which is what the method needs.
    assert make(scale_rewards=False).scale_rewards == "none"


@pytest.mark.parametrize("tau", [0, 0.0, -0.1])
def test_tau_must_be_positive(tau):
    with pytest.raises(ValueError, match=rf"tau must be a finite number > 0, got {tau}.*--tau 0.1"):
        make(tau=tau)


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), "0.1", True])
def test_tau_must_be_a_finite_number(tau):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        make(tau=tau)


@pytest.mark.parametrize("num_generations", [1, 0])
def test_num_generations_below_two(num_generations):
    with pytest.raises(ValueError, match=rf"num_generations must be >= 2, got {num_generations}.*--num_generations"):
        make(num_generations=num_generations, per_device_train_batch_size=8)


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"logprob_reduction must be one of \('sum', 'mean'\), got 'token'"):
        make(logprob_reduction="token")


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("epsilon", 0.2, "no PPO clip"),  # the PPO clip of GRPO
        ("epsilon_high", 0.28, "no PPO clip"),  # DAPO's clip-higher
        ("delta", 1.5, "two-sided PPO clip"),  # INTELLECT-2's two-sided clip
        ("loss_type", "dapo", "always the mirror-descent loss"),
        ("scale_rewards", "group", "never divided by a standard deviation"),
        ("scale_rewards", "batch", "never divided by a standard deviation"),
        ("multi_objective_aggregation", "normalize_then_sum", "mean baseline"),
        ("importance_sampling_level", "sequence", "no importance ratio"),
        ("off_policy_mask_threshold", 0.5, "off-policy sequence masking"),
        ("top_entropy_quantile", 0.2, "every completion token"),
        ("entropy_coef", 0.01, "entropy bonus"),
        ("use_adaptive_entropy", True, "entropy bonus"),
    ],
)
def test_options_that_contradict_the_method(name, value, why):
    with pytest.raises(ValueError, match=rf"{name}={value!r} contradicts the Kimi mirror-descent method: .*{why}"):
        make(**{name: value})


def test_token_level_vllm_importance_sampling():
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode='token_mask' gives one importance ratio"):
        make(use_vllm=True, vllm_importance_sampling_mode="token_mask")
    make(use_vllm=True, vllm_importance_sampling_mode="sequence_truncate")  # one ratio per sample: accepted
    make(use_vllm=True, vllm_importance_sampling_mode="token_mask", vllm_importance_sampling_correction=False)


def test_command_line_flags():
    # TrlParser (as the example scripts use it) turns every new field into a flag.
    (args,) = TrlParser((KimiConfig,)).parse_args_into_dataclasses(
        args=[
            "--output_dir",
            "unused",
            "--use_cpu",
            "--bf16",
            "False",
            "--tau",
            "0.5",
            "--logprob_reduction",
            "mean",
            "--reset_optimizer_each_iteration",
            "--report_to",
            "none",
        ]
    )
    assert (args.tau, args.logprob_reduction, args.reset_optimizer_each_iteration) == (0.5, "mean", True)
    with pytest.raises(SystemExit):  # argparse rejects a reduction outside the choices
        TrlParser((KimiConfig,)).parse_args_into_dataclasses(
            args=["--output_dir", "unused", "--logprob_reduction", "max"]
        )


INERT = "One optimizer step per generated batch"
SIGN_SGD = "sign-SGD"


@pytest.mark.parametrize(
    "kwargs, steps_per_generation, expected",
    [
        ({}, 2, []),  # the default: 2 optimizer steps per generated batch
        ({"gradient_accumulation_steps": 4}, 8, []),  # the factor applies to the accumulation the user chose
        ({"reset_optimizer_each_iteration": True}, 2, []),  # the recipe: reset Adam, then 2 steps on the batch
        ({"num_iterations": 2}, 1, []),  # TRL's default suffices: each batch is reused by the second iteration
        ({"generation_batch_size": 32}, 4, []),  # an explicit size is kept
        ({"steps_per_generation": 1}, 1, [INERT]),
        ({"generation_batch_size": 8}, 1, [INERT]),
        ({"steps_per_generation": 4, "gradient_accumulation_steps": 4}, 4, [INERT]),
        ({"steps_per_generation": 1, "reset_optimizer_each_iteration": True}, 1, [INERT, SIGN_SGD]),
    ],
)
def test_default_steps_per_generation_and_inert_tau_warnings(kwargs, steps_per_generation, expected):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = make(per_device_train_batch_size=8, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert args.steps_per_generation == steps_per_generation
    assert args.generation_batch_size == 8 * steps_per_generation
    assert len(messages) == len(expected), messages
    for message, start in zip(messages, expected, strict=True):
        assert start in message
        assert "--steps_per_generation" in message and "--num_iterations 2" in message  # the flags that fix it


def test_default_survives_round_trips():
    # A built config holds both sizes; rebuilding it (dataclasses.replace, to_dict, a CLI with unset flags) must not
    # turn the default into an error or a different batch.
    args = make(gradient_accumulation_steps=3, per_device_train_batch_size=8)
    assert (args.steps_per_generation, args.generation_batch_size) == (6, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = dataclasses.replace(args)
        from_dict = KimiConfig(**args.to_dict())
    for rebuilt in (again, from_dict):
        assert (rebuilt.steps_per_generation, rebuilt.generation_batch_size) == (6, 48)
    with pytest.warns(UserWarning, match="generation_batch_size=48 and steps_per_generation=6 are both set"):
        smaller = dataclasses.replace(args, per_device_train_batch_size=4)
    assert smaller.generation_batch_size == 24
    (parsed,) = TrlParser((KimiConfig,)).parse_args_into_dataclasses(
        args=["--output_dir", "unused", "--use_cpu", "--bf16", "False", "--gradient_accumulation_steps", "2"]
    )
    assert (parsed.steps_per_generation, parsed.num_iterations) == (4, 1)
