"""kobako's nftables table for real: NAT, isolation, internal networks and published ports.

Each test builds its own scene with ``ip``: bridges ``kbt-*`` on unused 10.213.N.0/24
subnets, network namespaces plugged into them by veth pairs (address .2, default route via
the bridge's .1), and a tiny server in each namespace that answers every TCP connection and
UDP datagram with its name and the address it saw the client at. Traffic goes only to
127.0.0.0/8 and to these addresses. Each test has a table of its own (``kbt_*`` as
:data:`firewall.TABLE`), so kobako's real table, which its default bridge keeps, is left
alone; everything is removed afterwards, ``net.ipv4.ip_forward`` restored.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kobako.errors import Conflict, InvalidArgument, NetworkError
from kobako.network import firewall
from kobako.network.firewall import PortMapping

SERVER = r"""
import selectors, socket, sys
name, port = sys.argv[1], int(sys.argv[2])
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", port))
tcp.listen(16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))
sel = selectors.DefaultSelector()
sel.register(tcp, selectors.EVENT_READ)
sel.register(udp, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is tcp:
            conn, peer = tcp.accept()
            conn.sendall(f"{name} {peer[0]}".encode())
            conn.close()
        else:
            _, peer = udp.recvfrom(512)
            udp.sendto(f"{name} {peer[0]}".encode(), peer)
"""

#: The port the servers listen on in their namespace.
PORT = 8000

#: How long a connection that should be dropped is given.
BLOCKED = 0.5


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    """A port nothing on the host listens on (TCP and UDP)."""
    while True:
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port


def ask(host: str, port: int, timeout: float = 2.0) -> str:
    """The answer of whatever listens at ``host:port`` over TCP, from the host."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        return s.recv(256).decode()


def ask_udp(host: str, port: int, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"?", (host, port))
        return s.recv(256).decode()


def unreachable(host: str, port: int) -> bool:
    """Whether a TCP connection from the host to ``host:port`` fails."""
    try:
        ask(host, port, BLOCKED)
    except OSError:
        return True
    return False


@dataclass
class Net:
    bridge: str
    subnet: str
    gateway: str
    prefix: str  # "10.213.N."


@dataclass
class Ns:
    name: str
    ip: str

    def ask(self, host: str, port: int, timeout: float = 2.0) -> str:
        """What ``host:port`` answers over TCP from inside this namespace; "" on failure."""
        code = (
            "import socket, sys\n"
            "try:\n"
            f"    s = socket.create_connection(({host!r}, {port}), timeout={timeout})\n"
            "    print(s.recv(256).decode())\n"
            "except OSError:\n"
            "    pass\n"
        )
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-c", code]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Scene:
    """Links, namespaces and servers a test made; :meth:`close` removes them all."""

    links: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def net(self, internal: bool = False, add: bool = True) -> Net:
        """A bridge on an unused 10.213.N.0/24, with .1; its firewall set up if ``add``."""
        routes = run("ip", "-4", "route", "show", "table", "all")
        while True:
            prefix = f"10.213.{secrets.randbelow(250) + 1}."
            if prefix not in routes:
                break
        bridge = f"kbt-{secrets.token_hex(4)}"
        run("ip", "link", "add", bridge, "type", "bridge")
        self.links.append(bridge)
        run("ip", "addr", "add", f"{prefix}1/24", "dev", bridge)
        run("ip", "link", "set", bridge, "up")
        net = Net(bridge, f"{prefix}0/24", f"{prefix}1", prefix)
        if add:
            firewall.add_network(net.bridge, net.subnet, internal)
        return net

    def ns(self, net: Net, host: int = 2) -> Ns:
        """A namespace at ``net``'s .``host`` with a server on :data:`PORT`."""
        name = f"kbt-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        outer = f"kbv-{secrets.token_hex(4)}"
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.links.append(outer)
        run("ip", "link", "set", outer, "master", net.bridge, "up")
        # for hairpin: with br_netfilter, DNAT back into the bridge is bridged to the port
        run("ip", "link", "set", outer, "type", "bridge_slave", "hairpin", "on")
        ip = f"{net.prefix}{host}"
        run("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", name, "route", "add", "default", "via", net.gateway)
        self.serve(name, name)
        return Ns(name, ip)

    def outside(self) -> Ns:
        """A namespace on a plain veth from the host (no bridge): somewhere "outside" that
        kobako's networks reach by forwarding and masquerade. It has no route back to them."""
        routes = run("ip", "-4", "route", "show", "table", "all")
        while True:
            prefix = f"10.213.{secrets.randbelow(250) + 1}."
            if prefix not in routes:
                break
        name = f"kbt-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        outer = f"kbv-{secrets.token_hex(4)}"
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.links.append(outer)
        run("ip", "addr", "add", f"{prefix}1/30", "dev", outer)
        run("ip", "link", "set", outer, "up")
        run("ip", "-n", name, "addr", "add", f"{prefix}2/30", "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")
        self.serve(name, "outside")
        return Ns(name, f"{prefix}2")

    def serve(self, namespace: str, name: str) -> None:
        argv = ["ip", "netns", "exec", namespace, sys.executable, "-c", SERVER, name, str(PORT)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.servers.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def table_exists() -> bool:
    done = subprocess.run(["nft", "list", "table", "ip", firewall.TABLE], capture_output=True)
    return done.returncode == 0


def table_text() -> str:
    return run("nft", "list", "table", "ip", firewall.TABLE)


@pytest.fixture
def scene(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """A scene and a table of the test's own; both removed, ip_forward restored after."""
    monkeypatch.setattr(firewall, "TABLE", f"kbt_{secrets.token_hex(4)}")
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read()
    made = Scene()
    try:
        yield made
    finally:
        made.close()
        subprocess.run(["nft", "delete", "table", "ip", firewall.TABLE], capture_output=True)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(forward)
        leftovers = [n for n in run("ip", "-o", "link").split() if n.startswith(("kbt-", "kbv-"))]
        assert not leftovers


@pytest.fixture
def published_port(scene: Scene) -> Callable[..., tuple[Net, Ns, int]]:
    """A network with one namespace whose :data:`PORT` is published on a free host port."""

    def make(host_ip: str = "0.0.0.0", proto: str = "tcp") -> tuple[Net, Ns, int]:
        net = scene.net()
        ns = scene.ns(net)
        port = free_port()
        firewall.add_ports(ns.ip, [PortMapping(proto, host_ip, port, PORT)])
        return net, ns, port

    return make


def test_network_rules_present_then_removed(scene: Scene) -> None:
    net = scene.net()
    text = table_text()
    assert f'"{net.bridge}"' in text
    assert net.subnet in text
    assert "masquerade" in text
    assert "fib daddr type local" in text
    with open(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet") as f:
        assert f.read().strip() == "1"
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"
    firewall.add_network(net.bridge, net.subnet, False)  # idempotent: one copy of each rule
    assert table_text() == text
    firewall.remove_network(net.bridge, net.subnet)
    assert not table_exists()
    firewall.remove_network(net.bridge, net.subnet)  # harmless when gone
    firewall.remove_all()


def test_remove_one_network_of_two(scene: Scene) -> None:
    one, two = scene.net(), scene.net(internal=True)
    ns = scene.ns(one)
    firewall.add_ports(ns.ip, [PortMapping("tcp", "0.0.0.0", free_port(), PORT)])
    firewall.remove_network(one.bridge, one.subnet)
    text = table_text()
    assert one.bridge not in text and one.subnet not in text
    assert f'"{two.bridge}"' in text and two.subnet in text
    assert firewall.published() == {}  # its ports went with it
    firewall.remove_all()
    assert not table_exists()
    assert firewall.published() == {}
    firewall.remove_all()  # harmless when gone


def test_published_port_reachable_from_host(
    published_port: Callable[..., tuple[Net, Ns, int]],
) -> None:
    net, ns, port = published_port()
    assert ask("127.0.0.1", port) == f"{ns.name} {net.gateway}"  # masqueraded out the bridge
    assert ask("127.0.0.2", port).startswith(ns.name)
    assert ask(net.gateway, port).startswith(ns.name)
    assert firewall.published() == {("tcp", "0.0.0.0", port): (ns.ip, PORT)}
    assert f"{ns.ip} . {PORT}" in table_text()
    firewall.remove_ports(ns.ip, [PortMapping("tcp", "0.0.0.0", port, PORT)])
    assert firewall.published() == {}
    assert unreachable("127.0.0.1", port)
    assert unreachable(net.gateway, port)
    firewall.remove_ports(ns.ip, [PortMapping("tcp", "0.0.0.0", port, PORT)])  # already gone


def test_udp_port(published_port: Callable[..., tuple[Net, Ns, int]]) -> None:
    _, ns, port = published_port(proto="udp")
    assert ask_udp("127.0.0.1", port).startswith(ns.name)
    assert firewall.published() == {("udp", "0.0.0.0", port): (ns.ip, PORT)}
    assert unreachable("127.0.0.1", port)  # not on TCP


def test_specific_host_ip(published_port: Callable[..., tuple[Net, Ns, int]]) -> None:
    net, ns, port = published_port(host_ip="127.0.0.1")
    assert ask("127.0.0.1", port).startswith(ns.name)
    assert unreachable("127.0.0.2", port)
    assert unreachable(net.gateway, port)
    assert firewall.published() == {("tcp", "127.0.0.1", port): (ns.ip, PORT)}


def test_hairpin_and_from_another_network(
    scene: Scene, published_port: Callable[..., tuple[Net, Ns, int]]
) -> None:
    net, ns, port = published_port()
    # the container reaches its own published port through the host's address
    assert ns.ask(net.gateway, port) == f"{ns.name} {net.gateway}"
    # so does a container on another network (the published port is the host's)
    other = scene.net()
    client = scene.ns(other)
    assert ns.ask(other.gateway, port).startswith(ns.name)
    assert client.ask(other.gateway, port) == f"{ns.name} {client.ip}"


def test_duplicate_publish_refused(published_port: Callable[..., tuple[Net, Ns, int]]) -> None:
    net, ns, port = published_port()
    mapping = PortMapping("tcp", "0.0.0.0", port, PORT)
    firewall.add_ports(ns.ip, [mapping])  # the same again: nothing to do
    with pytest.raises(Conflict, match=rf"^port {port}/tcp is already published to {ns.ip}:"):
        firewall.add_ports(f"{net.prefix}3", [mapping])
    with pytest.raises(Conflict, match=f"port {port}/tcp"):
        firewall.add_ports(ns.ip, [PortMapping("tcp", "0.0.0.0", port, PORT + 1)])
    with pytest.raises(Conflict, match=f"port {port}/tcp"):
        firewall.add_ports(f"{net.prefix}3", [PortMapping("tcp", "127.0.0.1", port, PORT)])
    # all or nothing: a free port asked for with a taken one is not published either
    free = free_port()
    with pytest.raises(Conflict):
        firewall.add_ports(f"{net.prefix}3", [PortMapping("tcp", "0.0.0.0", free, 80), mapping])
    # a specific address first, then 0.0.0.0 on the same port
    specific = PortMapping("tcp", "127.0.0.1", free, PORT)
    firewall.add_ports(ns.ip, [specific])
    with pytest.raises(Conflict, match=f"^port {free}/tcp is already published on 127.0.0.1"):
        firewall.add_ports(f"{net.prefix}3", [PortMapping("tcp", "0.0.0.0", free, PORT)])
    firewall.add_ports(f"{net.prefix}3", [PortMapping("tcp", net.gateway, free, PORT)])
    firewall.add_ports(f"{net.prefix}3", [PortMapping("udp", "0.0.0.0", port, PORT)])
    with pytest.raises(Conflict):  # clashing within one request
        firewall.add_ports(
            ns.ip, [PortMapping("udp", "0.0.0.0", free, 1), PortMapping("udp", "0.0.0.0", free, 2)]
        )
    assert firewall.published() == {
        ("tcp", "0.0.0.0", port): (ns.ip, PORT),
        ("tcp", "127.0.0.1", free): (ns.ip, PORT),
        ("tcp", net.gateway, free): (f"{net.prefix}3", PORT),
        ("udp", "0.0.0.0", port): (f"{net.prefix}3", PORT),
    }
    # another container's mapping of the same port is not withdrawn
    firewall.remove_ports(f"{net.prefix}3", [mapping])
    assert ("tcp", "0.0.0.0", port) in firewall.published()


def test_any_address_withdrawn_if_a_specific_one_came_first(
    published_port: Callable[..., tuple[Net, Ns, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the kernel cannot see: 0.0.0.0 published while a specific address holds the
    port (played here by hiding the specific one from the first look)."""
    net, ns, port = published_port(host_ip="127.0.0.1")
    real = firewall._port_entries
    looks = iter([{}])
    monkeypatch.setattr(firewall, "_port_entries", lambda doc: next(looks, None) or real(doc))
    with pytest.raises(Conflict, match=f"^port {port}/tcp is already published on 127.0.0.1"):
        firewall.add_ports(f"{net.prefix}3", [PortMapping("tcp", "0.0.0.0", port, PORT)])
    assert firewall.published() == {("tcp", "127.0.0.1", port): (ns.ip, PORT)}


def test_ports_without_a_network(scene: Scene) -> None:
    firewall.add_ports("10.213.0.2", [PortMapping("udp", "127.0.0.1", 5353, 53)])
    assert firewall.published() == {("udp", "127.0.0.1", 5353): ("10.213.0.2", 53)}
    firewall.remove_ports("10.213.0.2", [PortMapping("udp", "127.0.0.1", 5353, 53)])
    assert firewall.published() == {}


def test_networks_isolated(scene: Scene) -> None:
    one, two = scene.net(), scene.net()
    a, b = scene.ns(one), scene.ns(two)
    a2 = scene.ns(one, host=3)
    assert b.ask(a.ip, PORT, BLOCKED) == ""
    assert a.ask(b.ip, PORT, BLOCKED) == ""
    assert a2.ask(a.ip, PORT) == f"{a.name} {a2.ip}"  # within a network, as it was


def test_outbound_masquerade_and_internal(scene: Scene) -> None:
    outside = scene.outside()
    open_net, closed = scene.net(), scene.net(internal=True)
    a, c = scene.ns(open_net), scene.ns(closed)
    c2 = scene.ns(closed, host=3)
    answer = a.ask(outside.ip, PORT)
    assert answer.startswith("outside ") and answer != f"outside {a.ip}"  # masqueraded
    assert c.ask(outside.ip, PORT, BLOCKED) == ""
    assert c.ask(a.ip, PORT, BLOCKED) == ""
    assert a.ask(c.ip, PORT, BLOCKED) == ""
    assert c2.ask(c.ip, PORT) == f"{c.name} {c2.ip}"  # within the internal network
    assert c.ask(closed.gateway, 1, BLOCKED) == ""  # the host itself is still reachable
    firewall.remove_network(open_net.bridge, open_net.subnet)
    assert a.ask(outside.ip, PORT, BLOCKED) == ""  # no masquerade: no way back


def test_loopback_closed_to_containers(scene: Scene) -> None:
    """route_localnet on the bridge must not let a container reach the host's 127.0.0.1."""
    net = scene.net()
    ns = scene.ns(net)
    run("ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1")
    run("ip", "-n", ns.name, "route", "del", "local", "127.0.0.0/8", "table", "local")
    run("ip", "-n", ns.name, "route", "add", "127.0.0.0/8", "via", net.gateway)
    with socket.socket() as listener:  # 127.0.0.1 stays local in the namespace: use .2
        listener.bind(("127.0.0.2", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        assert ns.ask("127.0.0.2", port, BLOCKED) == ""
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
        # without kobako's rule it gets through: the check above means something
        run("nft", "flush", "chain", "ip", firewall.TABLE, "input")
        assert ns.ask("127.0.0.2", port, BLOCKED) == ""  # accepted, never answered
        listener.settimeout(BLOCKED)
        listener.accept()[0].close()


def test_errors(scene: Scene, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="no such interface"):
        firewall.add_network("kbt-nonesuch", "10.213.0.0/24", False)
    with pytest.raises(InvalidArgument):
        firewall.add_network('kbt"; flush', "10.213.0.0/24", False)
    with pytest.raises(InvalidArgument):
        firewall.add_network("kbt-x", "10.213.0.0/33", False)
    with pytest.raises(InvalidArgument):
        firewall.add_ports("10.213.0.2", [PortMapping("sctp", "0.0.0.0", 1, 1)])
    with pytest.raises(InvalidArgument):
        firewall.add_ports("10.213.0.2", [PortMapping("tcp", "0.0.0.0", 0, 1)])
    with pytest.raises(InvalidArgument):
        firewall.add_ports("localhost", [PortMapping("tcp", "0.0.0.0", 1, 1)])
    assert not table_exists()
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path))
        with pytest.raises(NetworkError, match=r"^reading the published ports: cannot run nft"):
            firewall.published()
