"""Checkpoints: round trip, bit-for-bit resume, atomic saves under SIGKILL, and
every kind of bad checkpoint raising with nothing changed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile

import numpy as np
import pytest
import radam
from fingerprint import fingerprint
from helpers import assert_unchanged, raises_named, snapshot
from radam import _atomic_file, checkpoint
from radam.checkpoint import CheckpointError
from radam.schedules import ExponentialDecay, StepDecay, WarmupCosineDecay


def make_params(seed=0, dtype2=np.float64):
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(1001).astype(dtype2),
        rng.standard_normal(()),
    ]


def make_grads(params, count, seed=1):
    rng = np.random.default_rng(seed)
    return [
        [np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in params]
        for _ in range(count)
    ]


def grouped(params, amsgrad=True, lr0=0.01):
    return [
        {"params": params[:2], "lr": lr0, "amsgrad": amsgrad},
        {
            "params": params[2:],
            "lr": StepDecay(0.05, 3, 0.5),
            "betas": (0.5, 0.9),
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
    ]


def assert_same_optimizer(a, b):
    """Same params, state (bit for bit), step and options."""
    assert a.step_count == b.step_count
    pa = [p for g in a.param_groups for p in g["params"]]
    pb = [p for g in b.param_groups for p in g["params"]]
    for x, y in zip(pa, pb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a.state.keys() == b.state.keys()
    for key in a.state:
        assert a.state[key].keys() == b.state[key].keys()
        for name in a.state[key]:
            assert a.state[key][name].dtype == b.state[key][name].dtype
            np.testing.assert_array_equal(a.state[key][name], b.state[key][name])
    for ga, gb in zip(a.param_groups, b.param_groups):
        assert {k: v for k, v in ga.items() if k != "params"} == {
            k: v for k, v in gb.items() if k != "params"
        }


# ------------------------------------------------------------------ round trip and resume


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("save_at", [0, 1, 7])
def test_resume_is_bit_for_bit(tmp_path, amsgrad, save_at):
    p0 = make_params()
    grads = make_grads(p0, 15)
    path = tmp_path / "opt.ckpt"

    straight = [p.copy() for p in p0]
    opt = radam.Adam(grouped(straight, amsgrad))
    for g in grads:
        opt.step(g)

    first = [p.copy() for p in p0]
    opt1 = radam.Adam(grouped(first, amsgrad))
    for g in grads[:save_at]:
        opt1.step(g)
    opt1.save(path)
    for g in grads[save_at:]:  # the first run goes on after saving; the file does not
        opt1.step(g)

    fresh = [np.zeros_like(p) for p in p0]  # the params come from the checkpoint
    opt2 = radam.Adam(grouped(fresh, not amsgrad, lr0=0.5), lr=0.3)
    opt2.load(path)
    assert opt2.step_count == save_at
    assert opt2.param_groups[0]["amsgrad"] is amsgrad and opt2.param_groups[0]["lr"] == 0.01
    assert opt2.param_groups[1]["lr"] == StepDecay(0.05, 3, 0.5)
    for g in grads[save_at:]:
        opt2.step(g)
    assert_same_optimizer(opt2, opt)
    assert_same_optimizer(opt1, opt)


def test_round_trip_dict_params_momentum_and_file_is_deterministic(tmp_path):
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((4, 5)), "b": rng.standard_normal(5).astype(np.float32)}
    opt = radam.Adam(
        params,
        lr=WarmupCosineDecay(0.1, decay_steps=20, warmup_steps=3),
        momentum=0.5,
        nesterov=True,
        max_gradient_norm=2.0,
    )
    for _ in range(5):
        opt.step({k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()})
    opt.save(tmp_path / "a")
    other = {k: np.zeros_like(v) for k, v in params.items()}
    opt2 = radam.Adam(other)
    opt2.load(tmp_path / "a")
    assert_same_optimizer(opt2, opt)
    assert "velocity" in opt2.state["w"]
    opt2.save(tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_adamax_round_trip(tmp_path):
    params = make_params(4)
    opt = radam.Adamax(params)
    for g in make_grads(params, 3):
        opt.step(g)
    opt.save(tmp_path / "m")
    opt2 = radam.Adamax([np.zeros_like(p) for p in params])
    opt2.load(str(tmp_path / "m"))
    assert_same_optimizer(opt2, opt)


def test_save_before_any_step(tmp_path):
    params = make_params(5)
    opt = radam.Adam(params, lr=0.2)
    opt.save(tmp_path / "c")
    grads = make_grads(params, 2)
    opt2 = radam.Adam([np.zeros_like(p) for p in params])
    opt2.step(grads[0])
    opt2.load(tmp_path / "c")  # back to no state at all
    assert opt2.step_count == 0 and opt2.state == {}
    assert opt2.param_groups[0]["lr"] == 0.2
    opt2.step(grads[1])
    opt.step(grads[1])
    assert_same_optimizer(opt2, opt)


def test_without_params(tmp_path):
    params = make_params(6)
    opt = radam.Adam(params)
    for g in make_grads(params, 3):
        opt.step(g)
    opt.save(tmp_path / "s", include_params=False)
    meta, arrays = checkpoint.read(tmp_path / "s")
    assert all(t["param"] is None for t in meta["tensors"])
    mine = [np.full_like(p, 7.0) for p in params]
    opt2 = radam.Adam(mine)
    opt2.load(tmp_path / "s")
    assert all((p == 7.0).all() for p in mine)  # params untouched
    for key in opt.state:
        for name in opt.state[key]:
            np.testing.assert_array_equal(opt2.state[key][name], opt.state[key][name])
    # a file with params, loaded with restore_params=False, leaves them alone too
    opt.save(tmp_path / "p")
    opt2.load(tmp_path / "p", restore_params=False)
    assert all((p == 7.0).all() for p in mine)


def test_custom_callable_lr(tmp_path):
    def schedule(count):
        return 0.01 * 0.9**count

    params = make_params(7)
    opt = radam.Adam(params, lr=schedule)
    grads = make_grads(params, 6)
    for g in grads[:3]:
        opt.step(g)
    opt.save(tmp_path / "c")
    meta, _ = checkpoint.read(tmp_path / "c")
    assert "schedule" in meta["param_groups"][0]["options"]["lr"]["callable"]

    fresh = [np.zeros_like(p) for p in params]
    opt2 = radam.Adam(fresh, lr=schedule)
    opt2.load(tmp_path / "c")
    assert opt2.param_groups[0]["lr"] is schedule
    for g in grads[3:]:
        opt.step(g)
        opt2.step(g)
    assert_same_optimizer(opt2, opt)

    # without a callable to keep, the checkpoint cannot be loaded
    opt3 = radam.Adam([np.zeros_like(p) for p in params], lr=0.1)
    before = snapshot(opt3)
    with raises_named(CheckpointError, "param_groups[0]['lr']", "custom callable"):
        opt3.load(tmp_path / "c")
    assert_unchanged(opt3, before)


def test_live_equal_schedule_object_is_kept(tmp_path):
    sched = ExponentialDecay(0.1, 0.5)
    opt = radam.Adam([np.ones(3)], lr=sched)
    opt.step([np.ones(3)])
    opt.save(tmp_path / "e")
    mine = ExponentialDecay(0.1, 0.5)
    opt2 = radam.Adam([np.ones(3)], lr=mine)
    opt2.load(tmp_path / "e")
    assert opt2.param_groups[0]["lr"] is mine
    assert opt2.current_lr == [0.05]


def test_bfloat16_arrays_round_trip_in_the_format(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(8)
    params = [rng.standard_normal((6, 7)).astype(np.float32)]
    opt = radam.Adam(params)
    opt.step([np.ones((6, 7), np.float32)])
    sd = opt.state_dict()
    raw = (rng.integers(0, 2**16, (6, 7), dtype=np.uint32)).astype(np.uint16)
    raw[0, :3] = [0x7FC0, 0xFF80, 0x0001]  # a NaN, -inf, a subnormal: bits kept as they are
    sd["state"][0]["exp_avg"] = raw.view(bf16)
    sd["state"][0]["exp_avg_sq"] = rng.standard_normal((6, 7)).astype(np.float16)
    meta, members = checkpoint._encode(opt, sd, None)
    checkpoint._atomic_write(str(tmp_path / "b"), json.dumps(meta).encode(), members)
    meta2, arrays = checkpoint.read(tmp_path / "b")
    record = meta2["tensors"][0]["state"]["exp_avg"]
    assert record["dtype"] == "bfloat16" and record["stored_as"] == "uint16"
    back = arrays[record["member"]]
    assert back.dtype == bf16 and back.shape == (6, 7)
    np.testing.assert_array_equal(back.view(np.uint16), raw)
    half = arrays[meta2["tensors"][0]["state"]["exp_avg_sq"]["member"]]
    np.testing.assert_array_equal(half, sd["state"][0]["exp_avg_sq"])


def test_reduced_precision_state_round_trip(tmp_path):
    """Runs once the optimizer has ``state_dtype`` (issue 5's reduced-precision state)."""
    pytest.importorskip("ml_dtypes")
    params = make_params(9, dtype2=np.float32)[:2]
    try:
        opt = radam.Adam(params, state_dtype="bfloat16")
    except TypeError as err:
        pytest.skip(f"state_dtype is not available yet: {err}")
    grads = make_grads(params, 6)
    for g in grads[:3]:
        opt.step(g)
    opt.save(tmp_path / "r")
    opt2 = radam.Adam([np.zeros_like(p) for p in params], state_dtype="bfloat16")
    opt2.load(tmp_path / "r")
    for g in grads[3:]:
        opt.step(g)
        opt2.step(g)
    assert_same_optimizer(opt2, opt)


def test_overwrite_keeps_mode_and_leaves_no_temp_files(tmp_path):
    params = make_params(10)
    opt = radam.Adam(params)
    path = tmp_path / "m.ckpt"
    opt.save(path)
    os.chmod(path, 0o640)
    opt.step(make_grads(params, 1)[0])
    opt.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt"]
    assert checkpoint.read(path)[0]["step"] == 1


def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    params = make_params(11)
    opt = radam.Adam(params)
    path = tmp_path / "f.ckpt"
    opt.save(path)
    before = path.read_bytes()
    opt.step(make_grads(params, 1)[0])

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        opt.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["f.ckpt"]


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda opt, d: opt.save(d), IsADirectoryError, "directory"),
        (lambda opt, d: opt.save(d / "no" / "x"), FileNotFoundError, "folder"),
        (lambda opt, d: opt.save(3), TypeError, "path"),
        (lambda opt, d: opt.save(d / "x", include_params=1), TypeError, "include_params"),
        (lambda opt, d: opt.load(d / "x", restore_params="no"), TypeError, "restore_params"),
    ],
)
def test_bad_save_arguments(tmp_path, call, exc, name):
    opt = radam.Adam([np.ones(3)])
    with raises_named(exc, name):
        call(opt, tmp_path)


# ------------------------------------------------------------------ bad checkpoints


def _rewrite(src, dst, meta_fn=None, member_fn=None):
    """Copy a checkpoint archive, changing meta.json or a member on the way
    (the zip's CRCs are recomputed, so only radam's own checks can object)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "meta.json" and meta_fn is not None:
                meta = json.loads(data)
                meta_fn(meta)
                data = json.dumps(meta).encode()
            elif member_fn is not None:
                data = member_fn(info.filename, data)
            zout.writestr(info.filename, data)


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.fixture
def good(tmp_path):
    """A checkpoint of the reference optimizer (grouped, amsgrad) after 4 steps."""
    params = make_params(12)
    opt = radam.Adam(grouped(params))
    for g in make_grads(params, 4):
        opt.step(g)
    path = tmp_path / "good.ckpt"
    opt.save(path)
    return path


def _victim(seed=13, dtype2=np.float64, amsgrad=True, params_fn=None):
    """The optimizer that a bad load must leave alone: stepped twice."""
    params = make_params(seed, dtype2)
    if params_fn is not None:
        params = params_fn(params)
    opt = radam.Adam(grouped(params, amsgrad))
    for g in make_grads(params, 2, seed=seed):
        opt.step(g)
    return opt


def _expect_rejected(opt, path, exc, *names):
    before, exact = snapshot(opt), fingerprint(opt)
    with raises_named(exc, *names):
        opt.load(path)
    assert_unchanged(opt, before)
    assert fingerprint(opt) == exact
    grads = [np.ones_like(p) for g in opt.param_groups for p in g["params"]]
    opt.step(grads)  # the optimizer keeps working
    assert opt.step_count == before["step"] + 1


def test_missing_file(tmp_path):
    _expect_rejected(_victim(), tmp_path / "nope.ckpt", FileNotFoundError, "nope.ckpt")


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, I am a text file\n", b"PK\x03\x04" + b"\x00" * 40, json.dumps({}).encode()],
    ids=["empty", "text", "zip-magic-only", "json"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    _expect_rejected(_victim(), path, CheckpointError, "x.ckpt", "not a readable radam checkpoint")


def test_npz_or_zip_without_meta(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, a=np.ones(3))
    _expect_rejected(_victim(), path, CheckpointError, "no meta.json")


def test_directory(tmp_path):
    _expect_rejected(_victim(), tmp_path, CheckpointError, "directory")


def test_other_format_name(good, tmp_path):
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, meta_fn=lambda m: m.update(format="something-else"))
    _expect_rejected(_victim(), bad, CheckpointError, "format")


def test_newer_format_version(good, tmp_path):
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, meta_fn=lambda m: m.update(format_version=checkpoint.FORMAT_VERSION + 1))
    _expect_rejected(_victim(), bad, CheckpointError, "format version 2", "Upgrade radam")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated(good, tmp_path, fraction):
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[: int(len(data) * fraction)])
    _expect_rejected(_victim(), bad, CheckpointError, "not a readable radam checkpoint")


def test_corrupted_bytes_everywhere(good, tmp_path):
    """A flipped byte anywhere in the file is caught (zip structures, CRC-32s,
    SHA-256s, the npy headers) or, in the few bytes nothing reads (e.g. the
    zip's timestamps), harmless: the load then gives the good checkpoint."""
    data = good.read_bytes()
    reference = _victim()
    reference.load(good)
    offsets = sorted(set(np.random.default_rng(14).integers(0, len(data), 60).tolist()))
    offsets += [0, 30, len(data) - 1, len(data) - 22]  # magic, a name, the end record
    caught = 0
    for offset in offsets:
        bad = tmp_path / "bad.ckpt"
        bad.write_bytes(data)
        _flip_byte(bad, offset)
        opt = _victim()
        before = snapshot(opt)
        try:
            opt.load(bad)
        except CheckpointError:
            assert_unchanged(opt, before)
            caught += 1
        else:
            assert_same_optimizer(opt, reference)
    assert caught >= len(offsets) * 0.9


def test_payload_checksum_catches_what_the_zip_does_not(good, tmp_path):
    bad = tmp_path / "bad.ckpt"

    def tamper(name, data):
        if name == "state/1/exp_avg.npy":
            data = bytearray(data)
            data[-8] ^= 0x01  # the last element, zip CRC recomputed by _rewrite
            data = bytes(data)
        return data

    _rewrite(good, bad, member_fn=tamper)
    _expect_rejected(_victim(), bad, CheckpointError, "state/1/exp_avg.npy", "SHA-256")


def test_malformed_metadata(good, tmp_path):
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, meta_fn=lambda m: m.pop("tensors"))
    _expect_rejected(_victim(), bad, CheckpointError, "checkpoint")
    _rewrite(good, bad, meta_fn=lambda m: m["tensors"][0]["state"]["exp_avg"].update(dtype="int5"))
    _expect_rejected(_victim(), bad, CheckpointError, "int5")


def test_other_shapes(good):
    def reshape(params):
        params[0] = np.zeros((4, 3), np.float32)
        return params

    _expect_rejected(_victim(params_fn=reshape), good, CheckpointError, "shape (3, 4)", "(4, 3)")


def test_other_dtypes(good):
    _expect_rejected(_victim(dtype2=np.float32), good, CheckpointError, "float64", "float32")


def test_other_group_count(good):
    params = make_params(15)
    opt = radam.Adam(params, amsgrad=True)
    opt.step([np.ones_like(p) for p in params])
    _expect_rejected(opt, good, CheckpointError, "2 param groups", "has 1")


def test_other_group_sizes(good):
    params = make_params(16)
    opt = radam.Adam([{"params": params[:1]}, {"params": params[1:]}])
    opt.step([np.ones_like(p) for p in params])
    _expect_rejected(opt, good, CheckpointError, "param_groups[0]", "has 2 params")


def test_other_param_count(good):
    params = make_params(17) + [np.ones(2)]
    opt = radam.Adam([{"params": params[:2]}, {"params": params[2:]}])
    opt.step([np.ones_like(p) for p in params])
    _expect_rejected(opt, good, CheckpointError, "3 params", "has 4")


def test_other_keys(tmp_path):
    rng = np.random.default_rng(18)
    saved = radam.Adam({"w": rng.standard_normal(3), "b": rng.standard_normal(3)})
    saved.step({"w": np.ones(3), "b": np.ones(3)})
    saved.save(tmp_path / "k")
    opt = radam.Adam({"w": rng.standard_normal(3), "c": rng.standard_normal(3)})
    opt.step({"w": np.ones(3), "c": np.ones(3)})
    before = snapshot(opt)
    with raises_named(CheckpointError, "param_names", "'b'", "'c'"):
        opt.load(tmp_path / "k")
    assert_unchanged(opt, before)


def test_missing_state_member(good, tmp_path):
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, meta_fn=lambda m: m["tensors"][1]["state"].pop("max_exp_avg_sq"))
    _expect_rejected(_victim(), bad, CheckpointError, "max_exp_avg_sq")


def test_other_update_rule(tmp_path):
    params = make_params(19)
    opt = radam.Adamax(params)
    opt.step([np.ones_like(p) for p in params])
    opt.save(tmp_path / "x")
    victim = radam.Adam([p.copy() for p in params])
    victim.step([np.ones_like(p) for p in params])
    _expect_rejected(victim, tmp_path / "x", CheckpointError, "adamax")


def test_bad_option_in_file(good, tmp_path):
    bad = tmp_path / "bad.ckpt"
    _rewrite(good, bad, meta_fn=lambda m: m["param_groups"][0]["options"].update(eps=-1.0))
    _expect_rejected(_victim(), bad, CheckpointError, "eps")
    _rewrite(
        good,
        bad,
        meta_fn=lambda m: m["param_groups"][1]["options"].update(
            lr={"schedule": {"name": "Nope", "args": {}}}
        ),
    )
    _expect_rejected(_victim(), bad, CheckpointError, "param_groups[1]['lr']", "Nope")


# ------------------------------------------------------------------ failed loads change nothing


@pytest.mark.parametrize("read_only, label", [(0, "[0][0]"), (1, "[0][1]"), (2, "[1][0]")])
def test_load_into_a_read_only_param_changes_nothing(tmp_path, read_only, label):
    """Issue 12, item 3: save, step, make a param read-only, load. The load used to
    set the file's step and state, copy the params before the read-only one, then
    fail with a raw ValueError."""
    params = make_params(21)
    opt = radam.Adam(grouped(params))
    opt.save(tmp_path / "c")
    for g in make_grads(params, 2):
        opt.step(g)
    params[read_only].flags.writeable = False
    before = fingerprint(opt)
    with raises_named(CheckpointError, f"params{label}", "read-only", "cannot restore"):
        opt.load(tmp_path / "c")
    assert fingerprint(opt) == before
    # Without restoring params, nothing is written to it: the load goes through.
    opt.load(tmp_path / "c", restore_params=False)
    assert opt.step_count == 0 and opt.state == {}


def test_load_whose_engine_cannot_be_built_changes_nothing(good, monkeypatch):
    """The engine is built before the first change, so its failure changes nothing."""

    def broken(*args, **kwargs):
        raise RuntimeError("no engine today")

    opt = _victim()
    before = fingerprint(opt)
    monkeypatch.setattr(radam._core, "CpuEngine", broken)
    with pytest.raises(RuntimeError, match="no engine today"):
        opt.load(good)
    monkeypatch.undo()
    assert fingerprint(opt) == before
    reference = _victim()
    reference.load(good)
    opt.load(good)
    assert fingerprint(opt) == fingerprint(reference)


@pytest.mark.usefixtures("adapter")
@pytest.mark.parametrize("restore_params", [True, False])
def test_load_on_the_gpu_restores_params_on_the_device(good, monkeypatch, restore_params):
    """On the GPU the engine holds its own copy of the params: a load uploads the
    restored ones, and a failed engine build puts the host params back."""
    from radam import gpu

    saved = radam.Adam([p.astype(np.float32) for p in make_params(22)], device="gpu")
    for g in make_grads(saved.param_groups[0]["params"], 3):
        saved.step(g)
    path = good.parent / "gpu.ckpt"
    saved.save(path)
    params = [np.zeros_like(p) for p in saved.param_groups[0]["params"]]
    opt = radam.Adam(params, device="gpu")
    opt.step([np.ones_like(p) for p in params])
    host = [p.copy() for p in params]  # current after a step with NumPy grads
    before = fingerprint(opt)

    def broken(*args, **kwargs):
        raise gpu.GpuError("out of GPU memory (a test)")

    monkeypatch.setattr(gpu, "GpuEngine", broken)
    with pytest.raises(gpu.GpuError, match="a test"):
        opt.load(path, restore_params=restore_params)
    monkeypatch.undo()
    assert [p.tobytes() for p in params] == [h.tobytes() for h in host]  # before any sync
    assert fingerprint(opt) == before
    opt.load(path, restore_params=restore_params)
    grads = make_grads(params, 1, seed=5)[0]
    saved.step(grads)
    opt.step(grads)
    if restore_params:  # the device stepped from the restored params
        assert fingerprint(opt) == fingerprint(saved)
    else:
        assert opt.step_count == saved.step_count == 4


# ------------------------------------------------------------------ corrupt files


def _small_checkpoint(path):
    """A real checkpoint of about 2 KB (one float32 param of 2 elements, one step)."""
    opt = radam.Adam([np.array([0.5, -1.0], np.float32)], lr=0.01)
    opt.step([np.array([1.0, 2.0], np.float32)])
    opt.save(path)


def _small_victim():
    """An optimizer that the small checkpoint fits, in another state than the file's."""
    opt = radam.Adam([np.array([3.0, 4.0], np.float32)], lr=0.5, amsgrad=True)
    for g in ([1.0, -1.0], [0.25, 2.0]):
        opt.step([np.array(g, np.float32)])
    return opt


def _zip_structure(data):
    """The byte ranges of a stored zip that are not member contents: local
    headers, central directory, end records."""
    ranges = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26 : start + 30])
            ranges.append((start, start + 30 + name_len + extra_len))
        ranges.append((zf.start_dir, len(data)))
    return ranges


def test_every_bit_flip_is_caught_or_harmless(tmp_path):
    """Issue 12, item 4: a single flipped bit gave RuntimeError, NotImplementedError
    or zlib.error for 180 of the 42,648 bits of a checkpoint. Here every bit of the
    zip's own structures (local headers, central directory, end record) of a small
    checkpoint is flipped, and one bit of each byte of the members (meta.json and
    the .npy members, which the CRC-32s and SHA-256s cover): each load raises
    CheckpointError and changes nothing, or succeeds and gives exactly the
    unflipped checkpoint (a flip in a field that nothing reads, e.g. a timestamp)."""
    path = tmp_path / "small.ckpt"
    _small_checkpoint(path)
    data = path.read_bytes()
    reference = _small_victim()
    reference.load(path)
    expected = fingerprint(reference)
    structure = set()
    for start, end in _zip_structure(data):
        structure.update(range(start, end))
    bits = [8 * i + b for i in sorted(structure) for b in range(8)]
    bits += [8 * i + i % 8 for i in range(len(data)) if i not in structure]
    assert len(bits) > 5000

    wrong, caught = [], 0
    opt = _small_victim()
    before = fingerprint(opt)
    with open(path, "r+b") as f:
        for bit in bits:
            at, mask = bit // 8, 1 << (bit % 8)
            os.pwrite(f.fileno(), bytes([data[at] ^ mask]), at)
            try:
                opt.load(path)
            except CheckpointError:
                caught += 1
                if fingerprint(opt) != before:
                    wrong.append((bit, "changed the optimizer"))
            except Exception as err:  # noqa: BLE001 - collected and reported below
                wrong.append((bit, f"{type(err).__name__}: {err}"))
            else:
                if fingerprint(opt) != expected:
                    wrong.append((bit, "loaded something else"))
                opt = _small_victim()
            os.pwrite(f.fileno(), data[at : at + 1], at)
    assert not wrong, f"{len(wrong)} of {len(bits)} flips: {wrong[:10]}"
    assert caught > len(bits) // 2  # (3,992 of 5,377 here: many header fields go unread)


def _central_entry(data, name):
    """The offset of ``name``'s record in the zip's central directory."""
    offset = data.index(b"PK\x01\x02")
    while data[offset + 46 : offset + 46 + len(name)] != name.encode():
        offset = data.index(b"PK\x01\x02", offset + 4)
    return offset


@pytest.mark.parametrize(
    "field, value, names",
    [
        (8, 0x0001, ["encrypted"]),  # general purpose flags: encrypted
        (10, 99, ["compressed", "99"]),  # compression method: unknown
        (6, 84, ["zip file version 8.4"]),  # version needed to extract
        (10, 8, ["compressed", "8"]),  # deflate on stored bytes (zlib.error when read)
    ],
    ids=["encrypted", "compression", "version", "deflate"],
)
def test_central_directory_corruptions_of_the_issue(tmp_path, field, value, names):
    """The four one-byte changes of issue 12, item 4, made to meta.json's entry."""
    path = tmp_path / "c.ckpt"
    _small_checkpoint(path)
    data = bytearray(path.read_bytes())
    at = _central_entry(data, "meta.json") + field
    data[at : at + 2] = struct.pack("<H", value)
    path.write_bytes(data)
    _expect_rejected(_small_victim(), path, CheckpointError, "c.ckpt", *names)


@pytest.mark.parametrize("size", [0x7FFFFFFF, 0xFFFFFFFE])
def test_huge_declared_member_size_is_refused_before_reading(tmp_path, size):
    path = tmp_path / "c.ckpt"
    _small_checkpoint(path)
    data = bytearray(path.read_bytes())
    at = _central_entry(data, "state/0/exp_avg.npy")
    data[at + 20 : at + 28] = struct.pack("<II", size, size)  # compressed, uncompressed
    path.write_bytes(data)
    _expect_rejected(_small_victim(), path, CheckpointError, "state/0/exp_avg.npy", str(size))


def test_huge_array_header_is_refused_before_allocating(tmp_path):
    """An .npy member (and its record) claiming 2**40 elements: ``read`` refuses it
    from the sizes alone, and ``load`` from the optimizer's shapes."""
    path, bad = tmp_path / "c.ckpt", tmp_path / "bad.ckpt"
    _small_checkpoint(path)
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        huge, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    member = huge.getvalue() + b"\0" * 8

    def fake(m):
        record = m["tensors"][0]["state"]["exp_avg"]
        record.update(shape=[2**40], sha256=hashlib.sha256(member).hexdigest())

    _rewrite(path, bad, meta_fn=fake, member_fn=lambda n, d: member if "exp_avg." in n else d)
    with raises_named(CheckpointError, "state/0/exp_avg.npy", str(2**42)):
        checkpoint.read(bad)
    _expect_rejected(_small_victim(), bad, CheckpointError, "exp_avg", str((2**40,)))


def test_compressed_members_are_refused(tmp_path):
    """radam stores members uncompressed, so a compressed one (a re-zipped file, or
    a decompression bomb) is refused before anything is decompressed."""
    path, bad = tmp_path / "c.ckpt", tmp_path / "bad.ckpt"
    _small_checkpoint(path)
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    _expect_rejected(_small_victim(), bad, CheckpointError, "meta.json", "compressed")


def test_malformed_metadata_names_the_field(tmp_path):
    """Every field that loading reads is checked for its type first, so a malformed
    meta.json is a CheckpointError naming the field, never an error inside radam."""
    path, bad = tmp_path / "c.ckpt", tmp_path / "bad.ckpt"
    _small_checkpoint(path)
    cases = [
        (lambda m: m.update(param_groups={}), "'param_groups'"),
        (lambda m: m["param_groups"].append(3), "param_groups[1]"),
        (lambda m: m["param_groups"][0].update(options=[]), "param_groups[0]"),
        (lambda m: m["tensors"].append(None), "tensors[1]"),
        (lambda m: m["tensors"][0].update(shape=[-1]), "tensors[0]['shape']"),
        (lambda m: m["tensors"][0].update(group=True), "tensors[0]['group']"),
        (lambda m: m["tensors"][0].pop("param"), "tensors[0]['param']"),
        (lambda m: m["tensors"][0]["state"]["exp_avg"].pop("sha256"), "tensors[0]['state']"),
        (lambda m: m["tensors"][0].update(scalars={"step": [[[[[[[[[1]]]]]]]]]}), "'scalars'"),
        (lambda m: m["param_groups"][0]["options"].update(lr=[[[[[[[[[1]]]]]]]]]), "options"),
    ]
    for change, name in cases:
        _rewrite(path, bad, meta_fn=change)
        _expect_rejected(_small_victim(), bad, CheckpointError, "malformed meta.json", name)


def test_errors_of_radam_itself_are_not_taken_for_corruption(tmp_path, monkeypatch):
    """The catch is around the decoding of the file only: a bug in radam's own code
    surfaces as itself, not as a CheckpointError."""
    path = tmp_path / "c.ckpt"
    _small_checkpoint(path)

    def buggy(*args):
        raise KeyError("a bug")

    monkeypatch.setattr(checkpoint, "_fit", buggy)
    with pytest.raises(KeyError, match="a bug"):
        _small_victim().load(path)
    monkeypatch.setattr(checkpoint, "_check_meta", buggy)
    with pytest.raises(KeyError, match="a bug"):
        checkpoint.read(path)


# ------------------------------------------------------------------ killed saves

_COMMON = textwrap.dedent(
    """
    import numpy as np
    import radam
    from radam.schedules import StepDecay

    def make(n):
        params = [np.linspace(-1.0, 1.0, n, dtype=np.float32), np.linspace(0.0, 1.0, 257)]
        opt = radam.Adam(
            [
                {"params": [params[0]], "amsgrad": True},
                {"params": [params[1]], "lr": StepDecay(0.01, 3, 0.5), "weight_decay": 0.1},
            ],
            lr=1e-3,
        )
        return params, opt

    def grads(params, count):
        return [p * p.dtype.type(0.5) - p.dtype.type(count % 5 - 2) for p in params]
    """
)

# A fork server: imports once, then forks a child per request that resumes from
# the checkpoint and saves in a loop until the test kills it with SIGKILL. The
# child reports each finished save and how long it took, so that the test can
# aim its kills at saves whatever the machine's speed.
_SERVER = _COMMON + textwrap.dedent(
    """
    import os
    import sys
    import time

    n, path = int(sys.argv[1]), sys.argv[2]

    def say(*words):
        # One write per line: a pipe write under PIPE_BUF is atomic, whereas
        # print() may write its pieces separately (it does with
        # PYTHONUNBUFFERED=1), and a SIGKILL between them would leave a
        # partial line that the server's next line runs into.
        os.write(1, (" ".join(map(str, words)) + "\\n").encode())

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                params, opt = make(n)
                opt.load(path)
                while True:
                    opt.step(grads(params, opt.step_count))
                    start = time.perf_counter()
                    opt.save(path)
                    say("saved", time.perf_counter() - start)
            finally:
                os._exit(3)
        say("pid", pid)
        _, status = os.waitpid(pid, 0)
        say("status", status)
    """
)


def _read_tagged(stream, tag):
    """The next line of ``stream`` that starts with ``tag``, split."""
    while True:
        line = stream.readline()
        assert line, f"the fork server ended while the test waited for {tag!r}"
        words = line.split()
        if words[0] == tag:
            return words
        assert words[0] != "status", f"the saving child died on its own (status {words[1]})"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks (POSIX only)")
def test_sigkill_during_saves_never_leaves_a_broken_file(tmp_path):
    n = 1 << 18  # a 3 MB checkpoint: a save takes some milliseconds (mostly fsync)
    ns: dict = {}
    exec(_COMMON, ns)
    path = tmp_path / "run.ckpt"
    ref_params, ref = ns["make"](n)
    ref.save(path)  # step 0: the file always holds some checkpoint
    server = tmp_path / "server.py"
    server.write_text(_SERVER)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(server), str(n), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    rng = np.random.default_rng(20)
    steps_seen, left_temp, child, dead = [], 0, [0], set()

    def kill_all():  # a watchdog, so that a hung child fails the test instead of hanging it
        for victim in (child[0], proc.pid):
            if victim:
                with contextlib.suppress(OSError):
                    os.kill(victim, signal.SIGKILL)

    watchdog = threading.Timer(240.0, kill_all)
    watchdog.start()
    try:
        for _ in range(100):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            pid = child[0] = int(_read_tagged(proc.stdout, "pid")[1])  # alive until reaped
            # Let the child finish 0 to 2 saves, then kill it at a random moment
            # of the next step and save (or of its startup, for 0).
            duration = 0.02
            for _ in range(rng.integers(0, 3)):
                duration = float(_read_tagged(proc.stdout, "saved")[1])
                assert not [f for f in dead if (tmp_path / f).exists()], "a save left dead temps"
                dead.clear()
            time.sleep(rng.uniform(0.0, 1.2 * duration))
            os.kill(pid, signal.SIGKILL)
            status = int(_read_tagged(proc.stdout, "status")[1])
            child[0] = 0
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"the saving child ended on its own (status {status}), not by the kill"
            )
            temps = set(_temporaries(tmp_path))
            left_temp += len(temps - dead)
            dead |= temps  # the next finished save removes them (issue 12, item 10)

            params, opt = ns["make"](n)
            opt.load(path)  # must be a whole checkpoint
            s = opt.step_count
            assert not steps_seen or s >= steps_seen[-1]
            steps_seen.append(s)
            while ref.step_count < s:  # the reference run, never interrupted
                ref.step(ns["grads"](ref_params, ref.step_count))
            assert_same_optimizer(opt, ref)
    finally:
        watchdog.cancel()
        if child[0]:  # the test failed while a child ran: stop it, so the server can end
            kill_all()
        proc.stdin.close()
        proc.wait(timeout=30)
    assert steps_seen[-1] >= 50  # the run made progress across the kills
    assert left_temp > 0  # some kills did land in the middle of a save
    opt.save(path)
    assert _temporaries(tmp_path) == []


def _temporaries(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".tmp"))


# A process that saves a checkpoint and pauses in the middle of writing it (after
# meta.json) until it reads a line: a live save, or one to kill mid-write.
_PAUSED_SAVER = textwrap.dedent(
    """
    import os
    import sys
    import zipfile

    import numpy as np
    import radam

    path, steps = sys.argv[1], int(sys.argv[2])
    params = [np.linspace(-1.0, 1.0, 1000)]
    opt = radam.Adam(params)
    for _ in range(steps):
        opt.step([params[0] * 0.5])
    write = zipfile.ZipFile.writestr

    def paused(self, info, data, *args, **kwargs):
        write(self, info, data, *args, **kwargs)
        if info.filename == "meta.json":
            os.write(1, b"paused\\n")
            sys.stdin.readline()

    zipfile.ZipFile.writestr = paused
    opt.save(path)
    os.write(1, b"saved\\n")
    """
)


def _paused_saver(path, steps):
    """A process paused in the middle of saving its optimizer (``steps`` steps) to ``path``."""
    script = path.parent / "paused_saver.py"
    script.write_text(_PAUSED_SAVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(steps)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line != "paused\n":
        proc.kill()
        pytest.fail(f"the saving process did not pause mid-write: {line!r}, {proc.wait()}")
    return proc


def test_a_save_removes_the_temporaries_of_killed_saves(tmp_path):
    """Issue 12, item 10: saves killed mid-write left their temporaries for good.
    The next save to the same path removes them, and nothing else: not files
    that only look alike, nor a link to another file."""
    path = tmp_path / "run.ckpt"
    savers = [_paused_saver(path, steps) for steps in (1, 2, 3)]
    temps = _temporaries(tmp_path)
    assert len(temps) == 3
    for proc in savers:
        proc.kill()
        proc.wait()
    assert _temporaries(tmp_path) == temps  # a kill leaves them behind
    lookalikes = [
        ".run.ckpt.abcdefgh.tmp",  # no radam- marker
        ".run.ckpt.radam-abcdefgh.tmp.bak",
        ".other.ckpt.radam-abcdefgh.tmp",  # another checkpoint's
        "run.ckpt.radam-abcdefgh.tmp",
    ]
    for name in lookalikes:
        (tmp_path / name).write_bytes(b"not a temporary")
    (tmp_path / "target").write_bytes(b"not a temporary")
    os.symlink(tmp_path / "target", tmp_path / ".run.ckpt.radam-symlink.tmp")

    opt = radam.Adam([np.ones(3)])
    opt.save(path)
    expected = lookalikes + [".run.ckpt.radam-symlink.tmp", "paused_saver.py", "run.ckpt", "target"]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
    assert (tmp_path / "target").read_bytes() == b"not a temporary"
    assert checkpoint.read(path)[0]["step"] == 0


def test_a_save_never_removes_the_temporary_of_a_live_save(tmp_path):
    """A save that is still writing (another process, paused mid-write) keeps its
    temporary through other saves to the same path, then completes."""
    path = tmp_path / "run.ckpt"
    live = _paused_saver(path, 5)
    try:
        [temp] = _temporaries(tmp_path)
        size = os.path.getsize(tmp_path / temp)
        opt = radam.Adam([np.ones(3)])
        for _ in range(3):
            opt.save(path)
            assert _temporaries(tmp_path) == [temp]
            assert os.path.getsize(tmp_path / temp) == size
        assert checkpoint.read(path)[0]["step"] == 0
        live.stdin.write("go\n")
        live.stdin.flush()
        assert live.stdout.readline() == "saved\n"
        assert live.wait(timeout=60) == 0
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert _temporaries(tmp_path) == []
    assert checkpoint.read(path)[0]["step"] == 5  # the live save's checkpoint, whole


def test_a_temporary_removed_before_its_save_locks_it_is_replaced(tmp_path, monkeypatch):
    """Between creating its temporary and locking it, a save can lose it to another
    save's cleanup (which can take the lock in that moment): it notices, and
    writes to a new one."""
    path = tmp_path / "run.ckpt"
    made, real = [], tempfile.mkstemp

    def racing(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        if len(made) == 1:  # another save's cleanup runs now, before the lock
            _atomic_file.remove_dead_temporaries(str(tmp_path), "run.ckpt")
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", racing)
    opt = radam.Adam([np.ones(3)])
    opt.step([np.ones(3)])
    opt.save(path)
    assert len(made) == 2 and not os.path.exists(made[0])
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]
    assert checkpoint.read(path)[0]["step"] == 1
