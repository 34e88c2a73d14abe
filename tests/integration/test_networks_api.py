"""``client.networks``: create, get, list, prune, and a network's containers, connect,
disconnect and remove, in docker-py's shape.

Traffic: none (the containers sleep; their DNS answerer has no upstream).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

import kobako
from kobako.client import Client
from kobako.errors import Conflict, ContainerNotFound, InvalidArgument, NetworkNotFound
from kobako.image.store import Store
from kobako.networks import IPAMConfig, IPAMPool, Network
from kobako.runtime.containers import ContainerStore
from tests.conftest import kobako as cli
from tests.imagetools import make_image

container = pytest.mark.container


@pytest.fixture
def client(store: Store, busybox_tar: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A client on the test's store, with a ``busybox`` image; every container and user
    network the test made is removed afterwards."""
    monkeypatch.setenv("KOBAKO_DNS_UPSTREAM", "")
    make_image(store, [busybox_tar], tag="busybox")
    c = kobako.from_env()
    yield c
    for doc in ContainerStore(store).list():
        cli("rm", "-f", doc["Id"])
    for net in c.networks.list(filters={"type": "custom"}):
        net.remove()


def pool_33(*, gateway: str | None = None, iprange: str | None = None) -> IPAMPool:
    return IPAMPool(subnet="10.213.33.0/24", gateway=gateway, iprange=iprange)


def names(nets: list[Network]) -> list[str]:
    return [n.name for n in nets]


def test_create_get_list(client: Client) -> None:
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet="10.213.30.0/24", gateway="10.213.30.9")])
    net = client.networks.create("api-one", ipam=ipam, labels={"team": "kb"}, internal=True)
    assert isinstance(net, Network) and len(net.id) == 64 and net.short_id == net.id[:12]
    assert repr(net) == f"<Network: {net.short_id}>"
    assert net.attrs["IPAM"]["Config"] == [{"Subnet": "10.213.30.0/24", "Gateway": "10.213.30.9"}]
    assert net.attrs["Internal"] is True and net.attrs["Labels"] == {"team": "kb"}
    assert net.attrs["Containers"] == {} and net.containers == []

    # docker-py's plain dict form, and the defaults
    two = client.networks.create(
        "api-two",
        driver="bridge",
        ipam={"Driver": "default", "Config": [{"Subnet": "10.213.31.0/24"}]},
    )
    assert two.attrs["IPAM"]["Config"][0]["Gateway"] == "10.213.31.1"
    three = client.networks.create(
        "api-three", options={"com.docker.network.bridge.name": "kbt-three"}
    )
    assert three.attrs["Options"] == {"com.docker.network.bridge.name": "kbt-three"}

    assert client.networks.get("api-one") == net
    assert client.networks.get(net.id) == net
    assert client.networks.get(net.id[:10]).name == "api-one"
    assert names(client.networks.list()) == [
        "api-one",
        "api-three",
        "api-two",
        "bridge",
        "host",
        "none",
    ]
    assert names(client.networks.list(names=["api-t"])) == ["api-three", "api-two"]
    assert names(client.networks.list(ids=[two.id[:12]])) == ["api-two"]
    assert names(client.networks.list(filters={"label": "team=kb"})) == ["api-one"]
    assert names(client.networks.list(filters={"driver": "null"})) == ["none"]
    assert names(client.networks.list(filters={"type": ["builtin"]})) == ["bridge", "host", "none"]

    net.remove()
    with pytest.raises(NetworkNotFound):
        net.reload()
    with pytest.raises(NetworkNotFound):
        client.networks.get("api-one")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "api-dup"}, Conflict),
        ({"name": "x", "ipam": {"Config": [{"Subnet": "10.213.32.128/25"}]}}, Conflict),
        ({"name": "x", "ipam": {"Config": [{"Subnet": "10.213.33.1/24"}]}}, InvalidArgument),
        ({"name": "x", "ipam": IPAMConfig(pool_configs=[pool_33(gateway="10.1.1.1")])},
         InvalidArgument),
        ({"name": "x", "ipam": IPAMConfig(pool_configs=[pool_33(iprange="10.213.33.0/25")])},
         InvalidArgument),
        ({"name": "x", "ipam": IPAMConfig(driver="other")}, InvalidArgument),
        ({"name": "x", "ipam": {"Config": [{"Subnet": "10.213.33.0/24"}] * 2}}, InvalidArgument),
        ({"name": "x", "driver": "overlay"}, InvalidArgument),
        ({"name": "x", "options": {"mtu": "1400"}}, InvalidArgument),
        ({"name": "x", "enable_ipv6": True}, InvalidArgument),
        ({"name": "x", "scope": "swarm"}, InvalidArgument),
        ({"name": "x", "ingress": True}, InvalidArgument),
        ({"name": "no/slash"}, InvalidArgument),
    ],
)  # fmt: skip
def test_bad_create(client: Client, kwargs: dict[str, object], error: type[Exception]) -> None:
    client.networks.create("api-dup", ipam={"Config": [{"Subnet": "10.213.32.0/24"}]})
    with pytest.raises(error):
        client.networks.create(**kwargs)  # type: ignore[arg-type]
    assert names(client.networks.list(filters={"type": "custom"})) == ["api-dup"]


def test_bad_lookups(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
        client.networks.list(filters={"colour": "red"})
    with pytest.raises(NetworkNotFound):
        client.networks.get("nope")
    with pytest.raises(Conflict, match="pre-defined"):
        client.networks.get("bridge").remove()


@container
def test_containers_connect_disconnect_remove(client: Client) -> None:
    front = client.networks.create("api-front", ipam={"Config": [{"Subnet": "10.213.40.0/24"}]})
    back = client.networks.create("api-back", ipam={"Config": [{"Subnet": "10.213.41.0/24"}]})
    r = cli("run", "-d", "--name", "api-app", "--network", "api-front", "busybox", "sleep", "100")
    assert r.returncode == 0, r.stderr
    app = client.containers.get("api-app")

    assert front.containers == []  # as of its last reload
    front.reload()
    assert front.containers == [app]
    (entry,) = front.attrs["Containers"].values()
    assert entry["Name"] == "api-app" and entry["IPv4Address"].startswith("10.213.40.")

    back.connect(app, ipv4_address="10.213.41.7", aliases=["db"])
    back.reload()
    assert back.containers == [app]
    assert back.attrs["Containers"][app.id]["IPv4Address"] == "10.213.41.7/24"
    pid = str(app.attrs["State"]["Pid"])
    cmd = ["nsenter", "-t", pid, "-n", "ip", "-o", "-4", "addr", "show"]
    assert "inet 10.213.41.7/24" in subprocess.run(cmd, capture_output=True, text=True).stdout
    app.reload()
    assert app.attrs["NetworkSettings"]["Networks"]["api-back"]["Aliases"] == ["db"]
    with pytest.raises(Conflict):
        back.connect("api-app")
    with pytest.raises(ContainerNotFound):
        back.connect("no-such-container")

    with pytest.raises(Conflict, match="active endpoints"):
        back.remove()
    assert client.networks.prune() == {"NetworksDeleted": []}

    back.disconnect(app.id)
    back.reload()
    assert back.containers == [] and back.attrs["Containers"] == {}
    assert "10.213.41.7" not in subprocess.run(cmd, capture_output=True, text=True).stdout
    with pytest.raises(InvalidArgument, match="not connected"):
        back.disconnect(app)
    back.disconnect(app, force=True)
    back.remove()

    app.remove(force=True)
    front.reload()
    assert front.containers == []
    assert client.networks.prune() == {"NetworksDeleted": ["api-front"]}


def test_prune_by_label(client: Client) -> None:
    client.networks.create("api-a", labels={"keep": "no"})
    client.networks.create("api-b", labels={"keep": "yes"})
    client.networks.create("api-c")
    assert client.networks.prune(filters={"label": "keep=no"}) == {"NetworksDeleted": ["api-a"]}
    assert client.networks.prune(filters={"label": ["keep"]}) == {"NetworksDeleted": ["api-b"]}
    with pytest.raises(InvalidArgument):
        client.networks.prune(filters={"until": "1h"})
    assert client.networks.prune() == {"NetworksDeleted": ["api-c"]}
