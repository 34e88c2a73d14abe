"""Image names: ``[HOST[:PORT]/]PATH[:TAG]``, checked and given a tag (``latest`` by default).

Names are kept as the user wrote them (no ``docker.io/library/`` prefix is added): the store
is local and ``busybox`` and ``busybox:latest`` are the same name, nothing more. The grammar
is the distribution spec's, without digests (a tag names a manifest; a digest already is one).
"""

from __future__ import annotations

from kobako._record import Record
from kobako.errors import InvalidArgument

__all__ = ["Reference", "parse"]

_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_PATH_SEPARATORS = frozenset("._-")
_TAG = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-")
_HOST = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ.-")


class Reference(Record):
    """An image name split in its repository and its tag.

    Attributes:
        repository: The name without its tag, e.g. ``"localhost:5000/team/app"``.
        tag: The tag, e.g. ``"latest"``.
    """

    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def _path_component_ok(part: str) -> bool:
    if not part or not set(part) <= _LOWER | _PATH_SEPARATORS:
        return False
    return part[0] in _LOWER and part[-1] in _LOWER


def _host_ok(part: str) -> bool:
    host, colon, port = part.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return False
    return bool(host) and set(host) <= _HOST and host[0] != "-" and host[-1] != "-"


def parse(name: str) -> Reference:
    """Check an image name and split it, giving it the tag ``latest`` if it has none.

    Args:
        name: An image name such as ``"busybox"``, ``"debian:bookworm"`` or
            ``"localhost:5000/team/app:1.0"``.

    Returns:
        The repository and tag.

    Raises:
        InvalidArgument: The name is malformed or holds a digest.

    Example:
        >>> str(parse("busybox"))
        'busybox:latest'
    """
    if "@" in name:
        raise InvalidArgument(f"invalid image name {name!r}: digests cannot be tagged")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        repository, tag = name[:colon], name[colon + 1 :]
    else:
        repository, tag = name, "latest"
    if not (
        0 < len(tag) <= 128 and set(tag) <= _TAG and tag[0] not in ".-" and len(repository) <= 255
    ):
        raise InvalidArgument(f"invalid image name {name!r}")
    parts = repository.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        ok = _host_ok(first)
        parts = parts[1:]
    else:
        ok = True
    if not ok or not all(_path_component_ok(p) for p in parts):
        raise InvalidArgument(f"invalid image name {name!r}")
    return Reference(repository=repository, tag=tag)
