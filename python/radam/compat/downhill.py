"""downhill's ``Adam`` and its training driver, over NumPy arrays.

For users of ``downhill.Adam`` (L. Johnson's Theano package) who want the same
trajectories without Theano::

    def loss(params, x, y):                 # returns (value, grads mirroring params)
        err = x @ params["w"] - y
        return (err**2).mean(), {"w": 2 * x.T @ err / len(y)}

    opt = Adam(loss, {"w": np.zeros(3)})
    for train, valid in opt.iterate([X, Y], learning_rate=1e-2, max_updates=500):
        print(train["loss"], valid["loss"])

What it computes (the arithmetic runs in radam's kernel):

- ``formula="master"`` (the default): downhill master, the paper's Algorithm 1
  with betas from half-lives, ``beta = 2**(-1/halflife)``, and no lambda
  (``beta1_decay`` defaults to 1 here; a value you pass decays beta1 as
  ``beta1 * beta1_decay**(t-1)`` while the bias correction keeps ``beta1**t``).
- ``formula="0.4.0"``: the released downhill 0.4.0, kept for identical
  trajectories: ``beta1_t = beta1 * beta1_decay**(t-1)`` (default decay
  1 - 1e-6) and the constant rescale ``m/(1-beta1_t)``, ``sqrt(v/(1-beta2))``
  instead of a bias correction.
- ``momentum``/``nesterov``: downhill's velocity on top of the Adam step;
  ``max_gradient_elem``/``max_gradient_norm``: per-tensor clipping of the raw
  gradient before the moments (element clipping wins when both are set).

The driver: ``iterate`` yields ``(train_monitors, valid_monitors)`` after every
update (one update = one mini-batch). It validates at iteration 0 and every
``validate_every`` iterations; a validation improves when
``best - loss > best * min_improvement``, which records the loss and a copy of
the params; it stops when more than ``patience`` validations in a row did not
improve, or after ``max_updates`` updates, and then restores the best validated
params (as downhill does, the params after the last update are not validated
by themselves: validate often, or call ``set_params`` with your own arrays).
Closing the generator early (``break``) leaves the params as they are.

Deliberate differences from downhill, all fixes of its known defects:

- the Adam state (moments, velocity, step count) lives across ``iterate`` and
  ``minimize`` calls: a second call continues, it does not restart the moments;
  the best validated loss and params also persist, the patience count starts
  afresh with each call;
- the step counter is a Python int (downhill's float32 counter stops at 2**24);
- ``monitors`` may be a dict name -> function as well as (name, function) pairs;
- every hyperparameter keyword is honoured, and an unknown one is a TypeError.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from ..optimizer import Adam as _RadamAdam

FORMULAS = ("master", "0.4.0")

#: downhill's hyperparameters and their defaults (``beta1_decay``'s depends on the formula).
DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "beta1_halflife": 7.0,
    "beta2_halflife": 69.0,
    "beta1_decay": None,  # 1 - 1e-6 with formula="0.4.0", 1 (no lambda) with "master"
    "rms_regularizer": 1e-8,
    "momentum": 0.0,
    "nesterov": False,
    "patience": 5,
    "validate_every": 10,
    "min_improvement": 0.0,
    "max_gradient_elem": 0.0,
    "max_gradient_norm": 0.0,
    "batch_size": 32,
}

_BETA1_DECAY = {"master": 1.0, "0.4.0": 1.0 - 1e-6}
_BIAS_CORRECTION = {"master": "adam", "0.4.0": "downhill-0.4.0"}
# radam.Adam's defaults for the kernel options; a group only gets the ones that differ
# (or that it already has), so this layer also runs on a radam without them.
_KERNEL_DEFAULTS = {
    "beta1_decay": 1.0,
    "momentum": 0.0,
    "nesterov": False,
    "max_gradient_elem": 0.0,
    "max_gradient_norm": 0.0,
    "bias_correction": "adam",
}


def halflife_to_beta(halflife: float) -> float:
    """downhill's EWMA weight for a half-life: ``2**(-1/halflife)``."""
    return 2.0 ** (-1.0 / halflife)


# -- validation ---------------------------------------------------------------------------


def _real(name: str, value: Any, low: float, high: float, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return value


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _check_hyperparams(given: Mapping[str, Any], formula: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown hyperparameter(s) {unknown}; downhill's Adam takes {sorted(DEFAULTS)}"
        )
    h = {**DEFAULTS, **given}
    if h["beta1_decay"] is None:
        h["beta1_decay"] = _BETA1_DECAY[formula]
    inf = math.inf
    h["learning_rate"] = _real("learning_rate", h["learning_rate"], 0, inf)
    for name in ("beta1_halflife", "beta2_halflife"):
        h[name] = _real(name, h[name], 0, inf, low_open=True)
    h["beta1_decay"] = _real("beta1_decay", h["beta1_decay"], 0, 1, low_open=True)
    h["rms_regularizer"] = _real("rms_regularizer", h["rms_regularizer"], 0, inf)
    h["momentum"] = _real("momentum", h["momentum"], 0, 1, high_open=True)
    if not isinstance(h["nesterov"], (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False, got {h['nesterov']!r}")
    h["nesterov"] = bool(h["nesterov"])
    h["patience"] = _whole("patience", h["patience"], 0)
    h["validate_every"] = _whole("validate_every", h["validate_every"], 1)
    h["min_improvement"] = _real("min_improvement", h["min_improvement"], 0, inf)
    h["max_gradient_elem"] = _real("max_gradient_elem", h["max_gradient_elem"], 0, inf)
    h["max_gradient_norm"] = _real("max_gradient_norm", h["max_gradient_norm"], 0, inf)
    h["batch_size"] = _whole("batch_size", h["batch_size"], 1)
    for name in ("beta1_halflife", "beta2_halflife"):
        beta = halflife_to_beta(h[name])
        if not beta < 1.0:
            raise ValueError(f"{name}={h[name]!r} is too long: its beta rounds to 1")
    return h


# -- datasets -----------------------------------------------------------------------------


class Dataset:
    """Mini-batches over arrays that share their first axis, reshuffled when they wrap.

    ``data`` is an array, a list/tuple of arrays with the same length (each
    batch is the tuple of their slices, passed to ``loss(params, *batch)``),
    or a callable returning one batch (a tuple of arrays or one array) per
    call. The first pass goes through the samples in order; every later pass
    in a new random order (``rng``: a seed or ``numpy.random.Generator``).
    The last batch of a pass may be smaller than ``batch_size``.
    """

    def __init__(self, data: Any, batch_size: int = 32, rng: Any = None, name: str = "data"):
        self.name = name
        self.batch_size = _whole("batch_size", batch_size, 1)
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._callable: Callable[[], Any] | None = None
        self._arrays: tuple[np.ndarray, ...] = ()
        if callable(data):
            self._callable = data
            return
        arrays = (data,) if isinstance(data, np.ndarray) else data
        if isinstance(arrays, (str, bytes, Mapping)) or not isinstance(arrays, (list, tuple)):
            raise TypeError(
                f"{name} must be an array, a list/tuple of arrays or a callable returning "
                f"a batch, got {type(data).__name__}"
            )
        arrays = tuple(np.asarray(a) for a in arrays)
        if not arrays:
            raise ValueError(f"{name} is empty: give at least one array")
        if any(a.ndim == 0 for a in arrays):
            raise ValueError(f"{name}: every array needs a first (sample) axis")
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError(
                f"{name}: the arrays have different lengths {[len(a) for a in arrays]}"
            )
        if lengths == {0}:
            raise ValueError(f"{name} has no samples")
        self._arrays = arrays
        self._order: np.ndarray | None = None  # None: the original order
        self._cursor = 0

    def __len__(self) -> int:
        """The number of batches in one pass (1 for a callable)."""
        if self._callable is not None:
            return 1
        return -(-len(self._arrays[0]) // self.batch_size)

    def _take(self, start: int) -> tuple[np.ndarray, ...]:
        stop = start + self.batch_size
        if self._order is None:
            return tuple(a[start:stop] for a in self._arrays)
        index = self._order[start:stop]
        return tuple(a[index] for a in self._arrays)

    def batches(self):
        """One pass over the batches in the current order (the cursor does not move)."""
        if self._callable is not None:
            yield _as_batch(self._callable(), self.name)
            return
        for start in range(0, len(self._arrays[0]), self.batch_size):
            yield self._take(start)

    def next_batch(self) -> tuple[Any, ...]:
        """The next training batch; a new random order when a pass is done."""
        if self._callable is not None:
            return _as_batch(self._callable(), self.name)
        n = len(self._arrays[0])
        if self._cursor >= n:
            self._order = self._rng.permutation(n)
            self._cursor = 0
        batch = self._take(self._cursor)
        self._cursor += self.batch_size
        return batch


def _as_batch(batch: Any, name: str) -> tuple[Any, ...]:
    if isinstance(batch, tuple):
        return batch
    if isinstance(batch, list):
        return tuple(batch)
    return (batch,)


# -- the optimizer ------------------------------------------------------------------------


class Adam:
    """downhill's ``Adam(loss, params, monitors=(), monitor_gradients=False)``.

    ``loss(params, *batch)`` returns ``(value, grads)``, grads mirroring
    ``params`` (a list or dict of float32/float64 NumPy arrays, updated in
    place). ``monitors``: (name, function) pairs or a dict name -> function,
    each ``function(params, *batch)`` returning a number. ``formula``:
    ``"master"`` (Algorithm 1, the default) or ``"0.4.0"`` (the released
    package's formula); fixed for the optimizer's life.
    """

    def __init__(
        self,
        loss: Callable[..., Any],
        params: Any,
        monitors: Any = (),
        monitor_gradients: bool = False,
        *,
        formula: str = "master",
    ) -> None:
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        if formula not in FORMULAS:
            raise ValueError(f"formula must be one of {FORMULAS}, got {formula!r}")
        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple, Mapping)):
            raise TypeError(
                f"params must be a list or dict of NumPy arrays, got {type(params).__name__}"
            )
        self._monitor_fns = _check_monitors(monitors)
        self._loss = loss
        self._params = params
        self.formula = formula
        self._keys = (
            list(params.keys()) if isinstance(params, Mapping) else list(range(len(params)))
        )
        self._arrays = [params[k] for k in self._keys]
        self.hyperparams = _check_hyperparams({}, formula)
        self._opt = _RadamAdam(params, **self._radam_options(self.hyperparams))
        self.monitor_gradients = bool(monitor_gradients)
        self._monitor_names = ["loss", *(name for name, _ in self._monitor_fns)]
        if self.monitor_gradients:
            self._monitor_names += [f"∂{k}" for k in self._keys]
        self.best_loss: float | None = None
        self._best_params = [a.copy() for a in self._arrays]

    # -- hyperparameters
    def _radam_options(self, h: Mapping[str, Any]) -> dict[str, Any]:
        options = {
            "lr": h["learning_rate"],
            "betas": (halflife_to_beta(h["beta1_halflife"]), halflife_to_beta(h["beta2_halflife"])),
            "eps": h["rms_regularizer"],
        }
        kernel = {
            "beta1_decay": h["beta1_decay"],
            "momentum": h["momentum"],
            "nesterov": h["nesterov"],
            "max_gradient_elem": h["max_gradient_elem"],
            "max_gradient_norm": h["max_gradient_norm"],
            "bias_correction": _BIAS_CORRECTION[self.formula],
        }
        for name, value in kernel.items():
            if value != _KERNEL_DEFAULTS[name]:
                options[name] = value
        return options

    def _apply(self, h: Mapping[str, Any]) -> None:
        group = self._opt.param_groups[0]
        wanted = self._radam_options(h)
        for name, default in _KERNEL_DEFAULTS.items():
            if name in group and name not in wanted:
                wanted[name] = default
        group.update(wanted)
        self.hyperparams = dict(h)

    @property
    def optimizer(self) -> _RadamAdam:
        """The :class:`radam.Adam` doing the updates (its ``state`` holds the moments)."""
        return self._opt

    @property
    def params(self) -> Any:
        return self._params

    @property
    def updates(self) -> int:
        """Updates made so far, over all ``iterate`` calls (a Python int: it never stalls)."""
        return self._opt.step_count

    # -- evaluation
    def _monitor_values(self, batch: tuple[Any, ...]) -> tuple[list[float], Any]:
        result = self._loss(self._params, *batch)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError("loss(params, *batch) must return a pair (value, grads)")
        value, grads = result
        values = [_scalar(value, "the loss value")]
        for name, fn in self._monitor_fns:
            values.append(_scalar(fn(self._params, *batch), f"monitor {name!r}"))
        if self.monitor_gradients:
            values += [float(np.vdot(g, g).real) for g in self._grad_arrays(grads)]
        return values, grads

    def _grad_arrays(self, grads: Any) -> list[np.ndarray]:
        try:
            arrays = [np.asarray(grads[k]) for k in self._keys]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"grads must mirror params (keys {self._keys}): {err}") from None
        return arrays

    def _dataset(self, data: Any, batch_size: int, name: str) -> Dataset:
        return data if isinstance(data, Dataset) else Dataset(data, batch_size, name=name)

    def evaluate(self, dataset: Any) -> dict[str, float]:
        """The monitors (``'loss'`` first) averaged over the dataset's batches."""
        data = self._dataset(dataset, self.hyperparams["batch_size"], "dataset")
        rows = [self._monitor_values(batch)[0] for batch in data.batches()]
        return dict(zip(self._monitor_names, (float(x) for x in np.mean(rows, axis=0))))

    # -- parameters
    def set_params(self, targets: Any = "best") -> None:
        """Copy ``targets`` into the params in place: ``'best'`` (or None) the best
        validated values, or arrays mirroring params (a list, or a dict for dict params)."""
        if targets is None or (isinstance(targets, str) and targets == "best"):
            values = self._best_params
        elif isinstance(targets, str):
            raise ValueError(f"targets must be 'best' or arrays mirroring params, got {targets!r}")
        else:
            try:
                values = [np.asarray(targets[k]) for k in self._keys]
                extra = len(targets) != len(self._keys)
            except (KeyError, IndexError, TypeError):
                extra, values = True, []
            if extra:
                raise ValueError(
                    f"targets must mirror params: {len(self._keys)} arrays with keys {self._keys}"
                )
            for k, p, v in zip(self._keys, self._arrays, values):
                if v.shape != p.shape:
                    raise ValueError(f"targets[{k!r}] has shape {v.shape}, params has {p.shape}")
        for p, v in zip(self._arrays, values):
            np.copyto(p, v, casting="same_kind")

    def _record(self, validation: Mapping[str, float], min_improvement: float) -> bool:
        loss = validation["loss"]
        best = self.best_loss
        improved = (best is None and not math.isnan(loss)) or (
            best is not None and best - loss > best * min_improvement
        )
        if improved:
            self.best_loss = loss
            self._best_params = [a.copy() for a in self._arrays]
        return improved

    # -- the driver
    def iterate(self, train: Any, valid: Any = None, max_updates: int | None = None, **hyperparams):
        """Optimize; yields ``(train_monitors, valid_monitors)`` after every update.

        ``train``/``valid``: a :class:`Dataset`, an array, a list of arrays split
        into mini-batches of ``batch_size``, or a callable returning a batch;
        ``valid`` defaults to ``train``. Hyperparameters: see ``DEFAULTS``. All
        arguments are checked here, before anything runs.
        """
        h = _check_hyperparams(hyperparams, self.formula)
        if max_updates is not None:
            max_updates = _whole("max_updates", max_updates, 0)
        train_data = self._dataset(train, h["batch_size"], "train")
        valid_data = train_data if valid is None else self._dataset(valid, h["batch_size"], "valid")
        return self._iterate(train_data, valid_data, max_updates, h)

    def _iterate(self, train: Dataset, valid: Dataset, max_updates: int | None, h: dict):
        self._apply(h)
        iteration, failures = 0, 0
        validation: dict[str, float] | None = None
        while max_updates is None or iteration < max_updates:
            if iteration % h["validate_every"] == 0:
                validation = self.evaluate(valid)
                failures = 0 if self._record(validation, h["min_improvement"]) else failures + 1
                if failures > h["patience"]:
                    break
            training = self._update(train.next_batch())
            iteration += 1
            yield training, validation
        self.set_params("best")

    def _update(self, batch: tuple[Any, ...]) -> dict[str, float]:
        values, grads = self._monitor_values(batch)
        self._opt.step(grads)
        return dict(zip(self._monitor_names, values))

    def minimize(self, *args: Any, **kwargs: Any) -> tuple[dict, dict] | None:
        """Run :meth:`iterate` to the end; return its last ``(train, valid)`` monitors."""
        last = None
        for last in self.iterate(*args, **kwargs):  # noqa: B007
            pass
        return last


def _scalar(value: Any, what: str) -> float:
    array = np.asarray(value)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{what} must be a single number, got {value!r}")
    return float(array.reshape(()))


def _check_monitors(monitors: Any) -> list[tuple[str, Callable[..., Any]]]:
    if monitors is None:
        return []
    items = list(monitors.items()) if isinstance(monitors, Mapping) else list(monitors)
    checked = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"monitors[{i}] must be a (name, function) pair (or pass a dict), got {item!r}"
            )
        name, fn = item
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"monitors[{i}] must be (str, callable), got ({name!r}, {fn!r})")
        if name == "loss" or any(name == n for n, _ in checked):
            raise ValueError(f"monitors: the name {name!r} is taken ('loss' is always first)")
        checked.append((name, fn))
    return checked
