"""Container start latency: kobako (Python API and CLI) against crun, runc and the floor.

Each round runs every tool once, in a freshly shuffled order, so that the machine's drift
(these VMs move by 30% in minutes) falls on all tools alike; the per-round ratio to crun is the
robust figure. Every tool runs ``/bin/true`` in the same busybox root filesystem:

* ``kobako API``: :func:`kobako.runtime.run` in this process, with the default confinement
  (Docker's capabilities and seccomp profile, a cgroup, all namespaces);
* ``kobako CLI``: ``kobako run --rm --rootfs ROOTFS /bin/true``, a new interpreter each time;
* ``crun run`` and ``runc run`` on an OCI bundle made by ``runc spec`` (args ``/bin/true``,
  no terminal), each with a unique id; ``run`` without ``-d`` deletes the container on exit;
* the floor: ``unshare --pid --fork --mount --uts --ipc --net chroot ROOTFS /bin/true``;
* ``/bin/true`` on the host.

Run as root, after ``benches/setup.sh``, with the venv that has kobako (release build)::

    python benches/start.py            # 200 rounds
    python benches/start.py --quick    # 30 rounds
    python benches/start.py --json samples.json --importtime

``--importtime`` adds what ``kobako run`` imports (``python -X importtime``), as the CLI's
start-up is a large part of its latency.
"""

from __future__ import annotations

import argparse
import glob
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

from kobako.fixtures import busybox_rootfs
from kobako.runtime import Process, Spec

#: Prefix of the crun/runc container ids this benchmark makes, to find leftovers.
ID_PREFIX = "kobako-bench"
#: The tool every ratio is taken against.
BASELINE = "crun run"
#: The targets of issue 2, as ratios of the median to crun's, same run.
TARGETS = {"kobako API": 1.0, "kobako CLI": 2.5}
#: Where each runtime keeps per-container state, to check that nothing is left behind.
KOBAKO_LEFTOVER_GLOBS = (
    "/run/kobako/containers/*",
    "/sys/fs/cgroup/kobako/*/",
    "/sys/fs/cgroup/*/kobako/*/",
)


class BenchError(Exception):
    """A tool failed or the machine is not ready; printed as one line."""


@dataclass(frozen=True)
class Tool:
    """One way to start a container: ``start(round)`` runs it once and returns nanoseconds."""

    name: str
    start: Callable[[int], int]


def _timed(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` with no stdin/stdout and return its wall time in ns; raise on failure."""
    t0 = time.perf_counter_ns()
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as e:
        raise BenchError(f"{argv[0]}: {e.strerror}") from None
    elapsed = time.perf_counter_ns() - t0
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(
            f"{' '.join(argv)} exited {proc.returncode}: {err[-1] if err else '(no stderr)'}"
        )
    return elapsed


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0].strip() if out else "unknown"


def make_bundle(rootfs: Path, bundle: Path) -> None:
    """Make an OCI bundle in ``bundle`` with ``runc spec`` and a copy of ``rootfs``.

    The config is runc's default but for ``args`` (``/bin/true``) and ``terminal`` (false).
    """
    bundle.mkdir()
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    config_path.write_text(json.dumps(config, indent=2))


def python_env(pycache: Path) -> dict[str, str]:
    """The environment for a new interpreter: bytecode cached, as after ``pip install``.

    ``PYTHONDONTWRITEBYTECODE`` (set in some environments) would make every ``kobako`` start
    compile kobako's modules from source, which an installed wheel never does; the caches go
    under ``pycache`` rather than into the source tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def make_tools(rootfs: Path, bundle: Path, env: Mapping[str, str]) -> list[Tool]:
    """The tools to measure, each closed over the fixtures; ``env`` is the CLI's."""
    from kobako.runtime import run

    kobako_cli = Path(sys.executable).parent / "kobako"
    if not kobako_cli.exists():
        raise BenchError(f"no kobako command next to {sys.executable}: install kobako first")
    spec = Spec(root=str(rootfs), process=Process(args=("/bin/true",)))
    devnull = os.open(os.devnull, os.O_RDWR)  # held for the process's life
    pid = os.getpid()

    def api(_: int) -> int:
        t0 = time.perf_counter_ns()
        result = run(spec, stdin=devnull, stdout=devnull, stderr=devnull)
        elapsed = time.perf_counter_ns() - t0
        if result.status != 0:
            raise BenchError(f"kobako API: /bin/true exited {result.status}")
        return elapsed

    def oci(runtime: str) -> Callable[[int], int]:
        def start(i: int) -> int:
            return _timed([runtime, "run", "-b", str(bundle), f"{ID_PREFIX}-{pid}-{runtime}-{i}"])

        return start

    cli = [str(kobako_cli), "run", "--rm", "--rootfs", str(rootfs), "/bin/true"]
    floor = ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net"]
    floor += ["chroot", str(rootfs), "/bin/true"]
    return [
        Tool("kobako API", api),
        Tool("kobako CLI", lambda _: _timed(cli, env)),
        Tool("crun run", oci("crun")),
        Tool("runc run", oci("runc")),
        Tool("unshare+chroot (floor)", lambda _: _timed(floor)),
        Tool("/bin/true on the host", lambda _: _timed(["/bin/true"])),
    ]


def run_rounds(
    tools: list[Tool], rounds: int, warmup: int, rng: random.Random
) -> tuple[dict[str, list[int]], list[list[str]]]:
    """Run ``warmup`` untimed rounds, then ``rounds`` timed ones, each in a shuffled order.

    Returns:
        The samples (ns) per tool, index = round, and the order of each timed round.
    """
    samples: dict[str, list[int]] = {t.name: [] for t in tools}
    orders: list[list[str]] = []
    order = list(tools)
    # Ctrl-C takes effect between two starts: interrupting one would have subprocess.run
    # SIGKILL a runtime half-way and leave its container behind.
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum))
    try:
        for i in range(warmup + rounds):
            rng.shuffle(order)
            results = {}
            for tool in order:
                results[tool.name] = tool.start(i)
                if interrupted:
                    raise KeyboardInterrupt
            if i >= warmup:
                orders.append([t.name for t in order])
                for name, ns in results.items():
                    samples[name].append(ns)
            done = i + 1 - warmup
            if done > 0 and (done % 10 == 0 or done == rounds):
                print(f"  round {done}/{rounds}", file=sys.stderr, end="\r")
    finally:
        signal.signal(signal.SIGINT, previous)
    print(file=sys.stderr)
    return samples, orders


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def summarize(samples: dict[str, list[int]]) -> str:
    """The markdown table: median, p90, ratio of medians and median of paired ratios."""
    base = samples[BASELINE]
    base_median = statistics.median(base)
    lines = [
        f"| tool | median ms | p90 ms | median / {BASELINE} median "
        f"| paired ratio to {BASELINE} (median of rounds) | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, xs in samples.items():
        median = statistics.median(xs)
        p90 = statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]
        paired = statistics.median(x / b for x, b in zip(xs, base, strict=True))
        target = ""
        if name in TARGETS:
            ok = paired <= TARGETS[name]
            target = f"<= {TARGETS[name]:.1f}x paired: {'met' if ok else 'MISSED'}"
        lines.append(
            f"| {name} | {_ms(median)} | {_ms(p90)} | {median / base_median:.2f}x "
            f"| {paired:.2f}x | {target} |"
        )
    return "\n".join(lines)


def _runtime_ids(runtime: str) -> list[str]:
    out = subprocess.run([runtime, "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def _kobako_state() -> set[str]:
    return {p for pattern in KOBAKO_LEFTOVER_GLOBS for p in glob.glob(pattern)}


def check_leftovers(kobako_before: set[str]) -> list[str]:
    """What this run left behind; crun/runc containers of ours are deleted on the way."""
    left = []
    for runtime in ("crun", "runc"):
        for cid in _runtime_ids(runtime):
            if cid.startswith(f"{ID_PREFIX}-{os.getpid()}-"):
                left.append(f"{runtime} container {cid}")
                subprocess.run([runtime, "delete", "-f", cid], capture_output=True, check=False)
    left += sorted(f"kobako {p}" for p in _kobako_state() - kobako_before)
    return left


def importtime(kobako_cli: Path, rootfs: Path, env: Mapping[str, str], repeat: int = 5) -> str:
    """What a real ``kobako run`` imports: total, and the top 10 by cumulative time.

    The CLI runs under ``python -X importtime`` ``repeat`` times after a warm run (which
    writes the bytecode caches); each module's figures are medians over the runs. For scale,
    the bare interpreter's start (``python -c pass``) is timed too.
    """
    argv = [sys.executable, "-X", "importtime", str(kobako_cli)]
    argv += ["run", "--rm", "--rootfs", str(rootfs), "/bin/true"]
    per_module: dict[str, list[tuple[int, int]]] = {}
    totals: list[int] = []
    for i in range(repeat + 1):
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env
        )
        if proc.returncode != 0:
            raise BenchError(f"kobako run under -X importtime exited {proc.returncode}")
        total = 0
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "[us]" in line:
                continue
            self_us, cumulative, name = line.removeprefix("import time:").split("|")
            total += int(self_us)
            if i:
                per_module.setdefault(name.strip(), []).append((int(cumulative), int(self_us)))
        if i:
            totals.append(total)
    bare = statistics.median(_timed([sys.executable, "-c", "pass"], env) for _ in range(repeat))

    def med(runs: list[tuple[int, int]], k: int) -> float:
        return statistics.median(r[k] for r in runs) / 1000

    top = sorted(per_module.items(), key=lambda kv: -med(kv[1], 0))[:10]
    lines = [
        f"`python -X importtime kobako run --rm --rootfs ROOTFS /bin/true`: "
        f"{len(per_module)} modules, {statistics.median(totals) / 1e3:.1f} ms of imports "
        f"(median of {repeat} runs; `python -c pass` takes {bare / 1e6:.1f} ms)",
        "",
        "| module (top 10 by cumulative) | cumulative ms | self ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {med(runs, 0):.2f} | {med(runs, 1):.2f} |" for name, runs in top]
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--rounds", type=int, default=200, help="timed rounds (default 200)")
    p.add_argument("--quick", action="store_true", help="30 rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--seed", type=int, default=None, help="seed of the round orders")
    p.add_argument("--json", metavar="FILE", help="save the raw samples (ns) here")
    p.add_argument(
        "--importtime", action="store_true", help="also summarise what `kobako run` imports"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 30
    if args.rounds < 0 or args.warmup < 0:
        p.error("--rounds and --warmup must be at least 0")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if os.geteuid() != 0:
        print("start.py: run as root", file=sys.stderr)
        return 1
    for tool in ("crun", "runc", "unshare", "chroot"):
        if shutil.which(tool) is None:
            print(f"start.py: {tool} is missing: run benches/setup.sh", file=sys.stderr)
            return 1
    kobako_before = _kobako_state()
    tmp = Path(tempfile.mkdtemp(prefix="kobako-bench-"))
    status = 0
    try:
        rootfs = busybox_rootfs(tmp / "rootfs")
        bundle = tmp / "bundle"
        make_bundle(rootfs, bundle)
        env = python_env(tmp / "pycache")
        tools = make_tools(rootfs, bundle, env)
        from kobako import __version__

        meta = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "kobako": __version__,
            "crun": _version(["crun", "--version"]),
            "runc": _version(["runc", "--version"]),
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "warmup": args.warmup,
            "seed": args.seed,
            "loadavg_before": os.getloadavg()[0],
        }
        if args.rounds:
            print(
                f"{args.rounds} rounds (+{args.warmup} warm-up), seed {args.seed}, "
                f"{meta['crun']}, {meta['runc']}, kernel {meta['kernel']}, "
                f"load {meta['loadavg_before']:.2f}",
                file=sys.stderr,
            )
            samples, orders = run_rounds(tools, args.rounds, args.warmup, random.Random(args.seed))
            meta["loadavg_after"] = os.getloadavg()[0]
            print(summarize(samples))
            print(
                f"\n{args.rounds} rounds, load average {meta['loadavg_before']:.2f} before, "
                f"{meta['loadavg_after']:.2f} after"
            )
            if args.json:
                Path(args.json).write_text(
                    json.dumps({"meta": meta, "samples_ns": samples, "orders": orders}, indent=1)
                )
        if args.importtime:
            if args.rounds:
                print()
            print(importtime(Path(sys.executable).parent / "kobako", rootfs, env))
    except BenchError as e:
        print(f"start.py: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("start.py: interrupted", file=sys.stderr)
        status = 130
    finally:
        left = check_leftovers(kobako_before)
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            print("start.py: left behind: " + ", ".join(left), file=sys.stderr)
    return status or (1 if left else 0)


if __name__ == "__main__":
    sys.exit(main())
