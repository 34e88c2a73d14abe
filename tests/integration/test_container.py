"""Containers for real: namespaces, rootfs, confinement, limits, users, exit codes, signals."""

from __future__ import annotations

import glob
import json
import os
import pty
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kobako import CommandNotExecutable, CommandNotFound, InvalidArgument, NotFound
from kobako.fixtures import busybox_rootfs
from kobako.runtime import Mount, Overlay, Process, Resources, Security, Spec, run
from kobako.runtime.lifecycle import RUN_DIR
from kobako.runtime.proc import process_start
from tests.conftest import KOBAKO, kobako

pytestmark = [pytest.mark.container, pytest.mark.v2]


def sh(rootfs: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return kobako("run", "--rm", *flags, "--rootfs", str(rootfs), "sh", "-c", script)


def status_field(rootfs: Path, name: str, *flags: str) -> str:
    out = sh(rootfs, f"grep '^{name}:' /proc/self/status", *flags)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(":", 1)[1].strip()


# --- isolation ---------------------------------------------------------------------------------


def test_pid_1_and_own_pid_namespace(busybox: Path) -> None:
    out = sh(busybox, "echo $$; ps -o pid,comm; true")
    lines = out.stdout.splitlines()
    assert lines[0] == "1"
    assert [line.split() for line in lines[2:]] == [["1", "sh"], ["2", "ps"]], out


def test_own_hostname(busybox: Path) -> None:
    out = sh(busybox, "hostname; cat /etc/hostname", "-h", "boxy")
    assert out.stdout.split() == ["boxy", "boxy"]


def test_default_hostname_is_short_id(busybox: Path) -> None:
    out = sh(busybox, "hostname")
    assert len(out.stdout.strip()) == 12


def test_own_mount_table(busybox: Path) -> None:
    out = sh(busybox, "cat /proc/self/mountinfo")
    targets = [line.split()[4] for line in out.stdout.splitlines()]
    assert targets[0] == "/"
    assert "/work" not in targets and not any(t.startswith("/tmp/pytest") for t in targets)
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"} <= set(targets)


def test_network_none_has_only_lo_up(busybox: Path) -> None:
    out = sh(
        busybox,
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -o link",
        "--network",
        "none",
    )
    assert out.stdout.split()[0] == "lo"
    assert "UP" in out.stdout.splitlines()[-1] or "LOOPBACK,UP" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 3


def test_network_host_sees_host_interfaces(busybox: Path) -> None:
    out = sh(busybox, "ls /sys/class/net", "--network", "host")
    assert set(out.stdout.split()) == set(os.listdir("/sys/class/net"))


def test_dev_nodes_and_links(busybox: Path) -> None:
    out = sh(busybox, "ls -l /dev; echo x > /dev/null; head -c 4 /dev/zero | wc -c")
    for node in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "fd", "stdin"):
        assert f" {node}" in out.stdout
    assert out.stdout.split()[-1] == "4"


def test_etc_files_are_the_containers(busybox: Path) -> None:
    out = sh(busybox, "cat /etc/hosts", "-h", "web")
    assert "127.0.0.1\tlocalhost" in out.stdout and "web" in out.stdout


# --- confinement -------------------------------------------------------------------------------


def test_docker_default_capabilities(busybox: Path) -> None:
    assert status_field(busybox, "CapEff") == "00000000a80425fb"
    assert status_field(busybox, "CapBnd") == "00000000a80425fb"
    assert status_field(busybox, "CapInh") == "0000000000000000"
    assert status_field(busybox, "CapAmb") == "0000000000000000"


def test_no_new_privs_and_seccomp_filter(busybox: Path) -> None:
    assert status_field(busybox, "NoNewPrivs") == "1"
    assert status_field(busybox, "Seccomp") == "2"


def test_unshare_user_and_mount_refused(busybox: Path) -> None:
    out = sh(busybox, "unshare -U true; echo rc=$?; mount -t tmpfs none /tmp; echo rc=$?")
    codes = out.stdout.split()
    assert len(codes) == 2 and "rc=0" not in codes, out


def test_proc_masked_and_readonly(busybox: Path) -> None:
    out = sh(
        busybox,
        "wc -c < /proc/keys; ls /proc/acpi | wc -l; "
        "echo 1 > /proc/sys/kernel/ns_last_pid; echo rc=$?",
    )
    lines = out.stdout.split()
    assert lines[0] == "0" and lines[1] == "0"
    assert "Read-only file system" in out.stderr and lines[-1] == "rc=1"
    if os.path.exists("/proc/kcore"):
        assert sh(busybox, "wc -c < /proc/kcore").stdout.strip() == "0"


def test_device_allowlist(rootfs: Path) -> None:
    # CAP_MKNOD lets a container make any node; the cgroup's allowlist (v1 devices controller,
    # v2 BPF program) must still refuse to open a disk or /dev/mem through it.
    script = (
        "mknod /tmp/disk b 8 0 && echo made; head -c1 /tmp/disk; echo rc=$?; "
        "mknod /tmp/mem c 1 1; head -c1 /tmp/mem; echo rc=$?; head -c1 /dev/zero | wc -c"
    )
    out = sh(rootfs, script)
    assert out.stdout.split() == ["made", "rc=1", "rc=1", "1"], out
    assert out.stderr.count("Operation not permitted") == 2


def test_sys_read_only(busybox: Path) -> None:
    out = sh(busybox, "touch /sys/x; echo rc=$?; touch /sys/fs/cgroup/x; echo rc=$?")
    assert out.stdout.split() == ["rc=1", "rc=1"]


def test_privileged(busybox: Path) -> None:
    eff = int(status_field(busybox, "CapEff", "--privileged"), 16)
    with open("/proc/self/status") as f:
        own = next(line for line in f if line.startswith("CapPrm:"))
    assert eff == int(own.split()[1], 16)  # every capability kobako itself has
    assert status_field(busybox, "Seccomp", "--privileged") == "0"
    out = sh(busybox, "mount -t tmpfs none /tmp && echo mounted", "--privileged")
    assert out.stdout.strip() == "mounted"


def test_cap_add_and_drop(busybox: Path) -> None:
    assert status_field(busybox, "CapEff", "--cap-drop", "ALL") == "0000000000000000"
    eff = int(status_field(busybox, "CapEff", "--cap-drop", "chown", "--cap-add", "NET_ADMIN"), 16)
    assert not eff & (1 << 0) and eff & (1 << 12)
    out = sh(busybox, "chown 1 /tmp; echo rc=$?", "--cap-drop", "CHOWN")
    assert out.stdout.strip() == "rc=1"


def test_seccomp_unconfined_and_custom_profile(busybox: Path, tmp_path: Path) -> None:
    assert status_field(busybox, "Seccomp", "--security-opt", "seccomp=unconfined") == "0"
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    path = tmp_path / "deny-mkdir.json"
    path.write_text(json.dumps(profile))
    out = sh(busybox, "mkdir /tmp/d; echo rc=$?", "--security-opt", f"seccomp={path}")
    assert out.stdout.strip() == "rc=1" and "Operation not permitted" in out.stderr


def test_no_new_privileges_can_be_turned_off(busybox: Path) -> None:
    assert status_field(busybox, "NoNewPrivs", "--security-opt", "no-new-privileges=false") == "0"
    assert status_field(busybox, "Seccomp", "--security-opt", "no-new-privileges=false") == "2"


def test_ulimit(busybox: Path) -> None:
    out = sh(busybox, "ulimit -n; ulimit -Hn", "--ulimit", "nofile=256:512")
    assert out.stdout.split() == ["256", "512"]


def test_user_namespace_maps() -> None:
    from kobako.fixtures import busybox_rootfs

    # the mapped root (host uid 100000) must be able to reach the rootfs
    top = Path(tempfile.mkdtemp(prefix="kobako-userns-"))
    try:
        top.chmod(0o755)
        rootfs = busybox_rootfs(top / "rootfs")
        script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /x; echo rc=$?"
        maps = ("--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536")
        out = sh(rootfs, script, *maps, "--network", "none")
    finally:
        shutil.rmtree(top)
    assert out.returncode == 0, out.stderr
    # root in the container, but the host's root-owned rootfs is not its to write
    assert out.stdout.split() == ["0", "100000", "65536", "0", "100000", "65536", "0", "rc=1"]


# --- rootfs ------------------------------------------------------------------------------------


def test_read_only_rootfs(busybox: Path) -> None:
    out = sh(busybox, "touch /x; echo rc=$?; touch /tmp/x; echo rc=$?", "--read-only")
    assert out.stdout.split() == ["rc=1", "rc=1"]


def test_bind_mounts_rw_and_ro(busybox: Path, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "f").write_text("hello\n")
    out = sh(
        busybox,
        "echo data > /rw/new; cat /ro/f; echo x > /ro/g; echo rc=$?",
        "-v",
        f"{rw}:/rw",
        "-v",
        f"{ro}:/ro:ro",
    )
    assert (rw / "new").read_text() == "data\n"
    assert out.stdout.split() == ["hello", "rc=1"]
    assert not (ro / "g").exists()


def test_mount_and_tmpfs_flags(busybox: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("file")
    out = sh(
        busybox,
        "cat /data/f; grep -E ' /(data|scratch) ' /proc/mounts",
        "--mount",
        f"type=bind,source={tmp_path},target=/data,readonly",
        "--tmpfs",
        "/scratch:size=1m",
    )
    assert out.stdout.startswith("file")
    assert "/data" in out.stdout and "ro," in out.stdout
    assert "tmpfs /scratch tmpfs" in out.stdout and "size=1024k" in out.stdout


def test_bind_mount_target_symlink_stays_inside(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = rootfs / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (rootfs / "escape").symlink_to(str(outside))  # absolute: must resolve inside the rootfs
    (rootfs / "up").symlink_to("../../../../../../../../" + str(outside))
    src = tmp_path / "src"
    src.mkdir()
    out = sh(rootfs, "true", "-v", f"{src}:/escape/mnt", "-v", f"{src}:/up/mnt2")
    assert out.returncode == 0, out.stderr
    assert not (outside / "mnt").exists() and not (outside / "mnt2").exists()
    assert (inside / "mnt").is_dir() and (inside / "mnt2").is_dir()


def test_dangling_symlink_target_fails_cleanly(rootfs: Path, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (rootfs / "dangling").symlink_to(str(sentinel / "sub"))
    out = sh(rootfs, "true", "-v", f"{tmp_path}:/dangling/x")
    assert out.returncode == 125 and out.stderr.count("\n") == 1
    assert "/dangling/x" in out.stderr
    assert list(sentinel.iterdir()) == []


def test_overlay_rootfs_layers_whiteouts_and_upper(busybox: Path, tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "hello").write_text("from the top layer\n")
    os.mknod(top / "etc" / "group", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    spec = Spec(
        root=str(merged),
        overlay=Overlay(lower=(str(top), str(busybox)), upper=str(upper), work=str(work)),
        process=Process(
            args=(
                "sh",
                "-c",
                "cat /hello; ls /etc/group; echo new > /created; rm /hello; ls /bin/busybox",
            )
        ),
    )
    out = tmp_path / "out"
    with open(out, "wb") as f:
        result = run(spec, stdout=f.fileno(), stderr=f.fileno())
    text = out.read_text()
    assert "from the top layer" in text and "/bin/busybox" in text
    assert "can't access '/etc/group'" in text or "No such file" in text, text
    assert result.status == 0
    assert (upper / "created").read_text() == "new\n"
    assert stat.S_ISCHR((upper / "hello").lstat().st_mode)  # deleting left a whiteout
    assert (top / "hello").exists() and (busybox / "etc" / "group").exists()  # layers intact
    assert os.listdir(merged) == []  # the mount lived in the container's namespace only


def test_overlay_many_layers(tmp_path: Path) -> None:
    base = tmp_path / ("l" * 40)
    layers = []
    for i in range(40):
        d = base / f"{i:064x}"
        (d / "layers").mkdir(parents=True)
        (d / "layers" / f"{i}").write_text(str(i))
        layers.append(str(d))
    bottom = busybox_rootfs(base / "rootfs")
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for d in (upper, work, merged):
        d.mkdir()
    assert sum(len(p) + 1 for p in layers) > 4096  # too long as absolute paths
    spec = Spec(
        root=str(merged),
        overlay=Overlay(lower=(*layers, str(bottom)), upper=str(upper), work=str(work)),
        process=Process(args=("sh", "-c", "ls /layers | wc -l")),
    )
    out = tmp_path / "out"
    with open(out, "wb") as f:
        assert run(spec, stdout=f.fileno()).status == 0
    assert out.read_text().strip() == "40"


# --- process -----------------------------------------------------------------------------------


def test_env_defaults_and_flags(busybox: Path, tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROM_FILE=1\n")
    out = sh(busybox, "env | sort", "-e", "A=b", "--env-file", str(envfile), "-h", "hh")
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env["A"] == "b" and env["FROM_FILE"] == "1" and env["HOSTNAME"] == "hh"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"


def test_workdir_created(busybox: Path) -> None:
    out = sh(busybox, "pwd", "-w", "/srv/app")
    assert out.stdout.strip() == "/srv/app"


def test_users(busybox: Path) -> None:
    assert sh(busybox, "id -u; id -g", "-u", "1000").stdout.split() == ["1000", "0"]
    assert sh(busybox, "id -u; id -g", "-u", "1000:1000").stdout.split() == ["1000", "1000"]
    assert sh(busybox, "id -un; id -g", "-u", "nobody").stdout.split() == ["nobody", "65534"]
    assert sh(busybox, "id -u; id -gn", "-u", "daemon:wheel").stdout.split() == ["1", "wheel"]
    assert "10" in sh(busybox, "id -G").stdout.split()  # root is in wheel: supplementary group
    assert status_field(busybox, "CapEff", "-u", "1000") == "0000000000000000"


def test_bad_user_is_one_line(busybox: Path) -> None:
    out = sh(busybox, "true", "-u", "nosuchuser")
    assert out.returncode == 125
    assert (
        out.stderr.count("\n") == 1 and "nosuchuser" in out.stderr and "Traceback" not in out.stderr
    )


def test_exit_codes(busybox: Path, tmp_path: Path) -> None:
    assert sh(busybox, "exit 3").returncode == 3
    assert sh(busybox, "kill -KILL $$; sleep 1", "--init").returncode == 137
    out = kobako("run", "--rm", "--rootfs", str(busybox), "nonexistent")
    assert (
        out.returncode == 127
        and 'exec: "nonexistent": executable file not found in $PATH' in out.stderr
    )
    assert out.stderr.count("\n") == 1


def test_not_executable_is_126(rootfs: Path) -> None:
    (rootfs / "script").write_text("#!/bin/sh\necho hi\n")
    out = kobako("run", "--rm", "--rootfs", str(rootfs), "/script")
    assert out.returncode == 126 and "permission denied" in out.stderr


def test_missing_rootfs_and_bad_flags(tmp_path: Path) -> None:
    out = kobako("run", "--rm", "--rootfs", str(tmp_path / "nope"), "true")
    assert out.returncode == 125 and "does not exist" in out.stderr and out.stderr.count("\n") == 1
    out = kobako("run", "--bogus", "--rootfs", str(tmp_path), "true")
    assert out.returncode == 125 and "unknown flag: --bogus" in out.stderr
    out = kobako("run", "--memory", "lots", "--rootfs", str(tmp_path), "true")
    assert out.returncode == 125 and '"lots"' in out.stderr and "--memory" in out.stderr
    for bad in (
        ["--cpus", "-1"],
        ["-v", "relative:/x"],
        ["--ulimit", "nofile=x"],
        ["--network", "nosuchnet"],
    ):
        out = kobako("run", *bad, "--rootfs", str(tmp_path), "true")
        assert out.returncode == 125 and "Traceback" not in out.stderr, (bad, out.stderr)


def test_signals_forwarded(busybox: Path) -> None:
    script = "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done"
    proc = subprocess.Popen(
        [KOBAKO, "run", "--rm", "--rootfs", str(busybox), "sh", "-c", script],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 42


def test_init_shows_nothing_of_kobako(busybox: Path) -> None:
    # the init is a fork of kobako that never execs: its cmdline and environ were kobako's
    script = (
        "tr '\\0' ' ' < /proc/1/cmdline; echo; tr -d '\\0' < /proc/1/environ | wc -c; "
        "cat /proc/1/maps > /dev/null; echo rc=$?"
    )
    out = sh(busybox, script, "--init", "-e", "MARKER=secret")
    assert out.stdout.split() == ["kobako-init", "0", "rc=1"], out  # not dumpable either
    assert str(busybox) not in out.stdout


def test_init_reaps_and_forwards(busybox: Path) -> None:
    out = sh(
        busybox,
        "(sleep 0.1 &) ; sleep 0.5; ps -o stat,comm | grep -c Z; cat /proc/1/status | grep PPid",
        "--init",
    )
    assert out.stdout.split()[0] == "0", out  # the orphaned sleep was reaped by init
    proc = subprocess.Popen(
        [
            KOBAKO,
            "run",
            "--rm",
            "--init",
            "--rootfs",
            str(busybox),
            "sh",
            "-c",
            "echo ready; sleep 100",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)  # sh ignores nothing here: SIGINT kills it
    assert proc.wait(timeout=30) == 130


def _drive_pty(argv: list[str], typed: bytes = b"") -> tuple[int, bytes]:
    """Run argv on a new pty, type ``typed`` at once, collect the screen until it exits.

    Returns the exit status and the output. A run stuck past 30 s has its container's PID 1
    killed (the namespace goes with it), so that nothing is left behind.
    """
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    output = b""
    try:
        os.write(fd, typed)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the pty's other side is closed
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                for child in f.read().split():
                    os.kill(int(child), signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_tty(busybox: Path) -> None:
    script = "tty; stty size; echo $TERM"
    status, output = _drive_pty([KOBAKO, "run", "--rm", "-t", "--rootfs", str(busybox), "sh",
                                 "-c", script])  # fmt: skip
    assert status == 0, output
    text = output.decode()
    assert "/dev/pts/0" in text or "/dev/console" in text
    assert "xterm" in text


def test_interactive_tty_forwards_input(busybox: Path) -> None:
    argv = [KOBAKO, "run", "--rm", "-it", "--rootfs", str(busybox), "sh"]
    # typed before the container is up: it must wait for the shell, not be flushed
    status, output = _drive_pty(argv, b"echo in-$((6*7))\nexit 3\n")
    assert b"in-42" in output, output
    assert status == 3


def test_leftovers_of_a_killed_kobako_are_removed_by_the_next_run(busybox: Path) -> None:
    proc = subprocess.Popen([KOBAKO, "run", "--rm", "--rootfs", str(busybox), "sh", "-c",
                             "echo ready; sleep 100"], stdout=subprocess.PIPE)  # fmt: skip
    container = 0
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            container = int(f.read().split()[0])
        deadline = time.monotonic() + 10  # kobako records the pid just after the start
        while time.monotonic() < deadline:
            runtime = [d for d in glob.glob(f"{RUN_DIR}/containers/*") if _pid_of(d) == container]
            if runtime:
                break
            time.sleep(0.02)
        assert len(runtime) == 1
    finally:
        proc.kill()  # kobako dies with no chance to clean up
        proc.wait()
        if container:
            os.kill(container, signal.SIGKILL)  # then its orphaned container ends
    cid = os.path.basename(runtime[0])
    deadline = time.monotonic() + 10  # gone, or a zombie (the v2 guest's init never reaps)
    while process_start(container) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert glob.glob(f"/sys/fs/cgroup/*/kobako/{cid}") + glob.glob(f"/sys/fs/cgroup/kobako/{cid}")
    assert sh(busybox, "true").returncode == 0  # the next run reaps what was left
    assert not os.path.exists(runtime[0])
    assert not glob.glob(f"/sys/fs/cgroup/*/kobako/{cid}") + glob.glob(
        f"/sys/fs/cgroup/kobako/{cid}"
    )


def _pid_of(runtime_dir: str) -> int | None:
    try:
        with open(os.path.join(runtime_dir, "pid")) as f:
            return int(f.read().split()[0])
    except OSError:
        return None


# --- limits ------------------------------------------------------------------------------------


def test_memory_hog_is_oom_killed(busybox: Path) -> None:
    out = sh(
        busybox,
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
    )
    assert out.returncode == 137
    assert "OOM-killed" in out.stderr


def test_pids_limit(busybox: Path) -> None:
    script = "for i in $(seq 20); do sleep 5 & done; echo all started"
    out = sh(busybox, script, "--pids-limit", "8")
    assert out.returncode != 0 and "all started" not in out.stdout
    assert "can't fork" in out.stderr
    assert sh(busybox, script, "--pids-limit", "30").stdout.strip() == "all started"


def test_cpus_in_cgroup(busybox: Path) -> None:
    out = sh(
        busybox,
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["50000", "100000"]


# --- Python API --------------------------------------------------------------------------------


def test_api_run_returns_status_and_stats(busybox: Path, tmp_path: Path) -> None:
    log = tmp_path / "out"
    with open(log, "wb") as f:
        result = run(
            Spec(
                root=str(busybox),
                process=Process(args=("sh", "-c", "echo api; exit 5")),
                resources=Resources(memory=64 << 20, pids_limit=50),
            ),
            stdout=f.fileno(),
        )
    assert result.status == 5 and not result.oom_killed
    assert log.read_text() == "api\n"
    assert result.stats.memory_limit == 64 << 20
    assert result.stats.cpu_usage_ns > 0


def test_api_errors_are_typed(busybox: Path, tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound) as e:
        run(Spec(root=str(busybox), process=Process(args=("nope",))))
    assert e.value.exit_code == 127 and e.value.step == "exec"
    with pytest.raises(NotFound):
        run(Spec(root=str(tmp_path / "missing"), process=Process(args=("true",))))
    with pytest.raises(InvalidArgument):
        run(Spec(root=str(busybox), process=Process(args=("true",), cwd="relative")))
    with pytest.raises(NotFound):
        run(Spec(root=str(busybox), process=Process(args=("true",), user="ghost")))


def test_api_not_executable(rootfs: Path) -> None:
    (rootfs / "data").write_text("not a program")
    with pytest.raises(CommandNotExecutable):
        run(Spec(root=str(rootfs), process=Process(args=("/data",))))


def test_api_mounts_and_security(busybox: Path, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mounted\n")
    out = tmp_path / "o"
    with open(out, "wb") as f:
        result = run(
            Spec(
                root=str(busybox),
                process=Process(args=("sh", "-c", "cat /m/x; grep CapEff /proc/self/status")),
                mounts=(Mount(destination="/m", source=str(tmp_path), options=("rbind", "ro")),),
                security=Security(cap_drop=("ALL",)),
            ),
            stdout=f.fileno(),
        )
    assert result.status == 0
    assert out.read_text().split() == ["mounted", "CapEff:", "0000000000000000"]
