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

The driver counts as downhill does. ``iterate`` yields ``(train_monitors,
valid_monitors)`` after every *iteration*: one iteration is one pass over the
training data's ``iteration_size`` batches (by default every batch once), one
update per batch, and the train monitors are their mean over those batches,
each measured before its own update. ``max_updates``, ``validate_every`` and
``patience`` count iterations (downhill's names, whatever ``max_updates``
says), while :attr:`Adam.updates` counts single updates. It validates at
iteration 0 and every ``validate_every`` iterations; a validation improves
when ``best - loss > best * min_improvement`` (``best`` starts at 1e100, as
downhill's), which records the loss and a copy of the params; it stops when
more than ``patience`` validations have passed since the last improvement,
or after ``max_updates`` iterations, or at a KeyboardInterrupt, and then
restores the best validated params (the params after the last update are
not validated by themselves: validate often, or call ``set_params`` with your
own arrays). Closing the generator early (``break``) leaves the params as
they are.

Data, as downhill reads it: a :class:`Dataset`; an array or a list/tuple of
arrays with the same first axis (downhill.minimize's form: split into
``batch_size`` batches, ``batch_size <= 0`` one batch of everything; the
batch order is shuffled at the start and whenever a pass wraps around); a
list/tuple of batches, each a list/tuple of the loss's inputs (``[[X0],
[X1], ...]``, downhill's ``Optimizer.iterate`` form: every iteration goes
through them in order); a callable returning one batch per call
(``len(callable)`` calls per iteration, or 100); or None, for a loss with
no inputs (``loss(params)``, once per iteration). ``valid`` defaults to the
training data itself, the same object, so a validation draws its batches
from the training cursor as downhill's does.

Deliberate differences from downhill, all fixes of its known defects:

- the Adam state (moments, velocity, step count) lives across ``iterate`` and
  ``minimize`` calls: a second call continues, it does not restart the moments
  (the best validated loss and params and the validation count persist too,
  as in downhill);
- the step counter is a Python int (downhill's float32 counter stops at 2**24);
- ``monitors`` may be a dict name -> function as well as (name, function) pairs;
- every hyperparameter keyword is honoured, and an unknown one is a TypeError.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from .._halflife import halflife_to_beta
from .._numbers import real
from ..optimizer import Adam as _RadamAdam
from ._aliases import DOWNHILL, from_seed

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
    "batch_size": 32,  # downhill.minimize's: <= 0 is one batch of all the data
    "train_batches": None,  # downhill.minimize's: batches per iteration (None: one pass)
    "valid_batches": None,
}

# downhill's best validation loss before any validation: a first finite loss below
# it improves (a number, not inf, so that ``best * min_improvement`` stays finite).
_NO_LOSS_YET = 1e100
_BETA1_DECAY = {"master": 1.0, "0.4.0": 1.0 - 1e-6}
_BIAS_CORRECTION = {"master": "adam", "0.4.0": "downhill-0.4.0"}


# -- validation ---------------------------------------------------------------------------


def _whole(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
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
    h["learning_rate"] = real(h["learning_rate"], "learning_rate", 0)
    for name in ("beta1_halflife", "beta2_halflife"):
        h[name] = real(h[name], name, 0, low_open=True)
    h["beta1_decay"] = real(h["beta1_decay"], "beta1_decay", 0, 1, low_open=True)
    h["rms_regularizer"] = real(h["rms_regularizer"], "rms_regularizer", 0)
    h["momentum"] = real(h["momentum"], "momentum", 0, 1, high_open=True)
    if not isinstance(h["nesterov"], (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False, got {h['nesterov']!r}")
    h["nesterov"] = bool(h["nesterov"])
    h["patience"] = _whole("patience", h["patience"], 0)
    h["validate_every"] = _whole("validate_every", h["validate_every"], 1)
    for name in ("min_improvement", "max_gradient_elem", "max_gradient_norm"):
        h[name] = real(h[name], name, 0)
    h["batch_size"] = _integer("batch_size", h["batch_size"])
    for name in ("train_batches", "valid_batches"):
        if h[name] is not None:
            h[name] = _whole(name, h[name], 1)
    for name in ("beta1_halflife", "beta2_halflife"):
        beta = halflife_to_beta(h[name])
        if not beta < 1.0:
            raise ValueError(f"{name}={h[name]!r} is too long: its beta rounds to 1")
    return h


# -- datasets -----------------------------------------------------------------------------


class Dataset:
    """downhill's ``Dataset``: mini-batches over arrays, or from a callable.

    ``inputs``: an array or a list/tuple of arrays sharing their first
    (sample) axis, each batch being the tuple of their slices, passed as
    ``loss(params, *batch)``; or a callable returning one batch per call (a
    tuple/list of the inputs, or one array). Arrays are cut into contiguous
    batches of ``batch_size`` samples (the last one may be smaller;
    ``batch_size <= 0``: one batch of everything) whose order is shuffled at
    construction and again each time a pass wraps around, as downhill does
    (``rng``: a seed, a ``numpy.random.RandomState`` or ``Generator``; with
    a seed, the order is downhill's for that seed).

    Iterating over a dataset yields the next ``iteration_size`` batches (by
    default one pass over the arrays; for a callable ``len(callable)``, or
    100 when it has no length) and leaves the cursor there.
    """

    def __init__(
        self,
        inputs: Any,
        name: str | None = None,
        batch_size: int = 32,
        iteration_size: int | None = None,
        *,
        rng: Any = None,
    ) -> None:
        self.name = "dataset" if name is None else str(name)
        self.batch_size = _integer("batch_size", batch_size)
        if iteration_size is not None:
            iteration_size = _whole("iteration_size", iteration_size, 1)
        if isinstance(rng, (np.random.RandomState, np.random.Generator)):
            self.rng = rng
        elif rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
            self.rng = np.random.RandomState(rng)
        else:
            raise TypeError(f"rng must be a seed, a RandomState or a Generator, got {rng!r}")
        self._callable: Callable[[], Any] | None = None
        if callable(inputs):
            self._callable = inputs
            if iteration_size is None:
                try:
                    iteration_size = _whole(f"len({self.name})", len(inputs), 1)
                except TypeError:  # no length
                    iteration_size = 100
            self.iteration_size = iteration_size
            return
        self._arrays = _parallel_arrays(inputs, self.name)
        n = len(self._arrays[0])
        size = n if self.batch_size <= 0 else self.batch_size
        self._slices = [slice(i, min(n, i + size)) for i in range(0, n, size)]
        self._index = 0
        self.shuffle()
        self.iteration_size = len(self._slices) if iteration_size is None else iteration_size

    def __len__(self) -> int:
        """The number of batches one iteration yields (``iteration_size``)."""
        return self.iteration_size

    def shuffle(self) -> None:
        """Shuffle the order of the batches (no effect for a callable)."""
        if self._callable is None:
            self.rng.shuffle(self._slices)

    def __iter__(self):
        return self.iterate()

    def iterate(self, shuffle: bool = True):
        """Yield the next ``iteration_size`` batches; reshuffle on wrapping around
        (unless ``shuffle`` is False)."""
        for _ in range(self.iteration_size):
            if self._callable is not None:
                yield _as_batch(self._callable())
                continue
            where = self._slices[self._index]
            self._index += 1
            if self._index >= len(self._slices):
                if shuffle:
                    self.shuffle()
                self._index = 0
            yield tuple(a[where] for a in self._arrays)


class Batches:
    """downhill's other form of data: a list of batches, ``[[X0, Y0], [X1, Y1],
    ...]``, each the loss's inputs. Every iteration goes through all of them
    in the given order (no shuffling), as ``downhill.Optimizer.iterate`` does."""

    def __init__(self, batches: Any, name: str = "data") -> None:
        if not isinstance(batches, (list, tuple)) or not batches:
            raise ValueError(f"{name} must be a non-empty list of batches")
        for i, batch in enumerate(batches):
            if not isinstance(batch, (list, tuple)):
                raise TypeError(
                    f"{name}[{i}] must be a list/tuple of the loss's inputs, got "
                    f"{type(batch).__name__}"
                )
        self.name = name
        self._batches = [tuple(b) for b in batches]

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self):
        return iter(self._batches)


class _NoInputs:
    """The data of a loss with no inputs: one call, ``loss(params)``, per iteration."""

    def __iter__(self):
        yield ()


def _parallel_arrays(inputs: Any, name: str) -> tuple[np.ndarray, ...]:
    arrays = (inputs,) if isinstance(inputs, np.ndarray) else inputs
    if isinstance(arrays, (str, bytes, Mapping)) or not isinstance(arrays, (list, tuple)):
        raise TypeError(
            f"{name} must be an array, a list/tuple of arrays, a list of batches or a "
            f"callable returning a batch, got {type(inputs).__name__}"
        )
    if not arrays:
        raise ValueError(f"{name} is empty: give at least one array")
    for i, a in enumerate(arrays):
        if isinstance(a, (list, tuple)):
            raise TypeError(
                f"{name} mixes arrays and lists: give arrays (split into batches) or a "
                f"list of batches, each a list of the loss's inputs ({name}[{i}] is a "
                f"{type(a).__name__})"
            )
    arrays = tuple(np.asarray(a) for a in arrays)
    if any(a.ndim == 0 for a in arrays):
        raise ValueError(f"{name}: every array needs a first (sample) axis")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"{name}: the arrays have different lengths {[len(a) for a in arrays]}")
    if lengths == {0}:
        raise ValueError(f"{name} has no samples")
    return arrays


def _as_batch(batch: Any) -> tuple[Any, ...]:
    if isinstance(batch, (tuple, list)):
        return tuple(batch)
    return (batch,)


def _as_data(data: Any, name: str, batch_size: int = 32, batches: int | None = None) -> Any:
    """``data`` as something that yields one iteration's batches, read as
    downhill reads it (see the module doc): a :class:`Dataset` or
    :class:`Batches` as it is; None for a loss with no inputs; a list/tuple
    whose items are all lists/tuples as :class:`Batches`; an array, a
    list/tuple of arrays or a callable as a :class:`Dataset` of ``batch_size``
    and ``iteration_size=batches``."""
    if isinstance(data, (Dataset, Batches, _NoInputs)) or data is None:
        if batches is not None:
            raise ValueError(
                f"{name}_batches applies to arrays or a callable; {name} is "
                f"{'None' if data is None else type(data).__name__} (set a Dataset's own "
                "iteration_size instead)"
            )
        return _NoInputs() if data is None else data
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, (list, tuple)) for b in data):
        if batches is not None:
            raise ValueError(
                f"{name}_batches applies to arrays or a callable; {name} is a list of "
                "batches, all of which every iteration goes through"
            )
        return Batches(data, name)
    return Dataset(data, name, batch_size, batches)


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
        # downhill's patience bookkeeping, kept across iterate calls as downhill's is:
        # validations so far, the one that last improved, its loss (1e100 before any,
        # so that a first finite loss below it improves) and a copy of the params.
        self._validations = 0
        self._best_validation = 0
        self._best_loss = _NO_LOSS_YET
        self._best_params = [a.copy() for a in self._arrays]

    # -- hyperparameters
    def _radam_options(self, h: Mapping[str, Any]) -> dict[str, Any]:
        """radam.Adam's options for downhill's hyperparameters ``h`` (the names
        map by radam's option table; the half-lives become betas)."""

        def value(name: str) -> Any:
            return halflife_to_beta(h[name]) if name.endswith("_halflife") else h[name]

        options = from_seed(DOWNHILL, value)
        options["bias_correction"] = _BIAS_CORRECTION[self.formula]
        return options

    def _apply(self, h: Mapping[str, Any]) -> None:
        self._opt.param_groups[0].update(self._radam_options(h))
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
        """Updates (one per batch) made so far, over all ``iterate`` calls (a
        Python int: it never stalls). An iteration makes ``iteration_size`` of them."""
        return self._opt.step_count

    @property
    def best_loss(self) -> float | None:
        """The best validation loss so far (None until a validation improved)."""
        return None if self._best_validation == 0 else self._best_loss

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

    def evaluate(self, dataset: Any) -> dict[str, float]:
        """The monitors (``'loss'`` first) averaged over one iteration of the
        dataset's batches (any form of data ``iterate`` takes; None: a loss with
        no inputs). A :class:`Dataset`'s cursor moves on, as in downhill."""
        data = _as_data(dataset, "dataset", self.hyperparams["batch_size"])
        return self._evaluate(data)

    def _evaluate(self, data: Any) -> dict[str, float]:
        rows = [self._monitor_values(batch)[0] for batch in data]
        return self._mean(rows)

    def _mean(self, rows: list[list[float]]) -> dict[str, float]:
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

    def _patience_elapsed(self, validation: Mapping[str, float], h: Mapping[str, Any]) -> bool:
        """Record one validation (downhill's ``_test_patience``): an improvement is
        ``best - loss > best * min_improvement``; patience has elapsed when more
        than ``patience`` validations passed since the last improvement."""
        self._validations += 1
        loss = validation["loss"]
        if self._best_loss - loss > self._best_loss * h["min_improvement"]:
            self._best_loss = loss
            self._best_validation = self._validations
            self._best_params = [a.copy() for a in self._arrays]
        return self._validations - self._best_validation > h["patience"]

    # -- the driver
    def iterate(self, train: Any = None, valid: Any = None, max_updates: Any = None, **hyperparams):
        """Optimize; yields ``(train_monitors, valid_monitors)`` after every iteration.

        ``train``/``valid``: a :class:`Dataset`, an array or a list/tuple of
        arrays (split into batches of ``batch_size``, ``train_batches`` /
        ``valid_batches`` of them per iteration), a list of batches
        (``[[X0], [X1], ...]``), a callable returning a batch, or None for a
        loss with no inputs; ``valid`` defaults to ``train`` (the same data
        object). ``max_updates`` counts iterations, as downhill's does.
        Hyperparameters: see ``DEFAULTS``. All arguments are checked here,
        before anything runs.
        """
        h = _check_hyperparams(hyperparams, self.formula)
        if max_updates is not None:
            max_updates = _whole("max_updates", max_updates, 0)
        train_data = _as_data(train, "train", h["batch_size"], h["train_batches"])
        if valid is None:
            if h["valid_batches"] is not None:
                raise ValueError("valid_batches needs valid data; valid defaults to train")
            valid_data = train_data
        else:
            valid_data = _as_data(valid, "valid", h["batch_size"], h["valid_batches"])
        return self._iterate(train_data, valid_data, max_updates, h)

    def _iterate(self, train: Any, valid: Any, max_updates: int | None, h: dict):
        self._apply(h)
        iteration = 0
        validation: dict[str, float] | None = None
        while max_updates is None or iteration < max_updates:
            try:
                if iteration % h["validate_every"] == 0:
                    validation = self._evaluate(valid)
                    if self._patience_elapsed(validation, h):
                        break
                training = self._train(train)
            except KeyboardInterrupt:
                break  # as downhill: stop, and restore the best params below
            iteration += 1
            yield training, validation
        self.set_params("best")

    def _train(self, train: Any) -> dict[str, float]:
        """One iteration: an update per batch; the monitors' mean over the batches,
        each measured before its update."""
        rows = []
        for batch in train:
            values, grads = self._monitor_values(batch)
            self._opt.step(grads)
            rows.append(values)
        return self._mean(rows)

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
