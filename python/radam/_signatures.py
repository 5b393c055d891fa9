"""Each optimizer class's ``__init__`` signature and the options part of its
docstring, made from the option table (``_options.OPTIONS`` and ``VARIANTS``):
what ``help()``, ``inspect.signature`` and the API docs show cannot drift from
what the class takes."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ._options import VARIANTS, defaults_of, options_of


def make_init(name: str, setup: str = "_setup") -> Callable[..., None]:
    """The ``__init__`` of class ``name`` of :data:`VARIANTS`: its signature is
    ``(self, params, <positional options>, *, <the others>)`` with the class's
    defaults (what ``help()`` and ``inspect.signature`` show), and it hands the
    options, checked against that signature, to ``self.<setup>(params, options)``."""
    variant = VARIANTS[name]
    defaults = defaults_of(variant)
    kinds = inspect.Parameter
    parameters = [
        kinds("self", kinds.POSITIONAL_OR_KEYWORD),
        kinds("params", kinds.POSITIONAL_OR_KEYWORD),
    ]
    taken = options_of(variant)
    positional = [
        o
        for o in taken
        if o.positional and o.applies_to(variant.rule) and o.name not in variant.fixed
    ]
    for o in taken:
        kind = kinds.POSITIONAL_OR_KEYWORD if o in positional else kinds.KEYWORD_ONLY
        parameters.append(kinds(o.name, kind, default=defaults[o.name]))
    parameters.sort(key=lambda p: p.kind)  # stable: the table's order within each kind
    signature = inspect.Signature(parameters)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        del options["self"]
        params = options.pop("params")
        for key, value in variant.fixed.items():
            if options[key] is not value and options[key] != value:
                raise ValueError(
                    f"{name}'s {key} is always {value!r}: {key} must be {value!r} "
                    f"(radam.Adam takes other values)"
                )
        getattr(self, setup)(params, options)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{name}.__init__"
    return __init__


def from_table(name: str) -> Callable[[type], type]:
    """A class decorator: the class is entry ``name`` of :data:`VARIANTS`. It gets
    its ``__init__`` (:func:`make_init`) and the options part of its docstring
    (:func:`options_doc`, after the class's own)."""

    def decorate(cls: type) -> type:
        cls._variant = name  # type: ignore[attr-defined]
        cls.__init__ = make_init(name)  # type: ignore[misc]
        cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\n{options_doc(name)}"
        return cls

    return decorate


def options_doc(name: str) -> str:
    """The options section of class ``name``'s docstring."""
    variant = VARIANTS[name]
    defaults = defaults_of(variant)
    lines = ["Options (the defaults are this class's):", ""]
    for o in options_of(variant):
        fixed = " (fixed)" if o.name in variant.fixed else ""
        lines.append(f"- ``{o.name}={defaults[o.name]!r}``{fixed}: {o.doc}.")
    return "\n".join(lines)
