"""Attach to a detached container through its monitor's socket (``docker attach``, ``run -it``).

The monitor (``rust/monitor``) serves its socket with frames: to the client, ``STREAM(1)
LEN(4) DATA`` for output (1 stdout, 2 stderr) and ``3 LEN=4 CODE`` when the container has
exited; from the client, ``KIND(1) LEN(2) DATA``: 0 input, 1 window size (rows, columns), 2
end of input. With a terminal our own is put in raw mode, so Ctrl-C reaches the container as
a byte and its line discipline signals it; the detach keys (``ctrl-p,ctrl-q`` by default)
leave it running and return.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from kobako.errors import Conflict, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from kobako.image.store import Store

__all__ = ["DETACHED", "attach", "output", "parse_detach_keys"]

#: What :func:`attach` returns when the detach keys were typed.
DETACHED = -1
_STDIN, _RESIZE, _CLOSE = 0, 1, 2
_EXIT = 3
_CHUNK = 4096


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys``: comma-separated ``ctrl-<x>`` or single characters.

    Raises:
        InvalidArgument: A key that is neither.
    """
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1:
            out.append(ord(key))
            continue
        name = key.lower()
        if name.startswith("ctrl-") and len(name) == 6:
            c = name[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            specials = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in specials:
                out.append(specials[c])
                continue
        raise InvalidArgument(f"Unknown character: '{key}'")
    if not out:
        raise InvalidArgument("detach keys are empty")
    return bytes(out)


def _frame(kind: int, data: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(data)) + data


def _send(sock: socket.socket, frame: bytes) -> None:
    """Send a frame; a monitor that has gone (the container exited) is not an error here: its
    last frames are still to be read. (MSG_NOSIGNAL: the CLI does not ignore SIGPIPE.)"""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(frame, socket.MSG_NOSIGNAL)


def _winsize(fd: int) -> tuple[int, int] | None:
    import fcntl
    import termios

    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def attach(
    store: Store,
    doc: dict[str, Any],
    *,
    stdin: bool = True,
    detach_keys: bytes = b"\x10\x11",
    sig_proxy: bool = True,
    in_fd: int = 0,
    out_fd: int = 1,
    err_fd: int = 2,
    connected: socket.socket | None = None,
) -> int:
    """Attach our stdio to a running container until it exits or the detach keys are typed.

    Args:
        store: Its store.
        doc: Its record.
        stdin: Send our input (if it has a terminal or was started with ``-i``).
        detach_keys: The sequence that detaches (with a terminal).
        sig_proxy: Without a terminal, pass SIGINT, SIGTERM and SIGHUP on to it.
        in_fd: Our input; ``out_fd``, ``err_fd`` where its output goes.
        connected: A socket already connected to the monitor (made before the container
            started, so that none of its output is missed).

    Returns:
        Its exit code, or :data:`DETACHED`.

    Raises:
        Conflict: It is not running (or does not serve attach clients).
    """
    import select
    import signal

    from kobako.runtime.lifecycle import attach_path

    tty = bool(doc["Config"].get("Tty"))
    stdin = stdin and (tty or bool(doc["Config"].get("OpenStdin")))
    if connected is not None:
        sock = connected
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(attach_path(doc["Id"]))
        except OSError:
            sock.close()
            raise Conflict(
                f"You cannot attach to a stopped container, start it first ({doc['Id'][:12]})"
            ) from None
    saved: dict[int, Any] = {}
    raw = None
    try:
        if tty and os.isatty(in_fd):
            import termios
            import tty as tty_mod

            raw = (in_fd, termios.tcgetattr(in_fd))
            tty_mod.setraw(in_fd, termios.TCSANOW)  # keep what was typed ahead: it is theirs

            def resize(signum: int = 0, frame: object = None) -> None:
                size = _winsize(in_fd)
                if size:
                    _send(sock, _frame(_RESIZE, struct.pack(">HH", *size)))

            resize()
            saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
        elif sig_proxy and not tty:
            from kobako.runtime.monitor import kill

            def forward(signum: int, frame: object) -> None:
                with contextlib.suppress(Conflict):
                    kill(store, doc, signum)

            for proxied in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[proxied] = signal.signal(proxied, forward)
        return _pump(sock, stdin, tty, detach_keys, in_fd, out_fd, err_fd, select)
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        if raw is not None:
            import termios

            # TCSANOW: TCSADRAIN would wait, forever, for a terminal nobody reads any more
            termios.tcsetattr(raw[0], termios.TCSANOW, raw[1])
        sock.close()


def output(doc: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
    """The container's output from now until it exits, as ``(stream, data)``: 1 stdout, 2
    stderr (docker-py's ``Container.attach``). Connected before it returns.

    Raises:
        Conflict: It is not running.
    """
    from kobako.runtime.lifecycle import attach_path

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(attach_path(doc["Id"]))
    except OSError:
        sock.close()
        raise Conflict(f"container {doc['Id'][:12]} is not running") from None
    return _frames(sock)


def _split(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole monitor frames at the start of ``buf`` as (stream, data), and the rest."""
    frames = []
    while len(buf) >= 5:
        stream, size = struct.unpack(">BI", buf[:5])
        if len(buf) < 5 + size:
            break
        frames.append((stream, buf[5 : 5 + size]))
        buf = buf[5 + size :]
    return frames, buf


def _frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    try:
        buf = b""
        while chunk := sock.recv(65536):
            frames, buf = _split(buf + chunk)
            for stream, data in frames:
                if stream == _EXIT:
                    return
                yield stream, data
    finally:
        sock.close()


def _pump(
    sock: socket.socket,
    stdin: bool,
    tty: bool,
    keys: bytes,
    in_fd: int,
    out_fd: int,
    err_fd: int,
    select: Any,
) -> int:
    buf = b""
    matched = 0  # how much of the detach sequence the input has ended with
    reading = stdin
    while True:
        readers = [sock] + ([in_fd] if reading else [])
        try:
            ready, _, _ = select.select(readers, [], [])
        except InterruptedError:
            continue
        if in_fd in ready and reading:
            data = os.read(in_fd, _CHUNK)
            if not data:
                reading = False
                _send(sock, _frame(_CLOSE))
            else:
                if tty:
                    for i, b in enumerate(data):
                        matched = matched + 1 if b == keys[matched] else int(b == keys[0])
                        if matched == len(keys):
                            _send(sock, _frame(_STDIN, data[: i + 1 - len(keys)]))
                            return DETACHED
                _send(sock, _frame(_STDIN, data))
        if sock in ready:
            chunk = sock.recv(65536)
            if not chunk:
                return DETACHED  # the monitor went away without an exit code
            frames, buf = _split(buf + chunk)
            for stream, data in frames:
                if stream == _EXIT:
                    return int(struct.unpack(">i", data)[0])
                _write_all(err_fd if stream == 2 else out_fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
