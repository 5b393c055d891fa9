"""Properties of random runs (hypothesis) over every variant, param dtype and
option combination, shapes with 0 and 1 elements, and random step sequences:

* the bits do not depend on the thread count (each run is replayed by a
  subprocess started with another RAYON_NUM_THREADS);
* a state_dict round trip, and a checkpoint round trip, continue bit for bit;
* a step that fails (a bad grad at a random position, a read-only param, a bad
  option) changes no byte of the params or state, nor the step count, and the
  run then continues exactly as if it had not been tried.

The example counts are small so CI stays quick (``RADAM_PROPERTY_EXAMPLES``
raises them for a longer search).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import radam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_runs import DTYPES, build, digest, grads_at, run, snapshot

CLASSES = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]
ADAM_RULE = ("Adam", "AdamW")  # the classes with amsgrad, efficient_form, legacy bias correction
# One element past the step's serial threshold (48Ki elements): cut over the threads.
BIG = 49_153

EXAMPLES = int(os.environ.get("RADAM_PROPERTY_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

shapes = st.one_of(
    st.just(()),
    st.tuples(st.integers(0, 5)),
    st.tuples(st.integers(0, 3), st.integers(0, 4)),
    st.tuples(st.integers(BIG, BIG + 20_000)),
)


@st.composite
def cases(draw, max_steps: int = 6) -> dict:
    cls = draw(st.sampled_from(CLASSES))
    kind = draw(st.sampled_from(["float32", "float64", "mixed", "float16", "bfloat16"]))
    n = draw(st.integers(1, 4))
    tensor_shapes = [list(draw(shapes)) for _ in range(n)]
    if kind == "mixed":
        dtypes = [draw(st.sampled_from(["float32", "float64"])) for _ in range(n)]
    else:
        dtypes = [kind] * n
    options: dict = {
        "lr": draw(
            st.one_of(
                st.sampled_from([0.0, 1e-3, 0.05]),
                st.just(["WarmupCosineDecay", 0.05, 10, 2]),
                st.just(["StepDecay", 0.02, 2, 0.5]),
            )
        ),
        "betas": [draw(st.sampled_from([0.0, 0.5, 0.9])), draw(st.sampled_from([0.0, 0.9, 0.999]))],
        "eps": draw(st.sampled_from([0.0, 1e-8, 1e-3])),
        "weight_decay": draw(st.sampled_from([0.0, 0.01, 0.1])),
        "maximize": draw(st.booleans()),
        "beta1_decay": draw(st.sampled_from([1.0, 0.99])),
        "momentum": draw(st.sampled_from([0.0, 0.5])),
        "nesterov": draw(st.booleans()),
        "max_gradient_elem": draw(st.sampled_from([0.0, 0.5])),
        "max_gradient_norm": draw(st.sampled_from([0.0, 1.0])),
        "grad_scale": draw(st.sampled_from([1.0, 0.25, 1024.0])),
        "skip_nonfinite": draw(st.booleans()),
    }
    if cls != "AdamW":
        options["decoupled_weight_decay"] = draw(st.booleans())
    if cls in ADAM_RULE:
        options["amsgrad"] = draw(st.booleans())
        options["efficient_form"] = draw(st.booleans())
        if not options["efficient_form"]:
            options["bias_correction"] = draw(st.sampled_from(["adam", "downhill-0.4.0"]))
    if cls == "NAdam":
        options["momentum_decay"] = draw(st.sampled_from([0.0, 4e-3, 0.1]))
    if "float64" not in dtypes:
        options["state_dtype"] = draw(st.sampled_from([None, "float32", "bfloat16", "float16"]))
    if kind in ("float16", "bfloat16"):
        options["master_weights"] = draw(st.booleans())
    steps = draw(st.integers(1, max_steps))
    nonfinite_at = draw(st.integers(-1, steps - 1)) if options["skip_nonfinite"] else -1
    return {
        "cls": cls,
        "options": options,
        "dtypes": dtypes,
        "shapes": tensor_shapes,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "steps": steps,
        "nonfinite_at": nonfinite_at,
    }


@pytest.fixture(scope="module")
def other_threads():
    """A process replaying cases with another thread count: 1, or 3 where this one has 1."""
    threads = 1 if radam.num_threads() > 1 else 3
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(here, "random_runs.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )

    def replay(case: dict) -> str:
        proc.stdin.write(json.dumps(case) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, "the replaying process died"
        return json.loads(line)["digest"]

    yield replay
    proc.stdin.close()
    proc.wait(timeout=60)


@SETTINGS
@given(case=cases())
def test_same_bits_on_another_thread_count(case, other_threads):
    opt, params = run(case)
    assert opt.step_count + opt.skipped_steps == case["steps"]
    assert digest(opt, params) == other_threads(case)


@SETTINGS
@given(case=cases(), data=st.data())
def test_state_dict_and_checkpoint_round_trips_continue_bit_for_bit(case, data):
    split = data.draw(st.integers(0, case["steps"]), label="split")
    straight, straight_params = run(case)
    first, params = run(case, range(split))
    sd = first.state_dict()
    # Through state_dict: new arrays holding the params' values, a new optimizer.
    resumed_params = [p.copy() for p in params]
    resumed = build(case, resumed_params)
    if _diverged(sd):  # refused, with nothing changed
        fresh = snapshot(resumed, resumed_params)
        with pytest.raises(ValueError, match=r"state_dict\['state'\]"):
            resumed.load_state_dict(sd)
        assert snapshot(resumed, resumed_params) == fresh
        return
    resumed.load_state_dict(sd)
    run(case, range(split, case["steps"]), resumed, resumed_params)
    expected = _resumable(snapshot(straight, straight_params))
    assert _resumable(snapshot(resumed, resumed_params)) == expected
    # Through a checkpoint file: params restored from it into zeroed arrays.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.ckpt")
        first.save(path)
        loaded_params = [np.zeros_like(p) for p in params]
        loaded = build(case, loaded_params)
        loaded.load(path)
    run(case, range(split, case["steps"]), loaded, loaded_params)
    assert _resumable(snapshot(loaded, loaded_params)) == expected


def _diverged(sd: dict) -> bool:
    """Whether a saved state is one load_state_dict refuses, from the update rules:
    a NaN anywhere, an Inf in the first moment, velocity or master copy (the
    params had turned Inf or NaN), a negative second moment (never reached)."""
    for entry in sd["state"].values():
        for name, value in entry.items():
            if not isinstance(value, np.ndarray):
                continue
            a = value.astype(np.float64)
            if np.isnan(a).any():
                return True
            if name in ("exp_avg_sq", "max_exp_avg_sq", "exp_inf"):
                if (a < 0).any():
                    return True
            elif np.isinf(a).any():
                return True
    return False


def _resumable(snap: dict) -> dict:
    """What a resumed run must reproduce: all but the count of skipped steps (a
    diagnostic of this process, not part of the state)."""
    return {k: v for k, v in snap.items() if k != "skipped"}


BAD_KINDS = [
    "dtype",
    "shape",
    "string",
    "list",
    "alias-param",
    "alias-state",
    "readonly-param",
    "bad-option",
]


def _window(array: np.ndarray, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """A new array over ``array``'s first bytes, reached through ctypes (another base object)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (ctypes.c_char * nbytes).from_address(array.ctypes.data)
    return np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)


def _inject(kind, opt, params, grads, i):
    """Make step ``grads`` fail at tensor ``i``; return (error type, names in the
    message, undo) or None when this kind cannot be made here."""
    p, label = params[i], opt._layout.tensors[i].label
    dtype = p.dtype
    if kind == "dtype":
        other = np.float32 if dtype == np.float64 else np.float64
        grads[i] = grads[i].astype(other)
        return TypeError, [f"grads{label}"], None
    if kind == "shape":
        grads[i] = np.zeros((*p.shape, 2), dtype)
        return ValueError, [f"grads{label}", "shape"], None
    if kind == "string":  # (a None grad is not an error: that tensor is skipped)
        grads[i] = "g"
        return TypeError, [f"grads{label}"], None
    if kind == "list":
        grads[i] = grads[i].tolist()
        return TypeError, [f"grads{label}"], None
    if kind == "alias-param":
        if not p.size:
            return None
        grads[i] = _window(p, dtype, p.shape)
        return ValueError, [f"grads{label}", f"params{label}"], None
    if kind == "alias-state":
        entry = opt.state.get(opt._layout.tensors[i].key, {})
        targets = [(n, a) for n, a in entry.items() if a.nbytes >= p.nbytes]
        if not p.size or not targets:
            return None
        name, target = targets[0]
        grads[i] = _window(target, dtype, p.shape)
        return ValueError, [f"grads{label}", f"state{label}['"], None
    if kind == "readonly-param":
        p.flags.writeable = False

        def writable_again():
            p.flags.writeable = True

        return ValueError, [f"params{label}", "read-only"], writable_again
    assert kind == "bad-option"
    group = opt.param_groups[opt._layout.tensors[i].group]
    eps = group["eps"]
    group["eps"] = float("nan")

    def undo():
        group["eps"] = eps

    return ValueError, ["eps"], undo


@SETTINGS
@given(case=cases(), data=st.data())
def test_a_failed_step_changes_nothing(case, data):
    at = data.draw(st.integers(0, case["steps"] - 1), label="failing step")
    straight, straight_params = run(case)
    opt, params = run(case, range(at))
    before = snapshot(opt, params)
    grads = grads_at(case, at)
    i = data.draw(st.integers(0, len(params) - 1), label="tensor")
    kinds = [k for k in BAD_KINDS if not (k == "alias-state" and not opt.state)]
    made = _inject(data.draw(st.sampled_from(kinds), label="kind"), opt, params, grads, i)
    if made is None:
        made = _inject("dtype", opt, params, grads, i)
    error, names, undo = made
    with pytest.raises(error) as got:
        opt.step(grads)
    for name in names:
        assert name in str(got.value), (name, str(got.value))
    assert snapshot(opt, params) == before
    if undo is not None:
        undo()
    run(case, range(at, case["steps"]), opt, params)
    assert snapshot(opt, params) == snapshot(straight, straight_params)


def test_the_cases_cover_what_they_claim():
    # The strategy reaches every class, dtype, empty and one-element tensors and
    # tensors cut over the threads (a check that the search space is as documented).
    seen = {"cls": set(), "dtype": set(), "size": set()}

    @settings(max_examples=300, deadline=None, database=None)
    @given(case=cases())
    def collect(case):
        seen["cls"].add(case["cls"])
        seen["dtype"].update(case["dtypes"])
        for s in case["shapes"]:
            size = int(np.prod(s, dtype=np.int64))
            seen["size"].add("big" if size >= BIG else str(size) if size < 2 else "n")

    collect()
    assert seen["cls"] == set(CLASSES)
    assert seen["dtype"] == set(DTYPES)
    assert seen["size"] == {"0", "1", "n", "big"}
