"""``kobako network``: create, ls, inspect, rm, connect, disconnect, prune, and what rm leaves.

Traffic: none. The containers only sleep; their DNS answerer gets no upstream
(``KOBAKO_DNS_UPSTREAM`` empty), so nothing can be forwarded to the host's resolvers.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from kobako.image.store import Store
from kobako.network.store import PREDEFINED, NetworkStore
from kobako.runtime.containers import ContainerStore
from tests.conftest import KOBAKO
from tests.conftest import kobako as cli
from tests.imagetools import make_image

container = pytest.mark.container

HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@pytest.fixture
def networks(
    store: Store, busybox_tar: bytes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NetworkStore]:
    """The test store's networks, with a ``busybox`` image; every container and user network
    the test made is removed afterwards."""
    monkeypatch.setenv("KOBAKO_DNS_UPSTREAM", "")
    make_image(store, [busybox_tar], tag="busybox")
    nets = NetworkStore(store)
    yield nets
    for doc in ContainerStore(store).list():
        cli("rm", "-f", doc["Id"])
    for doc in nets.list():
        if doc["Name"] not in PREDEFINED:
            nets.remove(doc["Id"])


def ok(*args: str, input: bytes | None = None) -> str:
    r = cli(*args, input=input)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def one_line(r: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    """``r`` failed with ``code`` and said one line holding every one of ``parts``."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("kobako: "), r.stderr
    for part in parts:
        assert part in r.stderr, (part, r.stderr)


def bridge(nets: NetworkStore, name: str) -> str:
    return str(nets.get(name)["Options"]["com.docker.network.bridge.name"])


def subnet(nets: NetworkStore, name: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(nets.get(name)["IPAM"]["Config"][0]["Subnet"])


def host_routes() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True)
    nets = []
    for line in out.stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            nets.append(ipaddress.IPv4Network(dest, strict=False))
    return nets


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def nft_table() -> str:
    r = subprocess.run(["nft", "list", "table", "ip", "kobako"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def processes() -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


# -- create, ls, inspect, rm ------------------------------------------------------------------


def test_create_ls_inspect_rm(networks: NetworkStore) -> None:
    nid = ok("network", "create", "--label", "team=kb", "alpha").strip()
    assert HEX64.match(nid)
    bid = ok(
        "network", "create", "--subnet", "10.213.7.0/24", "--gateway", "10.213.7.254",
        "--internal", "-o", "com.docker.network.bridge.name=kbt-beta", "beta",
    ).strip()  # fmt: skip

    table = ok("network", "ls").splitlines()
    assert table[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    rows = [line.split() for line in table[1:]]
    assert [r[1] for r in rows] == ["alpha", "beta", "bridge", "host", "none"]
    assert rows[0] == [nid[:12], "alpha", "bridge", "local"]
    assert rows[3][2:] == ["host", "local"] and rows[4][2:] == ["null", "local"]
    assert ok("network", "list", "-q", "--filter", "name=alp") == nid[:12] + "\n"
    assert ok("network", "ls", "-q", "--no-trunc", "-f", "label=team=kb") == nid + "\n"
    assert ok("network", "ls", "-q", "-f", f"id={bid[:10]}") == bid[:12] + "\n"
    assert ok("network", "ls", "--format", "{{.Name}}", "-f", "driver=null") == "none\n"
    assert ok("network", "ls", "--format", "{{.Name}}", "-f", "type=custom") == "alpha\nbeta\n"
    (row,) = [
        json.loads(x)
        for x in ok("network", "ls", "--format", "json", "-f", "name=beta").splitlines()
    ]
    assert row["ID"] == bid[:12] and row["Internal"] == "true" and row["Name"] == "beta"
    assert {"CreatedAt", "Driver", "IPv6", "Labels", "Scope"} <= set(row)

    (doc,) = json.loads(ok("network", "inspect", "beta"))
    assert list(doc) == [
        "Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
        "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels",
    ]  # fmt: skip
    assert doc["Id"] == bid and doc["Internal"] is True and doc["Containers"] == {}
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.213.7.0/24", "Gateway": "10.213.7.254"}]
    assert doc["Options"] == {"com.docker.network.bridge.name": "kbt-beta"}
    assert (
        ok("network", "inspect", "-f", "{{.Name}} {{.Labels}}", nid[:8]) == "alpha map[team:kb]\n"
    )
    r = cli("network", "inspect", "alpha", "nope")
    assert r.returncode == 1 and r.stderr == "kobako: No such network: nope\n"
    assert json.loads(r.stdout)[0]["Name"] == "alpha"

    r = cli("network", "rm", "alpha", "nope", bid[:12])
    assert (r.returncode, r.stdout) == (1, f"alpha\n{bid[:12]}\n")
    assert r.stderr == "kobako: network nope not found\n"
    assert cli("network", "rm", "-f", "nope").returncode == 0
    assert ok("network", "ls", "--format", "{{.Name}}") == "bridge\nhost\nnone\n"


def test_usage() -> None:
    assert "  network     Manage networks\n" in ok("--help")
    out = ok("network")
    assert out.startswith("Usage:  kobako network COMMAND\n")
    for verb in ("connect", "create", "disconnect", "inspect", "ls", "prune", "rm"):
        assert f"\n  {verb} " in out
    assert "--subnet" in ok("network", "create", "--help")
    one_line(cli("network", "frob"), 125, "'kobako network frob' is not a kobako command")


# -- bad input: one line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("create", "taken"), 125, "network with name taken already exists"),
        (("create", "--subnet", "10.213.8.128/25", "x"), 125, "Pool overlaps"),
        (("create", "--subnet", "10.213.9.1/24", "x"), 125, "invalid subnet 10.213.9.1/24"),
        (("create", "--subnet", "not-a-net", "x"), 125, "invalid subnet not-a-net"),
        (("create", "--subnet", "10.213.9.0/24", "--gateway", "10.213.10.1", "x"), 125,
         "gateway 10.213.10.1 is not a host address of 10.213.9.0/24"),
        (("create", "--gateway", "10.213.9.1", "x"), 125, "a gateway needs a subnet"),
        (("create", "--subnet", "10.213.9.0/24", "--subnet", "10.213.10.0/24", "x"), 125,
         "only one --subnet"),
        (("create", "-d", "overlay", "x"), 125, 'plugin "overlay" not found'),
        (("create", "-o", "mtu=1400", "x"), 125, "network options not supported: mtu"),
        (("create", "bad/name"), 125, "invalid network name"),
        (("create",), 125, "requires exactly 1 argument"),
        (("ls", "-f", "colour=red"), 125, "invalid filter 'colour'"),
        (("ls", "-f", "type=odd"), 125, "invalid filter"),
        (("rm", "bridge"), 1, "bridge is a pre-defined network and cannot be removed"),
        (("rm", "host"), 1, "host is a pre-defined network and cannot be removed"),
        (("rm", "nope"), 1, "network nope not found"),
        (("inspect", "nope"), 1, "No such network: nope"),
        (("connect", "nope", "c"), 125, "network nope not found"),
        (("connect", "taken", "no-such-container"), 125, "No such container: no-such-container"),
        (("connect", "taken"), 125, "requires exactly 2 arguments"),
        (("disconnect", "nope", "c"), 125, "network nope not found"),
        (("prune", "-f", "--filter", "until=1h"), 125, "invalid filter 'until'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    networks: NetworkStore, args: tuple[str, ...], code: int, message: str
) -> None:
    ok("network", "create", "--subnet", "10.213.8.0/24", "taken")
    before = [d["Id"] for d in networks.list()]
    one_line(cli("network", *args), code, message)
    assert [d["Id"] for d in networks.list()] == before


def test_create_picks_a_subnet_off_the_host_routes_and_other_networks(
    networks: NetworkStore,
) -> None:
    routes = host_routes()
    for name in ("one", "two", "three"):
        ok("network", "create", name)
    chosen = [subnet(networks, n) for n in ("one", "two", "three")]
    for net in chosen:
        assert not any(net.overlaps(r) for r in routes), (net, routes)
        others = [subnet(networks, d["Name"]) for d in networks.list() if d["Driver"] == "bridge"]
        assert sum(net.overlaps(o) for o in others) == 1, (net, others)  # itself only
    # in a network namespace of its own whose routes cover all of 172.16.0.0/12, the next
    # subnet comes from 192.168.0.0/16 (and nothing on the host's links changes)
    script = (
        "ip link add kbt0 type bridge && ip link set kbt0 up && "
        "ip addr add 172.16.0.1/12 dev kbt0 && "
        f"{KOBAKO} network create four && ip -4 route show"
    )
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "172.16.0.0/12 dev kbt0" in r.stdout
    four = subnet(networks, "four")
    assert four.subnet_of(ipaddress.IPv4Network("192.168.0.0/16")), four
    assert not any(four.overlaps(n) for n in chosen)


# -- with containers --------------------------------------------------------------------------


@container
def test_rm_refuses_a_network_in_use_and_then_leaves_nothing(networks: NetworkStore) -> None:
    nid = ok("network", "create", "used").strip()
    br = bridge(networks, "used")
    cid = ok("run", "-d", "--name", "sleeper", "--network", "used", "busybox", "sleep", "100")
    cid = cid.strip()
    assert br in links()
    assert br in nft_table()
    assert any(br in p or nid in p for p in processes() if "kobako.network.dns" in p)

    (doc,) = json.loads(ok("network", "inspect", "used"))
    (entry,) = doc["Containers"].items()
    assert entry[0] == cid
    assert entry[1]["Name"] == "sleeper" and entry[1]["IPv6Address"] == ""
    assert HEX64.match(entry[1]["EndpointID"])
    ip, _, prefix = entry[1]["IPv4Address"].partition("/")
    assert ipaddress.IPv4Address(ip) in subnet(networks, "used")
    assert int(prefix) == subnet(networks, "used").prefixlen
    assert entry[1]["MacAddress"].startswith("02:42:")

    r = cli("network", "rm", "used")
    one_line(r, 1, "network used", "has active endpoints", "sleeper")
    assert r.stdout == ""
    assert cli("network", "prune", "-f").stdout == ""

    ok("stop", "-t", "0", "sleeper")
    assert json.loads(ok("network", "inspect", "-f", "{{json .Containers}}", "used")) == {}
    ok("rm", "sleeper")
    assert ok("network", "rm", "used") == "used\n"
    assert br not in links()
    assert br not in nft_table()
    assert not any(br in p or nid in p for p in processes())


@container
def test_connect_and_disconnect(networks: NetworkStore) -> None:
    ok("network", "create", "--subnet", "10.213.20.0/24", "front")
    ok("network", "create", "--subnet", "10.213.21.0/24", "back")
    ok("run", "-d", "--name", "app", "--network", "front", "busybox", "sleep", "100")
    pid = ok("inspect", "-f", "{{.State.Pid}}", "app").strip()

    def addresses() -> str:
        cmd = ["nsenter", "-t", pid, "-n", "ip", "-o", "-4", "addr", "show"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    assert ok("network", "connect", "--ip", "10.213.21.50", "--alias", "api", "back", "app") == ""
    assert "inet 10.213.21.50/24" in addresses()
    (doc,) = json.loads(ok("network", "inspect", "back"))
    (entry,) = doc["Containers"].values()
    assert (entry["Name"], entry["IPv4Address"]) == ("app", "10.213.21.50/24")
    settings = json.loads(ok("inspect", "-f", "{{json .NetworkSettings.Networks}}", "app"))
    assert settings["back"]["IPAddress"] == "10.213.21.50"
    assert settings["back"]["Aliases"] == ["api"]

    one_line(cli("network", "connect", "back", "app"), 125, "already exists in network back")
    one_line(cli("network", "connect", "--ip", "10.9.9.9", "front", "app"), 125)
    one_line(cli("network", "connect", "--ip", "10.213.22.1", "none", "app"), 125)

    assert ok("network", "disconnect", "back", "app") == ""
    assert "10.213.21.50" not in addresses()
    assert "inet 10.213.20." in addresses()
    assert json.loads(ok("network", "inspect", "-f", "{{json .Containers}}", "back")) == {}
    one_line(cli("network", "disconnect", "back", "app"), 125, "is not connected to network back")
    assert cli("network", "disconnect", "-f", "back", "app").returncode == 0
    assert ok("network", "rm", "back") == "back\n"


@container
def test_connect_a_stopped_container(networks: NetworkStore) -> None:
    ok("network", "create", "--subnet", "10.213.23.0/24", "first")
    ok("network", "create", "--subnet", "10.213.24.0/24", "later")
    ok("create", "--name", "idle", "--network", "first", "busybox", "true")
    ok("network", "connect", "later", "idle")
    settings = json.loads(ok("inspect", "-f", "{{json .NetworkSettings.Networks}}", "idle"))
    assert sorted(settings) == ["first", "later"]
    assert settings["later"]["IPAddress"] == ""
    assert json.loads(ok("network", "inspect", "-f", "{{json .Containers}}", "later")) == {}
    # as in Docker, a stopped container does not hold its networks: it fails to start then
    assert ok("network", "rm", "later") == "later\n"
    one_line(cli("start", "idle"), 1, "network later not found")
    ok("network", "disconnect", "-f", "later", "idle")


@container
def test_prune(networks: NetworkStore) -> None:
    ok("network", "create", "--label", "keep=1", "p-labelled")
    ok("network", "create", "p-free")
    ok("network", "create", "p-used")
    ok("create", "--name", "user", "--network", "p-used", "busybox", "true")

    r = cli("network", "prune", input=b"n\n")
    assert r.returncode == 0
    assert r.stdout == (
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert len(networks.list()) == 6
    assert ok("network", "prune", "-f", "--filter", "label=keep=1") == (
        "Deleted Networks:\np-labelled\n\n"
    )
    out = ok("network", "prune", input=b"y\n")
    assert out.endswith("[y/N] Deleted Networks:\np-free\np-used\n\n")
    assert ok("network", "prune", "-f") == ""
    assert [d["Name"] for d in networks.list()] == ["bridge", "host", "none"]
