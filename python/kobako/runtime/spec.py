"""The runtime spec: what a container is made of, in the shape of the OCI runtime spec.

A :class:`Spec` says everything needed to run one process in a container: the root
filesystem, the process (argv, env, user, terminal), extra mounts, namespaces, resource limits
and confinement. It is plain data; :func:`kobako.runtime.run` turns it into a launch plan for
the native core. The defaults are Docker's: its capability set, its seccomp profile, its
masked paths, plus ``no_new_privs``.
"""

from __future__ import annotations

from kobako._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Endpoint",
    "IdMap",
    "Mount",
    "Namespaces",
    "Network",
    "Overlay",
    "PortMapping",
    "Process",
    "Resources",
    "Rlimit",
    "Security",
    "Spec",
    "from_json",
    "to_json",
]

#: Docker's default PATH for a container whose image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Mount(Record):
    """A mount in the container, as in the OCI runtime spec's ``mounts``.

    Attributes:
        destination: Absolute path inside the container.
        type: ``"bind"``, ``"tmpfs"``, or another filesystem type.
        source: Host path for a bind mount; the device name otherwise.
        options: OCI/fstab-style options: ``ro``, ``rw``, ``nosuid``, ``nodev``, ``noexec``,
            ``rbind``, ``bind``, ``mode=1777``, ``size=64m``…
    """

    destination: str
    type: str = "bind"
    source: str = ""
    options: tuple[str, ...] = ()


class Rlimit(Record):
    """A resource limit set with setrlimit(2) in the container (``--ulimit``).

    Attributes:
        type: The limit's name as docker spells it (``nofile``, ``nproc``, ``core``…).
        soft: Soft limit (-1 for unlimited).
        hard: Hard limit (-1 for unlimited).
    """

    type: str
    soft: int
    hard: int


class Process(Record):
    """The process to run.

    Attributes:
        args: argv; ``args[0]`` is looked up in the container's ``PATH`` if it has no slash.
        env: ``KEY=VALUE`` strings; ``PATH`` defaults to Docker's when absent.
        cwd: Working directory inside the container, created if missing (as Docker does).
        user: Docker's ``-u`` syntax: ``uid``, ``uid:gid``, ``name``, ``name:group``; empty
            means root. Names are looked up in the container's /etc/passwd and /etc/group.
        terminal: Give the process a pseudo-terminal as its stdio (``-t``).
        rlimits: Resource limits (``--ulimit``).
        init: Run a tiny init as PID 1 that reaps zombies and forwards signals (``--init``).
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    terminal: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    init: bool = False


class IdMap(Record):
    """One line of a user namespace's uid_map or gid_map."""

    container_id: int
    host_id: int
    size: int


class PortMapping(Record):
    """A published port (``-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/PROTO]``).

    Attributes:
        proto: ``"tcp"`` or ``"udp"``.
        host_ip: The host address it is published on; ``"0.0.0.0"``: every one.
        host_port: The host port; 0: a free one chosen at each start (``-P``, ``-p 80``).
        container_port: The port in the container.
    """

    proto: str = "tcp"
    host_ip: str = "0.0.0.0"
    host_port: int = 0
    container_port: int


class Endpoint(Record):
    """The container's attachment to one network: what was asked, then (at start) what the
    network is, filled in from its configuration.

    Attributes:
        network: The network's name (or id) as given.
        ip: The address asked for (``--ip``); empty: the next free one.
        aliases: More names it answers to on the network (``--network-alias``).
        names: Every name the network's DNS answers with its address (name, short id, aliases).
        network_id, bridge, subnet, gateway, internal, dns: The network's, filled at start:
            its id, bridge, IPv4 subnet (CIDR), gateway address, whether it is
            ``--internal``, and whether it has a DNS answerer (user-defined networks).
    """

    network: str
    ip: str = ""
    aliases: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    network_id: str = ""
    bridge: str = ""
    subnet: str = ""
    gateway: str = ""
    internal: bool = False
    dns: bool = False


class Network(Record):
    """The container's network, when :attr:`Namespaces.network` names a network.

    Attributes:
        endpoints: Its networks, the first giving the default route.
        ports: Published ports (on the first network's address).
        dns: Name servers for its resolv.conf (``--dns``); default: the network's.
        dns_search, dns_options: ``--dns-search``, ``--dns-option``.
        extra_hosts: ``NAME:IP`` lines added to /etc/hosts (``--add-host``).
        join: ``container:NAME``: the id of the container whose network namespace it joins.
    """

    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    join: str = ""


class Namespaces(Record):
    """Which namespaces the container gets.

    Attributes:
        network: ``"none"`` (a new network namespace with only ``lo``, up), ``"host"``,
            ``"container:ID"`` (that container's), or the name of a network (``"bridge"``,
            ...), whose set-up :attr:`Spec.network` holds.
        pid, ipc, uts, cgroup: New namespace of that kind when true.
        uid_map, gid_map: A new user namespace with these maps when non-empty.
    """

    network: str = "none"
    pid: bool = True
    ipc: bool = True
    uts: bool = True
    cgroup: bool = True
    uid_map: tuple[IdMap, ...] = ()
    gid_map: tuple[IdMap, ...] = ()


class Resources(Record):
    """Cgroup limits; ``None`` leaves a limit unset. Units are docker-py's.

    Attributes:
        memory: Hard memory limit in bytes (``--memory``).
        memory_swap: Memory plus swap in bytes, -1 for unlimited (``--memory-swap``).
        memory_reservation: Soft limit in bytes (``--memory-reservation``).
        nano_cpus: CPU quota in billionths of a CPU (``--cpus 0.5`` is 500_000_000).
        cpu_shares: Relative weight, Docker's scale (default 1024) (``--cpu-shares``).
        cpuset_cpus: CPUs allowed, e.g. ``"0-1"`` (``--cpuset-cpus``).
        pids_limit: Maximum number of tasks; 0 or -1 for unlimited (``--pids-limit``).
    """

    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None


class Security(Record):
    """Confinement. The defaults are Docker's, plus no_new_privs.

    Attributes:
        privileged: All capabilities, no seccomp, no masked paths, devices from the host.
        cap_add, cap_drop: Capability names (``NET_ADMIN`` or ``CAP_NET_ADMIN``, ``ALL``).
        seccomp: ``None`` for Docker's default profile, ``"unconfined"``, or the path of a
            profile in Docker's JSON format.
        no_new_privileges: Set ``PR_SET_NO_NEW_PRIVS`` (on by default).
        readonly_rootfs: Mount the root filesystem read-only (``--read-only``).
    """

    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp: str | None = None
    no_new_privileges: bool = True
    readonly_rootfs: bool = False


class Overlay(Record):
    """A root filesystem made of layers: an overlayfs mounted at :attr:`Spec.root`.

    It is mounted inside the container's own mount namespace, so it exists only for the
    container's processes and goes away with them; what the container writes stays in
    ``upper``.

    Attributes:
        lower: Read-only layer directories, top-most first (whiteouts in overlayfs's form).
        upper: The container's writable layer.
        work: overlayfs's work directory, on the same filesystem as ``upper``.
    """

    lower: tuple[str, ...]
    upper: str
    work: str


class Spec(Record):
    """Everything needed to run one container.

    Attributes:
        root: Host path of the root filesystem directory (the mountpoint, with ``overlay``).
        process: What to run.
        hostname: The container's hostname (``-h``); default: the container id's first 12.
        mounts: Extra mounts (``-v``, ``--mount``, ``--tmpfs``), after the default ones.
        namespaces: Which namespaces to create.
        resources: Cgroup limits.
        security: Capabilities, seccomp, no_new_privs, read-only rootfs.
        id: The container id (64 hex digits); generated when empty.
        overlay: Layers to mount at ``root`` as the root filesystem, if any.
        network: Its networks, ports and name resolution (with a network mode naming one).
    """

    root: str
    process: Process
    hostname: str = ""
    mounts: tuple[Mount, ...] = ()
    namespaces: Namespaces = Namespaces()
    resources: Resources = Resources()
    security: Security = Security()
    id: str = ""
    overlay: Overlay | None = None
    network: Network = Network()


def to_json(spec: Spec) -> dict[str, Any]:
    """The spec as plain JSON data (records as objects, tuples as lists).

    A container's spec is kept with its record (``containers/ID/spec.json``), so that
    ``start`` runs it again exactly as ``create`` made it.
    """
    value = _plain(spec)
    assert isinstance(value, dict)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return {name: _plain(getattr(value, name)) for name in value._fields}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def from_json(doc: dict[str, Any]) -> Spec:
    """The spec :func:`to_json` wrote.

    Raises:
        InvalidArgument: ``doc`` is not such a spec.
    """
    from kobako.errors import InvalidArgument

    try:
        p, ns, sec = doc["process"], doc["namespaces"], doc["security"]
        overlay = doc.get("overlay")
        return Spec(
            root=doc["root"],
            process=Process(
                args=tuple(p["args"]),
                env=tuple(p["env"]),
                cwd=p["cwd"],
                user=p["user"],
                terminal=p["terminal"],
                rlimits=tuple(Rlimit(**r) for r in p["rlimits"]),
                init=p["init"],
            ),
            hostname=doc["hostname"],
            mounts=tuple(
                Mount(
                    destination=m["destination"],
                    type=m["type"],
                    source=m["source"],
                    options=tuple(m["options"]),
                )
                for m in doc["mounts"]
            ),
            namespaces=Namespaces(
                network=ns["network"],
                pid=ns["pid"],
                ipc=ns["ipc"],
                uts=ns["uts"],
                cgroup=ns["cgroup"],
                uid_map=tuple(IdMap(**m) for m in ns["uid_map"]),
                gid_map=tuple(IdMap(**m) for m in ns["gid_map"]),
            ),
            resources=Resources(**doc["resources"]),
            security=Security(
                privileged=sec["privileged"],
                cap_add=tuple(sec["cap_add"]),
                cap_drop=tuple(sec["cap_drop"]),
                seccomp=sec["seccomp"],
                no_new_privileges=sec["no_new_privileges"],
                readonly_rootfs=sec["readonly_rootfs"],
            ),
            id=doc["id"],
            network=_network(doc.get("network")),
            overlay=None
            if overlay is None
            else Overlay(
                lower=tuple(overlay["lower"]), upper=overlay["upper"], work=overlay["work"]
            ),
        )
    except (KeyError, TypeError) as e:
        raise InvalidArgument(f"not a kobako container spec: {e}") from None


def _network(doc: dict[str, Any] | None) -> Network:
    if not doc:
        return Network()
    return Network(
        endpoints=tuple(
            Endpoint(**{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})  # type: ignore[arg-type]
            for e in doc["endpoints"]
        ),
        ports=tuple(PortMapping(**p) for p in doc["ports"]),
        dns=tuple(doc["dns"]),
        dns_search=tuple(doc["dns_search"]),
        dns_options=tuple(doc["dns_options"]),
        extra_hosts=tuple(doc["extra_hosts"]),
        join=doc["join"],
    )
