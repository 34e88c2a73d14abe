"""The user networks' DNS answerer (kobako.network.dns), run for real on 127.53.0.1 with a
fake upstream on 127.0.0.1: no query ever leaves the loopback."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import NetworkError
from kobako.network import dns
from kobako.runtime.proc import process_start

ADDRESS = "127.53.0.1"
NAMES = {
    "web": ["10.89.0.2"],
    "db": ["10.89.0.3", "10.89.0.4"],
    "many": [f"10.89.1.{i}" for i in range(1, 41)],  # too many for a 512-byte UDP answer
}


def free_port(address: str) -> int:
    """A port that is free on the address for UDP and for TCP (until someone takes it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port


def dns_processes(under: str) -> list[int]:
    """The live answerers serving a state directory under ``under`` (zombies have no command
    line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kobako.network.dns" in argv and any(a.startswith(under.encode()) for a in argv):
            found.append(int(entry))
    return found


class FakeUpstream:
    """A resolver on 127.0.0.1 (UDP and TCP on one port): NAME.example.test is 192.0.2.1,
    big.example.test is truncated over UDP and 60 addresses over TCP, other names do not
    exist. It records each query as (transport, name, type)."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str, str]] = []
        while True:
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.bind(("127.0.0.1", 0))
            self.port: int = self._udp.getsockname()[1]
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self._tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self._udp.close()
                self._tcp.close()
        self._tcp.listen(8)
        self.upstream = f"127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for sock in (self._udp, self._tcp):
            sock.settimeout(0.05)
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._udp.close()
        self._tcp.close()

    def asked(self, name: str) -> list[tuple[str, str, str]]:
        return [q for q in self.queries if q[1] == name]

    def _answer(self, packet: bytes, transport: str) -> bytes:
        request = DNSRecord.parse(packet)
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append((transport, name, QTYPE[request.q.qtype]))
        reply = request.reply(aa=0)
        if name == "big.example.test":
            if transport == "udp":
                reply.header.tc = 1
            else:
                for i in range(60):
                    reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(f"192.0.2.{i}")))
        elif name.endswith(".example.test"):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                packet, client = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            self._udp.sendto(self._answer(packet, "udp"), client)

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                size = int.from_bytes(conn.recv(2), "big")
                packet = b""
                while len(packet) < size:
                    packet += conn.recv(size - len(packet))
                reply = self._answer(packet, "tcp")
                conn.sendall(len(reply).to_bytes(2, "big") + reply)


class Server:
    """An answerer started with dns.start() for the test."""

    def __init__(self, state_dir: Path, listen: list[str], upstream: list[str]) -> None:
        state_dir.mkdir(exist_ok=True)
        self.state_dir = str(state_dir)
        self.address = listen[0]
        self.port = free_port(self.address)
        (state_dir / "dns.json").write_text(
            json.dumps({"listen": listen, "port": self.port, "upstream": upstream})
        )
        self.set_names(NAMES)
        self.pid = dns.start(self.state_dir)

    def set_names(self, names: dict[str, list[str]] | str) -> None:
        """Replace names.json as kobako does (temp file + rename)."""
        tmp = os.path.join(self.state_dir, "names.json.tmp")
        with open(tmp, "w") as f:
            f.write(names if isinstance(names, str) else json.dumps({"names": names}))
        os.replace(tmp, os.path.join(self.state_dir, "names.json"))

    def ask(
        self, name: str, qtype: str = "A", *, tcp: bool = False, address: str | None = None
    ) -> DNSRecord:
        query = DNSRecord.question(name, qtype)
        address = address or self.address
        raw = query.send(address, self.port, tcp=tcp, timeout=10, ipv6=":" in address)
        reply = DNSRecord.parse(raw)
        assert reply.header.id == query.header.id
        return reply


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def leaves_no_process(tmp_path: Path) -> Iterator[None]:
    yield
    left = dns_processes(str(tmp_path))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


@pytest.fixture
def servers(tmp_path: Path, leaves_no_process: None) -> Iterator[list[Server]]:
    """Servers the test starts (in tmp_path/N), stopped after it."""
    started: list[Server] = []
    yield started
    for server in started:
        dns.stop(server.state_dir)
        assert process_start(server.pid) is None
        assert not os.path.exists(os.path.join(server.state_dir, "dns.pid"))


@pytest.fixture
def server(tmp_path: Path, servers: list[Server], upstream: FakeUpstream) -> Server:
    servers.append(Server(tmp_path, [ADDRESS], [upstream.upstream]))
    return servers[0]


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


# ---------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_known_names_resolve(server: Server, upstream: FakeUpstream, tcp: bool) -> None:
    for name in ("web", "web.", "WEB", "wEb."):
        reply = server.ask(name, tcp=tcp)
        assert reply.header.rcode == RCODE.NOERROR
        assert reply.header.aa == 1
        assert addresses(reply) == ["10.89.0.2"]
        assert [rr.ttl for rr in reply.rr] == [600]
    assert addresses(server.ask("DB", tcp=tcp)) == ["10.89.0.3", "10.89.0.4"]
    assert upstream.queries == []


def test_other_types_of_a_known_name_are_empty_and_not_forwarded(
    server: Server, upstream: FakeUpstream
) -> None:
    for qtype in ("AAAA", "MX", "TXT"):
        reply = server.ask("web", qtype)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])
    assert upstream.queries == []


def test_ptr_of_a_known_address(server: Server, upstream: FakeUpstream) -> None:
    reply = server.ask("4.0.89.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in reply.rr] == ["db."]
    assert upstream.queries == []
    server.set_names({"web": ["10.89.0.2"], "Web-Alias": ["10.89.0.2"]})
    reply = server.ask("2.0.89.10.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in reply.rr] == ["web.", "web-alias."]
    unknown = server.ask("99.0.89.10.in-addr.arpa", "PTR")  # not ours: the upstream's
    assert unknown.header.rcode == RCODE.NXDOMAIN
    assert upstream.asked("99.0.89.10.in-addr.arpa") == [("udp", "99.0.89.10.in-addr.arpa", "PTR")]


def test_ipv6_addresses_answer_aaaa(server: Server) -> None:
    server.set_names({"web": ["10.89.0.2", "fd00::2"]})
    assert addresses(server.ask("web", "AAAA")) == ["fd00::2"]
    assert addresses(server.ask("web", "A")) == ["10.89.0.2"]
    ptr = ipaddress.ip_address("fd00::2").reverse_pointer
    assert [str(rr.rdata) for rr in server.ask(ptr, "PTR").rr] == ["web."]


def test_a_large_answer_is_truncated_over_udp(server: Server) -> None:
    udp = server.ask("many")
    assert (udp.header.tc, udp.rr) == (1, [])
    assert len(server.ask("many", tcp=True).rr) == 40


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_unknown_names_are_forwarded(server: Server, upstream: FakeUpstream, tcp: bool) -> None:
    reply = server.ask("www.example.test", tcp=tcp)
    assert addresses(reply) == ["192.0.2.1"]
    assert reply.header.aa == 0
    transport = "tcp" if tcp else "udp"
    assert upstream.asked("www.example.test") == [(transport, "www.example.test", "A")]
    assert server.ask("nowhere.invalid", tcp=tcp).header.rcode == RCODE.NXDOMAIN


def test_a_truncated_upstream_answer_is_relayed_for_the_client_to_retry_over_tcp(
    server: Server, upstream: FakeUpstream
) -> None:
    assert server.ask("big.example.test").header.tc == 1
    assert len(server.ask("big.example.test", tcp=True).rr) == 60
    assert [q[0] for q in upstream.asked("big.example.test")] == ["udp", "tcp"]


def test_names_json_is_reread_when_replaced(server: Server, upstream: FakeUpstream) -> None:
    server.set_names({"web": ["10.89.0.9"], "new": ["10.89.0.10"]})
    assert addresses(server.ask("web")) == ["10.89.0.9"]
    assert addresses(server.ask("new")) == ["10.89.0.10"]
    server.set_names("{not json")  # invalid: the previous table stays
    assert addresses(server.ask("new")) == ["10.89.0.10"]
    os.unlink(os.path.join(server.state_dir, "names.json"))  # no names: all is forwarded
    assert server.ask("new").header.rcode == RCODE.NXDOMAIN
    assert upstream.asked("new") == [("udp", "new", "A")]


def test_listens_on_every_address(tmp_path: Path, servers: list[Server]) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    server = Server(tmp_path, [ADDRESS, "127.53.0.2", "::1"], [])
    servers.append(server)
    for address in (ADDRESS, "127.53.0.2", "::1"):
        for tcp in (False, True):
            assert addresses(server.ask("web", tcp=tcp, address=address)) == ["10.89.0.2"]


# ---------------------------------------------------------------------------------------------
# Upstream failures and bad clients


def test_no_upstream_refuses_other_names(tmp_path: Path, servers: list[Server]) -> None:
    servers.append(Server(tmp_path, [ADDRESS], []))
    assert servers[0].ask("www.example.test").header.rcode == RCODE.REFUSED
    assert addresses(servers[0].ask("web")) == ["10.89.0.2"]


def test_an_upstream_that_is_down_gives_servfail(tmp_path: Path, servers: list[Server]) -> None:
    closed = free_port("127.0.0.1")  # nothing listens: refused at once
    servers.append(Server(tmp_path, [ADDRESS], [f"127.0.0.1:{closed}"]))
    for tcp in (False, True):
        started = time.monotonic()
        assert servers[0].ask("www.example.test", tcp=tcp).header.rcode == RCODE.SERVFAIL
        assert time.monotonic() - started < 3


def test_a_silent_upstream_times_out_without_holding_up_local_answers(
    tmp_path: Path, servers: list[Server], upstream: FakeUpstream
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent_upstream = f"127.0.0.1:{silent.getsockname()[1]}"
        server = Server(tmp_path / "1", [ADDRESS], [silent_upstream])
        servers.append(server)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            query = DNSRecord.question("www.example.test")
            started = time.monotonic()
            client.sendto(query.pack(), (server.address, server.port))
            assert addresses(server.ask("web")) == ["10.89.0.2"]
            assert time.monotonic() - started < 1
            reply = DNSRecord.parse(client.recv(65535))
            assert (reply.header.id, reply.header.rcode) == (query.header.id, RCODE.SERVFAIL)
            assert 1.5 < time.monotonic() - started < 5

        # The next upstream is asked when one does not answer.
        fallback = Server(tmp_path / "2", ["127.53.0.2"], [silent_upstream, upstream.upstream])
        servers.append(fallback)
        assert addresses(fallback.ask("www.example.test")) == ["192.0.2.1"]


def test_garbage_does_not_stop_it(server: Server, upstream: FakeUpstream) -> None:
    header_only = DNSRecord.question("web").pack()[:12]  # says 1 question, has none
    answer = DNSRecord.question("web").reply().pack()  # an answer is not answered
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(0.3)
        for packet in (b"", b"\x00", bytes(range(256)), header_only, answer):
            client.sendto(packet, (server.address, server.port))
        with pytest.raises(TimeoutError):
            client.recv(65535)
    for stream in (b"\x00\x05abc", b"\x00\x03\xff\xff\xff", b"\x01"):
        with socket.create_connection((server.address, server.port), timeout=5) as conn:
            conn.sendall(stream)
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(100) == b""
    assert addresses(server.ask("web")) == ["10.89.0.2"]
    assert addresses(server.ask("web", tcp=True)) == ["10.89.0.2"]
    assert upstream.queries == []
    with open(os.path.join(server.state_dir, "dns.log")) as log:
        assert "dropped a packet" in log.read()


# ---------------------------------------------------------------------------------------------
# Starting and stopping


def test_start_returns_the_running_server(server: Server) -> None:
    assert dns.running(server.state_dir) == server.pid
    assert dns.start(server.state_dir) == server.pid
    with open(os.path.join(server.state_dir, "dns.pid")) as f:
        assert f.read().split() == [str(server.pid), process_start(server.pid)]


def test_stop_ends_it_and_is_idempotent(server: Server) -> None:
    dns.stop(server.state_dir)
    assert process_start(server.pid) is None
    assert dns.running(server.state_dir) is None
    dns.stop(server.state_dir)


def test_stop_does_not_kill_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    pid_path = tmp_path / "dns.pid"
    pid_path.write_text(f"{os.getpid()} 1\n")  # our pid, another start time
    assert dns.running(str(tmp_path)) is None
    dns.stop(str(tmp_path))
    assert not pid_path.exists()
    dns.stop(str(tmp_path))  # nothing recorded: nothing to do


def test_sigterm_exits_zero(tmp_path: Path, leaves_no_process: None) -> None:
    port = free_port(ADDRESS)
    (tmp_path / "dns.json").write_text(json.dumps({"listen": [ADDRESS], "port": port}))
    command = [sys.executable, "-I", "-m", "kobako.network.dns", str(tmp_path)]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + 5
            while not (tmp_path / "dns.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (tmp_path / "dns.pid").read_text().split()[0] == str(proc.pid)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=2) == 0
        finally:
            proc.kill()


def test_a_port_in_use_fails_with_one_line(tmp_path: Path, leaves_no_process: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((ADDRESS, 0))
        port = taken.getsockname()[1]
        (tmp_path / "dns.json").write_text(json.dumps({"listen": [ADDRESS], "port": port}))
        with pytest.raises(NetworkError) as failed:
            dns.start(str(tmp_path))
    message = str(failed.value)
    assert f"cannot listen on {ADDRESS} port {port}/udp: Address already in use" in message
    assert "\n" not in message
    assert not (tmp_path / "dns.pid").exists()


def test_a_bad_configuration_fails_with_one_line(tmp_path: Path, leaves_no_process: None) -> None:
    with pytest.raises(NetworkError, match=r"cannot read .*dns\.json"):
        dns.start(str(tmp_path))
    (tmp_path / "dns.json").write_text(json.dumps({"listen": ["10.89.0.1"], "upstream": ["x"]}))
    with pytest.raises(NetworkError, match="'x' does not appear to be an IPv4 or IPv6 address"):
        dns.start(str(tmp_path))


def test_importing_it_is_cheap() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import kobako.network.dns\n"
        "print('\\n'.join(set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    slow = {"dnslib", "enum", "ipaddress", "json", "signal", "socket", "subprocess", "threading"}
    assert set(out.stdout.split()) & slow == set()


# ---------------------------------------------------------------------------------------------
# Names and upstreams, parsed

LABEL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
IP = st.ip_addresses()


@given(NAME)
def test_normalise_ignores_ascii_case_and_the_trailing_dot(name: str) -> None:
    key = dns.normalise(name)
    assert key == name.lower()
    assert dns.normalise(name.swapcase() + ".") == key
    assert dns.normalise(key) == key


def test_normalise_lowers_ascii_only() -> None:
    assert dns.normalise("ÉCOLE.") == "École"


@given(
    st.dictionaries(NAME, st.lists(IP, max_size=4), max_size=6).filter(
        lambda names: len({dns.normalise(n) for n in names}) == len(names)
    )
)
def test_parse_names_keys_every_name_and_address(
    names: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]],
) -> None:
    table = dns.parse_names({"names": {n: [str(a) for a in addrs] for n, addrs in names.items()}})
    for name, addrs in names.items():
        v4, v6 = table.addresses[dns.normalise(name.upper() + ".")]
        assert set(v4) | set(v6) == {str(a) for a in addrs}
        assert {ipaddress.ip_address(a).version for a in v4} <= {4}
        assert {ipaddress.ip_address(a).version for a in v6} <= {6}
        for address in addrs:
            assert dns.normalise(name) in table.pointers[address.reverse_pointer]


@pytest.mark.parametrize(
    "doc",
    [[], {}, {"names": []}, {"names": {"web": "10.0.0.1"}}, {"names": {"web": ["nope"]}}],
)
def test_parse_names_rejects_other_shapes(doc: object) -> None:
    with pytest.raises(ValueError):
        dns.parse_names(doc)


def test_parse_names_leaves_out_what_no_query_can_ask() -> None:
    table = dns.parse_names({"names": {"a" * 64: ["10.0.0.1"], "x..y": [], "ok": []}})
    assert list(table.addresses) == ["ok"]


@given(IP, st.integers(1, 65535))
def test_parse_upstream_reads_host_and_port(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    assert dns.parse_upstream(text) == (str(ip), port)
    assert dns.parse_upstream(str(ip)) == (str(ip), 53)


@pytest.mark.parametrize("text", ["", "host:53", "10.0.0.1:0", "10.0.0.1:x", "[::1", "[::1]x"])
def test_parse_upstream_rejects_the_rest(text: str) -> None:
    with pytest.raises(ValueError):
        dns.parse_upstream(text)
