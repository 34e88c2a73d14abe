"""Type stubs for kobako's native core (the Rust crate ``kobako-native``)."""

from typing import Any

__all__ = ["attach_device_filter", "compile_seccomp", "read_in_root", "spawn"]

def spawn(plan: dict[str, Any]) -> tuple[int, int]:
    """Clone the container's first process per ``plan``; return ``(pid, pidfd)`` after execve.

    Raises kobako.errors.StartError (CommandNotFound, CommandNotExecutable) naming the failed
    step, its errno and path; InvalidArgument for an inconsistent plan.
    """

def compile_seccomp(
    default_action: str,
    default_errno: int | None,
    arches: list[str],
    rules: list[tuple[list[str], str, int | None, list[tuple[int, str, int, int]]]],
) -> bytes:
    """Compile an evaluated seccomp profile to a BPF program (``struct sock_filter[]``)."""

def read_in_root(root: str, path: str, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes of ``path`` resolved inside ``root``; None if missing."""

def attach_device_filter(cgroup_fd: int, rules: list[tuple[str, int, int, str]]) -> None:
    """Attach a v2 device allowlist ``(type, major, minor, access)`` to a cgroup directory fd."""
