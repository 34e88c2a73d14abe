"""Container networking: bridge networks, their addresses, rules, DNS answerer and ports.

* :mod:`kobako.network.store`: the networks the user made (``network create/ls/rm``) and the
  predefined ``bridge``, ``host`` and ``none``.
* :mod:`kobako.network.endpoints`: at run time, a container's namespace, veth pairs,
  addresses and published ports.
* :mod:`kobako.network.firewall`: the host's nftables rules (NAT, isolation, ports).
* :mod:`kobako.network.dns`: the per-network DNS answerer for names on user networks.

This module holds what the container records need: the network part of a container's spec
resolved at start (:func:`for_start`) and docker's ``NetworkSettings`` before, during and
after a run.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store
    from kobako.runtime.spec import Network, Spec

__all__ = [
    "configure",
    "for_start",
    "initial_settings",
    "publish_all",
    "stopped_settings",
]


def configure(
    mode: str,
    net: Network,
    *,
    ip: str = "",
    aliases: tuple[str, ...] = (),
    publish_all: bool = False,
    hostname_given: bool = False,
) -> tuple[str, Network]:
    """A new container's network mode and settings, checked as Docker checks them: ``mode``
    (``""`` and ``"default"`` are ``bridge``), ``net`` (ports, DNS, extra hosts), and for a
    network, its endpoint with ``ip`` and ``aliases``.

    Raises:
        InvalidArgument: A DNS server that is not an address, or options the mode excludes
            (ports, ``--ip`` or aliases with none/host/container:, aliases on the default
            bridge, a hostname or DNS with container:).
    """
    from kobako.errors import InvalidArgument
    from kobako.runtime.spec import Endpoint

    mode = "bridge" if mode in ("", "default") else mode
    if net.dns:
        import ipaddress

        for server in net.dns:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise InvalidArgument(f"{server} is not an ip address") from None
    if mode in ("none", "host") or mode.startswith("container:"):
        if net.ports or publish_all:
            raise InvalidArgument(
                f"conflicting options: port publishing and the {mode} network mode"
            )
        if ip or aliases:
            raise InvalidArgument(
                f"conflicting options: --ip/--network-alias and the {mode} network mode"
            )
        if mode.startswith("container:") and (hostname_given or net.dns):
            raise InvalidArgument(
                "conflicting options: --hostname/--dns and the container network mode"
            )
        return mode, net
    if aliases and mode == "bridge":
        raise InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    return mode, net.replace(endpoints=(Endpoint(network=mode, ip=ip, aliases=aliases),))


def for_start(store: Store, doc: dict[str, Any], spec: Spec) -> Spec:
    """``spec`` with its networks' current configuration filled in, for a start.

    Raises:
        NetworkNotFound: A network it is on was removed.
        ContainerNotFound, Conflict: ``container:NAME`` names no running container.
    """
    mode = spec.namespaces.network
    if mode in ("none", "host"):
        return spec
    if mode.startswith("container:"):
        from kobako.errors import Conflict
        from kobako.runtime.containers import ContainerStore, is_running

        ref = mode[len("container:") :]
        other = ContainerStore(store).get(ref)
        if other["Id"] == doc["Id"]:
            raise Conflict("cannot join own network")
        if not is_running(other):
            raise Conflict(f"cannot join network of a non running container: {ref}")
        return spec.replace(network=spec.network.replace(join=other["Id"]))
    from kobako.network.store import NetworkStore

    networks = NetworkStore(store)
    name = doc["Name"].lstrip("/")
    resolved = tuple(networks.resolve(e, name, doc["Id"]) for e in spec.network.endpoints)
    return spec.replace(network=spec.network.replace(endpoints=resolved))


def initial_settings(store: Store, spec: Spec) -> dict[str, Any]:
    """Docker's ``NetworkSettings`` of a created container: its networks, no addresses.

    Raises:
        NetworkNotFound: A network it names does not exist.
    """
    settings: dict[str, Any] = {"Networks": {}, "Ports": {}}
    mode = spec.namespaces.network
    if mode.startswith("container:"):
        return settings
    if mode in ("none", "host"):
        from kobako.network.store import NetworkStore

        doc = NetworkStore(store).get(mode)
        settings["Networks"][mode] = blank_endpoint(doc["Id"], ())
        return settings
    from kobako.network.store import NetworkStore

    networks = NetworkStore(store)
    for e in spec.network.endpoints:
        doc = networks.get(e.network)
        settings["Networks"][doc["Name"]] = blank_endpoint(doc["Id"], e.aliases)
    return settings


def blank_endpoint(nid: str, aliases: tuple[str, ...]) -> dict[str, Any]:
    """An entry of ``NetworkSettings.Networks`` for a network the container is on but not
    running on (no address yet)."""
    return {
        "Aliases": list(aliases) or None,
        "NetworkID": nid,
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "MacAddress": "",
        "DNSNames": None,
    }


def running_settings(doc: dict[str, Any], live: dict[str, Any] | None) -> None:
    """Record in ``doc`` what :func:`kobako.network.endpoints.up` made for its start."""
    if not live:
        return
    settings = doc.setdefault("NetworkSettings", {"Networks": {}, "Ports": {}})
    networks = settings.setdefault("Networks", {})
    for name, ep in live["Networks"].items():
        networks[name] = {**networks.get(name, {}), **ep}
    for key in ("Ports", "IPAddress", "IPPrefixLen", "Gateway", "MacAddress"):
        settings[key] = live[key]


def stopped_settings(doc: dict[str, Any]) -> None:
    """Clear the addresses and ports of a container that is no longer running, as Docker does."""
    settings = doc.get("NetworkSettings")
    if not settings:
        return
    for ep in (settings.get("Networks") or {}).values():
        ep.update(EndpointID="", Gateway="", IPAddress="", IPPrefixLen=0, MacAddress="")
        ep["DNSNames"] = None
    settings["Ports"] = {}
    for key, blank in (("IPAddress", ""), ("IPPrefixLen", 0), ("Gateway", ""), ("MacAddress", "")):
        if key in settings:
            settings[key] = blank


def publish_all(spec: Spec, exposed: tuple[str, ...]) -> Spec:
    """``-P``: every exposed port (``"80/tcp"``, ``"53/udp"``, ``"8000-8002"``) that ``-p``
    does not publish already, on a free host port.

    Raises:
        InvalidArgument: A malformed exposed port.
    """
    from kobako.runtime.parse import parse_publish
    from kobako.runtime.spec import PortMapping

    ports = list(spec.network.ports)
    have = {(m.container_port, m.proto) for m in ports}
    for entry in exposed:
        number, _, proto = entry.partition("/")
        for m in parse_publish(f"{number}/{proto or 'tcp'}"):
            if (m.container_port, m.proto) not in have:
                have.add((m.container_port, m.proto))
                ports.append(PortMapping(proto=m.proto, container_port=m.container_port))
    return spec.replace(network=spec.network.replace(ports=tuple(ports)))
