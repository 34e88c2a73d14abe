"""The host's firewall for kobako's networks: NAT, isolation and published ports, in nftables.

Everything lives in one table of kobako's own (``ip kobako``, :data:`TABLE`), so deleting it
removes every rule kobako made; no other table is read or touched. The rules are fixed and
name sets and a map, so adding or removing a network or a published port only adds or deletes
elements: nothing tracks rule handles. Each change is one ``nft -f -`` batch, which the
kernel applies atomically (publishing also reads the map first). What the table holds::

    bridges   every kobako bridge             internal  the bridges of --internal networks
    intra     BRIDGE . BRIDGE, per bridge     nets      SUBNET . BRIDGE, per network
    masq      the subnets to masquerade (those of networks that are not internal)
    ports     PROTO . HOST_IP . HOST_PORT : CONTAINER_IP . CONTAINER_PORT
              (HOST_IP 0.0.0.0/0 for any local address)

and, as Docker's bridge driver sets up with iptables:

* postrouting: a network's traffic leaving through anything but a kobako bridge is
  masqueraded (Docker's ``-s SUBNET ! -o BRIDGE -j MASQUERADE``); so is the host's
  127.0.0.0/8 traffic to a published port (the container could not answer 127.0.0.1), and
  traffic sent to a published port from the network it leads to (hairpin: the answer must
  come back through the host to be un-NATed; with ``br_netfilter`` loaded the packet is
  bridged back out of the port it came in by, so the container's bridge port also needs
  hairpin mode, as Docker sets it when it runs without its proxy);
* forward: traffic within a bridge passes (it crosses this hook when ``br_netfilter`` is
  loaded); an internal network's traffic may not leave its bridge, nor others' enter it;
  published ports are reachable from other networks; any other traffic between two kobako
  bridges is dropped (Docker's DOCKER-ISOLATION chains); a bridge's outgoing traffic and its
  answers pass. All kobako's chains accept by default: their accepts only end kobako's own
  checks, and cannot override another table's drop (Docker's FORWARD policy, say);
* prerouting and output: a TCP or UDP packet to a local address (``fib daddr type local``)
  whose protocol, address and port are in ``ports`` is sent to the container (DNAT). Output
  covers connections made on the host, 127.0.0.1 included: for those each bridge has
  ``route_localnet`` set, and input drops packets from a bridge to 127.0.0.0/8 that are not
  answers, so that setting does not open the host's loopback services to containers (the
  hole CVE-2020-8558 was in kube-proxy).

Published ports use kernel DNAT rather than a userspace proxy (Docker's ``docker-proxy``):
the kernel forwards without copying each byte through a process, costs no process per port,
and keeps the client's address. Measured on this kind of machine against busybox ``httpd``
through a published port (shared/ANCHORS.md): podman's kernel NAT 5,400 requests/s at ~2 ms,
Docker's proxy 3,050 requests/s at ~120 ms.

Two callers may publish the same host port at once (each network has its own lock): the
kernel refuses a second element with the same key or one inside an existing 0.0.0.0 range;
a 0.0.0.0 mapping made while a specific address holds the port is the one case the kernel
cannot see (a range around an element), so it is checked again once in place and withdrawn.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass

from kobako.errors import Conflict, InvalidArgument, NetworkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

__all__ = [
    "ANY",
    "TABLE",
    "PortMapping",
    "add_network",
    "add_ports",
    "published",
    "remove_all",
    "remove_network",
    "remove_ports",
]

#: kobako's nftables table (family ``ip``).
TABLE = "kobako"

#: The host address a mapping uses to mean "any local address" (Docker's default).
ANY = "0.0.0.0"

_SETS = """\
  set bridges { type ifname; }
  set internal { type ifname; }
  set intra { type ifname . ifname; }
  set nets { type ipv4_addr . ifname; flags interval; }
  set masq { type ipv4_addr; flags interval; }
  map ports {
    type inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service; flags interval;
  }
"""

# Chain name -> its hook; output cannot say "dstnat" in nft 1.0.6, so its priority is -100.
_CHAINS = {
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "input": "type filter hook input priority filter; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
}

_DNAT = (
    "fib daddr type local meta l4proto { tcp, udp }"
    " dnat ip to meta l4proto . ip daddr . th dport map @ports"
)

_RULES = {
    "prerouting": [f'{_DNAT} comment "published ports"'],
    "output": [f'{_DNAT} comment "published ports, from the host"'],
    "postrouting": [
        'ip saddr @masq oifname != @bridges masquerade comment "outbound"',
        'ip saddr 127.0.0.0/8 oifname @bridges masquerade comment "from the host\'s loopback"',
        'ct status dnat ip saddr . oifname @nets masquerade comment "hairpin"',
    ],
    "input": [
        "iifname @bridges ip daddr 127.0.0.0/8 ct state != { established, related } drop"
        ' comment "route_localnet is for answers only"',
    ],
    "forward": [
        'iifname . oifname @intra accept comment "within a bridge"',
        'iifname @internal drop comment "internal networks stay in"',
        "oifname @internal drop",
        'ct status dnat accept comment "published ports"',
        'iifname @bridges oifname @bridges drop comment "isolation between networks"',
        "iifname @bridges accept",
        "oifname @bridges ct state established,related accept",
    ],
}


@dataclass(frozen=True)
class PortMapping:
    """A published port: the host's ``host_ip:host_port`` leads to the container's port.

    Attributes:
        proto: ``"tcp"`` or ``"udp"``.
        host_ip: The local address it answers on; ``"0.0.0.0"`` for any.
        host_port: The host's port.
        container_port: The container's port.
    """

    proto: str
    host_ip: str
    host_port: int
    container_port: int


def add_network(bridge: str, subnet: str, internal: bool) -> None:
    """Put a network's rules in place: NAT, isolation, and ``route_localnet`` on its bridge.

    A network that is not internal also turns on ``net.ipv4.ip_forward``, host-wide, as
    Docker does; nothing turns it back off (other software may rely on it). Idempotent.

    Args:
        bridge: The network's bridge; it must exist.
        subnet: The network's IPv4 subnet, e.g. ``"10.213.0.0/24"``.
        internal: Whether the network is cut off from everything outside its bridge.

    Raises:
        InvalidArgument: ``bridge`` or ``subnet`` is malformed.
        NetworkError: ``nft`` failed or is missing, or the bridge does not exist.
    """
    net = _subnet(subnet)
    localnet = f"/proc/sys/net/ipv4/conf/{_ifname(bridge)}/route_localnet"
    if not os.path.exists(localnet):
        raise NetworkError(f"cannot set up the firewall of bridge {bridge}: no such interface")
    elements = _network_elements(bridge, net, internal)
    # the other one of internal and masq, in case the network was set up otherwise before
    other = {"masq": [net]} if internal else {"internal": [_quote(bridge)]}
    cmds = [_skeleton(), *_add(elements), *_add_delete(other)]
    _nft_batch("".join(cmds), f"setting up the firewall of bridge {bridge}")
    _sysctl(localnet, f"setting route_localnet on {bridge}")
    if not internal:
        _sysctl("/proc/sys/net/ipv4/ip_forward", "turning on net.ipv4.ip_forward")


def remove_network(bridge: str, subnet: str) -> None:
    """Remove a network's rules, and ports still published to its subnet.

    Deletes the whole table when no network remains. Harmless when there is nothing (the
    bridge may be gone already).

    Raises:
        InvalidArgument: ``bridge`` or ``subnet`` is malformed.
        NetworkError: ``nft`` failed or is missing.
    """
    net = _subnet(subnet)
    _ifname(bridge)
    doc = _list("table", f"removing the firewall of bridge {bridge}")
    if doc is None:
        return
    bridges = {str(b) for b in _elements(doc, "bridges")}
    if bridges <= {bridge}:
        _nft_batch(_delete_table(), f"removing the firewall of bridge {bridge}")
        return
    elements = _network_elements(bridge, net, internal=False)
    elements["internal"] = [_quote(bridge)]
    elements["ports"] = [
        _entry(m, t)
        for m, t in _port_entries(doc).items()
        if ipaddress.IPv4Address(t[0]) in ipaddress.IPv4Network(net)
    ]
    _nft_batch("".join(_add_delete(elements)), f"removing the firewall of bridge {bridge}")


def add_ports(container_ip: str, ports: Sequence[PortMapping]) -> None:
    """Publish ``ports`` of the container at ``container_ip``; all of them or none.

    Mappings already published to the same container port are left as they are.

    Raises:
        InvalidArgument: An address, a port or a protocol is malformed.
        Conflict: A host port is published already, to another container or port, or on
            0.0.0.0 when a specific address is asked for (or the other way round).
        NetworkError: ``nft`` failed or is missing.
    """
    wanted = _check_request(container_ip, ports)
    what = f"publishing ports of {container_ip}"
    doc = _list("map", what)
    current = {} if doc is None else _port_entries(doc)
    _refuse_clashes(wanted, current)
    todo = {m: t for m, t in wanted.items() if current.get(m) != t}
    if not todo:
        return
    # the table is there (its network's rules are): no need to write it again
    batch = (_skeleton() if doc is None else "") + _cmd(
        "create", "ports", [_entry(m, t) for m, t in todo.items()]
    )
    done = _nft(["-f", "-"], batch, what)
    if done.returncode != 0:
        # someone published meanwhile: say who
        _refuse_clashes(todo, published())
        raise NetworkError(f"{what}: nft: {_error_line(done.stderr)}")
    if any(host_ip == ANY for (_, host_ip, _) in todo):
        try:
            _refuse_clashes(todo, {m: t for m, t in published().items() if m not in todo})
        except Conflict:
            _remove_entries(todo, what)
            raise


def remove_ports(container_ip: str, ports: Sequence[PortMapping]) -> None:
    """Withdraw published ports of the container at ``container_ip``.

    A port that is not published, or is published to another container, is left alone.

    Raises:
        InvalidArgument: An address, a port or a protocol is malformed.
        NetworkError: ``nft`` failed or is missing.
    """
    _remove_entries(_check_request(container_ip, ports), f"withdrawing ports of {container_ip}")


def published() -> dict[tuple[str, str, int], tuple[str, int]]:
    """The published ports, as the kernel has them.

    Returns:
        ``(proto, host_ip, host_port) -> (container_ip, container_port)``; ``host_ip`` is
        ``"0.0.0.0"`` for a port published on every local address.

    Raises:
        NetworkError: ``nft`` failed or is missing.
    """
    doc = _list("map", "reading the published ports")
    return {} if doc is None else _port_entries(doc)


def remove_all() -> None:
    """Delete kobako's table, and with it every rule, network and published port.

    Raises:
        NetworkError: ``nft`` failed or is missing.
    """
    _nft_batch(_delete_table(), "removing kobako's firewall")


# --- the batches


def _skeleton() -> str:
    """The table, its sets and chains, and the rules (the chains are flushed first, so that
    a repeat leaves one copy)."""
    t = f"ip {TABLE}"
    chains = "".join(f"  chain {name} {{ {hook} }}\n" for name, hook in _CHAINS.items())
    flush = "".join(f"flush chain {t} {name}\n" for name in _CHAINS)
    rules = "".join(f"add rule {t} {name} {rule}\n" for name, rs in _RULES.items() for rule in rs)
    return f"table {t} {{\n{_SETS}{chains}}}\n{flush}{rules}"


def _delete_table() -> str:
    # Adding it first makes the deletion succeed when there is no table.
    return f"add table ip {TABLE}\ndelete table ip {TABLE}\n"


def _network_elements(bridge: str, net: str, internal: bool) -> dict[str, list[str]]:
    b = _quote(bridge)
    elements = {"bridges": [b], "intra": [f"{b} . {b}"], "nets": [f"{net} . {b}"]}
    elements["internal" if internal else "masq"] = [b if internal else net]
    return elements


def _cmd(verb: str, name: str, elements: Iterable[str]) -> str:
    items = ", ".join(elements)
    return f"{verb} element ip {TABLE} {name} {{ {items} }}\n" if items else ""


def _add(elements: dict[str, list[str]]) -> list[str]:
    return [_cmd("add", name, items) for name, items in elements.items()]


def _add_delete(elements: dict[str, list[str]]) -> list[str]:
    """Delete elements whether or not they are there: adding one first makes its deletion
    succeed (both in one batch, so nothing sees it added). An add fails only when the key
    is there with another value: then nothing of the batch happens."""
    return [_cmd(v, name, items) for name, items in elements.items() for v in ("add", "delete")]


def _remove_entries(entries: dict[tuple[str, str, int], tuple[str, int]], what: str) -> None:
    """Delete ``ports`` entries that have exactly these values; leave others' alone."""
    batch = "".join(_add_delete({"ports": [_entry(m, t) for m, t in entries.items()]}))
    if not batch or _nft(["-f", "-"], batch, what).returncode == 0:
        return
    # Some key maps elsewhere now, or there is no table: delete only what is ours.
    current = published()
    ours = [_entry(m, t) for m, t in entries.items() if current.get(m) == t]
    _nft_batch(_cmd("delete", "ports", ours), what)


def _entry(key: tuple[str, str, int], target: tuple[str, int]) -> str:
    proto, host_ip, host_port = key
    address = "0.0.0.0/0" if host_ip == ANY else host_ip
    return f"{proto} . {address} . {host_port} : {target[0]} . {target[1]}"


# --- checks


def _check_request(
    container_ip: str, ports: Sequence[PortMapping]
) -> dict[tuple[str, str, int], tuple[str, int]]:
    """The mappings asked for, checked, as ``published()`` keys and values."""
    ip = _ipv4(container_ip, "container address")
    wanted: dict[tuple[str, str, int], tuple[str, int]] = {}
    for p in ports:
        if p.proto not in ("tcp", "udp"):
            raise InvalidArgument(f"invalid protocol {p.proto!r}: want tcp or udp")
        for port in (p.host_port, p.container_port):
            if not (isinstance(port, int) and 0 < port < 65536):
                raise InvalidArgument(f"invalid port {port!r}")
        key = (p.proto, _ipv4(p.host_ip, "host address"), p.host_port)
        _refuse_clashes({key: (ip, p.container_port)}, wanted)
        wanted[key] = (ip, p.container_port)
    return wanted


def _refuse_clashes(
    wanted: dict[tuple[str, str, int], tuple[str, int]],
    current: dict[tuple[str, str, int], tuple[str, int]],
) -> None:
    """Raise :class:`Conflict` if a wanted mapping's host port is taken in ``current``: the
    same address with another target, or 0.0.0.0 against a specific address."""
    for (proto, host_ip, host_port), target in wanted.items():
        for (p, h, port), (ip, cport) in current.items():
            if (p, port) != (proto, host_port) or (h == host_ip and (ip, cport) == target):
                continue
            if h == host_ip or ANY in (h, host_ip):
                on = "" if h == ANY else f" on {h}"
                raise Conflict(f"port {host_port}/{proto} is already published{on} to {ip}:{cport}")


def _ifname(name: str) -> str:
    if not (0 < len(name) < 16 and all(c.isalnum() or c in "_.-" for c in name)):
        raise InvalidArgument(f"invalid bridge name {name!r}")
    return name


def _subnet(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 subnet {text!r}") from None


def _ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}") from None


def _quote(name: str) -> str:
    return f'"{name}"'


# --- running nft and reading its answers


def _nft(args: list[str], batch: str | None, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["nft", *args], input=batch, capture_output=True, text=True)
    except OSError as e:
        raise NetworkError(f"{what}: cannot run nft (nftables): {e.strerror}") from None


def _nft_batch(batch: str, what: str) -> None:
    if not batch:
        return
    done = _nft(["-f", "-"], batch, what)
    if done.returncode != 0:
        raise NetworkError(f"{what}: nft: {_error_line(done.stderr)}")


def _error_line(stderr: str) -> str:
    """nft's first error, without the batch's line and column."""
    for line in stderr.splitlines():
        if "Error: " in line:
            return line.split("Error: ", 1)[1].strip()
    return stderr.strip().splitlines()[0] if stderr.strip() else "failed"


def _list(kind: str, what: str) -> list[dict[str, Any]] | None:
    """``nft -j list table`` (or ``map ports``) of kobako's table; None if there is none."""
    args = ["-j", "list", kind, "ip", TABLE] + (["ports"] if kind == "map" else [])
    done = _nft(args, None, what)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise NetworkError(f"{what}: nft: {_error_line(done.stderr)}")
    items: list[dict[str, Any]] = json.loads(done.stdout)["nftables"]
    return items


def _elements(doc: list[dict[str, Any]], name: str) -> list[Any]:
    for item in doc:
        obj = item.get("set") or item.get("map")
        if obj is not None and obj.get("name") == name:
            return list(obj.get("elem", []))
    return []


def _port_entries(doc: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[str, int]]:
    """The ``ports`` map's elements: ``[{"concat": [proto, addr, port]}, {"concat": [ip,
    port]}]`` each, where addr is a string or ``{"prefix": {"addr", "len": 0}}`` for any."""
    entries = {}
    for elem in _elements(doc, "ports"):
        key, value = elem
        if "elem" in key:  # an element with attributes (a comment, a counter)
            key = key["elem"]["val"]
        proto, address, host_port = key["concat"]
        if isinstance(address, dict):
            prefix = address["prefix"]
            address = ANY if prefix["len"] == 0 else prefix["addr"]
        container_ip, container_port = value["concat"]
        entries[(str(proto), str(address), int(host_port))] = (
            str(container_ip),
            int(container_port),
        )
    return entries


def _sysctl(path: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write("1")
    except OSError as e:
        raise NetworkError(f"{what}: {e.strerror}") from None
