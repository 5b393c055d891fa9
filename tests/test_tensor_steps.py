"""Per-tensor step counts: a None grad leaves its param, state and step count as
they are, and every tensor's bias corrections are those of its own count (as
torch.optim keeps ``state[p]["step"]`` per param).

The oracle runs one reference optimizer (tests/reference.py,
tests/variant_reference.py, written from docs/formulas.md) per tensor, stepped
only on the steps in which that tensor has a gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import radam
from helpers import raises_named
from reference import Options, RefAdam
from variant_reference import RefNAdam, RefRAdam

SHAPES = [(5,), (3, 4), (7,)]
STEPS = 30


def _masks(seed: int) -> list[list[bool]]:
    """Which tensors have a grad at each step: tensor 0 always, the others at random
    (tensor 2 first at step 4, so it starts late)."""
    rng = np.random.default_rng(seed)
    masks = []
    for t in range(STEPS):
        masks.append([True, bool(rng.random() < 0.6), t >= 3 and bool(rng.random() < 0.5)])
    return masks


def _run(make_opt, make_ref, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    params = [p.copy() for p in init]
    opt = make_opt(params)
    refs = [make_ref(p) for p in init]
    counts = [0] * len(SHAPES)
    for mask in _masks(seed):
        grads = [rng.standard_normal(s) for s in SHAPES]
        given = [g if m else None for g, m in zip(grads, mask)]
        before = [
            (p.copy(), {k: a.copy() for k, a in opt.state.get(i, {}).items()})
            for i, p in enumerate(params)
        ]
        opt.step(given)
        for i, m in enumerate(mask):
            if m:
                refs[i].step([grads[i]])
                counts[i] += 1
            else:  # untouched, bit for bit
                assert params[i].tobytes() == before[i][0].tobytes()
                for k, a in before[i][1].items():
                    assert opt.state[i][k].tobytes() == a.tobytes(), (i, k)
        assert opt.tensor_step_counts == counts
    assert opt.step_count == STEPS
    return opt, params, refs


def _ref_params(ref):
    return ref.params[0] if hasattr(ref, "params") else ref.p[0]


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_with_skipped_tensors_matches_a_reference_per_tensor(amsgrad, decoupled):
    o = Options(lr=0.01, weight_decay=0.1, decoupled_weight_decay=decoupled, amsgrad=amsgrad)
    cls = radam.AdamW if decoupled else radam.Adam
    _, params, refs = _run(
        lambda ps: cls(ps, lr=o.lr, weight_decay=o.weight_decay, amsgrad=amsgrad),
        lambda p: RefAdam.create([p], o),
    )
    for p, r in zip(params, refs):
        np.testing.assert_allclose(p, _ref_params(r), rtol=1e-12, atol=1e-14)


def test_nadam_carries_its_product_per_tensor():
    _, params, refs = _run(
        lambda ps: radam.NAdam(ps, lr=0.01, weight_decay=0.01),
        lambda p: RefNAdam([p], lr=0.01, weight_decay=0.01),
    )
    for p, r in zip(params, refs):
        np.testing.assert_allclose(p, _ref_params(r), rtol=1e-12, atol=1e-14)


def test_radam_rectifies_per_tensor():
    # RAdam's rectification turns on at step 6: tensors that skip reach it later.
    _, params, refs = _run(
        lambda ps: radam.RAdam(ps, lr=0.01),
        lambda p: RefRAdam([p], lr=0.01),
    )
    for p, r in zip(params, refs):
        np.testing.assert_allclose(p, _ref_params(r), rtol=1e-12, atol=1e-14)


def test_state_dict_has_a_step_per_param_and_none_for_one_not_stepped():
    params = [np.ones(3), np.ones(2), np.ones(4)]
    opt = radam.NAdam(params, lr=0.1)
    opt.step([np.ones(3), None, np.ones(4)])
    opt.step([np.ones(3), None, None])
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 2]  # as torch.optim: no entry before a first step
    assert (sd["state"][0]["step"], sd["state"][2]["step"]) == (2, 1)
    assert sd["state"][0]["mu_product"] != sd["state"][2]["mu_product"]


@pytest.mark.parametrize("via", ["state_dict", "checkpoint"])
def test_a_resumed_run_with_skipped_tensors_continues_bit_for_bit(via, tmp_path):
    rng = np.random.default_rng(3)
    masks = _masks(5)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in masks]
    init = [rng.standard_normal(s) for s in SHAPES]

    def given(t):
        return [g if m else None for g, m in zip(grads[t], masks[t])]

    params = [p.copy() for p in init]
    opt = radam.NAdam(params, lr=0.01)
    for t in range(STEPS):
        opt.step(given(t))
    half = 2  # tensor 2 has no grad before step 4: resume while it has no state entry
    params2 = [p.copy() for p in init]
    first = radam.NAdam(params2, lr=0.01)
    for t in range(half):
        first.step(given(t))
    resumed_params = [p.copy() for p in params2]
    resumed = radam.NAdam(resumed_params, lr=0.01)
    if via == "state_dict":
        resumed.load_state_dict(first.state_dict())
    else:
        first.save(tmp_path / "ckpt")
        resumed.load(tmp_path / "ckpt")
    assert resumed.tensor_step_counts == first.tensor_step_counts
    assert resumed.step_count == half
    for t in range(half, STEPS):
        resumed.step(given(t))
    for a, b in zip(params, resumed_params):
        assert a.tobytes() == b.tobytes()


def test_a_tensor_not_stepped_keeps_its_master_copy_of_the_restored_param(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf = ml_dtypes.bfloat16
    params = [np.ones(4, bf), np.full(3, 2.0, bf)]
    opt = radam.Adam(params, lr=0.1, master_weights=True)
    opt.step([np.ones(4, bf), None])
    opt.save(tmp_path / "ckpt")
    other = [np.zeros(4, bf), np.zeros(3, bf)]
    resumed = radam.Adam(other, lr=0.1, master_weights=True)
    resumed.load(tmp_path / "ckpt")
    assert resumed.tensor_step_counts == [1, 0]
    np.testing.assert_array_equal(resumed.state[1]["master_param"], np.full(3, 2.0, np.float32))


def test_all_grads_given_steps_every_tensor_at_the_optimizer_count():
    params = [np.ones(3), np.ones(2)]
    opt = radam.Adam(params)
    for _ in range(4):
        opt.step([np.ones(3), np.ones(2)])
    assert opt.tensor_step_counts == [4, 4] and opt.step_count == 4
    assert [e["step"] for e in opt.state_dict()["state"].values()] == [4, 4]


def test_a_state_dict_with_an_entry_for_no_param_is_refused():
    params = [np.ones(3), np.ones(2)]
    opt = radam.Adam(params)
    opt.step([np.ones(3), None])
    sd = opt.state_dict()
    sd["state"][7] = sd["state"][0]
    with raises_named(ValueError, "state_dict['state']", "7"):
        opt.load_state_dict(sd)
    assert opt.tensor_step_counts == [1, 0]


def test_the_step_count_overflow_names_the_param():
    params = [np.ones(3), np.ones(2)]
    opt = radam.Adam(params)
    opt.step([np.ones(3), np.ones(2)])
    sd = opt.state_dict()
    sd["state"][1]["step"] = 2**64 - 2
    opt.load_state_dict(sd)
    opt.step([np.ones(3), np.ones(2)])  # step 2**64 - 1 of params[1]: its last
    before = [p.copy() for p in params]
    with raises_named(OverflowError, "params[1]", "64 bits"):
        opt.step([np.ones(3), np.ones(2)])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, params))
    opt.step([np.ones(3), None])  # params[0] still steps
    assert opt.tensor_step_counts == [3, 2**64 - 1]


def test_a_torch_run_in_which_params_skipped_steps_continues_in_radam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in SHAPES]
    tparams = [torch.tensor(p, requires_grad=True) for p in init]
    topt = torch.optim.AdamW(tparams, lr=0.01)
    masks, grads = _masks(6), [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    half = 12
    for t in range(half):
        for p, g, m in zip(tparams, grads[t], masks[t]):
            p.grad = torch.tensor(g) if m else None
        topt.step()
    params = [p.detach().numpy().copy() for p in tparams]
    opt = radam.AdamW(params, lr=0.5)
    opt.load_torch_state_dict(topt.state_dict())
    assert opt.tensor_step_counts == [int(topt.state[p]["step"]) for p in tparams]
    for t in range(half, STEPS):
        for p, g, m in zip(tparams, grads[t], masks[t]):
            p.grad = torch.tensor(g) if m else None
        topt.step()
        opt.step([g if m else None for g, m in zip(grads[t], masks[t])])
    for p, q in zip(params, tparams):
        np.testing.assert_allclose(p, q.detach().numpy(), rtol=1e-12, atol=1e-14)
    # and back: torch takes radam's dict, with its per-param steps
    sd = opt.state_dict()
    assert [sd["state"][i]["step"] for i in sorted(sd["state"])] == opt.tensor_step_counts
