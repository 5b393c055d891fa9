"""``radam.Adam`` and ``radam.AdamW``: the optimizer users hold."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._options import EngineOptions, engine_options
from ._params import flatten_grads, layout_of

DEVICES = ("cpu", "gpu", "auto")


class Adam:
    """Adam (Kingma & Ba, Algorithm 1) over NumPy arrays, updated in place.

    Same results as ``torch.optim.Adam`` for the same options. ``params`` is a
    list of arrays, a dict name -> array, or a list of group dicts with
    per-group options; ``step(grads)`` takes grads with the same structure.
    With ``decoupled_weight_decay=True`` the decay is AdamW's.

    State (``opt.state[key]``: ``exp_avg``, ``exp_avg_sq`` and with AMSGrad
    ``max_exp_avg_sq``) is created at the first step as NumPy arrays beside the
    params. ``key`` is the name for dict params, the flat index otherwise.
    ``step`` is thread-safe: concurrent calls run one after the other.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = False,
        maximize: bool = False,
        device: str = "cpu",
    ) -> None:
        self.defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        engine_options(self.defaults, "")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        self._layout, overrides = layout_of(params)
        self.param_groups: list[dict[str, Any]] = []
        for gi, override in enumerate(overrides):
            group = {**self.defaults, **override}
            if "betas" in override:
                group["betas"] = (
                    tuple(group["betas"]) if hasattr(group["betas"], "__len__") else group["betas"]
                )
            engine_options(group, f"params[{gi}]")
            members = [t for t in self._layout.tensors if t.group == gi]
            group["params"] = [t.array for t in members]
            if all(t.name is not None for t in members):
                group["param_names"] = [t.name for t in members]
            self.param_groups.append(group)
        self.device = _resolve_device(device)
        self.state: dict[Any, dict[str, np.ndarray]] = {}
        self._step = 0
        self._engine: Any = None
        self._amsgrad: list[bool] = []
        self._lock = threading.Lock()

    @property
    def step_count(self) -> int:
        """The number of steps taken (the ``t`` of the bias corrections)."""
        return self._step

    def _options(self) -> list[EngineOptions]:
        options = [engine_options(g, f"param_groups[{i}]") for i, g in enumerate(self.param_groups)]
        if self._engine is not None:
            for i, (opts, had) in enumerate(zip(options, self._amsgrad)):
                if opts.amsgrad != had:
                    raise ValueError(
                        f"param_groups[{i}]['amsgrad'] cannot change once state exists"
                    )
        return options

    def _build(self, amsgrad: list[bool], state: dict[Any, dict[str, np.ndarray]]) -> Any:
        tensors = self._layout.tensors
        return _core.CpuEngine(
            [t.label for t in tensors],
            [t.array for t in tensors],
            [state[t.key]["exp_avg"] for t in tensors],
            [state[t.key]["exp_avg_sq"] for t in tensors],
            [state[t.key].get("max_exp_avg_sq") for t in tensors],
            [t.group for t in tensors],
        )

    def _fresh_state(self, amsgrad: list[bool]) -> dict[Any, dict[str, np.ndarray]]:
        state = {}
        for t in self._layout.tensors:
            entry = {"exp_avg": np.zeros_like(t.array), "exp_avg_sq": np.zeros_like(t.array)}
            if amsgrad[t.group]:
                entry["max_exp_avg_sq"] = np.zeros_like(t.array)
            state[t.key] = entry
        return state

    def step(self, grads: Any) -> None:
        """One Adam step: every param moves in place. ``grads`` mirrors ``params``.

        On any error (a missing, misshapen, mistyped or aliasing grad, a bad
        option) a clear exception is raised and params and state are untouched.
        """
        if grads is None:
            raise TypeError("grads is None: pass the gradients, with the structure of params")
        flat = flatten_grads(self._layout, grads)
        with self._lock:
            options = self._options()
            engine, state, amsgrad = self._engine, self.state, self._amsgrad
            if engine is None:
                amsgrad = [o.amsgrad for o in options]
                state = self._fresh_state(amsgrad)
                engine = self._build(amsgrad, state)
            t = self._step + 1
            engine.step(flat, t, options)
            self._engine, self.state, self._amsgrad, self._step = engine, state, amsgrad, t

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state, laid out as ``torch.optim``'s.

        ``{"state": {index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}},
        "param_groups": [{options..., "params": [indices][, "param_names": [...]]}]}``.
        The arrays are copies: later steps do not change a saved dict.
        """
        with self._lock:
            state = {}
            for i, t in enumerate(self._layout.tensors):
                if t.key in self.state:
                    entry = {"step": self._step}
                    entry.update({k: v.copy() for k, v in self.state[t.key].items()})
                    state[i] = entry
            groups, start = [], 0
            for g in self.param_groups:
                saved = {k: v for k, v in g.items() if k != "params"}
                saved["betas"] = tuple(g["betas"])
                saved["params"] = list(range(start, start + len(g["params"])))
                if "param_names" in g:
                    saved["param_names"] = list(g["param_names"])
                start += len(g["params"])
                groups.append(saved)
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` saved from an optimizer over params of the
        same structure, shapes and dtypes. Everything is checked before anything
        changes; the arrays are copied in. A resumed run continues bit for bit.
        """
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        new_groups = []
        for i, (saved, ours) in enumerate(zip(saved_groups, self.param_groups)):
            where = f"state_dict['param_groups'][{i}]"
            n_saved, n_ours = len(saved.get("params", ())), len(ours["params"])
            if n_saved != n_ours:
                raise ValueError(f"{where} has {n_saved} params, this group has {n_ours}")
            if (
                "param_names" in saved
                and "param_names" in ours
                and list(saved["param_names"]) != ours["param_names"]
            ):
                raise ValueError(f"{where}['param_names'] differ from this optimizer's")
            options = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            group = {**ours, **options}
            engine_options(group, where)
            new_groups.append(group)
        amsgrad = [bool(g["amsgrad"]) for g in new_groups]
        step, state = self._check_saved_state(state_dict["state"], amsgrad)
        engine = self._build(amsgrad, state) if state else None
        with self._lock:
            for ours, group in zip(self.param_groups, new_groups):
                ours.update({k: v for k, v in group.items() if k not in ("params", "param_names")})
            self._engine, self.state, self._amsgrad, self._step = engine, state, amsgrad, step

    def _check_saved_state(self, saved: Any, amsgrad: list[bool]) -> tuple[int, dict]:
        if not isinstance(saved, Mapping):
            raise ValueError("state_dict['state'] must be a dict index -> state")
        tensors = self._layout.tensors
        if not saved:
            return 0, {}
        if sorted(saved) != list(range(len(tensors))):
            raise ValueError(
                f"state_dict['state'] must have an entry for each of the {len(tensors)} params "
                f"(indices 0..{len(tensors) - 1}), got {sorted(saved)}"
            )
        steps, state = set(), {}
        for i, t in enumerate(tensors):
            entry, where = saved[i], f"state_dict['state'][{i}]"
            names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad[t.group] else [])
            missing = [n for n in names + ["step"] if n not in entry]
            if missing:
                raise ValueError(f"{where} lacks {missing}")
            step = entry["step"]
            if isinstance(step, np.ndarray) and step.shape == ():
                step = step.item()
            if (
                isinstance(step, bool)
                or not isinstance(step, (int, np.integer, float))
                or step != int(step)
                or step < 1
            ):
                raise ValueError(f"{where}['step'] must be a whole number >= 1, got {step!r}")
            steps.add(int(step))
            copies = {}
            for n in names:
                value = entry[n]
                if not isinstance(value, np.ndarray):
                    raise TypeError(
                        f"{where}[{n!r}] must be a numpy.ndarray, got {type(value).__name__}"
                    )
                if value.shape != t.array.shape or value.dtype != t.array.dtype:
                    raise ValueError(
                        f"{where}[{n!r}] has shape {value.shape} and dtype {value.dtype}; "
                        f"params{t.label} has shape {t.array.shape} and dtype {t.array.dtype}"
                    )
                copies[n] = np.array(value, order="C", copy=True)
            state[t.key] = copies
        if len(steps) != 1:
            raise ValueError(f"state_dict['state'] entries disagree on 'step': {sorted(steps)}")
        return steps.pop(), state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} (device={self.device!r}, step={self._step})"]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={g[k]!r}" for k in self.defaults)
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
            amsgrad=amsgrad,
            maximize=maximize,
            device=device,
        )


def _resolve_device(device: str) -> str:
    if device == "gpu":
        raise RuntimeError("device='gpu' is not available in this build of radam; use device='cpu'")
    return "cpu"
