"""``radam.minimize``: Adam behind SciPy's ``minimize`` interface.

Two ways to call it, with the same result::

    res = radam.minimize(fun, x0, jac=True, lr=1e-2, maxiter=5000)
    res = scipy.optimize.minimize(fun, x0, jac=True, method=radam.minimize,
                                  options={"lr": 1e-2, "maxiter": 5000})

SciPy is optional: it is imported only here, when ``minimize`` runs, for
``scipy.optimize.OptimizeResult``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable

import numpy as np

from ._options import VARIANTS, options_of

# SciPy's custom-method protocol passes these even when the caller gave none.
_NOT_FOR_ADAM = ("hess", "hessp", "bounds", "constraints")


def _optimize_result() -> Any:
    try:
        from scipy.optimize import OptimizeResult
    except ImportError as err:
        raise ImportError(
            "radam.minimize returns a scipy.optimize.OptimizeResult and so needs SciPy: "
            "pip install scipy"
        ) from err
    return OptimizeResult


def _adam_option_names() -> set[str]:
    """radam.Adam's options, but device (minimize runs on the CPU)."""
    return {o.name for o in options_of(VARIANTS["Adam"])} - {"device"}


def _empty_constraints(constraints: Any) -> bool:
    if constraints is None:
        return True
    if isinstance(constraints, dict):
        return False
    try:
        return len(constraints) == 0
    except TypeError:
        return False


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    args: tuple = (),
    jac: Any = True,
    hess: Any = None,
    hessp: Any = None,
    bounds: Any = None,
    constraints: Any = (),
    callback: Callable[..., Any] | None = None,
    *,
    maxiter: int = 1000,
    gtol: float | None = None,
    tol: float | None = None,
    disp: bool = False,
    **adam_options: Any,
) -> Any:
    """Minimize ``fun`` with Adam; returns a ``scipy.optimize.OptimizeResult``.

    ``fun(x, *args)`` returns ``(f, g)`` when ``jac=True`` (the default), or just
    ``f`` when ``jac`` is a callable ``jac(x, *args) -> g``. Adam needs
    gradients: finite differences (``jac=False``/``None``/``"2-point"``) are
    not offered, and ``hess``, ``hessp``, ``bounds`` and ``constraints`` are
    refused (Adam cannot honour them) rather than silently ignored.

    Each iteration is one Adam step followed by one evaluation, so
    ``nfev == nit + 1`` and ``res.fun``/``res.jac`` belong to ``res.x``. It
    stops with ``success=True`` when the largest gradient component is at most
    ``gtol`` (default ``tol``, else 1e-5), and with ``success=False`` after
    ``maxiter`` iterations, on a non-finite value or gradient, or when
    ``callback`` raises ``StopIteration``. ``callback(xk)`` is called after
    each iteration (or ``callback(intermediate_result=OptimizeResult(x, fun))``
    when its only parameter has that name, as in SciPy).

    Every other keyword is an option of :class:`radam.Adam` (``lr``,
    ``betas``, ``eps``, ``weight_decay``, ``amsgrad``, ...). ``x0`` is copied
    (float32 stays float32, anything else becomes float64) and never changed.
    """
    OptimizeResult = _optimize_result()
    from .optimizer import Adam

    for name, value in (("hess", hess), ("hessp", hessp), ("bounds", bounds)):
        if value is not None:
            raise ValueError(
                f"radam.minimize cannot use {name}: Adam is a first-order method "
                f"without bounds; pass {name}=None"
            )
    if not _empty_constraints(constraints):
        raise ValueError("radam.minimize cannot handle constraints: Adam is unconstrained")
    known = _adam_option_names()
    unknown = sorted(set(adam_options) - known)
    if unknown:
        raise TypeError(
            f"radam.minimize got unknown option(s) {unknown}; it takes maxiter, gtol, tol, "
            f"disp and the options of radam.Adam: {sorted(known)}"
        )
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 0:
        raise ValueError(f"maxiter must be a whole number >= 0, got {maxiter!r}")
    if gtol is None:
        gtol = 1e-5 if tol is None else tol
    if isinstance(gtol, bool) or not isinstance(gtol, numbers.Real) or not gtol >= 0:
        raise ValueError(f"gtol must be a real number >= 0, got {gtol!r}")
    if not isinstance(args, tuple):
        args = (args,)

    if jac is True:
        evaluate_pair = fun
    elif callable(jac):

        def evaluate_pair(x: np.ndarray, *a: Any) -> tuple[Any, Any]:
            return fun(x, *a), jac(x, *a)

    else:
        raise ValueError(
            f"radam.minimize needs gradients: pass jac=True (fun returns (f, g)) or a callable "
            f"jac, got jac={jac!r}"
        )

    x0_array = np.asarray(x0)
    dtype = np.float32 if x0_array.dtype == np.float32 else np.float64
    x = np.array(np.atleast_1d(x0_array), dtype=dtype, order="C", copy=True)
    grad = np.empty_like(x)

    def evaluate() -> float:
        pair = evaluate_pair(x, *args)
        if jac is True and (isinstance(pair, (str, bytes)) or not _is_pair(pair)):
            raise TypeError(
                "with jac=True, fun must return a pair (f, g): the value and the gradient; "
                f"it returned {_shown(pair)}. Return (f, g), or pass the gradient as a "
                "callable jac(x, *args)"
            )
        value, g = pair
        g = np.asarray(g)
        if g.shape != x.shape:
            raise ValueError(f"the gradient returned for x of shape {x.shape} has shape {g.shape}")
        np.copyto(grad, g, casting="same_kind")
        return float(np.asarray(value).reshape(()))

    opt = Adam([x], **adam_options)
    intermediate = callback is not None and set(inspect.signature(callback).parameters) == {
        "intermediate_result"
    }

    f = evaluate()
    nit, nfev = 0, 1
    status, message = 0, ""
    while True:
        if not (math.isfinite(f) and np.isfinite(grad).all()):
            status, message = 3, "fun returned a non-finite value or gradient."
            break
        if (np.max(np.abs(grad)) if grad.size else 0.0) <= gtol:
            status, message = 0, "Optimization terminated successfully: |gradient| <= gtol."
            break
        if nit >= maxiter:
            status, message = 1, "Maximum number of iterations has been exceeded."
            break
        opt.step([grad])
        nit += 1
        f = evaluate()
        nfev += 1
        if callback is not None:
            try:
                if intermediate:
                    callback(intermediate_result=OptimizeResult(x=x.copy(), fun=f))
                else:
                    callback(x.copy())
            except StopIteration:
                status, message = 99, "`callback` raised `StopIteration`."
                break
    if disp:
        print(message)
        print(f"         Current function value: {f:.6g}")
        print(f"         Iterations: {nit}")
        print(f"         Function evaluations: {nfev}")
    return OptimizeResult(
        x=x,
        fun=f,
        jac=grad.copy(),
        nit=nit,
        nfev=nfev,
        njev=nfev,
        status=status,
        success=status == 0,
        message=message,
    )


def _is_pair(value: Any) -> bool:
    try:
        return len(value) == 2
    except TypeError:
        return False


def _shown(value: Any) -> str:
    """A short description of what fun returned."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
