"""What /proc says about a process and this boot: enough to tell, after the fact, whether a
recorded pid still is the process that was recorded (a pid is reused; its start time and the
boot are not)."""

from __future__ import annotations

__all__ = ["boot_id", "open_namespace", "process_start"]

import os

_boot: list[str] = []


def process_start(pid: int) -> str | None:
    """A process's start time in clock ticks (field 22 of /proc/PID/stat); None if it is
    gone, or dead and not yet reaped (a zombie: its parent may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def open_namespace(pid: int, start: str | None, kind: str) -> int | None:
    """An fd of the namespace ``kind`` (``net``, ``mnt``...) of process ``pid``, if it still
    is the process that started at ``start``; None if it is gone. The start time is checked
    after the open: a pid reused in between would show another."""
    try:
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if process_start(pid) != start:
        os.close(fd)
        return None
    return fd


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``; "" if unreadable), read once."""
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot.append(f.read().strip())
        except OSError:
            _boot.append("")
    return _boot[0]
