"""Detached containers: run -d, ps, stop/kill/restart, restart policies, exec, and state that
survives a killed monitor and a wiped /run."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

import kobako
from kobako.errors import Conflict
from kobako.image.store import ImageRecord, Store
from kobako.runtime import lifecycle
from kobako.runtime.containers import ContainerStore
from tests.conftest import kobako as cli
from tests.imagetools import make_image

pytestmark = pytest.mark.container


@pytest.fixture
def busybox_image(store: Store, busybox_tar: bytes) -> ImageRecord:
    return make_image(store, [busybox_tar], tag="bb:1", config={"Cmd": ["sh"]})


@pytest.fixture
def client(root: str, busybox_image: ImageRecord) -> Iterator[kobako.Client]:
    """A client on the test's store; every container left is force-removed at the end."""
    c = kobako.Client(root)
    yield c
    for container in c.containers.list(all=True):
        container.remove(force=True)


def _monitors() -> set[int]:
    out = set()
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(comm) as f:
                if f.read().strip() == "kobako-monitor":
                    out.add(int(comm.split("/")[2]))
        except OSError:
            continue
    return out


def _state(root: str, name: str) -> dict:
    r = cli("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"]


def _log(c: kobako.Container) -> list[tuple[str, str]]:
    """(stream, text) of every record of its log."""
    c.reload()
    path = c.attrs["LogPath"]
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(line.rstrip("\n").split(" ", 3)[1::2]) for line in f]  # type: ignore[misc]


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.v2
def test_run_d_ps_logs_stop_rm(root: str, busybox_image: ImageRecord) -> None:
    r = cli(
        "run",
        "-d",
        "--name",
        "web",
        "bb:1",
        "sh",
        "-c",
        "trap 'exit 143' TERM; echo out; echo err >&2; while true; do sleep 0.05; done",
    )
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64
    try:
        ps = cli("ps", "--format", "json")
        rows = [json.loads(line) for line in ps.stdout.splitlines()]
        assert [row["Names"] for row in rows] == ["web"]
        assert rows[0]["State"] == "running"
        state = _state(root, "web")
        assert state["Running"] and state["Pid"] > 0
        monitor = state["MonitorPid"]
        with open(f"/proc/{monitor}/comm") as f:
            assert f.read().strip() == "kobako-monitor"
        # the monitor is nobody's child here: kobako has exited
        with open(f"/proc/{monitor}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
        deadline = time.monotonic() + 5
        log = os.path.join(root, "containers", cid, "container.log")
        while _read(log).count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        records = sorted(line.split(" ", 3)[1::2] for line in _read(log).splitlines())
        assert records == [["stderr", "err"], ["stdout", "out"]]
        r = cli("stop", "-t", "30", "web")
        assert r.returncode == 0 and r.stdout == "web\n", r.stderr
        state = _state(root, "web")  # 143: its TERM trap ran (137 would be the SIGKILL)
        assert state["Status"] == "exited" and state["ExitCode"] == 143
        assert not state["FinishedAt"].startswith("0001")
        assert _gone(monitor)
        assert cli("ps", "-q").stdout == ""
        assert cli("ps", "-aq").stdout.strip() == cid[:12]
    finally:
        cli("rm", "-f", "web")
    assert cli("ps", "-aq").stdout == ""


def test_stop_kills_after_the_timeout_and_uses_the_stop_signal(
    root: str, store: Store, busybox_tar: bytes
) -> None:
    make_image(store, [busybox_tar], tag="quit:1", config={"StopSignal": "SIGUSR1"})
    script = "trap 'echo got usr1' USR1; trap '' TERM; while true; do sleep 0.05; done"
    assert cli("run", "-d", "--name", "q", "quit:1", "sh", "-c", script).returncode == 0
    try:
        time.sleep(0.3)
        r = cli("stop", "-t", "1", "q")
        assert r.returncode == 0, r.stderr
        state = _state(root, "q")
        assert state["ExitCode"] == 137  # USR1 was trapped: killed after 1 s
        log_path = cli("inspect", "-f", "{{.LogPath}}", "q").stdout.strip()
        assert "got usr1" in _read(log_path)
    finally:
        cli("rm", "-f", "q")


@pytest.mark.v2
def test_kill_restart_start_wait(root: str, busybox_image: ImageRecord) -> None:
    assert cli("run", "-d", "--name", "k", "bb:1", "sleep", "100").returncode == 0
    try:
        first = _state(root, "k")["Pid"]
        assert cli("restart", "-t", "0", "k").returncode == 0
        second = _state(root, "k")
        assert second["Running"] and second["Pid"] != first
        assert cli("kill", "-s", "KILL", "k").returncode == 0
        w = cli("wait", "k")
        assert w.stdout == "137\n"
        assert _state(root, "k")["Status"] == "exited"
        r = cli("kill", "k")
        assert r.returncode == 1 and "is not running" in r.stderr
        assert cli("start", "k").stdout == "k\n"
        assert _state(root, "k")["Running"]
        bad = cli("kill", "-s", "NOPE", "k")
        assert bad.returncode == 125 and "invalid signal" in bad.stderr
        running = cli("rm", "k")
        assert running.returncode == 1 and "stop the container" in running.stderr
    finally:
        cli("rm", "-f", "k")


def test_rm_flag_with_detach_removes_on_exit(root: str, busybox_image: ImageRecord) -> None:
    r = cli("run", "-d", "--rm", "bb:1", "sh", "-c", "sleep 0.5; exit 3")
    assert r.returncode == 0
    cid = r.stdout.strip()
    assert cli("wait", cid).stdout == "3\n"  # as docker's: the code, though it is removed
    deadline = time.monotonic() + 10
    while os.path.exists(os.path.join(root, "containers", cid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(root, "containers", cid))
    assert cli("run", "-d", "--rm", "--restart", "always", "bb:1").returncode == 125


@pytest.mark.v2
def test_on_failure_restarts_n_times_with_backoff(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1",
        ["sh", "-c", "echo run; exit 1"],
        detach=True,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
    )
    started = time.monotonic()
    deadline = started + 20
    while time.monotonic() < deadline:
        c.reload()
        if c.status == "exited" and c.attrs["RestartCount"] == 3:
            break
        time.sleep(0.05)
    c.wait(timeout=10)
    c.reload()
    assert c.attrs["RestartCount"] == 3
    assert c.attrs["State"]["ExitCode"] == 1
    assert _log(c) == [("stdout", "run")] * 4
    # Docker's back-off: 100 + 200 + 400 ms between the four runs
    assert time.monotonic() - started >= 0.7
    # a success is not restarted by on-failure
    ok = client.containers.run("bb:1", ["true"], detach=True, restart_policy={"Name": "on-failure"})
    ok.wait(timeout=10)
    time.sleep(0.3)
    ok.reload()
    assert ok.attrs["RestartCount"] == 0 and ok.status == "exited"


def test_always_restarts_until_stopped(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1", ["sh", "-c", "exit 0"], detach=True, restart_policy={"Name": "always"}
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c.reload()
        if c.attrs["RestartCount"] >= 2:
            break
        time.sleep(0.05)
    assert c.attrs["RestartCount"] >= 2
    c.stop(timeout=1)
    assert c.status == "exited"
    count = c.attrs["RestartCount"]
    time.sleep(0.5)
    c.reload()
    assert c.status == "exited" and c.attrs["RestartCount"] == count


@pytest.mark.v2
def test_killed_monitor_and_container_leave_a_true_record(root: str, client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    pid, monitor = c.attrs["State"]["Pid"], c.attrs["State"]["MonitorPid"]
    os.kill(monitor, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _gone(monitor) and time.monotonic() < deadline:
        time.sleep(0.02)
    c.reload()
    assert c.status == "running"  # the container outlives its monitor, as it does podman's
    assert _state(root, c.name)["Pid"] == pid
    os.kill(pid, signal.SIGKILL)
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # init reaps it
    state = _state(root, c.name)
    assert state["Status"] == "exited" and state["ExitCode"] == 137 and state["Pid"] == 0
    # what it left (cgroup, runtime dir) was removed when the record was settled
    assert not os.path.exists(os.path.join(lifecycle.RUN_DIR, "containers", c.id))
    assert not glob.glob(f"/sys/fs/cgroup/*/kobako/{c.id}") + glob.glob(
        f"/sys/fs/cgroup/kobako/{c.id}"
    )
    c.start()
    assert c.status == "running"


@pytest.fixture
def own_run_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A runtime dir of the test's own (short: it holds unix sockets), for kobako here and in
    the CLI and exit commands it starts, so that wiping it touches no other container."""
    import tempfile

    path = tempfile.mkdtemp(prefix="kr", dir="/tmp")
    monkeypatch.setenv("KOBAKO_RUN_DIR", path)
    monkeypatch.setattr(lifecycle, "RUN_DIR", path)
    monkeypatch.setattr(lifecycle, "CACHE_DIR", os.path.join(path, "cache"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_wiped_run_dir_reads_as_a_reboot_and_start_brings_them_back(
    own_run_dir: str, root: str, client: kobako.Client
) -> None:
    containers = [client.containers.run("bb:1", ["sleep", "100"], detach=True) for _ in range(3)]
    # A reboot: every process gone, /run empty.
    for c in containers:
        os.kill(c.attrs["State"]["MonitorPid"], signal.SIGKILL)
        os.kill(c.attrs["State"]["Pid"], signal.SIGKILL)
    for c in containers:
        deadline = time.monotonic() + 5
        while not _gone(c.attrs["State"]["Pid"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    shutil.rmtree(os.path.join(own_run_dir, "containers"))
    time.sleep(0.1)
    ps = cli("ps", "-a", "--format", "json")
    rows = [json.loads(line) for line in ps.stdout.splitlines()]
    assert {row["State"] for row in rows} == {"exited"}
    assert len(rows) == 3
    r = cli("start", *(c.name for c in containers))
    assert r.returncode == 0, r.stderr
    for c in containers:
        c.reload()
        assert c.status == "running"
    assert len(cli("ps", "-q").stdout.split()) == 3


def test_fifty_detached_containers(root: str, client: kobako.Client) -> None:
    monitors_before = _monitors()
    names = [f"c{i}" for i in range(50)]
    for name in names:
        script = f"trap 'exit 0' TERM; echo {name}; while true; do sleep 0.1; done"
        r = cli("run", "-d", "--name", name, "bb:1", "sh", "-c", script)
        assert r.returncode == 0, r.stderr
    ps = cli("ps", "--format", "json")
    rows = [json.loads(line) for line in ps.stdout.splitlines()]
    assert sorted(row["Names"] for row in rows) == sorted(names)
    assert len(_monitors() - monitors_before) == 50
    for name in names:
        e = cli("exec", name, "sh", "-c", "cat /etc/hostname; echo $((6 * 7))")
        assert e.returncode == 0, e.stderr
        assert e.stdout.split("\n")[1] == "42"
    for c in client.containers.list():
        assert _log(c) == [("stdout", c.name)]
    r = cli("stop", *names)
    assert r.returncode == 0, r.stderr
    assert cli("ps", "-q").stdout == ""
    r = cli("rm", *names)
    assert r.returncode == 0, r.stderr
    assert cli("ps", "-aq").stdout == ""
    assert _monitors() <= monitors_before
    assert os.listdir(os.path.join(root, "containers")) in ([], ["names.lock"])


# --- exec --------------------------------------------------------------------------------------


@pytest.mark.v2
def test_exec_joins_every_namespace_and_the_cgroup(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    script = (
        "for ns in mnt pid net ipc uts cgroup user; do "
        '[ "$(readlink /proc/1/ns/$ns)" = "$(readlink /proc/self/ns/$ns)" ] || echo "$ns differs"; '
        "done; cat /proc/1/cgroup > /tmp/a; cat /proc/self/cgroup > /tmp/b; cmp -s /tmp/a /tmp/b "
        "|| echo cgroup differs; hostname"
    )
    r = cli("exec", c.name, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout == c.id[:12] + "\n"


@pytest.mark.v2
def test_exec_has_the_container_confinement_and_no_kobako_fd(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    fields = "grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/{}/status"
    container = cli("exec", c.name, "sh", "-c", fields.format(1)).stdout
    own = cli("exec", c.name, "sh", "-c", fields.format("$$")).stdout
    assert container == own
    assert "NoNewPrivs:\t1" in own and "Seccomp:\t2" in own
    # only 0, 1 and 2: nothing of kobako's (a host directory fd would be CVE-2024-21626)
    # (the fds of a child of the exec'd shell: the shell's own glob opens a directory)
    r = cli("exec", c.name, "sh", "-c", "sleep 5 & cd /proc/$!/fd && echo *; kill $!")
    assert r.stdout.split() == ["0", "1", "2"], r.stdout
    privileged = cli("exec", "--privileged", c.name, "grep", "Seccomp:", "/proc/self/status")
    assert privileged.stdout.split() == ["Seccomp:", "0"]
    # the root really is the container's: the host's files are not there
    assert cli("exec", c.name, "test", "-e", "/etc/os-release").returncode == 1


def test_exec_options_and_errors(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    r = cli(
        "exec",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        c.name,
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $FOO",
    )
    assert r.stdout.split() == ["1000", "1000", "/tmp", "bar"], r.stderr
    assert cli("exec", c.name, "sh", "-c", "exit 7").returncode == 7
    missing = cli("exec", c.name, "nosuch")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr
    d = cli("exec", "-d", c.name, "sh", "-c", "echo detached > /tmp/d")
    assert d.returncode == 0 and d.stdout == ""
    deadline = time.monotonic() + 5
    while cli("exec", c.name, "cat", "/tmp/d").stdout != "detached\n":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.stop(timeout=0)
    stopped = cli("exec", c.name, "true")
    assert stopped.returncode == 125 and "is not running" in stderr_line(stopped.stderr)
    with pytest.raises(Conflict):
        from kobako.runtime.execute import exec_in

        exec_in(client.store, c.attrs, ["true"])


def stderr_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_api_detach_and_container_methods(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True, name="api")
    assert isinstance(c, kobako.containers.Container)
    assert c.status == "running"
    assert [x.name for x in client.containers.list()] == ["api"]
    c.kill(signal="SIGKILL")
    assert c.wait(timeout=10) == {"StatusCode": 137, "Error": None}
    c.restart()
    assert c.status == "running"
    c.stop(timeout=0)
    assert c.status == "exited"
    created = client.containers.create("bb:1", ["true"], name="later")
    assert created.status == "created"
    created.start()
    assert created.wait(timeout=10)["StatusCode"] == 0
    pruned = client.containers.prune()
    assert sorted(pruned["ContainersDeleted"]) == sorted([c.id, created.id])
    assert ContainerStore(client.store).list() == []


def test_volumes_from_shares_volumes_and_binds(
    root: str, busybox_image: ImageRecord, tmp_path
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    r = cli(
        "run",
        "--name",
        "src",
        "-v",
        "named:/data",
        "-v",
        f"{host}:/bind",
        "--mount",
        "type=volume,dst=/anon",
        "bb:1",
        "sh",
        "-c",
        "echo n > /data/f; echo b > /bind/f; echo a > /anon/f",
    )
    assert r.returncode == 0, r.stderr
    try:
        r = cli(
            "run", "--rm", "--volumes-from", "src", "bb:1", "cat", "/data/f", "/bind/f", "/anon/f"
        )
        assert r.stdout == "n\nb\na\n", r.stderr
        ro = cli("run", "--rm", "--volumes-from", "src:ro", "bb:1", "sh", "-c", "echo x > /data/g")
        assert ro.returncode != 0 and "Read-only file system" in ro.stderr
        missing = cli("run", "--rm", "--volumes-from", "nosuch", "bb:1", "true")
        assert missing.returncode == 125 and "No such container: nosuch" in missing.stderr
    finally:
        cli("rm", "-v", "src")
        cli("volume", "rm", "named")


# --- a terminal: run -it, detach keys, attach --------------------------------------------------


def _spawn_in_pty(*args: str) -> tuple[int, int]:
    import fcntl
    import pty
    import struct
    import termios

    from tests.conftest import KOBAKO

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(KOBAKO, [KOBAKO, *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    return pid, fd


def _exit_code(pid: int, fd: int, timeout: float = 60) -> int:
    """The exit code of a child on the pty ``fd`` (read meanwhile, as a terminal would be),
    killed (and the test failed) if it does not end in time."""
    import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if select.select([fd], [], [], 0.05)[0]:
            with contextlib.suppress(OSError):
                os.read(fd, 4096)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"kobako (pid {pid}) did not end within {timeout} s")


def _expect(fd: int, text: bytes, timeout: float = 20) -> bytes:
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        buf += data
        if text in buf:
            return buf
    raise AssertionError(f"{text!r} not in {buf!r}")


@pytest.mark.v2
def test_run_it_pty_resize_ctrl_c_detach_and_attach(root: str, busybox_image: ImageRecord) -> None:
    try:
        _pty_session(root)
    finally:
        cli("rm", "-f", "tty")


def _pty_session(root: str) -> None:
    import fcntl
    import struct
    import termios

    pid, fd = _spawn_in_pty("run", "-it", "--name", "tty", "bb:1", "sh")
    try:
        _expect(fd, b"# ")
        os.write(fd, b"tty; stty size\r")
        out = _expect(fd, b"30 100")
        assert b"/dev/pts/" in out or b"/dev/console" in out
        # a window-size change is passed on
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        deadline = time.monotonic() + 10
        while True:
            os.write(fd, b"stty size\r")
            try:
                _expect(fd, b"50 132", timeout=1)
                break
            except AssertionError:
                assert time.monotonic() < deadline
        # Ctrl-C reaches the container's foreground process, not kobako
        os.write(fd, b"sleep 30; echo slept\r")
        _expect(fd, b"slept\r\n")  # the line's echo: the shell runs it
        time.sleep(1)
        os.write(fd, b"\x03")
        _expect(fd, b"# ")
        os.write(fd, b"echo after-$((1+1))\r")
        out = _expect(fd, b"after-2")
        assert b"\nslept" not in out  # (the echo of the typed line has it)
        if b"# " not in out.split(b"after-2")[-1]:
            _expect(fd, b"# ")
        # ctrl-p ctrl-q: kobako returns 0, the container runs on
        os.write(fd, b"\x10\x11")
        assert _exit_code(pid, fd) == 0
    finally:
        os.close(fd)
    state = _state(root, "tty")
    log = _read(cli("inspect", "-f", "{{.LogPath}}", "tty").stdout.strip())
    assert state["Running"], (state, log)
    pid, fd = _spawn_in_pty("attach", "tty")
    try:
        time.sleep(0.3)
        os.write(fd, b"echo back; exit 3\r")
        _expect(fd, b"back")
        assert _exit_code(pid, fd) == 3
    finally:
        os.close(fd)


def test_run_t_keeps_every_line_and_the_exit_code(root: str, busybox_image: ImageRecord) -> None:
    pid, fd = _spawn_in_pty(
        "run", "-t", "--rm", "bb:1", "sh", "-c", "echo first; echo second; exit 5"
    )
    try:
        out = _expect(fd, b"second")
        assert b"first" in out
        assert _exit_code(pid, fd) == 5
    finally:
        os.close(fd)
    assert cli("ps", "-aq").stdout == ""  # --rm: removed before run returned


def test_detached_i_takes_input_through_attach(root: str, busybox_image: ImageRecord) -> None:
    assert (
        cli(
            "run", "-d", "-i", "--name", "cat", "bb:1", "sh", "-c", "read x; echo got $x"
        ).returncode
        == 0
    )
    try:
        r = cli("attach", "cat", input=b"hello\n")
        assert r.stdout == "got hello\n" and r.returncode == 0, r.stderr
    finally:
        cli("rm", "-f", "cat")


def test_api_exec_run(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.output) == (3, b"out\nerr\n")
    code, (out, err) = c.exec_run("sh -c 'echo o; echo e >&2'", demux=True, user="1000")
    assert (code, out, err) == (0, b"o\n", b"e\n")
    assert c.exec_run("id -u", user="1000").output == b"1000\n"
    assert c.exec_run("pwd", workdir="/tmp").output == b"/tmp\n"
    assert c.exec_run(["sh", "-c", "echo $A"], environment={"A": "b"}).output == b"b\n"
    c.stop(timeout=0)
    with pytest.raises(Conflict):
        c.exec_run("true")


def test_api_attach_streams_until_exit(client: kobako.Client) -> None:
    c = client.containers.run(
        "bb:1",
        ["sh", "-c", "echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three"],
        detach=True,
    )
    time.sleep(0.2)  # "one" is in the log: logs=True gives it, live output the rest
    chunks = c.attach(stream=True, stderr=False, logs=True)
    assert b"".join(chunks).split() == [b"one", b"three"]
    assert c.wait(timeout=10)["StatusCode"] == 0
    with pytest.raises(Conflict):
        c.attach()


def test_exec_t_gets_a_terminal_of_the_container_devpts(client: kobako.Client) -> None:
    c = client.containers.run("bb:1", ["sleep", "100"], detach=True)
    pid, fd = _spawn_in_pty("exec", "-it", c.name, "sh", "-c", "tty; stty size; exit 6")
    try:
        out = _expect(fd, b"30 100")
        assert b"/dev/pts/0" in out  # the container's own devpts, not the host's pty
        assert _exit_code(pid, fd) == 6
    finally:
        os.close(fd)
