"""Verbs that look into containers, or pause them: ``top``, ``stats``, ``port``, ``pause``,
``unpause``. The work is :mod:`kobako.runtime.observe`'s; this module prints as docker does."""

from __future__ import annotations

import sys

from kobako.cli.args import BOOL, STRING, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore

TOP = Command(
    "kobako top CONTAINER [ps OPTIONS]",
    "Display the running processes of a container",
    (),
    interspersed=False,
)
STATS = Command(
    "kobako stats [OPTIONS] [CONTAINER...]",
    "Display a live stream of container(s) resource usage statistics",
    (
        Flag("all", "a", BOOL, "Show all containers (default shows just running)"),
        Flag(
            "format",
            "",
            STRING,
            "Format output using a custom template: 'table', 'table TEMPLATE', 'json' or "
            "a Go template",
        ),
        Flag("no-stream", "", BOOL, "Disable streaming stats and only pull the first result"),
        Flag("no-trunc", "", BOOL, "Do not truncate output"),
    ),
)
PORT = Command(
    "kobako port CONTAINER [PRIVATE_PORT[/PROTO]]",
    "List port mappings or a specific mapping for the container",
    (),
)
PAUSE = Command(
    "kobako pause CONTAINER [CONTAINER...]", "Pause all processes within one or more containers", ()
)
UNPAUSE = Command(
    "kobako unpause CONTAINER [CONTAINER...]",
    "Unpause all processes within one or more containers",
    (),
)

#: docker's ``stats`` table and its headers (cli/command/container/formatter_stats.go).
STATS_FORMAT = (
    "table {{.ID}}\\t{{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\\t{{.MemPerc}}\\t{{.NetIO}}"
    "\\t{{.BlockIO}}\\t{{.PIDs}}"
)
STATS_HEADERS = {
    "Container": "CONTAINER",
    "Name": "NAME",
    "ID": "CONTAINER ID",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def main(argv: list[str], verb: str) -> int:
    """Run ``top``, ``stats``, ``port``, ``pause`` or ``unpause``."""
    handler = {
        "top": _top,
        "stats": _stats,
        "port": _port,
        "pause": _pause,
        "unpause": _pause,
    }[verb]
    return handler(argv, verb)


def _store() -> Store:
    from kobako.image.store import Store

    return Store.open()


def _containers(store: Store) -> ContainerStore:
    from kobako.runtime.containers import ContainerStore

    return ContainerStore(store)


# --- pause, unpause ------------------------------------------------------------------------


def _pause(argv: list[str], verb: str) -> int:
    """Each container named, paused (or unpaused); its name printed once done."""
    from kobako.errors import KobakoError
    from kobako.runtime import observe

    o = (PAUSE if verb == "pause" else UNPAUSE).parse(argv)
    if not o.args:
        fail(f'"kobako {verb}" requires at least 1 argument')
    store = _store()
    containers = _containers(store)
    act = observe.pause if verb == "pause" else observe.unpause
    failed = False
    for ref in o.args:
        try:
            act(store, containers.get(ref))
        except KobakoError as e:
            print(f"kobako: {e}", file=sys.stderr)
            failed = True
            continue
        print(ref, flush=True)
    return 1 if failed else 0


# --- top -----------------------------------------------------------------------------------


def _top(argv: list[str], verb: str) -> int:
    """The container's processes, as ``ps`` shows them, in docker's table (min width 20)."""
    from kobako.cli.fmt import tabwrite
    from kobako.runtime.observe import top

    o = TOP.parse(argv)
    if not o.args:
        fail(f'"kobako {verb}" requires at least 1 argument')
    doc = _containers(_store()).get(o.args[0])
    listing = top(doc, " ".join(o.args[1:]) or None)
    lines = ["\t".join(listing["Titles"]), *("\t".join(p) for p in listing["Processes"])]
    sys.stdout.write(tabwrite("\n".join(lines) + "\n", min_width=20))
    return 0


# --- port ----------------------------------------------------------------------------------


def _natural(text: str) -> list[tuple[int, int | str]]:
    """A sort key comparing runs of digits as numbers, and digits before other characters
    (docker sorts ports with ``sortorder.NaturalLess``)."""
    key: list[tuple[int, int | str]] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or ("0" <= text[i] <= "9") != ("0" <= text[start] <= "9"):
            run = text[start:i]
            key.append((0, int(run)) if "0" <= run[0] <= "9" else (1, run))
            start = i
    return key


def _port(argv: list[str], verb: str) -> int:
    """Every published port (``80/tcp -> 0.0.0.0:8080``), or where one private port is."""
    from kobako.cli.fmt import join_host_port
    from kobako.runtime.observe import ports

    o = PORT.parse(argv)
    if not 1 <= len(o.args) <= 2:
        fail(f'"kobako {verb}" requires at least 1 and at most 2 arguments')
    doc = _containers(_store()).get(o.args[0])
    mapping = ports(doc)
    if len(o.args) == 2:
        number, _, proto = o.args[1].partition("/")
        if not (number.isascii() and number.isdigit()) or int(number) > 65535:
            fail(f"invalid port ({number})")
        key = f"{number}/{proto or 'tcp'}"
        bindings = mapping.get(key)
        if not bindings:
            print(f"kobako: No public port '{key}' published for {o.args[0]}", file=sys.stderr)
            return 1
        out = [join_host_port(b) for b in bindings]
    else:
        out = [
            f"{key} -> {join_host_port(b)}" for key, found in mapping.items() for b in found or ()
        ]
    for line in sorted(out, key=_natural):
        print(line)
    return 0


# --- stats ---------------------------------------------------------------------------------


def _binary_size(size: float) -> str:
    """go-units' ``BytesSize``: binary units, 4 significant digits (``1.5MiB``)."""
    i = 0
    while size >= 1024.0 and i < len(_BINARY_UNITS) - 1:
        size /= 1024.0
        i += 1
    return f"{size:.4g}{_BINARY_UNITS[i]}"


def _memory_used(memory: dict[str, Any]) -> int:
    """docker's memory usage: the cgroup's, less its inactive page cache (``total_inactive_file``
    on v1, ``inactive_file`` on v2)."""
    usage = int(memory.get("usage") or 0)
    counters = memory.get("stats") or {}
    inactive = counters.get("total_inactive_file", counters.get("inactive_file", 0))
    return usage - inactive if inactive < usage else usage


def _stats_row(
    label: str,
    current: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    doc: dict[str, Any],
    trunc: bool,
) -> dict[str, str]:
    """One row of ``docker stats`` (its ``statsContext``), figures computed as docker's CLI
    does. ``previous``: the sample a second before (else its ``precpu_stats``); ``current``
    None: the container is gone (docker's ``--`` row)."""
    from kobako.cli.fmt import human_size

    row = {"Container": label, "Name": doc["Name"][1:] or "--"}
    row["ID"] = doc["Id"][:12] if trunc else doc["Id"]
    if current is None:
        row.update(CPUPerc="--", MemUsage="-- / --", MemPerc="--", NetIO="--", BlockIO="--")
        row["PIDs"] = "--"
        return row
    cpu = current["cpu_stats"]
    before = previous["cpu_stats"] if previous is not None else current["precpu_stats"]
    cpu_delta = cpu["cpu_usage"]["total_usage"] - before["cpu_usage"]["total_usage"]
    system_delta = cpu.get("system_cpu_usage", 0) - before.get("system_cpu_usage", 0)
    percent = 0.0
    if cpu_delta > 0 and system_delta > 0:
        percent = cpu_delta / system_delta * cpu.get("online_cpus", 0) * 100.0
    memory = current["memory_stats"]
    used = _memory_used(memory)
    limit = int(memory.get("limit") or 0)
    networks = (current.get("networks") or {}).values()
    rx = sum(n["rx_bytes"] for n in networks)
    tx = sum(n["tx_bytes"] for n in networks)
    io = current["blkio_stats"].get("io_service_bytes_recursive") or ()
    read = sum(e["value"] for e in io if e["op"][:1] in ("r", "R"))
    written = sum(e["value"] for e in io if e["op"][:1] in ("w", "W"))
    row.update(
        CPUPerc=f"{percent:.2f}%",
        MemUsage=f"{_binary_size(used)} / {_binary_size(limit)}",
        MemPerc=f"{used / limit * 100.0 if limit else 0.0:.2f}%",
        NetIO=f"{human_size(rx, 3)} / {human_size(tx, 3)}",
        BlockIO=f"{human_size(read, 3)} / {human_size(written, 3)}",
        PIDs=str(current["pids_stats"].get("current", 0)),
    )
    return row


def _stats(argv: list[str], verb: str) -> int:
    """``docker stats``: a table refreshed every second, or one table with ``--no-stream``."""
    import io
    import time

    from kobako.cli.fmt import write_list
    from kobako.errors import ContainerNotFound, InvalidArgument
    from kobako.runtime import observe
    from kobako.runtime.containers import is_running

    o = STATS.parse(argv)
    containers = _containers(_store())
    trunc = not o.get_bool("no-trunc")
    every = o.get_bool("all")
    named = [(ref, containers.get(ref)) for ref in o.args]  # a missing one fails at once

    def targets() -> list[tuple[str, dict[str, Any], bool]]:
        """(label, record, still there) for each container to show now."""
        if not o.args:
            return [(d["Id"], d, True) for d in containers.list() if every or is_running(d)]
        out = []
        for ref, doc in named:
            try:
                out.append((ref, containers.get(doc["Id"]), True))
            except ContainerNotFound:
                out.append((ref, doc, False))
        return out

    def render(rows: list[dict[str, str]]) -> str:
        text = io.StringIO()
        try:
            write_list(
                o.get_string("format"), rows, default=STATS_FORMAT, headers=STATS_HEADERS, file=text
            )
        except InvalidArgument as e:
            fail(f"template: {e}")
        return text.getvalue()

    def sample_all(shown: list[tuple[str, dict[str, Any], bool]]) -> dict[str, Any]:
        return {d["Id"]: observe.sample(d) if there else None for _, d, there in shown}

    shown = targets()
    first = sample_all(shown)
    if o.get_bool("no-stream"):
        current = first
        if any(s is not None and s["read"] != observe.ZERO_TIME for s in first.values()):
            time.sleep(observe.INTERVAL)  # a second sample, for the CPU percentage
            current = sample_all(shown)
        rows = [
            _stats_row(label, current[d["Id"]], first[d["Id"]], d, trunc) for label, d, _ in shown
        ]
        sys.stdout.write(render(rows))
        return 0
    previous: dict[str, Any] = {}
    current = first
    clear = "\033[2J"
    while True:
        rows = [
            _stats_row(label, current[d["Id"]], previous.get(d["Id"]), d, trunc)
            for label, d, _ in shown
        ]
        lines = render(rows).splitlines()
        # Home, each line then the rest of it cleared, then the rest of the screen: no flicker
        sys.stdout.write(clear + "\033[H" + "".join(f"{line}\033[K\n" for line in lines) + "\033[J")
        sys.stdout.flush()
        clear = ""
        time.sleep(observe.INTERVAL)
        previous = {k: v for k, v in current.items() if v is not None}
        shown = targets()
        current = sample_all(shown)
