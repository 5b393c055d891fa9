"""radam.compat.puzzlelib: PuzzleLib's update (against a docs/formulas.md reference) with
local and global state, its sign convention, and save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest
from radam.compat.puzzlelib import Adam
from seed_reference import PuzzleLibAdam

STEPS = 200


class Net:
    """The smallest PuzzleLib-like net: dicts of params and grads."""

    def __init__(self, dtypes=(np.float64, np.float64, np.float64), seed=0):
        rng = np.random.default_rng(seed)
        shapes = [("conv.W", (3, 4, 5)), ("conv.b", (4,)), ("fc.W", (17, 3))]
        self.params = {
            name: rng.uniform(4.0, 6.0, size=shape).astype(dt)
            for (name, shape), dt in zip(shapes, dtypes)
        }
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def backward(self, rng):
        """Fill the grads in place (PuzzleLib's: the NEGATIVE loss gradient)."""
        for g in self.grads.values():
            g[...] = 3.0 * rng.standard_normal(g.shape)


def run(net, opt, steps, seed=1, ref=None):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.zeroGradParams()
        assert all((g == 0).all() for g in net.grads.values())
        net.backward(rng)
        if ref is not None:
            ref.update({k: g.copy() for k, g in net.grads.items()})
        opt.update()


@pytest.mark.parametrize("global_state", [False, True])
def test_update_matches_reference(global_state):
    net = Net()
    ref = PuzzleLibAdam({k: p.copy() for k, p in net.params.items()}, alpha=1e-2, epsilon=1e-3)
    opt = Adam(alpha=1e-2, epsilon=1e-3)
    opt.setupOn(net, useGlobalState=global_state)
    run(net, opt, STEPS, ref=ref)
    for name, p in net.params.items():
        np.testing.assert_allclose(p, ref.params[name], rtol=1e-12, atol=0)
    assert opt.t == STEPS
    assert opt.learnRate == pytest.approx(ref.learnRate, rel=1e-15)


def test_update_with_defaults_and_mixed_dtypes_global():
    net = Net(dtypes=(np.float32, np.float64, np.float32))
    ref = PuzzleLibAdam({k: p.copy() for k, p in net.params.items()})
    opt = Adam()
    assert (opt.alpha, opt.beta1, opt.beta2, opt.epsilon) == (1e-3, 0.9, 0.999, 1e-8)
    opt.setupOn(net, useGlobalState=True)
    # one buffer per dtype: one tensor each for the kernel's single call
    assert len(opt.optimizer.param_groups[0]["params"]) == 2
    run(net, opt, 50, ref=ref)
    for name, p in net.params.items():
        rtol = 1e-12 if p.dtype == np.float64 else 2e-5
        np.testing.assert_allclose(p, ref.params[name], rtol=rtol)


def test_sign_convention_grads_are_negative_loss_gradient():
    """A positive grad (PuzzleLib: -dLoss) makes the param grow."""
    net = Net()
    opt = Adam(alpha=0.1)
    opt.setupOn(net)
    before = net.params["conv.b"].copy()
    for g in net.grads.values():
        g.fill(1.0)
    opt.update()
    np.testing.assert_allclose(net.params["conv.b"], before + 0.1, rtol=1e-6)


def test_global_state_rebinds_views_into_one_buffer():
    net = Net(dtypes=(np.float32, np.float32, np.float32))
    old = {k: p.copy() for k, p in net.params.items()}
    old_arrays = dict(net.params)
    opt = Adam()
    opt.setupOn(net, useGlobalState=True)
    buffer = opt.optimizer.param_groups[0]["params"][0]
    for name, p in net.params.items():
        assert p is not old_arrays[name]
        assert np.shares_memory(p, buffer)
        assert np.shares_memory(net.grads[name], opt._grad_buffers[0])
        np.testing.assert_array_equal(p, old[name])
    run(net, opt, 3)
    for name, p in net.params.items():
        assert not np.array_equal(p, old[name])  # the views are what trains
        np.testing.assert_array_equal(old_arrays[name], old[name])  # the old arrays are not


def test_replaced_arrays_are_an_error():
    net = Net()
    opt = Adam()
    opt.setupOn(net, useGlobalState=True)
    net.grads["fc.W"] = np.zeros_like(net.grads["fc.W"])
    with pytest.raises(RuntimeError, match="fc.W"):
        opt.update()
    net2 = Net()
    opt2 = Adam()
    opt2.setupOn(net2)
    net2.params["conv.b"] = net2.params["conv.b"].copy()
    with pytest.raises(RuntimeError, match="conv.b"):
        opt2.update()
    assert opt2.t == 0


@pytest.mark.parametrize("save_global, load_global", [(False, False), (True, True), (True, False)])
def test_save_load_round_trip(tmp_path, save_global, load_global):
    path = tmp_path / "adam.npz"
    straight_net = Net()
    straight = Adam(alpha=1e-2, beta1=0.8)
    straight.setupOn(straight_net, useGlobalState=save_global)
    run(straight_net, straight, 20, seed=5)

    net = Net()
    opt = Adam(alpha=1e-2, beta1=0.8)
    opt.setupOn(net, useGlobalState=save_global)
    run(net, opt, 10, seed=5)
    opt.save(path)
    assert os.listdir(tmp_path) == ["adam.npz"]  # no temporary file left

    resumed_net = Net()
    for name, p in net.params.items():  # the net's own checkpoint, as PuzzleLib keeps it
        resumed_net.params[name][...] = p
    resumed = Adam()  # hyperparameters come from the file
    resumed.setupOn(resumed_net, useGlobalState=load_global)
    resumed.load(path)
    assert (resumed.t, resumed.alpha, resumed.beta1) == (10, 1e-2, 0.8)
    assert resumed.learnRate == opt.learnRate
    rng = np.random.default_rng(5)
    for _ in range(10):  # replay the first 10 draws, then continue
        resumed_net.backward(rng)
    for _ in range(10):
        resumed.zeroGradParams()
        resumed_net.backward(rng)
        resumed.update()
    for name, p in resumed_net.params.items():
        np.testing.assert_array_equal(p, straight_net.params[name])
    assert resumed.t == 20


def _stepped_and_saved(tmp_path, steps, **options):
    """A Net and its ``Adam(**options)`` after ``steps`` updates, saved to adam.npz."""
    net = Net()
    opt = Adam(**options)
    opt.setupOn(net)
    run(net, opt, steps)
    path = tmp_path / "adam.npz"
    opt.save(path)
    return path, net, opt


def test_save_is_atomic(tmp_path, monkeypatch):
    path, net, opt = _stepped_and_saved(tmp_path, 2)
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    run(net, opt, 1)
    with pytest.raises(OSError, match="disk full"):
        opt.save(path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["adam.npz"]


def test_load_checks_before_changing(tmp_path):
    path, net, opt = _stepped_and_saved(tmp_path, 3)
    other = Net()
    other.params["fc.W"] = np.zeros((2, 2))
    other.grads["fc.W"] = np.zeros((2, 2))
    fresh = Adam(alpha=0.5)
    fresh.setupOn(other)
    with pytest.raises(ValueError, match="fc.W"):
        fresh.load(path)
    assert (fresh.t, fresh.alpha) == (0, 0.5) and fresh.optimizer.state == {}
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.npz is not a checkpoint"):
        fresh.load(tmp_path / "junk.npz")
    with pytest.raises(RuntimeError, match="setupOn"):
        Adam().load(path)


def test_save_before_any_update_and_load(tmp_path):
    net = Net()
    opt = Adam()
    opt.setupOn(net, useGlobalState=True)
    opt.save(tmp_path / "a.npz")
    other = Adam()
    other.setupOn(Net())
    other.load(tmp_path / "a.npz")
    assert other.t == 0 and other.optimizer.step_count == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": -1.0}, "alpha"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": -0.1}, "beta2"),
        ({"epsilon": -1e-8}, "epsilon"),
        ({"alpha": "big"}, "alpha"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        Adam(**kwargs)


def test_bad_nets():
    class NoGrads:
        params = {"w": np.zeros(3)}

    with pytest.raises(TypeError, match="grads"):
        Adam().setupOn(NoGrads())
    net = Net()
    net.grads.pop("fc.W")
    with pytest.raises(ValueError, match="fc.W"):
        Adam().setupOn(net)
    net = Net()
    net.params["conv.b"] = net.params["conv.b"].astype(np.float16)
    net.grads["conv.b"] = net.grads["conv.b"].astype(np.float16)
    with pytest.raises(TypeError, match="float16"):
        Adam().setupOn(net)
    # without mpi4py: an ImportError naming the extra
    with pytest.raises((TypeError, ImportError), match=r"nodeinfo must be an mpi4py|radam\[mpi\]"):
        Adam(nodeinfo=object())
    with pytest.raises(RuntimeError, match="setupOn"):
        Adam().update()


@pytest.mark.parametrize("global_state", [False, True])
def test_saved_moments_are_puzzlelibs(tmp_path, global_state):
    """The file holds PuzzleLib's m and v (m accumulates the grads as given)."""
    net = Net()
    ref = PuzzleLibAdam({k: p.copy() for k, p in net.params.items()})
    opt = Adam()
    opt.setupOn(net, useGlobalState=global_state)
    run(net, opt, 7, ref=ref)
    opt.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as data:
        names = list(data["names"])
        for j, name in enumerate(names):
            np.testing.assert_allclose(data[f"m{j}"], ref.m[name], rtol=1e-12)
            np.testing.assert_allclose(data[f"v{j}"], ref.v[name], rtol=1e-12)
        assert int(data["t"]) == 7 and float(data["learnRate"]) == pytest.approx(ref.learnRate)


# ------------------------------------------------- damaged and foreign checkpoint files
# Before: np.load's own errors (zipfile.BadZipFile, KeyError 'm1', "Failed to
# interpret file ... as a pickle", ...), and some foreign files loaded silently.


def _saved(tmp_path):
    path, _, _ = _stepped_and_saved(tmp_path, 3, alpha=1e-2)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return path, arrays


def _loader():
    """An optimizer two updates in, and what a failed load must leave as it is."""
    net = Net()
    opt = Adam(alpha=0.5)
    opt.setupOn(net)
    run(net, opt, 2, seed=7)
    state = {n: {k: a.copy() for k, a in s.items()} for n, s in opt.optimizer.state.items()}
    kept = (opt.t, opt.alpha, opt.learnRate, {n: p.copy() for n, p in net.params.items()}, state)
    return opt, net, kept


def _assert_kept(opt, net, kept):
    t, alpha, learn_rate, params, state = kept
    assert (opt.t, opt.alpha, opt.learnRate) == (t, alpha, learn_rate)
    for name, p in net.params.items():
        assert p.tobytes() == params[name].tobytes()
    assert opt.optimizer.step_count == 2
    for n, s in state.items():
        for k, a in s.items():
            assert opt.optimizer.state[n][k].tobytes() == a.tobytes()


def _rewritten(tmp_path, arrays, **changes):
    out = {**arrays, **changes}
    out = {k: v for k, v in out.items() if v is not None}
    path = tmp_path / "changed.npz"
    np.savez(path, **out)
    return path


def _damaged(tmp_path, how):
    path, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped byte":
        data[len(data) // 3] ^= 0xFF
    elif how == "junk":
        data = bytearray(b"not a checkpoint")
    elif how == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "flipped byte", "junk", "empty"])
def test_a_damaged_file_is_a_clear_error_and_changes_nothing(tmp_path, how):
    path = _damaged(tmp_path, how)
    opt, net, kept = _loader()
    with pytest.raises(ValueError, match="not a checkpoint written by radam.compat.puzzlelib"):
        opt.load(path)
    _assert_kept(opt, net, kept)


def test_foreign_files_are_clear_errors_and_change_nothing(tmp_path):
    opt, net, kept = _loader()
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    for name, words in [
        ("array.npy", "one .npy array"),
        ("other.npz", "without its 'format'"),
        ("pickle.npz", "cannot be read as .npz"),
    ]:
        with pytest.raises(ValueError, match="not a checkpoint") as info:
            opt.load(tmp_path / name)
        assert words in str(info.value) and name in str(info.value)
        _assert_kept(opt, net, kept)
    with pytest.raises(FileNotFoundError):
        opt.load(tmp_path / "missing.npz")
    _assert_kept(opt, net, kept)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"m1": None}, "missing ['m1']"),
        ({"extra": np.zeros(2)}, "unexpected ['extra']"),
        ({"t": np.array(3.0)}, "'t' must be a single integer"),
        ({"t": np.array([3])}, "'t' must be a single integer"),
        ({"alpha": np.array("1e-3")}, "'alpha' must be a single float"),
        ({"learnRate": None}, "missing ['learnRate'], unexpected []"),
        ({"names": np.array([1, 2, 3])}, "'names'"),
        ({"format": np.array("radam.compat.puzzlelib.Adam/2")}, "its format"),
        ({"t": np.array(-1)}, "t must be >= 0"),
        ({"alpha": np.array(float("nan"))}, "alpha"),
        ({"beta1": np.array(1.5)}, "beta1"),
        ({"learnRate": np.array(float("inf"))}, "learnRate must be finite"),
        ({"t": np.array(0)}, "t is 0"),
        ({"t": np.array(2**64 - 1, np.uint64)}, "step"),
    ],
)
def test_a_malformed_checkpoint_is_named_and_changes_nothing(tmp_path, changes, words):
    _, arrays = _saved(tmp_path)
    path = _rewritten(tmp_path, arrays, **changes)
    opt, net, kept = _loader()
    with pytest.raises(ValueError) as info:
        opt.load(path)
    assert words in str(info.value) and str(path) in str(info.value)
    _assert_kept(opt, net, kept)


@pytest.mark.parametrize("which, value", [("m0", np.nan), ("v0", -1.0), ("v1", np.nan)])
def test_moments_no_run_reaches_are_refused_and_change_nothing(tmp_path, which, value):
    _, arrays = _saved(tmp_path)
    bad = arrays[which].copy()
    bad.reshape(-1)[0] = value
    path = _rewritten(tmp_path, arrays, **{which: bad})
    opt, net, kept = _loader()
    with pytest.raises(ValueError, match="does not fit this optimizer"):
        opt.load(path)
    _assert_kept(opt, net, kept)
