"""The cgroup layer for real: limits written, stats, OOM, kill, clean removal (v1 or v2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from kobako.errors import CgroupError, InvalidArgument
from kobako.runtime.cgroups import Cgroup, cgroup_version, cleanup_stale
from kobako.runtime.spec import Resources

pytestmark = pytest.mark.cgroup

MiB = 1 << 20

NO_LIMITS = Resources()

ALL_LIMITS = Resources(
    memory=64 * MiB,
    memory_swap=96 * MiB,
    memory_reservation=32 * MiB,
    nano_cpus=500_000_000,
    cpu_shares=512,
    cpuset_cpus="0",
    pids_limit=50,
)

# Docker's device rules on v1 as devices.list shows them (moby's defaults, then runc's).
DOCKER_DEVICES = [
    "c 1:5 rwm",
    "c 1:3 rwm",
    "c 1:9 rwm",
    "c 1:8 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c *:* m",
    "b *:* m",
    "c 1:7 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
]


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, super options) of every cgroup mount, read independently."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] in ("cgroup", "cgroup2"):
                out.append((fields[4], fields[sep + 1], fields[sep + 3].split(",")))
    return out


def _v1_dir(controller: str, cid: str) -> str:
    for mountpoint, fstype, options in _mounts():
        if fstype == "cgroup" and controller in options:
            return f"{mountpoint}/kobako/{cid}"
    raise AssertionError(f"no v1 hierarchy with {controller}")


def _leftovers(cid: str) -> list[str]:
    return [m for m, _, _ in _mounts() if os.path.lexists(f"{m}/kobako/{cid}")]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _procs(cg: Cgroup) -> list[str]:
    return [f"{path}/cgroup.procs" for path in cg.paths]


def _new_id() -> str:
    return "test-" + os.urandom(6).hex()


@pytest.fixture
def make() -> Iterator[Callable[..., Cgroup]]:
    """Create cgroups that are destroyed after the test, whatever happens."""
    made: list[Cgroup] = []

    def create(resources: Resources = NO_LIMITS, **kwargs: bool) -> Cgroup:
        cg = Cgroup.create(_new_id(), resources, **kwargs)
        made.append(cg)
        return cg

    yield create
    for cg in made:
        cg.destroy()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes that are killed and reaped after the test, whatever happens."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def _go(p: subprocess.Popen[bytes]) -> None:
    """Let a ``read x; ...`` shell script go on (it waits so that it can be moved first)."""
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_version_matches_the_mount_table() -> None:
    types = {mountpoint: fstype for mountpoint, fstype, _ in _mounts()}
    expected = 2 if types.get("/sys/fs/cgroup") == "cgroup2" else 1
    assert cgroup_version() == expected


def test_every_limit_is_written(make: Callable[..., Cgroup]) -> None:
    cg = make(ALL_LIMITS)
    if cg.version == 2:
        (path,) = cg.paths
        assert path == f"/sys/fs/cgroup/kobako/{cg.id}"
        files = {
            "memory.max": str(64 * MiB),
            "memory.swap.max": str(32 * MiB),
            "memory.low": str(32 * MiB),
            "cpu.max": "50000 100000",
            "cpu.weight": "59",  # runc's and crun's conversion of 512 shares
            "cpuset.cpus": "0",
            "pids.max": "50",
        }
        assert {name: _read(f"{path}/{name}") for name in files} == files
    else:
        memory = _v1_dir("memory", cg.id)
        assert _read(f"{memory}/memory.limit_in_bytes") == str(64 * MiB)
        assert _read(f"{memory}/memory.soft_limit_in_bytes") == str(32 * MiB)
        if os.path.exists(f"{memory}/memory.memsw.limit_in_bytes"):
            assert _read(f"{memory}/memory.memsw.limit_in_bytes") == str(96 * MiB)
        cpu = _v1_dir("cpu", cg.id)
        assert _read(f"{cpu}/cpu.cfs_period_us") == "100000"
        assert _read(f"{cpu}/cpu.cfs_quota_us") == "50000"
        assert _read(f"{cpu}/cpu.shares") == "512"
        assert _read(f"{_v1_dir('cpuset', cg.id)}/cpuset.cpus") == "0"
        assert _read(f"{_v1_dir('pids', cg.id)}/pids.max") == "50"
    stats = cg.stats()
    assert (stats.memory_limit, stats.pids_limit) == (64 * MiB, 50)


def test_swap_defaults_to_twice_memory_and_minus_one_is_unlimited(
    make: Callable[..., Cgroup],
) -> None:
    default = make(Resources(memory=32 * MiB))
    unlimited = make(Resources(memory=32 * MiB, memory_swap=-1))
    if default.version == 2:
        swap_max = "memory.swap.max"
        if not os.path.exists(f"{default.paths[0]}/{swap_max}"):
            pytest.skip("no swap accounting")
        assert _read(f"{default.paths[0]}/{swap_max}") == str(32 * MiB)
        assert _read(f"{unlimited.paths[0]}/{swap_max}") == "max"
    else:
        memsw = "memory.memsw.limit_in_bytes"
        if not os.path.exists(f"{_v1_dir('memory', default.id)}/{memsw}"):
            pytest.skip("no swap accounting")
        assert _read(f"{_v1_dir('memory', default.id)}/{memsw}") == str(64 * MiB)
        assert int(_read(f"{_v1_dir('memory', unlimited.id)}/{memsw}")) > 1 << 62


def test_no_limits_means_unlimited(make: Callable[..., Cgroup]) -> None:
    stats = make().stats()
    assert (stats.memory_limit, stats.pids_limit) == (None, None)


def test_cpuset_is_usable_without_a_cpuset_limit(make: Callable[..., Cgroup]) -> None:
    cg = make()
    if cg.version == 2:
        assert _read(f"{cg.paths[0]}/cpuset.cpus.effective")
        assert _read(f"{cg.paths[0]}/cpuset.mems.effective")
    else:
        # a v1 cpuset starts empty, and no task can join an empty one
        cpuset = _v1_dir("cpuset", cg.id)
        root = cpuset.rsplit("/kobako/", 1)[0]
        assert _read(f"{cpuset}/cpuset.cpus") == _read(f"{root}/cpuset.cpus")
        assert _read(f"{cpuset}/cpuset.mems") == _read(f"{root}/cpuset.mems")


def test_v1_device_allowlist_is_dockers(make: Callable[..., Cgroup]) -> None:
    if cgroup_version() == 2:
        pytest.skip("v1 only: on v2 a BPF program does it (see test_container's allowlist test)")
    confined = make()
    privileged = make(privileged=True)
    assert _read(f"{_v1_dir('devices', confined.id)}/devices.list").split("\n") == DOCKER_DEVICES
    assert _read(f"{_v1_dir('devices', privileged.id)}/devices.list") == "a *:* rwm"


def test_handles_for_the_launcher(make: Callable[..., Cgroup]) -> None:
    cg = make()
    if cg.version == 2:
        assert cg.join_files == (f"{cg.paths[0]}/cgroup.procs",)  # for the clone(2) fallback
        assert cg.clone_fd is not None
        assert os.readlink(f"/proc/self/fd/{cg.clone_fd}") == cg.paths[0]
        cg.destroy()
        assert cg.clone_fd is None
    else:
        assert cg.clone_fd is None
        v1 = {m for m, fstype, _ in _mounts() if fstype == "cgroup"}
        assert {f.rsplit("/kobako/", 1)[0] for f in cg.join_files} == v1
        assert all(f == f"{os.path.dirname(f)}/tasks" for f in cg.join_files)
        assert all(os.path.exists(f) for f in cg.join_files)


def test_container_mounts(make: Callable[..., Cgroup]) -> None:
    mounts = make().container_mounts()
    if cgroup_version() == 2:
        assert len(mounts) == 1
        (m,) = mounts
        assert (m.type, m.destination, m.source) == ("cgroup2", "/sys/fs/cgroup", "cgroup")
        assert set(m.options) == {"ro", "nosuid", "nodev", "noexec"}
        return
    tmpfs, *hierarchies = mounts
    assert (tmpfs.type, tmpfs.destination) == ("tmpfs", "/sys/fs/cgroup")
    assert "mode=755" in tmpfs.options
    host = {
        os.path.basename(m): [o for o in opts if o not in ("rw", "xattr")]
        for m, fstype, opts in _mounts()
        if fstype == "cgroup"
    }
    assert len(hierarchies) == len(host)
    for m in hierarchies:
        assert (m.type, m.source) == ("cgroup", "cgroup")
        assert m.options[:4] == ("ro", "nosuid", "nodev", "noexec")
        name = m.destination.removeprefix("/sys/fs/cgroup/")
        assert m.options[4].removeprefix("none,").split(",") == host[name]


def test_stats_and_kill_with_a_real_process(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cg = make(Resources(memory=64 * MiB, pids_limit=20))
    p = spawn("sleep", "30")
    cg.add_process(p.pid)
    stats = cg.stats()
    assert stats.pids_current >= 1
    assert (stats.memory_limit, stats.pids_limit) == (64 * MiB, 20)
    assert stats.cpu_usage_ns >= 0 and stats.memory_usage >= 0
    assert not cg.oom_killed()
    cg.kill()
    assert p.wait(timeout=60) == -9
    cg.destroy()
    assert _leftovers(cg.id) == []


def test_kill_reaches_processes_forked_inside(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cg = make()
    p = spawn("sh", "-c", "read x; sleep 30 & sleep 30 & wait")
    cg.add_process(p.pid)
    _go(p)
    _wait_for(lambda: cg.stats().pids_current >= 3, "the shell's two children")
    cg.kill()
    assert p.wait(timeout=60) == -9
    # (not pids.current: it counts zombies, and children orphaned here may not be reaped soon)
    _wait_for(lambda: not any(_read(f) for f in _procs(cg)), "the children to die")


def test_oom_kill_is_reported(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cg = make(Resources(memory=16 * MiB, memory_swap=16 * MiB))
    # The shell waits to be moved into the cgroup, then becomes a 64 MiB memory hog.
    hog = 'exec "$0" -c "b = bytearray(64 << 20); b[::4096] = b\\"x\\" * len(b[::4096])"'
    p = spawn("sh", "-c", f"read x; {hog}", sys.executable)
    cg.add_process(p.pid)
    _go(p)
    assert p.wait(timeout=120) == -9
    assert cg.oom_killed()
    peak = cg.stats().memory_peak
    assert peak is None or peak <= 16 * MiB


def test_destroy_kills_leftovers_and_leaves_nothing(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cg = make(ALL_LIMITS)
    p = spawn("sleep", "30")
    cg.add_process(p.pid)
    cg.destroy()
    assert p.wait(timeout=60) == -9
    assert _leftovers(cg.id) == []
    cg.destroy()  # again: nothing to do


def test_a_failing_limit_names_it_and_leaves_nothing() -> None:
    cid = _new_id()
    with pytest.raises(CgroupError) as e:
        Cgroup.create(cid, Resources(memory=64 * MiB, cpuset_cpus="99"))
    assert "cpuset.cpus" in str(e.value) and "'99'" in str(e.value)
    assert _leftovers(cid) == []


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (Resources(memory=MiB), "Minimum memory limit"),
        (Resources(memory_swap=64 * MiB), "set the Memory limit"),
        (Resources(memory=64 * MiB, memory_swap=32 * MiB), "larger than memory limit"),
        (Resources(memory=64 * MiB, memory_reservation=128 * MiB), "reservation"),
    ],
)
def test_docker_refuses_these_and_so_do_we(resources: Resources, message: str) -> None:
    cid = _new_id()
    with pytest.raises(InvalidArgument, match=message):
        Cgroup.create(cid, resources)
    assert _leftovers(cid) == []


def test_add_process_of_a_missing_pid_fails(make: Callable[..., Cgroup]) -> None:
    cg = make()
    with open("/proc/sys/kernel/pid_max") as f:
        missing = int(f.read()) + 1
    with pytest.raises(CgroupError, match=r"cgroup\.procs"):
        cg.add_process(missing)


def test_cleanup_stale_removes_only_idle_unlisted_cgroups(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    idle, kept, busy = make(), make(), make()
    p = spawn("sleep", "30")
    busy.add_process(p.pid)
    # Everything else under kobako/ is listed as live, so other runs on this host are safe.
    others = {
        name
        for m, _, _ in _mounts()
        if os.path.isdir(f"{m}/kobako")
        for name in os.listdir(f"{m}/kobako")
    } - {idle.id, busy.id}
    cleanup_stale(others | {kept.id})
    assert _leftovers(idle.id) == []
    assert _leftovers(kept.id) and _leftovers(busy.id)
    assert p.poll() is None  # nothing was killed
    idle.destroy()  # already gone: fine


def test_kobako_parent_is_set_up_again_after_removal(
    make: Callable[..., Cgroup], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    make().destroy()  # this process has set kobako/ up
    for m, _, _ in _mounts():
        try:
            os.rmdir(f"{m}/kobako")
        except FileNotFoundError:
            continue
        except OSError:
            pytest.skip("other kobako cgroups exist on this host")
    cg = make()
    p = spawn("sleep", "30")
    cg.add_process(p.pid)  # joining needs a cpuset with CPUs and memory nodes (v1)
    assert cg.stats().pids_current >= 1
