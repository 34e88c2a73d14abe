"""Container lifecycle: kobako against docker and podman for exec, helper memory and run -d.

Three measurements in one run, all on busybox ``sleep 1000`` containers with no network, made
from one image: kobako's built-in ``busybox`` (:func:`kobako.image.archive.default_image`,
from the host's busybox-static), saved with ``kobako save`` and loaded into docker and podman.

* **exec**: ``/bin/true`` in an idle running container, one container per engine:
  ``kobako exec C true`` (a fresh interpreter each time), kobako's API
  (:func:`kobako.runtime.execute.exec_in` in this process), ``docker exec C true`` and
  ``podman exec C true``. Each round runs each once in a shuffled order, after warm-up rounds.
* **helper memory**: the resident memory (VmRSS, and PSS from ``smaps_rollup``) of the process
  that watches each container: kobako's ``kobako-monitor``, podman's ``conmon``, docker's
  ``containerd-shim-runc-v2``; found as the parent of the container's first process and
  checked by its name and by the container id on its command line. Taken on the exec
  containers when idle and after the exec rounds, and on every container of the next part.
* **50 detached starts**: ``run -d --network none busybox sleep 1000`` fifty times in a loop
  per engine (the engines in a shuffled order each round), then ``rm -f`` of the fifty in one
  command, timed apart.

Every store lives on one fresh journaled ext4 on a loop file (``kobako`` in
``KOBAKO_ROOT=FS/kobako``; ``dockerd`` started by the bench with its data and exec roots there,
its own containerd, no bridge, no iptables; ``podman --root/--runroot/--tmpdir`` there, cgroupfs
manager, file events). Run as root (it installs docker.io, containerd and podman from Debian
when they are missing; podman's crun needs ``benches/setup.sh`` on a hybrid cgroup layout)::

    python benches/lifecycle.py                 # 40 exec rounds, 3 rounds of 50 starts
    python benches/lifecycle.py -n 10 --starts 1 --count 10
    python benches/lifecycle.py --json samples.json

Everything the bench makes is removed whatever happens: the containers of all three engines,
dockerd and its containerd, the loop file system and the temporary directory. The bench then
checks for processes, mounts, cgroups, network changes and state directories of its own and
exits 1 naming what it found (and 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pull import (
    DOCKER,
    BenchError,
    Daemon,
    HostState,
    Scratch,
    UnixHTTPConnection,
    check_own_containerd,
    install_missing,
    leftovers,
    python_env,
    version,
    wait_http,
)

#: Program -> Debian package, installed when the program is missing.
PACKAGES = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "podman": "podman",
    "mkfs.ext4": "e2fsprogs",
}
IMAGE = "busybox"
COMMAND = ("sleep", "1000")
#: The exec rows; every ratio is taken against the first two.
EXEC_ROWS = ("kobako exec (CLI)", "kobako exec (API)", "docker exec", "podman exec")
EXEC_BASELINE = "podman exec"
#: The targets of issue 5: exec <= 0.3x podman's (paired); monitor RSS <= 0.5x conmon's and
#: at most 2 MB.
EXEC_TARGET = 0.3
RSS_TARGET = 0.5
RSS_LIMIT_KIB = 2000
#: What podman makes outside its --root/--runroot/--tmpdir/--network-config-dir (its blob
#: info cache, netavark's run directory): removed after the run when they were not there
#: before.
PODMAN_BYPRODUCTS = ("/var/lib/containers", "/run/containers", "/run/libpod")
#: Cgroup parents that docker and podman (cgroupfs) make in each hierarchy; removed after the
#: run when they were not there before and are empty.
CGROUP_PARENTS = ("docker", "libpod_parent")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Engine:
    """One engine's command line, and how its containers and helpers look."""

    name: str
    argv: tuple[str, ...]
    #: The flags of ``run -d`` before the image.
    run_flags: tuple[str, ...]
    #: The flags of ``rm`` that kill and remove a running container at once.
    rm_flags: tuple[str, ...]
    #: The helper's name in /proc/PID/comm (15 characters at most).
    helper: str
    env: Mapping[str, str] | None = None

    def cli(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def output(self, *args: str) -> str:
        """Run the engine with ``args`` and return its stdout; BenchError on failure."""
        proc = subprocess.run(
            self.cli(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
        )
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()
            raise BenchError(
                f"{self.name} {' '.join(args[:2])} exited {proc.returncode}: "
                f"{err[-1] if err else '(no stderr)'}"
            )
        return proc.stdout

    def run_detached(self) -> tuple[float, str]:
        """``run -d`` one container: its wall time (s) and its id."""
        t0 = time.perf_counter()
        out = self.output("run", "-d", *self.run_flags, IMAGE, *COMMAND)
        elapsed = time.perf_counter() - t0
        cid = out.strip().splitlines()[-1] if out.strip() else ""
        if len(cid) != 64:
            raise BenchError(f"{self.name} run -d printed {out.strip()!r}, not an id")
        return elapsed, cid

    def pids(self, ids: Sequence[str]) -> list[int]:
        """The host pid of each container's first process."""
        out = self.output("inspect", "-f", "{{.State.Pid}}", *ids).split()
        if len(out) != len(ids) or not all(p.isdigit() and int(p) > 0 for p in out):
            raise BenchError(f"{self.name} inspect gave pids {out[:4]} for {len(ids)} containers")
        return [int(p) for p in out]

    def remove(self, ids: Sequence[str]) -> float:
        """``rm -f`` the containers in one command; its wall time (s)."""
        t0 = time.perf_counter()
        self.output("rm", *self.rm_flags, *ids)
        return time.perf_counter() - t0

    def remove_all(self) -> None:
        """Remove every container of this engine's store (the clean-up)."""
        ids = self.output("ps", "-aq", "--no-trunc").split()
        if ids:
            self.remove(ids)


# --- processes and memory ----------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f if ":" in line)


def memory_kib(pid: int) -> tuple[int, int]:
    """VmRSS and PSS of ``pid``, in KiB."""
    rss = int(_status(pid)["VmRSS"].split()[0])
    pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def helper_pid(engine: Engine, cid: str, pid: int) -> int:
    """The helper of container ``cid`` (first process ``pid``): its parent, checked."""
    try:
        parent = int(_status(pid)["PPid"])
        name = _status(parent)["Name"].strip()
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, KeyError, ValueError):
        raise BenchError(f"{engine.name}: container {cid[:12]} (pid {pid}) is gone") from None
    if name != engine.helper or cid.encode() not in cmdline:
        raise BenchError(
            f"{engine.name}: the parent of container {cid[:12]} is {name!r} (pid {parent}), "
            f"not its {engine.helper}"
        )
    return parent


def helper_memory(engine: Engine, ids: Sequence[str]) -> list[tuple[int, int]]:
    """(RSS, PSS) in KiB of the helper of each container."""
    return [
        memory_kib(helper_pid(engine, cid, pid))
        for cid, pid in zip(ids, engine.pids(ids), strict=True)
    ]


# --- set-up -------------------------------------------------------------------------------


#: dockerd's settings when networking is not measured: no bridge, no iptables, no ip_forward.
NO_NETWORK = {
    "bridge": "none",
    "iptables": False,
    "ip6tables": False,
    "ip-forward": False,
    "ip-masq": False,
}


def start_dockerd(
    base: Path, fs: Path, settings: Mapping[str, object] = NO_NETWORK
) -> tuple[Daemon, str]:
    """Start dockerd with its data and exec roots on ``fs``: the daemon and its socket.

    ``settings`` is its ``daemon.json``; by default it leaves the host's network alone.
    """
    d = fs / "docker"
    config = base / "daemon.json"
    config.write_text(json.dumps(settings))
    sock = d / "docker.sock"
    argv = ["dockerd", "--config-file", str(config), "--data-root", str(d / "data")]
    argv += ["--exec-root", str(d / "exec"), "--pidfile", str(d / "docker.pid")]
    argv += ["-H", f"unix://{sock}"]
    daemon = Daemon(argv, base / "dockerd.log")
    try:
        wait_http(lambda: UnixHTTPConnection(str(sock)), "/_ping", "dockerd")
        check_own_containerd(daemon.proc.pid, d / "exec")
    except BenchError:
        daemon.check()
        daemon.stop()
        raise
    return daemon, str(sock)


def make_engines(base: Path, fs: Path, sock: str) -> list[Engine]:
    kobako_env = python_env(base / "pycache")
    kobako_env["KOBAKO_ROOT"] = str(fs / "kobako")
    p = fs / "pm"  # podman refuses a runroot over 50 characters
    podman = ["podman", "--root", str(p / "root"), "--runroot", str(p / "run")]
    podman += ["--tmpdir", str(p / "tmp"), "--network-config-dir", str(p / "net")]
    podman += ["--storage-driver", "overlay", "--cgroup-manager", "cgroupfs"]
    podman += ["--events-backend", "file"]
    return [
        Engine(
            "kobako",
            (str(Path(sys.executable).parent / "kobako"),),
            ("--network", "none"),
            ("-f",),
            "kobako-monitor",
            kobako_env,
        ),
        Engine(
            "docker",
            (DOCKER, "-H", f"unix://{sock}"),
            ("--network", "none"),
            ("-f",),
            "containerd-shim",
        ),
        Engine(
            "podman",
            tuple(podman),
            # crun asks for the image's rlimits, above root's hard limits here (no
            # CAP_SYS_RESOURCE): see shared/ANCHORS.md
            ("--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"),
            ("-f", "-t", "0"),
            "conmon",
        ),
    ]


def load_image(base: Path, engines: Sequence[Engine]) -> str:
    """Make kobako's busybox image, save it, load it into docker and podman; its id."""
    from kobako.image.archive import default_image
    from kobako.image.store import Store

    kobako, *others = engines
    assert kobako.env is not None
    image = default_image(Store.open(kobako.env["KOBAKO_ROOT"]))
    archive = base / "busybox.tar"
    kobako.output("save", "-o", str(archive), IMAGE)
    for engine in others:
        engine.output("load", "-q", "-i", str(archive))
        loaded = engine.output("image", "inspect", "-f", "{{.Id}}", IMAGE).strip()
        if loaded.removeprefix("sha256:") != image.id.removeprefix("sha256:"):
            raise BenchError(f"{engine.name} loaded {IMAGE} as {loaded}, not {image.id}")
    return image.id


# --- the measurements ---------------------------------------------------------------------


def exec_tools(engines: Sequence[Engine], ids: Mapping[str, str]) -> dict[str, Callable[[], float]]:
    """Each exec row: a function that runs ``true`` in its engine's container, in seconds."""
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.execute import exec_in

    by_name = {e.name: e for e in engines}
    kobako = by_name["kobako"]
    assert kobako.env is not None
    store = Store.open(kobako.env["KOBAKO_ROOT"])
    doc = ContainerStore(store).get(ids["kobako"])
    devnull = os.open(os.devnull, os.O_RDWR)  # held for the process's life

    def api() -> float:
        t0 = time.perf_counter()
        status = exec_in(store, doc, ["true"], stdin=devnull, stdout=devnull, stderr=devnull)
        elapsed = time.perf_counter() - t0
        if status != 0:
            raise BenchError(f"kobako API: true exited {status}")
        return elapsed

    def cli(name: str) -> Callable[[], float]:
        engine = by_name[name]

        def run() -> float:
            t0 = time.perf_counter()
            engine.output("exec", ids[name], "true")
            return time.perf_counter() - t0

        return run

    tools = {
        "kobako exec (CLI)": cli("kobako"),
        "kobako exec (API)": api,
        "docker exec": cli("docker"),
        "podman exec": cli("podman"),
    }
    assert tuple(tools) == EXEC_ROWS
    return tools


def run_exec_rounds(
    tools: Mapping[str, Callable[[], float]], rounds: int, warmup: int, rng: random.Random
) -> tuple[dict[str, list[float]], list[list[str]]]:
    """Each round runs every tool once in a shuffled order; ``warmup`` rounds first, untimed.

    Returns:
        The samples (s) per row, index = round; the order of each timed round.
    """
    samples: dict[str, list[float]] = {name: [] for name in tools}
    orders: list[list[str]] = []
    order = list(tools)
    for r in range(warmup + rounds):
        rng.shuffle(order)
        times = {name: tools[name]() for name in order}
        if r >= warmup:
            orders.append(list(order))
            for name, t in times.items():
                samples[name].append(t)
        done = r + 1 - warmup
        if done > 0 and (done % 10 == 0 or done == rounds):
            print(f"  exec round {done}/{rounds}", file=sys.stderr)
    return samples, orders


@dataclass
class StartSamples:
    """The start part, per engine: index = round (``each`` holds every run -d of it)."""

    total: dict[str, list[float]]
    each: dict[str, list[float]]
    remove: dict[str, list[float]]
    #: (RSS, PSS) KiB of every helper, measured with all of the round's containers running.
    memory: dict[str, list[tuple[int, int]]]


def run_start_rounds(
    engines: Sequence[Engine],
    count: int,
    rounds: int,
    rng: random.Random,
    made: dict[str, list[str]],
) -> tuple[StartSamples, list[list[str]]]:
    """Per round and engine (shuffled): ``count`` times ``run -d``, helper memory, ``rm -f``.

    ``made`` gets every container id as soon as it exists (for the clean-up).
    """
    names = [e.name for e in engines]
    s = StartSamples(
        total={n: [] for n in names},
        each={n: [] for n in names},
        remove={n: [] for n in names},
        memory={n: [] for n in names},
    )
    orders: list[list[str]] = []
    order = list(engines)
    for r in range(rounds):
        rng.shuffle(order)
        orders.append([e.name for e in order])
        for engine in order:
            ids: list[str] = []
            t0 = time.perf_counter()
            for _ in range(count):
                t, cid = engine.run_detached()
                made[engine.name].append(cid)
                ids.append(cid)
                s.each[engine.name].append(t)
            s.total[engine.name].append(time.perf_counter() - t0)
            time.sleep(1)  # let the helpers settle
            s.memory[engine.name] += helper_memory(engine, ids)
            s.remove[engine.name].append(engine.remove(ids))
            left = engine.output("ps", "-aq", "--no-trunc").split()
            if left:
                raise BenchError(f"{engine.name}: {len(left)} containers left after rm -f")
        print(f"  start round {r + 1}/{rounds}", file=sys.stderr)
    return s, orders


# --- the report ---------------------------------------------------------------------------


def paired(xs: Sequence[float], base: Sequence[float]) -> float:
    """The median over rounds of the ratio within each round."""
    return statistics.median(x / b for x, b in zip(xs, base, strict=True))


def _p90(xs: Sequence[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


def _mib(kib: float) -> str:
    return f"{kib / 1024:.2f}"


def report(
    exec_samples: Mapping[str, list[float]],
    memory: Mapping[str, Mapping[str, tuple[int, int]]],
    starts: StartSamples | None,
    engines: Sequence[Engine],
    count: int,
) -> tuple[str, bool]:
    """The three tables (markdown) and the target lines; also whether every target was met."""
    met = True
    lines: list[str] = []
    targets: list[str] = []
    if exec_samples:
        podman, docker = exec_samples[EXEC_BASELINE], exec_samples["docker exec"]
        lines += [
            f"exec `true` in an idle container, {len(podman)} rounds\n",
            "| row | median ms | p90 ms | paired vs podman exec | paired vs docker exec |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, xs in exec_samples.items():
            lines.append(
                f"| {name} | {statistics.median(xs) * 1e3:.1f} | {_p90(xs) * 1e3:.1f} "
                f"| {paired(xs, podman):.2f}x | {paired(xs, docker):.2f}x |"
            )
        lines.append("")
        for name in EXEC_ROWS[:2]:
            p = paired(exec_samples[name], podman)
            ratio = statistics.median(exec_samples[name]) / statistics.median(podman)
            ok = p <= EXEC_TARGET
            met &= ok
            targets.append(
                f"target: {name} <= {EXEC_TARGET}x podman exec: paired {p:.2f}x "
                f"(medians {ratio:.2f}x) {'met' if ok else 'MISSED'}"
            )
    helper = {e.name: e.helper for e in engines}
    lines += [
        "per-container helper, MiB",
        "",
        "| engine (helper) | idle RSS | idle PSS | RSS after the exec rounds "
        f"| RSS, {count} running (median) | PSS, {count} running (median) | idle RSS vs conmon |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    conmon_rss = memory["idle"]["podman"][0]
    for name in helper:
        idle_rss, idle_pss = memory["idle"][name]
        after = _mib(memory["after"][name][0])
        many = starts.memory[name] if starts else []
        rss_many = _mib(statistics.median(m[0] for m in many)) if many else "-"
        pss_many = _mib(statistics.median(m[1] for m in many)) if many else "-"
        lines.append(
            f"| {name} ({helper[name]}) | {_mib(idle_rss)} | {_mib(idle_pss)} | {after} "
            f"| {rss_many} | {pss_many} | {idle_rss / conmon_rss:.2f}x |"
        )
    lines.append("")
    kobako_rss = memory["idle"]["kobako"][0]
    ok = kobako_rss <= RSS_TARGET * conmon_rss
    met &= ok
    targets.append(
        f"target: kobako-monitor RSS <= {RSS_TARGET}x conmon's: {kobako_rss} KiB vs "
        f"{conmon_rss} KiB = {kobako_rss / conmon_rss:.2f}x {'met' if ok else 'MISSED'}"
    )
    monitors = [kobako_rss, *(m[0] for m in (starts.memory["kobako"] if starts else []))]
    worst = max(*monitors, memory["after"]["kobako"][0])
    ok = worst <= RSS_LIMIT_KIB
    met &= ok
    targets.append(
        f"target: every kobako-monitor <= {RSS_LIMIT_KIB} KiB RSS: largest {worst} KiB "
        f"{'met' if ok else 'MISSED'}"
    )
    if starts:
        rounds = len(starts.total["podman"])
        lines += [
            f"{count} detached containers started in a `run -d` loop, then `rm -f` of them in "
            f"one command; {rounds} round(s)\n",
            f"| engine | {count} run -d, s | one run -d, median ms | paired vs podman "
            f"| paired vs docker | rm -f of {count}, s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, xs in starts.total.items():
            lines.append(
                f"| {name} | {statistics.median(xs):.2f} "
                f"| {statistics.median(starts.each[name]) * 1e3:.0f} "
                f"| {paired(xs, starts.total['podman']):.2f}x "
                f"| {paired(xs, starts.total['docker']):.2f}x "
                f"| {statistics.median(starts.remove[name]):.2f} |"
            )
        lines.append("")
    return "\n".join(lines + targets) + "\n", met


# --- clean-up -----------------------------------------------------------------------------


def _cgroup_dirs(depth: int = 4) -> list[Path]:
    """Every cgroup directory down to ``depth`` below /sys/fs/cgroup."""
    found: list[Path] = []

    def walk(path: Path, level: int) -> None:
        with contextlib.suppress(OSError), os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    found.append(Path(entry.path))
                    if level < depth:
                        walk(Path(entry.path), level + 1)

    walk(CGROUP_ROOT, 1)
    return found


def _cgroup_parents() -> set[Path]:
    return {p for p in _cgroup_dirs(depth=2) if p.name in CGROUP_PARENTS}


def remove_cgroups(ids: Sequence[str], parents_before: set[Path]) -> list[str]:
    """Kill what runs in cgroups named after ``ids`` and remove them; what was found.

    Also removes the parents docker and podman made during the run (``docker``,
    ``libpod_parent`` and its ``conmon``) once they are empty. Only directories are removed
    (``rmdir``); no hierarchy is unmounted.
    """
    left = []
    wanted = set(ids)
    for path in sorted(_cgroup_dirs(), key=lambda p: -len(p.parts)):
        if not any(cid in path.name for cid in wanted):
            continue
        left.append(f"cgroup {path}")
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
    for parent in _cgroup_parents() - parents_before:
        for path in sorted(
            (p for p in _cgroup_dirs() if parent in p.parents), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                path.rmdir()
        try:
            parent.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(f"cgroup {parent} (not empty)")
    return left


def kobako_leftovers(ids: Sequence[str]) -> list[str]:
    """kobako's runtime directories (under /run/kobako) of our containers."""
    from kobako.runtime.lifecycle import RUN_DIR

    return [
        f"{RUN_DIR}/containers/{cid}"
        for cid in ids
        if os.path.lexists(os.path.join(RUN_DIR, "containers", cid))
    ]


def clean_up(
    engines: Sequence[Engine],
    made: Mapping[str, Sequence[str]],
    daemon: Daemon | None,
    parents_before: set[Path],
) -> list[str]:
    """Remove every container, stop dockerd, then sweep up; what had to be swept."""
    problems = []
    for engine in engines:
        try:
            engine.remove_all()
        except BenchError as e:
            problems.append(f"clean-up: {e}")
    if daemon is not None:
        daemon.stop()
    ids = [cid for name in made for cid in made[name]]
    problems += remove_cgroups(ids, parents_before)
    problems += kobako_leftovers(made.get("kobako", ()))
    return problems


# --- main ---------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("-n", "--rounds", type=int, default=40, help="timed exec rounds (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="untimed exec rounds first (default 5)")
    p.add_argument("--starts", type=int, default=3, help="rounds of the start part (default 3)")
    p.add_argument("--count", type=int, default=50, help="containers per start round (default 50)")
    p.add_argument("--seed", type=int, default=None, help="seed of the round orders")
    p.add_argument("--json", metavar="FILE", type=Path, help="save the raw samples here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.starts < 0 or args.count < 1:
        p.error("--rounds and --count must be at least 1, --warmup and --starts at least 0")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if os.geteuid() != 0:
        print("lifecycle.py: run as root (loop mounts, dockerd, containers)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    try:
        install_missing(PACKAGES)
    except BenchError as e:
        print(f"lifecycle.py: {e}", file=sys.stderr)
        return 1
    before = HostState.take()
    byproducts_before = {p for p in PODMAN_BYPRODUCTS if os.path.lexists(p)}
    parents_before = _cgroup_parents()
    base = Path(tempfile.mkdtemp(prefix="kobako-lc-"))
    status = 0
    engines: list[Engine] = []
    made: dict[str, list[str]] = {"kobako": [], "docker": [], "podman": []}
    daemon: Daemon | None = None
    problems: list[str] = []
    try:
        with Scratch(base) as fs:
            try:
                daemon, sock = start_dockerd(base, fs)
                engines = make_engines(base, fs, sock)
                image = load_image(base, engines)
                from kobako import __version__

                meta = {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "kernel": platform.release(),
                    "cpus": os.cpu_count(),
                    "kobako": __version__,
                    "dockerd": version(["dockerd", "--version"]),
                    "containerd": version(["containerd", "--version"]),
                    "podman": version(["podman", "--version"]),
                    "conmon": version(["conmon", "--version"]),
                    "crun": version(["crun", "--version"]),
                    "image": image,
                    "rounds": args.rounds,
                    "warmup": args.warmup,
                    "starts": args.starts,
                    "count": args.count,
                    "seed": args.seed,
                    "loadavg_before": os.getloadavg()[0],
                }
                print(
                    f"{args.rounds} exec rounds (+{args.warmup} warm-up), {args.starts} x "
                    f"{args.count} starts, seed {args.seed}, {meta['dockerd']}, "
                    f"{meta['podman']}, load {meta['loadavg_before']:.2f}",
                    file=sys.stderr,
                )
                rng = random.Random(args.seed)
                # exec: one idle container per engine
                ids = {}
                for engine in engines:
                    try:
                        _, cid = engine.run_detached()
                    except BenchError as e:
                        if "hybrid mode not supported" in str(e):
                            raise BenchError(
                                f"{e} (run benches/setup.sh: it moves hugetlb off cgroup2)"
                            ) from None
                        raise
                    made[engine.name].append(cid)
                    ids[engine.name] = cid
                time.sleep(1)  # let the helpers settle
                memory: dict[str, dict[str, tuple[int, int]]] = {
                    "idle": {e.name: helper_memory(e, [ids[e.name]])[0] for e in engines}
                }
                tools = exec_tools(engines, ids)
                exec_samples, exec_orders = run_exec_rounds(tools, args.rounds, args.warmup, rng)
                memory["after"] = {e.name: helper_memory(e, [ids[e.name]])[0] for e in engines}
                for engine in engines:
                    engine.remove([ids[engine.name]])
                starts: StartSamples | None = None
                start_orders: list[list[str]] = []
                if args.starts:
                    starts, start_orders = run_start_rounds(
                        engines, args.count, args.starts, rng, made
                    )
                meta["loadavg_after"] = os.getloadavg()[0]
                text, met = report(exec_samples, memory, starts, engines, args.count)
                print(
                    f"\n{platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}, "
                    f"seed {args.seed}, load {meta['loadavg_before']:.2f} before, "
                    f"{meta['loadavg_after']:.2f} after\n"
                )
                print(text)
                status = 0 if met else 1
                if args.json:
                    args.json.write_text(
                        json.dumps(
                            {
                                "meta": meta,
                                "exec_s": exec_samples,
                                "exec_orders": exec_orders,
                                "helper_kib": memory,
                                "starts": starts.__dict__ if starts else None,
                                "start_orders": start_orders,
                            },
                            indent=1,
                        )
                    )
            finally:
                # a second Ctrl-C must not cut the clean-up short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                problems = clean_up(engines, made, daemon, parents_before)
    except BenchError as e:
        print(f"lifecycle.py: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("lifecycle.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if daemon is not None:
            daemon.stop()
        for path in set(PODMAN_BYPRODUCTS) - byproducts_before:
            shutil.rmtree(path, ignore_errors=True)
        left = problems + leftovers(base, before)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print("lifecycle.py: left behind: " + ", ".join(left), file=sys.stderr)
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
