"""Read-only views of what the kernel holds: ``opt.state`` and each group's params.

The engine is built over the very arrays these hold, so a replacement would
silently fall out of the optimizer (the kernel would go on updating the old
array while ``state_dict`` returned the new one). Reading works as with a dict
or a list; every way of replacing something raises a TypeError that says what
to do instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn


class FrozenMapping(Mapping):
    """A mapping that refuses to change: ``opt.state`` (key -> entry) and each
    entry (name -> array). ``where`` is how messages name it, e.g. "opt.state"."""

    __slots__ = ("_data", "_where", "_instead")

    def __init__(self, data: dict[Any, Any], where: str, instead: str) -> None:
        self._data = data
        self._where = where
        self._instead = instead

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return repr(self._data)

    def _refuse(self, key: Any = None, *_: Any, **__: Any) -> NoReturn:
        where = self._where if key is None else f"{self._where}[{key!r}]"
        raise TypeError(
            f"{where} cannot be replaced or removed: the optimizer updates the arrays it "
            f"holds in place, so a replacement would silently fall out of it; {self._instead}"
        )

    def __setitem__(self, key: Any, value: Any) -> NoReturn:
        self._refuse(key)

    def __delitem__(self, key: Any) -> NoReturn:
        self._refuse(key)

    def _refuse_all(self, *_: Any, **__: Any) -> NoReturn:
        self._refuse()

    update = clear = pop = popitem = setdefault = __ior__ = _refuse_all


# What opt.state and its entries say to do instead of replacing an array.
STATE_INSTEAD = (
    "change the arrays in place (np.copyto(opt.state[key]['exp_avg'], new)) or load a "
    "whole state with load_state_dict"
)


def state_entry(key: Any, arrays: dict[str, Any]) -> FrozenMapping:
    """``opt.state[key]``: one tensor's state arrays by name."""
    return FrozenMapping(arrays, f"opt.state[{key!r}]", STATE_INSTEAD)


def state_mapping(entries: dict[Any, FrozenMapping]) -> FrozenMapping:
    """``opt.state``: key -> :func:`state_entry`."""
    return FrozenMapping(entries, "opt.state", STATE_INSTEAD)


class ParamList(list):
    """A group's ``"params"``: a list that refuses changes, since the engine
    steps the arrays it was built with."""

    __slots__ = ()

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError(
            "a param group's 'params' cannot be changed: the optimizer steps the arrays "
            "it was built with; build a new optimizer over the new params"
        )

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    # Equal only to itself: the optimizer's option cache then sees a group
    # whose "params" was replaced, even by a list of the same values.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = None  # type: ignore[assignment]

    def __copy__(self) -> list[Any]:
        return list(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))
