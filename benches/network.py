"""Networking: kobako against docker and podman, through a published port, between containers,
and the cost of a network at start.

Every engine runs the same image (kobako's built-in ``busybox``, saved with ``kobako save``
and loaded into docker and podman, as in ``benches/lifecycle.py``) on its default network:
kobako's ``bridge`` (``kobako0``, ports published by kernel DNAT in nftables), docker's
``bridge`` (``docker0``, iptables, its userland proxy for 127.0.0.1: Docker's defaults) and
podman's ``podman`` (netavark: iptables DNAT). Three measurements:

* **published port**: ``wrk -t2 -c16 -d10s`` from the host to a busybox ``httpd -f -p 80 -h
  /etc`` published on ``127.0.0.1:PORT`` (a port per engine), fetching ``/passwd`` (a small
  file);
* **container to container**: the same ``wrk`` run in the network namespace of a second
  container (``sleep 1000``) on the same network (``nsenter -t PID -n``, PID from ``inspect``),
  against the first container's address, port 80;
* **start**: ``run --rm busybox true`` on the default network, and with ``--network none`` for
  reference, alternately, ``--starts`` times each per round.

Each round runs every (engine, measurement) once, in a shuffled order, after an untimed
warm-up round. Run as root (it installs ``wrk``, docker.io, containerd and podman from Debian
when they are missing; podman's crun needs ``benches/setup.sh`` on a hybrid cgroup layout)::

    python benches/network.py                 # 5 rounds (~8 min)
    python benches/network.py -n 3 --duration 5 --starts 10
    python benches/network.py --json samples.json

Traffic goes only to 127.0.0.1 and to the containers' own addresses. docker and podman turn
on ``net.ipv4.ip_forward`` and add iptables chains: the bench records the host's rules and
sysctls first and puts them back after (``iptables-restore`` of the tables that were there,
the others deleted), removes ``docker0``/``podman0`` when they were not there, and removes
every container it made. It then checks as ``benches/lifecycle.py`` does and exits 1 naming
what it found (and 1 when a target is missed). A peer that cannot run here is named with the
reason instead of measured.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle import (
    IMAGE,
    PACKAGES,
    PODMAN_BYPRODUCTS,
    Engine,
    _cgroup_parents,
    clean_up,
    load_image,
    make_engines,
    start_dockerd,
)
from pull import (
    BenchError,
    Daemon,
    HostState,
    Scratch,
    free_port,
    install_missing,
    leftovers,
    version,
)

#: Program -> Debian package, installed when the program is missing.
NET_PACKAGES = {**PACKAGES, "wrk": "wrk", "nsenter": "util-linux"}
ENGINES = ("kobako", "docker", "podman")
BASELINE = "podman"
PARTS = ("published port", "container to container", "start")
#: dockerd as installed: its default bridge, iptables rules, ip_forward, masquerade and the
#: userland proxy (which serves published ports on 127.0.0.1).
DOCKER_NETWORKED = {
    "iptables": True,
    "ip-forward": True,
    "ip-masq": True,
    "userland-proxy": True,
}
#: The bridges docker and podman make on their default networks; removed after the run when
#: they were not there before.
PEER_BRIDGES = ("docker0", "podman0", "cni-podman0")
#: Host sysctls the peers may set; put back after the run.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
SERVER = ("httpd", "-f", "-p", "80", "-h", "/etc")
CLIENT = ("sleep", "1000")
#: What wrk fetches: busybox's /etc/passwd.
URL_PATH = "/passwd"
#: The targets of issue 6: kobako's requests/s >= 1.0x podman's with an average latency no
#: worse (paired), and ``run --rm true`` on the default network <= 0.3x podman's.
THROUGHPUT_TARGET = 1.0
START_TARGET = 0.3


# --- wrk ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports; times in seconds."""

    rps: float
    latency: float
    p50: float
    p99: float
    max: float
    requests: int
    #: Socket errors (connect, read, write, timeout) and answers other than 2xx/3xx.
    errors: int


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"wrk printed a time I cannot read: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Read ``wrk --latency``'s report."""

    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"wrk's report has no {pattern!r}: {out.strip()[-200:]!r}")
        return m

    latency = find(r"^\s+Latency\s+(\S+)\s+\S+\s+(\S+)")
    sockets = re.search(r"Socket errors: (.*)$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(int(n) for n in re.findall(r"\d+", sockets.group(1))) if sockets else 0
    return WrkResult(
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        latency=_seconds(latency.group(1)),
        p50=_seconds(find(r"^\s+50(?:\.000)?%\s+(\S+)").group(1)),
        p99=_seconds(find(r"^\s+99(?:\.000)?%\s+(\S+)").group(1)),
        max=_seconds(latency.group(2)),
        requests=int(find(r"^\s+(\d+) requests in").group(1)),
        errors=errors + (int(non2xx.group(1)) if non2xx else 0),
    )


def wrk(url: str, duration: float, netns_pid: int | None = None) -> WrkResult:
    """``wrk -t2 -c16 -dDURATION --latency URL``, in the network namespace of ``netns_pid``."""
    argv = ["wrk", "-t2", "-c16", f"-d{duration:g}s", "--latency", url]
    if netns_pid is not None:
        argv = ["nsenter", "-t", str(netns_pid), "-n", *argv]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise BenchError(f"wrk {url} exited {proc.returncode}: {err[-1] if err else ''}")
    result = parse_wrk(proc.stdout)
    if result.requests == 0:
        raise BenchError(f"wrk {url}: no request answered in {duration:g} s")
    return result


# --- the engines' containers ----------------------------------------------------------------


@dataclass
class Setup:
    """One engine on its default network: the server, the client and how to reach them."""

    engine: Engine
    #: ``run`` flags without ``--network``.
    flags: tuple[str, ...]
    port: int
    server: str = ""
    client: str = ""
    server_ip: str = ""
    client_pid: int = 0
    made: list[str] = field(default_factory=list)


def _without_network(flags: Sequence[str]) -> tuple[str, ...]:
    out = list(flags)
    if "--network" in out:
        i = out.index("--network")
        del out[i : i + 2]
    return tuple(out)


def _run_detached(s: Setup, *args: str) -> str:
    out = s.engine.output("run", "-d", *s.flags, *args).strip()
    cid = out.splitlines()[-1] if out else ""
    if len(cid) != 64:
        raise BenchError(f"{s.engine.name} run -d printed {out!r}, not an id")
    s.made.append(cid)
    return cid


def start_containers(s: Setup) -> None:
    """Start the engine's server (port published on 127.0.0.1) and client; check both."""
    name = s.engine.name
    s.server = _run_detached(s, "-p", f"127.0.0.1:{s.port}:80", IMAGE, *SERVER)
    s.client = _run_detached(s, IMAGE, *CLIENT)
    template = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    ips = s.engine.output("inspect", "-f", template, s.server).split()
    try:
        ip = ipaddress.ip_address(ips[0])
    except (IndexError, ValueError):
        raise BenchError(f"{name}: the server's address is {ips!r}") from None
    if not ip.is_private or ip.is_loopback:  # only ever a container's own address
        raise BenchError(f"{name}: the server's address {ip} is not a container's")
    s.server_ip = str(ip)
    (s.client_pid,) = s.engine.pids([s.client])
    _wait_200(s.port, name)


def _wait_200(port: int, name: str) -> None:
    """Poll ``GET URL_PATH`` on 127.0.0.1:``port`` until it answers 200 (10 s at most)."""
    deadline = time.monotonic() + 10
    last = "no answer"
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", URL_PATH)
            status = conn.getresponse().status
            if status == 200:
                return
            last = f"status {status}"
        except OSError as e:
            last = str(e)
        finally:
            conn.close()
        time.sleep(0.05)
    raise BenchError(f"{name}: 127.0.0.1:{port}{URL_PATH} did not answer 200 ({last})")


def start_pair(s: Setup, count: int, failures: list[str]) -> tuple[list[float], list[float]]:
    """``run --rm busybox true`` ``count`` times on the default network and with ``--network
    none``, alternately (which first, by turns): the times (s) of each.

    A run that fails is not timed: its error goes to ``failures``, and the part stops
    (BenchError) once half of those on one network fail.
    """
    bridge: list[float] = []
    none: list[float] = []
    failed = {"default": 0, "none": 0}
    for i in range(count):
        for net in ("default", "none") if i % 2 == 0 else ("none", "default"):
            flags = ("--network", "none") if net == "none" else ()
            t0 = time.perf_counter()
            try:
                s.engine.output("run", "--rm", *s.flags, *flags, IMAGE, "true")
            except BenchError as e:
                failures.append(f"{net}: " + re.sub(r"[0-9a-f]{64}", "ID", str(e)))
                failed[net] += 1
                if failed[net] > count // 2:
                    raise
                continue
            (none if net == "none" else bridge).append(time.perf_counter() - t0)
    return bridge, none


@dataclass
class Samples:
    """Per engine, index = round: wrk results, and every start time (s) of the round."""

    published: dict[str, list[WrkResult]]
    c2c: dict[str, list[WrkResult]]
    start: dict[str, list[list[float]]]
    start_none: dict[str, list[list[float]]]
    #: The error of each ``run --rm`` that failed (not timed).
    start_failures: dict[str, list[str]]


def run_rounds(
    setups: Mapping[str, Setup],
    rounds: int,
    warmup: int,
    duration: float,
    starts: int,
    rng: random.Random,
) -> tuple[Samples, list[list[str]]]:
    """Every (engine, part) once per round in a shuffled order; ``warmup`` rounds first, short
    and untimed.

    Returns:
        The samples; the order of each timed round.
    """
    names = list(setups)
    s = Samples(
        published={n: [] for n in names},
        c2c={n: [] for n in names},
        start={n: [] for n in names},
        start_none={n: [] for n in names},
        start_failures={n: [] for n in names},
    )
    orders: list[list[str]] = []
    tasks = [(name, part) for name in names for part in PARTS]
    for r in range(warmup + rounds):
        timed = r >= warmup
        d, n = (duration, starts) if timed else (min(duration, 2.0), 2)
        rng.shuffle(tasks)
        for name, part in tasks:
            setup = setups[name]
            if part == "published port":
                result = wrk(f"http://127.0.0.1:{setup.port}{URL_PATH}", d)
                if timed:
                    s.published[name].append(result)
            elif part == "container to container":
                result = wrk(f"http://{setup.server_ip}:80{URL_PATH}", d, setup.client_pid)
                if timed:
                    s.c2c[name].append(result)
            else:
                bridge, none = start_pair(setup, n, s.start_failures[name])
                if timed:
                    s.start[name].append(bridge)
                    s.start_none[name].append(none)
        if timed:
            orders.append([f"{name} {part}" for name, part in tasks])
        label = "round" if timed else "warm-up round"
        done = r + 1 - warmup if timed else r + 1
        print(f"  {label} {done}/{rounds if timed else warmup} done", file=sys.stderr)
    return s, orders


# --- the report ---------------------------------------------------------------------------


def paired(xs: Sequence[float], base: Sequence[float]) -> float:
    """The median over rounds of the ratio within each round."""
    return statistics.median(x / b for x, b in zip(xs, base, strict=True))


def _p90(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


def _ratio(xs: Sequence[float], base: Sequence[float] | None) -> str:
    return f"{paired(xs, base):.2f}x" if base else "-"


def _wrk_table(title: str, results: Mapping[str, list[WrkResult]]) -> list[str]:
    base = results.get(BASELINE)
    lines = [
        title + "\n",
        "| engine | requests/s | paired vs podman | avg latency ms | paired vs podman "
        "| p50 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in results.items():
        rps = [r.rps for r in rs]
        lat = [r.latency for r in rs]
        lines.append(
            f"| {name} | {statistics.median(rps):,.0f} "
            f"| {_ratio(rps, [r.rps for r in base] if base else None)} "
            f"| {statistics.median(lat) * 1e3:.2f} "
            f"| {_ratio(lat, [r.latency for r in base] if base else None)} "
            f"| {statistics.median(r.p50 for r in rs) * 1e3:.2f} "
            f"| {statistics.median(r.p99 for r in rs) * 1e3:.1f} "
            f"| {max(r.max for r in rs) * 1e3:.0f} | {sum(r.errors for r in rs)} |"
        )
    return [*lines, ""]


def _round_medians(rounds: Sequence[Sequence[float]]) -> list[float]:
    return [statistics.median(xs) for xs in rounds]


def report(s: Samples, duration: float, starts: int) -> tuple[str, bool]:
    """The three tables (markdown) and the target lines; also whether every target was met."""
    rounds = len(next(iter(s.published.values())))
    wrk_what = f"`wrk -t2 -c16 -d{duration:g}s`, GET {URL_PATH}, {rounds} rounds"
    lines = _wrk_table(f"published port (127.0.0.1:PORT -> 80), {wrk_what}", s.published)
    lines += _wrk_table(
        f"container to container (wrk in a second container's netns), {wrk_what}", s.c2c
    )
    base = _round_medians(s.start[BASELINE]) if BASELINE in s.start else None
    lines += [
        f"`run --rm busybox true`, {starts} x 2 per round (default network and `--network "
        f"none`, alternately), {rounds} rounds\n",
        "| engine | default network, median ms | p90 ms | --network none, median ms "
        "| network costs, ms | paired vs podman (default network) | failed runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in s.start:
        bridge = [t for xs in s.start[name] for t in xs]
        none = [t for xs in s.start_none[name] for t in xs]
        lines.append(
            f"| {name} | {statistics.median(bridge) * 1e3:.0f} | {_p90(bridge) * 1e3:.0f} "
            f"| {statistics.median(none) * 1e3:.0f} "
            f"| {(statistics.median(bridge) - statistics.median(none)) * 1e3:.0f} "
            f"| {_ratio(_round_medians(s.start[name]), base)} | {len(s.start_failures[name])} |"
        )
    lines.append("")
    for name, errors in s.start_failures.items():
        for error in sorted(set(errors)):
            lines.append(f"{name}: {errors.count(error)} x {error}")
    if any(s.start_failures.values()):
        lines.append("")
    met = True
    targets: list[str] = []
    if BASELINE not in s.start:
        return "\n".join([*lines, "targets: not checked (podman did not run)"]) + "\n", met
    for part, results in (("published port", s.published), ("container to container", s.c2c)):
        mine, theirs = results["kobako"], results[BASELINE]
        rps = paired([r.rps for r in mine], [r.rps for r in theirs])
        lat = paired([r.latency for r in mine], [r.latency for r in theirs])
        ok = rps >= THROUGHPUT_TARGET and lat <= 1.0
        met &= ok
        targets.append(
            f"target: {part}: kobako requests/s >= {THROUGHPUT_TARGET}x podman's with latency "
            f"no worse: paired {rps:.2f}x, latency {lat:.2f}x {'met' if ok else 'MISSED'}"
        )
    assert base is not None
    k_start = _round_medians(s.start["kobako"])
    p = paired(k_start, base)
    medians = statistics.median(k_start) / statistics.median(base)
    ok = p <= START_TARGET
    met &= ok
    targets.append(
        f"target: kobako run --rm true on its default network <= {START_TARGET}x podman's: "
        f"paired {p:.2f}x (medians {medians:.2f}x) {'met' if ok else 'MISSED'}"
    )
    return "\n".join(lines + targets) + "\n", met


# --- the host's network state ---------------------------------------------------------------


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _save(prog: str) -> str:
    return subprocess.run([f"{prog}-save"], capture_output=True, text=True).stdout


def _tables(dump: str) -> dict[str, str]:
    """An iptables-save dump split by table: name -> its block (``*name`` .. ``COMMIT``)."""
    tables: dict[str, str] = {}
    for block in re.findall(r"^\*\S+\n.*?^COMMIT\n", dump, re.M | re.S):
        tables[block[1 : block.index("\n")]] = block
    return tables


def _rules(block: str) -> str:
    """A table's block without comments and counters, to compare two."""
    lines = (ln for ln in block.splitlines() if not ln.startswith("#"))
    return "\n".join(re.sub(r"\[\d+:\d+\]", "", ln) for ln in lines)


def _nft_counts() -> dict[str, int]:
    """How many tables, chains, rules, sets nftables holds (all families)."""
    out = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    counts = dict.fromkeys(("table", "chain", "rule", "set"), 0)
    try:
        items = json.loads(out.stdout)["nftables"]
    except (ValueError, KeyError):
        return counts
    for item in items:
        for kind in counts:
            if kind in item:
                counts[kind] += 1
    return counts


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}


@dataclass(frozen=True)
class NetState:
    """The host's network set-up that docker and podman change, to put back after the run."""

    dumps: dict[str, str]
    sysctls: dict[str, str | None]
    links: frozenset[str]
    nft_tables: frozenset[str]
    nft_counts: dict[str, int]

    @staticmethod
    def take() -> NetState:
        return NetState(
            dumps={prog: _save(prog) for prog in ("iptables", "ip6tables")},
            sysctls={name: _sysctl(name) for name in SYSCTLS},
            links=frozenset(os.listdir("/sys/class/net")),
            nft_tables=frozenset(_nft_tables()),
            nft_counts=_nft_counts(),
        )

    def summary(self) -> str:
        forward = self.sysctls["net/ipv4/ip_forward"]
        rules = sum(
            1
            for dump in self.dumps.values()
            for line in dump.splitlines()
            if line.startswith("-A ")
        )
        counts = ", ".join(f"{n} {k}s" for k, n in self.nft_counts.items())
        return f"ip_forward {forward}, {rules} iptables rules; nftables: {counts}"


def restore_network(before: NetState) -> list[str]:
    """Put the host's iptables rules, sysctls and peer bridges back as they were; what was done.

    Tables that were there are restored with ``iptables-restore`` from the dump taken before
    (which replaces the whole table: a change someone else made to it meanwhile goes too);
    tables that were not are flushed and, with the nf_tables back end, deleted.
    """
    done: list[str] = []
    for link in PEER_BRIDGES:
        if link not in before.links and os.path.exists(f"/sys/class/net/{link}"):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
            done.append(f"deleted link {link}")
    nf_tables = "nf_tables" in version(["iptables", "--version"])
    for prog, family in (("iptables", "ip"), ("ip6tables", "ip6")):
        was, now = _tables(before.dumps[prog]), _tables(_save(prog))
        changed = [t for t in now if t in was and _rules(now[t]) != _rules(was[t])]
        if changed:
            text = "".join(was[t] for t in changed)
            proc = subprocess.run([f"{prog}-restore"], input=text, capture_output=True, text=True)
            if proc.returncode != 0:
                done.append(f"{prog}-restore failed: {proc.stderr.strip()}")
            done.append(f"restored {prog} table(s) {', '.join(changed)}")
        for table in (t for t in now if t not in was):
            subprocess.run([prog, "-t", table, "-F"], capture_output=True)
            subprocess.run([prog, "-t", table, "-X"], capture_output=True)
            if nf_tables:
                subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
            done.append(f"removed {prog} table {table}")
    for name, value in before.sysctls.items():
        if value is not None and _sysctl(name) != value:
            Path("/proc/sys", name).write_text(value)
            done.append(f"{name.replace('/', '.')} back to {value}")
    return done


# --- set-up -----------------------------------------------------------------------------------


def set_up(
    base: Path, fs: Path, made: dict[str, list[str]], engines: list[Engine]
) -> tuple[dict[str, Setup], dict[str, str], Daemon | None]:
    """Start dockerd (networked) and each engine's containers.

    ``engines`` gets every engine as soon as it has a store (for the clean-up), ``made`` every
    container id. Returns the engines ready to measure, the reason of each peer that is not
    (kobako's failures raise), and dockerd.
    """
    missing: dict[str, str] = {}
    daemon: Daemon | None = None
    sock = ""
    try:
        daemon, sock = start_dockerd(base, fs, DOCKER_NETWORKED)
    except BenchError as e:
        missing["docker"] = f"dockerd did not start: {e}"
    kobako, docker, podman = make_engines(base, fs, sock)
    engines.append(kobako)
    load_image(base, [kobako])
    setups: dict[str, Setup] = {}
    for engine in (kobako, docker, podman):
        name = engine.name
        if name in missing:
            continue
        if name != "kobako":
            engines.append(engine)
        setup = Setup(engine, _without_network(engine.run_flags), free_port())
        try:
            if name != "kobako":
                load_image(base, [kobako, engine])
            start_containers(setup)
        except BenchError as e:
            made[name] += setup.made
            if name == "kobako":
                raise
            reason = str(e)
            if "hybrid mode not supported" in reason:
                reason += " (run benches/setup.sh: it moves hugetlb off cgroup2)"
            missing[name] = reason
            continue
        made[name] += setup.made
        setups[name] = setup
    return setups, missing, daemon


# --- main ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("-n", "--rounds", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="short untimed rounds (default 1)")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk (default 10)")
    p.add_argument(
        "--starts", type=int, default=20, help="run --rm per network and round (default 20)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the round orders")
    p.add_argument("--json", metavar="FILE", type=Path, help="save the raw samples here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.duration <= 0 or args.starts < 1:
        p.error("--rounds and --starts must be at least 1, --warmup 0, --duration above 0")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if os.geteuid() != 0:
        print("network.py: run as root (loop mounts, dockerd, containers)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    try:
        install_missing(NET_PACKAGES)
    except BenchError as e:
        print(f"network.py: {e}", file=sys.stderr)
        return 1
    before = HostState.take()
    net_before = NetState.take()
    byproducts_before = {p for p in PODMAN_BYPRODUCTS if os.path.lexists(p)}
    parents_before = _cgroup_parents()
    base = Path(tempfile.mkdtemp(prefix="kobako-net-"))
    status = 0
    engines: list[Engine] = []
    made: dict[str, list[str]] = {name: [] for name in ENGINES}
    daemon: Daemon | None = None
    problems: list[str] = []
    restored: list[str] = []
    net_during: NetState | None = None
    try:
        with Scratch(base) as fs:
            try:
                setups, missing, daemon = set_up(base, fs, made, engines)
                net_during = NetState.take()
                from kobako import __version__

                meta = {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "kernel": platform.release(),
                    "cpus": os.cpu_count(),
                    "kobako": __version__,
                    "dockerd": version(["dockerd", "--version"]),
                    "podman": version(["podman", "--version"]),
                    "netavark": version(["/usr/lib/podman/netavark", "--version"]),
                    "wrk": version(["wrk", "-v"]),
                    "rounds": args.rounds,
                    "warmup": args.warmup,
                    "duration": args.duration,
                    "starts": args.starts,
                    "seed": args.seed,
                    "not measured": missing,
                    "loadavg_before": os.getloadavg()[0],
                }
                print(
                    f"{args.rounds} rounds (+{args.warmup} warm-up), seed {args.seed}, "
                    f"{meta['dockerd']}, {meta['podman']}, load {meta['loadavg_before']:.2f}",
                    file=sys.stderr,
                )
                for name, reason in missing.items():
                    print(f"  {name}: not measured: {reason}", file=sys.stderr)
                samples, orders = run_rounds(
                    setups,
                    args.rounds,
                    args.warmup,
                    args.duration,
                    args.starts,
                    random.Random(args.seed),
                )
                meta["loadavg_after"] = os.getloadavg()[0]
                text, met = report(samples, args.duration, args.starts)
                print(
                    f"\n{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
                    f"seed {args.seed}, load {meta['loadavg_before']:.2f} before, "
                    f"{meta['loadavg_after']:.2f} after; {meta['dockerd']}, {meta['podman']} "
                    f"({meta['netavark']}), {meta['wrk']}\n"
                )
                for name, reason in missing.items():
                    print(f"{name}: not measured: {reason}\n")
                print(text)
                status = 0 if met else 1
                if args.json:
                    args.json.write_text(
                        json.dumps(
                            {
                                "meta": meta,
                                "published": {
                                    n: [r.__dict__ for r in rs]
                                    for n, rs in samples.published.items()
                                },
                                "c2c": {
                                    n: [r.__dict__ for r in rs] for n, rs in samples.c2c.items()
                                },
                                "start_s": samples.start,
                                "start_none_s": samples.start_none,
                                "orders": orders,
                            },
                            indent=1,
                        )
                    )
            finally:
                # a second Ctrl-C must not cut the clean-up short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                problems = clean_up(engines, made, daemon, parents_before)
                podman = [e for e in engines if e.name == "podman"]
                if podman:
                    subprocess.run(podman[0].cli("network", "prune", "-f"), capture_output=True)
    except BenchError as e:
        print(f"network.py: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("network.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if daemon is not None:
            daemon.stop()
        restored = restore_network(net_before)
        for path in set(PODMAN_BYPRODUCTS) - byproducts_before:
            shutil.rmtree(path, ignore_errors=True)
        net_after = NetState.take()
        print(f"host before: {net_before.summary()}")
        if net_during is not None:
            print(f"host during: {net_during.summary()}")
        print(f"host after:  {net_after.summary()}")
        if restored:
            print("clean-up: " + "; ".join(restored))
        left = problems + leftovers(base, before)
        left += [f"nft table {t}" for t in sorted(net_after.nft_tables - net_before.nft_tables)]
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print("network.py: left behind: " + ", ".join(left), file=sys.stderr)
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
