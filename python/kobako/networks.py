"""``client.networks``: networks as docker-py shows them.

::

    net = client.networks.create("backend", ipam=IPAMConfig(pool_configs=[
        IPAMPool(subnet="10.213.0.0/24", gateway="10.213.0.1"),
    ]))
    net.connect(container, aliases=["db"])
    net.disconnect(container)
    net.remove()

:func:`inspect` and :func:`select` also serve ``kobako network inspect`` and ``ls``.
"""

from __future__ import annotations

from kobako._model import Model, filter_map

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from kobako.client import Client
    from kobako.containers import Container
    from kobako.image.store import Store
    from kobako.network.store import NetworkStore

__all__ = ["IPAMConfig", "IPAMPool", "Network", "NetworkCollection", "inspect", "select"]

#: The filters ``network ls`` and :meth:`NetworkCollection.list` take.
FILTERS = ("driver", "id", "label", "name", "scope", "type")


class IPAMPool(dict[str, object]):
    """One subnet of a network (docker-py's ``docker.types.IPAMPool``: a dict).

    Args:
        subnet: Its IPv4 subnet in CIDR form.
        iprange: Not supported (must be None).
        gateway: The bridge's address in it.
        aux_addresses: Not supported (must be None).
    """

    def __init__(
        self,
        *,
        subnet: str | None = None,
        iprange: str | None = None,
        gateway: str | None = None,
        aux_addresses: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            Subnet=subnet, IPRange=iprange, Gateway=gateway, AuxiliaryAddresses=aux_addresses
        )


class IPAMConfig(dict[str, object]):
    """A network's address management (docker-py's ``docker.types.IPAMConfig``: a dict).

    Args:
        driver: ``"default"``: the only IPAM driver.
        pool_configs: Its subnets: at most one :class:`IPAMPool`.
        options: The driver's options: none supported.
    """

    def __init__(
        self,
        *,
        driver: str = "default",
        pool_configs: Sequence[Mapping[str, Any]] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(Driver=driver, Config=list(pool_configs or []))
        if options:
            self["Options"] = dict(options)


def _ipam(ipam: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """The subnet and gateway of docker-py's ``ipam`` argument.

    Raises:
        InvalidArgument: Another driver, options, several subnets, or ``IPRange`` /
            ``AuxiliaryAddresses`` (not supported).
    """
    from kobako.errors import InvalidArgument

    if not ipam:
        return None, None
    if (ipam.get("Driver") or "default") != "default":
        raise InvalidArgument(f"IPAM driver {ipam['Driver']!r} not supported (only 'default')")
    if ipam.get("Options"):
        raise InvalidArgument("IPAM options not supported")
    pools = list(ipam.get("Config") or [])
    if len(pools) > 1:
        raise InvalidArgument("only one IPv4 subnet per network is supported")
    if not pools:
        return None, None
    pool = pools[0]
    for key in ("IPRange", "AuxiliaryAddresses"):
        if pool.get(key):
            raise InvalidArgument(f"IPAM {key} not supported")
    return pool.get("Subnet") or None, pool.get("Gateway") or None


def inspect(store: Store, docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``docker network inspect``'s documents for network records: with ``ConfigFrom`` and
    ``Containers`` (the running containers on it, by id: name, endpoint, MAC and
    ``IPv4Address`` as ``ADDRESS/PREFIX``)."""
    from kobako.runtime.containers import ContainerStore, is_running

    running = [c for c in ContainerStore(store).list() if is_running(c)] if docs else []
    return [_document(doc, running) for doc in docs]


def _document(doc: Mapping[str, Any], running: Sequence[dict[str, Any]]) -> dict[str, Any]:
    containers: dict[str, dict[str, str]] = {}
    for c in running:
        nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
        ep = next((e for e in nets.values() if e.get("NetworkID") == doc["Id"]), None)
        if ep is None:
            continue
        ip = ep.get("IPAddress") or ""
        containers[c["Id"]] = {
            "Name": c["Name"].lstrip("/"),
            "EndpointID": ep.get("EndpointID") or "",
            "MacAddress": ep.get("MacAddress") or "",
            "IPv4Address": f"{ip}/{ep.get('IPPrefixLen', 0)}" if ip else "",
            "IPv6Address": "",
        }
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "Options":  # docker's order: ... Ingress, ConfigFrom, ConfigOnly, Containers
            out["Containers"] = containers
        out[key] = value
        if key == "Ingress":
            out["ConfigFrom"] = {"Network": ""}
    out.setdefault("Containers", containers)
    return out


def select(
    docs: Sequence[dict[str, Any]], filters: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """Apply ``docker network ls`` filters; all must hold, any value of one may.

    ``name`` and ``id`` match a part of the name or id, ``driver`` and ``scope`` the whole
    value, ``label`` is ``KEY`` or ``KEY=VALUE`` (``label!=`` negates), ``type`` is
    ``custom`` or ``builtin`` (the predefined ``bridge``, ``host`` and ``none``).

    Raises:
        InvalidArgument: A ``type`` other than ``custom`` or ``builtin``.
    """
    from kobako.errors import InvalidArgument
    from kobako.network.store import PREDEFINED
    from kobako.runtime.volumes import match_labels

    types = set(filters.get("type", ()))
    if types - {"custom", "builtin"}:
        raise InvalidArgument(f"invalid filter: 'type'='{sorted(types)[0]}'")
    out = []
    for doc in docs:
        if filters.get("name") and not any(n in doc["Name"] for n in filters["name"]):
            continue
        if filters.get("id") and not any(i in doc["Id"] for i in filters["id"]):
            continue
        if filters.get("driver") and doc["Driver"] not in filters["driver"]:
            continue
        if filters.get("scope") and doc["Scope"] not in filters["scope"]:
            continue
        if types and ("builtin" if doc["Name"] in PREDEFINED else "custom") not in types:
            continue
        if not match_labels(doc, filters.get("label", ())):
            continue
        out.append(doc)
    return out


def _store(client: Client) -> NetworkStore:
    from kobako.network.store import NetworkStore

    return NetworkStore(client.store)


def _model(client: Client, doc: dict[str, Any]) -> Network:
    return Network(client, inspect(client.store, [doc])[0])


def _container_ref(container: Container | str) -> str:
    from kobako.containers import Container

    return container.id if isinstance(container, Container) else container


class Network(Model):
    """A network (docker-py's ``Network``).

    Attributes:
        attrs: ``docker network inspect``'s document for it.
    """

    @property
    def name(self) -> str:
        """Its name."""
        return str(self.attrs["Name"])

    @property
    def containers(self) -> list[Container]:
        """The running containers on it, as they were at the last :meth:`reload`."""
        from kobako.containers import Container
        from kobako.errors import ContainerNotFound
        from kobako.runtime.containers import ContainerStore

        store = ContainerStore(self.client.store)
        out = []
        for cid in self.attrs.get("Containers") or {}:
            try:
                out.append(Container(self.client, store.get(cid)))
            except ContainerNotFound:
                continue
        return out

    def reload(self) -> None:
        """Read its record again.

        Raises:
            NetworkNotFound: It was removed.
        """
        self.attrs = inspect(self.client.store, [_store(self.client).get(self.id)])[0]

    def connect(
        self,
        container: Container | str,
        *,
        ipv4_address: str | None = None,
        aliases: Sequence[str] | None = None,
    ) -> None:
        """Connect a container to it (``docker network connect``); a running one at once,
        a stopped one from its next start.

        Args:
            container: The container, or its name or ID.
            ipv4_address: Its address on the network; default: a free one.
            aliases: More names it answers to on the network.

        Raises:
            ContainerNotFound, NetworkNotFound: No such container, or the network is gone.
            Conflict: It is on the network already.
            InvalidArgument: A bad address, or a container that cannot join (its network
                mode is ``host``, ``none`` or another container's).
        """
        from kobako.network.connect import connect

        connect(
            self.client.store,
            _container_ref(container),
            self.id,
            ip=ipv4_address or "",
            aliases=tuple(aliases or ()),
        )

    def disconnect(self, container: Container | str, *, force: bool = False) -> None:
        """Disconnect a container from it (``docker network disconnect``).

        Args:
            container: The container, or its name or ID.
            force: A container that is not on it is not an error.

        Raises:
            ContainerNotFound, NetworkNotFound: No such container, or the network is gone.
            InvalidArgument: It is not on the network (unless ``force``).
        """
        from kobako.network.connect import disconnect

        disconnect(self.client.store, _container_ref(container), self.id, force=force)

    def remove(self) -> None:
        """Remove it, with its bridge, rules and DNS answerer (``docker network rm``).

        Raises:
            NetworkNotFound: It is gone.
            Conflict: It is predefined, or containers are on it.
        """
        _store(self.client).remove(self.id)


class NetworkCollection:
    """The networks of a :class:`~kobako.Client` (docker-py's ``client.networks``)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(
        self,
        name: str,
        *,
        driver: str | None = None,
        options: Mapping[str, str] | None = None,
        ipam: Mapping[str, Any] | None = None,
        check_duplicate: bool | None = None,
        internal: bool = False,
        labels: Mapping[str, str] | None = None,
        enable_ipv6: bool = False,
        attachable: bool | None = None,
        scope: str | None = None,
        ingress: bool | None = None,
    ) -> Network:
        """Make a bridge network (``docker network create``).

        Args:
            name: Its name (letters, digits, ``_.-``).
            driver: ``"bridge"`` (the only driver) or None.
            options: ``com.docker.network.bridge.name`` names its bridge; nothing else.
            ipam: Its subnet and gateway: an :class:`IPAMConfig` (docker-py's works too) or
                ``{"Config": [{"Subnet": ..., "Gateway": ...}]}``; default: a free subnet
                that overlaps neither the host's routes nor another network.
            check_duplicate: Ignored: names are always unique, as in Docker 25 and later.
            internal: No traffic in or out but between its containers.
            labels: Its labels.
            enable_ipv6: Must be False (IPv4 only).
            attachable: Ignored: any container may join a local network (it is a swarm
                setting).
            scope: ``"local"`` or None.
            ingress: Must be falsy (a swarm setting).

        Returns:
            The network.

        Raises:
            Conflict: A network of that name exists, or the subnet overlaps another's.
            InvalidArgument: A bad name, driver, option, subnet or gateway.
        """
        from kobako.errors import InvalidArgument

        del check_duplicate, attachable
        if enable_ipv6:
            raise InvalidArgument("IPv6 networks are not supported")
        if scope not in (None, "local"):
            raise InvalidArgument(f"scope {scope!r} not supported (only 'local')")
        if ingress:
            raise InvalidArgument("ingress networks are a swarm feature, not supported")
        subnet, gateway = _ipam(ipam)
        doc = _store(self.client).create(
            name,
            driver=driver or "bridge",
            subnet=subnet,
            gateway=gateway,
            internal=internal,
            labels=dict(labels or {}),
            options=dict(options or {}),
        )
        return _model(self.client, doc)

    def get(self, network_id: str) -> Network:
        """A network by name, ID or unique ID prefix.

        Raises:
            NetworkNotFound: No such network.
        """
        doc = _store(self.client).get(network_id)
        return _model(self.client, doc)

    def list(
        self,
        *,
        names: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        greedy: bool = False,
    ) -> list[Network]:
        """The networks, by name.

        Args:
            names: Only those whose name contains one of these.
            ids: Only those whose ID contains one of these.
            filters: docker-py's filters: ``name``, ``id``, ``driver``, ``label``, ``scope``,
                ``type`` (a value or a list of them).
            greedy: Ignored: :attr:`Network.attrs` is always the full document.

        Raises:
            InvalidArgument: An unknown filter.
        """
        del greedy
        wanted = filter_map(filters, FILTERS)
        if names:
            wanted.setdefault("name", []).extend(names)
        if ids:
            wanted.setdefault("id", []).extend(ids)
        docs = select(_store(self.client).list(), wanted)
        return [Network(self.client, d) for d in inspect(self.client.store, docs)]

    def prune(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Remove the user networks no container is on.

        Args:
            filters: ``label`` (``KEY`` or ``KEY=VALUE``, a list for several).

        Returns:
            ``{"NetworksDeleted": [names]}``.
        """
        labels = filter_map(filters, ("label",)).get("label", [])
        return {"NetworksDeleted": _store(self.client).prune(labels)}
