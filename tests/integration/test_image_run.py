"""Containers from images: overlay root filesystems, the image config, diff/commit/export, API."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import kobako
from kobako.errors import (
    Conflict,
    ContainerError,
    ImageNotFound,
    InvalidArgument,
    RegistryUnreachable,
)
from kobako.image.store import ImageRecord, Store
from kobako.runtime.containers import ContainerStore
from tests.conftest import kobako as cli
from tests.imagetools import make_image, tar_of

pytestmark = [pytest.mark.container, pytest.mark.v2]


@pytest.fixture
def app(store: Store, busybox_tar: bytes) -> ImageRecord:
    """busybox plus a layer, with a config that sets everything run honours."""
    top = tar_of(
        [
            ("srv", "dir", b"", 0o755),
            ("srv/app", "dir", b"", 0o755),
            ("srv/app/hello.txt", "file", b"hello from the image\n", 0o644),
            ("data", "dir", b"", 0o755),
            ("data/seed", "file", b"seeded\n", 0o600),
        ]
    )
    config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ['echo "cmd: $GREETING from $(pwd) as $(id -u)"'],
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"],
        "WorkingDir": "/srv/app",
        "User": "daemon",
        "Labels": {"org.example.team": "kobako"},
        "Volumes": {"/data": {}},
        "StopSignal": "SIGQUIT",
    }
    return make_image(store, [busybox_tar, top], tag="app:1", config=config)


def test_run_honours_the_image_config(app: ImageRecord) -> None:
    r = cli("run", "--rm", "app:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "cmd: hi from /srv/app as 1\n"


def test_arguments_replace_cmd_and_flags_override(app: ImageRecord) -> None:
    r = cli(
        "run",
        "--rm",
        "-e",
        "GREETING=yo",
        "-w",
        "/tmp",
        "-u",
        "0",
        "app:1",
        "echo $GREETING $(pwd) $(id -u)",
    )
    assert r.stdout == "yo /tmp 0\n", r.stderr


def test_entrypoint_flag_drops_the_image_cmd(app: ImageRecord) -> None:
    r = cli("run", "--rm", "--entrypoint", "/bin/echo", "app:1")
    assert (r.returncode, r.stdout) == (0, "\n"), r.stderr
    r = cli("run", "--rm", "--entrypoint", "/bin/cat", "app:1", "hello.txt")
    assert r.stdout == "hello from the image\n", r.stderr
    r = cli("run", "--rm", "--entrypoint", "", "app:1", "id", "-un")
    assert r.stdout == "daemon\n", r.stderr


def test_image_volume_is_an_anonymous_volume_seeded_from_the_image(
    app: ImageRecord, store: Store
) -> None:
    r = cli("run", "--name", "vol", "-u", "0", "app:1", "cat /data/seed && echo new > /data/x")
    assert (r.returncode, r.stdout) == (0, "seeded\n"), r.stderr
    doc = ContainerStore(store).get("vol")
    (mount,) = doc["Mounts"]
    assert mount["Type"] == "volume" and mount["Destination"] == "/data"
    assert Path(mount["Source"], "x").read_text() == "new\n"
    assert Path(mount["Source"], "seed").stat().st_mode & 0o777 == 0o600
    assert cli("diff", "vol").stdout == ""  # the volume is not part of the container's layer
    assert cli("rm", "-v", "vol").returncode == 0
    assert not os.path.exists(mount["Source"])


def test_whiteouts_across_layers(store: Store, busybox_tar: bytes) -> None:
    base = tar_of(
        [
            ("t", "dir", b"", 0o755),
            ("t/gone", "file", b"x", 0o644),
            ("t/opaque", "dir", b"", 0o755),
            ("t/opaque/old", "file", b"old", 0o644),
            ("t/f2d", "file", b"file", 0o644),
            ("t/d2f", "dir", b"", 0o755),
            ("t/d2f/inner", "file", b"inner", 0o644),
        ]
    )
    top = tar_of(
        [
            ("t/.wh.gone", "file", b"", 0o644),
            ("t/opaque/.wh..wh..opq", "file", b"", 0o644),
            ("t/opaque/new", "file", b"new", 0o644),
            ("t/.wh.f2d", "file", b"", 0o644),
            ("t/f2d", "dir", b"", 0o755),
            ("t/f2d/now-a-dir", "file", b"d", 0o644),
            ("t/.wh.d2f", "file", b"", 0o644),
            ("t/d2f", "file", b"now a file", 0o644),
        ]
    )
    make_image(store, [busybox_tar, base, top], tag="wh")
    r = cli("run", "--rm", "wh", "sh", "-c", "cd /t && find . | sort && cat d2f")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        ".",
        "./d2f",
        "./f2d",
        "./f2d/now-a-dir",
        "./opaque",
        "./opaque/new",
        "now",
        "a",
        "file",
    ]


def test_many_layers(store: Store, busybox_tar: bytes) -> None:
    layers = [busybox_tar] + [
        tar_of([("layers", "dir", b"", 0o755), (f"layers/{i}", "file", str(i), 0o644)])
        for i in range(60)
    ]
    make_image(store, layers, tag="many")
    r = cli("run", "--rm", "many", "sh", "-c", "ls /layers | wc -l")
    assert r.stdout.strip() == "60", r.stderr


def test_diff_commit_export(app: ImageRecord, store: Store, tmp_path: Path) -> None:
    script = "echo changed > /srv/app/hello.txt && rm /etc/group && mkdir /new && echo a > /new/f"
    r = cli("run", "--name", "work", "-u", "0", "app:1", script)
    assert r.returncode == 0, r.stderr
    assert cli("diff", "work").stdout.splitlines() == [
        "C /etc",
        "D /etc/group",
        "A /new",
        "A /new/f",
        "C /srv",
        "C /srv/app",
        "C /srv/app/hello.txt",
    ]

    r = cli("commit", "-m", "my change", "-c", 'CMD ["cat", "/new/f"]', "work", "snap:1")
    assert r.returncode == 0, r.stderr
    new = store.image("snap:1")
    assert new.id == r.stdout.strip()
    assert len(new.config.diff_ids) == len(app.config.diff_ids) + 1
    r = cli(
        "run",
        "--rm",
        "--entrypoint",
        "",
        "snap:1",
        "sh",
        "-c",
        "cat /srv/app/hello.txt /new/f; ls /etc/group",
    )
    assert r.stdout == "changed\na\n" and "No such file" in r.stderr

    out = tmp_path / "rootfs.tar"
    assert cli("export", "-o", str(out), "work").returncode == 0
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert "new/f" in names and "bin/busybox" in names and "etc/group" not in names
        assert tar.extractfile("srv/app/hello.txt").read() == b"changed\n"  # type: ignore[union-attr]

    r = cli("rmi", "app:1")
    assert r.returncode != 0 and "container" in r.stderr and "\n" not in r.stderr.strip()
    assert cli("rm", "work").returncode == 0
    assert "work" not in cli("ps", "-a").stdout


def test_export_refuses_a_terminal_and_unknown_names_fail_in_one_line(root: str) -> None:
    for args in (["diff", "nope"], ["export", "-o", "/tmp/x", "nope"], ["rm", "nope"]):
        r = cli(*args)
        assert r.returncode != 0
        assert r.stderr.strip().count("\n") == 0 and "nope" in r.stderr, r.stderr
    r = cli("run", "--rm", "--pull", "never", "no-such-image:1")
    assert r.returncode == 125 and "Unable to find image 'no-such-image:1'" in r.stderr


def test_names_are_unique(app: ImageRecord) -> None:
    assert cli("run", "--name", "one", "app:1", "true").returncode == 0
    r = cli("run", "--name", "one", "app:1", "true")
    assert r.returncode == 125 and 'The container name "/one" is already in use' in r.stderr
    assert cli("rm", "one").returncode == 0


def test_ps_lists_exited_containers(app: ImageRecord) -> None:
    assert cli("run", "--name", "done", "app:1", "exit 3").returncode == 3
    r = cli("ps", "-a")
    line = next(ln for ln in r.stdout.splitlines() if ln.endswith("done"))
    assert "Exited (3)" in line and "app:1" in line
    assert cli("ps").stdout.count("\n") == 1  # the header: nothing runs
    assert cli("ps", "-aq").stdout.strip() in line
    assert json.loads(cli("ps", "-a", "--format", "json").stdout)["Names"] == "done"
    assert cli("rm", "done").returncode == 0


# -- the Python API ------------------------------------------------------------------------


def test_client_runs_and_returns_output(app: ImageRecord, root: str) -> None:
    client = kobako.Client(root=root)
    assert client.containers.run("app:1", remove=True) == b"cmd: hi from /srv/app as 1\n"
    out = client.containers.run(
        "app:1",
        ["echo $A $(id -u) $(hostname)"],  # one argument for the image's `sh -c`
        environment={"A": "x"},
        user="0",
        hostname="box",
        remove=True,
    )
    assert out == b"x 0 box\n"
    with pytest.raises(ContainerError) as e:
        client.containers.run("app:1", ["echo oops >&2; exit 4"], remove=True)
    assert e.value.exit_status == 4 and e.value.stderr == b"oops\n"
    assert client.containers.list(all=True) == []


def test_client_images(app: ImageRecord, root: str) -> None:
    client = kobako.from_env()
    image = client.images.get("app:1")
    assert image.id == app.id and image.tags == ["app:1"]
    assert image.labels == {"org.example.team": "kobako"}
    assert image.attrs["Config"]["StopSignal"] == "SIGQUIT"
    assert client.images.tag(image, "other", "2")
    assert sorted(client.images.get(app.id).tags) == ["app:1", "other:2"]
    assert [i.id for i in client.images.list("other")] == [app.id]
    client.images.remove("other:2")
    assert client.images.get(app.id).tags == ["app:1"]
    assert client.containers.run("app:1", "true", name="keep") == b""
    with pytest.raises(Conflict):
        client.images.remove("app:1")
    client.containers.get("keep").remove()
    client.images.remove("app:1")
    with pytest.raises(ImageNotFound):
        client.images.get("app:1")
    assert client.store.blobs() == [] and client.store.layers() == []


def test_client_rejects_bad_arguments(app: ImageRecord, root: str) -> None:
    client = kobako.Client(root=root)
    with pytest.raises(InvalidArgument):
        client.containers.run("app:1", "true", mem_limit="lots")
    with pytest.raises(RegistryUnreachable):  # a missing image is pulled, as docker-py does
        client.containers.run("127.0.0.1:1/nope:1", "true")  # (nothing listens on port 1)
    assert client.containers.list(all=True) == []


def test_layer_tar_round_trip_through_export(app: ImageRecord, root: str) -> None:
    client = kobako.Client(root=root)
    client.containers.run("app:1", "true", name="x")
    data = b"".join(client.containers.get("x").export())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("srv/app/hello.txt").size == len(b"hello from the image\n")
    client.containers.get("x").remove(v=True)


def test_create_start_attached_wait_rename(app: ImageRecord, root: str) -> None:
    r = cli("create", "--name", "c1", "app:1")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert cli("wait", "c1").stdout == "0\n"  # created, never run: docker says 0 too
    r = cli("start", "-a", "c1")
    assert (r.returncode, r.stdout) == (0, "cmd: hi from /srv/app as 1\n"), r.stderr
    assert cli("wait", "c1").stdout == "0\n"
    # a container that ran and failed starts again with what it wrote kept (its upper dir)
    r = cli("run", "--name", "again", "-u", "0", "app:1", "echo run >> /log; cat /log; exit 3")
    assert (r.returncode, r.stdout) == (3, "run\n")
    r = cli("start", "-a", "again")
    assert (r.returncode, r.stdout) == (3, "run\nrun\n"), r.stderr
    assert cli("wait", "again").stdout == "3\n"
    # rename, and the name's conflicts
    assert cli("rename", "c1", "c2").returncode == 0
    assert cli("inspect", "-f", "{{.Name}}", cid).stdout == "/c2\n"
    clash = cli("rename", "c2", "again")
    assert clash.returncode == 125 and 'name "/again" is already in use' in clash.stderr
    bad = cli("rename", "c2", "-nope")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1
    detached = cli("start", "c2")  # detached now: it runs under its monitor, and ends
    assert (detached.returncode, detached.stdout) == (0, "c2\n"), detached.stderr
    assert cli("wait", "c2").stdout == "0\n"
    assert cli("wait", "nosuch").returncode == 1
    client = kobako.Client(root=root)
    container = client.containers.get("again")
    assert container.wait() == {"StatusCode": 3, "Error": None}
    container.rename("third")
    assert client.containers.get("third").id == container.id
    for name in ("c2", "third"):
        assert cli("rm", name).returncode == 0


def test_ps_filters(app: ImageRecord, root: str) -> None:
    assert cli("run", "--name", "ok", "--label", "tier=web", "app:1").returncode == 0
    assert cli("run", "--name", "bad", "-u", "0", "app:1", "exit 2").returncode == 2
    assert cli("create", "--name", "new", "app:1").returncode == 0

    def names(*filters: str) -> list[str]:
        args = [a for f in filters for a in ("--filter", f)]
        r = cli("ps", "--format", "json", *args)
        assert r.returncode == 0, r.stderr
        return sorted(json.loads(line)["Names"] for line in r.stdout.splitlines())

    assert names("status=exited") == ["bad", "ok"]
    assert names("status=created") == ["new"]
    assert names("exited=2") == ["bad"]
    assert names("label=tier=web") == ["ok"]
    assert names("label=tier") == ["ok"]
    assert names("name=ba", "name=ne") == ["bad", "new"]  # one key's values: any of them
    assert names("status=exited", "exited=0") == ["ok"]  # keys: all of them
    assert names("ancestor=app:1") == ["bad", "new", "ok"]
    assert names("ancestor=nothing:1") == []
    bad = cli("ps", "--filter", "colour=red")
    assert bad.returncode == 125 and "invalid filter 'colour'" in bad.stderr
    for name in ("ok", "bad", "new"):
        assert cli("rm", name).returncode == 0
