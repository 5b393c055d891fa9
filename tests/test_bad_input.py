"""Issue 2's bad-input list: each case raises a clear exception that names the
argument, leaves params and state untouched, and the optimizer keeps working
(its next steps match the reference). No Rust panic may reach Python."""

from __future__ import annotations

import numpy as np
import pytest
import radam
from helpers import assert_matches_reference, assert_unchanged, raises_named, snapshot
from reference import Options, RefAdam

SHAPES = [(5,), (2, 3)]
DTYPES = [np.float64, np.float32]


class Fixture:
    """Two params (float64 and float32), an optimizer over them, and the
    reference that has seen the same successful steps."""

    def __init__(self, warm_steps: int, **options) -> None:
        self.rng = np.random.default_rng(42)
        p0 = [self.rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, DTYPES)]
        self.params = [p.copy() for p in p0]
        self.lr = options.setdefault("lr", 0.01)
        self.opt = radam.Adam(self.params, **options)
        self.ref = RefAdam.create(p0, Options(**options))
        self.steps = 0
        for _ in range(warm_steps):
            self.good_step()

    def grads(self):
        return [np.asarray(self.rng.standard_normal(s), dtype=d) for s, d in zip(SHAPES, DTYPES)]

    def good_step(self, grads=None):
        grads = self.grads() if grads is None else grads
        self.opt.step(grads)
        self.ref.step(grads)
        self.steps += 1

    def check_still_works(self):
        """Two more steps; the result is the reference's, as if nothing had failed."""
        for _ in range(2):
            self.good_step()
        assert self.opt.step_count == self.steps
        for p, r in zip(self.params, self.ref.params):
            assert_matches_reference(p, r, steps=self.steps, lr=self.lr)


def _bad_grads():
    """(id, make(fixture) -> grads, exception type, names in the message)."""
    f64, f32 = DTYPES

    def ok(fx):
        return fx.grads()

    def replace(i, value):
        def make(fx):
            g = ok(fx)
            g[i] = value(fx) if callable(value) else value
            return g

        return make

    return [
        ("too-few", lambda fx: ok(fx)[:1], ValueError, ["2 grads", "got 1"]),
        ("too-many", lambda fx: ok(fx) + [np.ones(5)], ValueError, ["2 grads", "got 3"]),
        ("none", lambda fx: None, TypeError, ["grads"]),
        ("string-one", replace(1, "g"), TypeError, ["grads[1]"]),
        ("not-a-list", lambda fx: 3.0, TypeError, ["grads"]),
        ("one-array", lambda fx: np.ones(5), TypeError, ["grads"]),
        ("shape", replace(1, np.ones((3, 2), f32)), ValueError, ["grads[1]", "shape"]),
        ("shape-flat", replace(1, np.ones(6, f32)), ValueError, ["grads[1]", "shape"]),
        ("shape-0d", replace(0, np.array(1.0)), ValueError, ["grads[0]", "shape"]),
        ("dtype-f32-for-f64", replace(0, np.ones(5, f32)), TypeError, ["grads[0]", "float32"]),
        ("dtype-f64-for-f32", replace(1, np.ones((2, 3), f64)), TypeError, ["grads[1]", "float64"]),
        ("dtype-f16", replace(1, np.ones((2, 3), np.float16)), TypeError, ["grads[1]"]),
        ("integer", replace(0, np.ones(5, np.int64)), TypeError, ["grads[0]", "int64"]),
        ("bool", replace(0, np.ones(5, bool)), TypeError, ["grads[0]"]),
        ("byteswapped", replace(0, np.ones(5, ">f8")), TypeError, ["grads[0]"]),
        ("list", replace(0, [1.0] * 5), TypeError, ["grads[0]", "list"]),
        ("scalar", replace(1, 1.0), TypeError, ["grads[1]", "float"]),
        ("numpy-scalar", replace(0, np.float64(1.0)), TypeError, ["grads[0]"]),
        ("alias-param", replace(0, lambda fx: fx.params[0]), ValueError, ["grads[0]"]),
        ("alias-view", replace(1, lambda fx: fx.params[1][:, ::-1]), ValueError, ["grads[1]"]),
        (
            "alias-reshape",
            replace(1, lambda fx: fx.params[1].reshape(3, 2).T),
            ValueError,
            ["grads[1]"],
        ),
        ("alias-reversed", replace(0, lambda fx: fx.params[0][::-1]), ValueError, ["grads[0]"]),
    ]


@pytest.mark.parametrize("warm", [0, 2], ids=["fresh", "stepped"])
@pytest.mark.parametrize("case", _bad_grads(), ids=lambda c: c[0])
def test_bad_grads(case, warm):
    _, make, exc, names = case
    fx = Fixture(warm, amsgrad=True, weight_decay=0.1)
    before = snapshot(fx.opt)
    with raises_named(exc, *names):
        fx.opt.step(make(fx))
    assert_unchanged(fx.opt, before)
    fx.check_still_works()


@pytest.mark.parametrize("name", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
def test_grad_aliasing_optimizer_state_is_rejected(name):
    fx = Fixture(2, amsgrad=True)
    before = snapshot(fx.opt)
    grads = fx.grads()
    grads[1] = fx.opt.state[1][name]
    with raises_named(ValueError, "grads[1]"):
        fx.opt.step(grads)
    assert_unchanged(fx.opt, before)
    fx.check_still_works()


def test_grad_aliasing_another_param_is_rejected():
    a, b = np.ones(4), np.ones(4)
    opt = radam.Adam([a, b])
    opt.step([np.ones(4), np.ones(4)])
    before = snapshot(opt)
    with raises_named(ValueError, "grads[0]"):
        opt.step([b, np.ones(4)])
    assert_unchanged(opt, before)


def test_a_bad_grad_in_one_dtype_leaves_the_other_dtype_untouched():
    # float32 tensors are checked with the float64 ones before any is written.
    fx = Fixture(1)
    before = snapshot(fx.opt)
    grads = fx.grads()
    grads[0] = np.ones(4)  # the float64 one is bad, the float32 one is fine
    with raises_named(ValueError, "grads[0]"):
        fx.opt.step(grads)
    assert_unchanged(fx.opt, before)
    fx.check_still_works()


@pytest.mark.parametrize(
    "params, exc, names",
    [
        ([], ValueError, ["params", "empty"]),
        ({}, ValueError, ["params", "empty"]),
        ([{"params": []}], ValueError, ["params[0]", "empty"]),
        (None, TypeError, ["params"]),
        (np.ones(3), TypeError, ["params"]),
        ([np.ones(3), [1.0, 2.0]], TypeError, ["params[1]", "list"]),
        ([np.ones(3), 2.0], TypeError, ["params[1]"]),
        ([np.ones(3, np.int64)], TypeError, ["params[0]", "int64"]),
        ([np.ones(3), np.ones(3, np.int32)], TypeError, ["params[1]", "int32"]),
        ([np.ones(3, np.complex64)], TypeError, ["params[0]", "complex64"]),
        ([np.ones(3, np.complex128)], TypeError, ["params[0]"]),
        ({"w": np.ones(3, bool)}, TypeError, ["params['w']"]),
        ([np.ones((4, 6))[:, ::2]], ValueError, ["params[0]", "contiguous"]),
        ([np.ones(3), np.ones((4, 6)).T], ValueError, ["params[1]", "contiguous"]),
        ([np.ones(3), {"params": [np.ones(2)]}], TypeError, ["params"]),
        ([{"lr": 0.1}], ValueError, ["params[0]", "'params'"]),
    ],
    ids=lambda x: None,
)
def test_bad_params_at_construction(params, exc, names):
    copies = _copies(params)
    with raises_named(exc, *names):
        radam.Adam(params)
    _assert_same(params, copies)


def _copies(params):
    if isinstance(params, np.ndarray):
        return params.copy()
    if isinstance(params, dict):
        return {k: _copies(v) for k, v in params.items()}
    if isinstance(params, list):
        return [_copies(v) for v in params]
    return params


def _assert_same(params, copies):
    if isinstance(params, np.ndarray):
        np.testing.assert_array_equal(params, copies)
    elif isinstance(params, dict):
        for k in params:
            _assert_same(params[k], copies[k])
    elif isinstance(params, list):
        for a, b in zip(params, copies):
            _assert_same(a, b)


def test_read_only_param_at_construction():
    p = np.ones(3)
    p.flags.writeable = False
    with raises_named(ValueError, "params[1]", "read-only"):
        radam.Adam([np.ones(2), p])
    with raises_named(ValueError, "params['w']", "read-only"):
        radam.Adam({"w": p})


@pytest.mark.parametrize("warm", [0, 2], ids=["fresh", "stepped"])
def test_param_made_read_only_after_construction(warm):
    fx = Fixture(warm)
    fx.params[1].flags.writeable = False
    before = snapshot(fx.opt)
    with raises_named(ValueError, "params[1]", "read-only"):
        fx.opt.step(fx.grads())
    assert_unchanged(fx.opt, before)
    fx.params[1].flags.writeable = True
    fx.check_still_works()


def test_same_array_twice_and_overlapping_views():
    a = np.zeros(10)
    with raises_named(ValueError, "params[1]", "params[0]"):
        radam.Adam([a, a])
    with raises_named(ValueError, "params[1]", "params[0]"):
        radam.Adam([a[:6], a[4:]])
    with raises_named(ValueError, "params[2]"):
        radam.Adam([np.ones(3), a, a.reshape(2, 5)])
    with raises_named(ValueError, "shares memory"):
        radam.Adam([{"params": [a[:5]]}, {"params": [a[3:8]], "lr": 0.1}])
    with raises_named(ValueError, "shares memory"):
        radam.Adam({"x": a, "y": a})
    np.testing.assert_array_equal(a, np.zeros(10))
    # Adjacent, non-overlapping views of one buffer are separate params.
    left, right = a[:5], a[5:]
    opt = radam.Adam([left, right], lr=0.1)
    opt.step([np.ones(5), -np.ones(5)])
    ref = RefAdam.create([np.zeros(5), np.zeros(5)], Options(lr=0.1))
    ref.step([np.ones(5), -np.ones(5)])
    assert_matches_reference(a, np.concatenate(ref.params), steps=1, lr=0.1)


HYPER_CASES = [
    ({"lr": -1e-3}, ValueError, ["lr"]),
    ({"lr": float("nan")}, ValueError, ["lr"]),
    ({"lr": float("inf")}, ValueError, ["lr"]),
    ({"lr": "0.1"}, TypeError, ["lr"]),
    ({"lr": None}, TypeError, ["lr"]),
    ({"betas": (1.0, 0.999)}, ValueError, ["betas[0]"]),
    ({"betas": (-0.1, 0.999)}, ValueError, ["betas[0]"]),
    ({"betas": (float("nan"), 0.999)}, ValueError, ["betas[0]"]),
    ({"betas": (0.9, 1.0)}, ValueError, ["betas[1]"]),
    ({"betas": (0.9, 1.5)}, ValueError, ["betas[1]"]),
    ({"betas": (0.9, -1e-9)}, ValueError, ["betas[1]"]),
    ({"betas": (0.9,)}, TypeError, ["betas"]),
    ({"betas": 0.9}, TypeError, ["betas"]),
    ({"eps": -1e-8}, ValueError, ["eps"]),
    ({"eps": float("nan")}, ValueError, ["eps"]),
    ({"weight_decay": -0.01}, ValueError, ["weight_decay"]),
    ({"weight_decay": float("nan")}, ValueError, ["weight_decay"]),
    ({"amsgrad": "yes"}, TypeError, ["amsgrad"]),
    ({"maximize": 2}, TypeError, ["maximize"]),
    ({"decoupled_weight_decay": None}, TypeError, ["decoupled_weight_decay"]),
]


@pytest.mark.parametrize("bad, exc, names", HYPER_CASES, ids=lambda x: None)
def test_bad_hyperparameters_at_construction(bad, exc, names):
    p = np.ones(3)
    with raises_named(exc, *names):
        radam.Adam([p], **bad)
    # the same value as a group option is named with its group
    with raises_named(exc, "params[1]", *names):
        radam.Adam([{"params": [np.ones(2)]}, {"params": [p], **bad}])
    np.testing.assert_array_equal(p, np.ones(3))


@pytest.mark.parametrize("bad, exc, names", HYPER_CASES, ids=lambda x: None)
def test_bad_hyperparameters_set_on_a_group_after_construction(bad, exc, names):
    fx = Fixture(2)
    group = fx.opt.param_groups[0]
    saved = {k: group[k] for k in bad}
    group.update(bad)
    before = snapshot(fx.opt)
    with raises_named(exc, "param_groups[0]", *names):
        fx.opt.step(fx.grads())
    assert_unchanged(fx.opt, before)
    group.update(saved)
    fx.check_still_works()


def test_unknown_group_option():
    with raises_named(TypeError, "params[0]", "frobnicate"):
        radam.Adam([{"params": [np.ones(2)], "frobnicate": 0.9}])
    fx = Fixture(1)
    fx.opt.param_groups[0]["frobnicate"] = True
    before = snapshot(fx.opt)
    with raises_named(TypeError, "param_groups[0]", "frobnicate"):
        fx.opt.step(fx.grads())
    assert_unchanged(fx.opt, before)
    del fx.opt.param_groups[0]["frobnicate"]
    fx.check_still_works()


def test_unknown_keyword_argument():
    with pytest.raises(TypeError, match="frobnicate"):
        radam.Adam([np.ones(2)], frobnicate=0.9)


@pytest.mark.parametrize("start", [False, True])
def test_changing_amsgrad_after_the_first_step(start):
    fx = Fixture(2, amsgrad=start)
    fx.opt.param_groups[0]["amsgrad"] = not start
    before = snapshot(fx.opt)
    with raises_named(ValueError, "amsgrad"):
        fx.opt.step(fx.grads())
    assert_unchanged(fx.opt, before)
    fx.opt.param_groups[0]["amsgrad"] = start
    fx.check_still_works()


def test_changing_amsgrad_before_the_first_step_is_allowed():
    fx = Fixture(0)
    fx.opt.param_groups[0]["amsgrad"] = True
    for o in fx.ref.options:
        o.amsgrad = True
    fx.check_still_works()
    assert "max_exp_avg_sq" in fx.opt.state[0]


def test_bad_device():
    with raises_named(ValueError, "device", "tpu"):
        radam.Adam([np.ones(2)], device="tpu")


@pytest.mark.parametrize(
    "grads, exc, names",
    [
        ([np.ones(2), np.ones(3)], TypeError, ["dict"]),
        ({"w": np.ones(2)}, ValueError, ["missing", "'b'"]),
        ({"w": np.ones(2), "b": np.ones(3), "c": np.ones(1)}, ValueError, ["unexpected", "'c'"]),
        ({"w": np.ones(2), "b": np.ones(4)}, ValueError, ["grads['b']", "shape"]),
        ({"w": np.ones(2), "b": "g"}, TypeError, ["grads['b']"]),
    ],
    ids=["list", "missing", "extra", "shape", "string"],
)
def test_bad_dict_grads(grads, exc, names):
    params = {"w": np.ones(2), "b": np.ones(3)}
    opt = radam.Adam(params, lr=0.1)
    opt.step({"w": np.ones(2), "b": np.ones(3)})
    before = snapshot(opt)
    with raises_named(exc, *names):
        opt.step(grads)
    assert_unchanged(opt, before)
    opt.step({"w": np.ones(2), "b": np.ones(3)})
    assert opt.step_count == 2


@pytest.mark.parametrize(
    "grads, exc, names",
    [
        ([[np.ones(2), np.ones(3)], []], ValueError, ["grads[1]"]),
        ([[np.ones(2)], [np.ones(4)]], ValueError, ["grads[0]"]),
        ([[np.ones(2), np.ones(3)], [np.ones(5)]], ValueError, ["grads[1][0]", "shape"]),
        ([np.ones(2), np.ones(3)], ValueError, ["3 grads", "got 2"]),
    ],
    ids=["empty-group", "short-group", "shape", "flat-too-few"],
)
def test_bad_nested_grads_for_groups(grads, exc, names):
    params = [np.ones(2), np.ones(3), np.ones(4)]
    opt = radam.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}])
    before = snapshot(opt)
    with raises_named(exc, *names):
        opt.step(grads)
    assert_unchanged(opt, before)
    opt.step([[np.ones(2), np.ones(3)], [np.ones(4)]])
    assert opt.step_count == 1


# -- issue 12: a failed step writes nothing, and its message names the right tensor


@pytest.mark.parametrize("structure", ["list", "dict"])
def test_a_resized_param_fails_before_any_tensor_is_written(structure):
    # The reproduction: a float32 and a float64 param, b resized after a
    # step. The float32 tensor was updated before the float64 one's check failed,
    # and the message said "tensor 0" for params[1].
    a, b = np.ones(4, np.float32), np.ones(4)
    params = [a, b] if structure == "list" else {"a": a, "b": b}
    label = "[1]" if structure == "list" else "['b']"
    opt = radam.Adam(params)

    def grads(n):
        g = [np.ones(4, np.float32), np.ones(n)]
        return g if structure == "list" else dict(zip("ab", g))

    opt.step(grads(4))
    b.resize(5, refcheck=False)
    before = snapshot(opt)
    with raises_named(ValueError, f"params{label} has 5", f"state{label}['exp_avg'] has 4"):
        opt.step(grads(5))
    assert_unchanged(opt, before)
    b.resize(4, refcheck=False)
    opt.step(grads(4))
    assert opt.step_count == 2


def test_every_check_of_both_dtypes_runs_before_either_is_written():
    # A bad grad in the float64 list (stepped second) and one in the float32
    # list (stepped first): neither list is written, whichever fails.
    for bad in (0, 1):
        fx = Fixture(1)
        before = snapshot(fx.opt)
        grads = fx.grads()
        grads[bad] = grads[bad].reshape(-1)[:-1]
        with raises_named(ValueError, f"grads[{bad}]", "shape"):
            fx.opt.step(grads)
        assert_unchanged(fx.opt, before)
        fx.check_still_works()


# -- issue 12, item 9: small ones, each a clear error naming the argument


def test_a_generator_of_params_is_consumed_once():
    arrays = [np.ones(3), np.ones(2)]
    opt = radam.Adam(a for a in arrays)
    opt.step([np.ones(3), np.ones(2)])
    ref = radam.Adam([np.ones(3), np.ones(2)])
    ref.step([np.ones(3), np.ones(2)])
    for p, r in zip(arrays, ref.param_groups[0]["params"]):
        assert p.tobytes() == r.tobytes()
    # and a generator of groups, and of a group's params
    opt = radam.Adam({"params": (a for a in arrays), "lr": 0.1} for _ in range(1))
    assert len(opt.param_groups[0]["params"]) == 2


@pytest.mark.parametrize("grad_scale", [1e-39, 1e39, 2.0**-127, float("inf"), 0.0])
def test_grad_scale_whose_inverse_is_not_a_normal_float32_is_refused(grad_scale):
    p = np.ones(3, np.float32)
    with raises_named(ValueError, "grad_scale"):
        radam.Adam([p], grad_scale=grad_scale)
    with raises_named(ValueError, "params[0]", "grad_scale"):
        radam.Adam([{"params": [p], "grad_scale": grad_scale}])
    _refused_when_set_on_a_group({"grad_scale": grad_scale}, ValueError, "grad_scale")
    assert p.tobytes() == np.ones(3, np.float32).tobytes()


def _refused_when_set_on_a_group(options, exc, *names):
    """Set ``options`` on a stepped optimizer's group: the next step raises
    naming the group and ``names``, and changes nothing."""
    fx = Fixture(2)
    fx.opt.param_groups[0].update(options)
    before = snapshot(fx.opt)
    with raises_named(exc, "param_groups[0]", *names):
        fx.opt.step(fx.grads())
    assert_unchanged(fx.opt, before)


@pytest.mark.parametrize("grad_scale", [2.0**-126, 2.0**126])
def test_grad_scale_at_the_ends_of_its_range_steps_finite(grad_scale):
    p = np.ones(3, np.float32)
    opt = radam.Adam([p], lr=0.1, grad_scale=grad_scale)
    opt.step([np.full(3, grad_scale, np.float32)])  # a gradient of 1, loss-scaled
    np.testing.assert_allclose(p, 0.9, rtol=1e-6)


@pytest.mark.parametrize(
    "bad, exc, names",
    [
        ({"lr": 10**400}, ValueError, ["lr", "too large"]),
        ({"eps": -(10**400)}, ValueError, ["eps", "too large"]),
        ({"betas": {0.9, 0.99}}, TypeError, ["betas", "pair"]),
        ({"betas": {0: 0.9, 1: 0.99}}, TypeError, ["betas", "pair"]),
        ({"betas": "ab"}, TypeError, ["betas", "pair"]),
        ({"betas": np.array([[0.9, 0.99]])}, TypeError, ["betas", "pair"]),
    ],
    ids=["huge-lr", "huge-eps", "betas-set", "betas-dict", "betas-str", "betas-2d"],
)
def test_unclear_values_get_clear_errors(bad, exc, names):
    p = np.ones(3)
    with raises_named(exc, *names):
        radam.Adam([p], **bad)
    with raises_named(exc, "params[0]", *names):
        radam.Adam([{"params": [p], **bad}])
    _refused_when_set_on_a_group(bad, exc, *names)


def test_betas_set_to_an_array_after_steps_are_used():
    # The option cache compared the old tuple with the array: "truth value of an
    # array is ambiguous". An array of two betas is a pair like any other.
    fx = Fixture(2)
    fx.opt.param_groups[0]["betas"] = np.array([0.5, 0.9])
    for o in fx.ref.options:
        o.betas = (0.5, 0.9)
    fx.check_still_works()


def test_param_groups_that_are_not_dicts_or_were_replaced_are_refused():
    fx = Fixture(1)
    before = snapshot(fx.opt)
    groups = fx.opt.param_groups
    group = groups[0]
    groups[0] = [1, 2]
    with raises_named(TypeError, "param_groups[0]", "dict"):
        fx.opt.step(fx.grads())
    groups[0] = group
    groups.append({"params": [np.ones(2)], "lr": 0.1})
    with raises_named(ValueError, "param_groups", "added or removed"):
        fx.opt.step(fx.grads())
    groups.pop()
    group["params"] = [np.ones(5), np.ones((2, 3), np.float32)]  # new arrays
    with raises_named(ValueError, "param_groups[0]['params']", "replaced"):
        fx.opt.step(fx.grads())
    group["params"] = fx.opt._group_params[0]
    assert_unchanged(fx.opt, before)
    with raises_named(TypeError, "'params'", "cannot be changed"):
        group["params"][0] = np.ones(5)
    with raises_named(TypeError, "'params'", "cannot be changed"):
        group["params"].append(np.ones(5))
    fx.check_still_works()


def test_a_state_dict_group_that_is_not_a_dict_is_refused():
    fx = Fixture(2)
    sd = fx.opt.state_dict()
    before = snapshot(fx.opt)
    for bad, exc, names in [
        ([3], TypeError, ["state_dict['param_groups'][0]", "dict"]),
        (3, TypeError, ["state_dict['param_groups']", "list"]),
    ]:
        with raises_named(exc, *names):
            fx.opt.load_state_dict({**sd, "param_groups": bad})
        assert_unchanged(fx.opt, before)
    with raises_named(TypeError, "state_dict['state'][0]", "dict"):
        fx.opt.load_state_dict({**sd, "state": {0: [1], 1: sd["state"][1]}})
    with raises_named(ValueError, "state_dict['state']", "entries for params among"):
        fx.opt.load_state_dict({**sd, "state": {"0": sd["state"][0], 1: sd["state"][1]}})
    assert_unchanged(fx.opt, before)
    fx.check_still_works()


def test_dict_params_with_a_none_key_can_be_stepped():
    params = {None: np.ones(3), "b": np.ones(2)}
    opt = radam.Adam(params, lr=0.1)
    opt.step({None: np.ones(3), "b": np.ones(2)})
    ref = [np.ones(3), np.ones(2)]
    radam.Adam(ref, lr=0.1).step([np.ones(3), np.ones(2)])
    assert params[None].tobytes() == ref[0].tobytes()
    assert set(opt.state) == {None, "b"}
    assert opt.param_groups[0]["param_names"] == [None, "b"]
    with raises_named(ValueError, "grads[None]", "shape"):
        opt.step({None: np.ones(4), "b": np.ones(2)})
    twin = radam.Adam({None: params[None].copy(), "b": params["b"].copy()}, lr=0.1)
    twin.load_state_dict(opt.state_dict())
    assert twin.step_count == 1
