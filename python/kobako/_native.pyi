"""Type stubs for kobako's native core (the Rust crate ``kobako-native``)."""

from typing import Any

__all__ = [
    "attach_device_filter",
    "bridge_ensure",
    "compile_seccomp",
    "extract_layer",
    "link_delete",
    "netns_new",
    "open_in_root",
    "pack_layer",
    "read_in_root",
    "spawn",
    "spawn_detached",
    "veth_attach",
]

def spawn(plan: dict[str, Any]) -> tuple[int, int]:
    """Clone the container's first process per ``plan``; return ``(pid, pidfd)`` after execve.

    Raises kobako.errors.StartError (CommandNotFound, CommandNotExecutable) naming the failed
    step, its errno and path; InvalidArgument for an inconsistent plan.
    """

def spawn_detached(
    plan: dict[str, Any],
    monitor_argv: list[str],
    monitor_env: list[str],
    fds: tuple[int, int, int, int, int],
) -> tuple[int, int]:
    """Start the container per ``plan`` as the child of a new monitor process that outlives
    the caller; return ``(pid, monitor pid)`` once the container has exec'd its command.

    ``fds`` are ``(out, err, in, listen, null)``. The monitor copies ``out`` and ``err`` (read
    ends; -1 for none) to its log and to clients of its attach socket ``listen`` (bound at
    ``monitor_argv[3]``, which it removes at the end; -1: none), passes their input on to
    ``in`` (the write end of the container's stdin pipe; -1: none), writes the exit status,
    then executes ``monitor_argv[4:]``. Raises as :func:`spawn` does.
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

def open_in_root(root_fd: int, path: str | bytes, flags: int, mode: int = 0) -> int:
    """Open ``path`` resolved inside the directory ``root_fd`` as if it were ``/``.

    openat2(2) with ``RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS``: ``..`` stops at ``root_fd``,
    symlinks (absolute ones too) are followed inside it, /proc magic links fail with ELOOP.
    ``O_CLOEXEC`` is added; ``mode`` is for a file ``O_CREAT`` makes.

    Returns:
        The new fd (the caller closes it).

    Raises:
        OSError: As openat2 fails (FileNotFoundError, NotADirectoryError…), with ``path``.
        kobako.errors.InvalidArgument: ``path`` contains a NUL byte.
    """

def netns_new() -> int:
    """A new network namespace with ``lo`` up; returns an fd holding it (the caller closes it).

    Raises:
        kobako.errors.NetworkError: It could not be made.
    """

def bridge_ensure(name: str, addr: str, prefix: int, mtu: int | None = None) -> bool:
    """Make sure bridge ``name`` exists, carries ``addr/prefix`` and is up; True if made now.

    Raises:
        kobako.errors.NetworkError: A netlink request failed (or ``name`` is not a bridge).
    """

def link_delete(name: str, netns: int = ...) -> bool:
    """Delete link ``name`` (in the namespace ``netns``, an fd, when given: by default the
    caller's); False if there was none."""

def veth_attach(
    netns: int,
    host: str,
    bridge: str,
    name: str,
    addr: str,
    prefix: int,
    gateway: str | None = None,
    mac: bytes | None = None,
    mtu: int | None = None,
) -> None:
    """A veth pair from ``bridge`` (host end ``host``, in hairpin mode) into the namespace
    ``netns``, where its end is ``name`` with ``addr/prefix``, up, with a default route via
    ``gateway`` if given.

    Raises:
        kobako.errors.NetworkError: A netlink request failed (what was made is removed).
    """

def attach_device_filter(cgroup_fd: int, rules: list[tuple[str, int, int, str]]) -> None:
    """Attach a v2 device allowlist ``(type, major, minor, access)`` to a cgroup directory fd."""

def extract_layer(
    source_fd: int, target: str, layer: str, *, tee_fd: int | None = None
) -> tuple[str, str, int, int, int]:
    """Extract the layer read from ``source_fd`` (to its end) into the directory ``target``.

    The blob may be a plain, gzip or zstd tar (told by its magic bytes). Every path is resolved
    inside ``target``; OCI whiteouts become overlayfs's (a 0:0 character device, the xattr
    ``trusted.overlay.opaque=y``). The GIL is released meanwhile. Neither fd is closed.

    Args:
        source_fd: Where the blob is read from, from its current offset to its end.
        target: An existing directory to extract into (normally empty).
        layer: The layer's name in errors (its digest, or the file it came from).
        tee_fd: If given, receives every byte read from ``source_fd``, as read.

    Returns:
        ``(blob digest, diff ID, bytes read, entries, size)``, digests as ``sha256:<hex>``;
        ``size`` is the apparent bytes of the files and symlinks made (hard links once).

    Raises:
        kobako.errors.LayerError: A hostile, corrupt or truncated layer, or a failure to
            create an entry; ``.layer``, ``.entry`` and ``.reason`` say which. What was
            extracted before stays in ``target``, and nothing was written outside it.
        kobako.errors.InvalidArgument: A negative or closed fd.
    """

def pack_layer(
    source: str,
    out_fd: int,
    *,
    compression: str = "none",
    overlay_whiteouts: bool = False,
    level: int | None = None,
) -> tuple[str, str, int]:
    """Write the tree at ``source`` as a layer tar to ``out_fd`` (not closed).

    Entries come in byte order of names, without following symlinks, with their modes,
    owners, whole-second mtimes and xattrs (PAX ``SCHILY.xattr.*``, ``security.selinux``
    left out); hard links become links to the first path. The same tree gives the same bytes.
    The GIL is released meanwhile.

    Args:
        source: The directory whose contents become the layer (the root has no entry).
        out_fd: Where the blob is written, from its current offset.
        compression: ``"none"``, ``"gzip"`` or ``"zstd"``.
        overlay_whiteouts: ``source`` is an overlayfs upper directory: 0:0 character devices
            become ``.wh.NAME`` files, opaque directories get ``.wh..wh..opq``, and
            ``trusted.overlay.*`` xattrs are dropped.
        level: The compression level (gzip 0-9, default 6; zstd 1-22, default 3).

    Returns:
        ``(blob digest, diff ID, bytes written)``, digests as ``sha256:<hex>``.

    Raises:
        kobako.errors.LayerError: An entry of ``source`` or the output could not be read or
            written; ``.entry`` names it (``"<stream>"`` for the output).
        kobako.errors.InvalidArgument: An unknown compression, a level out of range, a bad fd.
    """
