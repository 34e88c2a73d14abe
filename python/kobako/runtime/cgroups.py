"""Control groups for containers: cgroup v1 and v2 behind one interface, detected at run time.

Each container gets one cgroup, made under the hierarchy root whatever cgroup kobako itself
runs in: ``<mount>/kobako/<id>``.

* **v2** (``/sys/fs/cgroup`` is cgroup2): one directory. The controllers kobako needs are
  enabled in the root's and ``kobako``'s ``cgroup.subtree_control`` (``kobako`` itself holds
  no processes), and the native core clones the container straight into the cgroup
  (``clone3`` with ``CLONE_INTO_CGROUP`` and :attr:`Cgroup.clone_fd`).
* **v1**, and the hybrid layout (treated as v1, as Docker does): one directory in every v1
  hierarchy, named ones included, so that the container's cgroup namespace is rooted at its
  own cgroup in each. The container's first process joins it by writing ``0`` into
  :attr:`Cgroup.join_files` before its set-up. ``kobako`` has ``cgroup.clone_children`` set
  in the cpuset hierarchy, so each container's cpuset starts with kobako's CPUs and memory
  nodes.

Limits have docker's semantics: ``memory_swap`` is memory plus swap (twice ``memory`` when
unset, -1 for unlimited) and is dropped silently where the kernel has no swap accounting;
``nano_cpus`` is a CFS quota over a 100 ms period; ``cpu_shares`` becomes ``cpu.weight`` on v2
by the conversion runc (1.3.2+) and crun (1.23+) use, which maps the default 1024 to 100.
Unless privileged, the container also gets Docker's default device allowlist (moby's
``oci/defaults.go`` plus runc's defaults): through the devices controller on v1, and on v2 as
a BPF device program that the native core attaches to the cgroup, as runc and crun do.

Pausing a container freezes its cgroup (:meth:`Cgroup.freeze`): ``freezer.state`` in v1's
freezer hierarchy, ``cgroup.freeze`` on v2.

Everything is plain file I/O on cgroupfs; the mount table is read once per process.
"""

from __future__ import annotations

import errno
import math
import os
import time

from kobako._record import Record
from kobako.errors import CgroupError, InvalidArgument, KobakoError
from kobako.runtime.spec import Mount, Resources

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    _T = TypeVar("_T")

__all__ = ["Cgroup", "CgroupStats", "cgroup_version", "cleanup_stale", "remove_idle"]

#: The directory, under each hierarchy's root, that holds kobako's cgroups.
PARENT = "kobako"

#: The CFS period kobako uses for ``nano_cpus``, in microseconds (Docker's).
CPU_PERIOD_US = 100_000

#: Docker's smallest memory limit and reservation (``linuxMinMemory``).
MIN_MEMORY = 6 << 20

#: How long :meth:`Cgroup.destroy` waits for killed processes to leave, in seconds.
DESTROY_TIMEOUT = 5.0

#: How long :meth:`Cgroup.freeze` waits for every process to be frozen, in seconds.
FREEZE_TIMEOUT = 10.0

# Every controller cgroup v1 has (v1 is frozen; a hierarchy's other mount options are not
# controllers: rw, xattr, noprefix, clone_children, release_agent=...).
_V1_CONTROLLERS = frozenset(
    (
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "debug",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    )
)

# The v2 controllers kobako enables for its cgroups, when the kernel has them.
_V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")

# Docker's device cgroup rules for a container that is not privileged, in order.
#: Docker's default device allowlist (moby's oci/defaults.go plus runc's): (type, major,
#: minor, access), -1 for any number. Applied through the devices controller on v1 and as a
#: BPF_PROG_TYPE_CGROUP_DEVICE program on v2.
DEVICE_ALLOWLIST: tuple[tuple[str, int, int, str], ...] = (
    ("c", 1, 5, "rwm"),  # zero
    ("c", 1, 3, "rwm"),  # null
    ("c", 1, 9, "rwm"),  # urandom
    ("c", 1, 8, "rwm"),  # random
    ("c", 5, 0, "rwm"),  # tty
    ("c", 5, 1, "rwm"),  # console
    ("c", -1, -1, "m"),  # mknod of any device (opening it stays denied)
    ("b", -1, -1, "m"),
    ("c", 1, 7, "rwm"),  # full
    ("c", 136, -1, "rwm"),  # pts
    ("c", 5, 2, "rwm"),  # ptmx
    ("c", 10, 200, "rwm"),  # tun
)


def _v1_rule(kind: str, major: int, minor: int, access: str) -> str:
    def num(n: int) -> str:
        return "*" if n < 0 else str(n)

    return f"{kind} {num(major)}:{num(minor)} {access}"


_V1_DEVICE_RULES = (
    ("devices.deny", "a"),
    *(("devices.allow", _v1_rule(*rule)) for rule in DEVICE_ALLOWLIST),
)

# v1 reports "no limit" as the largest page-aligned signed 64-bit number; anything this large
# is no limit.
_V1_UNLIMITED = 1 << 62

_CGROUP_MOUNT_OPTIONS = ("ro", "nosuid", "nodev", "noexec")

_SIGKILL = 9  # the same on every Linux architecture; spares importing signal


def _attach_device_filter(fd: int, path: str) -> None:
    from kobako import _native

    try:
        _native.attach_device_filter(fd, list(DEVICE_ALLOWLIST))
    except KobakoError as e:
        os.close(fd)
        raise CgroupError(f"cgroup {path}: {e}") from e


class CgroupStats(Record):
    """Resource usage of a container's cgroup.

    Attributes:
        memory_usage: Memory charged now, in bytes (page cache included).
        memory_peak: The most memory ever charged, in bytes; ``None`` where the kernel does
            not record it (v2 before Linux 5.19).
        memory_limit: The hard memory limit in bytes, ``None`` if unlimited.
        cpu_usage_ns: CPU time used, in nanoseconds.
        pids_current: Number of tasks (threads included).
        pids_limit: The task limit, ``None`` if unlimited.
        cpu_user_ns: CPU time used in user mode, in nanoseconds (v1: in clock ticks' steps).
        cpu_system_ns: CPU time used in kernel mode, in nanoseconds.
        io_bytes: Bytes read and written, per block device: ``(major, minor, read, write)``.
    """

    memory_usage: int
    memory_peak: int | None
    memory_limit: int | None
    cpu_usage_ns: int
    pids_current: int
    pids_limit: int | None
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    io_bytes: tuple[tuple[int, int, int, int], ...] = ()


class _Hierarchy:
    """A mounted cgroup hierarchy: where it is, and what it holds as mounted (v1)."""

    __slots__ = ("controllers", "mountpoint")

    def __init__(self, mountpoint: str, controllers: tuple[str, ...]) -> None:
        self.mountpoint = mountpoint
        self.controllers = controllers  # v1: ("cpu", "cpuacct"), ("name=systemd",); v2: ()

    def __repr__(self) -> str:
        return f"_Hierarchy({self.mountpoint!r}, {self.controllers!r})"


# --- the mount table ---------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _parse_mountinfo(text: str) -> tuple[int, tuple[_Hierarchy, ...]]:
    """The cgroup version and hierarchies that a /proc/self/mountinfo text shows.

    v1 when any v1 hierarchy holds a controller (hybrid included), else v2 when cgroup2 is
    mounted. Each v1 hierarchy appears once, at its first mount point.

    Raises:
        CgroupError: No cgroup hierarchy is mounted.
    """
    v1: dict[tuple[str, ...], _Hierarchy] = {}
    v2: list[str] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype == "cgroup":
            options = fields[sep + 3].split(",")
            controllers = tuple(o for o in options if o in _V1_CONTROLLERS or o.startswith("name="))
            if controllers and controllers not in v1:
                v1[controllers] = _Hierarchy(_unescape(fields[4]), controllers)
        elif fstype == "cgroup2":
            v2.append(_unescape(fields[4]))
    if any(c in _V1_CONTROLLERS for key in v1 for c in key):
        return 1, tuple(v1.values())
    if v2:
        mountpoint = "/sys/fs/cgroup" if "/sys/fs/cgroup" in v2 else v2[0]
        return 2, (_Hierarchy(mountpoint, ()),)
    raise CgroupError("no cgroup hierarchy is mounted (none in /proc/self/mountinfo)")


def _once(compute: Callable[[], _T]) -> Callable[[], _T]:
    """``functools.cache`` for a function of no arguments (the CLI spares importing functools)."""
    results: list[_T] = []

    def cached() -> _T:
        if not results:
            results.append(compute())
        return results[0]

    return cached


@_once
def _layout() -> tuple[int, tuple[_Hierarchy, ...]]:
    try:
        text = _read("/proc/self/mountinfo")
    except OSError as e:
        raise CgroupError(f"cannot read /proc/self/mountinfo: {e.strerror}") from e
    return _parse_mountinfo(text)


def cgroup_version() -> int:
    """The cgroup version this host uses for its controllers: 1 (v1 or hybrid) or 2.

    Read from /proc/self/mountinfo once per process.

    Raises:
        CgroupError: No cgroup hierarchy is mounted.
    """
    return _layout()[0]


# --- file I/O ----------------------------------------------------------------------------------


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_optional(path: str) -> str | None:
    """The file's text, ``None`` if it does not exist."""
    try:
        return _read(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def _int_or_none(text: str | None) -> int | None:
    """A cgroup number; ``None`` for a missing file or ``max``."""
    if text is None:
        return None
    text = text.strip()
    return None if text == "max" else int(text)


def _keyed(text: str | None) -> dict[str, int]:
    """Parse a flat-keyed file (``key value`` lines) such as memory.events or cpu.stat."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _io_v1(text: str | None) -> tuple[tuple[int, int, int, int], ...]:
    """Bytes read and written per device, from v1's ``8:0 Read 4096`` lines."""
    devices: dict[tuple[int, int], list[int]] = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0] or not fields[2].isdigit():
            continue
        major, _, minor = fields[0].partition(":")
        counts = devices.setdefault((int(major), int(minor)), [0, 0])
        if fields[1] == "Read":
            counts[0] += int(fields[2])
        elif fields[1] == "Write":
            counts[1] += int(fields[2])
    return tuple((major, minor, r, w) for (major, minor), (r, w) in devices.items())


def _io_v2(text: str | None) -> tuple[tuple[int, int, int, int], ...]:
    """Bytes read and written per device, from v2's ``8:0 rbytes=4096 wbytes=0 ...`` lines."""
    out: list[tuple[int, int, int, int]] = []
    for line in (text or "").splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        counts = {k: v for k, _, v in (pair.partition("=") for pair in pairs)}
        read, write = counts.get("rbytes", "0"), counts.get("wbytes", "0")
        out.append((int(major), int(minor), int(read), int(write)))
    return tuple(out)


def _set(path: str, value: str) -> None:
    """Write a limit; a failure names the file and the value."""
    try:
        _write(path, value)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e


def _rmdir(path: str) -> int:
    """rmdir; 0 when it is gone (or was), else the errno."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return 0
    except OSError as e:
        return e.errno or errno.EIO
    return 0


def _subdirs_bottom_up(path: str) -> list[str]:
    """The cgroups nested in ``path``, deepest first."""
    out: list[str] = []
    for dirpath, dirnames, _ in os.walk(path, topdown=False):
        out.extend(f"{dirpath}/{d}" for d in dirnames)
    return out


def _pids(path: str) -> set[int]:
    """The processes in the cgroup at ``path`` and in the cgroups nested in it."""
    out: set[int] = set()
    for d in [path, *_subdirs_bottom_up(path)]:
        text = _read_optional(f"{d}/cgroup.procs")
        out.update(int(p) for p in (text or "").split())
    return out


# --- limits ------------------------------------------------------------------------------------

#: One limit to write: (controller, file, value, required). A write that is not required is
#: skipped when its controller or file does not exist.
_Write = tuple[str, str, str, bool]


def _check(r: Resources) -> None:
    """Refuse what dockerd refuses (its ``verifyPlatformContainerResources``).

    Raises:
        InvalidArgument: A limit is out of range or inconsistent with another.
    """
    memory = r.memory or 0
    swap = r.memory_swap or 0
    reservation = r.memory_reservation or 0
    if memory < 0:
        raise InvalidArgument(f"invalid memory limit {memory}: must not be negative")
    if reservation < 0:
        raise InvalidArgument(f"invalid memory reservation {reservation}: must not be negative")
    if memory and memory < MIN_MEMORY:
        raise InvalidArgument(f"Minimum memory limit allowed is 6MB (got {memory} bytes)")
    if swap > 0 and not memory:
        raise InvalidArgument(
            f"You should always set the Memory limit when using Memoryswap limit (got {swap})"
        )
    if swap > 0 and swap < memory:
        raise InvalidArgument(
            f"Minimum memoryswap limit should be larger than memory limit "
            f"(memory {memory}, memory+swap {swap})"
        )
    if swap < -1:
        raise InvalidArgument(f"invalid memory+swap limit {swap}: use -1 for unlimited")
    if reservation and memory and memory < reservation:
        raise InvalidArgument(
            f"Minimum memory limit can not be less than memory reservation limit "
            f"(memory {memory}, reservation {reservation})"
        )
    if reservation and reservation < MIN_MEMORY:
        raise InvalidArgument(f"Minimum memory reservation allowed is 6MB (got {reservation})")
    if (r.nano_cpus or 0) < 0:
        raise InvalidArgument(f"invalid nano_cpus {r.nano_cpus}: must not be negative")
    if (r.cpu_shares or 0) < 0:
        raise InvalidArgument(f"invalid cpu shares {r.cpu_shares}: must not be negative")


def _memory_and_swap(r: Resources) -> tuple[int | None, int | None]:
    """The memory limit and memory+swap limit (-1: unlimited) to set, docker's defaults applied."""
    if not r.memory:
        return None, None
    swap = r.memory_swap or 2 * r.memory  # dockerd: unset means twice the memory limit
    return r.memory, swap


def _shares_to_weight(shares: int) -> int:
    """Convert v1 ``cpu.shares`` (2 to 262144, default 1024) to v2 ``cpu.weight`` (1 to 10000).

    The mapping runc and crun use now: quadratic in log2(shares), so that 2, 1024 and 262144
    map to 1, 100 and 10000.
    """
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    exp = math.log2(shares)
    return math.ceil(10 ** ((exp * exp + 125 * exp) / 612.0 - 7.0 / 34.0))


def _plan_v1(r: Resources, privileged: bool) -> list[_Write]:
    out: list[_Write] = []
    memory, swap = _memory_and_swap(r)
    if memory is not None:
        # A new cgroup has no limits, so the memory limit goes first (memsw must stay >= it).
        out.append(("memory", "memory.limit_in_bytes", str(memory), True))
        out.append(("memory", "memory.memsw.limit_in_bytes", str(swap), False))
    if r.memory_reservation:
        out.append(("memory", "memory.soft_limit_in_bytes", str(r.memory_reservation), True))
    if r.nano_cpus:
        quota = r.nano_cpus * CPU_PERIOD_US // 1_000_000_000
        out.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US), True))
        out.append(("cpu", "cpu.cfs_quota_us", str(quota), True))
    if r.cpu_shares:
        out.append(("cpu", "cpu.shares", str(min(max(r.cpu_shares, 2), 262144)), True))
    if r.cpuset_cpus:
        out.append(("cpuset", "cpuset.cpus", r.cpuset_cpus, True))
    if r.pids_limit and r.pids_limit > 0:
        out.append(("pids", "pids.max", str(r.pids_limit), True))
    if not privileged:
        out.extend(("devices", name, rule, False) for name, rule in _V1_DEVICE_RULES)
    return out


def _plan_v2(r: Resources) -> list[_Write]:
    out: list[_Write] = []
    memory, swap = _memory_and_swap(r)
    if memory is not None and swap is not None:
        out.append(("memory", "memory.max", str(memory), True))
        out.append(("memory", "memory.swap.max", "max" if swap < 0 else str(swap - memory), False))
    if r.memory_reservation:
        out.append(("memory", "memory.low", str(r.memory_reservation), True))
    if r.nano_cpus:
        quota = r.nano_cpus * CPU_PERIOD_US // 1_000_000_000
        out.append(("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}", True))
    if r.cpu_shares:
        out.append(("cpu", "cpu.weight", str(_shares_to_weight(r.cpu_shares)), True))
    if r.cpuset_cpus:
        out.append(("cpuset", "cpuset.cpus", r.cpuset_cpus, True))
    if r.pids_limit and r.pids_limit > 0:
        out.append(("pids", "pids.max", str(r.pids_limit), True))
    return out


# --- kobako's parent cgroup, set up once per process -------------------------------------------

_prepared: set[str] = set()


def _mkdir_cgroup(path: str) -> None:
    """Create a cgroup directory that may already exist."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e


def _prepare_v1(h: _Hierarchy) -> None:
    """Make ``kobako`` in a v1 hierarchy; in cpuset's, give it the root's CPUs and nodes."""
    parent = f"{h.mountpoint}/{PARENT}"
    if parent in _prepared:
        return
    _mkdir_cgroup(parent)
    if "cpuset" in h.controllers:
        # A new cpuset is empty, and a task cannot join an empty one.
        try:
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not _read(f"{parent}/{name}").strip():
                    _set(f"{parent}/{name}", _read(f"{h.mountpoint}/{name}").strip())
            if _read(f"{parent}/cgroup.clone_children").strip() != "1":
                _set(f"{parent}/cgroup.clone_children", "1")
        except OSError as e:
            raise CgroupError(f"cannot set up the cpuset of {parent}: {e.strerror}") from e
    _prepared.add(parent)


def _enable_controllers(cgroup: str, wanted: Iterable[str]) -> None:
    """Enable ``wanted`` in ``cgroup``'s subtree_control, each one that the kernel allows."""
    control = f"{cgroup}/cgroup.subtree_control"
    try:
        enabled = _read(control).split()
    except OSError as e:
        raise CgroupError(f"cannot read {control}: {e.strerror}") from e
    missing = [c for c in wanted if c not in enabled]
    if not missing:
        return
    try:
        _write(control, " ".join("+" + c for c in missing))
    except OSError:
        # One at a time: a controller the kernel refuses (+cpu while realtime tasks run outside
        # the root) stays off, and a limit that needs it fails later naming its file.
        for c in missing:
            try:
                _write(control, "+" + c)
            except OSError:
                continue


def _prepare_v2(h: _Hierarchy) -> None:
    """Make ``kobako`` and enable the controllers its containers need, down to it."""
    parent = f"{h.mountpoint}/{PARENT}"
    if parent in _prepared:
        return
    try:
        available = _read(f"{h.mountpoint}/cgroup.controllers").split()
    except OSError as e:
        raise CgroupError(f"cannot read {h.mountpoint}/cgroup.controllers: {e.strerror}") from e
    _enable_controllers(h.mountpoint, [c for c in _V2_CONTROLLERS if c in available])
    _mkdir_cgroup(parent)
    try:
        inherited = _read(f"{parent}/cgroup.controllers").split()
    except OSError as e:
        raise CgroupError(f"cannot read {parent}/cgroup.controllers: {e.strerror}") from e
    _enable_controllers(parent, [c for c in _V2_CONTROLLERS if c in inherited])
    _prepared.add(parent)


# --- the container's cgroup --------------------------------------------------------------------


def _make(h: _Hierarchy, container_id: str, prepare: Callable[[_Hierarchy], None]) -> str:
    """Make the container's directory in ``h`` (and ``kobako`` first, if this process has not)."""
    prepare(h)
    path = f"{h.mountpoint}/{PARENT}/{container_id}"
    try:
        os.mkdir(path, 0o755)
    except FileNotFoundError:
        # kobako was removed since this process set it up: set it up again
        _prepared.discard(f"{h.mountpoint}/{PARENT}")
        prepare(h)
        _mkdir(path)
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e
    return path


def _check_id(container_id: str) -> None:
    if container_id in ("", ".", "..") or "/" in container_id or "\0" in container_id:
        raise InvalidArgument(f"invalid container id {container_id!r} for a cgroup name")


class Cgroup:
    """One container's cgroup (one directory per v1 hierarchy, one on v2).

    Make it with :meth:`create`; remove it with :meth:`destroy`, which is safe to call twice.

    Attributes:
        id: The container id, which is the cgroup's name.
        version: 1 or 2.
        paths: The cgroup's directories.
        clone_fd: v2: an fd of the cgroup directory for ``clone3``'s ``CLONE_INTO_CGROUP``
            (closed and ``None`` after :meth:`destroy`); ``None`` on v1.
        join_files: the files the container's first process writes ``0`` (itself) into to
            join the cgroup before its set-up, when it was not cloned into it: every
            hierarchy's ``tasks`` on v1 (moving one's own single thread skips the global
            threadgroup lock, and with it an RCU grace period of ~10 ms that writing a pid to
            ``cgroup.procs`` costs); on v2 ``cgroup.procs``, used only where clone3 (and so
            CLONE_INTO_CGROUP) is missing.
    """

    __slots__ = ("_dirs", "clone_fd", "id", "join_files", "paths", "version")

    def __init__(
        self,
        container_id: str,
        version: int,
        dirs: dict[str, str],
        paths: tuple[str, ...],
        clone_fd: int | None,
    ) -> None:
        self.id = container_id
        self.version = version
        self._dirs = dirs
        self.paths = paths
        self.clone_fd = clone_fd
        name = "tasks" if version == 1 else "cgroup.procs"
        self.join_files: tuple[str, ...] = tuple(f"{p}/{name}" for p in paths)

    def __repr__(self) -> str:
        return f"Cgroup(id={self.id!r}, version={self.version}, paths={self.paths!r})"

    @classmethod
    def create(cls, container_id: str, resources: Resources, *, privileged: bool = False) -> Cgroup:
        """Make the container's cgroup and write its limits.

        Args:
            container_id: The container's id, used as the cgroup's name.
            resources: The limits, with docker's semantics.
            privileged: Leave device access unconfined (v1), as ``--privileged`` does.

        Returns:
            The cgroup, with no process in it yet.

        Raises:
            InvalidArgument: The id cannot name a cgroup, or a limit is out of range.
            CgroupError: A directory could not be made or a limit could not be written (the
                message names the file and the value); whatever was made is removed.

        Example:
            >>> cg = Cgroup.create("ab12", Resources(memory=64 << 20))
            >>> cg.stats().memory_limit
            67108864
            >>> cg.destroy()
        """
        _check_id(container_id)
        _check(resources)
        version, hierarchies = _layout()
        if version == 2:
            return cls._create_v2(container_id, resources, hierarchies[0], privileged)
        return cls._create_v1(container_id, resources, hierarchies, privileged)

    @classmethod
    def _create_v1(
        cls,
        container_id: str,
        resources: Resources,
        hierarchies: tuple[_Hierarchy, ...],
        privileged: bool,
    ) -> Cgroup:
        plan = _plan_v1(resources, privileged)
        dirs: dict[str, str] = {}
        made: list[str] = []
        try:
            for h in hierarchies:
                path = _make(h, container_id, _prepare_v1)
                made.append(path)
                dirs.update(dict.fromkeys(h.controllers, path))
            _apply(plan, dirs)
        except BaseException:
            for path in made:
                _rmdir(path)
            raise
        return cls(container_id, 1, dirs, tuple(made), None)

    @classmethod
    def _create_v2(
        cls, container_id: str, resources: Resources, h: _Hierarchy, privileged: bool
    ) -> Cgroup:
        plan = _plan_v2(resources)
        path = _make(h, container_id, _prepare_v2)
        dirs = dict.fromkeys(_V2_CONTROLLERS, path)
        try:
            _apply(plan, dirs)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(f"cannot open cgroup {path}: {e.strerror}") from e
            if not privileged:
                _attach_device_filter(fd, path)
        except BaseException:
            _rmdir(path)
            raise
        return cls(container_id, 2, dirs, (path,), fd)

    @classmethod
    def find(cls, container_id: str) -> Cgroup | None:
        """The cgroup :meth:`create` made for a container, if it still exists.

        For a container started by another kobako process (detached): to join it (``exec``),
        read its statistics, freeze it, or remove it.

        Raises:
            InvalidArgument: The id cannot name a cgroup.
            CgroupError: v2: the directory exists but cannot be opened.
        """
        _check_id(container_id)
        version, hierarchies = _layout()
        dirs: dict[str, str] = {}
        paths: list[str] = []
        for h in hierarchies:
            path = f"{h.mountpoint}/{PARENT}/{container_id}"
            if not os.path.isdir(path):
                continue
            paths.append(path)
            dirs.update(dict.fromkeys(h.controllers or _V2_CONTROLLERS, path))
        if not paths:
            return None
        fd = None
        if version == 2:
            try:
                fd = os.open(paths[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(f"cannot open cgroup {paths[0]}: {e.strerror}") from e
        return cls(container_id, version, dirs, tuple(paths), fd)

    # --- processes ---

    def add_process(self, pid: int) -> None:
        """Move ``pid`` (the whole process) into this cgroup.

        Raises:
            CgroupError: A ``cgroup.procs`` file refused it.
        """
        for path in self.paths:
            _set(f"{path}/cgroup.procs", str(pid))

    def kill(self) -> None:
        """Send SIGKILL to every process in the cgroup (and in cgroups nested in it).

        Uses ``cgroup.kill`` where the kernel has it (v2, Linux 5.14+); otherwise signals the
        pids in ``cgroup.procs`` until a pass finds none it has not signalled (a process with
        SIGKILL pending cannot fork, so that ends), then thaws a v1 cgroup that was paused,
        since a process frozen there dies only once thawed (v2 kills frozen processes). Does
        not wait for them to exit.

        Raises:
            CgroupError: ``cgroup.kill`` exists but could not be written.
        """
        if self.version == 2 and self.paths:
            try:
                _write(f"{self.paths[0]}/cgroup.kill", "1")
                return
            except FileNotFoundError:
                pass  # an older kernel, or the cgroup is gone: the loop below copes
            except OSError as e:
                raise CgroupError(
                    f"cannot write '1' to {self.paths[0]}/cgroup.kill: {e.strerror}"
                ) from e
        signalled: set[int] = set()
        while True:
            found: set[int] = set()
            for path in self.paths:
                found |= _pids(path)
            new = found - signalled
            if not new:
                if signalled and self.version == 1 and "freezer" in self._dirs:
                    try:  # noqa: SIM105 (contextlib is slow to import)
                        _write(f"{self._dirs['freezer']}/freezer.state", "THAWED")
                    except OSError:
                        pass
                return
            for pid in new:
                try:  # noqa: SIM105 (contextlib is slow to import)
                    os.kill(pid, _SIGKILL)
                except ProcessLookupError:
                    pass
            signalled |= new

    def destroy(self) -> None:
        """Remove the cgroup: kill what is left in it, then remove its directories.

        Removal is retried while the kernel reaps killed processes, up to
        :data:`DESTROY_TIMEOUT` seconds. Calling it again is harmless.

        Raises:
            CgroupError: A directory could not be removed.
        """
        if self.clone_fd is not None:
            os.close(self.clone_fd)
            self.clone_fd = None
        pending = list(self.paths)
        failed: list[str] = []
        deadline = 0.0
        delay = 0.001
        while pending:
            busy: list[str] = []
            for path in pending:
                err = _rmdir(path)
                if err == errno.EBUSY:
                    busy.append(path)
                elif err:
                    failed.append(f"cannot remove cgroup {path}: {os.strerror(err)}")
            if not busy:
                break
            now = time.monotonic()
            if not deadline:
                deadline = now + DESTROY_TIMEOUT
            elif now > deadline:
                raise CgroupError(
                    f"cannot remove cgroup {busy[0]}: still busy {DESTROY_TIMEOUT:g}s after "
                    f"its processes were killed"
                )
            self.kill()
            for path in busy:
                for nested in _subdirs_bottom_up(path):
                    _rmdir(nested)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            pending = busy
        if failed:
            self.paths = tuple(p for p in self.paths if os.path.isdir(p))
            raise CgroupError(failed[0])
        self.paths = ()
        self.join_files = ()

    # --- reading ---

    def _file(self, controller: str, name: str) -> str | None:
        """The text of a controller's file, ``None`` if the controller or file is missing."""
        path = self._dirs.get(controller)
        return None if path is None else _read_optional(f"{path}/{name}")

    def stats(self) -> CgroupStats:
        """Read the cgroup's resource usage.

        Raises:
            CgroupError: A file could not be read (other than one that does not exist).
        """
        if self.version == 1:
            limit = _int_or_none(self._file("memory", "memory.limit_in_bytes"))
            ticks = _keyed(self._file("cpuacct", "cpuacct.stat"))
            tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            io = self._file("blkio", "blkio.throttle.io_service_bytes_recursive")
            if io is None:
                io = self._file("blkio", "blkio.throttle.io_service_bytes")
            return CgroupStats(
                memory_usage=_int_or_none(self._file("memory", "memory.usage_in_bytes")) or 0,
                memory_peak=_int_or_none(self._file("memory", "memory.max_usage_in_bytes")),
                memory_limit=None if limit is None or limit >= _V1_UNLIMITED else limit,
                cpu_usage_ns=_int_or_none(self._file("cpuacct", "cpuacct.usage")) or 0,
                pids_current=_int_or_none(self._file("pids", "pids.current")) or 0,
                pids_limit=_int_or_none(self._file("pids", "pids.max")),
                cpu_user_ns=ticks.get("user", 0) * tick_ns,
                cpu_system_ns=ticks.get("system", 0) * tick_ns,
                io_bytes=_io_v1(io),
            )
        cpu = _keyed(self._file("cpu", "cpu.stat"))
        return CgroupStats(
            memory_usage=_int_or_none(self._file("memory", "memory.current")) or 0,
            memory_peak=_int_or_none(self._file("memory", "memory.peak")),
            memory_limit=_int_or_none(self._file("memory", "memory.max")),
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            pids_current=_int_or_none(self._file("pids", "pids.current")) or 0,
            pids_limit=_int_or_none(self._file("pids", "pids.max")),
            cpu_user_ns=cpu.get("user_usec", 0) * 1000,
            cpu_system_ns=cpu.get("system_usec", 0) * 1000,
            io_bytes=_io_v2(self._file("io", "io.stat")),
        )

    def memory_stat(self) -> dict[str, int]:
        """The kernel's ``memory.stat`` for the cgroup, by its own names (v1's and v2's differ:
        v1 has ``cache``, ``rss`` and their ``total_*`` sums, v2 ``anon``, ``file``...).

        Raises:
            CgroupError: The file could not be read (other than one that does not exist).
        """
        return _keyed(self._file("memory", "memory.stat"))

    def pids(self) -> list[int]:
        """The processes in the cgroup (and in cgroups nested in it), in ascending order.

        Raises:
            CgroupError: A ``cgroup.procs`` file could not be read.
        """
        found: set[int] = set()
        for path in self.paths:
            found |= _pids(path)
        return sorted(found)

    # --- freezing ---

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        """Freeze every process in the cgroup (``docker pause``); returns once all are frozen.

        v1: ``FROZEN`` into the freezer hierarchy's ``freezer.state``, written again while it
        reads ``FREEZING`` (a process forking at that moment can hold it there, which is why
        runc retries too). v2: ``1`` into ``cgroup.freeze``, then wait for ``frozen 1`` in
        ``cgroup.events``. A cgroup that is not frozen within ``timeout`` seconds is thawed
        again.

        Raises:
            CgroupError: The kernel has no freezer for it, a file could not be written, or it
                did not freeze within ``timeout``.
        """
        control, frozen = self._freezer()
        _set(control, "FROZEN" if self.version == 1 else "1")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            if frozen():
                return
            if time.monotonic() > deadline:
                try:  # noqa: SIM105 (contextlib is slow to import)
                    _write(control, "THAWED" if self.version == 1 else "0")
                except OSError:
                    pass
                raise CgroupError(f"cannot freeze cgroup {os.path.dirname(control)}: timed out")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
            if self.version == 1:
                _set(control, "FROZEN")

    def thaw(self) -> None:
        """Let the processes of a frozen cgroup run again (``docker unpause``); harmless if the
        cgroup is not frozen.

        Raises:
            CgroupError: The kernel has no freezer for it, or the file could not be written.
        """
        control, _ = self._freezer()
        _set(control, "THAWED" if self.version == 1 else "0")

    def _freezer(self) -> tuple[str, Callable[[], bool]]:
        """The file that freezes the cgroup, and a test of whether it is frozen."""
        if self.version == 1:
            path = self._dirs.get("freezer")
            if path is None:
                raise CgroupError(f"cgroup {self.id}: no freezer cgroup hierarchy is mounted")
            state = f"{path}/freezer.state"
            return state, lambda: (_read_optional(state) or "").strip() == "FROZEN"
        if not self.paths:
            raise CgroupError(f"cgroup {self.id} has been removed")
        control = f"{self.paths[0]}/cgroup.freeze"
        if not os.path.exists(control):
            raise CgroupError(f"cannot freeze {self.paths[0]}: no cgroup.freeze (Linux 5.2+)")
        events = f"{self.paths[0]}/cgroup.events"
        return control, lambda: _keyed(_read_optional(events)).get("frozen") == 1

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup.

        v1: ``oom_kill`` in memory.oom_control (Linux 4.13+; before, whether it is under OOM
        now). v2: ``oom_kill`` in memory.events.

        Raises:
            CgroupError: The file could not be read.
        """
        if self.version == 1:
            control = _keyed(self._file("memory", "memory.oom_control"))
            if "oom_kill" in control:
                return control["oom_kill"] > 0
            return control.get("under_oom", 0) > 0
        return _keyed(self._file("memory", "memory.events")).get("oom_kill", 0) > 0

    def container_mounts(self) -> tuple[Mount, ...]:
        """What to mount at /sys/fs/cgroup in the container, inside its cgroup namespace.

        v2: cgroup2, read-only. v1: a tmpfs, then each host hierarchy read-only at
        ``/sys/fs/cgroup/<its name on the host>`` (the host's ``cpu``/``cpuacct`` symlinks to
        a co-mounted ``cpu,cpuacct`` are not recreated). The tmpfs is writable so that the
        hierarchies' mount points can be made in it; the caller makes /sys/fs/cgroup
        read-only once they are mounted, as runc does.
        """
        return _container_mounts()


@_once
def _container_mounts() -> tuple[Mount, ...]:
    version, hierarchies = _layout()
    if version == 2:
        return (
            Mount(
                destination="/sys/fs/cgroup",
                type="cgroup2",
                source="cgroup",
                options=_CGROUP_MOUNT_OPTIONS,
            ),
        )
    mounts = [
        Mount(
            destination="/sys/fs/cgroup",
            type="tmpfs",
            source="tmpfs",
            options=("nosuid", "nodev", "noexec", "mode=755"),
        )
    ]
    seen: set[str] = set()
    for h in hierarchies:
        name = os.path.basename(h.mountpoint.rstrip("/"))
        if not name or name in seen:
            continue
        seen.add(name)
        controllers = ",".join(h.controllers)
        if not any(c in _V1_CONTROLLERS for c in h.controllers):
            controllers = "none," + controllers
        mounts.append(
            Mount(
                destination=f"/sys/fs/cgroup/{name}",
                type="cgroup",
                source="cgroup",
                options=(*_CGROUP_MOUNT_OPTIONS, controllers),
            )
        )
    return tuple(mounts)


def _apply(plan: list[_Write], dirs: dict[str, str]) -> None:
    for controller, name, value, required in plan:
        path = dirs.get(controller)
        if path is None:
            if not required:
                continue
            raise CgroupError(f"cannot set {name} to {value!r}: no {controller} cgroup hierarchy")
        target = f"{path}/{name}"
        try:
            _write(target, value)
        except FileNotFoundError as e:
            if required:
                raise CgroupError(
                    f"cannot write {value!r} to {target}: no such file "
                    f"(is the {controller} controller available?)"
                ) from e
        except OSError as e:
            raise CgroupError(f"cannot write {value!r} to {target}: {e.strerror}") from e


def _has_processes(path: str) -> bool:
    try:
        return bool(_pids(path))
    except (OSError, CgroupError):
        return True


def cleanup_stale(live_ids: Iterable[str]) -> None:
    """Remove kobako's cgroups that are not in ``live_ids`` and hold no process.

    For a cgroup left behind by a kobako process that died before its clean-up. A cgroup with
    a process in it is left alone; nothing is killed.

    Args:
        live_ids: Ids of containers whose cgroups must stay.

    Raises:
        CgroupError: No cgroup hierarchy is mounted.
    """
    live = set(live_ids)
    for h in _layout()[1]:
        parent = f"{h.mountpoint}/{PARENT}"
        try:
            entries = [e.path for e in os.scandir(parent) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CgroupError(f"cannot list {parent}: {e.strerror}") from e
        for path in entries:
            if os.path.basename(path) in live or _has_processes(path):
                continue
            for nested in _subdirs_bottom_up(path):
                _rmdir(nested)
            _rmdir(path)


def remove_idle(container_id: str) -> bool:
    """Remove one container's cgroup, in every hierarchy, if it holds no process.

    For the cgroup of a container whose kobako died before its clean-up (see
    :func:`kobako.runtime.lifecycle.run`): unlike :func:`cleanup_stale` it names the one
    cgroup to remove, so a container another kobako is starting is never touched.

    Returns:
        True when no directory of the cgroup is left.
    """
    _check_id(container_id)
    gone = True
    for h in _layout()[1]:
        path = f"{h.mountpoint}/{PARENT}/{container_id}"
        if not os.path.isdir(path):
            continue
        if _has_processes(path):
            gone = False
            continue
        for nested in _subdirs_bottom_up(path):
            _rmdir(nested)
        gone = _rmdir(path) == 0 and gone
    return gone
