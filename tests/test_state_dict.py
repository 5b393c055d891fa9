"""state_dict / load_state_dict: round trip, bit-for-bit resume, copies, bad dicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import radam
from helpers import assert_same_run, assert_unchanged, raises_named, snapshot


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
    assert_same_run(straight, resumed, opt, opt2)


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


def _stepped_optimizer(seed=10):
    """An optimizer over make_params, two steps in, with its params and rng."""
    rng = np.random.default_rng(seed)
    params = make_params(rng)
    opt = radam.Adam(grouped(params))
    for _ in range(2):
        opt.step(make_grads(rng, params))
    return opt, params, rng


def _good_state_dict():
    return _stepped_optimizer(6)[0].state_dict()


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

    def unknown_state(sd):
        sd["state"][99] = dict(sd["state"][2])
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
        ("unknown-state-entry", unknown_state, ValueError, ["state", "99"]),
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


# -- issue 12, item 6: opt.state is read-only, at every level


@pytest.mark.parametrize(
    "replace, exc, names",
    [
        (lambda opt: opt.state.__setitem__(0, {"exp_avg": np.zeros((3, 4), np.float32)}),
         TypeError, ["opt.state[0]", "np.copyto"]),
        (lambda opt: opt.state.__delitem__(1), TypeError, ["opt.state[1]"]),
        (lambda opt: opt.state.clear(), TypeError, ["opt.state"]),
        (lambda opt: opt.state.update({0: {}}), TypeError, ["opt.state"]),
        (lambda opt: opt.state.pop(0), TypeError, ["opt.state"]),
        (lambda opt: opt.state.setdefault(5, {}), TypeError, ["opt.state"]),
        (lambda opt: setattr(opt, "state", {}), AttributeError, ["opt.state", "load_state_dict"]),
        (lambda opt: opt.state[0].__setitem__("exp_avg", np.zeros((3, 4), np.float32)),
         TypeError, ["opt.state[0]['exp_avg']"]),
        (lambda opt: opt.state[2].__delitem__("exp_avg_sq"), TypeError,
         ["opt.state[2]['exp_avg_sq']"]),
    ],
    ids=["set", "del", "clear", "update", "pop", "setdefault", "attribute", "set-array",
         "del-array"],
)  # fmt: skip
def test_replacing_state_is_refused(replace, exc, names):
    # The issue: opt.state[k] = {...} was accepted, the kernel kept updating the
    # old arrays and state_dict returned the new ones, so a save and resume diverged.
    opt, params, rng = _stepped_optimizer()
    before = snapshot(opt)
    arrays = {k: dict(v) for k, v in opt.state.items()}
    with raises_named(exc, *names):
        replace(opt)
    assert_unchanged(opt, before)
    # The arrays the kernel steps are the ones opt.state and state_dict show.
    opt.step(make_grads(rng, params))
    for k, entry in arrays.items():
        for name, array in entry.items():
            assert opt.state[k][name] is array
            assert opt.state_dict()["state"][k][name].tobytes() == array.tobytes()


def test_state_reads_as_a_dict_of_dicts():
    opt, params, _ = _stepped_optimizer()
    assert sorted(opt.state) == [0, 1, 2] and len(opt.state) == 3 and 1 in opt.state
    assert set(opt.state[0]) == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert opt.state.get(7) is None and dict(opt.state[2])["exp_avg"] is opt.state[2]["exp_avg"]
    copied = copy.deepcopy(opt.state)
    assert copied[0]["exp_avg"].tobytes() == opt.state[0]["exp_avg"].tobytes()
    assert copied[0]["exp_avg"] is not opt.state[0]["exp_avg"]
    # In-place changes are the supported way to edit state, and the kernel sees them.
    np.copyto(opt.state[1]["exp_avg"], 0.0)
    assert not opt.state_dict()["state"][1]["exp_avg"].any()


# -- issue 12, item 7: values no run can reach, which would break later steps


def _nadam(betas=(0.9, 0.999)):
    w = np.linspace(-1, 1, 5)
    opt = radam.NAdam([w, np.ones(2)], betas=betas)
    for _ in range(3):
        opt.step([np.ones(5), np.ones(2)])
    return opt, w


@pytest.mark.parametrize("mu_product", [float("nan"), float("inf"), -1.0, 1.0, 2.0, -0.0 - 1e-300])
def test_nadam_mu_product_outside_what_steps_produce_is_refused(mu_product):
    # The product of NAdam's momentum coefficients, each in [0, 1): in [0, 1)
    # after a step. nan made the next step's params NaN.
    opt, w = _nadam()
    sd = opt.state_dict()
    for entry in sd["state"].values():
        entry["mu_product"] = mu_product
    before = snapshot(opt)
    with raises_named(ValueError, "state_dict['state'][0]['mu_product']", "[0, 1)"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, before)


def test_nadam_mu_product_of_zero_is_reachable_and_loads():
    # beta1 = 0 makes every coefficient 0 (and a long run can underflow to 0:
    # at step 646 with beta1 = 0.6).
    opt, w = _nadam(betas=(0.0, 0.999))
    sd = opt.state_dict()
    assert sd["state"][0]["mu_product"] == 0.0
    twin_w = w.copy()
    twin = radam.NAdam([twin_w, np.ones(2)], betas=(0.0, 0.999))
    twin.load_state_dict(sd)
    grads = [np.full(5, 0.5), np.ones(2)]
    opt.step(grads)
    twin.step(grads)
    assert twin_w.tobytes() == w.tobytes()


def test_a_nadam_mu_product_outside_its_range_is_refused():
    # Each param keeps its own (params of a group may have stepped apart).
    opt, _ = _nadam()
    sd = opt.state_dict()
    sd["state"][1]["mu_product"] = 1.5
    before = snapshot(opt)
    with raises_named(ValueError, "state_dict['state'][1]['mu_product']", "[0, 1)"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, before)


@pytest.mark.parametrize(
    "step", [2**64, 2**64 - 1, 10**30, float("nan"), float("inf"), 1e300, 2.5, -3]
)
def test_a_step_count_whose_next_step_does_not_fit_64_bits_is_refused(step):
    # step=2**64 was accepted, and then every step raised OverflowError.
    opt, params, _ = _stepped_optimizer()
    sd = opt.state_dict()
    for entry in sd["state"].values():
        entry["step"] = step
    before = snapshot(opt)
    with raises_named(ValueError, "state_dict['state'][0]['step']"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, before)


def test_the_largest_step_count_steps_once_then_says_why_it_stops():
    w = np.ones(3)
    opt = radam.Adam([w], lr=0.1)
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = 2**64 - 2
    opt.load_state_dict(sd)
    opt.step([np.ones(3)])  # step number 2**64 - 1, the last the kernel counts
    assert opt.step_count == 2**64 - 1
    before = snapshot(opt)
    with raises_named(OverflowError, "step count", "64"):
        opt.step([np.ones(3)])
    assert_unchanged(opt, before)


def _with_value(name, value, index=1):
    def mutate(sd):
        array = sd["state"][0][name]
        array.reshape(-1)[index] = value
        return sd

    return mutate


@pytest.mark.parametrize(
    "cls, options, name, value",
    [
        (radam.Adam, {}, "exp_avg_sq", -1.0),
        (radam.Adam, {}, "exp_avg_sq", float("nan")),
        (radam.Adam, {}, "exp_avg_sq", -float("inf")),
        (radam.Adam, {"amsgrad": True}, "max_exp_avg_sq", -1e-30),
        (radam.Adam, {"amsgrad": True}, "max_exp_avg_sq", float("nan")),
        (radam.Adamax, {}, "exp_inf", -2.0),
        (radam.Adamax, {}, "exp_inf", float("nan")),
        (radam.Adam, {}, "exp_avg", float("nan")),
        (radam.Adam, {}, "exp_avg", float("inf")),
        (radam.Adam, {}, "exp_avg", -float("inf")),
        (radam.Adam, {"momentum": 0.5}, "velocity", float("inf")),
        (radam.Adam, {"state_dtype": "bfloat16"}, "exp_avg_sq", -1.0),
        (radam.Adam, {"state_dtype": "float16"}, "exp_avg", float("nan")),
    ],
    ids=lambda v: None,
)
def test_state_values_no_run_reaches_are_refused(cls, options, name, value):
    w = np.linspace(-1, 1, 6).astype(np.float32)
    opt = cls([w], lr=0.01, **options)
    for _ in range(2):
        opt.step([np.ones(6, np.float32)])
    sd = _with_value(name, value)(opt.state_dict())
    before = snapshot(opt)
    with raises_named(ValueError, f"state_dict['state'][0]['{name}']", "(1,)"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, before)


def test_master_copies_must_be_finite():
    import ml_dtypes

    w = np.ones(4, ml_dtypes.bfloat16)
    opt = radam.Adam([w], master_weights=True)
    opt.step([np.ones(4, ml_dtypes.bfloat16)])
    sd = _with_value("master_param", float("inf"), 2)(opt.state_dict())
    before = snapshot(opt)
    with raises_named(ValueError, "state_dict['state'][0]['master_param']", "(2,)"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, before)


def test_an_infinite_second_moment_is_reachable_and_loads():
    # A finite gradient whose square passes float16's range makes v = +Inf;
    # that element's update is then 0, in the run and after a reload alike.
    w = np.ones(3, np.float32)
    opt = radam.Adam([w], lr=0.1, state_dtype="float16")
    opt.step([np.array([1.0, 1e4, -1.0], np.float32)])
    sd = opt.state_dict()
    assert (
        np.isinf(sd["state"][0]["exp_avg_sq"][1]) and np.isfinite(sd["state"][0]["exp_avg"]).all()
    )
    twin_w = w.copy()
    twin = radam.Adam([twin_w], lr=0.1, state_dtype="float16")
    twin.load_state_dict(sd)
    for _ in range(3):
        opt.step([np.ones(3, np.float32)])
        twin.step([np.ones(3, np.float32)])
    assert twin_w.tobytes() == w.tobytes()
    assert np.isfinite(w).all()
