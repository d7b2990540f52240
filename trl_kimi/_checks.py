"""
Argument checks of the public entry points (configs, exported functions and classes), one function per shape of
check so that each message is built in one place: it names the argument, what is allowed, the value given and the fix.

Internal code receives values these checks (or `KimiConfig.__post_init__`) already accepted, and does not check them
again.
"""

import math
import numbers
from collections.abc import Collection
from typing import Any


def _refuse(name: str, allowed: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}" + (f"; {fix}" if fix else "."))


def check_choice(name: str, value: Any, choices: Collection, fix: str = "") -> None:
    """
    Raises a `ValueError` unless `value` is one of `choices`.

    Example:
    ```python
    >>> check_choice("reduction", "max", ("sum", "mean"), "pass --reduction sum.")
    Traceback (most recent call last):
    ...
    ValueError: reduction must be one of ('sum', 'mean'), got 'max'; pass --reduction sum.

    ```
    """
    if value not in choices:
        raise _refuse(name, f"one of {tuple(choices)}", value, fix)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    integer: bool = False,
    finite: bool = False,
    unset: str | None = None,
    fix: str = "",
) -> None:
    """
    Raises a `ValueError` unless `low <= value <= high` (`low < value` with `low_open`; a missing bound is no bound).

    `value` must be a real number (`int`, `float` or a NumPy scalar; not a `bool`, not a string); with `integer`, an
    integral one; with `finite`, a finite one; with `unset` (what `None` means), `None` is accepted. NaN is refused
    whenever a bound is given.

    Example:
    ```python
    >>> check_number("alpha", 0.5, 0.0, 1.0)
    >>> check_number("max_pairs", 0, 1, integer=True, unset="all pairs")
    Traceback (most recent call last):
    ...
    ValueError: max_pairs must be an integer >= 1 or None (all pairs), got 0.

    ```
    """
    if value is None and unset is not None:
        return
    kind = numbers.Integral if integer else numbers.Real
    typed = isinstance(value, kind) and not isinstance(value, bool)
    if typed and finite:
        typed = math.isfinite(value)
    inside = typed and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if inside:
        return
    if low is not None and high is not None:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        interval = f"{'>' if low_open else '>='} {low:g}"
    else:
        interval = f"<= {high:g}"
    noun = "an integer " if integer else "a finite number " if finite else ""
    raise _refuse(name, noun + interval + (f" or None ({unset})" if unset else ""), value, fix)


def check_map_style(dataset: Any, feature: str, fix: str) -> None:
    """Raises a `ValueError` unless `dataset` is a map-style `datasets.Dataset`, which `feature` reads by index."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise ValueError(
            f"{feature} draws problems from train_dataset by index, which needs a map-style datasets.Dataset, got "
            f"{type(dataset).__name__}. Load the dataset without streaming, or {fix}."
        )
