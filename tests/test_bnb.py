"""radam's 8-bit state against bitsandbytes' CPU ``Adam8bit``: the state read
through bitsandbytes' ``dequantize_blockwise`` and back, state dicts moved
either way, and a 100-step trajectory with the code flips counted.

Skipped without torch and bitsandbytes (never dependencies of radam).

Why codes differ at all: the format and the maps are the same, but (1)
bitsandbytes 0.50's CPU encoder takes the code a 65536-bin table holds for
``x / absmax`` (bins 3e-5 wide, where the codes near 0 are 1e-6 apart) and
writes code 0 in an all-zero block, where radam takes the nearest code
(bitsandbytes' CUDA rule); (2) its update runs as separate torch ops
(``m * beta1 + g * (1 - beta1)``, ``sqrt(v) / c2 + eps``), radam's as fused
float32 operations, so the new moments differ in the last bit now and then.
"""

from __future__ import annotations

import numpy as np
import pytest
import radam
from radam import _core
from test_quant_maps import bnb_cpu_codes

BLOCK = 256
REASON = (
    "bitsandbytes and torch are not installed here (they are never dependencies of radam); "
    "these tests run in an environment that has them"
)


@pytest.fixture(scope="module")
def bnb():
    torch = pytest.importorskip("torch", reason=REASON)
    bitsandbytes = pytest.importorskip("bitsandbytes", reason=REASON)
    return bitsandbytes, torch


SHAPES = [(40, 130), (4096,), (10, 3)]  # 8-bit (with a block tail), 8-bit, float32


def _init(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _grads(step):
    rng = np.random.default_rng(1000 + step)
    return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in SHAPES]


def _bnb_opt(bnb, params, **options):
    bitsandbytes, torch = bnb
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    return bitsandbytes.optim.Adam8bit(tensors, **options), tensors


def _bnb_step(opt, tensors, grads, torch):
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    opt.step()


def _flat(entry):
    out = dict(entry)
    out.update(out.pop("__bnb_optimizer_quant_state__", {}))
    return out


def test_radam_state_decodes_through_bitsandbytes_and_back(bnb):
    bitsandbytes, torch = bnb
    functional = bitsandbytes.functional
    opt = radam.Adam(_init(), lr=1e-2, state_dtype="8bit")
    for step in range(5):
        opt.step(_grads(step))
    for signed, name in [(True, "exp_avg"), (False, "exp_avg_sq")]:
        code = functional.create_dynamic_map(signed=signed)
        codes, absmax = opt.state[0][name], opt.state[0][name + "_absmax"]
        theirs = functional.dequantize_blockwise(
            torch.from_numpy(codes.reshape(-1)),
            absmax=torch.from_numpy(absmax),
            code=code,
            blocksize=BLOCK,
        ).numpy()
        ours = _core._q8_decode(codes.reshape(-1), absmax, signed)
        np.testing.assert_array_equal(theirs.view(np.uint32), ours.view(np.uint32))
        # Back: both encoders take the decoded values to the same absmax (each
        # block's largest magnitude: not the old absmax where that was negative, the
        # signed map's most negative code being -0.993); where their codes differ,
        # bitsandbytes' are its bin table's (test_quant_maps transcribes the rule).
        again, state = functional.quantize_blockwise(
            torch.from_numpy(theirs), code=code, blocksize=BLOCK
        )
        ours_again, our_absmax = _core._q8_encode(theirs, signed)
        np.testing.assert_array_equal(state.absmax.numpy(), our_absmax)
        candidates = bnb_cpu_codes(code.numpy(), theirs, our_absmax)
        assert any((again.numpy() == c).all() for c in candidates)
        apart = int((again.numpy() != ours_again).sum())
        print(f"{name}: {apart} of {codes.size} codes re-encoded otherwise by bitsandbytes")


def test_state_dicts_move_both_ways(bnb):
    bitsandbytes, torch = bnb
    theirs, tensors = _bnb_opt(bnb, _init(), lr=1e-2)
    for step in range(10):
        _bnb_step(theirs, tensors, _grads(step), torch)
    params = [t.detach().numpy().copy() for t in tensors]
    ours = radam.Adam(params, lr=1e-3, state_dtype="8bit")
    ours.load_torch_state_dict(theirs.state_dict())
    assert ours.step_count == 10 and ours.param_groups[0]["lr"] == 1e-2
    for i, entry in theirs.state_dict()["state"].items():
        flat = _flat(entry)
        for k, (a, b) in enumerate([("state1", "exp_avg"), ("state2", "exp_avg_sq")]):
            np.testing.assert_array_equal(ours.state[i][b], flat[a].numpy())
            if flat[a].dtype == torch.uint8:
                absmax = flat[f"absmax{k + 1}"].numpy()
                np.testing.assert_array_equal(ours.state[i][b + "_absmax"], absmax)
    # Back into a fresh bitsandbytes optimizer: it holds radam's state exactly.
    exported = ours.bitsandbytes_state_dict()
    twin, twin_tensors = _bnb_opt(bnb, params)
    twin.load_state_dict(exported)
    _bnb_step(twin, twin_tensors, _grads(10), torch)
    _bnb_step(theirs, tensors, _grads(10), torch)
    for a, b in zip(twin_tensors, tensors):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_a_foreign_map_is_refused(bnb):
    bitsandbytes, torch = bnb
    theirs, tensors = _bnb_opt(bnb, _init(), lr=1e-2)
    _bnb_step(theirs, tensors, _grads(0), torch)
    sd = theirs.state_dict()
    sd["state"][0]["__bnb_optimizer_quant_state__"]["qmap2"] = torch.linspace(0, 1, 256)
    ours = radam.Adam(_init(), state_dtype="8bit")
    with pytest.raises(ValueError, match="qmap2"):
        ours.load_torch_state_dict(sd)
    assert not ours.state
    with pytest.raises(ValueError, match="state_dtype='8bit'"):
        radam.Adam(_init()).load_torch_state_dict(theirs.state_dict())


def test_a_100_step_trajectory_against_bitsandbytes(bnb):
    """100 steps from the same start. Free running, the params stay within 1e-3 of
    their scale of bitsandbytes'; and stepped each time from the same state
    (radam's, exported into bitsandbytes), the codes of each moment that come out
    differ only by the flips the encoders' rules and the op orders explain: most
    at the first step, where the moments start from zero (many tiny second
    moments, where bitsandbytes' bins hold several codes)."""
    bitsandbytes, torch = bnb
    free, free_tensors = _bnb_opt(bnb, _init(), lr=1e-3)
    ours = radam.Adam(_init(), lr=1e-3, state_dtype="8bit")
    theirs, tensors = _bnb_opt(bnb, _init(), lr=1e-3)
    params = ours.param_groups[0]["params"]
    n = params[0].size
    flips: dict[str, list[int]] = {"exp_avg": [], "exp_avg_sq": []}
    for step in range(100):
        g = _grads(step)
        theirs.load_state_dict(ours.bitsandbytes_state_dict())
        with torch.no_grad():
            for t, p in zip(tensors, params):
                t.copy_(torch.from_numpy(p))
        ours.step(g)
        _bnb_step(theirs, tensors, g, torch)
        _bnb_step(free, free_tensors, g, torch)
        state = _flat(theirs.state_dict()["state"][0])
        for k, name in [(1, "exp_avg"), (2, "exp_avg_sq")]:
            flips[name].append(int((state[f"state{k}"].numpy() != ours.state[0][name]).sum()))
    drift = max(
        float(np.abs(t.detach().numpy() - p).max() / np.abs(p).max())
        for t, p in zip(free_tensors, params)
    )
    free_codes = _flat(free.state_dict()["state"][0])
    apart = {
        name: int((free_codes[f"state{k}"].numpy() != ours.state[0][name]).sum())
        for k, name in [(1, "exp_avg"), (2, "exp_avg_sq")]
    }
    print(
        f"\nstepped from the same state, codes of {n} that differ per step: "
        + "; ".join(
            f"{k} first {v[0]}, median {np.median(v[1:])}, max after {max(v[1:])}"
            for k, v in flips.items()
        )
        + f"\nfree running, after 100 steps: params apart by {drift:.2e} of their scale, "
        f"codes apart {apart}"
    )
    for v in flips.values():
        assert v[0] <= 0.05 * n and max(v[1:]) <= 0.01 * n and np.median(v[1:]) <= 0.005 * n
    assert drift <= 1e-3
