"""Importing bitsandbytes (and torch) Adam state dicts: every malformed case is an
error that names the key and says what was expected, or a correct import; the
optimizer is unchanged after an error.

The dicts here are written in bitsandbytes' format (``Adam8bit``'s: per param
``state1``/``state2`` codes, ``absmax1``/``absmax2``, the maps
``qmap1``/``qmap2``, under ``"__bnb_optimizer_quant_state__"``; ``Adam32bit``'s:
float32 ``state1``/``state2``) from NumPy arrays, which the importer takes as
it takes torch tensors, so these run without torch; the torch-only cases
(a bfloat16 tensor) skip without it.

Before: a group without ``eps`` raised a bare ``KeyError: 'eps'``; ``betas="ab"``
``could not convert string to float: 'a'``; an int8 or float16 ``state1``
``lacks ['exp_avg_absmax']``; ``step=3.5`` was truncated to 3; a bfloat16 tensor
gave torch's ``Got unsupported ScalarType BFloat16``; a ``torch.optim.Adam``
dict into an 8-bit optimizer ``lacks ['exp_avg_absmax', ...]``; an
``Adam32bit`` dict was called "a bitsandbytes 8-bit Adam state_dict" (and did
not load into a float32 radam.Adam); a dict into a ``master_weights=True``
optimizer ``lacks ['master_param']``.
"""

from __future__ import annotations

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, raises_named, snapshot
from ml_dtypes import bfloat16
from radam._options import q8_map

WRAPPED = "__bnb_optimizer_quant_state__"
SHAPES = [(40, 130), (10, 3)]  # 8-bit state (with a block tail), float32 state
BLOCK = 256


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(seed, dtype=np.float32):
    rng = np.random.default_rng(100 + seed)
    return [(rng.standard_normal(s) * 0.1).astype(dtype) for s in SHAPES]


def _trained(steps=3, **options):
    params = _params(options.pop("param_dtype", np.float32))
    opt = radam.Adam(params, lr=1e-2, **options)
    for s in range(steps):
        opt.step(_grads(s, params[0].dtype))
    return opt


def _as_bnb(sd):
    """A radam state_dict in bitsandbytes' Adam format (8-bit, or 32-bit)."""
    state = {}
    for pid, entry in sd["state"].items():
        wrapped = {"state1": entry["exp_avg"], "state2": entry["exp_avg_sq"]}
        if entry["exp_avg"].dtype == np.uint8:
            wrapped.update(
                absmax1=entry["exp_avg_absmax"],
                absmax2=entry["exp_avg_sq_absmax"],
                qmap1=q8_map(True),
                qmap2=q8_map(False),
            )
        state[pid] = {"step": entry["step"], WRAPPED: wrapped}
    groups = [
        {
            "lr": g["lr"],
            "betas": g["betas"],
            "eps": g["eps"],
            "weight_decay": g["weight_decay"],
            "alpha": 0.0,
            "t_alpha": None,
            "t_beta3": None,
            "params": g["params"],
        }
        for g in sd["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# The options of a radam group that torch.optim.Adam's lacks.
NOT_TORCH = (
    "efficient_form",
    "beta1_decay",
    "momentum",
    "nesterov",
    "rounding_seed",
    "max_gradient_elem",
    "max_gradient_norm",
    "bias_correction",
    "grad_scale",
    "stochastic_rounding",
    "algorithm",
)


def _as_torch(sd):
    """A radam Adam state_dict in torch.optim.Adam's format."""
    groups = [{k: v for k, v in g.items() if k not in NOT_TORCH} for g in sd["param_groups"]]
    return {"state": sd["state"], "param_groups": groups}


def _bnb8():
    return _as_bnb(_trained(state_dtype="8bit").state_dict())


def _fresh(**options):
    return radam.Adam(_params(seed=1), lr=1e-3, **options)


def _refused(opt, sd, exc, *words):
    before = snapshot(opt)
    with raises_named(exc, *words):
        opt.load_torch_state_dict(sd)
    assert_unchanged(opt, before)


def test_a_well_formed_8bit_dict_loads_bit_for_bit():
    source = _trained(state_dtype="8bit")
    opt = _fresh(state_dtype="8bit")
    opt.load_torch_state_dict(_as_bnb(source.state_dict()))
    for key in source.state:
        for name, value in source.state[key].items():
            assert opt.state[key][name].tobytes() == value.tobytes(), (key, name)


def test_a_group_without_eps_names_it():
    sd = _bnb8()
    del sd["param_groups"][0]["eps"]
    _refused(_fresh(state_dtype="8bit"), sd, ValueError, "param_groups'][0]", "lacks ['eps']")


@pytest.mark.parametrize("betas", ["ab", (0.9,), ("a", "b"), 0.9, None])
def test_betas_that_are_not_a_pair_of_numbers_are_named(betas):
    sd = _bnb8()
    sd["param_groups"][0]["betas"] = betas
    _refused(
        _fresh(state_dtype="8bit"), sd, ValueError, "['betas']", "pair of numbers", repr(betas)
    )


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.float64, bfloat16])
def test_codes_of_another_dtype_are_named(dtype):
    sd = _bnb8()
    wrapped = sd["state"][0][WRAPPED]
    wrapped["state1"] = wrapped["state1"].astype(dtype)
    _refused(
        _fresh(state_dtype="8bit"),
        sd,
        ValueError,
        "state_dict['state'][0]['state1']",
        f"dtype {np.dtype(dtype)}",
        "uint8",
    )


def test_an_absmax_of_another_dtype_is_named():
    sd = _bnb8()
    sd["state"][0][WRAPPED]["absmax2"] = sd["state"][0][WRAPPED]["absmax2"].astype(np.float16)
    _refused(_fresh(state_dtype="8bit"), sd, ValueError, "['absmax2']", "float32")


@pytest.mark.parametrize("step", [3.5, -1, 0, "3", float("nan")])
def test_a_step_that_is_not_a_whole_number_is_refused_like_the_native_loader(step):
    sd = _bnb8()
    for entry in sd["state"].values():
        entry["step"] = step
    _refused(_fresh(state_dtype="8bit"), sd, ValueError, "['step']")
    native = _trained(state_dtype="8bit").state_dict()
    for entry in native["state"].values():
        entry["step"] = step
    with raises_named(ValueError, "['step']"):
        _fresh(state_dtype="8bit").load_state_dict(native)


def test_a_whole_float_step_is_taken():
    sd = _bnb8()
    for entry in sd["state"].values():
        entry["step"] = 3.0
    opt = _fresh(state_dtype="8bit")
    opt.load_torch_state_dict(sd)
    assert opt.step_count == 3


def test_a_missing_step_is_named():
    sd = _bnb8()
    del sd["state"][1]["step"]
    _refused(_fresh(state_dtype="8bit"), sd, ValueError, "state_dict['state'][1]", "'step'")


class _UnconvertibleTensor:
    """What torch's bfloat16 tensors do: ``.numpy()`` raises TypeError."""

    dtype = "torch.bfloat16"

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        raise TypeError("Got unsupported ScalarType BFloat16")


def test_a_tensor_numpy_cannot_hold_is_named():
    sd = _as_bnb(_trained().state_dict())  # an Adam32bit dict
    sd["state"][0][WRAPPED]["state2"] = _UnconvertibleTensor()
    _refused(_fresh(), sd, TypeError, "state_dict['state'][0]['state2']", "torch.bfloat16", "NumPy")


def test_a_torch_bfloat16_tensor_is_named():
    torch = pytest.importorskip("torch", reason="torch is not installed (never a dependency)")
    sd = _as_bnb(_trained().state_dict())
    sd["state"][0][WRAPPED]["state2"] = torch.zeros(SHAPES[0], dtype=torch.bfloat16)
    _refused(_fresh(), sd, TypeError, "state_dict['state'][0]['state2']", "bfloat16")


def test_a_bfloat16_array_in_a_float32_dict_is_named():
    sd = _as_bnb(_trained().state_dict())
    sd["state"][0][WRAPPED]["state1"] = sd["state"][0][WRAPPED]["state1"].astype(bfloat16)
    _refused(_fresh(), sd, ValueError, "['state1']", "dtype bfloat16", "float32")


def test_an_adam32bit_dict_is_described_as_such_and_loads_into_float32_adam():
    source = _trained()
    sd = _as_bnb(source.state_dict())
    opt = _fresh()
    opt.load_torch_state_dict(sd)
    for key in source.state:
        for name, value in source.state[key].items():
            assert opt.state[key][name].tobytes() == value.tobytes()
    _refused(radam.NAdam(_params(seed=1)), sd, ValueError, "bitsandbytes 32-bit Adam", "radam.Adam")
    with raises_named(ValueError, "bitsandbytes 8-bit Adam", "state_dtype='8bit'"):
        _fresh().load_torch_state_dict(_bnb8())


def _nearest_codes(x, signed):
    """Blockwise 8-bit codes from the formula: each block scaled by its largest
    magnitude, each element the map's nearest value."""
    table = q8_map(signed).astype(np.float64)
    flat = x.reshape(-1).astype(np.float64)
    codes = np.empty(flat.size, np.uint8)
    absmax = np.empty(-(-flat.size // BLOCK), np.float32)
    for b in range(absmax.size):
        block = flat[b * BLOCK : (b + 1) * BLOCK]
        absmax[b] = np.max(np.abs(block))
        scaled = block / absmax[b] if absmax[b] > 0 else block
        codes[b * BLOCK : (b + 1) * BLOCK] = np.argmin(
            np.abs(scaled[:, None] - table[None, :]), axis=1
        )
    return codes.reshape(x.shape), absmax


@pytest.mark.parametrize("source", ["torch Adam", "bitsandbytes Adam32bit"])
def test_float32_state_into_an_8bit_optimizer_is_quantized_on_import(source):
    sd32 = _trained().state_dict()
    sd = {"state": sd32["state"], "param_groups": sd32["param_groups"]}
    sd = _as_torch(sd) if source == "torch Adam" else _as_bnb(sd32)
    opt = _fresh(state_dtype="8bit")
    opt.load_torch_state_dict(sd)
    assert opt.step_count == 3
    big, small = sd32["state"][0], sd32["state"][1]
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        codes, absmax = _nearest_codes(big[name], signed)
        assert opt.state[0][name].dtype == np.uint8
        # Nearest code, but where two codes tie within float32 rounding.
        decoded = (
            q8_map(signed)[opt.state[0][name]].reshape(-1) * np.repeat(absmax, BLOCK)[: codes.size]
        )
        reference = q8_map(signed)[codes].reshape(-1) * np.repeat(absmax, BLOCK)[: codes.size]
        np.testing.assert_allclose(decoded, reference, rtol=0, atol=1e-6 * float(absmax.max()))
        assert (opt.state[0][name] == codes).mean() > 0.999
        np.testing.assert_array_equal(opt.state[0][name + "_absmax"], absmax)
        assert opt.state[1][name].tobytes() == small[name].tobytes()  # under 4096: float32
    opt.step(_grads(3))  # and it steps on


@pytest.mark.parametrize("half", [np.float16, bfloat16])
def test_into_master_weights_the_master_copy_is_built_from_the_params(half):
    source = _trained(state_dtype="8bit", param_dtype=half)
    sd = _as_bnb(source.state_dict())
    params = _params(half, seed=1)
    opt = radam.Adam(params, lr=1e-2, state_dtype="8bit", master_weights=True)
    opt.load_torch_state_dict(sd)
    for i, p in enumerate(params):
        np.testing.assert_array_equal(opt.state[i]["master_param"], p.astype(np.float32))
        assert opt.state[i]["master_param"].dtype == np.float32
    # It goes on as an optimizer whose master copy equals its params would.
    twin = radam.Adam([p.copy() for p in params], lr=1e-2, state_dtype="8bit", master_weights=True)
    twin.load_state_dict(opt.state_dict())
    opt.step(_grads(3, half))
    twin.step(_grads(3, half))
    for a, b in zip(params, twin.param_groups[0]["params"]):
        assert a.tobytes() == b.tobytes()


def test_a_torch_adam_dict_into_master_weights_builds_the_master_copy():
    source = _trained(param_dtype=np.float16, state_dtype="float32")
    sd = _as_torch(source.state_dict())
    params = _params(np.float16, seed=1)
    opt = radam.Adam(params, state_dtype="float32", master_weights=True)
    opt.load_torch_state_dict(sd)
    np.testing.assert_array_equal(opt.state[0]["master_param"], params[0].astype(np.float32))


def test_on_the_gpu_imports_quantize_and_build_master_copies(adapter):
    # The same imports into device="gpu" optimizers: the state they upload is the
    # CPU import's, bit for bit.
    sd = _as_bnb(_trained().state_dict())  # Adam32bit, into 8-bit state
    cpu, gpu = _fresh(state_dtype="8bit"), _fresh(state_dtype="8bit", device="gpu")
    cpu.load_torch_state_dict(sd)
    gpu.load_torch_state_dict(sd)
    half = _as_bnb(_trained(state_dtype="8bit", param_dtype=np.float16).state_dict())
    options = {"state_dtype": "8bit", "master_weights": True}
    cpu16 = radam.Adam(_params(np.float16, seed=1), **options)
    gpu16 = radam.Adam(_params(np.float16, seed=1), device="gpu", **options)
    cpu16.load_torch_state_dict(half)
    gpu16.load_torch_state_dict(half)
    for a, b in ((cpu, gpu), (cpu16, gpu16)):
        b.sync()
        for key in a.state:
            for name, value in a.state[key].items():
                assert b.state[key][name].tobytes() == value.tobytes(), (key, name)


def test_a_negative_absmax_is_refused_not_read_as_an_infinite_block():
    # A negated absmax is radam's own mark of a block holding an infinity;
    # bitsandbytes never writes one, so in its dict it is damage.
    sd = _bnb8()
    absmax = sd["state"][0][WRAPPED]["absmax2"].copy()
    absmax[1] = -absmax[1]
    sd["state"][0][WRAPPED]["absmax2"] = absmax
    _refused(_fresh(state_dtype="8bit"), sd, ValueError, "['absmax2']", "negative absmax")


def test_a_block_with_an_infinite_moment_is_not_exported_to_bitsandbytes():
    pytest.importorskip("torch", reason="bitsandbytes_state_dict() makes torch tensors")
    params = _params()
    opt = radam.Adam(params, lr=1e-2, state_dtype="8bit")
    grads = _grads(0)
    grads[0][0, 0] = 1e21  # (1 - beta2) * g**2 overflows float32: v = +inf there
    opt.step(grads)
    assert (opt.state[0]["exp_avg_sq_absmax"] < 0).any()
    with raises_named(ValueError, "opt.state[0]['exp_avg_sq']", "infinite moment"):
        opt.bitsandbytes_state_dict()
