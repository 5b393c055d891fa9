"""Stochastic rounding of bfloat16/float16 params (``stochastic_rounding=True``)
against a NumPy reference written from its definition: each f32 result lies
between two neighbours of the 16-bit format and becomes the one away from zero
with probability (its distance from the one towards zero) / (their gap); the
random bits of element ``i`` of the tensor at position ``t`` in step ``s`` are
a counter-based hash of (rounding_seed, s, t, i). The f32 results themselves
come from the same step on float32 master copies (``master_weights=True``),
which keep them unrounded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import radam

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
M32 = np.uint32(0xFFFFFFFF)


# -- the reference ---------------------------------------------------------------------------


def lowbias32(x: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 mixer, on uint32 arrays (products wrap mod 2^32)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def random_bits(seed: int, step: int, tensor: int, index: np.ndarray) -> np.ndarray:
    """The 32 random bits of elements ``index`` (uint64) of tensor ``tensor`` in
    step ``step``: the words seed, step, tensor (each low half, then high half)
    and the index's high half nested into lowbias32 from the golden-ratio start,
    then the index's low half xored in and mixed once more."""
    index = np.asarray(index, np.uint64)
    h = np.uint32(0x9E3779B9)
    for word in (seed, step, tensor):
        for half in (word & 0xFFFFFFFF, word >> 32):
            h = lowbias32(np.array([h ^ np.uint32(half)]))[0]
    high = (index >> np.uint64(32)).astype(np.uint32)
    key = lowbias32(h ^ high)
    return lowbias32((index & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ key)


def neighbours(x: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """For finite f32 ``x`` within ``dtype``'s range: the values of ``dtype`` next to
    |x| towards zero and away from zero (equal where |x| is one of them), in float64."""
    a = np.abs(x.astype(np.float64))
    nearest = np.abs(x).astype(dtype)
    bits = nearest.view(np.uint16).astype(np.int64)
    value = nearest.astype(np.float64)
    below = np.where(value > a, bits - 1, bits)
    above = np.where(value < a, bits + 1, bits)
    as_value = lambda b: b.astype(np.uint16).view(dtype).astype(np.float64)  # noqa: E731
    return as_value(below), as_value(above)


def round_reference(x: np.ndarray, r: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` (finite f32) rounded by the definition with random bits ``r``: away from
    zero when r < floor(2^32 * (|x| - lo) / (hi - lo)). Past ``dtype``'s largest finite
    value, overflow as round to nearest: the largest, or infinity where rounding to
    nearest gives it (infinity is no neighbour to round up to)."""
    past = np.abs(x.astype(np.float64)) > float(ml_dtypes.finfo(dtype).max)
    inside = np.where(past, np.float32(0), x)
    lo, hi = neighbours(inside, dtype)
    gap = np.where(hi > lo, hi - lo, 1.0)
    threshold = np.floor((np.abs(inside.astype(np.float64)) - lo) / gap * 2.0**32)
    up = r.astype(np.float64) < threshold
    rounded = (np.copysign(np.where(up, hi, lo), inside)).astype(dtype)
    with np.errstate(over="ignore"):
        nearest = x.astype(dtype)
    return np.where(past, nearest, rounded)


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16)


# -- the problems ----------------------------------------------------------------------------


def groups_of(dtype: np.dtype, sizes=((1000, 7), (3, 4096))) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(5)
    return [[rng.standard_normal(n).astype(dtype) for n in group] for group in sizes]


def grads_like(groups: list[list[np.ndarray]], step: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(100 + step)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in g] for g in groups]


def as_groups(arrays: list[list[np.ndarray]], **options) -> list[dict]:
    return [{"params": g, **options} for g in arrays]


# -- against the reference -------------------------------------------------------------------


@pytest.mark.parametrize("state_dtype", ["float32", "8bit"])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_each_param_is_the_f32_result_rounded_with_the_hash_of_its_place(dtype, state_dtype):
    """With 8-bit state (tensors of at least 4096 elements; the staged path both
    decodes/encodes it and rounds the param) the state, codes and absmax, is also
    the master-weights run's byte for byte."""
    seed = 2**63 + 12345
    sizes = ((1000, 7), (3, 4096)) if state_dtype == "float32" else ((5000, 7), (4096, 70_001))
    rounded = groups_of(dtype, sizes)
    exact = groups_of(dtype, sizes)
    sr = radam.Adam(
        as_groups(rounded, lr=3e-3),
        stochastic_rounding=True,
        rounding_seed=seed,
        state_dtype=state_dtype,
    )
    master = radam.Adam(as_groups(exact, lr=3e-3), master_weights=True, state_dtype=state_dtype)
    for step in range(1, 4):
        grads = grads_like(rounded, step)
        sr.step(grads)
        master.step(grads)
        # The float32 results of this step, from the run that keeps them unrounded;
        # then both runs go on from the stochastically rounded params.
        position, moved = 0, 0
        for gi, group in enumerate(rounded):
            for j, p in enumerate(group):
                got, want_state = sr.state[position], master.state[position]
                eight_bit = state_dtype == "8bit" and p.size >= 4096
                assert (got["exp_avg"].dtype == np.uint8) == eight_bit
                assert set(got) == set(want_state) - {"master_param"}
                for name, a in got.items():
                    np.testing.assert_array_equal(a, want_state[name], f"step {step} {name}")
                f32 = want_state["master_param"]
                r = random_bits(seed, step, position, np.arange(p.size, dtype=np.uint64))
                want = round_reference(f32, r, dtype)
                np.testing.assert_array_equal(bits(p), bits(want), f"step {step} params[{gi}][{j}]")
                moved += int(np.sum(bits(p) != bits(f32.astype(dtype))))
                np.copyto(f32, p.astype(np.float32))
                np.copyto(exact[gi][j], p)
                position += 1
        assert moved > 100  # rounding away from the nearest value happens


@pytest.mark.parametrize(
    ("dtype", "param", "decay", "lo"),
    [
        # 1 - 2^-10 lies a quarter of bfloat16's gap [1 - 2^-8, 1] below 1: 3/4 to 1.
        (BF16, 1.0, 2.0**-10, 1 - 2.0**-8),
        (BF16, -1.0, 2.0**-10, -(1 - 2.0**-8)),
        # float16's gap below 1 is 2^-11: 1 - 2^-13 likewise rounds up 3/4 of the time.
        (F16, 1.0, 2.0**-13, 1 - 2.0**-11),
        # A float16 subnormal: 3 units of 2^-24 times 3/4 is 2.25 units, up 1/4 of the time.
        (F16, 3 * 2.0**-24, 0.25, 2 * 2.0**-24),
    ],
)
def test_the_probability_on_hand_worked_values(dtype, param, decay, lo):
    # Zero gradients and AdamW's decay: each f32 result is exactly param * (1 - decay).
    n = 400_000
    p = [np.full(n, param, dtype)]
    opt = radam.AdamW(p, lr=decay, weight_decay=1.0, stochastic_rounding=True, rounding_seed=9)
    opt.step([np.zeros(n, dtype)])
    x = param * (1 - decay)
    up = abs(x) - abs(lo)
    gap = abs(param) - abs(lo)
    probability = up / gap  # of ending at param, away from zero
    assert probability in (0.75, 0.25)
    values = p[0].astype(np.float64)
    assert set(np.unique(values)) == {lo, param}
    # Exactly the elements whose random bits fall under the threshold ...
    r = random_bits(9, 1, 0, np.arange(n, dtype=np.uint64))
    threshold = probability * 2.0**32
    np.testing.assert_array_equal(values == param, r < threshold)
    # ... which are that share of them (six standard deviations).
    share = np.mean(values == param)
    assert abs(share - probability) < 6 * np.sqrt(probability * (1 - probability) / n)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_unbiased_over_a_million_elements(dtype):
    # One step of 1e6 params whose updates are all well under half an ulp:
    # rounding to nearest loses every one of them, stochastic rounding keeps
    # them on average.
    n = 1_000_000
    rng = np.random.default_rng(1)
    start = (1 + rng.random(n)).astype(dtype)  # in [1, 2): ulp 2^-7 (bf16), 2^-10 (f16)
    g = (0.1 + rng.random(n)).astype(dtype)  # all positive: every update is -lr
    rounded, exact, nearest = [start.copy()], [start.copy()], [start.copy()]
    lr = 1e-4
    radam.Adam(rounded, lr=lr, stochastic_rounding=True, rounding_seed=3).step([g])
    master = radam.Adam(exact, lr=lr, master_weights=True)
    master.step([g])
    radam.Adam(nearest, lr=lr).step([g])
    f32 = master.state[0]["master_param"].astype(np.float64)
    error = rounded[0].astype(np.float64) - f32
    lo, hi = neighbours(master.state[0]["master_param"], dtype)
    a = np.abs(f32)
    sigma = np.sqrt(np.sum((a - lo) * (hi - a))) / n  # of the mean, from each rounding's variance
    assert abs(error.mean()) < 6 * sigma
    # Round to nearest: every update lost, so its mean error is the mean update, far out.
    assert np.array_equal(bits(nearest[0]), bits(start))
    nearest_error = nearest[0].astype(np.float64) - f32
    assert abs(nearest_error.mean()) > 50 * sigma


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_params_at_the_top_of_the_range_overflow_as_round_to_nearest(dtype):
    # The largest finite param, pushed up by lr = 1 (maximize): rounding to nearest
    # keeps it, and so does stochastic rounding (infinity is no neighbour to round
    # up to); pushed past the point where rounding to nearest overflows, both give
    # infinity.
    largest = float(ml_dtypes.finfo(dtype).max)
    n = 10_000
    for lr, want in ((1.0, largest), (largest, np.inf)):
        for sign in (1.0, -1.0):
            got, nearest = np.full(n, sign * largest, dtype), np.full(n, sign * largest, dtype)
            options = {"lr": lr, "maximize": True}
            g = np.full(n, sign, dtype)
            radam.Adam([got], stochastic_rounding=True, rounding_seed=1, **options).step([g])
            radam.Adam([nearest], **options).step([g])
            np.testing.assert_array_equal(got.astype(np.float64), sign * want)
            np.testing.assert_array_equal(bits(got), bits(nearest))


# -- determinism -----------------------------------------------------------------------------

RUN = """
import sys, hashlib, numpy as np, ml_dtypes, radam
rng = np.random.default_rng(0)
params = [rng.standard_normal(n).astype(ml_dtypes.bfloat16) for n in (300_001, 5, 70_000)]
params.append(rng.standard_normal(100_000).astype(np.float16))
opt = radam.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=1e-3,
                 stochastic_rounding=True, rounding_seed=77, state_dtype=sys.argv[1])
for t in range(3):
    opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
state = [np.asarray(a) for i in range(len(params)) for a in opt.state[i].values()]
digest = hashlib.sha256(b"".join(a.tobytes() for a in params + state)).hexdigest()
print(radam.num_threads(), digest)
"""


@pytest.mark.parametrize("state_dtype", ["float32", "8bit"])
def test_the_same_bits_on_any_thread_count(state_dtype):
    digests = set()
    for threads in (1, 2, 3):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        out = subprocess.run(
            [sys.executable, "-c", RUN, state_dtype],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        assert out[0] == str(threads)
        digests.add(out[1])
    assert len(digests) == 1


def test_seed_and_step_change_the_rounding_and_the_same_seed_repeats_it():
    def run(seed: int) -> list[np.ndarray]:
        params = groups_of(BF16)
        opt = radam.Adam(as_groups(params, lr=1e-3), stochastic_rounding=True, rounding_seed=seed)
        for step in range(1, 3):
            opt.step(grads_like(params, step))
        return [bits(p).copy() for g in params for p in g]

    a, b, c = run(1), run(1), run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# -- checkpoints -----------------------------------------------------------------------------


def test_a_checkpoint_resumes_bit_for_bit(tmp_path):
    def make() -> tuple[radam.Adam, list[list[np.ndarray]]]:
        params = groups_of(BF16)
        groups = as_groups(params, lr=1e-3, stochastic_rounding=True, rounding_seed=5)
        groups[1]["rounding_seed"] = 2**64 - 1  # a group option, per group
        return radam.Adam(groups), params

    straight, p1 = make()
    for step in range(1, 6):
        straight.step(grads_like(p1, step))

    first, p2 = make()
    for step in range(1, 3):
        first.step(grads_like(p2, step))
    first.save(tmp_path / "ck.radam")
    state = first.state_dict()
    assert [g["rounding_seed"] for g in state["param_groups"]] == [5, 2**64 - 1]
    assert all(g["stochastic_rounding"] for g in state["param_groups"])

    # A fresh optimizer without the options: the checkpoint's win.
    for load in ("file", "state_dict"):
        params = groups_of(BF16)
        resumed = radam.Adam(as_groups(params, lr=1e-3))
        if load == "file":
            resumed.load(tmp_path / "ck.radam")
        else:
            resumed.load_state_dict(state)
            for ours, saved in zip(params, p2):
                for p, q in zip(ours, saved):
                    np.copyto(p, q)
        assert resumed.param_groups[1]["rounding_seed"] == 2**64 - 1
        for step in range(3, 6):
            resumed.step(grads_like(params, step))
        for g, h in zip(params, p1):
            for x, y in zip(g, h):
                np.testing.assert_array_equal(bits(x), bits(y), load)


# -- refusals --------------------------------------------------------------------------------


def _snapshot(params):
    return [p.copy() for p in params]


def _unchanged(params, before):
    return all(
        np.array_equal(bits(p) if p.itemsize == 2 else p, bits(b) if b.itemsize == 2 else b)
        for p, b in zip(params, before)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_refused_for_params_that_are_not_16_bit(dtype):
    params = [np.ones(4, BF16), np.ones(3, dtype)]
    with pytest.raises(ValueError, match="stochastic_rounding.*params\\[1\\]"):
        radam.Adam(params, stochastic_rounding=True)
    with pytest.raises(ValueError, match="stochastic_rounding"):
        radam.Adam([{"params": params[:1]}, {"params": params[1:], "stochastic_rounding": True}])


def test_refused_with_master_weights():
    with pytest.raises(ValueError, match="stochastic_rounding.*master"):
        radam.Adam([np.ones(4, F16)], stochastic_rounding=True, master_weights=True)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (2**64, ValueError),
        (10**400, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("7", TypeError),
        (None, TypeError),
    ],
)
def test_bad_seeds_are_refused_by_name(value, error):
    with pytest.raises(error, match="rounding_seed"):
        radam.Adam([np.ones(4, BF16)], stochastic_rounding=True, rounding_seed=value)


def test_a_refused_change_of_the_groups_changes_nothing(tmp_path):
    params = [np.ones(4, BF16), np.ones(3, np.float32)]
    opt = radam.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=1e-2)
    grads = [np.full(4, 0.5, BF16), np.full(3, 0.5, np.float32)]
    opt.step([[grads[0]], [grads[1]]])
    before, state = _snapshot(params), opt.state_dict()
    # Turned on for the float32 group: the next step is refused and writes nothing.
    opt.param_groups[1]["stochastic_rounding"] = True
    with pytest.raises(ValueError, match="param_groups\\[1\\]: stochastic_rounding"):
        opt.step([[grads[0]], [grads[1]]])
    assert _unchanged(params, before) and opt.step_count == 1
    opt.param_groups[1]["stochastic_rounding"] = False
    # A state dict or a checkpoint that turns it on there is refused, and nothing changes.
    bad = opt.state_dict()
    bad["param_groups"][1]["stochastic_rounding"] = True
    with pytest.raises(ValueError, match="stochastic_rounding"):
        opt.load_state_dict(bad)
    assert opt.param_groups[1]["stochastic_rounding"] is False
    # A checkpoint with it on, into an optimizer with master weights.
    rounded = [np.ones(4, BF16)]
    saved = radam.Adam(rounded, stochastic_rounding=True)
    saved.step([np.full(4, 0.5, BF16)])
    saved.save(tmp_path / "sr.radam")
    masters = [np.full(4, 2.0, BF16)]
    other = radam.Adam(masters, master_weights=True)
    with pytest.raises(ValueError, match="stochastic_rounding"):
        other.load(tmp_path / "sr.radam")
    assert other.step_count == 0 and np.all(masters[0] == 2.0)
    assert other.param_groups[0]["stochastic_rounding"] is False
    assert _unchanged(params, before)
    now = opt.state_dict()
    for k in state["state"]:
        for name, a in state["state"][k].items():
            np.testing.assert_array_equal(now["state"][k][name], a)
