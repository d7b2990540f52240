import numpy as np
import pytest

from trl_kimi import KimiConfig
from trl_kimi._checks import check_choice, check_number


@pytest.mark.parametrize("value", ["0.1", True, float("nan"), None, 0, -1.0])
def test_check_number_refuses_what_is_not_a_number_in_range(value):
    with pytest.raises(ValueError, match=rf"tau must be > 0, got {value!r}"):
        check_number("tau", value, 0.0, low_open=True)


def test_check_number_accepts_numpy_scalars_and_unset():
    check_number("alpha", np.float64(0.5), 0.0, 1.0)
    check_number("steps", np.int64(3), 1, integer=True)
    check_number("max_pairs", None, 1, integer=True, unset="all pairs")
    with pytest.raises(ValueError, match=r"an integer >= 1 or None \(all pairs\), got 2.5"):
        check_number("max_pairs", 2.5, 1, integer=True, unset="all pairs")


def test_check_choice_names_the_choices_and_the_fix():
    with pytest.raises(ValueError, match=r"one of \('sum', 'mean'\), got 'max'; pass --reduction sum"):
        check_choice("reduction", "max", ("sum", "mean"), "pass --reduction sum.")


def test_config_refuses_a_string_tau_with_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="tau must be a finite number > 0, got '0.1'"):
        KimiConfig(output_dir=str(tmp_path), tau="0.1", use_cpu=True, bf16=False)
