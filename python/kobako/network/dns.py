"""A user-defined network's DNS answerer (podman's aardvark-dns): containers resolve each
other by name; other names go to the host's resolvers.

One process per network: :func:`start` runs it, detached, when the network gets its first
container, and :func:`stop` ends it when the last one leaves. It runs as
``python -I -m kobako.network.dns STATE_DIR`` and listens, UDP and TCP, on the network's
gateway address(es), where the containers' ``resolv.conf`` points. In ``STATE_DIR``::

    dns.json    {"listen": ["10.89.0.1"], "port": 53,
                 "upstream": ["10.255.255.53:53", "[2001:db8::1]:53"]}
                read once; "port" defaults to 53, "upstream" to none
    names.json  {"names": {"web": ["10.89.0.2"], "db": ["10.89.0.3", "10.89.0.4"]}}
                replaced (temp file + rename) by kobako as containers come and go, re-read
                when it changes; missing means no names, invalid keeps the previous table
    dns.pid     "PID START" (its pid and start time), written once it listens
    dns.log     its stdout and stderr

How it answers:

- A known name (ASCII case ignored, trailing dot or not): A gets its IPv4 addresses, AAAA its
  IPv6 addresses (TTL 600, as Docker), any other type NOERROR and no answer. A known name is
  never forwarded.
- PTR for a known address (``2.0.89.10.in-addr.arpa``): the names that have it.
- Anything else goes to the upstreams in turn (UDP, 2 s each; TCP if the query came over TCP)
  and the first answer is relayed with the client's query id. A truncated UDP answer is
  relayed as it is, so that the client asks again over TCP, which is forwarded over TCP.
  SERVFAIL when no upstream answers, REFUSED when there is none (an internal network).

Malformed packets are dropped and logged (a few lines a minute at most, so that a container
cannot fill the host's disk). Each forwarded query and each TCP client has its own thread: a
slow upstream does not hold up local answers.

:func:`start` and :func:`stop` are on a container's start path: this module imports nothing
slow at the top; the server loads socket, threading and dnslib when it runs.
"""

from __future__ import annotations

import os
import sys
import time

from kobako.errors import NetworkError
from kobako.runtime.proc import process_start

TYPE_CHECKING = False  # not typing's: typing is slow to import
if TYPE_CHECKING:
    import socket
    import subprocess
    from collections.abc import Callable

    from dnslib import DNSRecord

__all__ = [
    "TTL",
    "Names",
    "normalise",
    "parse_names",
    "parse_upstream",
    "running",
    "start",
    "stop",
]

#: The TTL of the answers about containers, in seconds (Docker's embedded DNS uses 600).
TTL = 600
_READY_TIMEOUT_S = 5.0  # how long start() waits for the server to listen
_UPSTREAM_TIMEOUT_S = 2.0  # how long the server waits for each upstream
_TCP_IDLE_S = 10.0  # how long a TCP client may stay silent before it is disconnected
_MAX_WORKERS = 128  # forwarded queries and TCP clients served at once; more are dropped
_LOG_LINES_PER_MINUTE = 20

_MODULE = "kobako.network.dns"
_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_SERVFAIL, _REFUSED = 2, 5
_IPV6_FREEBIND = 78  # linux/in6.h; not in Python's socket module

# The servers this process started, so that stop() can reap them.
_children: dict[int, subprocess.Popen[bytes]] = {}


# ---------------------------------------------------------------------------------------------
# Starting and stopping (in kobako's process)


def start(state_dir: str, python: str = sys.executable) -> int:
    """Start the answerer for the network whose state is in ``state_dir`` (which holds its
    ``dns.json``) and wait until it listens.

    Args:
        state_dir: The network's DNS state directory.
        python: The interpreter to run it with (one that can import kobako).

    Returns:
        Its pid; if one already runs for ``state_dir``, that one's.

    Raises:
        NetworkError: It exited (it could not read its configuration or bind its addresses:
            the message says which) or did not listen within five seconds.
    """
    import subprocess

    state_dir = os.path.abspath(state_dir)
    pid = running(state_dir)
    if pid is not None:
        return pid
    _remove(_pid_path(state_dir))
    for pid, child in list(_children.items()):  # reap those stopped by another process
        if child.poll() is not None:
            del _children[pid]
    log_path = os.path.join(state_dir, "dns.log")
    with open(os.devnull, "rb") as null, open(log_path, "ab") as log:
        log_start = os.fstat(log.fileno()).st_size
        child = subprocess.Popen(
            [python, "-I", "-m", _MODULE, state_dir],
            stdin=null,
            stdout=log,
            stderr=log,
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while (recorded := _read_pid(state_dir)) is None or recorded[0] != child.pid:
        status = child.poll()
        if status is not None:
            why = _read_from(log_path, log_start) or f"it exited with status {status}"
            raise NetworkError(f"the DNS server for {state_dir} did not start: {why}")
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            raise NetworkError(
                f"the DNS server for {state_dir} did not start: not listening after "
                f"{_READY_TIMEOUT_S:g} s (see {log_path})"
            )
        time.sleep(0.002)
    _children[child.pid] = child
    return child.pid


def stop(state_dir: str) -> None:
    """Stop the answerer of ``state_dir`` if it runs (SIGTERM, SIGKILL after 2 s) and remove
    its ``dns.pid``. If it is gone, or its pid now names another process (the start time
    differs), only ``dns.pid`` is removed.

    Raises:
        NetworkError: It was still there after SIGKILL (``dns.pid`` is kept).
    """
    import signal

    recorded = _read_pid(state_dir)
    if recorded is not None:
        pid, started = recorded
        if process_start(pid) == started:
            for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                if _gone(pid, started, wait_s):
                    break
            else:
                raise NetworkError(f"the DNS server for {state_dir} (pid {pid}) did not exit")
        child = _children.pop(pid, None)
        if child is not None:
            child.poll()
    _remove(_pid_path(state_dir))


def running(state_dir: str) -> int | None:
    """The pid of the answerer of ``state_dir`` if it runs, else None."""
    recorded = _read_pid(state_dir)
    if recorded is not None and process_start(recorded[0]) == recorded[1]:
        return recorded[0]
    return None


def _pid_path(state_dir: str) -> str:
    return os.path.join(state_dir, "dns.pid")


def _read_pid(state_dir: str) -> tuple[int, str] | None:
    """The pid and start time ``dns.pid`` records; None if there is none (or it is garbled)."""
    try:
        with open(_pid_path(state_dir)) as f:
            pid, started = f.read().split()
        return int(pid), started
    except (OSError, ValueError):
        return None


def _gone(pid: int, started: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to end; whether it did."""
    deadline = time.monotonic() + timeout
    while True:
        child = _children.get(pid)
        if child is not None:
            child.poll()  # reaps it if it is ours
        if process_start(pid) != started:  # None once it is a zombie
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _read_from(path: str, offset: int) -> str:
    """The last line written to the log after ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = f.read(4096).decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return


# ---------------------------------------------------------------------------------------------
# The names table


class Names:
    """What ``names.json`` says, keyed for lookups.

    Attributes:
        addresses: Each name, normalised (:func:`normalise`) → its IPv4 and its IPv6
            addresses.
        pointers: Each address's reverse name (``2.0.89.10.in-addr.arpa``) → the names that
            have the address.
    """

    __slots__ = ("addresses", "pointers")

    def __init__(
        self,
        addresses: dict[str, tuple[list[str], list[str]]] | None = None,
        pointers: dict[str, list[str]] | None = None,
    ) -> None:
        self.addresses = addresses or {}
        self.pointers = pointers or {}


def normalise(name: str) -> str:
    """A name as the table keys it: without its trailing dot, ASCII letters in lower case
    (DNS names are case-insensitive in ASCII only: RFC 4343)."""
    return (name[:-1] if name.endswith(".") else name).translate(_LOWER)


def parse_names(doc: object) -> Names:
    """The table a ``names.json`` document describes.

    Names no query can carry (not ASCII, an empty label or one over 63 bytes, over 253 bytes
    long) are left out.

    Args:
        doc: The parsed JSON: ``{"names": {NAME: [ADDRESS, ...], ...}}``.

    Raises:
        ValueError: The document has another shape, or an address does not parse.
    """
    import ipaddress

    names = doc.get("names") if isinstance(doc, dict) else None
    if not isinstance(names, dict):
        raise ValueError('not {"names": {NAME: [ADDRESS, ...]}}')
    addresses: dict[str, tuple[list[str], list[str]]] = {}
    pointers: dict[str, list[str]] = {}
    for name, texts in names.items():
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"the addresses of {name!r} are not a list of strings")
        key = normalise(name)
        if not _askable(key):
            continue
        v4, v6 = addresses.setdefault(key, ([], []))
        for text in texts:
            ip = ipaddress.ip_address(text)
            same = v4 if ip.version == 4 else v6
            if str(ip) not in same:
                same.append(str(ip))
            owners = pointers.setdefault(ip.reverse_pointer, [])
            if key not in owners:
                owners.append(key)
    return Names(addresses, pointers)


def _askable(name: str) -> bool:
    labels = name.split(".")
    return name.isascii() and len(name) <= 253 and all(0 < len(label) <= 63 for label in labels)


def parse_upstream(text: str) -> tuple[str, int]:
    """An upstream resolver, ``HOST:PORT`` (``[HOST]:PORT`` for IPv6; port 53 if none), as
    its address and port.

    Raises:
        ValueError: It is not an IP address with an optional port.
    """
    import ipaddress

    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [ADDRESS]:PORT")
        port = rest[1:] if rest else "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r} has no valid port")
    return str(ipaddress.ip_address(host)), int(port)


# ---------------------------------------------------------------------------------------------
# The server (in its own process)


class _Fail(Exception):
    """The server cannot run: its message is the one line it prints before exiting."""


def main(argv: list[str]) -> int:
    """Serve the network whose state is in ``argv[0]`` until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 when told to stop, 1 if it could not start, 2 on bad usage.
    """
    import signal
    import threading

    if len(argv) != 1:
        print(f"usage: python -m {_MODULE} STATE_DIR", file=sys.stderr)
        return 2
    state_dir = argv[0]
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for sig in stop_signals:  # an ignored signal would never reach sigwait
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # the threads inherit the mask
    try:
        listen, port, upstreams = _read_config(os.path.join(state_dir, "dns.json"))
        sockets = _bind(listen, port)
    except _Fail as e:
        print(e, file=sys.stderr)
        return 1
    server = _Server(os.path.join(state_dir, "names.json"), upstreams)
    for udp, tcp in sockets:
        threading.Thread(target=server.serve_udp, args=(udp,), daemon=True).start()
        threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True).start()
    _write_pid(state_dir)
    import dnslib  # noqa: F401  # loaded now, off the readiness path, rather than by a query

    _log(
        f"listening on {', '.join(listen)} port {port}; "
        f"upstream: {', '.join(_show(u) for u in upstreams) or 'none'}"
    )
    signal.sigwait(stop_signals)
    return 0


def _read_config(path: str) -> tuple[list[str], int, list[tuple[str, int]]]:
    """The listen addresses, port and upstreams ``dns.json`` names (an upstream that is this
    server itself is left out: it would loop)."""
    import ipaddress
    import json

    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise _Fail(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict):
        raise _Fail(f"{path}: not a JSON object")
    listen, port, upstream = doc.get("listen"), doc.get("port", 53), doc.get("upstream", [])
    if not isinstance(listen, list) or not listen or not all(isinstance(a, str) for a in listen):
        raise _Fail(f'{path}: "listen" is not a non-empty list of addresses')
    if type(port) is not int or not 0 < port < 65536:
        raise _Fail(f'{path}: "port" is not a port number')
    if not isinstance(upstream, list) or not all(isinstance(u, str) for u in upstream):
        raise _Fail(f'{path}: "upstream" is not a list of HOST:PORT')
    try:
        addresses = [str(ipaddress.ip_address(a)) for a in listen]
        upstreams = [parse_upstream(u) for u in upstream]
    except ValueError as e:
        raise _Fail(f"{path}: {e}") from e
    return addresses, port, [u for u in upstreams if u not in {(a, port) for a in addresses}]


def _bind(addresses: list[str], port: int) -> list[tuple[socket.socket, socket.socket]]:
    """A UDP and a listening TCP socket on each address."""
    import socket

    pairs = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for sock, proto in ((udp, "udp"), (tcp, "tcp")):
            if family == socket.AF_INET6:
                # A bridge's new IPv6 address is tentative (duplicate address detection) for
                # a second or two: bind to it all the same.
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
            try:
                sock.bind((address, port))
            except OSError as e:
                raise _Fail(f"cannot listen on {address} port {port}/{proto}: {e.strerror}") from e
        tcp.listen(64)
        pairs.append((udp, tcp))
    return pairs


def _write_pid(state_dir: str) -> None:
    """Say that the server listens: ``dns.pid``, written atomically."""
    pid = os.getpid()
    tmp = _pid_path(state_dir) + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid} {process_start(pid)}\n")
    os.replace(tmp, _pid_path(state_dir))


class _Server:
    """Answers queries from the names table and forwards the others."""

    def __init__(self, names_path: str, upstreams: list[tuple[str, int]]) -> None:
        import threading

        self._names_path = names_path
        self._names = Names()
        self._names_key: tuple[int, int, int, int] | None = None
        self._upstreams = upstreams
        self._workers = threading.BoundedSemaphore(_MAX_WORKERS)

    def names(self) -> Names:
        """The table, read again if ``names.json`` was replaced or changed since."""
        try:
            st = os.stat(self._names_path)
        except FileNotFoundError:
            self._names, self._names_key = Names(), None
            return self._names
        except OSError:
            return self._names
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._names_key:
            import json

            try:
                with open(self._names_path, "rb") as f:
                    names = parse_names(json.load(f))
            except (OSError, ValueError) as e:
                _log(f"{self._names_path}: {e}; keeping the previous names")
                return self._names
            self._names, self._names_key = names, key
        return self._names

    def answer(self, packet: bytes, *, udp: bool) -> bytes | None:
        """The answer to a query about a known name or address; None if it is to be forwarded.

        Raises:
            Exception: The packet is not a DNS query (dnslib's errors are not all ValueError).
        """
        from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord

        request = DNSRecord.parse(packet)
        if request.header.qr:
            raise ValueError("an answer, not a query")  # answering answers could loop
        if request.header.opcode != 0:
            return _error(request, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return _error(request, RCODE.FORMERR)
        question = request.q
        qtype = question.qtype
        name = normalise(b".".join(question.qname.label).decode("ascii", "replace"))
        names = self.names()
        if name not in names.addresses and name not in names.pointers:
            return None
        reply = request.reply()
        if name in names.addresses:
            v4, v6 = names.addresses[name]
            if qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(*(RR(question.qname, QTYPE.A, rdata=A(a), ttl=TTL) for a in v4))
            if qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(
                    *(RR(question.qname, QTYPE.AAAA, rdata=AAAA(a), ttl=TTL) for a in v6)
                )
        elif qtype in (QTYPE.PTR, QTYPE.ANY):
            reply.add_answer(
                *(
                    RR(question.qname, QTYPE.PTR, rdata=PTR(n + "."), ttl=TTL)
                    for n in names.pointers[name]
                )
            )
        data = bytes(reply.pack())
        if len(data) > (_udp_limit(request) if udp else 65535):
            reply.rr = []
            reply.header.tc = 1
            data = bytes(reply.pack())
        return data

    def forward(self, packet: bytes, *, tcp: bool) -> bytes:
        """The first upstream's answer to a query, with the client's query id; SERVFAIL if
        none answers (an upstream's SERVFAIL or REFUSED only if all say so), REFUSED if there
        is no upstream."""
        from dnslib import RCODE, DNSRecord

        last = None
        for upstream in self._upstreams:
            try:
                reply = _ask(packet, upstream, tcp=tcp)
            except OSError as e:
                _log(f"upstream {_show(upstream)}{'/tcp' if tcp else ''}: {e}")
                continue
            if reply[3] & 0x0F not in (_SERVFAIL, _REFUSED):
                return packet[:2] + reply[2:]
            last = reply
        if last is not None:
            return packet[:2] + last[2:]
        rcode = RCODE.SERVFAIL if self._upstreams else RCODE.REFUSED
        return _error(DNSRecord.parse(packet), rcode)

    def serve_udp(self, sock: socket.socket) -> None:
        """Answer the queries that come to a UDP socket, forever."""
        while True:
            try:
                packet, client = sock.recvfrom(65535)
            except OSError as e:
                _log(f"receiving: {e}")
                time.sleep(0.1)
                continue
            try:
                reply = self.answer(packet, udp=True)
                if reply is not None:
                    sock.sendto(reply, client)
                elif not self._spawn(self._forward_udp, sock, packet, client):
                    _log(f"too many queries at once: dropped one from {_show(client)}")
            except Exception as e:
                _log(f"dropped a packet from {_show(client)}: {e}")

    def serve_tcp(self, listener: socket.socket) -> None:
        """Serve the clients that connect to a TCP socket, forever."""
        while True:
            try:
                conn, client = listener.accept()
            except OSError as e:
                _log(f"accepting: {e}")
                time.sleep(0.1)
                continue
            if not self._spawn(self._serve_connection, conn, client):
                conn.close()
                _log(f"too many clients at once: closed a connection from {_show(client)}")

    def _forward_udp(self, sock: socket.socket, packet: bytes, client: tuple[str, int]) -> None:
        try:
            sock.sendto(self.forward(packet, tcp=False), client)
        except Exception as e:
            _log(f"dropped a query from {_show(client)}: {e}")

    def _serve_connection(self, conn: socket.socket, client: tuple[str, int]) -> None:
        """Answer the queries a TCP client sends (each prefixed with its length)."""
        with conn:
            conn.settimeout(_TCP_IDLE_S)
            try:
                while (packet := _read_message(conn)) is not None:
                    reply = self.answer(packet, udp=False)
                    if reply is None:
                        reply = self.forward(packet, tcp=True)
                    conn.sendall(len(reply).to_bytes(2, "big") + reply)
            except TimeoutError:
                pass
            except Exception as e:
                _log(f"closed the connection from {_show(client)}: {e}")

    def _spawn(self, work: Callable[..., None], *args: object) -> bool:
        """Run ``work(*args)`` in a thread of its own; False if too many already run."""
        import threading

        if not self._workers.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                work(*args)
            finally:
                self._workers.release()

        threading.Thread(target=run, daemon=True).start()
        return True


def _ask(packet: bytes, upstream: tuple[str, int], *, tcp: bool) -> bytes:
    """An upstream's answer to a query, sent with a fresh random id that the answer must
    carry.

    Raises:
        OSError: No answer in time (TimeoutError), a refused or closed connection.
    """
    import socket

    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    qid = os.urandom(2)
    query = qid + packet[2:]
    deadline = time.monotonic() + _UPSTREAM_TIMEOUT_S
    with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
        sock.settimeout(_UPSTREAM_TIMEOUT_S)
        sock.connect(upstream)
        if tcp:
            sock.sendall(len(query).to_bytes(2, "big") + query)
            reply = _read_message(sock)
            if reply is None or reply[:2] != qid:
                raise ConnectionError("no answer to the query")
            return reply
        sock.send(query)
        while True:  # a connected UDP socket only gets the upstream's datagrams
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
            reply = sock.recv(65535)
            if len(reply) >= 12 and reply[:2] == qid and reply[2] & 0x80:
                return reply


def _read_message(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message from a TCP stream; None at its end.

    Raises:
        ConnectionError: The stream ends inside a message.
    """
    head = _recv_exactly(sock, 2)
    if not head:
        return None
    size = int.from_bytes(head, "big")
    body = _recv_exactly(sock, size) if len(head) == 2 else b""
    if len(head) < 2 or len(body) < size:
        raise ConnectionError("the connection closed inside a message")
    return body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _udp_limit(request: DNSRecord) -> int:
    """The largest UDP answer the client takes: 512 bytes, or what its EDNS record says."""
    for record in request.ar:
        if record.rtype == 41:  # OPT: its class is the client's UDP payload size
            return max(512, min(int(record.rclass), 65535))
    return 512


def _error(request: DNSRecord, rcode: int) -> bytes:
    reply = request.reply(aa=0)
    reply.header.rcode = rcode
    return bytes(reply.pack())


def _show(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_log_window = 0.0  # when the current minute of logging began (time.monotonic())
_log_lines = 0  # lines asked for in it


def _log(message: str) -> None:
    """One line to stderr (the log), at most ``_LOG_LINES_PER_MINUTE`` a minute."""
    global _log_window, _log_lines
    now = time.monotonic()
    if now - _log_window >= 60:
        if _log_lines > _LOG_LINES_PER_MINUTE:
            _write(f"{_log_lines - _LOG_LINES_PER_MINUTE} more lines were not logged")
        _log_window, _log_lines = now, 0
    _log_lines += 1
    if _log_lines <= _LOG_LINES_PER_MINUTE:
        _write(message)


def _write(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    sys.stderr.write(f"{stamp} kobako-dns[{os.getpid()}]: {message}\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
