"""Tests of the grid syntax: a number, a comma-separated list, start:stop:num."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lora_theory._errors import GridError
from lora_theory.grids import MAX_GRID_POINTS, parse_grid


# --- valid forms ------------------------------------------------------------


def test_single_number():
    grid = parse_grid("0.5")
    assert grid.shape == (1,)
    assert grid.dtype == np.float64
    assert grid[0] == 0.5


def test_list_keeps_order_and_ignores_spaces():
    grid = parse_grid(" 0.9, 0.1 ,0.5 ")
    assert grid.tolist() == [0.9, 0.1, 0.5]


def test_list_with_duplicates():
    assert parse_grid("0.5,0.5").tolist() == [0.5, 0.5]


def test_range_includes_both_ends():
    grid = parse_grid("0.02:0.99:200")
    assert grid.shape == (200,)
    assert grid[0] == 0.02
    assert grid[-1] == 0.99
    np.testing.assert_array_equal(grid, np.linspace(0.02, 0.99, 200))


def test_range_single_point_needs_equal_ends():
    # One point cannot include both ends, so dropping the stop value silently is refused.
    with pytest.raises(GridError, match="cannot include both ends 0.3 and 0.7"):
        parse_grid("0.3:0.7:1")


def test_range_single_point_with_equal_ends():
    assert parse_grid("0.4:0.4:1").tolist() == [0.4]


def test_range_descending():
    assert parse_grid("1:0:3").tolist() == [1.0, 0.5, 0.0]


def test_range_accepts_spaces_and_exponents():
    np.testing.assert_array_equal(parse_grid(" 1e-1 : 9e-1 : 5 "), np.linspace(0.1, 0.9, 5))


def test_negative_values_are_grid_values():
    # The grid does not know the domain of mu; the caller checks it.
    assert parse_grid("-0.5,2").tolist() == [-0.5, 2.0]


def test_range_at_max_points():
    assert parse_grid(f"0:1:{MAX_GRID_POINTS}").shape == (MAX_GRID_POINTS,)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_list_round_trips_repr(values):
    text = ",".join(repr(value) for value in values)
    assert parse_grid(text).tolist() == values


# --- malformed text -----------------------------------------------------------


MALFORMED = [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "'abc' is not a number"),
    ("0.1,", "empty value"),
    (",0.1", "empty value"),
    ("0.1,,0.2", "empty value"),
    ("0.1;0.2", "not a number"),
    ("0:1", "exactly three fields"),
    ("0:1:2:3", "exactly three fields"),
    ("0::3", "empty value"),
    ("0:1:0", "must be >= 1"),
    ("0:1:-3", "must be >= 1"),
    ("0:1:2.5", "not an integer"),
    ("0:1:x", "not an integer"),
    ("0:1:", "not an integer"),
    (f"0:1:{MAX_GRID_POINTS + 1}", "above the maximum"),
    ("0:1,2", "mixes"),
    ("nan", "not finite"),
    ("inf", "not finite"),
    ("-inf", "not finite"),
    ("0.1,inf", "not finite"),
    ("1e400", "not finite"),
    ("0:nan:3", "not finite"),
    ("-1.7e308:1.7e308:3", "overflows"),
]


@pytest.mark.parametrize("text, reason", MALFORMED)
def test_malformed_grid_raises(text, reason):
    with pytest.raises(GridError) as caught:
        parse_grid(text)
    message = str(caught.value)
    assert repr(text) in message
    assert reason in message
    assert "start:stop:num" in message


def test_grid_error_is_value_error():
    with pytest.raises(ValueError):
        parse_grid("abc")


def test_non_string_raises():
    with pytest.raises(GridError, match="must be a string"):
        parse_grid(0.5)


def test_range_values_are_finite():
    assert all(math.isfinite(value) for value in parse_grid("0:1e308:7"))
