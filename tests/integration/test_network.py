"""Container networking for real: bridges, veths, addresses, DNS by name, published ports,
isolation, and nothing left behind (links, nft elements, DNS answerers).

Traffic goes only to 127.0.0.0/8 and to the addresses of the containers these tests start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from kobako.image.store import ImageRecord, Store
from kobako.network.store import NetworkStore
from tests.conftest import kobako as cli
from tests.imagetools import make_image

pytestmark = pytest.mark.container

HTTPD = ("httpd", "-f", "-p", "80", "-h", "/etc")


@pytest.fixture
def image(store: Store, busybox_tar: bytes) -> ImageRecord:
    return make_image(
        store, [busybox_tar], tag="bb:1", config={"Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}}
    )


@pytest.fixture
def names(root: str, image: ImageRecord) -> Iterator[list[str]]:
    """Containers the test names here are force-removed at its end."""
    made: list[str] = []
    yield made
    if made:
        cli("rm", "-f", *made)


@pytest.fixture
def networks(store: Store, names: list[str]) -> Iterator[NetworkStore]:
    """The test's networks, removed at its end (after its containers)."""
    nets = NetworkStore(store)
    yield nets
    if names:
        cli("rm", "-f", *names)
        names.clear()
    for doc in nets.list():
        if doc["Name"] not in ("bridge", "host", "none"):
            nets.remove(doc["Id"])


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    r = cli("run", *args)
    return r


def _ok(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _ip(name: str, network: str | None = None) -> str:
    doc = json.loads(_ok("inspect", "--type", "container", name))[0]
    nets = doc["NetworkSettings"]["Networks"]
    return str((nets[network] if network else next(iter(nets.values())))["IPAddress"])


def _wget(url: str) -> tuple[str, ...]:
    """wget giving up after 3 s. Not as PID 1, which ignores timeout's SIGTERM (and busybox's
    ``wget -T`` crashes)."""
    return ("sh", "-c", f"timeout 3 wget -q -O- {url}; exit $?")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _dns_processes() -> set[str]:
    """The state dirs of running DNS answerers."""
    out = set()
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kobako.network.dns" in argv:
            out.add(argv[argv.index(b"kobako.network.dns") + 1].decode())
    return out


def _nft_table() -> str:
    r = subprocess.run(["nft", "list", "table", "ip", "kobako"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


@pytest.mark.v2  # also on Debian's 6.1 kernel
def test_default_bridge_gives_an_address_a_route_and_etc_files(names: list[str]) -> None:
    out = _ok(
        "run", "--rm", "--hostname", "box1", "--add-host", "db.test:10.1.2.3", "bb:1",
        "sh", "-c", "ip -4 -o addr show eth0; ip route; cat /etc/hosts /etc/hostname",
    )  # fmt: skip
    bridge = NetworkStore(Store.open(os.environ["KOBAKO_ROOT"])).get("bridge")
    gateway = bridge["IPAM"]["Config"][0]["Gateway"]
    assert f"default via {gateway} dev eth0" in out
    addr = out.split("inet ", 1)[1].split("/", 1)[0]
    assert f"{addr}\tbox1" in out
    assert "10.1.2.3\tdb.test" in out
    assert out.rstrip().endswith("box1")


def test_network_none_has_only_loopback(names: list[str]) -> None:
    assert _ok("run", "--rm", "--network", "none", "bb:1", "ls", "/sys/class/net").split() == ["lo"]


@pytest.mark.v2  # also on Debian's 6.1 kernel
def test_containers_reach_each_other_by_name_and_alias(
    networks: NetworkStore, names: list[str]
) -> None:
    networks.create("knet1")
    names.append("web1")
    _ok("run", "-d", "--name", "web1", "--network", "knet1", "--network-alias", "www", "bb:1",
        *HTTPD)  # fmt: skip
    out = _ok(
        "run", "--rm", "--network", "knet1", "bb:1",
        "sh", "-c", "wget -q -O- http://web1/hostname && wget -q -O- http://www/hostname",
    )  # fmt: skip
    cid = json.loads(_ok("inspect", "--type", "container", "web1"))[0]["Id"]
    assert out.split() == [cid[:12], cid[:12]]
    # the default bridge has no names, as Docker's
    r = _run("--rm", "bb:1", *_wget("http://web1/hostname"))
    assert r.returncode != 0


@pytest.mark.v2  # also on Debian's 6.1 kernel
def test_a_published_port_serves_the_host_on_localhost(names: list[str]) -> None:
    port = _free_port()
    names.append("pub1")
    _ok("run", "-d", "--name", "pub1", "-p", f"127.0.0.1:{port}:80", "bb:1", *HTTPD)
    cid = json.loads(_ok("inspect", "--type", "container", "pub1"))[0]["Id"]
    assert _get(f"http://127.0.0.1:{port}/hostname").strip() == cid[:12]
    assert _ok("port", "pub1").strip() == f"80/tcp -> 127.0.0.1:{port}"
    assert f"127.0.0.1 . {port}" in _nft_table()
    _ok("rm", "-f", "pub1")
    names.clear()
    assert f"127.0.0.1 . {port}" not in _nft_table()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2)


def test_publish_all_takes_free_host_ports_for_exposed_ones(names: list[str]) -> None:
    names.append("puball")
    _ok("run", "-d", "--name", "puball", "-P", "bb:1", *HTTPD)
    line = _ok("port", "puball", "80/tcp").strip()
    host_port = int(line.rsplit(":", 1)[1])
    assert host_port > 0
    cid = json.loads(_ok("inspect", "--type", "container", "puball"))[0]["Id"]
    assert _get(f"http://127.0.0.1:{host_port}/hostname").strip() == cid[:12]


def test_a_host_port_cannot_be_published_twice(names: list[str]) -> None:
    port = _free_port()
    names += ["dup1", "dup2"]
    _ok("run", "-d", "--name", "dup1", "-p", f"{port}:80", "bb:1", *HTTPD)
    r = _run("-d", "--name", "dup2", "-p", f"{port}:80", "bb:1", *HTTPD)
    assert r.returncode == 125
    assert str(port) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("veth")][1:]


@pytest.mark.v2  # also on Debian's 6.1 kernel
def test_two_user_networks_cannot_reach_each_other(
    networks: NetworkStore, names: list[str]
) -> None:
    networks.create("kiso-a")
    networks.create("kiso-b")
    names += ["srv-a", "srv-b"]
    _ok("run", "-d", "--name", "srv-a", "--network", "kiso-a", "bb:1", *HTTPD)
    _ok("run", "-d", "--name", "srv-b", "--network", "kiso-b", "bb:1", *HTTPD)
    ip_a, ip_b = _ip("srv-a"), _ip("srv-b")
    same = _run("--rm", "--network", "kiso-a", "bb:1", *_wget(f"http://{ip_a}/hostname"))
    assert same.returncode == 0, same.stderr
    other = _run("--rm", "--network", "kiso-a", "bb:1", *_wget(f"http://{ip_b}/hostname"))
    assert other.returncode != 0


def test_an_internal_network_has_no_way_out(networks: NetworkStore, names: list[str]) -> None:
    doc = networks.create("kint", internal=True)
    out = _ok("run", "--rm", "--network", "kint", "bb:1", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "inet 1" in out
    bridge = doc["Options"]["com.docker.network.bridge.name"]
    r = subprocess.run(
        ["nft", "list", "set", "ip", "kobako", "internal"], capture_output=True, text=True
    )
    assert bridge in r.stdout


def test_removal_leaves_no_link_rule_or_process(networks: NetworkStore, names: list[str]) -> None:
    doc = networks.create("kgone")
    bridge = doc["Options"]["com.docker.network.bridge.name"]
    port = _free_port()
    names.append("gone1")
    _ok("run", "-d", "--name", "gone1", "--network", "kgone", "-p", f"{port}:80", "bb:1", *HTTPD)
    ip = _ip("gone1")
    assert os.path.exists(f"/sys/class/net/{bridge}")
    assert any(bridge in d for d in _dns_processes())
    assert ip in _nft_table()
    _ok("rm", "-f", "gone1")
    names.clear()
    assert not any(bridge in d for d in _dns_processes())
    assert ip not in _nft_table()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("veth")]
    networks.remove("kgone")
    assert not os.path.exists(f"/sys/class/net/{bridge}")
    assert bridge not in _nft_table()
    assert "kgone" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


def test_twenty_concurrent_starts_get_distinct_addresses(
    networks: NetworkStore, names: list[str]
) -> None:
    networks.create("kmany")
    batch = [f"many{i}" for i in range(20)]
    names.extend(batch)

    def start(name: str) -> subprocess.CompletedProcess[str]:
        return _run("-d", "--name", name, "--network", "kmany", "bb:1", "sleep", "60")

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(start, batch))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    addresses = [_ip(n) for n in batch]
    assert len(set(addresses)) == 20 and all(addresses)


def test_ip_dns_and_search_options(networks: NetworkStore, names: list[str]) -> None:
    networks.create("kfixed", subnet="10.213.7.0/24")
    out = _ok(
        "run", "--rm", "--network", "kfixed", "--ip", "10.213.7.50", "--dns", "10.213.7.9",
        "--dns-search", "example.test", "--dns-option", "ndots:2", "bb:1",
        "sh", "-c", "ip -4 -o addr show eth0; cat /etc/resolv.conf",
    )  # fmt: skip
    assert "inet 10.213.7.50/24" in out
    assert "nameserver 10.213.7.9" in out
    assert "search example.test" in out and "options ndots:2" in out
    out = _ok("run", "--rm", "--network", "kfixed", "bb:1", "cat", "/etc/resolv.conf")
    assert out.startswith("nameserver 10.213.7.1\n")  # its network's DNS answerer
    names.append("fixed1")
    _ok("run", "-d", "--name", "fixed1", "--network", "kfixed", "--ip", "10.213.7.50", "bb:1",
        "sleep", "60")  # fmt: skip
    r = _run("--rm", "--network", "kfixed", "--ip", "10.213.7.50", "bb:1", "true")
    assert r.returncode == 125 and "10.213.7.50" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_network_container_mode_shares_the_namespace(names: list[str]) -> None:
    names.append("shared1")
    _ok("run", "-d", "--name", "shared1", "bb:1", *HTTPD)
    out = _ok("run", "--rm", "--network", "container:shared1", "bb:1",
              "wget", "-q", "-O-", "http://127.0.0.1/hostname")  # fmt: skip
    cid = json.loads(_ok("inspect", "--type", "container", "shared1"))[0]["Id"]
    assert out.strip() == cid[:12]


def test_connect_and_disconnect_a_running_container(
    networks: NetworkStore, names: list[str]
) -> None:
    networks.create("kconn")
    names.append("conn1")
    _ok("run", "-d", "--name", "conn1", "bb:1", *HTTPD)
    from kobako.network.connect import connect, disconnect

    store = Store.open(os.environ["KOBAKO_ROOT"])
    connect(store, "conn1", "kconn", aliases=("c1",))
    ip = _ip("conn1", "kconn")
    assert ip in _ok("exec", "conn1", "ip", "-4", "-o", "addr", "show", "eth1")
    out = _ok(
        "run", "--rm", "--network", "kconn", "bb:1", "wget", "-q", "-O-", "http://c1/hostname"
    )
    assert out.strip()
    disconnect(store, "conn1", "kconn")
    assert "eth1" not in _ok("exec", "conn1", "ls", "/sys/class/net")
    assert (
        "kconn"
        not in json.loads(_ok("inspect", "--type", "container", "conn1"))[0]["NetworkSettings"][
            "Networks"
        ]
    )


def test_a_crash_is_cleaned_up_by_the_next_command(
    networks: NetworkStore, names: list[str]
) -> None:
    networks.create("kcrash")
    port = _free_port()
    names.append("crash1")
    _ok("run", "-d", "--name", "crash1", "--network", "kcrash", "-p", f"{port}:80", "bb:1", *HTTPD)
    state = json.loads(_ok("inspect", "--type", "container", "crash1"))[0]["State"]
    ip = _ip("crash1")
    os.kill(state["MonitorPid"], signal.SIGKILL)
    os.kill(state["Pid"], signal.SIGKILL)
    time.sleep(0.3)
    # the next command that looks at it settles it, which removes its network
    _ok("ps", "-a")
    assert ip not in _nft_table()
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith("veth")]
    assert not any("kb-" in d for d in _dns_processes() if networks.get("kcrash")["Id"][:12] in d)


class _FakeUpstream:
    """A DNS server on 127.0.0.1 answering every A query with 10.213.99.99."""

    def __init__(self) -> None:
        from dnslib import RR, A, DNSRecord  # type: ignore[import-untyped]

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []

        def serve() -> None:
            while True:
                try:
                    data, peer = self.sock.recvfrom(4096)
                except OSError:
                    return
                if not data:  # shut down by close()
                    return
                q = DNSRecord.parse(data)
                self.queries.append(str(q.q.qname))
                reply = q.reply()
                reply.add_answer(RR(q.q.qname, rdata=A("10.213.99.99"), ttl=60))
                self.sock.sendto(reply.pack(), peer)

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_other_names_are_forwarded_to_the_upstream(
    networks: NetworkStore, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = _FakeUpstream()
    try:
        monkeypatch.setenv("KOBAKO_DNS_UPSTREAM", f"127.0.0.1:{upstream.port}")
        networks.create("kfwd")
        out = _ok("run", "--rm", "--network", "kfwd", "bb:1", "nslookup", "far.example.test")
        assert "10.213.99.99" in out
        assert any("far.example.test" in q for q in upstream.queries)
    finally:
        upstream.close()


def test_bad_network_input_is_one_line(names: list[str]) -> None:
    for args in (
        ("--network", "nosuchnet"),
        ("-p", "notaport"),
        ("-p", "80:80", "--network", "host"),
        ("--ip", "10.0.0.5"),
        ("--add-host", "nohostip"),
        ("--dns", "not-an-ip"),
    ):
        r = _run("--rm", *args, "bb:1", "true")
        assert r.returncode == 125, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_api_run_with_ports_and_network(networks: NetworkStore, names: list[str]) -> None:
    import kobako

    networks.create("kapi")
    client = kobako.Client(os.environ["KOBAKO_ROOT"])
    port = _free_port()
    names.append("api1")
    c = client.containers.run(
        "bb:1", list(HTTPD), name="api1", detach=True, network="kapi",
        ports={"80/tcp": ("127.0.0.1", port)},
    )  # fmt: skip
    assert _get(f"http://127.0.0.1:{port}/hostname").strip() == c.id[:12]
    c.reload()
    assert c.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert c.attrs["NetworkSettings"]["Networks"]["kapi"]["IPAddress"]
    net = client.networks.get("kapi")
    assert [x.id for x in net.containers] == [c.id]
    out = client.containers.run(
        "bb:1", ["wget", "-q", "-O-", "http://api1/hostname"], network="kapi", remove=True
    )
    assert out.decode().strip() == c.id[:12]
    with pytest.raises(kobako.errors.InvalidArgument):
        client.containers.run("bb:1", "true", network="kapi", network_mode="host")


def test_a_user_namespace_on_the_default_bridge(names: list[str]) -> None:
    """The namespace is made before the clone, in the host's user namespace, where the
    container's root may not mount sysfs: the host's is bound read-only, as runc does."""
    import shutil
    import tempfile

    from kobako.fixtures import busybox_rootfs

    names.append("userns-web")
    _ok("run", "-d", "--name", "userns-web", "bb:1", *HTTPD)
    web = _ip("userns-web")
    top = tempfile.mkdtemp(prefix="kobako-userns-")
    try:
        os.chmod(top, 0o755)  # the mapped root (host uid 100000) must reach the rootfs
        rootfs = busybox_rootfs(os.path.join(top, "rootfs"))
        script = (
            "id -u; ip -4 -o addr show eth0 | wc -l; touch /sys/x 2>/dev/null || echo ro; "
            f"wget -q -O- http://{web}/hostname"
        )
        maps = ("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536")
        out = _ok("run", "--rm", *maps, "--rootfs", str(rootfs), "sh", "-c", script)
    finally:
        shutil.rmtree(top)
    cid = json.loads(_ok("inspect", "--type", "container", "userns-web"))[0]["Id"]
    assert out.split() == ["0", "1", "ro", cid[:12]]
