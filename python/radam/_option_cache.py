"""The options an optimizer validated last (:class:`OptionCache`), so that a step
whose param groups did not change skips validating them again."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

V = TypeVar("V")

_SCALARS = (float, int, bool, str, type(None))


def _immutable_options(group: dict[str, Any]) -> bool:
    """Whether every option of a group (params aside) is an immutable scalar or
    a tuple of them, so that an equal value can only mean an equal option."""
    for k, v in group.items():
        if k == "params" or k == "param_names":
            continue
        if type(v) is tuple:
            if not all(type(x) in _SCALARS for x in v):
                return False
        elif type(v) not in _SCALARS:
            return False
    return True


def _option_values(group: dict[str, Any]) -> list[tuple[str, Any]] | None:
    """A group's options as plain values (lists copied to tuples), to detect
    changes; None when one is callable (a schedule: it changes every step),
    or holds one (a beta1 schedule in betas)."""
    values = []
    for k, v in group.items():
        if k == "params" or k == "param_names":
            continue
        if callable(v) or (type(v) in (tuple, list) and any(callable(x) for x in v)):
            return None
        values.append((k, tuple(v) if type(v) is list else v))
    return values


class OptionCache(Generic[V]):
    """The options an optimizer validated last, reused while no group changed.

    A group whose every option value is immutable (numbers, strings, tuples of
    them) is compared by its keys and values as they are: tuples compare items
    by identity first, a few hundred ns per group (and a group's ParamList is
    equal only to itself, so a replaced one differs). Otherwise by a copy of
    its values (lists as tuples), taken when the options were validated. A
    group holding a schedule is never reused: a schedule's value changes with
    the step count. The entry is also tied to the state names it was checked
    against (a new state checks again)."""

    __slots__ = ("_names", "_copied", "_key", "_value")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._names: Any = None
        self._copied = False
        self._key: Any = None
        self._value: V | None = None

    def get(self, groups: list[Any], names: Any) -> V | None:
        if self._names is not names:  # also None: nothing cached
            return None
        try:
            if self._copied:
                key: Any = [_option_values(g) for g in groups]
            else:
                key = [(tuple(g), tuple(g.values())) for g in groups]
            if key == self._key:
                return self._value
        except Exception:  # an odd value (e.g. an array): validate it
            pass
        return None

    def put(self, groups: list[Any], names: Any, value: V) -> None:
        self.clear()
        if all(_immutable_options(g) for g in groups):
            self._key = [(tuple(g), tuple(g.values())) for g in groups]
        else:
            copies = [_option_values(g) for g in groups]
            if None in copies:
                return  # a schedule: validated at every step
            self._key, self._copied = copies, True
        self._names, self._value = names, value
