"""PuzzleLib's ``Adam`` optimizer API, over NumPy arrays.

    opt = Adam(alpha=1e-3)
    opt.setupOn(net, useGlobalState=True)
    for batch in batches:
        opt.zeroGradParams()
        ...                      # fill net.grads with the NEGATIVE loss gradient
        opt.update()

A net is any object with ``params`` and ``grads`` attributes: dicts name ->
float32/float64 NumPy array, with the same keys, shapes and dtypes.

**Sign convention.** PuzzleLib's gradients hold the NEGATIVE gradient of the
loss (its cost functions return ``target - prediction``), and its update adds:
``param += lr_t * m / (sqrt(v) + epsilon)``. This layer keeps that convention:
put ``-dLoss/dparam`` in ``net.grads``. (Underneath it is
``radam.Adam(efficient_form=True, maximize=True)``.)

**epsilon defaults to 1e-8**, as PuzzleLib's code (its signature and kernel)
does; PuzzleLib's documentation table says 1e-6, which its code does not use.

Per update, with ``t`` incremented first (the paper's efficient form: epsilon
outside the uncorrected root, the corrections folded into the step size)::

    lr_t = alpha * sqrt(1 - beta2**t) / (1 - beta1**t)      # also in opt.learnRate
    m += (1 - beta1) * (g - m)
    v += (1 - beta2) * (g*g - v)
    param += lr_t * m / (sqrt(v) + epsilon)

**nodeinfo** (PuzzleLib's multi-GPU setup) is an mpi4py communicator here
(``MPI.COMM_WORLD`` for every rank of ``mpiexec``; ``pip install "radam[mpi]"``):
``setupOn`` broadcasts the params from rank 0, ``update`` averages the grads
across ranks before the step (``radam.distributed.AveragedAdam``). Every rank
calls ``setupOn`` and ``update``; ``save``/``load`` stay per rank.

Differences from PuzzleLib: nodeinfo is a communicator; no float16 params;
moments have the dtype of their param; ``save``/``load`` write an ``.npz``
file, not PuzzleLib's HDF5.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np

from .._numbers import real
from ..optimizer import Adam as _RadamAdam
from ._aliases import PUZZLELIB, from_seed

_FORMAT = "radam.compat.puzzlelib.Adam/1"
_ALIGN_BYTES = 64  # each block of a global buffer starts on a cache line
# Each hyperparameter's range, as radam.Adam takes its option: (low, high, high_open).
_RANGES = {
    "alpha": (0, None, False),
    "beta1": (0, 1, True),
    "beta2": (0, 1, True),
    "epsilon": (0, None, False),
}


def _hyperparameter(name: str, value: Any) -> float:
    low, high, high_open = _RANGES[name]
    return real(value, name, low, high, high_open=high_open)


class Adam:
    """PuzzleLib's ``Adam(alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)``.

    Gradients hold the NEGATIVE loss gradient (see the module docstring).
    ``alpha``, ``beta1``, ``beta2`` and ``epsilon`` may be changed between
    updates; ``t`` counts updates and ``learnRate`` is the last ``lr_t``.
    """

    def __init__(
        self,
        alpha: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        nodeinfo: Any = None,
    ) -> None:
        if nodeinfo is not None:
            from ..distributed._common import _mpi

            if not isinstance(nodeinfo, _mpi().Intracomm):
                raise TypeError(
                    "nodeinfo must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
                    f"{type(nodeinfo).__name__}"
                )
        self.nodeinfo = nodeinfo  # an mpi4py communicator, or None
        self._averaged: Any = None  # radam.distributed.AveragedAdam with nodeinfo
        self.alpha = _hyperparameter("alpha", alpha)
        self.beta1 = _hyperparameter("beta1", beta1)
        self.beta2 = _hyperparameter("beta2", beta2)
        self.epsilon = _hyperparameter("epsilon", epsilon)
        self.t = 0
        self.learnRate = 0.0
        self.net: Any = None
        self.useGlobalState = False
        self._opt: _RadamAdam | None = None
        self._names: list[str] = []
        # name -> (index of the radam tensor, offset, size) in the optimizer's tensors
        self._where: dict[str, tuple[int, int, int]] = {}
        self._param_views: dict[str, np.ndarray] = {}
        self._grad_buffers: list[np.ndarray] = []
        self._grad_views: dict[str, np.ndarray] = {}

    def _options(self) -> dict[str, Any]:
        """radam.Adam's options for this optimizer's hyperparameters (which may have
        been changed since), each checked (named by radam's option table)."""
        return from_seed(PUZZLELIB, lambda name: _hyperparameter(name, getattr(self, name)))

    # -- setup
    def setupOn(self, net: Any, useGlobalState: bool = False) -> None:  # noqa: N802, N803
        """Create the state for every param of ``net``. With ``useGlobalState``
        the params of each dtype (and the grads) move into one contiguous buffer
        each, and ``net.params``/``net.grads`` are rebound to views into it: any
        other reference to the old arrays no longer sees the training."""
        params, grads = _net_dicts(net)
        names = list(params)
        if useGlobalState:
            flat_params, flat_grads, where, views = _globalize(params, grads, names)
            opt = self._make(flat_params)
            params.update({n: views[n][0] for n in names})
            grads.update({n: views[n][1] for n in names})
            self._grad_buffers = flat_grads
            self._grad_views = {n: views[n][1] for n in names}
        else:
            opt = self._make([params[n] for n in names])
            where = {n: (i, 0, params[n].size) for i, n in enumerate(names)}
            self._grad_buffers = []
            self._grad_views = {}
        self._opt, self.net, self._names, self._where = opt, net, names, where
        self._param_views = dict(params)
        self.useGlobalState = bool(useGlobalState)
        self.t, self.learnRate = 0, 0.0

    def _make(self, params: list[np.ndarray]) -> _RadamAdam:
        """The radam.Adam over ``params``; with nodeinfo, inside an AveragedAdam
        (which broadcasts ``params`` from rank 0 now)."""
        options = {"efficient_form": True, "maximize": True, **self._options()}
        if self.nodeinfo is None:
            self._averaged = None
            return _RadamAdam(params, **options)
        from ..distributed import AveragedAdam

        self._averaged = AveragedAdam(params, self.nodeinfo, **options)
        return self._averaged.optimizer

    def _require_setup(self) -> None:
        if self._opt is None:
            raise RuntimeError("call setupOn(net) first")

    @property
    def optimizer(self) -> _RadamAdam:
        """The :class:`radam.Adam` doing the updates."""
        self._require_setup()
        assert self._opt is not None
        return self._opt

    # -- training
    def zeroGradParams(self) -> None:  # noqa: N802
        """Zero every gradient of the net (one fill per buffer with global state)."""
        self._require_setup()
        if self.useGlobalState:
            for buffer in self._grad_buffers:
                buffer.fill(0)
        else:
            for name in self._names:
                self.net.grads[name].fill(0)

    def _grads(self) -> list[np.ndarray]:
        _refuse_replaced(
            self.net.params,
            self._param_views,
            "net.params[{!r}] was replaced after setupOn; the optimizer updates the arrays it "
            "was set up on: call setupOn(net) again",
        )
        if self.useGlobalState:
            _refuse_replaced(
                self.net.grads,
                self._grad_views,
                "net.grads[{!r}] was replaced after setupOn(useGlobalState=True); write into "
                "the existing array (net.grads[name][...] = g) instead",
            )
            return self._grad_buffers
        return [self.net.grads[name] for name in self._names]

    def update(self) -> None:
        """``t += 1`` and one step of every param (PuzzleLib's sign: grads are -dLoss)."""
        self._require_setup()
        assert self._opt is not None
        options = self._options()
        grads = self._grads()
        self._opt.param_groups[0].update(options)
        if self._averaged is not None:
            self._averaged.step(grads)  # grads averaged across nodeinfo's ranks first
        else:
            self._opt.step(grads)
        self.t = self._opt.step_count
        self.learnRate = _learn_rate(self.alpha, self.beta1, self.beta2, self.t)

    # -- checkpoints
    def _moments(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """name -> (m, v) in PuzzleLib's sign (m accumulates the grads as given)."""
        assert self._opt is not None
        out = {}
        for name in self._names:
            i, offset, size = self._where[name]
            shape = self._param_views[name].shape
            state = self._opt.state.get(i)
            if state is None:
                m = np.zeros(shape, self._param_views[name].dtype)
                v = np.zeros_like(m)
            else:
                # radam's maximize stores the moment of -grad: flip it back.
                m = -state["exp_avg"].reshape(-1)[offset : offset + size].reshape(shape)
                v = state["exp_avg_sq"].reshape(-1)[offset : offset + size].reshape(shape).copy()
            out[name] = (m, v)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write t, learnRate, alpha, beta1, beta2, epsilon and the moments to ``path``
        (an ``.npz`` file), atomically: a temporary file in the same folder, fsync, rename."""
        self._require_setup()
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "t": np.array(self.t, dtype=np.int64),
            "learnRate": np.array(self.learnRate, dtype=np.float64),
            "alpha": np.array(self.alpha, dtype=np.float64),
            "beta1": np.array(self.beta1, dtype=np.float64),
            "beta2": np.array(self.beta2, dtype=np.float64),
            "epsilon": np.array(self.epsilon, dtype=np.float64),
            "names": np.array(self._names, dtype=np.str_),
        }
        for j, (m, v) in enumerate(self._moments().values()):
            arrays[f"m{j}"], arrays[f"v{j}"] = m, v
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".radam-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def load(self, path: str | os.PathLike) -> None:
        """Restore what :meth:`save` wrote, into an optimizer set up on a net with the
        same names, shapes and dtypes. Everything is checked before anything changes:
        a missing file raises FileNotFoundError; any other file (another ``.npz``, a
        damaged or truncated one, not an ``.npz`` at all), or one that does not fit
        this net, raises ValueError naming the path and what is wrong."""
        self._require_setup()
        assert self._opt is not None
        path = os.fspath(path)
        saved = _read_checkpoint(path)
        names = [str(n) for n in saved["names"]]
        if names != [str(n) for n in self._names]:
            raise ValueError(f"{path} holds moments for params {names}, this net has {self._names}")
        t = int(saved["t"])
        hyper = {k: float(saved[k]) for k in ("alpha", "beta1", "beta2", "epsilon")}
        try:
            Adam(**hyper)  # validates the saved hyperparameters
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
        learn_rate = float(saved["learnRate"])
        if not math.isfinite(learn_rate):
            raise ValueError(f"{path}: learnRate must be finite, got {learn_rate!r}")
        moments = {}
        for j, name in enumerate(self._names):
            param = self._param_views[name]
            m, v = saved[f"m{j}"], saved[f"v{j}"]
            for what, a in (("m", m), ("v", v)):
                if a.shape != param.shape or a.dtype != param.dtype:
                    raise ValueError(
                        f"{path}: the {what} of {name!r} has shape {a.shape} and dtype {a.dtype}, "
                        f"the param has {param.shape} and {param.dtype}"
                    )
                if t == 0 and a.any():
                    raise ValueError(
                        f"{path}: t is 0 (no update taken) but the {what} of {name!r} is not zero"
                    )
            moments[name] = (m, v)

        tensors = self._opt.param_groups[0]["params"]
        state: dict[int, dict[str, Any]] = {}
        if t > 0:
            exp_avg = [np.zeros_like(p) for p in tensors]
            exp_avg_sq = [np.zeros_like(p) for p in tensors]
            for name, (m, v) in moments.items():
                i, offset, size = self._where[name]
                exp_avg[i].reshape(-1)[offset : offset + size] = -m.reshape(-1)  # maximize's sign
                exp_avg_sq[i].reshape(-1)[offset : offset + size] = v.reshape(-1)
            for i in range(len(tensors)):
                state[i] = {"step": t, "exp_avg": exp_avg[i], "exp_avg_sq": exp_avg_sq[i]}
        groups = self._opt.state_dict()["param_groups"]
        groups[0].update(from_seed(PUZZLELIB, hyper.__getitem__))
        try:  # all or nothing: it checks the step and the moments' values too
            self._opt.load_state_dict({"state": state, "param_groups": groups})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} does not fit this optimizer: {err}") from err
        self.alpha, self.beta1 = hyper["alpha"], hyper["beta1"]
        self.beta2, self.epsilon = hyper["beta2"], hyper["epsilon"]
        self.t, self.learnRate = t, learn_rate


# What save writes: the 0-d arrays, with the kinds of their dtypes (NumPy's dtype.kind).
_SCALARS = {
    "format": ("U", "string"),
    "t": ("iu", "integer"),
    "learnRate": ("f", "float"),
    "alpha": ("f", "float"),
    "beta1": ("f", "float"),
    "beta2": ("f", "float"),
    "epsilon": ("f", "float"),
}


def _read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """The arrays of a :meth:`Adam.save` file, each checked
    to be what save writes there (nothing is unpickled). FileNotFoundError for a
    missing file; ValueError naming ``path`` for anything else."""
    bad = f"{path} is not a checkpoint written by {_FORMAT}"
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # NumPy's and zipfile's errors for a file of another kind
        raise ValueError(f"{bad} (it cannot be read as .npz: {type(err).__name__}: {err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{bad} (it holds one .npy array, not an .npz archive)")
    try:
        with data:
            if "format" not in data.files:
                raise ValueError(f"{bad} (an .npz without its 'format' entry)")
            saved = {k: data[k] for k in data.files}
    except ValueError as err:
        if str(err).startswith(bad):
            raise
        raise ValueError(f"{bad} (damaged or truncated: {type(err).__name__}: {err})") from err
    except Exception as err:  # a bad CRC, a truncated member: zipfile's, zlib's, OSError
        raise ValueError(f"{bad} (damaged or truncated: {type(err).__name__}: {err})") from err
    if saved["format"].shape != () or str(saved["format"]) != _FORMAT:
        raise ValueError(f"{bad} (its format is {saved['format']!r})")
    names = saved.get("names")
    if names is None or names.ndim != 1 or names.dtype.kind != "U":
        raise ValueError(f"{path}: 'names' must be a list of param names")
    expected = {*_SCALARS, "names"} | {f"{x}{j}" for j in range(len(names)) for x in "mv"}
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise ValueError(f"{path}: arrays missing {missing}, unexpected {extra}")
    for key, (kinds, kind) in _SCALARS.items():
        value = saved[key]
        if value.shape != () or value.dtype.kind not in kinds:
            raise ValueError(
                f"{path}: {key!r} must be a single {kind}, got {value.dtype} of shape {value.shape}"
            )
    if int(saved["t"]) < 0:
        raise ValueError(f"{path}: t must be >= 0, got {int(saved['t'])}")
    return saved


def _refuse_replaced(arrays: dict, kept: dict[str, np.ndarray], message: str) -> None:
    """A RuntimeError (``message`` formatted with the name) for the first of
    ``kept``'s arrays that ``arrays`` no longer holds."""
    for name, array in kept.items():
        if arrays.get(name) is not array:
            raise RuntimeError(message.format(name))


def _learn_rate(alpha: float, beta1: float, beta2: float, t: int) -> float:
    return alpha * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)


def _net_dicts(net: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params, grads = getattr(net, "params", None), getattr(net, "grads", None)
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise TypeError(
            "net must have `params` and `grads` dicts (name -> NumPy array), got "
            f"{type(net).__name__}"
        )
    if not params:
        raise ValueError("net.params is empty")
    if set(params) != set(grads):
        missing = [k for k in params if k not in grads]
        extra = [k for k in grads if k not in params]
        raise ValueError(
            f"net.grads must have the keys of net.params; missing {missing}, extra {extra}"
        )
    for name, p in params.items():
        g = grads[name]
        if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
            raise TypeError(f"net.params[{name!r}] and net.grads[{name!r}] must be NumPy arrays")
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"net.params[{name!r}] has dtype {p.dtype}; radam updates float32 and float64 "
                "(PuzzleLib's float16 params are not supported)"
            )
        if g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError(
                f"net.grads[{name!r}] has shape {g.shape} and dtype {g.dtype}; its param has "
                f"{p.shape} and {p.dtype}"
            )
    return params, grads


def _globalize(params: dict, grads: dict, names: list[str]):
    """One param buffer and one grad buffer per dtype; the views that replace the arrays."""
    dtypes: list[np.dtype] = []
    for n in names:
        if params[n].dtype not in dtypes:
            dtypes.append(params[n].dtype)
    where: dict[str, tuple[int, int, int]] = {}
    sizes = [0] * len(dtypes)
    for n in names:
        i = dtypes.index(params[n].dtype)
        align = max(1, _ALIGN_BYTES // dtypes[i].itemsize)
        offset = -(-sizes[i] // align) * align
        where[n] = (i, offset, params[n].size)
        sizes[i] = offset + params[n].size
    flat_params = [np.zeros(max(s, 1), dtype=d) for s, d in zip(sizes, dtypes)]
    flat_grads = [np.zeros(max(s, 1), dtype=d) for s, d in zip(sizes, dtypes)]
    views = {}
    for n in names:
        i, offset, size = where[n]
        shape = params[n].shape
        p_view = flat_params[i][offset : offset + size].reshape(shape)
        g_view = flat_grads[i][offset : offset + size].reshape(shape)
        p_view[...] = params[n]
        g_view[...] = grads[n]
        views[n] = (p_view, g_view)
    return flat_params, flat_grads, where, views
