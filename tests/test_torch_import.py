"""Import of a torch optimizer's state_dict: Adam, AdamW, NAdam, RAdam and Adamax.

The conversion and its error paths are tested on torch-shaped dicts of NumPy
arrays (no torch needed); the real round trip (torch runs N steps, radam
imports its state, both run M more) runs where torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, f64_tolerance, raises_named, snapshot


def torch_like_sd(params, step=3, **group):
    """The state_dict torch.optim.Adam would give for ``params`` (one group)."""
    sd = torch_kind_sd("Adam", params, step, fused=None, **group)
    if sd["param_groups"][0]["amsgrad"]:
        for entry in sd["state"].values():
            entry["max_exp_avg_sq"] = entry["exp_avg_sq"] + 1
    return sd


def victim():
    params = [np.ones((2, 3)), np.ones(4)]
    opt = radam.Adam(params, lr=0.5)
    opt.step([np.full((2, 3), 0.5), np.full(4, -0.5)])
    return params, opt


def test_conversion_without_torch():
    params, opt = victim()
    sd = torch_like_sd(params, step=7, lr=0.02, amsgrad=True, weight_decay=0.1, maximize=True)
    sd["param_groups"][0]["initial_lr"] = 0.05  # written by torch's LR schedulers: ignored
    opt.load_torch_state_dict(sd)
    assert opt.step_count == 7
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (0.02, (0.9, 0.999), 1e-8, 0.1)
    assert g["amsgrad"] is True and g["maximize"] is True and not g["decoupled_weight_decay"]
    for i in range(2):
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[i][name], sd["state"][i][name])
            assert opt.state[i][name] is not sd["state"][i][name]
    opt.step([np.ones((2, 3)), np.ones(4)])
    assert opt.step_count == 8


def test_no_state_yet():
    params, opt = victim()
    opt.load_torch_state_dict({**torch_like_sd(params), "state": {}})
    assert opt.step_count == 0 and opt.state == {}


@pytest.mark.parametrize(
    "change, exc, names",
    [
        (lambda sd: sd["param_groups"][0].update(momentum=0.9), ValueError, ["momentum"]),
        (lambda sd: sd["param_groups"][0].update(momentum_decay=4e-3), ValueError, ["momentum"]),
        (lambda sd: sd["param_groups"][0].pop("eps"), ValueError, ["eps"]),
        (lambda sd: sd["state"].update({5: sd["state"][0]}), ValueError, ["state", "5"]),
        (lambda sd: sd["state"][0].update(step=np.array(2.5)), ValueError, ["whole number"]),
        (lambda sd: sd["state"][0].update(exp_avg=np.ones(5)), ValueError, ["exp_avg", "shape"]),
        (
            lambda sd: sd["state"][0].update(exp_avg=np.ones((2, 3), np.float32)),
            ValueError,
            ["dtype"],
        ),
        (lambda sd: sd["state"][0].update(momentum_buffer=np.ones(1)), ValueError, ["momentum"]),
        (lambda sd: sd["state"][0].update(exp_avg=[1, 2]), TypeError, ["exp_avg"]),
        (
            lambda sd: (
                sd["param_groups"][0].update(weight_decay=0.1, decoupled_weight_decay=False)
                or sd["param_groups"][0].pop("decoupled_weight_decay")
            ),
            ValueError,
            ["decoupled_weight_decay=True", "AdamW"],
        ),
        (lambda sd: sd["param_groups"][0].update(lr=-1.0), ValueError, ["lr"]),
        (lambda sd: sd["param_groups"][0].update(params=[1, 0]), ValueError, ["0..1"]),
        (lambda sd: sd.pop("state"), ValueError, ["'state'"]),
    ],
)
def test_bad_torch_state_dicts(change, exc, names):
    params, opt = victim()
    sd = torch_like_sd(params)
    change(sd)
    before = snapshot(opt)
    with raises_named(exc, *names):
        opt.load_torch_state_dict(sd)
    assert_unchanged(opt, before)


def test_decoupled_weight_decay_argument():
    params, opt = victim()
    sd = torch_like_sd(params, weight_decay=0.01)
    del sd["param_groups"][0]["decoupled_weight_decay"]  # torch < 2.6's AdamW
    opt.load_torch_state_dict(sd, decoupled_weight_decay=True)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True

    sd = torch_like_sd(params, weight_decay=0.01, decoupled_weight_decay=True)
    before = snapshot(opt)
    with raises_named(ValueError, "decoupled_weight_decay=False", "contradicts"):
        opt.load_torch_state_dict(sd, decoupled_weight_decay=False)
    assert_unchanged(opt, before)
    with raises_named(TypeError, "decoupled_weight_decay"):
        opt.load_torch_state_dict(sd, decoupled_weight_decay="yes")


def test_only_adam_rules_take_it():
    params = [np.ones(3)]
    opt = radam.Adamax(params)
    with raises_named(ValueError, "Adamax"):
        opt.load_torch_state_dict(torch_like_sd(params))


# What each torch optimizer writes (torch 2.x, after its first step): its group
# options beside lr/betas/eps/weight_decay/maximize and the implementation flags,
# and its per-param state.
TORCH_KINDS = {
    "Adam": ({"amsgrad": False, "decoupled_weight_decay": False}, ("exp_avg", "exp_avg_sq")),
    "AdamW": ({"amsgrad": False, "decoupled_weight_decay": True}, ("exp_avg", "exp_avg_sq")),
    "NAdam": (
        {"momentum_decay": 4e-3, "decoupled_weight_decay": False},
        ("mu_product", "exp_avg", "exp_avg_sq"),
    ),
    "RAdam": ({"decoupled_weight_decay": False}, ("exp_avg", "exp_avg_sq")),
    "Adamax": ({}, ("exp_avg", "exp_inf")),
}
RADAM_CLASS = {
    "Adam": radam.Adam,
    "AdamW": radam.AdamW,
    "NAdam": radam.NAdam,
    "RAdam": radam.RAdam,
    "Adamax": radam.Adamax,
}


def torch_kind_sd(kind, params, step=3, **group):
    """The state_dict torch.optim.<kind> would give for ``params`` (one group)."""
    rng = np.random.default_rng(2)
    extra, state_names = TORCH_KINDS[kind]
    options = {
        "lr": 0.01,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        **extra,
        "params": list(range(len(params))),
        **group,
    }
    state = {}
    for i, p in enumerate(params):
        entry = {"step": np.array(float(step), dtype=np.float32)}
        for name in state_names:
            if name == "mu_product":  # torch keeps a 0-d tensor of the default dtype
                entry[name] = np.array(0.5, dtype=np.float32)
            else:
                entry[name] = rng.random(p.shape).astype(p.dtype)
        state[i] = entry
    return {"state": state, "param_groups": [options]}


@pytest.mark.parametrize("kind", ["NAdam", "RAdam", "Adamax"])
def test_conversion_of_the_other_kinds_without_torch(kind):
    params = [np.ones((2, 3)), np.ones(4)]
    opt = RADAM_CLASS[kind](params, lr=0.5)
    sd = torch_kind_sd(kind, params, step=7, lr=0.02, weight_decay=0.1, maximize=True)
    # written by torch's OneCycleLR into the groups: ignored
    sd["param_groups"][0].update(initial_lr=4e-4, max_lr=0.01, min_lr=4e-8)
    sd["param_groups"][0].update(base_momentum=0.85, max_momentum=0.95)
    opt.load_torch_state_dict(sd)
    assert opt.step_count == 7
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (0.02, (0.9, 0.999), 1e-8, 0.1)
    assert g["maximize"] is True and not g["decoupled_weight_decay"]
    assert "max_lr" not in g and "initial_lr" not in g
    names = [n for n in TORCH_KINDS[kind][1] if n != "mu_product"]
    for i in range(2):
        assert set(opt.state[i]) == set(names)
        for name in names:
            np.testing.assert_array_equal(opt.state[i][name], sd["state"][i][name])
    if kind == "NAdam":
        assert g["momentum_decay"] == 4e-3
        assert opt.state_dict()["state"][0]["mu_product"] == 0.5
    opt.step([np.ones((2, 3)), np.ones(4)])
    assert opt.step_count == 8


@pytest.mark.parametrize("kind", ["NAdam", "RAdam"])
def test_decoupled_decay_of_nadam_and_radam(kind):
    params = [np.ones(3)]
    opt = RADAM_CLASS[kind](params)
    opt.load_torch_state_dict(
        torch_kind_sd(kind, params, weight_decay=0.1, decoupled_weight_decay=True)
    )
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    # an older torch's dict, without the key: its decay was an L2 term
    sd = torch_kind_sd(kind, params, weight_decay=0.1)
    del sd["param_groups"][0]["decoupled_weight_decay"]
    opt.load_torch_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is False
    before = snapshot(opt)
    with raises_named(ValueError, "decoupled_weight_decay=True", "contradicts"):
        opt.load_torch_state_dict(sd, decoupled_weight_decay=True)
    assert_unchanged(opt, before)


@pytest.mark.parametrize("torch_kind", list(TORCH_KINDS))
@pytest.mark.parametrize("radam_kind", list(RADAM_CLASS))
def test_a_dict_of_the_wrong_kind_is_named(torch_kind, radam_kind):
    params = [np.ones((2, 3)), np.ones(4)]
    opt = RADAM_CLASS[radam_kind](params)
    opt.step([np.ones((2, 3)), np.ones(4)])
    sd = torch_kind_sd(torch_kind, params)
    same_rule = {torch_kind, radam_kind} <= {"Adam", "AdamW"} or torch_kind == radam_kind
    if same_rule:
        opt.load_torch_state_dict(sd)
        assert opt.step_count == 3
        return
    before = snapshot(opt)
    expected = "Adam or AdamW" if torch_kind in ("Adam", "AdamW") else torch_kind
    with raises_named(ValueError, f"this is a torch.optim.{expected}", f"not radam.{radam_kind}"):
        opt.load_torch_state_dict(sd)
    assert_unchanged(opt, before)


def test_before_the_first_step_adamax_and_radam_dicts_are_told_apart_by_their_keys():
    params = [np.ones(3)]
    adamax = {**torch_kind_sd("Adamax", params), "state": {}}
    radam_sd = {**torch_kind_sd("RAdam", params), "state": {}}
    radam.Adamax(params).load_torch_state_dict(adamax)
    radam.RAdam(params).load_torch_state_dict(radam_sd)
    # without decoupled_weight_decay (older torch's RAdam) the options are Adamax's too
    radam.RAdam(params).load_torch_state_dict(adamax)
    with raises_named(ValueError, "torch.optim.Adamax", "not radam.Adam"):
        radam.Adam(params).load_torch_state_dict(adamax)
    with raises_named(ValueError, "torch.optim.RAdam", "not radam.Adamax"):
        radam.Adamax(params).load_torch_state_dict(radam_sd)


@pytest.mark.parametrize(
    "change, names",
    [
        (lambda sd: sd["state"][0].update(exp_inf=np.ones(3)), ["mixes", "exp_inf"]),
        (lambda sd: sd["state"][1].update(mu_product=np.array(1.25)), ["[1]", "mu_product"]),
        (lambda sd: sd["state"][0].update(mu_product=np.ones(2)), ["mu_product", "scalar"]),
        (lambda sd: sd["param_groups"][0].pop("momentum_decay"), ["momentum_decay"]),
        (lambda sd: sd["param_groups"][0].update(amsgrad=True), ["mixes", "amsgrad"]),
        (lambda sd: sd["state"][0].update(max_exp_avg_sq=np.ones(3)), ["mixes"]),
        (lambda sd: sd["param_groups"][0].update(nesterov=True), ["nesterov", "none of"]),
        (lambda sd: sd["state"][0].pop("exp_avg_sq"), ["exp_avg_sq"]),
    ],
)
def test_bad_nadam_dicts(change, names):
    params = [np.ones(3), np.ones(3)]
    opt = radam.NAdam(params)
    opt.step([np.ones(3), np.ones(3)])
    sd = torch_kind_sd("NAdam", params)
    change(sd)
    before = snapshot(opt)
    mu_before = opt.state_dict()["state"][0]["mu_product"]
    with raises_named(ValueError, *names):
        opt.load_torch_state_dict(sd)
    assert_unchanged(opt, before)
    assert opt.state_dict()["state"][0]["mu_product"] == mu_before


# ---------------------------------------------------------------- with real torch

TORCH_REASON = (
    "torch is not installed here (it is never a dependency of radam); this test runs "
    "in an environment with torch"
)


def _torch():
    try:
        import torch
    except ImportError:
        pytest.skip(TORCH_REASON)
    return torch


def _run(torch, kind, dtype, options, first_group=None, n_torch=12, old_style=False):
    """torch.optim.<kind> runs ``n_torch`` of 30 steps over two groups (the first
    with ``first_group``'s options, the second with its own lr and betas);
    radam.<kind>, built with other options, imports its state_dict; both run
    the rest. Returns both optimizers and their params."""
    rng = np.random.default_rng(1)
    shapes = [(4, 5), (7,), ()]
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(30)]

    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in p0]
    groups = [
        {"params": tparams[:2], **(first_group or {})},
        {"params": tparams[2:], "lr": 3e-2, "betas": (0.8, 0.99)},
    ]
    topt = getattr(torch.optim, kind)(groups, lr=1e-2, **options)
    for g in grads[:n_torch]:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        topt.step()
    sd = topt.state_dict()
    if old_style:  # torch < 2.6 does not write the key
        for group in sd["param_groups"]:
            group.pop("decoupled_weight_decay", None)

    params = [p.detach().numpy().copy() for p in tparams]
    ropt = RADAM_CLASS[kind]([{"params": params[:2]}, {"params": params[2:]}], lr=0.5)
    ropt.load_torch_state_dict(sd, decoupled_weight_decay=(kind == "AdamW") if old_style else None)
    assert ropt.step_count == n_torch
    for g in grads[n_torch:]:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        topt.step()
        ropt.step(g)
    return tparams, topt, params, ropt


def _assert_continued_alike(tparams, topt, params, ropt):
    for tp, p in zip(tparams, params):
        ref = tp.detach().numpy()
        np.testing.assert_allclose(p, ref, **f64_tolerance(ref))
    tstate = topt.state_dict()["state"]
    for i in range(len(params)):
        for name in ropt.state[i]:
            ref = tstate[i][name].numpy()
            np.testing.assert_allclose(ropt.state[i][name], ref, **f64_tolerance(ref))
        assert int(tstate[i]["step"]) == ropt.step_count == 30


@pytest.mark.parametrize(
    "kind, amsgrad, maximize, weight_decay, old_style",
    [
        ("Adam", False, False, 0.0, False),
        ("Adam", True, False, 0.1, False),
        ("Adam", False, True, 0.1, True),
        ("AdamW", False, False, 0.05, False),
        ("AdamW", True, True, 0.05, False),
        ("AdamW", True, False, 0.05, True),
    ],
)
def test_continue_a_torch_run(kind, amsgrad, maximize, weight_decay, old_style):
    torch = _torch()
    options = {"weight_decay": weight_decay, "maximize": maximize}
    run = _run(torch, kind, np.float64, options, {"amsgrad": amsgrad}, old_style=old_style)
    _assert_continued_alike(*run)


@pytest.mark.parametrize(
    "kind, options, n_torch",
    [
        ("NAdam", {}, 12),
        ("NAdam", {"weight_decay": 0.1, "momentum_decay": 0.01, "maximize": True}, 12),
        ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, 12),
        # 3 steps in torch: radam takes over before the rectification starts (t = 6)
        ("RAdam", {}, 3),
        ("RAdam", {"weight_decay": 0.1, "maximize": True}, 12),
        ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, 3),
        ("Adamax", {}, 12),
        ("Adamax", {"weight_decay": 0.1, "maximize": True, "eps": 1e-3}, 12),
    ],
)
def test_continue_a_torch_run_of_each_variant(kind, options, n_torch):
    """torch runs some steps, radam imports its state and both go on: the same
    params and state to 1e-12 (float64). torch keeps NAdam's mu_product in
    the default dtype, so the run sets it to float64, as radam computes it."""
    torch = _torch()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run = _run(torch, kind, np.float64, options, n_torch=n_torch)
    finally:
        torch.set_default_dtype(default)
    _assert_continued_alike(*run)
    tparams, topt, params, ropt = run
    if kind == "NAdam":
        ours = ropt.state_dict()["state"]
        theirs = topt.state_dict()["state"]
        for i in range(len(params)):
            assert ours[i]["mu_product"] == pytest.approx(float(theirs[i]["mu_product"]), rel=1e-14)


def test_continue_a_torch_run_float32():
    torch = _torch()
    tparams, _, params, _ = _run(
        torch, "AdamW", np.float32, {"weight_decay": 0.05}, {"amsgrad": True}
    )
    for tp, p in zip(tparams, params):
        # 18 steps after the import, lr <= 3e-2, |p| ~ 3: float32 rounding only
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-5)


def test_torch_tensors_are_converted_and_rejected_clearly():
    torch = _torch()
    p = torch.zeros(3, requires_grad=True)
    topt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    topt.step()
    sd = topt.state_dict()
    assert isinstance(sd["state"][0]["step"], torch.Tensor)
    opt = radam.Adam([np.zeros(3, np.float32)])
    opt.load_torch_state_dict(sd)
    assert opt.step_count == 1 and isinstance(opt.state[0]["exp_avg"], np.ndarray)

    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sgd.step()
    before = snapshot(opt)
    with raises_named(ValueError, "momentum", "Adam or AdamW"):
        opt.load_torch_state_dict(sgd.state_dict())
    assert_unchanged(opt, before)
