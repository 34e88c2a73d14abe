"""A container's network at run time: its namespace, veth pairs, addresses, ports, DNS names.

:func:`up` runs while the container is being started, before its process is cloned: it
makes a network namespace (``_native.netns_new``), and for each network the container is on
makes sure the network's bridge exists (with its firewall rules), allocates an address and
plugs a veth pair into the bridge whose other end is ``ethN`` in the namespace, then
publishes the ports. The container's first process is cloned into that namespace. :func:`down`
undoes it all when the container has ended.

State lives in the runtime directory (a tmpfs: gone at reboot, like the links themselves):

    RUN/networks/BRIDGE/lock            flock: allocation and the DNS answerer of the network
    RUN/networks/BRIDGE/endpoints/CID   one per container on it: address, veth, names, ports
    RUN/networks/BRIDGE/dns/            the DNS answerer's dns.json, names.json, pid and log
    RUN/networks/BRIDGE/firewall        present once the network's rules are in place

Runtime state is keyed by the bridge's name, which the kernel keeps unique on the host: two
stores on one host (``--root``) share the default bridge, and so its addresses.
    RUN/containers/CID/network.json   what :func:`up` made for a container, for :func:`down`

An address is taken by writing its endpoint file under the network's lock, so concurrent
starts never share one. An endpoint whose container's runtime directory is gone belongs to a
container that died without clean-up (kobako was killed): the next allocation on that network
reclaims it, removing its veth and published ports.
"""

from __future__ import annotations

import contextlib
import json
import os

from kobako import _native
from kobako.errors import Conflict, InvalidArgument, NetworkError
from kobako.runtime.containers import _write_json
from kobako.runtime.lifecycle import RUN_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.runtime.spec import Endpoint, Network, PortMapping

__all__ = ["down", "teardown_network", "up"]

NETWORKS_DIR = os.path.join(RUN_DIR, "networks")
CONTAINERS_DIR = os.path.join(RUN_DIR, "containers")


def _net_dir(key: str) -> str:
    return os.path.join(NETWORKS_DIR, key)


def _lock(key: str) -> Any:
    from kobako.image.store import _Lock

    os.makedirs(os.path.join(_net_dir(key), "endpoints"), mode=0o700, exist_ok=True)
    return _Lock(os.path.join(_net_dir(key), "lock"))


def _write(path: str, doc: Any) -> None:
    """Atomically, not synced: the runtime dir is a tmpfs, gone at reboot anyway."""
    _write_json(path, doc, durable=False)


def _read(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mac_for(ip: str) -> str:
    """Docker's MAC address for an IPv4 address: ``02:42`` and the address's four bytes."""
    return "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))


# IPv4 arithmetic by hand: the ipaddress module costs milliseconds to import, on every start.


def _to_int(ip: str) -> int:
    a, b, c, d = (int(x) for x in ip.split("."))
    return a << 24 | b << 16 | c << 8 | d


def _to_ip(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


class _Subnet:
    """An IPv4 subnet in CIDR form (validated when the network was made)."""

    def __init__(self, cidr: str) -> None:
        base, _, prefix = cidr.partition("/")
        self.prefixlen = int(prefix)
        size = 1 << (32 - self.prefixlen)
        self.first = _to_int(base) & ~(size - 1) & 0xFFFFFFFF
        self.last = self.first + size - 1


def up(cid: str, network: Network, runtime_dir: str) -> tuple[int, dict[str, Any]]:
    """Make the container's network namespace and connect it to its networks.

    Returns:
        An fd holding the namespace (the caller closes it once the container runs in it) and
        docker's ``NetworkSettings`` for its record.

    Raises:
        NetworkError: A link, address, route or rule could not be made.
        Conflict: The address asked for or a host port is taken.
        InvalidArgument: A bad port or address.

    On failure what was made is removed before raising.
    """
    record: dict[str, Any] = {"endpoints": [], "ports": []}
    record_path = os.path.join(runtime_dir, "network.json")
    netns = _native.netns_new()
    try:
        for i, ep in enumerate(network.endpoints):
            made = _attach(cid, ep, netns, f"eth{i}", default_route=i == 0)
            record["endpoints"].append(made)
            _write(record_path, record)
        if network.ports:
            if not record["endpoints"]:
                raise InvalidArgument("published ports need a network")
            first = record["endpoints"][0]
            ports = _publish(first, network.ports)
            record["ports"] = ports
            _write(record_path, record)
    except BaseException:
        os.close(netns)
        down(runtime_dir)
        raise
    return netns, settings(record)


def settings(record: dict[str, Any]) -> dict[str, Any]:
    """Docker's ``NetworkSettings`` for what :func:`up` made."""
    networks = {}
    for ep in record["endpoints"]:
        networks[ep["network"]] = {
            "Aliases": ep.get("aliases") or None,
            "NetworkID": ep["network_id"],
            "EndpointID": ep["endpoint_id"],
            "Gateway": ep["gateway"],
            "IPAddress": ep["ip"],
            "IPPrefixLen": ep["prefix"],
            "MacAddress": ep["mac"],
            "DNSNames": ep.get("names") or None,
        }
    first = record["endpoints"][0] if record["endpoints"] else None
    ports: dict[str, list[dict[str, str]] | None] = {}
    for p in record["ports"]:
        ports.setdefault(f"{p['container_port']}/{p['proto']}", []).append(  # type: ignore[union-attr]
            {"HostIp": p["host_ip"], "HostPort": str(p["host_port"])}
        )
    return {
        "Networks": networks,
        "Ports": ports,
        "IPAddress": first["ip"] if first else "",
        "IPPrefixLen": first["prefix"] if first else 0,
        "Gateway": first["gateway"] if first else "",
        "MacAddress": first["mac"] if first else "",
        "SandboxKey": "",
    }


def _attach(
    cid: str, ep: Endpoint, netns: int, ifname: str, *, default_route: bool
) -> dict[str, Any]:
    """Put the namespace on one network: bridge, address, veth. Returns the endpoint record."""
    if not ep.network_id or not ep.bridge:
        raise InvalidArgument(f"network {ep.network} was not resolved before the start")
    subnet = _Subnet(ep.subnet)
    host_if = "veth" + os.urandom(4).hex()[:7]
    path = os.path.join(_net_dir(ep.bridge), "endpoints", cid)
    with _lock(ep.bridge):
        _ensure_bridge(ep, subnet)
        taken = _reclaim_and_list(ep.bridge)
        ip = _choose(ep, subnet, taken)
        made: dict[str, Any] = {
            "container": cid,
            "network": ep.network,
            "network_id": ep.network_id,
            "endpoint_id": os.urandom(32).hex(),
            "bridge": ep.bridge,
            "subnet": ep.subnet,
            "ip": ip,
            "prefix": subnet.prefixlen,
            "gateway": ep.gateway,
            "mac": mac_for(ip),
            "host_if": host_if,
            "names": list(ep.names),
            "aliases": list(ep.aliases),
            "dns": ep.dns,
            "ports": [],
            "ifname": ifname,
        }
        _write(path, made)
    try:
        _native.veth_attach(
            netns,
            host_if,
            ep.bridge,
            ifname,
            ip,
            subnet.prefixlen,
            gateway=ep.gateway if default_route else None,
            mac=bytes.fromhex(made["mac"].replace(":", "")),
        )
        if ep.dns:
            with _lock(ep.bridge):
                _update_dns(ep.bridge, ep.gateway)
    except BaseException:
        _release(made)
        raise
    return made


def _ensure_bridge(ep: Endpoint, subnet: _Subnet) -> None:
    """Under the network's lock: its bridge, up with the gateway address, and its rules."""
    created = _native.bridge_ensure(ep.bridge, ep.gateway, subnet.prefixlen)
    marker = os.path.join(_net_dir(ep.bridge), "firewall")
    if created or not os.path.exists(marker):
        from kobako.network import firewall

        firewall.add_network(ep.bridge, ep.subnet, ep.internal)
        _write(marker, {"bridge": ep.bridge, "subnet": ep.subnet})


def _reclaim_and_list(key: str) -> set[str]:
    """Under the lock: the addresses in use on the network, after reclaiming what containers
    that died without clean-up held (their runtime directory is gone)."""
    taken = set()
    directory = os.path.join(_net_dir(key), "endpoints")
    for name in os.listdir(directory):
        if ".tmp" in name:  # another writer's, in flight
            continue
        doc = _read(os.path.join(directory, name))
        if doc is None:
            continue
        if not os.path.isdir(os.path.join(CONTAINERS_DIR, doc["container"])):
            _undo(doc)
            os.unlink(os.path.join(directory, name))
            continue
        taken.add(doc["ip"])
    return taken


def _choose(ep: Endpoint, subnet: _Subnet, taken: set[str]) -> str:
    """Under the lock: the address asked for, or the next free one after the last handed
    out (as Docker's IPAM does), so that an address just given back is not reused while the
    kernel may still be removing its old interface."""
    reserved = {ep.gateway, _to_ip(subnet.first), _to_ip(subnet.last)}
    if ep.ip:
        if ep.ip in taken or ep.ip in reserved:
            raise Conflict(f"Address already in use: {ep.ip} on network {ep.network}")
        return ep.ip
    last_path = os.path.join(_net_dir(ep.bridge), "last")
    try:
        with open(last_path) as f:
            last = _to_int(f.read().strip())
    except (OSError, ValueError):
        last = subnet.first
    if not subnet.first < last < subnet.last:
        last = subnet.first
    hosts = subnet.last - subnet.first - 1
    for step in range(1, hosts + 1):
        n = subnet.first + 1 + (last - subnet.first - 1 + step) % hosts
        text = _to_ip(n)
        if text not in taken and text not in reserved:
            tmp = last_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.rename(tmp, last_path)
            return text
    raise Conflict(f"no available IPv4 addresses on network {ep.network}")


def _update_dns(key: str, gateway: str) -> None:
    """Under the lock: the network's DNS names from its endpoints; its answerer started when
    the first container with a name arrives and stopped when the last leaves."""
    from kobako.network import dns

    state = os.path.join(_net_dir(key), "dns")
    os.makedirs(state, mode=0o700, exist_ok=True)
    names: dict[str, list[str]] = {}
    directory = os.path.join(_net_dir(key), "endpoints")
    for name in sorted(os.listdir(directory)):
        doc = _read(os.path.join(directory, name)) if ".tmp" not in name else None
        if doc is None:
            continue
        for n in doc.get("names") or ():
            names.setdefault(n.lower(), []).append(doc["ip"])
    _write(os.path.join(state, "names.json"), {"names": names})
    running = os.path.exists(os.path.join(state, "dns.pid"))
    if names and not running:
        _write(os.path.join(state, "dns.json"), {"listen": [gateway], "upstream": _upstreams()})
        dns.start(state)
    elif not names and running:
        dns.stop(state)


def _upstreams() -> list[str]:
    """Where the DNS answerer forwards other names: ``KOBAKO_DNS_UPSTREAM`` (comma-separated
    ``HOST:PORT``) if set, else the host's resolv.conf name servers (loopback ones included:
    the answerer runs on the host)."""
    override = os.environ.get("KOBAKO_DNS_UPSTREAM")
    if override is not None:
        return [u.strip() for u in override.split(",") if u.strip()]
    out = []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                words = line.split()
                if len(words) > 1 and words[0] == "nameserver":
                    host = words[1].split("%")[0]
                    out.append(f"[{host}]:53" if ":" in host else f"{host}:53")
    except OSError:
        pass
    return out


def _publish(first: dict[str, Any], ports: tuple[PortMapping, ...]) -> list[dict[str, Any]]:
    """Publish ``ports`` on the first endpoint's address; host port 0 takes a free one."""
    from kobako.network import firewall

    chosen: list[dict[str, Any]] = []
    for p in ports:
        host_port = p.host_port or _free_port(p.proto, p.host_ip)
        _check_bindable(p.proto, p.host_ip, host_port)
        chosen.append(
            {
                "proto": p.proto,
                "host_ip": p.host_ip,
                "host_port": host_port,
                "container_port": p.container_port,
            }
        )
    mappings = [firewall.PortMapping(**c) for c in chosen]
    with _lock(first["bridge"]):
        # recorded first, so that a crash after the rules are in still finds them
        first["ports"] = chosen
        _write(os.path.join(_net_dir(first["bridge"]), "endpoints", first["container"]), first)
    firewall.add_ports(first["ip"], mappings)
    return chosen


def _socket_kind(proto: str) -> int:
    import socket

    return socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM


def _free_port(proto: str, host_ip: str) -> int:
    """A port nothing on the host uses now (the kernel's choice of an ephemeral one)."""
    import socket

    with socket.socket(socket.AF_INET, _socket_kind(proto)) as s:
        s.bind((host_ip, 0))
        return int(s.getsockname()[1])


def _check_bindable(proto: str, host_ip: str, port: int) -> None:
    """Refuse a host port a host process listens on: its clients would reach the container
    instead, unseen (Docker's proxy fails to bind it)."""
    import socket

    if not 0 < port < 65536:
        raise InvalidArgument(f"invalid host port {port}")
    with socket.socket(socket.AF_INET, _socket_kind(proto)) as s:
        try:
            s.bind((host_ip, port))
        except OSError as e:
            raise Conflict(
                f"Bind for {host_ip}:{port} failed: port is already allocated ({e.strerror})"
            ) from None


def down(runtime_dir: str, *, ended: bool = False) -> None:
    """Undo what :func:`up` made for a container (harmless when there is nothing).

    The record is claimed first (renamed), so that of two kobako processes tearing the same
    container down (its own, and another reaping what it took for dead) one does the work.

    With ``ended``, the container's processes are all gone, so its network namespace is
    going away with its end of each veth pair, and the kernel removes the host's end by
    itself within some 50 ms: deleting it here would cost ~20 ms of the run (the kernel
    waits for an RCU grace period), so it is left to the kernel, unless other containers
    joined the namespace (``--network container:``), which keeps it alive. The address is
    not reused at once either way: :func:`_choose` hands out addresses in turn.
    """
    record_path = os.path.join(runtime_dir, "network.json")
    claimed = f"{record_path}.down-{os.getpid()}"
    try:
        os.rename(record_path, claimed)
    except FileNotFoundError:
        return
    record = _read(claimed)
    keep_links = ended and not os.path.exists(os.path.join(runtime_dir, "joined"))
    for made in (record or {}).get("endpoints", ()):
        _release(made, delete_link=not keep_links)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(claimed)


def _undo(made: dict[str, Any], *, delete_link: bool = True) -> None:
    """Remove an endpoint's published ports and veth (its peer goes with it)."""
    if made.get("ports"):
        from kobako.network import firewall

        firewall.remove_ports(made["ip"], [firewall.PortMapping(**p) for p in made["ports"]])
    if not delete_link:
        return
    with contextlib.suppress(NetworkError):
        _native.link_delete(made["host_if"])


def _release(made: dict[str, Any], *, delete_link: bool = True) -> None:
    """Give an endpoint's address back, after removing what it had."""
    key = made["bridge"]
    _undo(made, delete_link=delete_link)
    with _lock(key):
        path = os.path.join(_net_dir(key), "endpoints", made["container"])
        current = _read(path)
        if current is not None and current.get("endpoint_id") == made["endpoint_id"]:
            os.unlink(path)
        if made.get("dns"):
            _update_dns(key, made["gateway"])


def teardown_network(bridge: str, subnet: str) -> None:
    """Remove a network's bridge, rules, DNS answerer and runtime state (``network rm``);
    the caller made sure no container uses it."""
    from kobako.network import dns

    directory = _net_dir(bridge)
    if not bridge:
        return
    if not os.path.isdir(directory):
        _native.link_delete(bridge)
        return
    with _lock(bridge):
        _reclaim_and_list(bridge)
        state = os.path.join(directory, "dns")
        if os.path.exists(os.path.join(state, "dns.pid")):
            dns.stop(state)
        if bridge:
            _native.link_delete(bridge)
        if os.path.exists(os.path.join(directory, "firewall")) and subnet:
            from kobako.network import firewall

            firewall.remove_network(bridge, subnet)
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


def join(container_id: str) -> int:
    """An fd of the network namespace of the running container ``container_id``
    (``--network container:ID``).

    Raises:
        Conflict: It is not running.
    """
    from kobako.runtime.proc import open_namespace

    runtime_dir = os.path.join(CONTAINERS_DIR, container_id)
    fd = None
    try:
        with open(os.path.join(runtime_dir, "pid")) as f:
            pid, start = f.read().split()[:2]
        fd = open_namespace(int(pid), start, "net")
    except (OSError, ValueError):
        pass
    if fd is None:
        raise Conflict(
            f"cannot join the network of container {container_id[:12]}: it is not running"
        )
    # its namespace outlives it now: its veths must be deleted, not left to the kernel
    with open(os.path.join(runtime_dir, "joined"), "w"):
        pass
    return fd


def connect_running(cid: str, ep: Endpoint, netns: int) -> dict[str, Any]:
    """Connect a running container (its namespace ``netns``) to one more network
    (``network connect``); returns docker's ``NetworkSettings`` after it."""
    runtime_dir = os.path.join(CONTAINERS_DIR, cid)
    record_path = os.path.join(runtime_dir, "network.json")
    record = _read(record_path) or {"endpoints": [], "ports": []}
    used = {e["ifname"] for e in record["endpoints"] if "ifname" in e}
    used |= {f"eth{i}" for i in range(len(record["endpoints"]))}
    ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
    made = _attach(cid, ep, netns, ifname, default_route=not record["endpoints"])
    made["ifname"] = ifname
    record["endpoints"].append(made)
    _write(record_path, record)
    return settings(record)


def disconnect_running(cid: str, network_id: str) -> dict[str, Any] | None:
    """Take a running container off a network (``network disconnect``): its veth goes, its
    address and ports are given back. Returns docker's ``NetworkSettings`` after it, or None
    when it was not on that network."""
    record_path = os.path.join(CONTAINERS_DIR, cid, "network.json")
    record = _read(record_path)
    if record is None:
        return None
    keep = [e for e in record["endpoints"] if e["network_id"] != network_id]
    if len(keep) == len(record["endpoints"]):
        return None
    for made in record["endpoints"]:
        if made["network_id"] == network_id:
            _release(made)
            if made.get("ports"):
                record["ports"] = []
    record["endpoints"] = keep
    _write(record_path, record)
    return settings(record)
