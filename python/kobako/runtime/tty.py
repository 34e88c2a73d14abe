"""The host side of ``-t``: a pseudo-terminal whose slave is the container's stdio.

The proxy copies between our stdin/stdout and the pty master, puts our terminal in raw mode
while it runs, and passes window-size changes on, as ``docker run -t`` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import struct
import termios
import tty
from collections.abc import Iterator
from types import FrameType

__all__ = ["Pty", "open_pty", "open_pty_in"]


class Pty:
    """A pty pair; :meth:`proxy` runs the copy loop until the container closes its side."""

    def __init__(self, pair: tuple[int, int] | None = None) -> None:
        self.master, self.slave = pair or os.openpty()
        self.slave_path = os.ttyname(self.slave) if pair is None else ""
        os.set_inheritable(self.master, False)
        if os.isatty(0):
            self._copy_winsize()

    def _copy_winsize(self) -> None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def close_slave(self) -> None:
        """Close our copy of the slave once the container holds its own."""
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        self.close_slave()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    @contextlib.contextmanager
    def _raw(self) -> Iterator[None]:
        if not os.isatty(0):
            yield
            return
        saved = termios.tcgetattr(0)
        # TCSANOW: what was typed before the container started stays queued for it
        tty.setraw(0, termios.TCSANOW)

        def on_winch(signum: int, frame: FrameType | None) -> None:
            self._copy_winsize()

        old = signal.signal(signal.SIGWINCH, on_winch)
        try:
            yield
        finally:
            signal.signal(signal.SIGWINCH, old)
            termios.tcsetattr(0, termios.TCSANOW, saved)  # no drain: nobody may read any more

    def proxy(self, stdin: bool, wakeup: int = -1) -> None:
        """Copy stdin to the container and its output to stdout until it closes the pty.

        Args:
            stdin: Forward our stdin (``-i``); otherwise the container gets no input.
            wakeup: The signal wakeup fd, drained here so that a signal's Python handler runs
                at once rather than when the next output arrives.
        """
        readers = [self.master] + ([0] if stdin else []) + ([wakeup] if wakeup >= 0 else [])
        with self._raw():
            while True:
                try:
                    ready, _, _ = select.select(readers, [], [])
                except InterruptedError:
                    continue
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError as e:
                        if e.errno == errno.EIO:  # every slave fd closed: the container is gone
                            return
                        raise
                    if not data:
                        return
                    _write_all(1, data)
                if wakeup in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup, 512)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if not data:
                        readers.remove(0)
                        continue
                    _write_all(self.master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def open_pty() -> Pty:
    """Open a pty pair sized like our terminal."""
    return Pty()


#: ioctl numbers (asm-generic): unlock a pty's slave, and open it from its master.
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


def open_pty_in(root_fd: int) -> Pty:
    """A pty of the devpts mounted in a container (its ``/dev/pts/ptmx``, resolved inside the
    root ``root_fd``), sized like our terminal: for ``exec -t``, whose command must see a
    terminal of its own /dev/pts, as runc makes one. The slave is opened from the master
    (TIOCGPTPEER), by no path the container could swap."""
    from kobako import _native

    master = _native.open_in_root(root_fd, "/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return Pty((master, slave))
