"""Import of a torch.optim.Adam / AdamW state_dict.

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
    rng = np.random.default_rng(0)
    options = {
        "lr": 0.01,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": False,
        "params": list(range(len(params))),
    }
    options.update(group)
    state = {}
    for i, p in enumerate(params):
        entry = {
            "step": np.array(float(step), dtype=np.float32),  # torch keeps a float tensor
            "exp_avg": rng.standard_normal(p.shape).astype(p.dtype),
            "exp_avg_sq": rng.random(p.shape).astype(p.dtype),
        }
        if options["amsgrad"]:
            entry["max_exp_avg_sq"] = entry["exp_avg_sq"] + 1
        state[i] = entry
    return {"state": state, "param_groups": [options]}


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
        (lambda sd: sd["state"].pop(1), ValueError, ["entries for params [0] only"]),
        (
            lambda sd: sd["state"][1].update(step=np.array(4.0)),
            ValueError,
            ["disagree on 'step'"],
        ),
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


# ---------------------------------------------------------------- with real torch

TORCH_REASON = (
    "torch is not installed here (it is never a dependency of radam); this test runs "
    "in an environment with torch, e.g. /work/venvs/torch"
)


def _torch():
    try:
        import torch
    except ImportError:
        pytest.skip(TORCH_REASON)
    return torch


def _run(torch, kind, dtype, amsgrad, maximize, weight_decay, old_style):
    rng = np.random.default_rng(1)
    shapes = [(4, 5), (7,), ()]
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(30)]
    n_torch = 12

    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in p0]
    cls = torch.optim.AdamW if kind == "AdamW" else torch.optim.Adam
    groups = [
        {"params": tparams[:2], "amsgrad": amsgrad},
        {"params": tparams[2:], "lr": 3e-2, "betas": (0.8, 0.99)},
    ]
    topt = cls(groups, lr=1e-2, weight_decay=weight_decay, maximize=maximize)
    for g in grads[:n_torch]:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        topt.step()
    sd = topt.state_dict()
    if old_style:  # torch < 2.6 does not write the key
        for group in sd["param_groups"]:
            group.pop("decoupled_weight_decay", None)

    params = [p.detach().numpy().copy() for p in tparams]
    ropt = radam.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.5)
    ropt.load_torch_state_dict(sd, decoupled_weight_decay=(kind == "AdamW") if old_style else None)
    assert ropt.step_count == n_torch
    for g in grads[n_torch:]:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        topt.step()
        ropt.step(g)
    return tparams, topt, params, ropt


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
    tparams, topt, params, ropt = _run(
        torch, kind, np.float64, amsgrad, maximize, weight_decay, old_style
    )
    for tp, p in zip(tparams, params):
        ref = tp.detach().numpy()
        np.testing.assert_allclose(p, ref, **f64_tolerance(ref))
    tstate = topt.state_dict()["state"]
    for i in range(len(params)):
        for name in ropt.state[i]:
            ref = tstate[i][name].numpy()
            np.testing.assert_allclose(ropt.state[i][name], ref, **f64_tolerance(ref))
        assert int(tstate[i]["step"]) == ropt.step_count == 30


def test_continue_a_torch_run_float32():
    torch = _torch()
    tparams, _, params, _ = _run(torch, "AdamW", np.float32, True, False, 0.05, False)
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
