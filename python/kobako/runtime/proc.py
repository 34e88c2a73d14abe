"""What /proc says about a process and this boot: enough to tell, after the fact, whether a
recorded pid still is the process that was recorded (a pid is reused; its start time and the
boot are not)."""

from __future__ import annotations

__all__ = ["boot_id", "process_start"]

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


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``; "" if unreadable), read once."""
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot.append(f.read().strip())
        except OSError:
            _boot.append("")
    return _boot[0]
