"""Argument checks shared by every public setting, so all are equally strict.

* a *number* is an ``int`` or ``float`` that is not a ``bool`` and is finite: anything else of
  the wrong type is a ``TypeError``, a non-finite or out-of-range number a ``ValueError``;
* a *count* is an ``int`` (not a ``bool``) at or above a minimum: anything else is a
  ``ValueError`` naming the minimum (``steps`` also takes the string ``"auto"``, so a count's
  wrong string is a wrong value, not a wrong type).

Messages start with the setting's name: ``"lr: expected a number > 0, got 0.0"``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_count", "check_in", "check_number", "check_positive"]


def check_number(name: str, value: Any) -> float:
    """``value`` as a float; it must be a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} ({value!r})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number


def check_in(name: str, value: Any, interval: str) -> float:
    """``value`` as a float within ``interval``, written as in mathematics: ``"(0, 1]"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} ({value!r})")
    low_text, high_text = interval[1:-1].split(",")
    low, high = float(low_text), float(high_text)
    number = float(value)
    above = number > low if interval[0] == "(" else number >= low
    below = number < high if interval[-1] == ")" else number <= high
    if not (above and below and math.isfinite(number)):
        raise ValueError(f"{name}: expected a value in {interval}, got {value!r}")
    return number


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a float ``> 0`` (``>= 0`` with ``allow_zero``), finite."""
    number = check_number(name, value)
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(
            f"{name}: expected a number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return number


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value
