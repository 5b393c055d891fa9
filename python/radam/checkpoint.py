"""Checkpoints: an optimizer's options, step, state (and params) in one file.

``opt.save(path)`` / ``opt.load(path)`` call :func:`save` / :func:`load`.

Format (version 1). A zip archive (stored, not compressed) holding:

- ``meta.json``, written first: ``{"format": "radam-checkpoint",
  "format_version": 1, "radam_version", "optimizer" (class name), "step",
  "param_groups": [{"options": {...}, "params": [flat indices],
  "param_names"?: [...]}], "tensors": [{"label", "group", "shape", "dtype",
  "param": array record or null, "state": {name: array record},
  "scalars": {name: number}}]}``. An array record is ``{"member", "shape",
  "dtype", "sha256"}`` plus ``"stored_as"`` when the member holds a raw view
  (``bfloat16`` and the other ``ml_dtypes`` types are stored as ``uint16``
  etc., with the dtype name beside them). A group's ``lr`` (and each of its
  ``betas``) is a number, or ``{"schedule": {"name", "args"}}`` for a built-in
  schedule, or ``{"callable": repr}`` for any other callable (which a file
  cannot hold).
- one ``.npy`` member per array (``params/<i>.npy``, ``state/<i>/<name>.npy``),
  read back with ``allow_pickle=False``.

Integrity: the zip's CRC-32 of every member (checked on read), and a SHA-256
of every array member recorded in ``meta.json``. Nothing is unpickled, so a
checkpoint from elsewhere cannot run code. A reader refuses a
``format_version`` newer than its own.

Reading trusts nothing in the file: any error of the decoders (zipfile, zlib,
json, numpy) is a :class:`CheckpointError`, as is a malformed ``meta.json``.
Sizes are checked before anything is read: members must be stored, not
compressed (so there is nothing to inflate), and fit in the file; ``load``
checks every array's shape against the optimizer's params, and each member's
size and ``.npy`` header against its record, before reading it.

Saving is atomic: the archive is written to a temporary file in the same
folder (``.<name>.radam-<random>.tmp``), flushed and fsync'ed, moved over
``path`` with ``os.replace`` and the folder fsync'ed, so a crash or a kill at
any moment leaves at ``path`` either the previous checkpoint or the new one.
The saving process holds an exclusive ``flock`` on its temporary file until
it is in place; a kill mid-save leaves the file behind, and the next save to
the same ``path`` removes every such temporary whose lock it can take, never
one that a live save is writing. (Windows has no ``flock``: there leftovers
stay, and are safe to delete.) A new file gets mode 0600 (the temporary
file's); saving over an existing checkpoint keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import numbers
import os
import zipfile
from typing import Any, BinaryIO

import numpy as np

from . import _atomic_file, _core, _state_dict
from ._errors import Error
from ._formats import array_shape
from ._options import BY_NAME, SCHEDULABLE
from .schedules import Schedule, from_config

FORMAT = "radam-checkpoint"
FORMAT_VERSION = 1
META = "meta.json"
# dtypes that NumPy cannot name itself: stored as raw unsigned views.
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")
_NUMPY_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so equal checkpoints are equal files


class CheckpointError(Error, ValueError):
    """A file that is not a readable radam checkpoint, or one that does not
    fit the optimizer it is loaded into. Nothing was changed."""


# --------------------------------------------------------------------------- save


def save(opt: Any, path: str | os.PathLike, *, include_params: bool = True) -> None:
    """Write ``opt``'s checkpoint to ``path`` atomically (see the module doc)."""
    if not isinstance(include_params, bool):
        raise TypeError(f"include_params must be True or False, got {include_params!r}")
    path = _path(path)
    sd, params = _snapshot(opt, include_params)
    meta, members = _encode(opt, sd, params)
    _atomic_write(path, json.dumps(meta, indent=1).encode("utf-8"), members)


def _path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _snapshot(opt: Any, include_params: bool) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """``opt.state_dict()`` (refusing what load would refuse) and copies of the
    params, from the same step (under the optimizer's lock, which is reentrant, so
    no other thread steps between)."""
    with opt._lock:
        sd = opt._saved_state("save")
        params = [t.array.copy() for t in opt._layout.tensors] if include_params else None
        sd["step"] = opt.step_count
        return sd, params


def _encode(
    opt: Any, sd: dict[str, Any], params: list[np.ndarray] | None
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    members: list[tuple[str, bytes]] = []
    groups = []
    for i, g in enumerate(sd["param_groups"]):
        where = f"param_groups[{i}]"
        options = {
            k: _encode_option(v, f"{where}[{k!r}]")
            for k, v in g.items()
            if k not in ("params", "param_names")
        }
        entry: dict[str, Any] = {"options": options, "params": list(g["params"])}
        if "param_names" in g:
            entry["param_names"] = [_encode_name(n) for n in g["param_names"]]
        groups.append(entry)
    tensors = []
    for i, t in enumerate(opt._layout.tensors):
        record: dict[str, Any] = {
            "label": t.label,
            "group": t.group,
            "shape": list(t.array.shape),
            "dtype": t.array.dtype.name,
            "param": None,
            "state": {},
            "scalars": {},
        }
        if params is not None:
            record["param"] = _add_array(members, f"params/{i}.npy", params[i])
        for name, value in sd["state"].get(i, {}).items():
            if isinstance(value, np.ndarray):
                record["state"][name] = _add_array(members, f"state/{i}/{name}.npy", value)
            else:
                record["scalars"][name] = _encode_number(value, f"state[{i}][{name!r}]")
        tensors.append(record)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "radam_version": _core.__version__,
        "optimizer": type(opt).__name__,
        "step": sd.get("step", opt.step_count),  # _snapshot's, taken with the state
        "param_groups": groups,
        "tensors": tensors,
    }
    return meta, members


def _add_array(members: list[tuple[str, bytes]], member: str, array: np.ndarray) -> dict[str, Any]:
    record: dict[str, Any] = {
        "member": member,
        "shape": list(array.shape),
        "dtype": array.dtype.name,
    }
    stored = np.asarray(array, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    if array.dtype.name not in _NUMPY_DTYPES:
        if array.dtype.name not in _ML_DTYPES:
            raise TypeError(f"cannot store an array of dtype {array.dtype} ({member})")
        stored = stored.view(f"<u{array.dtype.itemsize}")
        record["stored_as"] = stored.dtype.name
    buf = io.BytesIO()
    np.lib.format.write_array(buf, stored, allow_pickle=False)
    data = buf.getvalue()
    record["sha256"] = hashlib.sha256(data).hexdigest()
    members.append((member, data))
    return record


def _encode_number(value: Any, what: str) -> Any:
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        value = value.item()
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    raise TypeError(f"cannot store {what} = {value!r} in a checkpoint")


def _encode_option(value: Any, what: str) -> Any:
    if callable(value) and not isinstance(value, type):
        if isinstance(value, Schedule) and type(value).__module__ == Schedule.__module__:
            return {"schedule": value.config()}
        return {"callable": repr(value)}
    if isinstance(value, (str, np.dtype)) or (
        isinstance(value, type) and issubclass(value, np.generic)
    ):
        if not isinstance(value, str):
            return {"dtype": np.dtype(value).name}
        return value
    if isinstance(value, (list, tuple)):
        return [_encode_option(v, f"{what}[{i}]") for i, v in enumerate(value)]
    return _encode_number(value, what)


def _encode_name(name: Any) -> Any:
    if isinstance(name, (str, int)) and not isinstance(name, bool):
        return name
    if isinstance(name, tuple):
        return {"tuple": [_encode_name(n) for n in name]}
    return {"repr": repr(name)}


def _atomic_write(path: str, meta: bytes, members: list[tuple[str, bytes]]) -> None:
    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for member, data in [(META, meta), *members]:
                info = zipfile.ZipInfo(member, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, data)

    _atomic_file.replace(path, write)


# --------------------------------------------------------------------------- load


def load(opt: Any, path: str | os.PathLike, *, restore_params: bool = True) -> None:
    """Restore ``opt`` from the checkpoint at ``path``: options, step, state,
    and (if the file has them and ``restore_params``) the params, copied into
    the optimizer's own arrays. The metadata is checked against ``opt`` before
    any array is read, every array before anything is applied, and what is
    applied cannot fail halfway: on any error nothing changes."""
    if not isinstance(restore_params, bool):
        raise TypeError(f"restore_params must be True or False, got {restore_params!r}")
    path = _path(path)
    sd, params = read_state(opt, path)
    with opt._lock:
        loaded = check_state(opt, path, sd)
        try:
            opt._apply_state_dict(loaded, params if restore_params else None)
        except ValueError as err:  # a param that cannot take the saved values (read-only)
            raise CheckpointError(f"cannot restore checkpoint {path!r}: {err}") from err


def read_state(opt: Any, path: str | os.PathLike) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The checkpoint at ``path`` as a state dict for ``opt`` and its params (None
    when the file has none), the metadata checked against ``opt`` before any
    array is read. Changes nothing (:func:`load` = this, :func:`check_state`,
    then ``opt._apply_state_dict``)."""
    path = _path(path)
    misfit = f"checkpoint {path!r} does not fit this optimizer"
    with _Archive(path) as archive:
        meta = archive.meta()
        groups = _fit(opt, meta, misfit)
        arrays = archive.arrays(meta)
    return _saved_state_dict(meta, groups, arrays)


def check_state(opt: Any, path: str, sd: dict[str, Any]) -> _state_dict.Loaded:
    """:func:`radam._state_dict.check` of a :func:`read_state` dict, as
    :class:`CheckpointError`. Under ``opt``'s lock."""
    opt._refuse_reentry("load")
    try:
        loaded = _state_dict.check(opt, sd, "load")
    except (ValueError, TypeError, OverflowError) as err:
        raise CheckpointError(f"checkpoint {path!r} does not fit this optimizer: {err}") from err
    # The optimizer's own count (its schedules' position): the file's, which is at
    # least its tensors' (an older file's is theirs).
    step = sd.get("step")
    if isinstance(step, int) and not isinstance(step, bool) and step > loaded.step:
        loaded = loaded._replace(step=step)
    return loaded


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checkpoint at ``path``, checked: its metadata and its arrays by member
    name. Raises :class:`CheckpointError` for anything but a whole, intact
    radam checkpoint of a format version this radam reads."""
    with _Archive(_path(path)) as archive:
        meta = archive.meta()
        return meta, archive.arrays(meta)


# An .npy header (magic, length, dict, padding) that radam writes is 128 bytes;
# numpy reads at most 10,000 by default.
_NPY_HEADER_MAX = 10_000 + 16


class _Archive:
    """A checkpoint file open for reading. Whatever the decoders of its bytes
    (zipfile, zlib, json, numpy) raise becomes :class:`CheckpointError`; the
    catch is around those calls only, never around radam's own code. Sizes are
    checked before anything is read: every member must be stored (so there is
    nothing to decompress) and fit in the file, and an array member must have
    the size its record declares."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path!r}: the file does not exist")
        if os.path.isdir(path):
            raise CheckpointError(f"{path!r} is a directory, not a radam checkpoint")
        self.bad = f"{path!r} is not a readable radam checkpoint"
        with self._decoding("opening it", cause=""):
            self._file = open(path, "rb")  # closed by __exit__
        try:
            with self._decoding("reading its zip directory"):
                self._zip = zipfile.ZipFile(self._file)
            self._members = self._check_members(os.fstat(self._file.fileno()).st_size)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._zip.close()
        self._file.close()

    @contextlib.contextmanager
    def _decoding(self, doing: str, cause: str = " (truncated or corrupted?)") -> Any:
        try:
            yield
        except CheckpointError:
            raise
        except Exception as err:  # untrusted bytes: any decoder error is the file's
            raise CheckpointError(
                f"{self.bad}{cause}: {doing}: {type(err).__name__}: {err}"
            ) from err

    def _check_members(self, file_size: int) -> dict[str, zipfile.ZipInfo]:
        members = {}
        for info in self._zip.infolist():
            name = info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(
                    f"{self.bad}: member {name!r} is compressed (method {info.compress_type}); "
                    "radam stores its members uncompressed"
                )
            if info.file_size != info.compress_size or info.file_size > file_size:
                raise CheckpointError(
                    f"{self.bad}: member {name!r} declares {info.file_size} bytes "
                    f"({info.compress_size} stored) in a file of {file_size} (corrupted?)"
                )
            members[name] = info
        return members

    def _info(self, name: str) -> zipfile.ZipInfo:
        if name not in self._members:
            what = META if name == META else f"member {name!r} (missing)"
            raise CheckpointError(f"{self.bad}: it has no {what}")
        return self._members[name]

    def _read(self, name: str) -> bytes:
        info = self._info(name)
        with self._decoding(f"reading {name}"):
            return self._zip.read(info)  # checks the zip's CRC-32

    def meta(self) -> dict[str, Any]:
        """``meta.json``, with the structure (every field's type) checked."""
        data = self._read(META)
        with self._decoding(f"decoding {META}"):
            meta = json.loads(data.decode("utf-8"))
        _check_meta(meta, self.bad)
        return meta

    def arrays(self, meta: dict[str, Any]) -> dict[str, np.ndarray]:
        """Every array of ``meta``'s records, by member name."""
        return {r["member"]: self._array(r) for r in _array_records(meta)}

    def _array(self, record: dict[str, Any]) -> np.ndarray:
        member, shape = record["member"], tuple(record["shape"])
        dtype, stored = _record_dtypes(record, self.bad)
        nbytes = math.prod(shape) * stored.itemsize
        size = self._info(member).file_size
        if not nbytes < size <= nbytes + _NPY_HEADER_MAX:
            raise CheckpointError(
                f"{self.bad}: member {member!r} has {size} bytes; its record, "
                f"{dtype} of shape {shape}, needs {nbytes} and a header"
            )
        data = self._read(member)
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise CheckpointError(
                f"{self.bad}: member {member!r} fails its SHA-256 check (corrupted)"
            )
        npy = io.BytesIO(data)
        with self._decoding(f"decoding {member}"):
            version = np.lib.format.read_magic(npy)
            if version != (1, 0):
                raise CheckpointError(f"{self.bad}: member {member!r} is .npy version {version}")
            header = np.lib.format.read_array_header_1_0(npy)
        if header != (shape, False, stored) or len(data) - npy.tell() != nbytes:
            raise CheckpointError(
                f"{self.bad}: member {member!r} holds {header[2]} {header[0]} in "
                f"{len(data) - npy.tell()} bytes, its record says {record['dtype']} {shape}"
            )
        array = np.frombuffer(data, stored, offset=npy.tell()).reshape(shape).copy()
        return array.view(dtype) if stored != dtype else array


def _check_header(meta: Any, bad: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{bad}: {META} does not say format {FORMAT!r}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{bad}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{bad} by this radam: it has format version {version}, written by radam "
            f"{meta.get('radam_version', '?')}; this radam ({_core.__version__}) reads "
            f"format versions up to {FORMAT_VERSION}. Upgrade radam to load it."
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(_is_count(n) for n in value)


def _is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("member"), str)
        and _is_shape(value.get("shape"))
        and isinstance(value.get("dtype"), str)
        and isinstance(value.get("sha256"), str)
        and isinstance(value.get("stored_as", ""), str)
    )


def _check_meta(meta: Any, bad: str) -> None:
    """The header, and the type of every field that loading reads (the values of
    options and scalars are checked by ``load_state_dict``), so that a malformed
    file is a CheckpointError that names the field."""
    _check_header(meta, bad)

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{bad}: malformed {META}: {what}")

    groups, tensors = meta.get("param_groups"), meta.get("tensors")
    need(isinstance(groups, list), "'param_groups' is not a list")
    for i, g in enumerate(groups):
        need(
            isinstance(g, dict)
            and isinstance(g.get("options"), dict)
            and _shallow(g["options"])
            and isinstance(g.get("params"), list)
            and isinstance(g.get("param_names", []), list),
            f"param_groups[{i}] is not {{'options': {{...}}, 'params': [...]}}",
        )
    need(isinstance(tensors, list), "'tensors' is not a list")
    for i, t in enumerate(tensors):
        where = f"tensors[{i}]"
        need(isinstance(t, dict), f"{where} is not an object")
        for key, ok in (
            ("label", isinstance(t.get("label"), str)),
            ("group", _is_count(t.get("group"))),
            ("shape", _is_shape(t.get("shape"))),
            ("dtype", isinstance(t.get("dtype"), str)),
            ("param", "param" in t and (t["param"] is None or _is_record(t["param"]))),
            (
                "state",
                isinstance(t.get("state"), dict) and all(map(_is_record, t["state"].values())),
            ),
            ("scalars", isinstance(t.get("scalars"), dict) and _shallow(t["scalars"])),
        ):
            need(ok, f"{where}[{key!r}] is missing or malformed")


def _shallow(value: Any, depth: int = 8) -> bool:
    """Whether a JSON value nests at most ``depth`` levels (options use three; a
    deeper one would only exhaust the stack of the code that decodes it)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return depth > 0 and all(_shallow(v, depth - 1) for v in value)
    return True


def _array_records(meta: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for t in meta["tensors"]:
        if t["param"] is not None:
            records.append(t["param"])
        records.extend(t["state"].values())
    return records


def _dtype(name: Any, bad: str) -> np.dtype:
    if name in _NUMPY_DTYPES:
        return np.dtype(name)
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError as err:  # pragma: no cover - ml_dtypes is a dependency
            raise CheckpointError(
                f"reading dtype {name} needs ml_dtypes (pip install ml_dtypes)"
            ) from err
        return np.dtype(getattr(ml_dtypes, name))
    raise CheckpointError(f"{bad}: unknown dtype {name!r}")


def _record_dtypes(record: dict[str, Any], bad: str) -> tuple[np.dtype, np.dtype]:
    """An array record's dtype, and the dtype its member stores (a raw unsigned
    view for the ``ml_dtypes`` types, which NumPy cannot name)."""
    dtype = _dtype(record["dtype"], bad)
    stored = np.dtype(f"<u{dtype.itemsize}") if record["dtype"] in _ML_DTYPES else dtype
    if record.get("stored_as") != (stored.name if stored != dtype else None):
        raise CheckpointError(
            f"{bad}: member {record['member']!r} of dtype {dtype} cannot be stored as "
            f"{record.get('stored_as')!r}"
        )
    return dtype, stored


def _fit(opt: Any, meta: dict[str, Any], misfit: str) -> list[dict[str, Any]]:
    """The checkpoint's param groups (options decoded), after checking that its
    metadata fits ``opt``: group count and sizes, param names, and the shape and
    dtype of each param, and the shape of every array, so that nothing is read
    that the optimizer could not take."""
    groups, tensors, live = meta["param_groups"], meta["tensors"], opt._layout.tensors
    if len(groups) != len(opt.param_groups):
        raise CheckpointError(
            f"{misfit}: it has {len(groups)} param groups, this optimizer has "
            f"{len(opt.param_groups)}"
        )
    if len(tensors) != len(live):
        raise CheckpointError(
            f"{misfit}: it has {len(tensors)} params, this optimizer has {len(live)}"
        )
    saved_groups = []
    for i, (g, ours) in enumerate(zip(groups, opt.param_groups)):
        where = f"param_groups[{i}]"
        if len(g["params"]) != len(ours["params"]):
            raise CheckpointError(
                f"{misfit}: its {where} has {len(g['params'])} params, this optimizer's "
                f"has {len(ours['params'])}"
            )
        if "param_names" in g and "param_names" in ours:
            if g["param_names"] != [_encode_name(n) for n in ours["param_names"]]:
                raise CheckpointError(
                    f"{misfit}: its {where}['param_names'] {g['param_names']} differ from "
                    f"this optimizer's {ours['param_names']}"
                )
        options = {k: _decode_option(v) for k, v in g["options"].items()}
        for name in SCHEDULABLE:  # lr, and betas (whose beta1 may be a schedule)
            if name in options:
                value, current = g["options"][name], ours.get(name)
                if BY_NAME[name].kind == "betas":
                    options[name] = _decode_betas(value, current, where, misfit)
                else:
                    what = f"{where}[{name!r}]"
                    options[name] = _decode_schedulable(value, current, what, misfit)
        saved_groups.append({**options, "params": list(g["params"])})
    for rec, t in zip(tensors, live):
        if rec["shape"] != list(t.array.shape) or rec["dtype"] != t.array.dtype.name:
            raise CheckpointError(
                f"{misfit}: it has params{rec['label']} of shape {tuple(rec['shape'])} and "
                f"dtype {rec['dtype']}; this optimizer's params{t.label} has shape "
                f"{t.array.shape} and dtype {t.array.dtype}"
            )
        if rec["group"] != t.group:
            raise CheckpointError(
                f"{misfit}: params{rec['label']} is in group {rec['group']}, "
                f"params{t.label} in group {t.group}"
            )
        param = [] if rec["param"] is None else [("the param", rec["param"], rec["shape"])]
        # Each state array's shape is its format's (an 8-bit buffer's absmax has one
        # value per block).
        state = [(f"state {n!r}", r, array_shape(n, rec["shape"])) for n, r in rec["state"].items()]
        for what, r, shape in param + state:
            if r["shape"] != shape or (what == "the param" and r["dtype"] != rec["dtype"]):
                raise CheckpointError(
                    f"{misfit}: the {what} of params{t.label} in it has shape "
                    f"{tuple(r['shape'])} and dtype {r['dtype']}, this optimizer's has "
                    f"shape {tuple(shape)} (its param has shape {t.array.shape} and dtype "
                    f"{t.array.dtype})"
                )
    return saved_groups


def _saved_state_dict(
    meta: dict[str, Any], groups: list[dict[str, Any]], arrays: dict[str, np.ndarray]
) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The ``state_dict`` a checked checkpoint holds, and its params (None when
    the file has not all of them)."""
    state: dict[int, dict[str, Any]] = {}
    params: list[np.ndarray] | None = []
    for i, rec in enumerate(meta["tensors"]):
        if rec["param"] is None:
            params = None
        elif params is not None:
            params.append(arrays[rec["param"]["member"]])
        entry = {n: arrays[r["member"]] for n, r in rec["state"].items()}
        entry.update(rec["scalars"])
        if entry:
            state[i] = entry
    return {"state": state, "param_groups": groups, "step": meta.get("step")}, params


def _decode_option(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode_option(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"dtype"}:
            return _dtype(value["dtype"], "a checkpoint option")
        return value  # a schedule in lr or betas, decoded by _decode_schedulable
    return value


def _decode_betas(saved: Any, live: Any, where: str, misfit: str) -> Any:
    """A group's betas as saved: a pair, each decoded as :func:`_decode_schedulable`
    (betas[0] may be a schedule)."""
    if not isinstance(saved, list) or len(saved) != 2:
        raise CheckpointError(f"{misfit}: its {where}['betas'] is {saved!r}, not a pair")
    # This optimizer's betas, which may have been set to anything since a step refused them.
    pair = live if isinstance(live, (tuple, list)) and len(live) == 2 else (None, None)
    return tuple(
        _decode_schedulable(s, pair[i], f"{where}['betas'][{i}]", misfit)
        for i, s in enumerate(saved)
    )


def _decode_schedulable(saved: Any, live: Any, what: str, misfit: str) -> Any:
    """An option that may be a schedule (lr, betas[0]) as saved: a number stays a
    number; a built-in schedule is rebuilt from its description (the live
    object is kept when equal); a custom callable, which the file cannot hold,
    must be the live group's value there. ``what`` names it, e.g.
    ``param_groups[0]['lr']``."""
    if isinstance(saved, numbers.Real) and not isinstance(saved, bool):
        if isinstance(saved, float) and not math.isfinite(saved):
            raise CheckpointError(f"{misfit}: its {what} is {saved!r}")
        return saved
    if isinstance(saved, dict) and set(saved) == {"schedule"}:
        try:
            schedule = from_config(saved["schedule"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{misfit}: its {what} schedule: {err}") from err
        return live if live == schedule else schedule
    if isinstance(saved, dict) and set(saved) == {"callable"}:
        if callable(live) and not isinstance(live, Schedule):
            return live
        raise CheckpointError(
            f"{misfit}: its {what} was a custom callable ({saved['callable']}), which a "
            "checkpoint cannot hold; build the optimizer with that callable there, then load"
        )
    raise CheckpointError(f"{misfit}: its {what} is {saved!r}")
