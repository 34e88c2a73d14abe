"""A running container looked into and paused: ``top``, ``stats``, ``port``, ``pause``.

What dockerd does for ``docker top``, ``stats``, ``port``, ``pause`` and ``unpause``, for the
CLI and the Python API alike, in docker's shapes:

* :func:`pause` freezes the container's cgroup and records it ``paused``; :func:`unpause`
  thaws it. ``stop`` and ``kill`` :func:`thaw` it first, as dockerd does: a frozen process
  takes no signal (on v1, not even SIGKILL) until it is thawed.
* :func:`top` runs the host's ``ps`` and keeps the rows of the processes in the container's
  cgroup: ``{"Titles": [...], "Processes": [[...]]}``.
* :func:`sample` reads the container's usage once, in the shape of docker's stats API;
  :func:`stats` pairs two samples a second apart, as dockerd does unless asked for one shot,
  so that ``precpu_stats`` is filled and a CPU percentage can be computed.
* :func:`ports` is docker's ``NetworkSettings.Ports``.
"""

from __future__ import annotations

import os
import time

from kobako.errors import Conflict, ContainerNotFound, InvalidArgument, KobakoError
from kobako.runtime.cgroups import Cgroup
from kobako.runtime.containers import ContainerStore, is_running, now_rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from kobako.image.store import Store

__all__ = ["pause", "ports", "sample", "stats", "stream", "thaw", "top", "unpause"]

#: Go's zero time, which docker writes for a time that never was.
ZERO_TIME = "0001-01-01T00:00:00Z"

#: dockerd's stats interval, in seconds.
INTERVAL = 1.0

_NS = 1_000_000_000


def _find(cid: str) -> Cgroup | None:
    """The container's cgroup, without the directory fd :meth:`Cgroup.find` opens on v2."""
    cgroup = Cgroup.find(cid)
    if cgroup is not None and cgroup.clone_fd is not None:
        os.close(cgroup.clone_fd)
        cgroup.clone_fd = None
    return cgroup


def _not_running(cid: str) -> Conflict:
    return Conflict(f"container {cid} is not running")


# --- pause ---------------------------------------------------------------------------------


def pause(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Freeze every process of a running container (``docker pause``); returns the record.

    Raises:
        Conflict: It is not running, is restarting, or is already paused.
        CgroupError: The cgroup could not be frozen (it is left thawed).
    """
    containers = ContainerStore(store)
    cid = doc["Id"]
    with containers.lock(cid):
        current = containers.settle(containers.load(cid))
        state = current["State"]
        status = state.get("Status")
        if status == "paused":
            raise Conflict(f"Container {cid} is already paused")
        if status == "restarting":
            raise Conflict(f"Container {cid} is restarting, wait until the container is running")
        cgroup = _find(cid) if status == "running" else None
        if cgroup is None:
            raise _not_running(cid)
        cgroup.freeze()
        state.update(Status="paused", Paused=True)
        containers.save(current)
    return current


def unpause(store: Store, doc: dict[str, Any]) -> dict[str, Any]:
    """Let a paused container's processes run again (``docker unpause``); returns the record.

    Raises:
        Conflict: It is not paused.
        CgroupError: The cgroup could not be thawed.
    """
    containers = ContainerStore(store)
    cid = doc["Id"]
    with containers.lock(cid):
        current = containers.settle(containers.load(cid))
        if current["State"].get("Status") != "paused":
            raise Conflict(f"Container {cid} is not paused")
        cgroup = _find(cid)
        if cgroup is not None:
            cgroup.thaw()
        current["State"].update(Status="running", Paused=False)
        containers.save(current)
    return current


def thaw(store: Store, cid: str) -> None:
    """Thaw a container's cgroup, if it has one, and record a paused container as running.

    What ``stop`` and ``kill`` do before they signal, as dockerd does. Harmless for a
    container that is not paused, or gone.

    Raises:
        CgroupError: The cgroup could not be thawed.
    """
    containers = ContainerStore(store)
    try:
        lock = containers.lock(cid)
    except ContainerNotFound:
        return
    with lock:
        cgroup = _find(cid)
        if cgroup is not None:
            cgroup.thaw()
        try:
            doc = containers.load(cid)
        except ContainerNotFound:
            return
        if doc["State"].get("Status") == "paused":
            doc["State"].update(Status="running", Paused=False)
            containers.save(doc)


# --- top -----------------------------------------------------------------------------------


def _check_ps_args(ps_args: str) -> None:
    """Refuse ``-o user=PID``-style options that would rename another column PID (dockerd's
    ``validatePSArgs``): the PID column is how the container's rows are found."""
    import re

    for key, value in re.findall(r"\s+(\S*)=\s*(PID\S*)", ps_args):
        if key != "pid":
            raise InvalidArgument(f'specifying "{key}={value}" is not allowed')


def _ps(args: list[str]) -> tuple[int, str, str]:
    import subprocess

    try:
        done = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    except OSError as e:
        raise KobakoError(f"ps: {e.strerror}") from e
    return done.returncode, done.stdout, done.stderr


def top(doc: dict[str, Any], ps_args: str | None = None) -> dict[str, list[Any]]:
    """The processes of a running container as the host's ``ps`` shows them (``docker top``).

    Args:
        doc: The container's (settled) record.
        ps_args: Options for ``ps``, split on whitespace; default ``-ef``.

    Returns:
        ``{"Titles": [...], "Processes": [[...], ...]}``: ``ps``'s header, and its rows whose
        PID is in the container's cgroup (each cut into as many fields as there are titles,
        the last one keeping its spaces).

    Raises:
        Conflict: The container is not running.
        InvalidArgument: ``ps_args`` would rename a column PID.
        KobakoError: ``ps`` failed (the message is its first line of error) or printed no
            PID column.

    Example:
        >>> top(doc)["Titles"]
        ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD']
    """
    cid = doc["Id"]
    status = doc["State"].get("Status")
    if status == "restarting":
        raise Conflict(f"Container {cid} is restarting, wait until the container is running")
    cgroup = _find(cid) if status in ("running", "paused") else None
    if cgroup is None:
        raise _not_running(cid)
    pids = cgroup.pids()
    text = ps_args or "-ef"
    _check_ps_args(text)
    args = text.split()
    code, out, err = _ps([*args, "-q" + ",".join(map(str, pids))]) if pids else (1, "", "")
    if code != 0:  # some options (a forest, f) refuse -q: list every process instead
        code, out, err = _ps(args)
        if code != 0:
            raise KobakoError(
                f"ps: {(err.strip().splitlines() or ['exit status ' + str(code)])[0]}"
            )
    return _parse_ps(out, set(pids))


def _parse_ps(output: str, pids: set[int]) -> dict[str, list[Any]]:
    """dockerd's ``parsePSOutput``: the header, and the rows whose PID is in ``pids`` (a thread
    row, whose PID is ``-``, goes with the process row before it)."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise KobakoError("Couldn't find PID field in ps output")
    index = titles.index("PID")
    processes: list[list[str]] = []
    kept = False
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= index:
            continue
        if fields[index] == "-":
            if kept:
                processes.append(_fit(fields, len(titles)))
            continue
        if not fields[index].isdigit():
            raise KobakoError(f"Unexpected pid '{fields[index]}'")
        kept = int(fields[index]) in pids
        if kept:
            processes.append(_fit(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _fit(fields: list[str], count: int) -> list[str]:
    """As many fields as titles: the overhanging ones (a command's arguments) joined."""
    return [*fields[: count - 1], " ".join(fields[count - 1 :])]


# --- stats ---------------------------------------------------------------------------------


def _cpu_usage(total: int = 0, kernel: int = 0, user: int = 0) -> dict[str, int]:
    return {"total_usage": total, "usage_in_kernelmode": kernel, "usage_in_usermode": user}


def _no_throttling() -> dict[str, int]:
    return {"periods": 0, "throttled_periods": 0, "throttled_time": 0}


def _empty(doc: dict[str, Any]) -> dict[str, Any]:
    """What dockerd answers for a container that is not running: every counter zero."""
    blkio = (
        "io_service_bytes_recursive",
        "io_serviced_recursive",
        "io_queue_recursive",
        "io_service_time_recursive",
        "io_wait_time_recursive",
        "io_merged_recursive",
        "io_time_recursive",
        "sectors_recursive",
    )
    return {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": dict.fromkeys(blkio),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": _cpu_usage(), "throttling_data": _no_throttling()},
        "precpu_stats": {"cpu_usage": _cpu_usage(), "throttling_data": _no_throttling()},
        "memory_stats": {},
        "name": doc["Name"],
        "id": doc["Id"],
    }


def _system_cpu_ns() -> int:
    """The host's CPU time since boot, in nanoseconds, as dockerd counts it (the first seven
    fields of /proc/stat's ``cpu`` line: user to softirq)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"cpu "):
                ticks = sum(int(v) for v in line.split()[1:8])
                return ticks * _NS // os.sysconf("SC_CLK_TCK")
    return 0


def _machine_memory() -> int:
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _networks(pid: int) -> dict[str, dict[str, int]]:
    """The counters of each interface but ``lo`` in the network namespace of ``pid``; none
    when it shares the host's (``--network host``, as docker shows no network then)."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat("/proc/self/ns/net")
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return {}
        with open(f"/proc/{pid}/net/dev") as f:
            text = f.read()
    except OSError:
        return {}
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = counters.split()
        if name.strip() == "lo" or len(values) < 12:
            continue
        rx, tx = [int(v) for v in values[:4]], [int(v) for v in values[8:12]]
        out[name.strip()] = {
            "rx_bytes": rx[0],
            "rx_packets": rx[1],
            "rx_errors": rx[2],
            "rx_dropped": rx[3],
            "tx_bytes": tx[0],
            "tx_packets": tx[1],
            "tx_errors": tx[2],
            "tx_dropped": tx[3],
        }
    return out


def sample(doc: dict[str, Any]) -> dict[str, Any]:
    """The container's usage now, in the shape of docker's stats API (one shot).

    ``cpu_stats`` holds the container's CPU time and the host's (``system_cpu_usage``), both
    in nanoseconds; ``precpu_stats`` is empty (see :func:`stats`). The memory limit of a
    container without one is the host's memory, as docker shows it. ``networks`` is there
    when the container has a network namespace of its own with an interface besides ``lo``.
    A container that is not running gets docker's answer for it: every counter zero.

    Args:
        doc: The container's (settled) record.

    Raises:
        CgroupError: A cgroup file could not be read.
    """
    status = doc["State"].get("Status")
    cgroup = _find(doc["Id"]) if status in ("running", "paused") else None
    if cgroup is None:
        return _empty(doc)
    read = now_rfc3339()
    usage = cgroup.stats()
    system = _system_cpu_ns()
    machine = _machine_memory()
    limit = usage.memory_limit
    memory: dict[str, Any] = {"usage": usage.memory_usage}
    if usage.memory_peak is not None:
        memory["max_usage"] = usage.memory_peak
    memory["stats"] = cgroup.memory_stat()
    memory["limit"] = machine if limit is None or (machine and limit > machine) else limit
    pids: dict[str, int] = {"current": usage.pids_current}
    if usage.pids_limit:
        pids["limit"] = usage.pids_limit
    read_op, write_op = ("Read", "Write") if cgroup.version == 1 else ("read", "write")
    io = [
        {"major": major, "minor": minor, "op": op, "value": value}
        for major, minor, r, w in usage.io_bytes
        for op, value in ((read_op, r), (write_op, w))
    ]
    out = _empty(doc)
    out.update(
        read=read,
        pids_stats=pids,
        cpu_stats={
            "cpu_usage": _cpu_usage(usage.cpu_usage_ns, usage.cpu_system_ns, usage.cpu_user_ns),
            "system_cpu_usage": system,
            "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN"),
            "throttling_data": _no_throttling(),
        },
        memory_stats=memory,
    )
    out["blkio_stats"]["io_service_bytes_recursive"] = io or None
    networks = _networks(doc["State"].get("Pid") or 0)
    if networks:
        out["networks"] = networks
    return out


def _after(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``previous``'s CPU figures as its ``precpu_stats``."""
    current["precpu_stats"] = previous["cpu_stats"]
    current["preread"] = previous["read"]
    return current


def stats(doc: dict[str, Any], *, one_shot: bool = False) -> dict[str, Any]:
    """The container's usage, with the CPU figures of a second before in ``precpu_stats``
    (dockerd's answer to ``stream=false``); at once with ``one_shot`` or when it is not
    running (``precpu_stats`` then empty).

    Raises:
        CgroupError: A cgroup file could not be read.
    """
    first = sample(doc)
    if one_shot or first["read"] == ZERO_TIME:
        return first
    time.sleep(INTERVAL)
    return _after(first, sample(doc))


def stream(store: Store, cid: str, interval: float = INTERVAL) -> Iterator[dict[str, Any]]:
    """The container's usage every ``interval`` seconds, each with the CPU figures of the one
    before (the first with none); ends when the container is removed."""
    containers = ContainerStore(store)
    previous: dict[str, Any] | None = None
    while True:
        try:
            current = sample(containers.get(cid))
        except ContainerNotFound:
            return
        yield current if previous is None else _after(previous, current)
        previous = current
        time.sleep(interval)


# --- port ----------------------------------------------------------------------------------


def ports(doc: dict[str, Any]) -> dict[str, list[dict[str, str]] | None]:
    """Docker's ``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort":
    "8080"}], ...}``; a running container's ``HostConfig.PortBindings`` where the record has
    no network settings."""
    settings = doc.get("NetworkSettings") or {}
    if "Ports" in settings:
        return dict(settings["Ports"] or {})
    if is_running(doc):
        return dict((doc.get("HostConfig") or {}).get("PortBindings") or {})
    return {}
