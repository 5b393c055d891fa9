"""``radam.torch``: radam's optimizers as ``torch.optim.Optimizer`` subclasses
(``pip install "radam[torch]"``).

``Adam``, ``AdamW``, ``Adamax``, ``NAdam`` and ``RAdam`` step CPU tensors in place
with radam's kernel. Params, grads and state are used through NumPy views of
the tensors' memory (bfloat16 through ``ml_dtypes``): no copy per step. The
state (``opt.state[p]``) is torch tensors sharing memory with the arrays the
kernel writes. ``param_groups`` is read at every step, so torch's LR schedulers
work unchanged; a param whose ``.grad`` is None is skipped and its ``step`` does
not advance; ``state_dict()`` / ``load_state_dict()`` interchange with the
``torch.optim`` optimizer of the same name.

Each class takes torch's keywords and radam's options (from radam's option
table): ``state_dtype``, ``stochastic_rounding``, ``master_weights``,
``grad_scale``, ``skip_nonfinite``, ``max_gradient_norm`` and the others.
``foreach`` and ``fused`` are accepted and mean nothing here; ``capturable`` and
``differentiable`` must be False.

How the per-tensor Python work is kept out of a step: the NumPy views of the
params are made once (when a group is added), and those of the grads are kept
while each param's ``.grad`` stays the same tensor (autograd accumulates into an
existing grad in place, so after ``zero_grad(set_to_none=False)`` a step only
compares identities); the grads go to the kernel in one call.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from itertools import chain
from typing import Any, Callable

import ml_dtypes
import numpy as np
import torch
from torch.optim import optimizer as _torch_optimizer

from . import variants
from ._engine import state_names
from ._options import VARIANTS, defaults_of, options_of
from .optimizer import Adam as _NumpyAdam

__all__ = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]

# torch's keywords that choose an implementation: accepted, meaning nothing here.
IGNORED = ("foreach", "fused")
# torch's keywords radam cannot honour: only False is taken.
REFUSED = ("capturable", "differentiable")
# The options every torch.optim class of these takes positionally after params, in order.
POSITIONAL = ("lr", "betas", "eps", "weight_decay")
# The param dtypes the kernel steps, and how NumPy sees each.
_DTYPES = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
}
_GRAD = operator.attrgetter("grad")
# torch's global step hooks (register_optimizer_step_pre_hook / _post_hook).
_PRE_HOOKS = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", {})
_POST_HOOKS = getattr(_torch_optimizer, "_global_optimizer_post_hooks", {})


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype == ml_dtypes.bfloat16


def _numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy array sharing ``tensor``'s memory (bfloat16 through ml_dtypes)."""
    t = tensor.detach() if tensor.requires_grad else tensor
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _torch_view(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``array``'s memory."""
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _plain(value: Any) -> Any:
    """A group value as radam takes it: a 0-d tensor (torch allows a tensor lr)
    as a number, a list (OneCycleLR may write one) or tuple of them as a tuple."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _what(gi: int, i: int, p: Any) -> str:
    shape = tuple(p.shape) if isinstance(p, torch.Tensor) else "?"
    return f"param_groups[{gi}]['params'][{i}] (shape {shape})"


def _check_param(p: Any, where: str) -> None:
    """A param radam can step in place: a dense, contiguous CPU tensor of a float dtype."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
    if p.device.type != "cpu":
        raise ValueError(
            f"{where} is on {p.device}: radam.torch steps CPU tensors (use torch.optim "
            "for tensors on other devices)"
        )
    if p.is_complex():
        raise TypeError(f"{where} is complex ({p.dtype}); radam optimizes real float tensors")
    if p.layout != torch.strided:
        raise TypeError(f"{where} is {p.layout}; radam.torch steps dense tensors")
    if p.dtype not in _DTYPES:
        raise TypeError(
            f"{where} has dtype {p.dtype}; radam steps float32, float64, float16 and bfloat16"
        )
    if not p.is_contiguous():
        raise ValueError(
            f"{where} is not contiguous: radam updates a param's memory in place as one "
            "run; make it contiguous before building the optimizer"
        )


def _grad_error(g: torch.Tensor, p: torch.Tensor, where: Callable[[], str]) -> Exception | None:
    """Why the kernel cannot read grad ``g`` of ``p`` (None if it can): it must be
    dense, on the CPU, of the param's dtype and shape, and contiguous (torch's own
    checks leave sparse and strided grads). ``where`` names the param, when needed."""
    if g.layout != torch.strided:
        return TypeError(
            f"{where()} has a {g.layout} grad; radam.torch's optimizers are dense (a sparse "
            "grad needs a sparse optimizer)"
        )
    if g.device.type != "cpu":
        return ValueError(f"{where()} has its grad on {g.device}; radam.torch steps CPU tensors")
    if g.dtype != p.dtype or g.shape != p.shape:
        return TypeError(
            f"{where()}: its grad has dtype {g.dtype} and shape {tuple(g.shape)}, the param "
            f"{p.dtype} and {tuple(p.shape)}"
        )
    if not g.is_contiguous():
        return ValueError(f"{where()} has a non-contiguous grad; radam reads grads as one run")
    return None


class _TorchOptimizer(torch.optim.Optimizer):
    """What the five classes share: radam's NumPy optimizer of the same name
    (``self._radam``), built over views of the params, stepped with views of
    the grads."""

    _variant: str  # the class's entry in radam._options.VARIANTS
    _radam_class: type

    def __init__(self, params: Any, **options: Any) -> None:
        variant = VARIANTS[self._variant]
        for name in REFUSED:
            if options.get(name, False):
                raise ValueError(
                    f"{name}=True is not supported by radam.torch (CPU steps with radam's "
                    f"kernel, outside autograd and CUDA graphs): use torch.optim for {name}"
                )
        # The whole optimizer's options (attributes of radam's), then each group's.
        self._whole = {
            o.name: options.pop(o.name, o.default)
            for o in options_of(variant)
            if not o.group and o.name != "device"
        }
        self._group_keys = tuple(o.name for o in options_of(variant) if o.group)
        self._radam: _NumpyAdam | None = None
        self._flat: list[torch.Tensor] = []  # every param, in group order
        self._param_views: list[np.ndarray] = []
        self._grads: list[Any] = []  # the grad tensors last seen
        self._grad_views: list[Any] = []  # their views (None where the grad was None)
        self._present: np.ndarray | slice = slice(None)  # which had a grad
        self._steps = np.zeros(0)  # each param's step count, as torch's "step" tensors see it
        self._mu = np.zeros(0)  # NAdam's mu_product per param
        self._with_state = 0  # how many params have an entry in self.state
        super().__init__(params, options)

    # -- groups ------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; each param must be a contiguous CPU tensor of a
        float dtype (checked before anything changes). The state so far is kept."""
        gi = len(self.param_groups)
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for i, p in enumerate(params):
            _check_param(p, _what(gi, i, p))
        for name in REFUSED:
            if group.get(name, False):
                raise ValueError(f"param_groups[{gi}]: {name}=True is not supported")
        super().add_param_group({**group, "params": params})
        # Check the new group's options with radam's rules now: a bad one must not stay.
        if hasattr(self, "_radam"):
            try:
                self._rebuild()  # sets nothing unless it succeeds
            except BaseException:
                self.param_groups.pop()
                raise

    def _rebuild(self) -> None:
        """radam's optimizer over every param of every group, keeping the state and
        step counts of the params it had (new groups come last)."""
        flat = [p for g in self.param_groups for p in g["params"]]
        views = [_numpy_view(p) for p in flat]
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append(
                {"params": views[start : start + n], **{k: _plain(g[k]) for k in self._group_keys}}
            )
            start += n
        fresh = self._radam_class(groups, **self._whole)
        old = self._radam
        if old is not None and old.tensor_step_counts and any(old.tensor_step_counts):
            sd = old.state_dict()
            fresh.load_state_dict(
                {"state": sd["state"], "param_groups": fresh.state_dict()["param_groups"]}
            )
        self._radam, self._flat, self._param_views = fresh, flat, views
        self._grads = [None] * len(flat)
        self._grad_views = [None] * len(flat)
        self._present = np.zeros(len(flat), bool)
        self._expose_state()

    def _sync_options(self) -> None:
        """Copy each group's options into radam's groups (radam validates them, and
        skips the work while none changed)."""
        for tg, rg in zip(self.param_groups, self._radam.param_groups):
            for k in self._group_keys:
                v = tg[k]
                if rg[k] is not v:
                    v = _plain(v)
                    if rg[k] != v:
                        rg[k] = v

    # -- the step ----------------------------------------------------------------------

    def _update_grads(self, grads: list[Any]) -> None:
        """Check the grads that changed since the last step, all before any is kept."""
        views = list(self._grad_views)
        for i, (g, seen) in enumerate(zip(grads, self._grads)):
            if g is seen:
                continue
            if g is None:
                views[i] = None
                continue
            error = _grad_error(g, self._flat[i], lambda i=i: self._where(i))
            if error is not None:
                raise error
            views[i] = _numpy_view(g)
        self._grads, self._grad_views = grads, views
        present = np.fromiter((g is not None for g in grads), bool, len(grads))
        self._present = slice(None) if present.all() else present

    def _where(self, flat_index: int) -> str:
        start = 0
        for gi, g in enumerate(self.param_groups):
            if flat_index < start + len(g["params"]):
                i = flat_index - start
                return _what(gi, i, g["params"][i])
            start += len(g["params"])
        return f"params[{flat_index}]"

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """One step of every param that has a grad (``step(closure=None)``); returns
        ``closure()``'s loss if given. The step hooks run around it, as torch's."""
        for pre in chain(_PRE_HOOKS.values(), self._optimizer_step_pre_hooks.values()):
            result = pre(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(
                        f"{pre} must return None or a tuple of (new_args, new_kwargs), "
                        f"but got {result}."
                    )
                args, kwargs = result
        out = self._step(*args, **kwargs)
        self._optimizer_step_code()
        for post in chain(self._optimizer_step_post_hooks.values(), _POST_HOOKS.values()):
            post(self, args, kwargs)
        return out

    # torch wraps an optimizer's step in a profiler range that runs these hooks; that
    # range costs about 0.1 ms a step on the CPU (measured here: radam's step of 1e6
    # params is 0.7 ms), so this step runs the hooks itself and is marked as wrapped.
    step.hooked = True  # type: ignore[attr-defined]

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if sum(len(g["params"]) for g in self.param_groups) != len(self._flat):
            self._rebuild()  # params were added to a group's list by hand
        grads = list(map(_GRAD, self._flat))
        if not all(map(operator.is_, grads, self._grads)):
            self._update_grads(grads)
        self._sync_options()
        radam = self._radam
        skipped = radam.skipped_steps
        radam.step(self._grad_views)
        if radam.skipped_steps != skipped:
            return loss
        self._steps[self._present] += 1
        if self._mu.size:
            self._mu[...] = radam._tensor_counts()[1]
        if self._with_state < len(self._flat):
            self._expose_state()
        return loss

    def _expose_state(self) -> None:
        """``self.state[p]``: torch views of radam's arrays, for each param that has
        stepped (as torch.optim: none before its first step), and its ``step``."""
        radam = self._radam
        counts, carries = radam._tensor_counts()
        dtype = np.float64 if torch.get_default_dtype() == torch.float64 else np.float32
        self._steps = np.array(counts, dtype)
        nadam = radam._algorithm == "nadam"
        # float64 whatever torch's scalar dtype: a saved product must resume bit for bit.
        self._mu = np.array(carries, np.float64) if nadam else np.zeros(0)
        steps, mus = torch.from_numpy(self._steps), torch.from_numpy(self._mu)
        self.state.clear()
        for i, (p, key) in enumerate(zip(self._flat, (t.key for t in radam._layout.tensors))):
            if counts[i] == 0 or key not in radam.state:
                continue
            entry: dict[str, Any] = {"step": steps[i]}
            if nadam:
                entry["mu_product"] = mus[i]
            entry.update({k: _torch_view(a) for k, a in radam.state[key].items()})
            self.state[p] = entry
        self._with_state = len(self.state)

    # -- state dicts -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict`` (param indices for params), with copies of the state
        tensors: ``torch.optim``'s optimizer of the same name loads it."""
        sd = super().state_dict()
        sd["state"] = {
            i: {k: v.clone() for k, v in entry.items()} for i, entry in sd["state"].items()
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict`` of this class or of ``torch.optim``'s optimizer of the
        same name (mid-run too). Everything is checked before anything changes."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(groups, self.param_groups)
        ):
            raise ValueError(
                "loaded state dict has a different number of parameter groups or params "
                "in a group than this optimizer"
            )
        for gi, g in enumerate(groups):
            for name in REFUSED:
                if g.get(name, False):
                    raise ValueError(
                        f"state_dict['param_groups'][{gi}]: {name}=True is not supported"
                    )
        ids = [i for g in groups for i in g["params"]]
        position = {pid: n for n, pid in enumerate(ids)}
        radam = self._radam
        names = [state_names(o) for o in radam._options("load_state_dict").options]
        tensors = radam._layout.tensors
        state: dict[int, dict[str, Any]] = {}
        for pid, entry in state_dict["state"].items():
            if pid not in position:
                raise ValueError(
                    f"state_dict['state'] has an entry for param {pid!r}, which is in no group"
                )
            n = position[pid]
            wanted = radam._tensor_state(names, tensors[n])
            converted: dict[str, Any] = {}
            for k, v in entry.items():
                if k in ("step", "mu_product"):
                    converted[k] = _plain(v)
                elif isinstance(v, torch.Tensor):
                    a = np.array(_numpy_view(v.detach().cpu()), copy=True)
                    want = wanted.get(k, (None, a.dtype))[1]
                    if a.dtype != want and _is_float(a.dtype) and _is_float(want):
                        a = a.astype(want)  # torch keeps state in the param's dtype
                    converted[k] = a
                else:
                    converted[k] = v
            state[n] = converted
        # This class's own dicts carry radam's options; torch.optim's do not.
        if all("grad_scale" in g for g in groups):
            radam_groups = []
            for s, rg in zip(groups, radam.state_dict()["param_groups"]):
                options = {k: _plain(s[k]) for k in self._group_keys if k in s}
                radam_groups.append({**rg, **options})
            radam.load_state_dict({"state": state, "param_groups": radam_groups})
        else:
            torch_groups = []
            for s, rg in zip(groups, radam.state_dict()["param_groups"]):
                g = {k: _plain(v) for k, v in s.items() if k not in ("params", "param_names")}
                torch_groups.append({**g, "params": rg["params"]})
            radam.load_torch_state_dict({"state": state, "param_groups": torch_groups})
        for tg, s, rg in zip(self.param_groups, groups, radam.param_groups):
            tg.update({k: v for k, v in s.items() if k not in ("params", "param_names")})
            tg.update({k: rg[k] for k in self._group_keys})
        self._expose_state()

    # -- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults,
            "param_groups": self.param_groups,
            "_whole": self._whole,
            "_saved": self.state_dict(),
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        saved = dict(saved)
        inner = saved.pop("_saved")
        whole = saved.pop("_whole")
        super().__setstate__({**saved, "state": defaultdict(dict)})
        self._whole = whole
        self._group_keys = tuple(o.name for o in options_of(VARIANTS[self._variant]) if o.group)
        self._radam = None
        self._rebuild()
        self.load_state_dict(inner)

    def __repr__(self) -> str:
        return super().__repr__().replace("(", f"(radam {self._variant}; ", 1)


def _make(name: str) -> type:
    """The class ``name``: its signature from radam's option table plus torch's keywords."""
    variant = VARIANTS[name]
    radam_class = getattr(variants, name, None) or _NumpyAdam
    defaults = defaults_of(variant)
    doc = (
        f"``torch.optim.{name}`` stepped by radam's kernel on CPU tensors. Options: "
        f"{', '.join(o.name for o in options_of(variant) if o.name != 'device')} "
        f"(radam's, see ``radam.{name}``), and torch's {', '.join(IGNORED + REFUSED)}."
    )

    def __init__(self: Any, params: Any, *args: Any, **options: Any) -> None:  # noqa: N807
        if len(args) > len(POSITIONAL):
            raise TypeError(
                f"radam.torch.{name}() takes {', '.join(POSITIONAL)} positionally, the "
                "other options by keyword"
            )
        for k, v in zip(POSITIONAL, args):
            if k in options:
                raise TypeError(f"radam.torch.{name}() got multiple values for {k!r}")
            options[k] = v
        for k in options:
            if k not in defaults and k not in IGNORED + REFUSED or k == "device":
                raise TypeError(f"radam.torch.{name}() got an unexpected keyword argument {k!r}")
        full = {k: v for k, v in defaults.items() if k != "device"}
        full.update({k: None for k in IGNORED})
        full.update({k: False for k in REFUSED})
        full.update(options)
        for key, value in variant.fixed.items():
            if full[key] != value:
                raise ValueError(f"{name}'s {key} is always {value!r}")
        _TorchOptimizer.__init__(self, params, **full)

    cls = type(
        name,
        (_TorchOptimizer,),
        {"__init__": __init__, "__doc__": doc, "_variant": name, "_radam_class": radam_class},
    )
    cls.__module__ = __name__
    cls.__qualname__ = name
    return cls


Adam = _make("Adam")
AdamW = _make("AdamW")
Adamax = _make("Adamax")
NAdam = _make("NAdam")
RAdam = _make("RAdam")
