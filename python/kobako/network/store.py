"""Networks as the user sees them: ``network create/ls/inspect/rm/prune``, kept in the store.

A network's record is ``ROOT/networks/ID.json`` in the shape of ``docker network inspect``
(``Name``, ``Id``, ``Driver``, ``IPAM.Config[0].Subnet/Gateway``, ``Internal``, ``Options``
with the bridge's name...), written atomically under the networks lock, which also makes the
choice of a free subnet safe against concurrent ``network create``. Three networks always
exist, as in Docker: ``bridge`` (the default, bridge ``kobako0``, no DNS by name), ``host``
and ``none``.

What a network has while containers use it (the bridge, addresses, rules, its DNS answerer)
is runtime state, made on first use and removed with the last container or with the network:
see :mod:`kobako.network.endpoints`.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re

from kobako.errors import Conflict, InvalidArgument, NetworkNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Sequence
    from typing import Any

    from kobako.image.store import Store
    from kobako.runtime.spec import Endpoint

__all__ = ["DEFAULT_BRIDGE", "PREDEFINED", "NetworkStore"]

#: The default network's bridge (Docker's is ``docker0``).
DEFAULT_BRIDGE = "kobako0"
#: Networks that always exist; ``host`` and ``none`` are modes, not bridges.
PREDEFINED = ("bridge", "host", "none")

#: Where subnets are chosen from, in order: Docker's default address pools (172.17-31/16,
#: then 192.168.0-240/20), less 172.17/16, which docker0 takes when Docker is on the host too.
_POOLS = [f"172.{n}.0.0/16" for n in range(18, 32)] + [
    f"192.168.{n}.0/20" for n in range(0, 256, 16)
]
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")


def _host_routes(device: str | None = None) -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the host routes somewhere already (but the default route);
    only those through ``device`` when given."""
    import ipaddress

    routes = []
    try:
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                fields = line.split()
                dest, mask = int(fields[1], 16), int(fields[7], 16)
                if mask == 0 or (device is not None and fields[0] != device):
                    continue
                # little-endian hex, as the kernel prints it
                net = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
                prefix = bin(mask).count("1")
                routes.append(ipaddress.IPv4Network(f"{net}/{prefix}", strict=False))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return routes


def _bridge_of(doc: dict[str, Any]) -> str:
    return str((doc.get("Options") or {}).get("com.docker.network.bridge.name") or "")


class NetworkStore:
    """The networks of one store.

    Args:
        store: The image store whose root holds ``networks/``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir = os.path.join(store.root, "networks")

    def _lock(self) -> Any:
        from kobako.image.store import _Lock

        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        return _Lock(os.path.join(self.dir, "lock"))

    def _path(self, nid: str) -> str:
        return os.path.join(self.dir, nid + ".json")

    def _records(self) -> list[dict[str, Any]]:
        import json

        out = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
        return out

    def list(self) -> list[dict[str, Any]]:
        """Every network, the predefined ones made on first use; by name."""
        docs = self._records()
        if not {d["Name"] for d in docs} >= set(PREDEFINED):
            with self._lock():
                self._ensure_predefined()
            docs = self._records()
        return sorted(docs, key=lambda d: d["Name"])

    def _ensure_predefined(self) -> None:
        """Under the lock: the ``bridge``, ``host`` and ``none`` networks' records."""
        have = {d["Name"] for d in self._records()}
        for name in PREDEFINED:
            if name in have:
                continue
            if name == "bridge":
                # The bridge may exist already, made for another store on this host (--root):
                # keep its subnet, which its containers' addresses are in.
                existing = _host_routes(DEFAULT_BRIDGE)
                doc = self._new(
                    name,
                    driver="bridge",
                    subnet=str(existing[0]) if existing else None,
                    gateway=None,
                    internal=False,
                    bridge=DEFAULT_BRIDGE,
                    labels={},
                )
                doc["Options"]["com.docker.network.bridge.default_bridge"] = "true"
            else:
                doc = self._new(
                    name, driver="null" if name == "none" else name, subnet=None, gateway=None
                )
            self._write(doc)

    def get(self, ref: str) -> dict[str, Any]:
        """The network named ``ref``, or whose id is or starts with ``ref``.

        Raises:
            NetworkNotFound: None is.
        """
        docs = self.list()
        for d in docs:
            if d["Name"] == ref or d["Id"] == ref:
                return d
        matches = [d for d in docs if ref and d["Id"].startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found)")
        raise NetworkNotFound(f"network {ref} not found")

    def create(
        self,
        name: str,
        *,
        driver: str = "bridge",
        subnet: str | None = None,
        gateway: str | None = None,
        internal: bool = False,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
        check_duplicate: bool = True,
    ) -> dict[str, Any]:
        """Make a bridge network (``docker network create``).

        Args:
            name: Its name (letters, digits, ``_.-``).
            driver: ``"bridge"``: the only driver.
            subnet: Its IPv4 subnet in CIDR form; default: a free one from the pools that
                overlaps neither the host's routes nor another network.
            gateway: The bridge's address; default: the subnet's first.
            internal: No traffic in or out of the network but between its containers.
            labels: Its labels.
            options: ``com.docker.network.bridge.name`` names its bridge (default
                ``kb-`` and 12 digits of its id); others are refused.

        Raises:
            Conflict: A network of that name exists.
            InvalidArgument: A bad name, driver, subnet or gateway.
        """
        if not _NAME.match(name):
            raise InvalidArgument(
                f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
            )
        if driver != "bridge":
            raise InvalidArgument(f'plugin "{driver}" not found (only the bridge driver is)')
        options = dict(options or {})
        bridge = options.pop("com.docker.network.bridge.name", "")
        if options:
            raise InvalidArgument(f"network options not supported: {', '.join(sorted(options))}")
        if bridge and (len(bridge) > 15 or not re.fullmatch(r"[a-zA-Z0-9_.-]+", bridge)):
            raise InvalidArgument(f"invalid bridge name {bridge!r}")
        if gateway and not subnet:
            raise InvalidArgument("a gateway needs a subnet (--subnet)")
        with self._lock():
            self._ensure_predefined()
            docs = self._records()
            if any(d["Name"] == name for d in docs):
                raise Conflict(f"network with name {name} already exists")
            if bridge and any(_bridge_of(d) == bridge for d in docs):
                raise Conflict(f"bridge {bridge} is already used by another network")
            doc = self._new(
                name,
                driver="bridge",
                subnet=subnet,
                gateway=gateway,
                internal=internal,
                bridge=bridge,
                labels=labels or {},
            )
            self._write(doc)
        return doc

    def _new(
        self,
        name: str,
        *,
        driver: str,
        subnet: str | None,
        gateway: str | None,
        internal: bool = False,
        bridge: str = "",
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A new network record (under the lock, which the subnet choice relies on)."""
        import ipaddress

        from kobako.runtime.containers import now_rfc3339

        nid = os.urandom(32).hex()
        config: list[dict[str, str]] = []
        if driver == "bridge":
            net = self._subnet(subnet)
            if gateway:
                try:
                    gw = ipaddress.IPv4Address(gateway)
                except ValueError:
                    raise InvalidArgument(f"invalid gateway address {gateway!r}") from None
                if gw not in net or gw in (net.network_address, net.broadcast_address):
                    raise InvalidArgument(f"gateway {gateway} is not a host address of {net}")
            else:
                gw = net.network_address + 1
            config = [{"Subnet": str(net), "Gateway": str(gw)}]
            bridge = bridge or "kb-" + nid[:12]
        return {
            "Name": name,
            "Id": nid,
            "Created": now_rfc3339(),
            "Scope": "local",
            "Driver": driver,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": {}, "Config": config},
            "Internal": internal,
            "Attachable": False,
            "Ingress": False,
            "ConfigOnly": False,
            "Options": {"com.docker.network.bridge.name": bridge} if bridge else {},
            "Labels": labels or {},
        }

    def _subnet(self, asked: str | None) -> ipaddress.IPv4Network:
        """``asked`` checked, or a free subnet (under the lock)."""
        import ipaddress

        taken = [
            ipaddress.IPv4Network(c["Subnet"])
            for d in self._records()
            for c in d["IPAM"]["Config"]
            if "Subnet" in c
        ]
        if asked:
            try:
                net = ipaddress.IPv4Network(asked, strict=True)
            except ValueError as e:
                raise InvalidArgument(f"invalid subnet {asked}: {e}") from None
            if net.prefixlen > 30:
                raise InvalidArgument(f"subnet {asked} is too small (at most /30)")
            clash = next((t for t in taken if t.overlaps(net)), None)
            if clash is not None:
                raise Conflict(f"Pool overlaps with other one on this address space ({clash})")
            return net
        busy = taken + _host_routes()
        for pool in _POOLS:
            net = ipaddress.IPv4Network(pool)
            if not any(net.overlaps(b) for b in busy):
                return net
        raise Conflict("all predefined address pools have been fully subnetted")

    def _write(self, doc: dict[str, Any]) -> None:
        from kobako.runtime.containers import _write_json

        _write_json(self._path(doc["Id"]), doc)

    def remove(self, ref: str) -> dict[str, Any]:
        """Remove a network no container uses (``docker network rm``), and its bridge, rules
        and DNS answerer.

        Raises:
            NetworkNotFound: No such network.
            Conflict: It is predefined, or containers use it.
        """
        from kobako.network import endpoints

        doc = self.get(ref)
        if doc["Name"] in PREDEFINED:
            raise Conflict(f"{doc['Name']} is a pre-defined network and cannot be removed")
        with self._lock():
            users = self.users(doc)
            if users:
                raise Conflict(
                    f"error while removing network: network {doc['Name']} id {doc['Id']} "
                    f"has active endpoints ({', '.join(users)})"
                )
            endpoints.teardown_network(_bridge_of(doc), self.subnet(doc))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(doc["Id"]))
        return doc

    def users(self, doc: dict[str, Any]) -> builtins.list[str]:
        """The names of the running containers on this network: its active endpoints. As in
        Docker, a stopped container does not keep its networks (it fails to start once one
        is removed)."""
        from kobako.runtime.containers import ContainerStore, is_running

        out = []
        for c in ContainerStore(self.store).list():
            if not is_running(c):
                continue
            nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
            if doc["Name"] in nets or any(n.get("NetworkID") == doc["Id"] for n in nets.values()):
                out.append(c["Name"].lstrip("/"))
        return out

    def prune(self, labels: Sequence[str] = ()) -> builtins.list[str]:
        """Remove every user network no container uses; returns their names.

        Args:
            labels: Only networks whose labels pass these ``label=`` filters (``KEY`` or
                ``KEY=VALUE``; a leading ``!`` negates), as ``docker network prune`` takes them.
        """
        from kobako.runtime.volumes import match_labels

        removed = []
        for doc in self.list():
            if doc["Name"] in PREDEFINED or not match_labels(doc, labels):
                continue
            try:
                self.remove(doc["Id"])
            except Conflict:
                continue
            removed.append(doc["Name"])
        return removed

    @staticmethod
    def subnet(doc: dict[str, Any]) -> str:
        config = doc["IPAM"]["Config"]
        return str(config[0]["Subnet"]) if config else ""

    def resolve(self, endpoint: Endpoint, name: str, cid: str) -> Endpoint:
        """``endpoint`` with its network's configuration filled in, for a start.

        Raises:
            NetworkNotFound: The network is gone.
            InvalidArgument: ``--ip`` on the default network or outside the subnet, or a
                network that is not a bridge.
        """
        doc = self.get(endpoint.network)
        if doc["Driver"] != "bridge":
            raise InvalidArgument(
                f"container cannot be connected to the {doc['Name']} network with others"
            )
        config = doc["IPAM"]["Config"][0]
        user_defined = doc["Name"] != "bridge"
        if endpoint.ip:
            import ipaddress

            if not user_defined:
                raise InvalidArgument(
                    "user specified IP address is supported on user defined networks only"
                )
            try:
                ip = ipaddress.IPv4Address(endpoint.ip)
            except ValueError:
                raise InvalidArgument(f"invalid IPv4 address: {endpoint.ip}") from None
            if ip not in ipaddress.IPv4Network(config["Subnet"]):
                raise InvalidArgument(f"no configured subnet contains IP address {endpoint.ip}")
        names = (name, cid[:12], *endpoint.aliases) if user_defined else ()
        return endpoint.replace(
            network=doc["Name"],
            names=tuple(dict.fromkeys(n for n in names if n)),
            network_id=doc["Id"],
            bridge=_bridge_of(doc),
            subnet=config["Subnet"],
            gateway=config["Gateway"],
            internal=bool(doc.get("Internal")),
            dns=user_defined,
        )
