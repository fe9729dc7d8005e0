"""saved/_validation.py: every public setting is checked by the same rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saved import BoundaryConfig, Contract, LBMaskConfig
from saved._validation import check_count, check_in, check_positive

INTERVALS = ["(0, 1)", "(0, 1]", "[0, 1)", "[0, 1]"]


@given(
    value=st.floats(allow_nan=True, allow_infinity=True, width=64),
    interval=st.sampled_from(INTERVALS),
)
def test_check_in_accepts_exactly_the_interval(value: float, interval: str) -> None:
    above = value > 0 if interval[0] == "(" else value >= 0
    below = value < 1 if interval[-1] == ")" else value <= 1
    if math.isfinite(value) and above and below:
        assert check_in("x", value, interval) == value
    else:
        with pytest.raises(ValueError, match=rf"x: expected a value in \{interval[0]}0, 1"):
            check_in("x", value, interval)


@given(value=st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers())))
def test_anything_but_a_number_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="x: expected a number"):
        check_in("x", value, "[0, 1]")
    with pytest.raises(TypeError, match="x: expected a number"):
        check_positive("x", value)


@given(value=st.one_of(st.integers(-5, 5), st.booleans(), st.floats(0, 5), st.text(max_size=2)))
def test_a_count_is_an_int_at_or_above_its_minimum(value: object) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 2
    if ok:
        assert check_count("n", value, 2) == value
    else:
        with pytest.raises(ValueError, match="n: expected an integer >= 2"):
            check_count("n", value, 2)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: LBMaskConfig(lr=True), "lr: expected a number"),  # was accepted as 1
        (lambda: LBMaskConfig(temperature=math.inf), "temperature: expected a finite number"),
        (lambda: LBMaskConfig(sparsity=True), "sparsity: expected a number"),
        (lambda: BoundaryConfig(radius=True), "radius: expected a number"),
        (lambda: BoundaryConfig(steps=True), "steps: expected an integer >= 1"),
        (lambda: Contract(eps=True), "eps: expected a number"),
        (lambda: LBMaskConfig(time_budget=True), "time_budget: expected None or seconds > 0"),
    ],
)
def test_a_bool_is_not_a_setting_anywhere(build, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        build()
