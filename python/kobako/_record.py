"""Frozen, keyword-only records: what ``@dataclass(frozen=True, kw_only=True)`` gives, cheaply.

The CLI builds a handful of these per run and must start in a few milliseconds; the
:mod:`dataclasses` module costs more than that to import (it imports :mod:`inspect`), and
each ``@dataclass`` class then runs generated code through ``exec()``. A :class:`Record`
subclass gets the same behaviour from generic methods instead::

    class Point(Record):
        x: int
        y: int = 0

    p = Point(x=1)            # keyword arguments only; TypeError on unknown or missing ones
    p.replace(y=2)            # Point(x=1, y=2); p itself never changes

Every annotation of the class body (and of its Record bases, in order) is a field, ClassVar
annotations included: records have none. A class attribute of that name is its default.
Defaults are shared by every instance, so they must be immutable (a tuple, None, another
record), as ``default_factory`` does not exist here. Type checkers see the class as a
dataclass (:func:`typing.dataclass_transform`): they check constructor calls and reject
assignments. Equality, hashing and ``repr`` are a dataclass's.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds to import; type checkers treat this as True
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self, dataclass_transform
else:

    def dataclass_transform(**_: object) -> object:
        return lambda cls: cls


__all__ = ["Record"]


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Record:
    """Base of immutable records with keyword-only constructors."""

    #: The field names, in declaration order (bases first).
    _fields: ClassVar[tuple[str, ...]] = ()
    #: The fields that have a default, with it.
    _defaults: ClassVar[dict[str, Any]] = {}
    #: No positional class patterns: ``case Exit(status=0)``, as for a keyword-only dataclass.
    __match_args__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict.fromkeys(cls._fields)
        defaults = dict(cls._defaults)
        # this class's own annotations (inspect.get_annotations would import inspect)
        for name in cls.__dict__.get("__annotations__", {}):  # noqa: RUF063
            fields[name] = None
            if name in cls.__dict__:
                default = cls.__dict__[name]
                if type(default).__hash__ is None:
                    raise TypeError(
                        f"{cls.__qualname__}.{name}: mutable default {default!r} is not allowed"
                    )
                defaults[name] = default
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        for name in kwargs:
            if name not in cls._fields:
                raise TypeError(f"{cls.__qualname__}() got an unexpected keyword argument {name!r}")
        if missing := [n for n in cls._fields if n not in kwargs and n not in cls._defaults]:
            names = ", ".join(repr(n) for n in missing)
            raise TypeError(f"{cls.__qualname__}() missing required keyword arguments: {names}")
        values = self.__dict__
        values.update(cls._defaults)
        values.update(kwargs)

    def _values(self) -> tuple[Any, ...]:
        values = self.__dict__
        return tuple(values[name] for name in self._fields)

    if not TYPE_CHECKING:  # seen, these would let type checkers accept any assignment

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(f"cannot assign to field {name!r}")  # as dataclasses say

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        values = self.__dict__
        fields = ", ".join(f"{name}={values[name]!r}" for name in self._fields)
        return f"{type(self).__qualname__}({fields})"

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, as :func:`dataclasses.replace` makes.

        Args:
            **changes: New values, by field name.

        Returns:
            A new record of the same class.

        Raises:
            TypeError: A name is not a field.
        """
        values = dict(zip(self._fields, self._values(), strict=True))
        values.update(changes)
        return type(self)(**values)
