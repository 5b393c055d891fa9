"""state_dict / load_state_dict: round trip, bit-for-bit resume, copies, bad dicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, raises_named, snapshot


def make_params(rng):
    return [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(70001),
        rng.standard_normal(()),
    ]


def make_grads(rng, params):
    return [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in params]


def grouped(params, amsgrad=True):
    return [
        {"params": params[:2], "lr": 0.01, "amsgrad": amsgrad},
        {"params": params[2:], "betas": (0.5, 0.9), "weight_decay": 0.1},
    ]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("save_at", [0, 1, 7])
def test_resume_is_bit_for_bit(amsgrad, save_at):
    rng = np.random.default_rng(1)
    p0 = make_params(rng)
    grads = [make_grads(rng, p0) for _ in range(15)]

    straight = [p.copy() for p in p0]
    opt = radam.Adam(grouped(straight, amsgrad), lr=1e-3)
    for g in grads:
        opt.step(g)

    first = [p.copy() for p in p0]
    opt1 = radam.Adam(grouped(first, amsgrad), lr=1e-3)
    for g in grads[:save_at]:
        opt1.step(g)
    saved = opt1.state_dict()
    resumed = [p.copy() for p in first]  # the params as a checkpoint would hold them
    opt2 = radam.Adam(grouped(resumed, amsgrad), lr=1e-3)
    opt2.load_state_dict(saved)
    assert opt2.step_count == save_at
    for g in grads[save_at:]:
        opt2.step(g)

    assert opt2.step_count == opt.step_count == 15
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a, b)
    for key in opt.state:
        for name in opt.state[key]:
            np.testing.assert_array_equal(opt2.state[key][name], opt.state[key][name])


def test_round_trip_and_layout():
    rng = np.random.default_rng(2)
    params = make_params(rng)
    opt = radam.Adam(grouped(params), lr=1e-3)
    for _ in range(3):
        opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2]
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][0]["lr"] == 0.01 and sd["param_groups"][1]["betas"] == (0.5, 0.9)
    for i, entry in sd["state"].items():
        assert entry["step"] == 3
        assert set(entry) == {"step", "exp_avg", "exp_avg_sq"} | (
            {"max_exp_avg_sq"} if i < 2 else set()
        )
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(entry[name], opt.state[i][name])
            assert entry[name].dtype == params[i].dtype

    other = [p.copy() for p in params]
    opt2 = radam.Adam(grouped(other, amsgrad=False), lr=0.5)  # options come from the dict
    opt2.load_state_dict(sd)
    sd2 = opt2.state_dict()
    assert sd2["param_groups"] == sd["param_groups"]
    assert opt2.param_groups[0]["amsgrad"] is True and opt2.param_groups[0]["lr"] == 0.01
    for i in sd["state"]:
        assert sd2["state"][i].keys() == sd["state"][i].keys()
        for name, value in sd["state"][i].items():
            np.testing.assert_array_equal(sd2["state"][i][name], value)


def test_saved_arrays_are_copies_both_ways():
    rng = np.random.default_rng(3)
    params = make_params(rng)
    opt = radam.Adam(params)
    opt.step(make_grads(rng, params))
    sd = opt.state_dict()
    frozen = copy.deepcopy(sd)
    opt.step(make_grads(rng, params))  # later steps do not change the saved dict
    for i in sd["state"]:
        assert sd["state"][i]["step"] == 1
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(sd["state"][i][name], frozen["state"][i][name])
            assert not np.shares_memory(sd["state"][i][name], opt.state[i][name])

    opt2 = radam.Adam([p.copy() for p in params])
    opt2.load_state_dict(sd)
    before = snapshot(opt2)
    for i in sd["state"]:  # scribbling on the dict after loading does not reach the optimizer
        sd["state"][i]["exp_avg"][...] = 123.0
    assert_unchanged(opt2, before)


def test_state_dict_of_a_fresh_optimizer_loads_as_fresh():
    rng = np.random.default_rng(4)
    params = make_params(rng)
    fresh_sd = radam.Adam([p.copy() for p in params]).state_dict()
    assert fresh_sd["state"] == {}
    opt = radam.Adam(params)
    opt.step(make_grads(rng, params))
    opt.load_state_dict(fresh_sd)
    assert opt.step_count == 0 and opt.state == {}
    # and it steps as a new optimizer does
    p_new = [p.copy() for p in params]
    new = radam.Adam(p_new)
    g = make_grads(rng, params)
    opt.step(g)
    new.step(g)
    for a, b in zip(params, p_new):
        np.testing.assert_array_equal(a, b)


def test_dict_params_round_trip_keeps_names():
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal(5), "b": rng.standard_normal(2)}
    opt = radam.Adam(params)
    opt.step({k: rng.standard_normal(v.shape) for k, v in params.items()})
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["w", "b"]
    other = radam.Adam({"w": params["w"].copy(), "b": params["b"].copy()})
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other.state["w"]["exp_avg"], opt.state["w"]["exp_avg"])
    renamed = radam.Adam({"x": params["w"].copy(), "b": params["b"].copy()})
    with raises_named(ValueError, "param_names"):
        renamed.load_state_dict(sd)


def _good_state_dict():
    rng = np.random.default_rng(6)
    params = make_params(rng)
    opt = radam.Adam(grouped(params))
    for _ in range(2):
        opt.step(make_grads(rng, params))
    return opt.state_dict()


def _bad_dicts():
    """(id, mutate(sd) -> sd, exception type, words the message must contain)."""

    def drop(key):
        def f(sd):
            del sd[key]
            return sd

        return f

    def set_state(i, name, value):
        def f(sd):
            sd["state"][i][name] = value(sd["state"][i][name]) if callable(value) else value
            return sd

        return f

    def del_state(i, name):
        def f(sd):
            del sd["state"][i][name]
            return sd

        return f

    def fewer_groups(sd):
        sd["param_groups"] = sd["param_groups"][:1]
        return sd

    def more_params(sd):
        sd["param_groups"][1]["params"] = [2, 3]
        sd["state"][3] = copy.deepcopy(sd["state"][2])
        return sd

    def fewer_state(sd):
        del sd["state"][2]
        return sd

    def bad_option(sd):
        sd["param_groups"][0]["lr"] = -1.0
        return sd

    def unknown_option(sd):
        sd["param_groups"][1]["frobnicate"] = 0.9
        return sd

    return [
        ("no-state", drop("state"), ValueError, ["state"]),
        ("no-param_groups", drop("param_groups"), ValueError, ["param_groups"]),
        ("fewer-groups", fewer_groups, ValueError, ["param groups"]),
        ("more-params", more_params, ValueError, ["param_groups'][1]", "params"]),
        ("missing-state-entry", fewer_state, ValueError, ["state"]),
        (
            "shape",
            set_state(1, "exp_avg", lambda a: a[:-1].copy()),
            ValueError,
            ["[1]", "exp_avg", "shape"],
        ),
        (
            "dtype",
            set_state(0, "exp_avg_sq", lambda a: a.astype(np.float64)),
            ValueError,
            ["[0]", "exp_avg_sq", "dtype"],
        ),
        ("not-array", set_state(2, "exp_avg", lambda a: a.tolist()), TypeError, ["[2]", "exp_avg"]),
        ("missing-max", del_state(0, "max_exp_avg_sq"), ValueError, ["[0]", "max_exp_avg_sq"]),
        ("missing-step", del_state(1, "step"), ValueError, ["[1]", "step"]),
        ("disagreeing-steps", set_state(2, "step", 5), ValueError, ["step"]),
        ("fractional-step", set_state(0, "step", 1.5), ValueError, ["[0]", "step"]),
        ("string-step", set_state(0, "step", "2"), ValueError, ["[0]", "step"]),
        ("zero-step", set_state(1, "step", 0), ValueError, ["[1]", "step"]),
        ("bad-option", bad_option, ValueError, ["lr"]),
        ("unknown-option", unknown_option, TypeError, ["frobnicate"]),
    ]


@pytest.mark.parametrize("case", _bad_dicts(), ids=lambda c: c[0])
def test_a_dict_that_does_not_fit_is_rejected_and_changes_nothing(case):
    _, mutate, exc, words = case
    rng = np.random.default_rng(7)
    params = make_params(rng)
    opt = radam.Adam(grouped(params))
    for _ in range(3):
        opt.step(make_grads(rng, params))
    before = snapshot(opt)
    state_objects = {k: dict(v) for k, v in opt.state.items()}
    with raises_named(exc, *words):
        opt.load_state_dict(mutate(_good_state_dict()))
    assert_unchanged(opt, before)
    for k, v in state_objects.items():
        for name, arr in v.items():
            assert opt.state[k][name] is arr
    # It still steps as an optimizer that never saw the bad dict.
    twin_params = [p.copy() for p in before["params"]]
    twin = radam.Adam(grouped(twin_params))
    twin.load_state_dict(
        {
            "state": {k: {"step": 3, **v} for k, v in before["state"].items()},
            "param_groups": opt.state_dict()["param_groups"],
        }
    )
    g = make_grads(rng, params)
    opt.step(g)
    twin.step(g)
    assert opt.step_count == 4
    for a, b in zip(params, twin_params):
        np.testing.assert_array_equal(a, b)


def test_a_dict_for_other_shapes_is_rejected():
    rng = np.random.default_rng(8)
    opt = radam.Adam([np.ones(4)])
    opt.step([np.ones(4)])
    sd = opt.state_dict()
    other = radam.Adam([np.ones((2, 2))])
    before = snapshot(other)
    with raises_named(ValueError, "shape"):
        other.load_state_dict(sd)
    assert_unchanged(other, before)
    other.step([rng.standard_normal((2, 2))])
    assert other.step_count == 1


def test_numpy_integer_step_is_accepted():
    rng = np.random.default_rng(9)
    params = [rng.standard_normal(3)]
    opt = radam.Adam(params)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = np.int64(1)
    opt2 = radam.Adam([params[0].copy()])
    opt2.load_state_dict(sd)
    assert opt2.step_count == 1 and type(opt2.step_count) is int
