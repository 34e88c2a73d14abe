"""The base of the API's objects, as docker-py's ``Model``: a client, the inspect document."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, ClassVar

    from kobako.client import Client

__all__ = ["Model", "filter_map"]


class Model:
    """An object of the store as ``docker inspect`` shows it (a container, volume, network).

    Attributes:
        client: The client it came from.
        attrs: Its inspect document, as of the last ``reload()``.
    """

    #: The key of :attr:`attrs` that holds its ID (a volume's is its ``Name``).
    id_attribute: ClassVar[str] = "Id"

    def __init__(self, client: Client, attrs: dict[str, Any]) -> None:
        self.client = client
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.short_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def id(self) -> str:
        """Its ID (64 hex digits; a volume's name)."""
        return str(self.attrs[self.id_attribute])

    @property
    def short_id(self) -> str:
        """Its ID cut to 12 characters."""
        return self.id[:12]


def filter_map(given: Mapping[str, Any] | None, allowed: Sequence[str]) -> dict[str, list[str]]:
    """docker-py's ``filters`` mapping as lists of strings (booleans as ``"true"``/``"false"``).

    Raises:
        InvalidArgument: An unknown filter.
    """
    from kobako.errors import InvalidArgument

    out: dict[str, list[str]] = {}
    for key, value in (given or {}).items():
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")
        values = value if isinstance(value, list | tuple) else [value]
        out[key] = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return out
