"""Fixtures shared by the whole suite: a busybox rootfs, the CLI, and a leak check."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KOBAKO = shutil.which("kobako", path=os.path.dirname(sys.executable)) or "kobako"


def kobako(
    *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the kobako CLI; returns the completed process with text stdout/stderr."""
    return subprocess.run(
        [KOBAKO, *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem made from the host's busybox-static (read-only by convention)."""
    from kobako.fixtures import busybox_rootfs

    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A busybox root filesystem of this test's own, free to change."""
    from kobako.fixtures import busybox_rootfs

    return busybox_rootfs(tmp_path / "rootfs")


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _cgroups() -> set[str]:
    dirs = glob.glob("/sys/fs/cgroup/*/kobako/*/") + glob.glob("/sys/fs/cgroup/kobako/*/")
    return {d.rstrip("/") for d in dirs}


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            out.add(int(stat.split("/")[2]))
    return out


def _links() -> set[str]:
    """Host links kobako makes per container (veth) or per user network (kb-); the default
    bridge ``kobako0`` stays, as docker0 does."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return set()
    return {n for n in names if n.startswith(("veth", "kb-"))}


def _runtime_dirs() -> set[str]:
    from kobako.runtime.lifecycle import RUN_DIR

    return set(glob.glob(f"{RUN_DIR}/containers/*"))


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every container test leaves no mounts, cgroups, processes, runtime dirs or links behind."""
    if not any(request.node.get_closest_marker(m) for m in ("container", "cgroup")):
        yield
        return
    before = (_mounts(), _cgroups(), _children(), _runtime_dirs(), _links())
    yield
    # the kernel removes the veth of a container that ended in the foreground by itself,
    # with its network namespace, within some 50 ms
    deadline = time.monotonic() + 2
    while not _links() <= before[4] and time.monotonic() < deadline:
        time.sleep(0.02)
    after = (_mounts(), _cgroups(), _children(), _runtime_dirs(), _links())
    for what, b, a in zip(
        ("mounts", "cgroups", "processes", "runtime dirs", "links"), before, after, strict=True
    ):
        assert a <= b, f"left behind {what}: {sorted(map(str, a - b))}"
