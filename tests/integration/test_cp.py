"""``kobako cp``: both ways, on running and stopped containers, docker's path rules, tar
streams, and a container that plants symlinks to the host's ``/`` or swaps them mid-copy."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import kobako
from kobako.errors import Conflict, InvalidArgument, NotFound
from kobako.image.store import ImageRecord, Store
from kobako.runtime import copy, from_image, monitor
from kobako.runtime.containers import ContainerStore, is_running, process_start
from kobako.runtime.spec import Mount, Process, Spec
from kobako.runtime.volumes import VolumeStore
from tests.conftest import KOBAKO
from tests.imagetools import make_image

pytestmark = pytest.mark.container

#: What the container makes before the tests look at it: symlinks to the host's / (as the
#: container sees it: its own), a tree with owners, and a marker in its own /etc/passwd.
SETUP = (
    "echo container-passwd-marker >> /etc/passwd"
    " && ln -s / /evil && ln -s ../../../../.. /up"
    " && mkdir -p /data/sub && echo inside > /data/f && echo deep > /data/sub/g"
    " && chown 1234:5678 /data/f && chmod 0640 /data/f"
    " && ln -s /etc/passwd /data/plink && ln -s / /data/root"
    " && ln -s /etc/kobako-cp-victim /data/dlink"
)
#: A host path the container's symlinks aim at: it must never appear on the host.
VICTIM = "/etc/kobako-cp-victim"


@pytest.fixture
def image(store: Store, busybox_tar: bytes) -> ImageRecord:
    return make_image(store, [busybox_tar], tag="bb:1", config={"Cmd": ["sh"]})


@contextmanager
def made(
    store: Store, *, running: bool, mounts: tuple[Mount, ...] = (), loop: str = ""
) -> Iterator[dict]:
    """A container ``c1`` after :data:`SETUP`: still running (``loop``, or a sleep), or
    exited; stopped and removed afterwards."""
    script = SETUP + " && touch /ready"
    if running:
        script += f" && {loop}" if loop else " && exec sleep 300"
    spec = Spec(root="", process=Process(args=("sh", "-c", script)), mounts=mounts)
    doc, final = from_image.create(store, "bb:1", spec, name="c1")
    containers = ContainerStore(store)
    try:
        doc = monitor.start_detached(store, doc, final)
        if running:
            ready = f"/proc/{doc['State']['Pid']}/root/ready"
            deadline = time.monotonic() + 30
            while not os.path.exists(ready) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert os.path.exists(ready)
        else:
            state = doc["State"]
            doc = monitor.wait_stopped(store, doc["Id"], timeout=30)
            assert doc["State"]["ExitCode"] == 0
            # the record says exited once the exit is written; the cgroup goes a bit later
            deadline = time.monotonic() + 30
            while process_start(state["MonitorPid"]) == state["MonitorStart"]:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        yield containers.get(doc["Id"])
    finally:
        current = containers.get(doc["Id"])
        if is_running(current):
            monitor.stop(store, current, 1)
        containers.remove(containers.get(doc["Id"]))
        if os.path.lexists(VICTIM):  # only if the very thing tested failed
            os.unlink(VICTIM)


@pytest.fixture(params=["running", "stopped"])
def c1(request: pytest.FixtureRequest, store: Store, image: ImageRecord) -> Iterator[dict]:
    with made(store, running=request.param == "running") as doc:
        yield doc


def inside(doc: dict, path: str) -> Path:
    """Where a path of the container is seen from the host (running: through its root;
    stopped: its writable layer, where whatever cp wrote is)."""
    if is_running(doc):
        return Path(f"/proc/{doc['State']['Pid']}/root{path}")
    return Path(doc["GraphDriver"]["Data"]["UpperDir"] + path)


def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The CLI, bytes in and out (tar streams)."""
    return subprocess.run(
        [KOBAKO, *args],
        input=input,
        capture_output=True,
        timeout=60,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def ok(*args: str, input: bytes | None = None) -> bytes:
    r = run(*args, input=input)
    assert r.returncode == 0, r.stderr
    return r.stdout


def err(*args: str, input: bytes | None = None) -> str:
    r = run(*args, input=input)
    assert r.returncode == 125
    text = r.stderr.decode()
    assert text.count("\n") == 1, text  # one line, no traceback
    return text.removeprefix("kobako: ").strip()


def test_file_both_ways(c1: dict, tmp_path: Path) -> None:
    ok("cp", "c1:/data/f", str(tmp_path / "f"))
    got = tmp_path / "f"
    assert got.read_text() == "inside\n"
    assert stat.S_IMODE(got.stat().st_mode) == 0o640
    assert (got.stat().st_uid, got.stat().st_gid) == (0, 0)  # whoever runs kobako
    ok("cp", "-a", "c1:/data/f", str(tmp_path / "kept"))
    assert ((tmp_path / "kept").stat().st_uid, (tmp_path / "kept").stat().st_gid) == (1234, 5678)
    ok("cp", "c1:data/f", str(tmp_path) + "/")  # relative to the container's /; into a dir
    assert (tmp_path / "f").read_text() == "inside\n"

    host = tmp_path / "host.txt"
    host.write_text("from the host\n")
    os.chown(host, 42, 43)
    os.chmod(host, 0o604)
    ok("cp", str(host), "c1:/tmp/new")
    new = inside(c1, "/tmp/new")
    assert new.read_text() == "from the host\n"
    assert (new.stat().st_uid, new.stat().st_gid, stat.S_IMODE(new.stat().st_mode)) == (
        0,
        0,
        0o604,
    )
    ok("cp", "--archive", str(host), "c1:/tmp/")  # into a directory, owners kept
    kept = inside(c1, "/tmp/host.txt")
    assert (kept.stat().st_uid, kept.stat().st_gid) == (42, 43)
    ok("cp", str(host), "c1:/data/f")  # over a file
    assert inside(c1, "/data/f").read_text() == "from the host\n"


def test_follow_link(c1: dict, tmp_path: Path) -> None:
    ok("cp", "c1:/data/plink", str(tmp_path))  # the link itself
    assert os.readlink(tmp_path / "plink") == "/etc/passwd"
    (tmp_path / "plink").unlink()
    ok("cp", "-L", "c1:/data/plink", str(tmp_path))  # what it points to, under its name
    assert "container-passwd-marker" in (tmp_path / "plink").read_text()
    (tmp_path / "target").write_text("target\n")
    os.symlink(tmp_path / "target", tmp_path / "hlink")
    ok("cp", str(tmp_path / "hlink"), "c1:/tmp/")
    assert os.readlink(inside(c1, "/tmp/hlink")) == str(tmp_path / "target")
    ok("cp", "--follow-link", str(tmp_path / "hlink"), "c1:/tmp/followed")
    assert inside(c1, "/tmp/followed").read_text() == "target\n"


def test_directories_both_ways(c1: dict, tmp_path: Path) -> None:
    ok("cp", "c1:/data", str(tmp_path / "new"))  # a new directory: the source renamed
    assert sorted(os.listdir(tmp_path / "new")) == ["dlink", "f", "plink", "root", "sub"]
    assert (tmp_path / "new/sub/g").read_text() == "deep\n"
    assert os.readlink(tmp_path / "new/root") == "/"  # a symlink stays a symlink
    assert os.readlink(tmp_path / "new/plink") == "/etc/passwd"
    ok("cp", "c1:/data", str(tmp_path / "new"))  # an existing directory: copied into it
    assert (tmp_path / "new/data/sub/g").read_text() == "deep\n"
    (tmp_path / "contents").mkdir()
    ok("cp", "c1:/data/.", str(tmp_path / "contents"))  # SRC/.: the contents only
    assert sorted(os.listdir(tmp_path / "contents")) == ["dlink", "f", "plink", "root", "sub"]

    tree = _host_tree(tmp_path / "tree")
    ok("cp", "-a", str(tree), "c1:/tmp/t")
    assert _describe(inside(c1, "/tmp/t")) == _describe(tree)
    ok("cp", "-a", "c1:/tmp/t", str(tmp_path / "back"))
    back = tmp_path / "back"
    assert _describe(back) == _describe(tree)
    assert os.stat(back / "a/one").st_ino == os.stat(back / "a/hard").st_ino
    ok("cp", str(tree), "c1:/tmp/t0")  # without -a: the container's root owns it all
    assert {v[2:4] for v in _describe(inside(c1, "/tmp/t0")).values()} == {(0, 0)}


def _host_tree(top: Path) -> Path:
    """A tree with what a copy must keep: modes, times, symlinks, a hard link, a fifo."""
    (top / "a/b").mkdir(parents=True)
    (top / "a/one").write_bytes(os.urandom(200_000))
    os.link(top / "a/one", top / "a/hard")
    (top / "a/b/two").write_text("two\n")
    os.symlink("../one", top / "a/b/up")
    os.symlink("/", top / "a/root")
    os.mkfifo(top / "a/fifo")
    os.chown(top / "a/b/two", 7, 8)
    os.chmod(top / "a/b", 0o750)
    os.chmod(top / "a/one", 0o4755)
    for path in (top / "a/b/two", top / "a/b", top / "a"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return top


def _describe(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``top``: type, mode, owner, mtime, and content or link target."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            what: Any = None
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = Path(path).read_bytes()
            mtime = st.st_mtime_ns if stat.S_ISDIR(st.st_mode) or name == "two" else None
            rel = os.path.relpath(path, top)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            out[rel] += (mtime, what)
    return out


def test_symlinks_to_the_hosts_root_stay_in_the_container(c1: dict, tmp_path: Path) -> None:
    with open("/etc/passwd") as f:
        assert "container-passwd-marker" not in f.read()
    for path in ("/evil/etc/passwd", "/up/etc/passwd", "/data/root/etc/passwd", "/data/plink"):
        ok("cp", "-L", f"c1:{path}", str(tmp_path / "p"))
        assert "container-passwd-marker" in (tmp_path / "p").read_text(), path
    ok("cp", "c1:/evil", str(tmp_path / "link"))  # the link itself, not the host's /
    assert os.readlink(tmp_path / "link") == "/"

    name = f"kobako-cp-{os.getpid()}"
    (tmp_path / "x").write_text("x\n")
    ok("cp", str(tmp_path / "x"), f"c1:/evil/tmp/{name}")
    ok("cp", str(tmp_path / "x"), f"c1:/up/tmp/{name}-up")
    assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/tmp/{name}-up")
    assert inside(c1, f"/tmp/{name}").read_text() == "x\n"
    assert inside(c1, f"/tmp/{name}-up").read_text() == "x\n"
    ok("cp", str(tmp_path / "x"), "c1:/data/dlink")  # a symlink at the end: followed, inside
    assert not os.path.lexists(VICTIM)
    assert inside(c1, VICTIM).read_text() == "x\n"
    # a whole tree through a link: -L follows the link (in the container), nothing more
    ok("cp", "-L", "c1:/data/root/data", str(tmp_path / "d"))
    assert os.readlink(tmp_path / "d/root") == "/"


def test_dot_dot_stays_in_the_container(c1: dict, tmp_path: Path) -> None:
    ok("cp", "c1:/../../../../etc/passwd", str(tmp_path / "p"))
    assert "container-passwd-marker" in (tmp_path / "p").read_text()
    ok("cp", "c1:data/../../etc/passwd", str(tmp_path / "q"))
    assert "container-passwd-marker" in (tmp_path / "q").read_text()
    (tmp_path / "x").write_text("x\n")
    name = f"kobako-dots-{os.getpid()}"
    ok("cp", str(tmp_path / "x"), f"c1:../../../tmp/{name}")
    assert not os.path.exists(f"/tmp/{name}")
    assert inside(c1, f"/tmp/{name}").read_text() == "x\n"
    # a tar whose entries climb out is refused before anything is written
    evil = _tar(("../../../tmp/" + name + "-tar", b"no\n"))
    assert "outside the destination" in err("cp", "-", "c1:/tmp", input=evil)
    assert not os.path.exists(f"/tmp/{name}-tar")


def _tar(*files: tuple[str, bytes], uid: int = 0, gid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), uid, gid, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_streams(c1: dict, tmp_path: Path) -> None:
    out = ok("cp", "c1:/data", "-")
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        names = {m.name: m for m in tar}
    assert sorted(names) == [
        "data",
        "data/dlink",
        "data/f",
        "data/plink",
        "data/root",
        "data/sub",
        "data/sub/g",
    ]
    assert (names["data/f"].uid, names["data/f"].gid, names["data/f"].mode) == (1234, 5678, 0o640)
    assert names["data/root"].issym() and names["data/root"].linkname == "/"
    out = ok("cp", "c1:/data/.", "-")
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert sorted(tar.getnames())[:3] == [".", "dlink", "f"]

    ok("cp", "-", "c1:/tmp", input=_tar(("in/a", b"a\n"), ("b", b"b\n"), uid=77, gid=88))
    a = inside(c1, "/tmp/in/a")
    assert a.read_text() == "a\n" and (a.stat().st_uid, a.stat().st_gid) == (77, 88)
    assert inside(c1, "/tmp/b").read_text() == "b\n"
    # through the container's symlink to its own /
    ok("cp", "-", "c1:/evil/tmp", input=_tar(("c", b"c\n")))
    assert inside(c1, "/tmp/c").read_text() == "c\n"
    assert err("cp", "-", "c1:/data/f") == 'destination "c1:/data/f" must be a directory'


def test_errors_are_dockers(c1: dict, tmp_path: Path) -> None:
    assert err("cp", "c1:/nope", str(tmp_path)) == "Could not find the file /nope in container c1"
    assert err("cp", "c1:/evil/nope/x", str(tmp_path)).startswith("Could not find the file")
    assert err("cp", str(tmp_path / "nope"), "c1:/tmp") == (
        f"lstat {tmp_path}/nope: no such file or directory"
    )
    (tmp_path / "f").write_text("f\n")
    assert err("cp", str(tmp_path / "f"), "c1:/nope/x") == (
        "Could not find the file /nope in container c1"
    )
    assert "does not exist" in err("cp", str(tmp_path / "f"), "c1:/nope/")
    assert "cannot copy directory" in err("cp", "c1:/data", str(tmp_path / "f"))
    assert err("cp", "c1:/data/f", str(tmp_path / "no/such")) == (
        f'invalid output path: directory "{tmp_path}/no" does not exist'
    )
    assert err("cp", "c1:/a", "c1:/b") == "copying between containers is not supported"
    assert err("cp", "a", "b") == "must specify at least one container source"
    assert err("cp", "nosuch:/a", "b") == "No such container: nosuch"
    assert err("cp", "c1:/a") == "'kobako cp' requires exactly 2 arguments, got 1"
    assert err("cp", "c1:/proc/1/environ", str(tmp_path)).startswith("Could not find the file")


def test_a_symlink_swapped_mid_copy_is_never_followed(
    store: Store, image: ImageRecord, tmp_path: Path
) -> None:
    """The tar is read as the copy goes: when the first (big) file of ``d/`` is half read,
    ``d`` is renamed away and a symlink to a host directory put in its place. The rest of
    ``d/`` still lands in the directory that was ``d`` (its fd is held); nothing on the host."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    big = os.urandom(1 << 20)
    data = _tar(("d/first", big), ("d/second", b"second\n"))
    with made(store, running=True) as doc:
        root = inside(doc, "")
        (root / "d").mkdir()

        class Swapping(io.BytesIO):
            swapped = False

            def read(self, n: int | None = -1) -> bytes:
                if not self.swapped and self.tell() > len(big) // 2:
                    os.rename(root / "d", root / "d.moved")
                    os.symlink(str(host_dir), root / "d")
                    self.swapped = True
                return super().read(n)

        stream = Swapping(data)
        copy.put_archive(store, doc, "/", stream)
        assert stream.swapped
        assert os.listdir(host_dir) == []
        assert (root / "d.moved/first").read_bytes() == big
        assert (root / "d.moved/second").read_text() == "second\n"
        # and a destination already swapped for a symlink fails: it is not followed either
        with pytest.raises(kobako.errors.KobakoError):
            copy.put_archive(store, doc, "/", io.BytesIO(_tar(("d/third", b"3\n"))))
        assert os.listdir(host_dir) == []


def test_a_racing_container_never_reaches_the_host(
    store: Store, image: ImageRecord, tmp_path: Path
) -> None:
    """The container swaps a directory and a symlink to its / in a loop while files are
    copied in and out: each copy lands inside the container or fails, never on the host."""
    name = f"kobako-race-{os.getpid()}"
    loop = (
        "mkdir -p /r/tmp /r/etc && cp /etc/passwd /r/etc/passwd"
        " && while true; do mv /r /r.real; ln -s / /r; rm /r; mv /r.real /r; done"
    )
    (tmp_path / "x").write_text("x\n")
    with made(store, running=True, loop=loop):
        for i in range(30):
            run("cp", str(tmp_path / "x"), f"c1:/r/tmp/{name}-{i}")
            if run("cp", "c1:/r/etc/passwd", str(tmp_path / f"p{i}")).returncode == 0:
                assert "container-passwd-marker" in (tmp_path / f"p{i}").read_text()
    assert not [n for n in os.listdir("/tmp") if n.startswith(name)]


def test_stopped_container_volumes_are_copied_through(
    store: Store, image: ImageRecord, tmp_path: Path
) -> None:
    mounts = (Mount(destination="/vol", type="volume", source="cpvol"),)
    with made(store, running=False, mounts=mounts) as doc:
        (tmp_path / "f").write_text("to the volume\n")
        ok("cp", str(tmp_path / "f"), "c1:/vol/f")
        data = Path(VolumeStore(store).data("cpvol"))
        assert (data / "f").read_text() == "to the volume\n"
        assert not inside(doc, "/vol/f").exists()  # not into the layer under the volume
        ok("cp", "c1:/vol/f", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "to the volume\n"
    VolumeStore(store).remove("cpvol")


def test_running_container_hides_kernel_filesystems(
    store: Store, image: ImageRecord, tmp_path: Path
) -> None:
    with made(store, running=True):
        ok("cp", "c1:/proc", str(tmp_path / "proc"))
        assert os.listdir(tmp_path / "proc") == []
        assert "kernel filesystem" in err("cp", str(tmp_path / "proc"), "c1:/sys/x")


def test_python_api(root: str, store: Store, image: ImageRecord) -> None:
    with made(store, running=False):
        c = kobako.Client(root).containers.get("c1")
        assert c.put_archive("/tmp", _tar(("api", b"api\n"))) is True
        chunks, st = c.get_archive("/tmp/api")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.next()
            assert member is not None and member.name == "api"
            f = tar.extractfile(member)
            assert f is not None and f.read() == b"api\n"
        assert st["name"] == "api" and st["size"] == 4 and st["mode"] == 0o644
        _, st = c.get_archive("/data")
        assert st["mode"] & (1 << 31)  # Go's os.ModeDir
        with pytest.raises(NotFound):
            c.get_archive("/nope")
        with pytest.raises(Conflict):
            c.put_archive("/data/f", _tar(("x", b"x")))
        with pytest.raises(InvalidArgument):
            c.put_archive("/tmp", _tar(("../x", b"x")))
