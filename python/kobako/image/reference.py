"""Image references, parsed and normalised as Docker does (``distribution/reference``).

``busybox`` is ``docker.io/library/busybox:latest``; ``ghcr.io/org/app@sha256:…`` pins a
manifest; ``localhost:5000/team/app:1.0`` names a registry by host and port. The store keeps
names in their full form and shows them in Docker's *familiar* form (``busybox:latest``).

Grammar (the distribution spec's)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]      a first component with "." or ":", or "localhost"
    path-comp  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest     := "sha256:" [a-f0-9]{64}
"""

from __future__ import annotations

from kobako._record import Record
from kobako.errors import InvalidArgument

__all__ = ["DEFAULT_DOMAIN", "Reference", "familiar", "parse", "parse_digest"]

#: The registry a name without a domain refers to.
DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL = "library/"

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG_FIRST = _ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_TAG = _TAG_FIRST | frozenset(".-")
_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_HEX = frozenset("0123456789abcdef")


class Reference(Record):
    """A parsed, normalised image reference.

    Attributes:
        domain: The registry, e.g. ``"docker.io"`` or ``"localhost:5000"``.
        path: The repository path in it, e.g. ``"library/busybox"``.
        tag: The tag, or None when the reference has only a digest.
        digest: The pinned manifest digest, or None.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The full repository name, e.g. ``"docker.io/library/busybox"``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The repository as Docker shows it, e.g. ``"busybox"`` or ``"user/app"``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.repository
        path = self.path
        if path.startswith(_OFFICIAL) and "/" not in path[len(_OFFICIAL) :]:
            return path[len(_OFFICIAL) :]
        first = path.split("/", 1)[0]
        if "/" in path and ("." in first or first == "localhost"):
            # "docker.io/a.b/c" without its domain would name the registry a.b: keep it.
            return self.repository
        return path

    @property
    def familiar(self) -> str:
        """The reference as Docker shows it, e.g. ``"busybox:latest"``."""
        return self.familiar_repository + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.repository + self._suffix()


def _path_component_ok(part: str) -> bool:
    """``[a-z0-9]+`` runs joined by ``.``, ``_``, ``__`` or any number of ``-``."""
    if not part or part[0] not in _ALNUM or part[-1] not in _ALNUM:
        return False
    i = 0
    while i < len(part):
        c = part[i]
        if c in _ALNUM:
            i += 1
            continue
        j = i
        while j < len(part) and part[j] not in _ALNUM:
            j += 1
        sep = part[i:j]
        if not (sep in (".", "_", "__") or set(sep) == {"-"}):
            return False
        i = j
    return True


def _domain_ok(part: str) -> bool:
    host, colon, port = part.partition(":")
    if colon and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return False
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address
        return len(host) > 2 and set(host[1:-1]) <= _HEX | frozenset(":ABCDEF.")
    labels = host.split(".")
    return all(
        label and set(label) <= _HOST and label[0] != "-" and label[-1] != "-" for label in labels
    )


def parse_digest(text: str) -> str:
    """Check a ``sha256:<64 hex>`` digest and return it.

    Raises:
        InvalidArgument: It is not one.
    """
    algorithm, _, hexpart = text.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or not set(hexpart) <= _HEX:
        raise InvalidArgument(f"invalid digest {text!r}: expected sha256:<64 hex digits>")
    return text


def parse(name: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise an image reference as Docker does.

    Args:
        name: A reference such as ``"busybox"``, ``"debian:bookworm"``,
            ``"localhost:5000/team/app:1.0"`` or ``"alpine@sha256:…"``.
        default_tag: Give a reference with neither tag nor digest the tag ``latest``.

    Returns:
        The reference, with ``docker.io`` and ``library/`` added where Docker adds them.

    Raises:
        InvalidArgument: The reference is malformed; the message names it and says why.

    Example:
        >>> str(parse("busybox"))
        'docker.io/library/busybox:latest'
        >>> parse("busybox").familiar
        'busybox:latest'
    """

    def bad(why: str = "") -> InvalidArgument:
        return InvalidArgument(f"invalid reference format{': ' + why if why else ''}: {name!r}")

    if not name or len(name) > 4096:
        raise bad()
    remainder, at, digest = name.partition("@")
    if at:
        try:
            parse_digest(digest)
        except InvalidArgument:
            raise bad("bad digest") from None
    colon = remainder.rfind(":")
    tag: str | None = None
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not (0 < len(tag) <= 128 and tag[0] in _TAG_FIRST and set(tag) <= _TAG):
            raise bad("bad tag")
    parts = remainder.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _domain_ok(first):
            raise bad("bad registry host")
        domain, parts = first, parts[1:]
    elif len(parts) > 1 and first != first.lower() and first.lower() == "localhost":
        raise bad()
    else:
        domain = DEFAULT_DOMAIN
    if domain == _LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    for part in parts:
        if part != part.lower() and _path_component_ok(part.lower()):
            raise bad("repository name must be lowercase")
        if not _path_component_ok(part):
            raise bad()
    path = "/".join(parts)
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL + path
    if len(domain) + 1 + len(path) > 255:
        raise bad("repository name must not be more than 255 characters")
    if tag is None and not at and default_tag:
        tag = "latest"
    return Reference(domain=domain, path=path, tag=tag, digest=digest if at else None)


def familiar(name: str) -> str:
    """A stored (full) name in Docker's familiar form: ``docker.io/library/x:t`` → ``x:t``."""
    try:
        return parse(name, default_tag=False).familiar
    except InvalidArgument:
        return name
