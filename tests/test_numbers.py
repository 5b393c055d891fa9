"""The one check of a real-valued argument (``radam._numbers.real``), and the
four front doors that use it (an option, a schedule's argument, downhill's and
PuzzleLib's hyperparameters): each takes the same numbers and refuses the same
values, with an error naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import radam
from helpers import raises_named
from radam._numbers import real
from radam.compat import downhill, puzzlelib
from radam.schedules import Constant

TAKEN = [
    (3, 3.0),
    (0.25, 0.25),
    (np.float32(0.5), 0.5),
    (np.int64(7), 7.0),
    (np.array(0.125), 0.125),
    (np.array(2, dtype=np.int16), 2.0),
]
NOT_NUMBERS = [True, np.True_, "0.1", None, 1j, np.array([0.1]), [0.1]]


@pytest.mark.parametrize("value, expected", TAKEN)
def test_numbers_are_taken_as_floats(value, expected):
    got = real(value, "x")
    assert type(got) is float and got == expected


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_what_is_not_a_real_number_is_a_type_error_naming_it(value):
    with raises_named(TypeError, "the_arg", "must be a real number"):
        real(value, "the_arg")


def test_an_integer_past_float64_is_a_value_error_naming_it():
    # 10**400 has floor(400 * log2(10)) + 1 = 1329 bits
    with raises_named(ValueError, "the_arg", "too large", "1329 bits"):
        real(10**400, "the_arg")


def test_without_bounds_nan_and_inf_pass():
    assert math.isnan(real(math.nan, "x"))
    assert real(-math.inf, "x") == -math.inf


@pytest.mark.parametrize(
    "bounds, inside, outside, words",
    [
        ({"low": 0}, [0, 1e300], [-1e-300, math.inf, math.nan], "a finite number >= 0"),
        ({"low": 0, "low_open": True}, [1e-300], [0, -0.0, math.inf], "a finite number > 0"),
        ({"high": 2}, [2, -5], [2.5, -math.inf], "a finite number <= 2"),
        ({"high": 2, "high_open": True}, [1.5], [2], "a finite number < 2"),
        ({"low": 0, "high": 1}, [0, 1], [-0.1, 1.1, math.nan], "in [0, 1]"),
        ({"low": 0, "high": 1, "high_open": True}, [0, 0.999], [1], "in [0, 1)"),
        ({"low": 0, "high": 1, "low_open": True, "high_open": True}, [0.5], [0, 1], "in (0, 1)"),
    ],
)
def test_ranges(bounds, inside, outside, words):
    for value in inside:
        assert real(value, "x", **bounds) == value
    for value in outside:
        with raises_named(ValueError, "the_arg", words, f"got {value!r}"):
            real(value, "the_arg", **bounds)


# Each front door with a real-valued argument, as (set it, read back what was taken).
def _option_checked(value):
    opt = radam.Adam([np.zeros(2)], lr=value)
    return opt.current_lr[0]


def _schedule(value):
    return Constant(value)(0)


def _downhill(value):
    return downhill._check_hyperparams({"learning_rate": value}, "master")["learning_rate"]


def _puzzlelib(value):
    return puzzlelib.Adam(alpha=value).alpha


DOORS = {
    "option": (_option_checked, "lr"),
    "schedule": (_schedule, "value"),
    "downhill": (_downhill, "learning_rate"),
    "puzzlelib": (_puzzlelib, "alpha"),
}


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("value, expected", TAKEN)
def test_every_door_takes_the_same_numbers(door, value, expected):
    take, _ = DOORS[door]
    got = take(value)
    assert got == expected and float(got) == expected


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_every_door_refuses_the_same_values(door, value):
    take, name = DOORS[door]
    with raises_named(TypeError, name, "must be a real number"):
        take(value)


@pytest.mark.parametrize("door", DOORS)
def test_every_door_names_an_integer_past_float64(door):
    take, name = DOORS[door]
    with raises_named(ValueError, name, "too large"):
        take(10**400)


def test_puzzlelib_checks_a_hyperparameter_changed_before_an_update():
    class Net:
        params = {"w": np.ones(3)}
        grads = {"w": np.ones(3)}

    opt = puzzlelib.Adam()
    opt.setupOn(Net())
    opt.update()
    for bad, error in (("big", TypeError), (1.0, ValueError), (10**400, ValueError)):
        opt.beta1 = bad
        with raises_named(error, "beta1"):
            opt.update()
    assert opt.t == 1
    opt.beta1 = np.array(0.5)  # a 0-d array is taken, as everywhere
    opt.update()
    assert opt.t == 2


@pytest.mark.parametrize("bad", [math.inf, 10**400, "7"])
def test_halflife_to_beta_refuses_what_has_no_beta_below_1(bad):
    with raises_named((TypeError, ValueError), "halflife"):
        radam.halflife_to_beta(bad)


def test_there_is_one_halflife_to_beta():
    assert downhill.halflife_to_beta is radam.halflife_to_beta
    assert radam.halflife_to_beta(np.array(7.0)) == 2.0 ** (-1.0 / 7.0)
