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

Saving is atomic: the archive is written to a temporary file in the same
folder (``.<name>.<random>.tmp``), flushed and fsync'ed, moved over ``path``
with ``os.replace`` and the folder fsync'ed, so a crash or a kill at any
moment leaves at ``path`` either the previous checkpoint or the new one. A
kill mid-save can leave the temporary file behind (never at ``path``); it is
safe to delete. A new file gets mode 0600 (the temporary file's); saving over
an existing checkpoint keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import numbers
import os
import stat
import tempfile
import zipfile
from typing import Any

import numpy as np

from . import _core
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


class CheckpointError(ValueError):
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
    """``opt.state_dict()`` and copies of the params, from the same step (retried
    if another thread stepped in between)."""
    while True:
        sd = opt.state_dict()
        step = _step_of(sd)
        with opt._lock:
            if opt.step_count != step:
                continue
            params = [t.array.copy() for t in opt._layout.tensors] if include_params else None
        return sd, params


def _step_of(sd: dict[str, Any]) -> int:
    for entry in sd["state"].values():
        return int(entry["step"])
    return 0


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
        "step": _step_of(sd),
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
    if isinstance(value, np.generic):
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
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"path {path!r} is a directory; give a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the folder of path {path!r} does not exist")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with open(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, data in [(META, meta), *members]:
                    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                    info.compress_type = zipfile.ZIP_STORED
                    zf.writestr(info, data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened (nor need fsync)
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- load


def load(opt: Any, path: str | os.PathLike, *, restore_params: bool = True) -> None:
    """Restore ``opt`` from the checkpoint at ``path``: options, step, state,
    and (if the file has them and ``restore_params``) the params, copied into
    the optimizer's own arrays. Everything is read and checked first; on any
    error nothing changes."""
    if not isinstance(restore_params, bool):
        raise TypeError(f"restore_params must be True or False, got {restore_params!r}")
    path = _path(path)
    meta, arrays = read(path)
    sd, params = _decode(opt, meta, arrays, path)
    try:
        opt.load_state_dict(sd)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path!r} does not fit this optimizer: {err}") from err
    if params is not None and restore_params:
        with opt._lock:
            for t, value in zip(opt._layout.tensors, params):
                np.copyto(t.array, value)
            if opt._engine is not None and opt.device != "cpu":
                # A device engine holds its own copy of the params: upload them.
                opt._engine = opt._build(opt.state)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checkpoint at ``path``, checked: its metadata and its arrays by member
    name. Raises :class:`CheckpointError` for anything but a whole, intact
    radam checkpoint of a format version this radam reads."""
    path = _path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}: the file does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a directory, not a radam checkpoint")
    bad = f"{path!r} is not a readable radam checkpoint"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if META not in names:
                raise CheckpointError(f"{bad}: it has no {META}")
            meta = json.loads(zf.read(META).decode("utf-8"))
            _check_header(meta, bad)
            arrays = {}
            for record in _array_records(meta):
                arrays[record["member"]] = _read_array(zf, names, record, bad)
    except CheckpointError:
        raise
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{bad} (truncated or corrupted?): {err}") from err
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        UnicodeDecodeError,
    ) as err:
        raise CheckpointError(f"{bad} (corrupted?): {type(err).__name__}: {err}") from err
    return meta, arrays


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


def _array_records(meta: dict[str, Any]) -> list[dict[str, Any]]:
    records = []
    for t in meta["tensors"]:
        if t["param"] is not None:
            records.append(t["param"])
        records.extend(t["state"].values())
    return records


def _read_array(zf: zipfile.ZipFile, names: set[str], record: dict[str, Any], bad: str) -> Any:
    member = record["member"]
    if member not in names:
        raise CheckpointError(f"{bad}: member {member!r} is missing")
    data = zf.read(member)  # checks the zip's CRC-32
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{bad}: member {member!r} fails its SHA-256 check (corrupted)")
    array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    dtype = _dtype(record["dtype"], bad)
    if "stored_as" in record:
        if array.dtype.name != record["stored_as"] or array.dtype.itemsize != dtype.itemsize:
            raise CheckpointError(f"{bad}: member {member!r} is not a raw view of {dtype}")
        array = array.view(dtype)
    if array.dtype != dtype or list(array.shape) != list(record["shape"]):
        raise CheckpointError(
            f"{bad}: member {member!r} holds {array.dtype} {array.shape}, its record says "
            f"{record['dtype']} {tuple(record['shape'])}"
        )
    return array


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


def _decode(
    opt: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str
) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The ``state_dict`` the checkpoint holds, and its params, after checking
    that they fit ``opt`` (group count and sizes, param names, shapes, dtypes)."""
    misfit = f"checkpoint {path!r} does not fit this optimizer"
    try:
        groups, tensors = meta["param_groups"], meta["tensors"]
        live = opt._layout.tensors
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
            options["lr"] = _decode_schedulable(
                g["options"]["lr"], ours["lr"], f"{where}['lr']", misfit
            )
            options["betas"] = _decode_betas(g["options"]["betas"], ours["betas"], where, misfit)
            saved_groups.append({**options, "params": list(g["params"])})
        state: dict[int, dict[str, Any]] = {}
        params: list[np.ndarray] | None = []
        for i, (rec, t) in enumerate(zip(tensors, live)):
            if list(rec["shape"]) != list(t.array.shape) or rec["dtype"] != t.array.dtype.name:
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
            if rec["param"] is None:
                params = None
            elif params is not None:
                params.append(arrays[rec["param"]["member"]])
            entry = {n: arrays[r["member"]] for n, r in rec["state"].items()}
            entry.update(rec["scalars"])
            if entry:
                state[i] = entry
    except CheckpointError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise CheckpointError(
            f"checkpoint {path!r} has malformed metadata: {type(err).__name__}: {err}"
        ) from err
    return {"state": state, "param_groups": saved_groups}, params


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
    return tuple(
        _decode_schedulable(s, live[i], f"{where}['betas'][{i}]", misfit)
        for i, s in enumerate(saved)
    )


def _decode_schedulable(saved: Any, live: Any, what: str, misfit: str) -> Any:
    """An option that may be a schedule (lr, betas[0]) as saved: a number stays a
    number; a built-in schedule is rebuilt from its description (the live
    object is kept when equal); a custom callable, which the file cannot hold,
    must be the live group's value there. ``what`` names it, e.g.
    ``param_groups[0]['lr']``."""
    if isinstance(saved, numbers.Real) and not isinstance(saved, bool):
        if not math.isfinite(saved):
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
