"""A client of the OCI distribution API: manifests and blobs, both ways, with Docker's auth.

The transport is a small HTTP/1.1 client over :mod:`socket` (and :mod:`ssl` for an HTTPS
registry): ``http.client`` imports :mod:`ssl` and the :mod:`email` parser whatever the
registry, some 30 ms that a pull of busybox from a local registry cannot afford. Each thread
keeps one connection per host alive between requests; bodies stream with ``readinto`` into
a reused buffer.

What it does as Docker does:

- Auth: a request goes out bare; a 401's ``WWW-Authenticate`` says what the registry wants.
  ``Bearer``: a token from the realm (anonymous, or with the credentials as basic auth), kept
  per scope until it expires and fetched again on a 401. ``Basic``: the credentials on every
  request to that host. Credentials go to the registry and its token realm only: a redirect
  to another host (blob storage) goes without ``Authorization``.
- Transport: HTTPS with the system's CA store. Plain HTTP only for ``localhost``,
  ``127.0.0.0/8``, ``::1`` and the ``insecure-registries`` of the daemon config (whose TLS is
  not verified either). An insecure registry is tried over HTTPS first, then HTTP; a loopback
  one over HTTP first (the traffic does not leave the host, and a local pull need not load
  the TLS stack), then HTTPS. The answer is kept for the process.
- Mirrors: the config's ``registry-mirrors`` serve docker.io reads, tried in order before
  Docker Hub; they get no credentials.
- Failures: a broken connection or a 429/5xx answer is retried with exponential backoff
  (``retries`` times, and again after each retry that made progress); a blob download
  resumes with ``Range: bytes=N-``. A registry that never answered fails at once:
  refused, unknown host, timeout and TLS errors are :class:`RegistryUnreachable`.

The daemon config is ``/etc/kobako/daemon.json`` (``$KOBAKO_DAEMON_CONFIG`` overrides it),
with Docker's ``daemon.json`` keys::

    {"insecure-registries": ["registry.lan:5000", "10.0.0.0/8"],
     "registry-mirrors": ["https://mirror.example.com"]}
"""

from __future__ import annotations

import os
import threading
import time

from kobako.errors import (
    AuthenticationError,
    DigestMismatch,
    InvalidArgument,
    RegistryError,
    RegistryUnreachable,
)

TYPE_CHECKING = False  # typing is slow to import; type checkers treat this as True
if TYPE_CHECKING:
    import io
    import socket
    import ssl
    from collections.abc import Callable, Sequence
    from types import TracebackType
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = [
    "DAEMON_CONFIG",
    "DEFAULT_MANIFEST_TYPES",
    "Registry",
    "parse_challenges",
    "registry_host",
]

#: The manifest media types asked for, in order of preference.
DEFAULT_MANIFEST_TYPES: tuple[str, ...] = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

#: Where the daemon config (insecure registries, mirrors) is read from by default.
DAEMON_CONFIG = "/etc/kobako/daemon.json"

_HUB = "docker.io"
_HUB_HOST = "registry-1.docker.io"
_RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_BUFFER = 1 << 20
_PROGRESS_STEP = 256 << 10
_MAX_REDIRECTS = 10
_MAX_ERROR_BODY = 64 << 10
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

# The scheme each registry answered on (netloc -> "https" or "http"), for the process.
_SCHEMES: dict[str, str] = {}
_SSL_CONTEXTS: dict[bool, ssl.SSLContext] = {}
_CONFIG: list[dict[str, Any]] = []


def registry_host(domain: str) -> str:
    """The host serving a registry: ``docker.io`` is ``registry-1.docker.io``."""
    return _HUB_HOST if domain in (_HUB, "index.docker.io") else domain


# -- parsing ------------------------------------------------------------------------------


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """Parse a ``WWW-Authenticate`` header (RFC 7235) into its challenges.

    Schemes and parameter names are lowercased; quoted values are unescaped. Malformed
    parts are skipped, never raised on: the header comes from the network.

    Example:
        >>> parse_challenges('Bearer realm="https://auth.io/token",service="reg"')
        [('bearer', {'realm': 'https://auth.io/token', 'service': 'reg'})]
    """
    out: list[tuple[str, dict[str, str]]] = []
    for item in _split_unquoted(header):
        name, rest = _leading_token(item)
        if not name:
            continue
        if rest.startswith("="):
            if out:  # a parameter of the current challenge
                out[-1][1].setdefault(name.lower(), _value(rest[1:].lstrip()))
            continue
        params: dict[str, str] = {}
        out.append((name.lower(), params))
        pname, prest = _leading_token(rest)
        if pname and prest.startswith("=") and prest.strip("="):  # not a token68 ("abc==")
            params[pname.lower()] = _value(prest[1:].lstrip())
    return out


def _split_unquoted(text: str) -> list[str]:
    """Split at commas outside double quotes; items stripped, empty ones dropped."""
    items, start, quoted, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 1
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return [s.strip() for s in items if s.strip()]


def _leading_token(text: str) -> tuple[str, str]:
    """The token at the start of ``text`` and what follows it (whitespace stripped)."""
    i = 0
    while i < len(text) and text[i] not in ' \t="':
        i += 1
    return text[:i], text[i:].lstrip()


def _value(text: str) -> str:
    """An auth-param value: a quoted string (unescaped) or a token."""
    if not text.startswith('"'):
        return text.strip()
    out, i = [], 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            break
        out.append(c)
        i += 1
    return "".join(out)


def _quote(text: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters."""
    return "".join(
        c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in text
    )


def _split_url(url: str) -> tuple[str, str, str]:
    """``scheme://netloc/target`` as (scheme, netloc, target)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError(url)
    netloc, slash, target = rest.partition("/")
    netloc, _, _ = netloc.partition("?")
    if not netloc or "@" in netloc:
        raise ValueError(url)
    return scheme.lower(), netloc, "/" + target if slash else "/"


def _host_port(netloc: str, default: int) -> tuple[str, int]:
    """``host[:port]`` or ``[v6][:port]`` as (host, port)."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    return host, int(port) if port.isdigit() else default


def _digest_of(data: bytes | bytearray) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _is_loopback(netloc: str) -> bool:
    host, _ = _host_port(netloc, 0)
    if host == "localhost" or host == "::1":
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


# -- the daemon config --------------------------------------------------------------------


def _daemon_config() -> dict[str, Any]:
    """The daemon config, read once per process ({} if there is none)."""
    if not _CONFIG:
        path = os.environ.get("KOBAKO_DAEMON_CONFIG") or DAEMON_CONFIG
        try:
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            doc: Any = {}
        else:
            import json

            try:
                doc = json.loads(content)
            except ValueError as e:
                raise InvalidArgument(f"daemon config {path} is not valid JSON: {e}") from None
            if not isinstance(doc, dict):
                raise InvalidArgument(f"daemon config {path} is not a JSON object")
        _CONFIG.append(doc)
    return _CONFIG[0]


def _configured_insecure(netloc: str) -> bool:
    """Whether the config lists ``netloc`` (or a network holding its IP) as insecure."""
    entries = _daemon_config().get("insecure-registries") or []
    host, _ = _host_port(netloc, 0)
    for entry in entries:
        if not isinstance(entry, str):
            continue
        entry = entry.removeprefix("http://").removeprefix("https://").rstrip("/")
        if entry in (netloc, host):
            return True
        if "/" in entry:
            import ipaddress

            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _mirrors() -> list[tuple[str, str]]:
    """The configured docker.io mirrors as (scheme, netloc)."""
    out = []
    for url in _daemon_config().get("registry-mirrors") or []:
        try:
            scheme, netloc, _ = _split_url(str(url))
        except ValueError:
            raise InvalidArgument(f"invalid registry mirror {url!r} in the daemon config") from None
        out.append((scheme, netloc))
    return out


def _ssl_context(verify: bool) -> ssl.SSLContext:
    if verify not in _SSL_CONTEXTS:
        import ssl

        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _SSL_CONTEXTS[verify] = ctx
    return _SSL_CONTEXTS[verify]


# -- HTTP/1.1 -----------------------------------------------------------------------------


class _Incomplete(Exception):
    """The connection ended (or answered garbage) before the response was whole."""


class _FileBody:
    """A request body read from a file: ``length`` bytes from ``offset``."""

    def __init__(self, path: str, offset: int, length: int, progress: Callable[[int], None] | None):
        self.path = path
        self.offset = offset
        self.length = length
        self.progress = progress


Body = bytes | _FileBody | None


class _Response:
    """A response whose body is read as it arrives (Content-Length, chunked or until EOF)."""

    def __init__(self, conn: _Conn, method: str) -> None:
        self._conn = conn
        reader = conn.reader
        assert reader is not None
        line = reader.readline(65537)
        if not line:
            raise _Incomplete("connection closed before a response")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _Incomplete(f"not an HTTP response: {line[:40]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            line = reader.readline(65537)
            if not line:
                raise _Incomplete("connection closed in the response headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            key, value = name.strip().lower(), value.strip()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self._keep = parts[0] != "HTTP/1.0" and "close" not in self.header("connection").lower()
        self._chunked = "chunked" in self.header("transfer-encoding").lower()
        self._chunk_left = 0
        self._left: int | None = None
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            self._left = 0
        elif not self._chunked:
            length = self.header("content-length")
            if length.isdigit():
                self._left = int(length)
            else:
                self._keep = False  # the body ends when the connection does
        self.done = self._left == 0
        if self.done:
            self._finish()

    def header(self, name: str) -> str:
        """A header's value ("" if absent); repeated headers are joined with ", "."""
        return self.headers.get(name, "")

    def readinto(self, buf: memoryview) -> int:
        """Read body bytes into ``buf``; 0 at the end of the body.

        Raises:
            _Incomplete: The connection ended before the body did.
            OSError: The connection failed (a timeout, a reset).
        """
        if self.done:
            return 0
        reader = self._conn.reader
        assert reader is not None
        if self._chunked:
            if self._chunk_left == 0:
                size_line = reader.readline(1024)
                size = size_line.split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise _Incomplete("bad chunk size") from None
                if self._chunk_left == 0:
                    while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.done = True
                    self._finish()
                    return 0
            n = reader.readinto1(buf[: self._chunk_left])
            if not n:
                raise _Incomplete("connection closed in a chunk")
            self._chunk_left -= n
            if self._chunk_left == 0:
                reader.readline(3)
            return n
        want = len(buf) if self._left is None else min(len(buf), self._left)
        n = reader.readinto1(buf[:want])  # what has arrived: do not wait to fill buf
        if self._left is None:
            if not n:
                self.done = True
                self._finish()
            return n
        if not n:
            raise _Incomplete(f"connection closed with {self._left} bytes of the body missing")
        self._left -= n
        if self._left == 0:
            self.done = True
            self._finish()
        return n

    def read(self, limit: int = _MAX_ERROR_BODY) -> bytes:
        """The rest of the body, up to ``limit`` bytes (the connection is dropped beyond)."""
        out = bytearray()
        buf = memoryview(bytearray(min(limit, _BUFFER) or 1))
        while not self.done and len(out) < limit:
            n = self.readinto(buf[: limit - len(out)])
            out += buf[:n]
        if not self.done:
            self.close()
        return bytes(out)

    def discard(self) -> None:
        """Read and drop a small body so the connection can be reused, else drop it."""
        try:
            self.read()
        except (OSError, _Incomplete):
            self.close()

    def close(self) -> None:
        """Abandon the response: its connection is closed (it cannot be reused mid-body)."""
        if not self.done:
            self.done = True
            self._conn.close()

    def _finish(self) -> None:
        self._conn.busy = False
        if not self._keep:
            self._conn.close()


class _Conn:
    """One HTTP/1.1 connection to a host (plain or TLS), kept alive between requests."""

    def __init__(self, scheme: str, netloc: str, timeout: float, verify: bool) -> None:
        self.scheme = scheme
        self.netloc = netloc
        self.timeout = timeout
        self.verify = verify
        self.sock: socket.socket | None = None
        self.reader: io.BufferedReader | None = None
        self.busy = False
        self.reused = False

    def open(self) -> None:
        import socket

        host, port = _host_port(self.netloc, 443 if self.scheme == "https" else 80)
        # An ASCII host as bytes: getaddrinfo() would load the idna codec for a str.
        name = host.encode() if host.isascii() else host
        sock = socket.create_connection((name, port), self.timeout)  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = _ssl_context(self.verify).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.reused = False

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.busy = False

    def request(self, method: str, target: str, headers: dict[str, str], body: Body) -> _Response:
        """Send a request and read the response's status line and headers.

        A connection that served a request before and fails before answering (the server
        closed it while idle) is reopened and the request sent once more.
        """
        if self.busy:  # the last response was not read to its end
            self.close()
        for retry in (True, False):
            if self.sock is None:
                self.open()
            reused = self.reused
            try:
                self._send(method, target, headers, body)
                self.busy = True
                response = _Response(self, method)
            except (OSError, _Incomplete):
                self.close()
                if retry and reused:
                    continue
                raise
            self.reused = True
            return response
        raise AssertionError("unreachable")

    def _send(self, method: str, target: str, headers: dict[str, str], body: Body) -> None:
        sock = self.sock
        assert sock is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.netloc}", "User-Agent: kobako"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            length = len(body) if isinstance(body, bytes) else body.length
            lines.append(f"Content-Length: {length}")
        for line in lines:
            if "\r" in line or "\n" in line or " " in target:
                raise RegistryError(f"refusing a malformed request for {target!r}", self.netloc)
        head = "\r\n".join(lines) + "\r\n\r\n"
        if isinstance(body, _FileBody):
            sock.sendall(head.encode("latin-1"))
            self._send_file(sock, body)
        else:
            sock.sendall(head.encode("latin-1") + (body or b""))

    @staticmethod
    def _send_file(sock: socket.socket, body: _FileBody) -> None:
        with open(body.path, "rb") as f:
            sent, end = 0, body.length
            while sent < end:
                n = sock.sendfile(f, body.offset + sent, min(_BUFFER, end - sent))
                if not n:
                    raise _Incomplete(f"{body.path} is shorter than expected")
                sent += n
                if body.progress is not None:
                    body.progress(sent)


# -- the registry -------------------------------------------------------------------------


class _NetError(Exception):
    """A request failed on the network; ``retryable`` unless the host never answered."""

    def __init__(self, netloc: str, cause: str, retryable: bool) -> None:
        super().__init__(f"cannot reach registry {netloc}: {cause}")
        self.retryable = retryable


class _Endpoint:
    """One host serving a registry's API: its scheme, credentials and tokens."""

    def __init__(
        self,
        netloc: str,
        schemes: tuple[str, ...],
        verify: bool,
        credentials: tuple[str, str] | None,
        lookup: str | None,
    ) -> None:
        self.netloc = netloc
        self.schemes = schemes
        self.scheme = _SCHEMES.get(netloc) if len(schemes) > 1 else schemes[0]
        self.verify = verify
        self.credentials = credentials
        self.lookup = lookup  # the domain whose configured credentials apply, if any
        self.challenge: tuple[str, dict[str, str]] | None = None
        self.tokens: dict[str, tuple[str, float]] = {}
        self.answered = False


class Registry:
    """One registry (``host[:port]``): its scheme, credentials, and bearer tokens per scope.

    Safe to share between threads: each thread gets its own connections.

    Args:
        domain: The registry as a reference names it: ``"docker.io"``, ``"ghcr.io"``,
            ``"127.0.0.1:5000"``, ``"localhost:5000"``.
        insecure: True allows plain HTTP and unverified TLS; False allows neither; None
            allows them for loopback hosts and the config's ``insecure-registries``.
        credentials: (username, password) to use; if None and ``use_config``, those of
            Docker's ``config.json`` (see :mod:`kobako.image.auth`), looked up when the
            registry first asks for some.
        use_config: Read the daemon config (insecure registries, mirrors) and Docker's
            credentials.
        timeout: Seconds to wait for a connection or for each read.
        retries: How many times a request failing on the network or with a 429/5xx is
            retried (with exponential backoff) before giving up.

    Example:
        >>> with Registry("127.0.0.1:5000") as reg:  # doctest: +SKIP
        ...     content, media_type, digest = reg.get_manifest("library/busybox", "latest")
    """

    def __init__(
        self,
        domain: str,
        *,
        insecure: bool | None = None,
        credentials: tuple[str, str] | None = None,
        use_config: bool = True,
        timeout: float = 30.0,
        retries: int = 3,
    ) -> None:
        if not domain or "/" in domain or any(c.isspace() for c in domain):
            raise InvalidArgument(f"invalid registry {domain!r}")
        self.domain = _HUB if domain == "index.docker.io" else domain
        self.host = registry_host(self.domain)
        self.timeout = timeout
        self.retries = retries
        if insecure is None:
            plain = _is_loopback(self.host)
            configured = use_config and not plain and _configured_insecure(self.host)
            schemes: tuple[str, ...] = (
                ("http", "https") if plain else ("https", "http") if configured else ("https",)
            )
            verify = not (plain or configured)
        else:
            schemes = ("https", "http") if insecure else ("https",)
            verify = not insecure
        lookup = self.domain if credentials is None and use_config else None
        self._endpoint = _Endpoint(self.host, schemes, verify, credentials, lookup)
        self._reads = [self._endpoint]
        if self.domain == _HUB and use_config:
            mirrors = [_Endpoint(n, (s,), True, None, None) for s, n in _mirrors()]
            self._reads = [*mirrors, self._endpoint]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []

    def __repr__(self) -> str:
        return f"Registry({self.domain!r})"

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection this client opened (in any thread)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    # -- the API ------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and accepts the credentials (what login does).

        Raises:
            AuthenticationError: It refuses the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
            RegistryError: It answered with another error.
        """
        ep = self._endpoint
        response = self._retrying(ep, "GET", "/v2/", None, {})
        self._expect(ep, response, (200,))
        response.discard()

    def get_manifest(
        self, repository: str, reference: str, *, accept: Sequence[str] = DEFAULT_MANIFEST_TYPES
    ) -> tuple[bytes, str, str]:
        """Fetch a manifest (or image index) by tag or digest.

        Args:
            repository: The repository path, e.g. ``"library/busybox"``.
            reference: A tag, or a digest (then the content is checked against it).
            accept: The media types asked for, preferred first.

        Returns:
            (content, media type, digest of the content).

        Raises:
            RegistryError: ``code`` ``"MANIFEST_UNKNOWN"`` or ``"NAME_UNKNOWN"`` (status 404)
                when there is no such tag or repository; another error it answered with.
            DigestMismatch: The content does not hash to ``reference``, a digest.
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
        """
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Accept": ", ".join(accept)}

        def get(ep: _Endpoint) -> tuple[bytes, str, str]:
            response = self._retrying(ep, "GET", path, _scope(repository), headers)
            if response.status == 404:
                code, _ = _error_code(response.read())
                sep = "@" if reference.startswith("sha256:") else ":"
                raise RegistryError(
                    f"manifest unknown: manifest for {repository}{sep}{reference} not found",
                    ep.netloc,
                    404,
                    code or "MANIFEST_UNKNOWN",
                )
            self._expect(ep, response, (200,))
            content = self._body(ep, response, 16 << 20, "manifest")
            media_type = response.header("content-type").split(";", 1)[0].strip()
            digest = _digest_of(content)
            if reference.startswith("sha256:") and digest != reference:
                raise DigestMismatch(
                    reference, digest, f"manifest {reference} from {ep.netloc} hashes to {digest}"
                )
            return content, media_type, digest

        return self._read(get)

    def list_tags(self, repository: str) -> list[str]:
        """The repository's tags (``GET /v2/NAME/tags/list``, following ``Link`` pages).

        Raises:
            RegistryError: ``code`` ``"NAME_UNKNOWN"`` (status 404) when there is no such
                repository; another error it answered with.
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
        """
        import json

        def get(ep: _Endpoint) -> list[str]:
            tags: list[str] = []
            path: str | None = f"/v2/{repository}/tags/list"
            for _ in range(1000):  # pages; not forever
                if path is None:
                    return tags
                response = self._retrying(ep, "GET", path, _scope(repository), {})
                if response.status == 404:
                    code, _ = _error_code(response.read())
                    raise RegistryError(
                        f"repository {repository} not found: name unknown",
                        ep.netloc,
                        404,
                        code or "NAME_UNKNOWN",
                    )
                self._expect(ep, response, (200,))
                link = response.header("link")
                body = self._body(ep, response, 16 << 20, "tag list")
                try:
                    page = json.loads(body).get("tags") or []
                except (ValueError, AttributeError):
                    raise RegistryError(
                        f"registry {ep.netloc} sent a bad tag list", ep.netloc
                    ) from None
                tags += [t for t in page if isinstance(t, str)]
                # RFC 5988: </v2/name/tags/list?n=100&last=x>; rel="next"
                path = None
                if 'rel="next"' in link and link.startswith("<") and ">" in link:
                    path = link[1 : link.index(">")]
            raise RegistryError(f"registry {ep.netloc}: too many pages of tags", ep.netloc)

        return self._read(get)

    def get_blob(self, repository: str, digest: str, *, max_size: int = 64 << 20) -> bytes:
        """Fetch a small blob (an image config) whole, checked against its digest.

        Raises:
            DigestMismatch: The content does not hash to ``digest``.
            RegistryError: It has no such blob (``BLOB_UNKNOWN``), the blob is larger than
                ``max_size``, or another error it answered with.
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
        """
        path = f"/v2/{repository}/blobs/{digest}"

        def get(ep: _Endpoint) -> bytes:
            response = self._retrying(ep, "GET", path, _scope(repository), {})
            self._expect(ep, response, (200,))
            content = self._body(ep, response, max_size, f"blob {digest}")
            actual = _digest_of(content)
            if actual != digest:
                raise DigestMismatch(
                    digest, actual, f"blob {digest} from {ep.netloc} hashes to {actual}"
                )
            return content

        return self._read(get)

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        out_fd: int,
        *,
        size: int | None = None,
        progress: Callable[[int], None] | None = None,
        urls: Sequence[str] = (),
    ) -> int:
        """Stream a blob's bytes to ``out_fd`` (a pipe or a file), resuming after failures.

        A broken connection or a 5xx answer is retried with backoff, asking for the rest
        with ``Range: bytes=N-`` (the first N bytes are skipped if the server ignores it).
        The digest is not checked: whoever reads ``out_fd`` does that. A foreign layer the
        registry does not have (404) is fetched from the first of its ``urls`` (http or
        https) that has it, without credentials, as Docker does.

        Args:
            repository: The repository path.
            digest: The blob's digest.
            out_fd: Where the bytes go (written with :func:`os.write`).
            size: The blob's size if known (a download that broke after it is complete).
            progress: Called with the bytes written so far, every 256 KiB and at the end;
                an exception it raises stops the download.
            urls: A foreign layer's ``urls``, tried in order when the registry has no blob.

        Returns:
            The number of bytes written.

        Raises:
            RegistryError: It has no such blob, or kept failing.
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
            OSError: Writing to ``out_fd`` failed (EPIPE: the reader went away).
        """
        state = [0, 0]  # bytes written, bytes at the last progress report
        buf = memoryview(bytearray(_BUFFER))
        targets = [f"/v2/{repository}/blobs/{digest}"]
        targets += [u for u in urls if u.startswith(("http://", "https://"))]

        def fetch(ep: _Endpoint) -> int:
            for i, target in enumerate(targets):
                try:
                    return fetch_from(ep, target)
                except RegistryError as e:
                    if e.status != 404 or state[0] or i == len(targets) - 1:
                        raise
            raise AssertionError("unreachable")

        def fetch_from(ep: _Endpoint, path: str) -> int:
            failures = 0
            while True:
                if size is not None and state[0] >= size and state[0]:
                    break
                done = state[0]
                headers = {"Range": f"bytes={done}-"} if done else {}
                try:
                    response = self._call(ep, "GET", path, _scope(repository), headers)
                except _NetError as e:
                    failures = self._backoff(ep, e, failures)
                    continue
                if response.status in _RETRY_STATUSES and failures < self.retries:
                    response.discard()
                    failures = self._backoff(ep, None, failures)
                    continue
                if response.status == 416 and done and size is None:
                    response.discard()
                    break  # nothing after byte N: the blob was whole
                self._expect(ep, response, (200, 206))
                skip = done - _range_start(response) if response.status == 206 else done
                if skip < 0:
                    response.close()
                    raise RegistryError(
                        f"registry {ep.netloc} sent blob {digest} from the wrong offset",
                        ep.netloc,
                        response.status,
                    )
                try:
                    self._copy(ep.netloc, response, buf, out_fd, skip, state, progress)
                except _NetError as e:
                    if state[0] > done:
                        failures = 0  # it made progress: the retries start over
                    failures = self._backoff(ep, e, failures)
                    continue
                break
            return state[0]

        total = self._read(fetch)
        if progress is not None:
            progress(total)
        return total

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The size of the blob in the repository, or None if it has none (a HEAD request).

        Raises:
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
            RegistryError: It answered with another error.
        """
        ep = self._endpoint
        response = self._retrying(
            ep, "HEAD", f"/v2/{repository}/blobs/{digest}", _scope(repository, push=True), {}
        )
        if response.status == 404:
            return None
        self._expect(ep, response, (200,))
        length = response.header("content-length")
        return int(length) if length.isdigit() else 0

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Mount a blob another repository of the registry has (no upload).

        Returns:
            Whether it was mounted; False if the registry would not (the upload it offered
            instead is cancelled).

        Raises:
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
            RegistryError: It answered with another error.
        """
        ep = self._endpoint
        scope = f"{_scope(repository, push=True)} {_scope(from_repository)}"
        target = (
            f"/v2/{repository}/blobs/uploads/?mount={_quote(digest)}&from={_quote(from_repository)}"
        )
        response = self._retrying(ep, "POST", target, scope, {}, b"")
        if response.status == 201:
            response.discard()
            return True
        self._expect(ep, response, (202,))
        response.discard()
        location = response.header("location")
        if location:
            try:  # noqa: SIM105 (contextlib is slow to import)
                self._call(ep, "DELETE", location, scope, {}).discard()
            except (RegistryError, _NetError):
                pass  # an abandoned upload session expires on its own
        return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        path: str,
        *,
        chunk_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob from a file: one PUT, or PATCH requests of ``chunk_size`` then PUT.

        An upload failing on the network or with a 5xx is started again from the beginning.

        Args:
            repository: The repository path.
            digest: The blob's digest (the registry checks it).
            path: The file holding the blob.
            chunk_size: Upload in chunks of this many bytes (None: in one request).
            progress: Called with the bytes sent so far.

        Raises:
            RegistryError: The registry refused it (``DIGEST_INVALID``...).
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
        """
        if chunk_size is not None and chunk_size <= 0:
            raise InvalidArgument(f"invalid chunk size {chunk_size}")
        ep = self._endpoint
        scope = _scope(repository, push=True)
        total = os.stat(path).st_size
        failures = 0
        while True:
            try:
                self._upload(ep, scope, repository, digest, path, total, chunk_size, progress)
                return
            except _NetError as e:
                failures = self._backoff(ep, e, failures)
            except RegistryError as e:
                if e.status not in _RETRY_STATUSES or failures >= self.retries:
                    raise
                failures = self._backoff(ep, None, failures)

    def put_manifest(self, repository: str, reference: str, content: bytes, media_type: str) -> str:
        """Upload a manifest under a tag (or its digest); every blob it names must be there.

        Returns:
            The manifest's digest.

        Raises:
            RegistryError: The registry refused it (``MANIFEST_BLOB_UNKNOWN``...).
            AuthenticationError: It refused the credentials, or wants some.
            RegistryUnreachable: It cannot be reached.
        """
        ep = self._endpoint
        response = self._retrying(
            ep,
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            _scope(repository, push=True),
            {"Content-Type": media_type},
            content,
        )
        self._expect(ep, response, (200, 201))
        response.discard()
        return _digest_of(content)

    # -- uploads ------------------------------------------------------------------------

    def _upload(
        self,
        ep: _Endpoint,
        scope: str,
        repository: str,
        digest: str,
        path: str,
        total: int,
        chunk_size: int | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        response = self._call(ep, "POST", f"/v2/{repository}/blobs/uploads/", scope, {}, b"")
        self._expect(ep, response, (202,))
        response.discard()
        location = self._location(ep, response)
        octets = {"Content-Type": "application/octet-stream"}
        if chunk_size is None:
            body: Body = _FileBody(path, 0, total, progress)
            final = _with_query(location, f"digest={_quote(digest)}")
            response = self._call(ep, "PUT", final, scope, octets, body)
            self._expect(ep, response, (201, 204))
            response.discard()
            return
        offset = 0
        while offset < total:
            length = min(chunk_size, total - offset)

            def sent(n: int, base: int = offset) -> None:
                if progress is not None:
                    progress(base + n)

            body = _FileBody(path, offset, length, sent)
            headers = {**octets, "Content-Range": f"{offset}-{offset + length - 1}"}
            response = self._call(ep, "PATCH", location, scope, headers, body)
            self._expect(ep, response, (202, 204))
            response.discard()
            location = self._location(ep, response)
            offset += length
        final = _with_query(location, f"digest={_quote(digest)}")
        response = self._call(ep, "PUT", final, scope, {}, b"")
        self._expect(ep, response, (201, 204))
        response.discard()

    def _location(self, ep: _Endpoint, response: _Response) -> str:
        location = response.header("location")
        if not location:
            raise RegistryError(
                f"registry {ep.netloc} started an upload without a Location",
                ep.netloc,
                response.status,
            )
        return location

    # -- requests -----------------------------------------------------------------------

    def _read(self, op: Callable[[_Endpoint], T]) -> T:
        """Run a read on each endpoint in turn (mirrors, then the registry) until one works."""
        for ep in self._reads[:-1]:
            try:
                return op(ep)
            except RegistryError:
                continue
        return op(self._reads[-1])

    def _retrying(
        self,
        ep: _Endpoint,
        method: str,
        target: str,
        scope: str | None,
        headers: dict[str, str],
        body: Body = None,
    ) -> _Response:
        """:meth:`_call`, retried with backoff on network failures and 429/5xx answers."""
        failures = 0
        while True:
            try:
                response = self._call(ep, method, target, scope, headers, body)
            except _NetError as e:
                failures = self._backoff(ep, e, failures)
                continue
            if response.status in _RETRY_STATUSES and failures < self.retries:
                response.discard()
                failures = self._backoff(ep, None, failures)
                continue
            return response

    def _backoff(self, ep: _Endpoint, error: _NetError | None, failures: int) -> int:
        """Sleep before retry number ``failures + 1``, or raise if there is none left."""
        if error is not None and (not error.retryable or failures >= self.retries):
            raise RegistryUnreachable(str(error), ep.netloc) from None
        if failures >= self.retries:
            raise RegistryError(f"registry {ep.netloc} kept failing", ep.netloc)
        time.sleep(min(0.5 * 2**failures, 8.0))
        return failures + 1

    def _call(
        self,
        ep: _Endpoint,
        method: str,
        target: str,
        scope: str | None,
        headers: dict[str, str],
        body: Body = None,
    ) -> _Response:
        """One request with auth: sent with what is known, and again after a 401's challenge.

        Raises:
            _NetError: The network failed.
            AuthenticationError: A second 401, or credentials needed and missing.
        """
        self._ensure_scheme(ep)
        auth = self._auth_header(ep, scope)
        response = self._follow(ep, method, target, {**headers, **auth}, body)
        if response.status != 401:
            return response
        challenges = parse_challenges(response.header("www-authenticate"))
        message = _error_message(response.read()) or "authentication required"
        for kind, params in challenges:
            if kind in ("bearer", "basic"):
                ep.challenge = (kind, params)
                break
        else:
            raise AuthenticationError(f"unauthorized: {message}", ep.netloc, 401, "UNAUTHORIZED")
        auth = self._authenticate(ep, scope, fresh=True)
        response = self._follow(ep, method, target, {**headers, **auth}, body)
        if response.status == 401:
            refused = self._credentials(ep) is not None
            message = _error_message(response.read()) or message
            raise AuthenticationError(
                "unauthorized: incorrect username or password"
                if refused
                else f"unauthorized: {message}",
                ep.netloc,
                401,
                "UNAUTHORIZED",
            )
        return response

    def _follow(
        self, ep: _Endpoint, method: str, target: str, headers: dict[str, str], body: Body
    ) -> _Response:
        """Send a request, following redirects (``Authorization`` only to the registry)."""
        scheme, netloc = ep.scheme or ep.schemes[0], ep.netloc
        if "://" in target:
            scheme, netloc, target = self._split(ep, target)
        for _ in range(_MAX_REDIRECTS):
            own = netloc == ep.netloc
            sent = headers if own else {k: v for k, v in headers.items() if k != "Authorization"}
            conn = self._conn(scheme, netloc, ep.verify if own else True)
            try:
                response = conn.request(method, target, sent, body)
            except (OSError, _Incomplete) as e:
                raise _net_error(netloc, e, ep.answered or not own) from None
            if own:
                ep.answered = True
            location = response.header("location")
            if response.status not in _REDIRECTS or not location or method in ("POST", "PATCH"):
                return response
            response.discard()
            if "://" in location:
                scheme, netloc, target = self._split(ep, location)
            elif location.startswith("/"):
                target = location
            else:
                target = target.rsplit("/", 1)[0] + "/" + location
            if response.status == 303:
                method, body = "GET", None
        raise RegistryError(f"too many redirects from registry {ep.netloc}", ep.netloc)

    def _split(self, ep: _Endpoint, url: str) -> tuple[str, str, str]:
        try:
            return _split_url(url)
        except ValueError:
            raise RegistryError(
                f"registry {ep.netloc} sent a bad URL: {url!r}", ep.netloc
            ) from None

    def _conn(self, scheme: str, netloc: str, verify: bool) -> _Conn:
        conns: dict[tuple[str, str, bool], _Conn] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        key = (scheme, netloc, verify)
        conn = conns.get(key)
        if conn is None:
            conn = conns[key] = _Conn(scheme, netloc, self.timeout, verify)
            with self._lock:
                self._conns.append(conn)
        return conn

    def _ensure_scheme(self, ep: _Endpoint) -> None:
        """Find the scheme a registry answers on: ``GET /v2/`` over each allowed one."""
        if ep.scheme is not None:
            return
        error: _NetError | None = None
        for scheme in ep.schemes:
            conn = self._conn(scheme, ep.netloc, ep.verify)
            try:
                response = conn.request("GET", "/v2/", {}, None)
                body = response.read(4096)
            except (OSError, _Incomplete) as e:
                conn.close()
                error = _net_error(ep.netloc, e, False)
                if isinstance(e, TimeoutError):
                    break  # no answer at all: the other scheme would wait as long
                continue
            if response.status == 400 and b"HTTPS" in body:
                conn.close()  # plain HTTP sent to a TLS port
                error = _NetError(ep.netloc, "the registry speaks HTTPS", False)
                continue
            if response.status == 401:
                for kind, params in parse_challenges(response.header("www-authenticate")):
                    if kind in ("bearer", "basic"):
                        ep.challenge = (kind, params)
                        break
            ep.scheme = _SCHEMES[ep.netloc] = scheme
            ep.answered = True
            return
        assert error is not None
        raise RegistryUnreachable(str(error), ep.netloc)

    # -- auth ---------------------------------------------------------------------------

    def _credentials(self, ep: _Endpoint) -> tuple[str, str] | None:
        if ep.credentials is None and ep.lookup is not None:
            from kobako.image.auth import get_credentials

            ep.credentials = get_credentials(ep.lookup)
            ep.lookup = None
        return ep.credentials

    def _auth_header(self, ep: _Endpoint, scope: str | None) -> dict[str, str]:
        """The Authorization header to send before any 401: what is known of the registry."""
        if ep.challenge is None:
            return {}
        if ep.challenge[0] == "basic":
            return self._authenticate(ep, scope, fresh=False)
        token = self._cached_token(ep, scope)
        if token is None and scope is not None:
            return self._authenticate(ep, scope, fresh=False)  # the realm is known: ask now
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _authenticate(self, ep: _Endpoint, scope: str | None, *, fresh: bool) -> dict[str, str]:
        """The Authorization header for the registry's challenge (fetching a token if need be).

        Raises:
            AuthenticationError: Credentials are needed and missing, or refused.
        """
        assert ep.challenge is not None
        kind, params = ep.challenge
        credentials = self._credentials(ep)
        if kind == "basic":
            if credentials is None:
                raise AuthenticationError(
                    f"unauthorized: authentication required (log in to {ep.netloc})",
                    ep.netloc,
                    401,
                    "UNAUTHORIZED",
                )
            import base64

            pair = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        if not fresh and (token := self._cached_token(ep, scope)) is not None:
            return {"Authorization": f"Bearer {token}"}
        scope = scope or params.get("scope")
        token, expires = self._fetch_token(ep, params, scope, credentials)
        with self._lock:
            ep.tokens[scope or ""] = (token, expires)
        return {"Authorization": f"Bearer {token}"}

    def _cached_token(self, ep: _Endpoint, scope: str | None) -> str | None:
        now = time.monotonic()
        with self._lock:
            for key in _covering(scope or ""):
                entry = ep.tokens.get(key)
                if entry is not None and entry[1] > now:
                    return entry[0]
        return None

    def _fetch_token(
        self,
        ep: _Endpoint,
        params: dict[str, str],
        scope: str | None,
        credentials: tuple[str, str] | None,
    ) -> tuple[str, float]:
        """A bearer token from the challenge's realm (RFC 6750 / the distribution token spec)."""
        import json

        realm = params.get("realm", "")
        try:
            scheme, netloc, target = _split_url(realm)
        except ValueError:
            raise AuthenticationError(
                f"registry {ep.netloc} asks for a token from a bad realm {realm!r}", ep.netloc
            ) from None
        query = []
        if params.get("service"):
            query.append(f"service={_quote(params['service'])}")
        query += [f"scope={_quote(s)}" for s in (scope or "").split()]
        headers: dict[str, str] = {}
        body: bytes | None = None
        method = "GET"
        if credentials is not None and credentials[0] == "<token>":  # an identity token
            method = "POST"
            form = ["grant_type=refresh_token", f"refresh_token={_quote(credentials[1])}"]
            body = "&".join([*form, "client_id=kobako", *query]).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            if credentials is not None:
                import base64

                query.append(f"account={_quote(credentials[0])}")
                pair = f"{credentials[0]}:{credentials[1]}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            if query:
                target = _with_query(target, "&".join(query))
        conn = self._conn(scheme, netloc, ep.verify if netloc == ep.netloc else True)
        failures = 0
        while True:
            try:
                response = conn.request(method, target, headers, body)
                content = response.read(1 << 20)
            except (OSError, _Incomplete) as e:
                failures = self._backoff(ep, _net_error(netloc, e, ep.answered), failures)
                continue
            if response.status in _RETRY_STATUSES and failures < self.retries:
                failures = self._backoff(ep, None, failures)
                continue
            break
        if response.status in (401, 403):
            raise AuthenticationError(
                "unauthorized: incorrect username or password"
                if credentials is not None
                else f"unauthorized: {_error_message(content) or 'access denied'}",
                ep.netloc,
                response.status,
                "UNAUTHORIZED",
            )
        if response.status != 200:
            raise AuthenticationError(
                f"token server {netloc} for registry {ep.netloc} answered HTTP {response.status}",
                ep.netloc,
                response.status,
            )
        try:
            doc = json.loads(content)
            token = doc.get("token") or doc.get("access_token")
            lifetime = doc.get("expires_in")
        except (ValueError, AttributeError):
            token, lifetime = None, None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(
                f"token server {netloc} for registry {ep.netloc} sent no token", ep.netloc, 200
            )
        seconds = lifetime if isinstance(lifetime, int) and lifetime > 0 else 60
        return token, time.monotonic() + max(seconds - 10, 5)

    # -- responses ----------------------------------------------------------------------

    def _expect(self, ep: _Endpoint, response: _Response, statuses: tuple[int, ...]) -> None:
        """Raise the registry's error unless the response has one of ``statuses``."""
        if response.status in statuses:
            return
        content = response.read()
        code, message = _error_code(content)
        if response.status in (401, 403):
            code = code or "DENIED"
            message = message or "requested access to the resource is denied"
            raise AuthenticationError(
                f"{_phrase(code)}: {message}", ep.netloc, response.status, code
            )
        if code:
            text = f"{_phrase(code)}: {message}" if message else _phrase(code)
        else:
            text = f"registry {ep.netloc} answered HTTP {response.status} {response.reason}"
        raise RegistryError(text.rstrip(), ep.netloc, response.status, code)

    def _body(self, ep: _Endpoint, response: _Response, limit: int, what: str) -> bytes:
        length = response.header("content-length")
        if length.isdigit() and int(length) > limit:
            response.close()
            raise RegistryError(f"{what} from {ep.netloc} is too large ({length} bytes)", ep.netloc)
        try:
            content = response.read(limit + 1)
        except (OSError, _Incomplete) as e:
            raise RegistryUnreachable(str(_net_error(ep.netloc, e, True)), ep.netloc) from None
        if len(content) > limit:
            raise RegistryError(f"{what} from {ep.netloc} is too large", ep.netloc)
        return content

    @staticmethod
    def _copy(
        netloc: str,
        response: _Response,
        buf: memoryview,
        out_fd: int,
        skip: int,
        state: list[int],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Copy a response body to ``out_fd``, dropping its first ``skip`` bytes.

        Raises:
            _NetError: Reading failed (a write error is raised as it is: never retried).
        """
        while True:
            try:
                n = response.readinto(buf)
            except (OSError, _Incomplete) as e:
                response.close()
                raise _net_error(netloc, e, True) from None
            if not n:
                return
            chunk = buf[skip:n] if skip < n else buf[:0]
            skip = max(0, skip - n)
            state[0] += len(chunk)
            while chunk:
                chunk = chunk[os.write(out_fd, chunk) :]
            if progress is not None and state[0] - state[1] >= _PROGRESS_STEP:
                state[1] = state[0]
                progress(state[0])


def _scope(repository: str, *, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


def _covering(scope: str) -> list[str]:
    """The token cache keys whose tokens allow ``scope`` (a push token allows pulls)."""
    if scope.startswith("repository:") and scope.endswith(":pull") and " " not in scope:
        return [scope, scope + ",push"]
    return [scope]


def _with_query(target: str, query: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}{query}"


def _range_start(response: _Response) -> int:
    """The first byte of a 206 response (``Content-Range: bytes START-END/TOTAL``)."""
    value = response.header("content-range").removeprefix("bytes").strip()
    start = value.split("-", 1)[0]
    return int(start) if start.isdigit() else -1


def _net_error(netloc: str, error: BaseException, retryable: bool) -> _NetError:
    """A network failure in a few words, as Go's net package words it."""
    import socket

    if isinstance(error, TimeoutError):
        cause = "i/o timeout"
    elif isinstance(error, ConnectionRefusedError):
        cause = "connection refused"
    elif isinstance(error, socket.gaierror):
        cause = "no such host"
    elif type(error).__module__ == "ssl":
        if verify_message := getattr(error, "verify_message", None):
            cause = f"TLS: certificate verify failed: {verify_message}"
        else:
            cause = f"TLS handshake failed: {getattr(error, 'reason', None) or error}"
    elif isinstance(error, ConnectionResetError):
        cause = "connection reset by peer"
    elif isinstance(error, _Incomplete):
        cause = str(error)
    else:
        cause = (
            os.strerror(error.errno) if isinstance(error, OSError) and error.errno else str(error)
        )
    return _NetError(netloc, cause, retryable)


def _error_code(content: bytes) -> tuple[str, str]:
    """The first (code, message) of a distribution error body, or ("", "")."""
    if not content.startswith(b"{"):
        return "", ""
    import json

    try:
        errors = json.loads(content).get("errors")
        first = errors[0]
        return str(first.get("code") or ""), str(first.get("message") or "")
    except (ValueError, AttributeError, IndexError, TypeError, KeyError):
        return "", ""


def _error_message(content: bytes) -> str:
    _, message = _error_code(content)
    return message


def _phrase(code: str) -> str:
    """``MANIFEST_UNKNOWN`` as Docker prints it: ``manifest unknown``."""
    return code.lower().replace("_", " ")
