"""Nothing radam writes is refused by radam: after any sequence of valid and
refused calls, ``save`` writes a file that ``load`` takes (or refuses, the
previous file left as it was), and ``state_dict`` gives a dict that
``load_state_dict`` takes (or refuses).

Before: ``save`` and ``state_dict`` never checked the group options, so an
option that ``step`` had just refused (``lr=-1e-3``, ``maximize=0.0``,
``rounding_seed=1.0``) went into the file, atomically replacing a good
checkpoint with one ``load`` refused.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, raises_named, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radam.schedules import StepDecay

SHAPES = [(5,), (2, 3)]
# Values each refused by step (and so by load): (option, value, message words).
REFUSED = [
    ("lr", -1e-3, "lr"),
    ("lr", float("nan"), "lr"),
    ("lr", "0.1", "lr"),
    ("maximize", 0.0, "maximize"),
    ("maximize", 2, "maximize"),
    ("rounding_seed", 1.0, "rounding_seed"),
    ("rounding_seed", -1, "rounding_seed"),
    ("eps", -1.0, "eps"),
    ("betas", (1.0, 0.999), "beta"),
    ("betas", (0.9,), "betas"),
    ("weight_decay", float("inf"), "weight_decay"),
    ("bias_correction", "nope", "bias_correction"),
    ("grad_scale", 0.0, "grad_scale"),
    ("lr_typo", 1e-3, "lr_typo"),
]
ACCEPTED = [
    ("lr", 1e-2),
    ("lr", StepDecay(1e-2, 2, 0.5)),
    ("maximize", True),
    ("eps", 1e-6),
    ("betas", (0.8, 0.99)),
    ("weight_decay", 0.1),
    ("rounding_seed", 2**64 - 1),
]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _build(params, device):
    return radam.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": 1e-2}], device=device)


def _grads(rng):
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _restore(opt, change):
    gi, key, value, present = change
    if present:
        opt.param_groups[gi][key] = value
    else:
        del opt.param_groups[gi][key]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("refused"), st.integers(0, 1), st.sampled_from(REFUSED)),
        st.tuples(st.just("accepted"), st.integers(0, 1), st.sampled_from(ACCEPTED)),
        st.tuples(st.just("restore")),
        st.tuples(st.just("poison")),
        st.tuples(st.just("save")),
        st.tuples(st.just("state_dict")),
        st.tuples(st.just("load")),
    ),
    max_size=12,
)


def _check_sequence(ops, device):
    params = _params()
    opt = _build(params, device)
    rng = np.random.default_rng(1)
    saved_once = False
    restore: list = []  # (group, key, the value before the change, was it there)
    poisoned = None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "opt.ckpt")
        for op in ops:
            kind = op[0]
            if kind == "step":
                before = snapshot(opt)
                try:
                    opt.step(_grads(np.random.default_rng(op[1])))
                except (TypeError, ValueError):
                    assert_unchanged(opt, before)
            elif kind in ("refused", "accepted"):
                gi, (key, value, *_) = op[1], op[2]
                group = opt.param_groups[gi]
                restore.append((gi, key, group.get(key), key in group))
                group[key] = value
                if kind == "refused":
                    before = snapshot(opt)
                    with raises_named((TypeError, ValueError), "param_groups["):
                        opt.step(_grads(rng))
                    assert_unchanged(opt, before)
            elif kind == "restore" and restore:
                _restore(opt, restore.pop())
            elif kind == "poison" and opt.state and poisoned is None:
                exp_avg = opt.state[0]["exp_avg"]
                poisoned = exp_avg.copy()
                exp_avg[0] = np.nan  # as a NaN gradient leaves it (skip_nonfinite off)
            elif kind == "poison" and poisoned is not None:
                np.copyto(opt.state[0]["exp_avg"], poisoned)
                poisoned = None
            elif kind == "save":
                old = open(path, "rb").read() if saved_once else None
                try:
                    opt.save(path)
                except (TypeError, ValueError) as err:
                    assert "save() refused" in str(err)
                    assert (open(path, "rb").read() if saved_once else None) == old
                else:
                    saved_once = True
                    fresh = _build(_params(2), device)
                    fresh.load(path)
                    assert fresh.step_count == opt.step_count
            elif kind == "state_dict":
                try:
                    sd = opt.state_dict()
                except (TypeError, ValueError) as err:
                    assert "state_dict() refused" in str(err)
                else:
                    fresh = _build(_params(2), device)
                    fresh.load_state_dict(sd)
                    assert fresh.step_count == opt.step_count
            elif kind == "load" and saved_once:
                fresh = _build(_params(2), device)
                fresh.load(path)  # whatever happened since, the file on disk loads
        while restore:  # every option back as it was: valid
            _restore(opt, restore.pop())
        if poisoned is not None:
            np.copyto(opt.state[0]["exp_avg"], poisoned)
        if saved_once:
            opt.load(path)
        # Options all valid, state healthy: both write, and what they write loads.
        opt.load_state_dict(opt.state_dict())
        opt.save(path)
        _build(_params(2), device).load(path)


PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@settings(PROPERTY, max_examples=300)
@given(ops=OPS)
def test_what_radam_writes_radam_loads(ops):
    _check_sequence(ops, "cpu")


@settings(PROPERTY, max_examples=25)
@given(ops=OPS)
def test_what_radam_writes_radam_loads_on_the_gpu(adapter, ops):
    _check_sequence(ops, "gpu")


@pytest.mark.parametrize("key, bad", [("lr", -1e-3), ("maximize", 0.0), ("rounding_seed", 1.0)])
def test_save_refuses_an_option_step_refused_and_keeps_the_good_file(tmp_path, key, bad):
    # The reproduction: the good checkpoint used to be replaced by one
    # that load() refused with "CheckpointError: invalid lr".
    path = tmp_path / "opt.ckpt"
    w = np.zeros(3, np.float32)
    opt = radam.Adam([w], lr=1e-3)
    opt.step([np.ones(3, np.float32)])
    opt.save(path)
    good = path.read_bytes()
    opt.param_groups[0][key] = bad
    with raises_named((TypeError, ValueError), key):
        opt.step([np.ones(3, np.float32)])
    with raises_named((TypeError, ValueError), "save() refused", "param_groups[0]", key):
        opt.save(path)
    assert path.read_bytes() == good
    with raises_named((TypeError, ValueError), "state_dict() refused", key):
        opt.state_dict()
    radam.Adam([np.zeros(3, np.float32)], lr=1e-3).load(path)
    opt.param_groups[0][key] = 1e-3 if key == "lr" else (False if key == "maximize" else 0)
    opt.save(path)  # fixed: it writes again
    radam.Adam([np.zeros(3, np.float32)], lr=1e-3).load(path)


def test_state_changed_to_a_nan_is_not_written(tmp_path):
    path = tmp_path / "opt.ckpt"
    opt = radam.Adam([np.zeros(3, np.float32)])
    opt.step([np.ones(3, np.float32)])
    opt.save(path)
    good = path.read_bytes()
    opt.step([np.array([1.0, np.nan, 1.0], np.float32)])  # skip_nonfinite is off
    with raises_named(ValueError, "save() refused", "opt.state[0]['exp_avg']", "nan"):
        opt.save(path)
    assert path.read_bytes() == good
    with raises_named(ValueError, "state_dict() refused", "opt.state[0]"):
        opt.state_dict()


def test_amsgrad_switched_on_after_state_exists_is_not_written(tmp_path):
    opt = radam.Adam([np.zeros(3, np.float32)])
    opt.step([np.ones(3, np.float32)])
    opt.param_groups[0]["amsgrad"] = True
    with raises_named(ValueError, "state_dict() refused", "amsgrad"):
        opt.state_dict()
    with raises_named(ValueError, "save() refused", "amsgrad"):
        opt.save(tmp_path / "opt.ckpt")
    assert not (tmp_path / "opt.ckpt").exists()
