"""Looking into running containers and pausing them: top, stats, port, pause, unpause."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

import kobako
from kobako.errors import Conflict
from kobako.image.store import ImageRecord, Store
from kobako.runtime import monitor
from kobako.runtime.cgroups import Cgroup, cgroup_version
from kobako.runtime.containers import ContainerStore
from tests.conftest import KOBAKO
from tests.conftest import kobako as cli
from tests.imagetools import make_image

pytestmark = pytest.mark.container

COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"


@pytest.fixture
def busybox_image(store: Store, busybox_tar: bytes) -> ImageRecord:
    return make_image(store, [busybox_tar], tag="bb:1", config={"Cmd": ["sh"]})


@pytest.fixture
def client(root: str, store: Store, busybox_image: ImageRecord) -> Iterator[kobako.Client]:
    """A client on the test's store; every container left is stopped and removed at the end."""
    c = kobako.Client(root)
    yield c
    containers = ContainerStore(store)
    made = [doc["Id"] for doc in containers.list()]
    for doc in containers.list():
        monitor.stop(store, doc, 0, "SIGKILL")
        containers.remove(containers.get(doc["Id"]))
    assert [cid for cid in made if Cgroup.find(cid) is not None] == []


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _grows(path: str, within: float = 5.0) -> bool:
    """Whether the file grows within ``within`` seconds."""
    start = _size(path)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _size(path) > start:
            return True
        time.sleep(0.02)
    return False


def _frozen(cid: str) -> bool:
    """What the kernel says of the container's cgroup."""
    cgroup = Cgroup.find(cid)
    assert cgroup is not None
    try:
        path = (
            cgroup.paths[0]
            if cgroup.version == 2
            else next(p for p in cgroup.paths if "/freezer/" in p)
        )
        if cgroup.version == 1:
            with open(f"{path}/freezer.state") as f:
                return f.read().strip() == "FROZEN"
        with open(f"{path}/cgroup.events") as f:
            return "frozen 1" in f.read().splitlines()
    finally:
        if cgroup.clone_fd is not None:
            os.close(cgroup.clone_fd)


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


# --- pause, unpause ------------------------------------------------------------------------


@pytest.mark.v2
def test_pause_freezes_the_processes_and_unpause_resumes_them(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sh", "-c", COUNTER], detach=True, name="c1")
    log = c.attrs["LogPath"]
    assert _grows(log)
    r = cli("pause", "c1")
    assert r.returncode == 0 and r.stdout == "c1\n", r.stderr
    c.reload()
    assert c.status == "paused" and c.attrs["State"]["Paused"] and c.attrs["State"]["Running"]
    assert _frozen(c.id)
    if cgroup_version() == 1:  # a task in v1's freezer sleeps uninterruptibly
        assert _proc_state(c.attrs["State"]["Pid"]) == "D"
    assert not _grows(log, 0.5)  # the counter stopped
    assert cli("ps", "--format", "json", "-a").stdout.count('"paused"') == 1
    r = cli("unpause", "c1")
    assert r.returncode == 0 and r.stdout == "c1\n", r.stderr
    c.reload()
    assert c.status == "running" and not c.attrs["State"]["Paused"]
    assert not _frozen(c.id)
    assert _grows(log)


def test_pause_and_unpause_through_the_api(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sh", "-c", COUNTER], detach=True)
    c.pause()
    assert c.status == "paused"
    assert client.containers.get(c.id).status == "paused"
    assert not _grows(c.attrs["LogPath"], 0.3)
    with pytest.raises(Conflict, match="is already paused"):
        c.pause()
    c.unpause()
    assert c.status == "running"
    assert _grows(c.attrs["LogPath"])
    with pytest.raises(Conflict, match="is not paused"):
        c.unpause()


def test_pause_errors_as_docker(client: kobako.Client) -> None:
    created = client.containers.create("bb:1", ["sleep", "100"], name="idle")
    r = cli("pause", "idle")
    assert r.returncode == 1
    assert r.stderr == f"kobako: container {created.id} is not running\n"
    r = cli("unpause", "idle")
    assert r.returncode == 1
    assert r.stderr == f"kobako: Container {created.id} is not paused\n"
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="busy")
    assert cli("pause", "busy").returncode == 0
    r = cli("pause", "busy", "nosuch", "idle")  # each one tried, every error said
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"kobako: Container {c.id} is already paused",
        "kobako: No such container: nosuch",
        f"kobako: container {created.id} is not running",
    ]
    assert cli("unpause", "busy").returncode == 0
    assert cli("unpause", "busy").stderr == f"kobako: Container {c.id} is not paused\n"
    assert cli("pause").returncode == 125


@pytest.mark.v2
def test_stop_and_kill_a_paused_container(store: Store, client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="p1")
    c.pause()
    start = time.monotonic()
    monitor.stop(store, c.attrs, 1)  # sleep as PID 1 ignores SIGTERM: killed after 1 s
    assert time.monotonic() - start < 8
    c.reload()
    assert c.status == "exited" and not c.attrs["State"]["Paused"]
    assert c.attrs["State"]["ExitCode"] == 137
    assert Cgroup.find(c.id) is None
    d = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="p2")
    assert cli("pause", "p2").returncode == 0
    r = cli("kill", "p2")
    assert r.returncode == 0, r.stderr
    d.wait(timeout=10)
    assert d.status == "exited" and d.attrs["State"]["ExitCode"] == 137
    assert Cgroup.find(d.id) is None


def test_a_paused_container_is_thawed_by_its_removal(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    c.pause()
    c.remove(force=True)
    assert Cgroup.find(c.id) is None
    assert client.containers.list(all=True) == []


# --- top -----------------------------------------------------------------------------------


def test_top_lists_the_container_processes(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1", ["sh", "-c", "sleep 1000 & exec sleep 1001"], detach=True, name="t1"
    )
    cgroup = Cgroup.find(c.id)
    assert cgroup is not None
    if cgroup.clone_fd is not None:
        os.close(cgroup.clone_fd)
    deadline = time.monotonic() + 5
    while len(cgroup.pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = cgroup.pids()
    assert len(pids) == 2
    r = cli("top", "t1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert lines[0].startswith("UID" + " " * 17 + "PID")  # docker's columns: 20 wide
    rows = [line.split(None, 7) for line in lines[1:]]
    assert sorted(int(row[1]) for row in rows) == pids
    assert sorted(row[7] for row in rows) == ["sleep 1000", "sleep 1001"]
    r = cli("top", "t1", "-o", "pid,comm")
    assert r.returncode == 0, r.stderr
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["PID", "COMMAND"],
        *([str(pid), "sleep"] for pid in pids),
    ]
    listing = c.top()
    assert listing["Titles"][1] == "PID" and len(listing["Processes"]) == 2
    assert {p[7] for p in listing["Processes"]} == {"sleep 1000", "sleep 1001"}
    assert cli("top", "t1", "-o", "user=PID").stderr.startswith("kobako: specifying")
    c.pause()  # as docker: a paused container's processes are listed too
    assert len(c.top(ps_args="aux")["Processes"]) == 2


def test_top_of_a_container_that_is_not_running(client: kobako.Client) -> None:
    c = client.containers.create("bb:1", ["true"], name="t2")
    r = cli("top", "t2")
    assert r.returncode == 125 and r.stderr == f"kobako: container {c.id} is not running\n"
    with pytest.raises(Conflict, match="is not running"):
        c.top()


# --- stats ---------------------------------------------------------------------------------


@pytest.mark.v2
def test_stats_no_stream_shows_the_memory_limit(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1",
        ["sleep", "100"],
        detach=True,
        name="s1",
        mem_limit="64m",
        network_mode="none",  # docker shows 0B / 0B for it
    )
    start = time.monotonic()
    r = cli("stats", "--no-stream", "s1")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start >= 1.0  # two samples, a second apart, as dockerd does
    header, row, *rest = r.stdout.splitlines()
    assert rest == []
    assert re.split(r"\s{2,}", header) == [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ]
    assert row.startswith(c.short_id + "   s1 ")
    assert "/ 64MiB" in row and "0B / 0B" in row and row.endswith(" 1")
    r = cli("stats", "--no-stream", "--no-trunc", "--format", "json", "s1")
    doc = json.loads(r.stdout)
    assert doc["ID"] == c.id and doc["Name"] == "s1" and doc["Container"] == "s1"
    assert doc["MemUsage"].endswith(" / 64MiB") and doc["PIDs"] == "1"
    assert doc["NetIO"] == "0B / 0B" and doc["CPUPerc"].endswith("%")
    r = cli("stats", "--no-stream", "--format", "{{.Name}}: {{.MemPerc}}", "s1")
    assert r.stdout.startswith("s1: ") and r.stdout.endswith("%\n")


def test_stats_through_the_api(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1", ["sh", "-c", "while :; do :; done"], detach=True, mem_limit=32 << 20
    )
    s = c.stats(stream=False)
    assert s["id"] == c.id and s["name"] == "/" + c.name
    assert s["memory_stats"]["limit"] == 32 << 20
    assert 0 < s["memory_stats"]["usage"] <= 32 << 20
    assert s["pids_stats"]["current"] == 1
    cpu, pre = s["cpu_stats"], s["precpu_stats"]
    assert cpu["online_cpus"] == os.cpu_count()
    assert cpu["system_cpu_usage"] > pre["system_cpu_usage"] > 0
    busy = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
    assert busy > 0.2e9  # the loop ran a good part of the second between the samples
    assert s["preread"] < s["read"]
    one = c.stats(stream=False, one_shot=True)
    assert one["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    stream = c.stats(decode=True)
    assert isinstance(stream, Iterator)
    first, second = next(stream), next(stream)
    assert second["precpu_stats"] == first["cpu_stats"]
    raw = c.stats()
    assert isinstance(raw, Iterator)
    assert json.loads(next(raw))["id"] == c.id
    with pytest.raises(kobako.InvalidArgument):
        c.stats(one_shot=True)
    c.stop(timeout=0)
    stopped = c.stats(stream=False)
    assert stopped["read"] == "0001-01-01T00:00:00Z" and stopped["memory_stats"] == {}


def test_stats_shows_the_running_ones_or_all(client: kobako.Client) -> None:
    client.containers.run("bb:1", ["sleep", "100"], detach=True, name="up")
    client.containers.create("bb:1", ["true"], name="down")
    r = cli("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}")
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["up"]
    r = cli("stats", "--no-stream", "-a", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}")
    assert sorted(r.stdout.splitlines())[0] == "down 0.00% 0B / 0B"
    r = cli("stats", "--no-stream", "nosuch")
    assert r.returncode == 125 and r.stderr == "kobako: No such container: nosuch\n"


def test_stats_streams_until_interrupted(client: kobako.Client) -> None:
    client.containers.run("bb:1", ["sleep", "100"], detach=True, name="live")
    proc = subprocess.Popen(
        [KOBAKO, "stats", "live"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert err == ""
    assert out.startswith("\033[2J\033[HCONTAINER ID")
    frames = out.split("\033[H")[1:]
    assert len(frames) >= 2 and all("live" in frame for frame in frames)


# --- port ----------------------------------------------------------------------------------


def test_port_without_published_ports(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="c1")
    r = cli("port", "c1")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    r = cli("port", "c1", "80")
    assert r.returncode == 1
    assert r.stderr == "kobako: No public port '80/tcp' published for c1\n"
    r = cli("port", "c1", "53/udp")
    assert r.stderr == "kobako: No public port '53/udp' published for c1\n"
    assert cli("port", "c1", "http").returncode == 125
    assert c.ports == {}


def test_port_reads_the_record(store: Store, client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="web")
    containers = ContainerStore(store)
    with containers.lock(c.id):
        doc = containers.load(c.id)
        doc["NetworkSettings"] = {
            "Ports": {
                "80/tcp": [
                    {"HostIp": "0.0.0.0", "HostPort": "8080"},
                    {"HostIp": "::", "HostPort": "8080"},
                ],
                "9/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9009"}],
                "443/tcp": None,
            }
        }
        containers.save(doc)
    r = cli("port", "web")
    assert r.stdout.splitlines() == [
        "9/tcp -> 127.0.0.1:9009",
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> [::]:8080",
    ]
    assert cli("port", "web", "80").stdout == "0.0.0.0:8080\n[::]:8080\n"
    assert cli("port", "web", "443/tcp").returncode == 1
    c.reload()
    assert c.ports["9/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "9009"}]
