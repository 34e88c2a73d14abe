"""From a :class:`~kobako.runtime.spec.Spec` to the native core's launch plan.

This is the policy half of starting a container: Docker's default mounts, devices, masked
paths, capabilities and seccomp profile, the user looked up in the rootfs, the PATH lookup of
the command. The native core (``kobako._native.spawn``) only carries the plan out.
"""

from __future__ import annotations

import os

from kobako import _native
from kobako.errors import InvalidArgument, NotFound
from kobako.runtime import defaults, parse
from kobako.runtime.spec import DEFAULT_PATH, Mount, Network, Overlay, Spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# clone(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

_FLAGS = {
    "ro": MS_RDONLY,
    # Recursive read-only (Docker 25's default for ro binds) needs mount_setattr(2); until the
    # native core does that, sub-mounts of a read-only bind stay as they are.
    "rro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
    "bind": MS_BIND,
    "rbind": MS_BIND | MS_REC,
}
_CLEARED = {"rw", "suid", "dev", "exec", "atime", "diratime"}
_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
}
_LOCKABLE = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME
_S_IFCHR = 0o020000
_RLIM_INFINITY = 2**64 - 1
_MAX_ID_FILE = 4 << 20

#: One mount as the native plan takes it: (source, target, fstype, flags, data, is_file).
PlanMount = tuple[str | None, str, str | None, int, str | None, bool]


def plan_mounts(m: Mount) -> list[PlanMount]:
    """Turn one OCI-style mount into the mount(2) calls that make it.

    A bind mount with restricting options needs a second call (a bind remount), and a
    propagation option a third; other filesystems take their flags in one call.

    Raises:
        InvalidArgument: The destination is not absolute, or an option is unknown.
    """
    if not m.destination.startswith("/"):
        raise InvalidArgument(f"mount destination {m.destination!r} is not an absolute path")
    if m.type == "volume":  # made into a bind of the volume's data by runtime/from_image.py
        raise InvalidArgument(
            f"volume mount at {m.destination}: volumes need an image (not --rootfs)"
        )
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in m.options:
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        elif opt in _PROPAGATION:
            propagation = _PROPAGATION[opt]
        elif opt in _CLEARED or opt in ("z", "Z"):
            continue
        else:
            data.append(opt)
    is_bind = m.type == "bind" or flags & MS_BIND
    if is_bind:
        if not m.source.startswith("/"):
            raise InvalidArgument(f"bind source {m.source!r} is not an absolute path")
        if not os.path.exists(m.source):
            # As docker does for -v (the --mount parser has already refused a missing source).
            os.makedirs(m.source, exist_ok=True)
        is_file = not os.path.isdir(m.source)
        bind = MS_BIND | (flags & MS_REC)
        out: list[PlanMount] = [(m.source, m.destination, None, bind, None, is_file)]
        if flags & _LOCKABLE:
            restrict = MS_BIND | MS_REMOUNT | (flags & _LOCKABLE)
            out.append((None, m.destination, None, restrict, None, is_file))
    else:
        out = [(m.source or m.type, m.destination, m.type, flags, ",".join(data) or None, False)]
    if propagation:
        out.append((None, m.destination, None, propagation, None, False))
    return out


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _own_capabilities() -> int:
    """The capabilities kobako itself may pass on: its permitted set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def capability_names(spec: Spec) -> frozenset[str]:
    """The capabilities the container keeps: Docker's defaults with ``--cap-add/--cap-drop``
    applied (``ALL`` in either), or every capability kobako has when privileged.

    Raises:
        InvalidArgument: A capability name is unknown, or one asked for is not kobako's to
            give (not in its own permitted set).
    """
    sec = spec.security
    own = _own_capabilities()
    known = {name for name, bit in parse.CAPABILITIES.items() if own & (1 << bit)}
    if sec.privileged:
        return frozenset(known)
    added = {parse.parse_capability(c) for c in sec.cap_add}
    dropped = {parse.parse_capability(c) for c in sec.cap_drop}
    names = set() if "ALL" in dropped else set(parse.DOCKER_DEFAULT_CAPS) - dropped
    names |= known if "ALL" in added else added
    missing = sorted(names - known)
    if missing:
        raise InvalidArgument(f"capabilities not available to kobako itself: {', '.join(missing)}")
    return frozenset(names)


def _user(spec: Spec) -> parse.ResolvedUser:
    # Read even for root: the passwd entry gives HOME, and /etc/group supplementary groups.
    passwd = _read_rootfs_file(spec, "/etc/passwd")
    group = _read_rootfs_file(spec, "/etc/group")
    return parse.resolve_user(spec.process.user, passwd, group)


def _read_rootfs_file(spec: Spec, path: str) -> bytes | None:
    """A file of the container's root filesystem, read before it is mounted.

    With an overlay, the layers are searched top first, each confined to itself; a whiteout
    (a 0:0 character device, which cannot be opened) hides the file in the layers below.
    """
    if spec.overlay is None:
        return _native.read_in_root(spec.root, path, _MAX_ID_FILE)
    import errno

    for layer in (spec.overlay.upper, *spec.overlay.lower):
        try:
            data = _native.read_in_root(layer, path, _MAX_ID_FILE)
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENODEV):
                return None
            raise
        if data is not None:
            return data
    return None


def _env(spec: Spec, hostname: str, home: str) -> list[str]:
    env: dict[str, str] = {}
    for item in spec.process.env:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise InvalidArgument(f"environment entry {item!r} is not KEY=VALUE")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    if spec.process.terminal:
        env.setdefault("TERM", "xterm")
    env.setdefault("HOME", home)
    return [f"{k}={v}" for k, v in env.items()]


def _exec_paths(argv0: str, env: list[str], cwd: str) -> list[str]:
    if not argv0:
        raise InvalidArgument("no command given")
    if "/" in argv0:
        return [argv0 if argv0.startswith("/") else os.path.join(cwd, argv0)]
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    return [os.path.join(d or ".", argv0) for d in path.split(":")]


def _host_devices() -> list[tuple[str, int, int, int]]:
    """Every device node of the host's /dev, for a privileged container."""
    out: list[tuple[str, int, int, int]] = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_mode & 0o170000 in (0o020000, 0o060000) and name not in ("console", "ptmx"):
                out.append((path, st.st_mode, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return out


def build_plan(
    spec: Spec,
    *,
    runtime_dir: str,
    hostname: str,
    stdio: tuple[int, int, int],
    tty_fd: int,
    tty_path: str | None,
    cgroup_fd: int | None,
    cgroup_join: tuple[str, ...],
    cgroup_mounts: tuple[Mount, ...],
    caps: frozenset[str],
    seccomp: bytes | None,
    netns: int = -1,
) -> dict[str, Any]:
    """Compose the native launch plan for ``spec``.

    Args:
        spec: The container.
        runtime_dir: Directory holding this container's hostname, hosts and resolv.conf.
        hostname: The hostname to set.
        stdio: Host fds to become the container's 0, 1, 2 (-1 keeps ours).
        tty_fd: The pty slave for ``-t``, or -1.
        tty_path: The pty slave's host path, bind-mounted at /dev/console.
        cgroup_fd: v2 cgroup directory fd for CLONE_INTO_CGROUP.
        cgroup_join: Files the child writes 0 into to join its cgroup (v1; v2 without clone3).
        cgroup_mounts: What to mount at /sys/fs/cgroup.
        caps: The capabilities to keep (:func:`capability_names`).
        seccomp: The compiled BPF program, or None.
        netns: A network namespace made for it (a network, ``container:``), or -1.

    Raises:
        NotFound: The rootfs or a user/group does not exist.
        InvalidArgument: A bad mount, capability, user or command.
    """
    if not os.path.isdir(spec.root):
        raise NotFound(f"rootfs {spec.root!r} does not exist or is not a directory")
    proc = spec.process
    if not proc.args:
        raise InvalidArgument("no command given")
    if not proc.cwd.startswith("/"):
        raise InvalidArgument(
            f"the working directory {proc.cwd!r} is invalid, it needs to be an absolute path"
        )
    sec = spec.security
    ns = spec.namespaces
    userns = bool(ns.uid_map or ns.gid_map)

    flags = CLONE_NEWNS
    if ns.pid:
        flags |= CLONE_NEWPID
    if ns.ipc:
        flags |= CLONE_NEWIPC
    if ns.uts:
        flags |= CLONE_NEWUTS
    if ns.cgroup:
        flags |= CLONE_NEWCGROUP
    if userns:
        flags |= CLONE_NEWUSER
    if ns.network == "none":
        flags |= CLONE_NEWNET
    elif ns.network != "host" and netns < 0:
        raise InvalidArgument(f"network {ns.network!r} was not set up")

    def writable(m: Mount) -> Mount:
        return m.replace(options=tuple(o for o in m.options if o != "ro"))

    mounts: list[PlanMount] = []
    for m in defaults.MOUNTS:
        # as docker: a privileged container's /sys (and cgroupfs below) is writable
        mounts.extend(plan_mounts(writable(m) if sec.privileged and m.type == "sysfs" else m))
    if ns.cgroup:
        for m in cgroup_mounts:
            mounts.extend(plan_mounts(writable(m) if sec.privileged else m))
        if not sec.privileged:
            # v1: the tmpfs holding the hierarchies was writable while they were mounted
            ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            mounts.append((None, "/sys/fs/cgroup", None, ro, None, False))
    etc = [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ]
    for name, dest in etc:
        mounts.extend(
            plan_mounts(
                Mount(
                    destination=dest,
                    source=os.path.join(runtime_dir, name),
                    options=("rbind", "rprivate"),
                )
            )
        )
    if tty_path:
        mounts.extend(
            plan_mounts(Mount(destination="/dev/console", source=tty_path, options=("bind",)))
        )
    for m in spec.mounts:
        mounts.extend(plan_mounts(m))

    devices: list[tuple[str, int, int, int]] = []
    if sec.privileged and not userns:
        devices = _host_devices()
    elif userns:
        # mknod is not allowed in a user namespace: bind the host's nodes instead.
        for path, _, _ in defaults.DEVICES:
            mounts.extend(plan_mounts(Mount(destination=path, source=path, options=("bind",))))
    else:
        devices = [
            (path, _S_IFCHR | 0o666, major, minor) for path, major, minor in defaults.DEVICES
        ]
    symlinks = [
        (t, link)
        for t, link in defaults.DEV_SYMLINKS
        if t != "/proc/kcore" or os.path.exists("/proc/kcore")
    ]

    user = _user(spec)
    mask = parse.capability_mask(caps)
    last_cap = _last_cap()
    env = _env(spec, hostname, user.home)
    rlimits = []
    for r in proc.rlimits:
        if r.type not in parse.RLIMIT_NUMBERS:
            raise InvalidArgument(f"invalid ulimit type: {r.type}")
        soft = _RLIM_INFINITY if r.soft < 0 else r.soft
        hard = _RLIM_INFINITY if r.hard < 0 else r.hard
        rlimits.append((parse.RLIMIT_NUMBERS[r.type], soft, hard))

    def idmap(entries: tuple[Any, ...]) -> str | None:
        lines = [f"{e.container_id} {e.host_id} {e.size}\n" for e in entries]
        return "".join(lines) or None

    return {
        "rootfs": os.path.realpath(spec.root),
        "overlay": overlay_data(spec.overlay) if spec.overlay else None,
        "argv": list(proc.args),
        "env": env,
        "exec_paths": _exec_paths(proc.args[0], env, proc.cwd),
        "cwd": proc.cwd,
        "hostname": hostname if ns.uts else None,
        "namespaces": flags,
        "uid_map": idmap(ns.uid_map),
        "gid_map": idmap(ns.gid_map),
        "mounts": mounts,
        "devices": devices,
        "symlinks": symlinks,
        "masked_paths": [] if sec.privileged else list(defaults.MASKED_PATHS),
        "readonly_paths": [] if sec.privileged else list(defaults.READONLY_PATHS),
        "readonly_rootfs": sec.readonly_rootfs,
        "rlimits": rlimits,
        "uid": user.uid,
        "gid": user.gid,
        "groups": list(user.additional_gids),
        "caps": (mask, mask, mask, 0, 0, last_cap),
        "no_new_privs": sec.no_new_privileges,
        "seccomp": seccomp,
        "tty_fd": tty_fd,
        "stdio": stdio,
        "cgroup_fd": -1 if cgroup_fd is None else cgroup_fd,
        "cgroup_join": list(cgroup_join),
        "init": proc.init,
        "join": None,
        "netns": netns,
    }


#: The kernel takes mount options in one page, NUL included.
_MAX_MOUNT_DATA = 4095


def overlay_data(o: Overlay) -> tuple[str, str | None]:
    """overlayfs's mount options for ``o``, and the directory to mount from.

    Absolute paths when they fit in the kernel's one page of options; otherwise paths
    relative to the layers' common parent, which the child changes into first (Docker's
    overlay2 does the same, with short names for its layers).

    Raises:
        InvalidArgument: A path has a comma or colon, or the layers do not fit in a page even
            as relative paths.
    """
    if not o.lower:
        raise InvalidArgument("an overlay needs at least one lower layer")
    paths = [*o.lower, o.upper, o.work]
    for path in paths:
        if "," in path or ":" in path or not path.startswith("/"):
            raise InvalidArgument(
                f"overlay layer path {path!r} must be absolute, without ',' or ':'"
            )

    def data(lower: list[str], upper: str, work: str) -> str:
        return f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"

    text = data(list(o.lower), o.upper, o.work)
    if len(text) <= _MAX_MOUNT_DATA:
        return text, None
    base = os.path.commonpath(paths)
    rel = [os.path.relpath(p, base) for p in paths]
    text = data(rel[:-2], rel[-2], rel[-1])
    if len(text) > _MAX_MOUNT_DATA:
        raise InvalidArgument(f"{len(o.lower)} layers do not fit in overlayfs's mount options")
    return text, base


def write_etc_files(
    runtime_dir: str,
    hostname: str,
    network: str,
    net: Network | None = None,
    addresses: tuple[str, ...] = (),
) -> None:
    """Write the container's /etc/hostname, /etc/hosts and /etc/resolv.conf into ``runtime_dir``.

    ``network`` is the network mode; ``net`` the container's network settings (``--dns``,
    ``--add-host``...), ``addresses`` its addresses on its networks, the first one's gateway
    serving DNS by name on a user-defined network.
    """
    host_resolv = _read("/etc/resolv.conf")
    if network == "host":
        hosts = _read("/etc/hosts") or defaults.HOSTS
        resolv = host_resolv
    else:
        hosts = defaults.HOSTS
        hosts += "".join(f"{a}\t{hostname}\n" for a in addresses) or f"127.0.1.1\t{hostname}\n"
        servers: list[str] = []
        if net is not None and net.dns:
            servers = list(net.dns)
        elif net is not None and net.endpoints and net.endpoints[0].dns:
            servers = [net.endpoints[0].gateway]  # its network's DNS answerer
        lines = []
        for line in host_resolv.splitlines():
            words = line.split()
            if words and words[0] == "nameserver":
                # Docker drops loopback nameservers: they would point at the container itself.
                if servers or _is_loopback_ns(line):
                    continue
            elif (words and words[0] in ("search", "domain") and net and net.dns_search) or (
                words and words[0] == "options" and net and net.dns_options
            ):
                continue
            lines.append(line + "\n")
        resolv = "".join(f"nameserver {s}\n" for s in servers) + "".join(lines)
        if net is not None and net.dns_search:
            resolv += "search " + " ".join(net.dns_search) + "\n"
        if net is not None and net.dns_options:
            resolv += "options " + " ".join(net.dns_options) + "\n"
    if net is not None:
        for entry in net.extra_hosts:
            name, _, ip = entry.partition(":")
            if ip == "host-gateway" and net.endpoints:
                ip = net.endpoints[0].gateway  # the host, as the container reaches it
            if ip != "host-gateway":
                hosts += f"{ip}\t{name}\n"
    for name, content in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv)):
        with open(os.path.join(runtime_dir, name), "w") as f:
            f.write(content)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _is_loopback_ns(line: str) -> bool:
    words = line.split()
    return len(words) > 1 and words[0] == "nameserver" and words[1].startswith(("127.", "::1"))
