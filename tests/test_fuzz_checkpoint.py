"""Fuzzing of checkpoint and state_dict loading (issue 12).

Hypothesis mutates three kinds of input, built from real optimizers of several
kinds (groups with AMSGrad and a schedule, NAdam over named params, momentum,
float16 params with master weights and bfloat16 state, AdaMax, RAdam):

- the bytes of their checkpoint files (bit flips, overwrites, truncation,
  insertions, deletions and copies, aimed at the zip's headers and central
  directory as often as anywhere), loaded with ``opt.load`` and read with
  ``radam.checkpoint.read``;
- the JSON of their ``meta.json`` (any field replaced by another JSON value,
  huge integers, NaN and infinities included, removed, or added), in archives
  whose checksums are recomputed, so that the checks behind them are reached;
- their ``state_dict()`` (any entry replaced by a number, string, container or
  array of another shape or dtype or full of NaNs, removed, or added), loaded
  with ``load_state_dict``.

A load must succeed or raise a documented exception: ``CheckpointError`` for a
file (``FileNotFoundError`` cannot happen here), ``ValueError`` or
``TypeError`` for a state_dict. A failed load must leave the optimizer exactly
as it was (params, state, step, options, byte for byte). A load of mutated
bytes that succeeds must give exactly the unmutated checkpoint; a state_dict
load that succeeds must hold exactly the arrays and step it was given; a
checkpoint that loads must save and load again to the same optimizer.

The suite runs a fixed number of examples, drawn the same way on every run
(derandomized), well under a minute on two cores. For a deeper run, set
``RADAM_FUZZ_EXAMPLES`` to the number of examples per test; the examples are
then random, different on each run, and hypothesis keeps any failure it finds
in its example database (``.hypothesis/``) to replay it first next time::

    RADAM_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz_checkpoint.py
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import radam
from fingerprint import exact, fingerprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from radam import checkpoint
from radam.checkpoint import CheckpointError
from radam.schedules import StepDecay

ml_dtypes = pytest.importorskip("ml_dtypes")

DEEP = int(os.environ.get("RADAM_FUZZ_EXAMPLES", "0") or 0)
FUZZ = settings(
    max_examples=DEEP or 500,
    derandomize=not DEEP,
    database=settings.default.database if DEEP else None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- the optimizers


def _tree(params: Any, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    if isinstance(params, dict):
        return {k: fn(v) for k, v in params.items()}
    return [fn(p) for p in params]


def _adam_groups() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    p = [rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(4), np.array(0.5)]
    groups = [
        {"params": p[:2], "amsgrad": True},
        {"params": p[2:], "lr": StepDecay(0.05, 2, 0.5), "weight_decay": 0.1},
    ]
    return radam.Adam(groups, lr=0.01), p


def _nadam_named() -> tuple[Any, Any]:
    rng = np.random.default_rng(1)
    p = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    return radam.NAdam(p, lr=0.01, momentum_decay=0.01), p


def _momentum() -> tuple[Any, Any]:
    p = [np.linspace(-1.0, 1.0, 5, dtype=np.float32)]
    return radam.Adam(p, momentum=0.5, nesterov=True, max_gradient_norm=1.0), p


def _half_master() -> tuple[Any, Any]:
    p = [np.linspace(-1.0, 1.0, 4).astype(np.float16)]
    return radam.Adam(p, master_weights=True, state_dtype="bfloat16"), p


def _adamax() -> tuple[Any, Any]:
    return radam.Adamax([np.linspace(0.0, 1.0, 3)]), None


def _radam() -> tuple[Any, Any]:
    return radam.RAdam([np.linspace(0.0, 1.0, 3, dtype=np.float32)]), None


KINDS = {
    f.__name__.strip("_"): f
    for f in (_adam_groups, _nadam_named, _momentum, _half_master, _adamax, _radam)
}


def _build(kind: str, steps: int, seed: int) -> Any:
    """An optimizer of ``kind`` after ``steps`` steps of seeded random grads."""
    opt, params = KINDS[kind]()
    if params is None:
        params = opt.param_groups[0]["params"]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step(_tree(params, lambda a: rng.standard_normal(a.shape).astype(a.dtype)))
    return opt


def _victim(kind: str) -> Any:
    """An optimizer that the checkpoints fit, in another state than theirs."""
    return _build(kind, 1, seed=7)


class Base:
    """One kind's checkpoint: the file's bytes, its meta.json and arrays, its
    state_dict, and what loading it gives."""

    def __init__(self, kind: str, folder: Path) -> None:
        source = _build(kind, 3, seed=3)
        path = folder / f"{kind}.ckpt"
        source.save(path)
        self.kind, self.data = kind, path.read_bytes()
        with zipfile.ZipFile(path) as zf:
            self.members = {i.filename: zf.read(i) for i in zf.infolist()}
        self.meta = json.loads(self.members["meta.json"])
        self.state_dict = source.state_dict()
        loaded = _victim(kind)
        loaded.load(path)
        self.loaded = fingerprint(loaded)
        assert self.loaded == fingerprint(source)
        # The zip's own records: local headers, central directory entries, end record.
        with zipfile.ZipFile(io.BytesIO(self.data)) as zf:
            self.regions = [(i.header_offset, i.header_offset + 30) for i in zf.infolist()]
            at = zf.start_dir
        while self.data[at : at + 4] == b"PK\x01\x02":
            self.regions.append((at, at + 46))
            at += 46 + sum(struct.unpack("<HHH", self.data[at + 28 : at + 34]))  # + name etc.
        self.regions.append((at, len(self.data)))


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="radam-fuzz-") as name:
        yield Path(name)


@pytest.fixture(scope="module")
def bases(folder):
    return {kind: Base(kind, folder) for kind in KINDS}


# --------------------------------------------------------------------------- strategies

SPECIAL_NUMBERS = st.sampled_from(
    [0, 1, -1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, -(10**400)]
    + [0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 1e-300, 1e300, float("nan"), float("inf"), float("-inf")]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    SPECIAL_NUMBERS,
    st.floats(),  # NaN and infinities included
    st.text(max_size=6),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (a tuple of keys) to a node below ``tree``."""
    out = []
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, (list, tuple)):
        items = list(enumerate(tree))
    else:
        return out
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _containers(tree: Any) -> list[tuple]:
    return [()] + [p for p in _paths(tree) if isinstance(_get(tree, p), (dict, list))]


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _edit(tree: Any, path: tuple, change: Callable[[Any], Any]) -> Any:
    """A copy of ``tree`` with the node at ``path`` replaced by ``change(node)``
    (the containers on the way copied, everything else shared)."""
    if not path:
        return change(tree)
    key, rest = path[0], path[1:]
    child = _edit(tree[key], rest, change)
    if isinstance(tree, dict):
        return {**tree, key: child}
    items = list(tree)
    items[key] = child
    return type(tree)(items)


def _remove(tree: Any, path: tuple) -> Any:
    def without(parent: Any) -> Any:
        key = path[-1]
        if isinstance(parent, dict):
            return {k: v for k, v in parent.items() if k != key}
        return type(parent)(v for i, v in enumerate(parent) if i != key)

    return _edit(tree, path[:-1], without)


def _add(tree: Any, path: tuple, key: Any, value: Any) -> Any:
    def extended(parent: Any) -> Any:
        if isinstance(parent, dict):
            return {**parent, key: value}
        return type(parent)([*parent, value])

    return _edit(tree, path, extended)


def _near(node: Any) -> st.SearchStrategy:
    """Values like ``node`` that are most likely to slip through: for a number,
    the special ones (NaN, infinities, huge integers, 0, -1, ...); for an array,
    arrays of other shapes and dtypes or full of NaN; for a pair, pairs of them."""
    if isinstance(node, np.ndarray):
        return arrays(node)
    if isinstance(node, (list, tuple)) and node and all(isinstance(v, float) for v in node):
        return st.tuples(*[SPECIAL_NUMBERS] * len(node)).map(type(node))
    if isinstance(node, (int, float, np.number)):
        return SPECIAL_NUMBERS
    return JSON_SCALARS


def _mutate(data: Any, tree: Any, values: st.SearchStrategy, keys: st.SearchStrategy) -> Any:
    """``tree`` after one to three random edits: a node replaced by a value like
    it or any drawn value or another node of the tree, a node removed, or an
    entry added."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        paths = _paths(tree)
        action = data.draw(st.sampled_from(["near", "replace", "swap", "remove", "add"]))
        if action == "add" or not paths:
            where = data.draw(st.sampled_from(_containers(tree)), label="into")
            tree = _add(tree, where, data.draw(keys, label="key"), data.draw(values, label="new"))
            continue
        path = data.draw(st.sampled_from(paths), label="path")
        if action in ("near", "replace"):
            like = _near(_get(tree, path)) if action == "near" else values
            value = data.draw(like, label="value")
            tree = _edit(tree, path, lambda _, v=value: v)
        elif action == "swap":
            other = _get(tree, data.draw(st.sampled_from(paths), label="from"))
            tree = _edit(tree, path, lambda _, v=other: v)
        else:
            tree = _remove(tree, path)
    return tree


# --------------------------------------------------------------------------- checkpoint bytes


@st.composite
def byte_edits(draw: Any, base: Base) -> bytes:
    """``base``'s file after one to four random byte-level edits."""
    data = bytearray(base.data)
    for _ in range(draw(st.integers(1, 4), label="edits")):
        region = draw(st.sampled_from([(0, len(data)), *base.regions]), label="region")
        start, end = min(region[0], len(data)), min(region[1], len(data))
        at = draw(st.integers(start, max(start, end - 1)), label="offset")
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "copy"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7), label="bit")
        elif kind == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64), label="length")]
        elif kind == "copy":
            source = draw(st.integers(0, max(0, len(data) - 1)), label="source")
            data[at : at + 4] = data[source : source + 4]
    return bytes(data)


def _load_file(kind: str, path: Path) -> tuple[Any, bool]:
    """Load ``path`` into a victim; check that a failure is a CheckpointError that
    changed nothing. Returns the victim and whether the load succeeded."""
    opt = _victim(kind)
    before = fingerprint(opt)
    try:
        opt.load(path)
    except CheckpointError:
        assert fingerprint(opt) == before, "a failed load changed the optimizer"
        return opt, False
    return opt, True


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_bytes(bases, folder, data):
    base = bases[data.draw(st.sampled_from(sorted(bases)), label="kind")]
    mutated = data.draw(byte_edits(base), label="file")
    path = folder / "mutated.ckpt"
    path.write_bytes(mutated)
    try:
        checkpoint.read(path)
    except CheckpointError:
        pass
    opt, loaded = _load_file(base.kind, path)
    if loaded:  # only a change to bytes that nothing reads: the same checkpoint
        assert fingerprint(opt) == base.loaded


# --------------------------------------------------------------------------- meta.json


def _archive(members: dict[str, bytes], meta: Any) -> bytes:
    """A zip of ``members`` with ``meta`` as meta.json (checksums recomputed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, json.dumps(meta).encode() if name == "meta.json" else data)
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_meta(bases, folder, data):
    base = bases[data.draw(st.sampled_from(sorted(bases)), label="kind")]
    meta = _mutate(data, base.meta, JSON, st.text(max_size=8))
    path = folder / "meta.ckpt"
    path.write_bytes(_archive(base.members, meta))
    try:
        checkpoint.read(path)
    except CheckpointError:
        pass
    opt, loaded = _load_file(base.kind, path)
    if loaded:  # whatever was accepted saves and loads back the same
        again = folder / "again.ckpt"
        opt.save(again)
        other, reloaded = _load_file(base.kind, again)
        assert reloaded and fingerprint(other) == fingerprint(opt)


# --------------------------------------------------------------------------- state_dict

DTYPES = [
    np.float32,
    np.float64,
    np.float16,
    ml_dtypes.bfloat16,
    np.int64,
    np.int8,
    np.uint64,
    np.bool_,
    np.complex64,
    np.object_,
]


@st.composite
def arrays(draw: Any, like: Any) -> np.ndarray:
    """An array of ``like``'s shape or another, of any dtype, holding ``like``'s
    values, NaN, infinity, zeros or huge values."""
    shape = getattr(like, "shape", ())
    shape = draw(
        st.sampled_from(
            [shape, (), (0,), (*shape, 1), shape[::-1], tuple(n + 1 for n in shape) or (2,)]
        ),
        label="shape",
    )
    dtype = np.dtype(draw(st.sampled_from(DTYPES), label="dtype"))
    fill = draw(st.sampled_from(["like", "nan", "inf", "-1", "0", "huge"]), label="fill")
    value = {"like": 0.5, "nan": np.nan, "inf": np.inf, "-1": -1.0, "0": 0.0, "huge": 1e300}[fill]
    if fill == "like" and isinstance(like, np.ndarray) and like.shape == shape:
        value = like
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # casts that lose the imaginary part or overflow
        return np.broadcast_to(np.asarray(value), shape).astype(dtype)


def _sd_values(base: Base) -> st.SearchStrategy:
    """Values to put in a state_dict: JSON-like values, tuples, numpy scalars, and
    arrays shaped after the state's."""
    like = next(
        (v for e in base.state_dict["state"].values() for v in e.values() if hasattr(v, "shape")),
        np.zeros(3),
    )
    return st.one_of(
        JSON,
        st.tuples(JSON_SCALARS, JSON_SCALARS),
        st.sampled_from(
            [np.float64(np.nan), np.float32(np.inf), np.int64(-1), np.uint64(2**64 - 1)]
        ),
        arrays(like),
    )


def _normal(value: Any) -> Any:
    """Tuples and lists alike, for comparing options."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value


def _assert_holds(opt: Any, given_sd: Any) -> None:
    """After a successful load_state_dict: the optimizer holds exactly the arrays,
    step and options given."""
    sd = opt.state_dict()
    for i, entry in given_sd["state"].items():
        for name, value in sd["state"][i].items():
            if isinstance(value, np.ndarray):
                given = entry[name]
                assert value.dtype == given.dtype and value.tobytes() == given.tobytes(), name
        assert opt.step_count == int(np.asarray(entry["step"]))
    for ours, group in zip(sd["param_groups"], given_sd["param_groups"]):
        for key, value in group.items():
            if key not in ("params", "param_names"):
                assert _normal(ours[key]) == _normal(value), key


@FUZZ
@given(data=st.data())
def test_fuzz_load_state_dict(bases, data):
    base = bases[data.draw(st.sampled_from(sorted(bases)), label="kind")]
    keys = st.one_of(st.text(max_size=8), st.integers(-2, 5), st.none())
    sd = _mutate(data, base.state_dict, _sd_values(base), keys)
    given_before = exact(sd)
    opt = _victim(base.kind)
    before = fingerprint(opt)
    try:
        opt.load_state_dict(sd)
    except (ValueError, TypeError):
        assert fingerprint(opt) == before, "a failed load_state_dict changed the optimizer"
    else:
        _assert_holds(opt, sd)
    assert exact(sd) == given_before, "load_state_dict changed its argument"


def _set_group(i: int, key: str, value: Any) -> Callable[[dict], None]:
    return lambda sd: sd["param_groups"][i].__setitem__(key, value)


def _set_state(i: int, key: str, value: Any) -> Callable[[dict], None]:
    return lambda sd: sd["state"][i].__setitem__(key, value)


@pytest.mark.parametrize(
    "kind, change, exc, names",
    [
        ("adamax", lambda sd: sd["param_groups"].__setitem__(0, 0.5), TypeError, ["[0]", "dict"]),
        ("adamax", _set_state(0, "step", float("inf")), ValueError, ["['step']", "inf"]),
        ("nadam_named", _set_state(1, "mu_product", 10**400), ValueError, ["mu_product"]),
        ("nadam_named", _set_state(0, "mu_product", float("nan")), ValueError, ["mu_product"]),
        ("adam_groups", _set_group(1, "lr", 10**400), ValueError, ["lr", "1329 bits"]),
        ("radam", _set_group(0, "eps", -(10**400)), ValueError, ["eps", "range"]),
        ("radam", _set_group(0, "betas", {0: 0.9, 1: 0.99}), TypeError, ["betas", "pair"]),
    ],
    ids=["group-not-dict", "step-inf", "mu-huge", "mu-nan", "lr-huge", "eps-huge", "betas-dict"],
)
def test_state_dicts_the_fuzz_found(bases, kind, change, exc, names):
    """What the state_dict fuzz found on the first run: each raised a raw
    AttributeError, OverflowError or KeyError, or (NaN mu_product) was accepted."""
    sd = bases[kind].state_dict
    sd = {
        "state": {i: dict(e) for i, e in sd["state"].items()},
        "param_groups": [dict(g) for g in sd["param_groups"]],
    }
    change(sd)
    opt = _victim(kind)
    before = fingerprint(opt)
    with pytest.raises(exc) as raised:
        opt.load_state_dict(sd)
    for name in names:
        assert name in str(raised.value)
    assert fingerprint(opt) == before
