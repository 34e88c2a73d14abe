"""Volumes: named and anonymous, the first-use copy, rm -v, in-use refusal, prune, CLI, API."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import kobako
from kobako.errors import Conflict, InvalidArgument, NotFound
from kobako.image.store import ImageRecord, Store
from kobako.runtime.containers import ContainerStore
from kobako.runtime.volumes import ANONYMOUS_LABEL, VolumeStore
from tests.conftest import KOBAKO
from tests.conftest import kobako as cli
from tests.imagetools import make_image, tar_of

container = pytest.mark.container


@pytest.fixture
def app(store: Store, busybox_tar: bytes) -> ImageRecord:
    """busybox with /data/seed in the image (and /data a VOLUME of it)."""
    top = tar_of(
        [
            ("data", "dir", b"", 0o755),
            ("data/seed", "file", b"seeded\n", 0o640),
            ("srv", "dir", b"", 0o755),
            ("srv/seed", "file", b"srv seed\n", 0o644),
        ]
    )
    config = {"Cmd": ["sh"], "Volumes": {"/data": {}}}
    return make_image(store, [busybox_tar, top], tag="app:1", config=config)


def ok(*args: str) -> str:
    r = cli(*args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def volume_names(store: Store) -> set[str]:
    return {doc["Name"] for doc in VolumeStore(store).list()}


# -- named volumes in containers --------------------------------------------------------------


@container
def test_a_named_volume_outlives_its_container(app: ImageRecord, store: Store) -> None:
    ok("run", "--rm", "-v", "keep:/keep", "app:1", "sh", "-c", "echo kept > /keep/f")
    assert "keep" in volume_names(store)
    assert ok("run", "--rm", "-v", "keep:/elsewhere:ro", "app:1", "cat", "/elsewhere/f") == "kept\n"
    r = cli("run", "--rm", "-v", "keep:/k:ro", "app:1", "sh", "-c", "echo x > /k/g")
    assert r.returncode != 0
    assert not (Path(VolumeStore(store).data("keep")) / "g").exists()


@container
def test_mount_flag_takes_a_volume(app: ImageRecord, store: Store) -> None:
    ok("run", "--rm", "--mount", "type=volume,src=mnt,dst=/m", "app:1", "touch", "/m/f")
    assert os.path.exists(os.path.join(VolumeStore(store).data("mnt"), "f"))
    r = cli("run", "--rm", "--mount", "source=mnt,target=/m,readonly", "app:1", "touch", "/m/g")
    assert r.returncode != 0


@container
def test_first_use_copies_the_image_content_into_an_empty_volume(
    app: ImageRecord, store: Store
) -> None:
    ok("run", "--name", "c1", "-v", "fresh:/srv", "app:1", "true")
    data = Path(VolumeStore(store).data("fresh"))
    assert (data / "seed").read_text() == "srv seed\n"
    # not into a volume that has content: what is there stays, nothing is added
    (data / "seed").unlink()
    (data / "mine").write_text("mine\n")
    ok("run", "--rm", "-v", "fresh:/data", "app:1", "true")
    assert sorted(os.listdir(data)) == ["mine"]
    # nocopy: nothing copied, in either syntax
    ok("run", "--rm", "-v", "bare:/srv:nocopy", "app:1", "true")
    assert os.listdir(VolumeStore(store).data("bare")) == []
    ok("run", "--rm", "--mount", "src=bare2,dst=/srv,volume-nocopy", "app:1", "true")
    assert os.listdir(VolumeStore(store).data("bare2")) == []
    (mount,) = [m for m in ContainerStore(store).get("c1")["Mounts"] if m["Name"] == "fresh"]
    assert mount == {
        "Type": "volume",
        "Name": "fresh",
        "Source": str(data),
        "Destination": "/srv",
        "Driver": "local",
        "Mode": "",
        "RW": True,
        "Propagation": "",
    }


@container
def test_rm_v_removes_anonymous_volumes_only(app: ImageRecord, store: Store) -> None:
    ok("run", "--name", "c", "-v", "named:/n", "-v", "/anon", "app:1", "true")
    mounts = {m["Destination"]: m["Name"] for m in ContainerStore(store).get("c")["Mounts"]}
    assert set(mounts) == {"/data", "/n", "/anon"}  # /data: the image's VOLUME
    vols = VolumeStore(store)
    assert ANONYMOUS_LABEL in vols.get(mounts["/anon"])["Labels"]
    assert ANONYMOUS_LABEL in vols.get(mounts["/data"])["Labels"]
    assert not vols.get("named")["Labels"]
    ok("rm", "-v", "c")
    assert volume_names(store) == {"named"}


@container
def test_rm_without_v_and_run_rm(app: ImageRecord, store: Store) -> None:
    ok("run", "--name", "c", "-v", "/anon", "app:1", "true")
    ok("rm", "c")
    assert len(volume_names(store)) == 2  # its anonymous volumes stay, unused
    ok("run", "--rm", "-v", "/anon", "app:1", "true")  # --rm removes them with it
    assert len(volume_names(store)) == 2


@container
def test_a_volume_in_use_is_not_removed(app: ImageRecord, store: Store) -> None:
    ok("create", "--name", "user", "-v", "busy:/b", "app:1")
    cid = ContainerStore(store).get("user")["Id"]
    for args in (("volume", "rm", "busy"), ("volume", "rm", "-f", "busy")):
        r = cli(*args)
        assert r.returncode == 1
        assert r.stderr == f"kobako: remove busy: volume is in use - [{cid}]\n"
    assert "busy" in volume_names(store)
    with pytest.raises(Conflict, match="volume is in use"):
        kobako.from_env().volumes.get("busy").remove()
    ok("rm", "-v", "user")
    assert ok("volume", "rm", "busy") == "busy\n"
    assert volume_names(store) == set()


@container
def test_prune(app: ImageRecord, store: Store) -> None:
    ok("volume", "create", "idle")
    ok("volume", "create", "--label", "keep=yes", "labelled")
    ok("run", "--name", "holder", "-v", "held:/h", "-v", "/held-anon", "app:1", "true")
    ok("run", "--rm", "-v", "/gone", "app:1", "true")  # removed with the container
    ok("run", "--name", "dropped", "-v", "/left", "app:1", "true")
    ok("rm", "dropped")  # without -v: two anonymous volumes left unused
    held = {m["Name"] for m in ContainerStore(store).get("holder")["Mounts"]}
    before = volume_names(store)
    assert len(before) == 3 + 2 + 2
    out = ok("volume", "prune", "-f")
    removed = before - volume_names(store)
    assert len(removed) == 2 and not removed & held
    assert out.startswith("Deleted Volumes:\n") and all(n in out for n in removed)
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    ok("volume", "prune", "-a", "-f", "--filter", "label=keep=yes")
    assert "labelled" not in volume_names(store) and "idle" in volume_names(store)
    assert ok("volume", "prune", "-af") == "Deleted Volumes:\nidle\n\nTotal reclaimed space: 0B\n"
    assert volume_names(store) == held


@container
def test_python_api_named_volumes(app: ImageRecord, store: Store) -> None:
    client = kobako.from_env()
    vol = client.volumes.create("api", labels={"team": "kobako"})
    assert (vol.id, vol.name, vol.attrs["Labels"]) == ("api", "api", {"team": "kobako"})
    client.containers.run(
        "app:1", "sh -c 'echo one > /v/f'", volumes={"api": {"bind": "/v", "mode": "rw"}}
    )
    assert client.containers.run("app:1", "cat /v/f", volumes=["api:/v:ro"], remove=True) == (
        b"one\n"
    )
    assert [v.name for v in client.volumes.list(filters={"label": "team=kobako"})] == ["api"]
    assert client.volumes.list(filters={"dangling": True}) == []
    for c in client.containers.list(all=True):
        c.remove(v=True)
    assert client.volumes.get("api") == vol
    assert client.volumes.prune() == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    pruned = client.volumes.prune(filters={"all": True})
    assert pruned["VolumesDeleted"] == ["api"] and pruned["SpaceReclaimed"] == 4
    with pytest.raises(NotFound, match="get api: no such volume"):
        vol.reload()
    vol.remove(force=True)  # gone: not an error with force


# -- the volume verbs --------------------------------------------------------------------------


def test_volume_verbs_output(store: Store) -> None:
    assert ok("volume", "create", "--label", "a=1", "alpha") == "alpha\n"
    assert ok("volume", "create", "alpha") == "alpha\n"  # idempotent, as docker's
    anonymous = ok("volume", "create").strip()
    assert len(anonymous) == 64 and set(anonymous) <= set("0123456789abcdef")
    table = ok("volume", "ls").splitlines()
    assert table[0] == "DRIVER    VOLUME NAME"
    assert sorted(table[1:]) == sorted([f"local     {anonymous}", "local     alpha"])
    assert sorted(ok("volume", "ls", "-q").split()) == sorted(["alpha", anonymous])
    assert ok("volume", "ls", "-q", "--filter", "name=alp") == "alpha\n"
    assert ok("volume", "ls", "-q", "--filter", "label=a=1") == "alpha\n"
    assert sorted(ok("volume", "ls", "-q", "--filter", "dangling=true").split()) == sorted(
        ["alpha", anonymous]
    )
    (row,) = [json.loads(line) for line in ok("volume", "ls", "--format", "json").splitlines()][:1]
    assert {"Driver", "Labels", "Mountpoint", "Name", "Scope"} <= set(row)
    (doc,) = json.loads(ok("volume", "inspect", "alpha"))
    assert list(doc) == [
        "CreatedAt",
        "Driver",
        "Labels",
        "Mountpoint",
        "Name",
        "Options",
        "Scope",
    ]
    assert (doc["Driver"], doc["Labels"], doc["Name"], doc["Scope"]) == (
        "local",
        {"a": "1"},
        "alpha",
        "local",
    )
    assert doc["Mountpoint"] == os.path.join(store.root, "volumes", "alpha", "_data")
    assert ok("volume", "inspect", "-f", "{{.Name}} {{.Driver}}", "alpha") == "alpha local\n"
    r = cli("volume", "inspect", "alpha", "nope")
    assert r.returncode == 1 and r.stderr == "kobako: No such volume: nope\n"
    r = cli("volume", "rm", "nope")
    assert (r.returncode, r.stderr) == (1, "kobako: get nope: no such volume\n")
    assert cli("volume", "rm", "-f", "nope").returncode == 0
    assert ok("volume", "rm", "alpha", anonymous) == f"alpha\n{anonymous}\n"
    assert ok("volume", "ls", "-q") == ""


@pytest.mark.parametrize("name", ["a", "a/b", "_x", "x y", "~/up"])
def test_bad_volume_names_are_one_line(store: Store, name: str) -> None:
    for args in (("volume", "create", name), ("run", "--rm", "-v", f"{name}:/x", "busybox")):
        r = cli(*args)
        assert r.returncode == 125, args
        assert r.stderr.count("\n") == 1
        assert f'"{name}" includes invalid characters for a local volume name' in r.stderr
    assert volume_names(store) == set()
    with pytest.raises(InvalidArgument):
        kobako.from_env().volumes.create(name)


def test_concurrent_creation_of_one_name(store: Store) -> None:
    for attempt in range(5):
        name = f"race{attempt}"
        procs = [
            subprocess.Popen(
                [KOBAKO, "volume", "create", name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
        assert all(r == (0, f"{name}\n", "") for r in results), results
        entries = os.listdir(os.path.join(store.root, "volumes"))
        assert sorted(e for e in entries if e.startswith(name) or name in e) == [name]
        assert json.loads(Path(store.root, "volumes", name, "volume.json").read_text())["Name"] == (
            name
        )


@container
def test_system_df_counts_volumes(app: ImageRecord, store: Store) -> None:
    ok("run", "--name", "c", "-v", "dfvol:/v", "app:1", "true")
    ok("volume", "create", "spare")
    lines = ok("system", "df").splitlines()
    (row,) = [line for line in lines if line.startswith("Local Volumes")]
    assert row.split()[2:4] == ["3", "2"]  # dfvol, spare and /data's; dfvol and /data used
