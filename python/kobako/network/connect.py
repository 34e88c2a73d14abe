"""``network connect`` and ``network disconnect``: a container joins or leaves a network.

A stopped container is only re-configured (its spec and ``NetworkSettings.Networks``): it
is on the network from its next start. A running one is also plugged in or out at once: a
veth into the network's bridge appears in (or disappears from) its namespace as ``ethN``.
"""

from __future__ import annotations

import os

from kobako.errors import Conflict, InvalidArgument, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kobako.image.store import Store

__all__ = ["connect", "disconnect"]


def _netns_of(state: dict[str, object]) -> int:
    """An fd of a running container's network namespace, checked against its start time."""
    from kobako.runtime.proc import open_namespace

    fd = open_namespace(int(state.get("Pid") or 0), state.get("PidStart"), "net")  # type: ignore[call-overload,arg-type]
    if fd is None:
        raise Conflict("the container stopped while being connected")
    return fd


def connect(
    store: Store, container: str, network: str, *, ip: str = "", aliases: tuple[str, ...] = ()
) -> None:
    """Connect ``container`` to ``network`` (names or ids).

    Raises:
        ContainerNotFound, NetworkNotFound: No such container or network.
        Conflict: It is on that network already.
        InvalidArgument: A host/none network, a container whose network mode is host, none
            or another container's, or a bad ``ip``.
    """
    from kobako.network import blank_endpoint, running_settings
    from kobako.network.endpoints import connect_running
    from kobako.network.store import NetworkStore
    from kobako.runtime.containers import ContainerStore, is_running
    from kobako.runtime.spec import Endpoint

    networks = NetworkStore(store)
    containers = ContainerStore(store)
    net = networks.get(network)
    cid = containers.get(container)["Id"]
    if net["Driver"] != "bridge":
        raise InvalidArgument(f"container cannot be connected to the {net['Name']} network")
    with containers.lock(cid):
        doc = containers.load(cid)
        spec = containers.spec(doc)
        mode = spec.namespaces.network
        if mode in ("none", "host") or mode.startswith("container:"):
            raise InvalidArgument(
                "container sharing network namespace with another container or host cannot "
                "be connected to any other network"
            )
        if any(networks.get(e.network)["Id"] == net["Id"] for e in spec.network.endpoints):
            raise Conflict(
                f"endpoint with name {doc['Name'].lstrip('/')} already exists in network "
                f"{net['Name']}"
            )
        endpoint = Endpoint(network=net["Name"], ip=ip, aliases=tuple(aliases))
        resolved = networks.resolve(endpoint, doc["Name"].lstrip("/"), cid)
        live = None
        if is_running(doc):
            netns = _netns_of(doc["State"])
            try:
                live = connect_running(cid, resolved, netns)
            finally:
                os.close(netns)
        spec = spec.replace(
            network=spec.network.replace(endpoints=(*spec.network.endpoints, endpoint))
        )
        containers.save_spec(doc, spec)
        settings = doc.setdefault("NetworkSettings", {"Networks": {}, "Ports": {}})
        settings.setdefault("Networks", {})[net["Name"]] = blank_endpoint(net["Id"], aliases)
        running_settings(doc, live)
        containers.save(doc)


def disconnect(store: Store, container: str, network: str, *, force: bool = False) -> None:
    """Disconnect ``container`` from ``network``. With ``force``, a stopped container is
    taken off a network that has been removed, named as it was (as Docker allows).

    Raises:
        ContainerNotFound, NetworkNotFound: No such container or network.
        InvalidArgument: It is not on that network (unless ``force``).
    """
    from kobako.network import running_settings
    from kobako.network.endpoints import disconnect_running
    from kobako.network.store import NetworkStore
    from kobako.runtime.containers import ContainerStore, is_running

    networks = NetworkStore(store)
    containers = ContainerStore(store)
    try:
        net = networks.get(network)
    except NotFound:
        if not force:
            raise
        net = {"Id": "", "Name": network}  # removed: matched by the name it had
    cid = containers.get(container)["Id"]
    with containers.lock(cid):
        doc = containers.load(cid)
        spec = containers.spec(doc)
        keep = []
        found = False
        for e in spec.network.endpoints:
            try:
                same = networks.get(e.network)["Id"] == net["Id"]
            except NotFound:
                same = e.network == net["Name"]
            found = found or same
            if not same:
                keep.append(e)
        if not found:
            if force:
                return
            raise InvalidArgument(f"container {cid[:12]} is not connected to network {net['Name']}")
        live = disconnect_running(cid, net["Id"]) if is_running(doc) and net["Id"] else None
        spec = spec.replace(network=spec.network.replace(endpoints=tuple(keep)))
        containers.save_spec(doc, spec)
        settings = doc.setdefault("NetworkSettings", {"Networks": {}, "Ports": {}})
        settings.get("Networks", {}).pop(net["Name"], None)
        running_settings(doc, live)
        containers.save(doc)
