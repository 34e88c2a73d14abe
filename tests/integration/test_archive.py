"""Image archives in and out, against real tools: docker save / OCI layouts, imports, busybox.

skopeo, umoci and podman (Debian packages) write the archives loaded here and read those
saved; hand-built archives (tests/integration/archive_builders.py) cover the formats they do
not write and the hostile or broken ones. Nothing is mocked: loads extract real layers.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kobako.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    LayerError,
    NotFound,
)
from kobako.image.archive import (
    DEFAULT_IMAGE_SOURCE,
    LoadedImage,
    apply_changes,
    default_image,
    import_image,
    load,
    save,
)
from kobako.image.manifest import (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    chain_ids,
    host_platform,
)
from kobako.image.store import ImageRecord, Store
from tests.conftest import kobako as cli
from tests.imagetools import make_image, tar_of
from tests.integration.archive_builders import (
    config_for,
    docker25_archive,
    legacy_docker_archive,
    many_files_layer,
    oci_archive,
    sha256,
    simple_layer,
    snapshot,
)


def need(tool: str) -> str:
    """The tool's path; CI installs it (.ci/packages), a bare machine skips the test."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    return path


def run(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{argv}: {r.stderr}"
    return r  # type: ignore[no-any-return]


def image_file(store: Store, image: ImageRecord, path: str) -> bytes:
    """A file as the image shows it: from the topmost extracted layer that has it."""
    for chain in reversed(chain_ids(image.config.diff_ids)):
        layer = store.layer(chain)
        assert layer is not None, f"layer {chain} is not extracted"
        full = os.path.join(layer.path, path.lstrip("/"))
        if os.path.lexists(full):
            with open(full, "rb") as f:
                return f.read()
    raise AssertionError(f"{path} is in no layer")


def pipe_of(data: bytes) -> BinaryIO:
    """A pipe's read end (not seekable) that a thread fills with ``data``."""
    r, w = os.pipe()

    def feed() -> None:
        with open(w, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    return open(r, "rb")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "store"))


@pytest.fixture
def other(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "other"))


@pytest.fixture
def app(store: Store, busybox_tar: bytes) -> ImageRecord:
    top = tar_of(
        [
            ("srv", "dir", b"", 0o755),
            ("srv/hello.txt", "file", b"hello from app\n", 0o644),
        ]
    )
    config = {"Cmd": ["cat", "/srv/hello.txt"], "Env": ["PATH=/bin"]}
    return make_image(store, [busybox_tar, top], tag="app:1", config=config)


# -- save, then load: kobako and the tools ---------------------------------------------------


def test_round_trip_keeps_every_digest(
    app: ImageRecord, store: Store, other: Store, tmp_path: Path
) -> None:
    path = tmp_path / "app.tar"
    save(store, ["app:1"], str(path))
    loaded = load(other, str(path))
    assert loaded == [
        LoadedImage(
            id=app.id, manifest_digest=app.manifest_digest, names=("docker.io/library/app:1",)
        )
    ]
    assert loaded[0].familiar_names == ("app:1",)
    got = other.image("app:1")
    assert got.manifest == app.manifest
    assert other.read_blob(got.id) == store.read_blob(app.id)
    assert image_file(other, got, "/srv/hello.txt") == b"hello from app\n"
    assert os.readlink(os.path.join(other.layer(chain_ids(got.config.diff_ids)[0]).path, "bin/sh"))  # type: ignore[union-attr]
    # atomic (no temporary file left beside it) and deterministic (a stream gets the same bytes)
    assert sorted(os.listdir(tmp_path)) == ["app.tar", "other", "store"]
    out = io.BytesIO()
    save(store, ["app:1"], out)
    assert out.getvalue() == path.read_bytes()
    # loading again changes nothing
    before = snapshot(other.root)
    assert load(other, str(path)) == loaded
    assert snapshot(other.root) == before


def test_saved_archive_is_docker_save_and_oci_layout(app: ImageRecord, store: Store) -> None:
    out = io.BytesIO()
    save(store, ["app"], out)  # a repository without a tag: all its tags
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
    names = [m.name for m in members]
    blobs = sorted(d.digest[7:] for d in (*app.manifest.layers, app.manifest.config))
    blobs = sorted([*blobs, app.manifest_digest[7:]])
    assert names == [
        "blobs",
        "blobs/sha256",
        *(f"blobs/sha256/{h}" for h in blobs),
        "index.json",
        "manifest.json",
        "oci-layout",
        "repositories",
    ]
    for name, content in files.items():
        if name.startswith("blobs/"):
            assert sha256(content) == "sha256:" + name.rpartition("/")[2]
    [entry] = json.loads(files["manifest.json"])
    assert entry == {
        "Config": f"blobs/sha256/{app.id[7:]}",
        "RepoTags": ["app:1"],
        "Layers": [f"blobs/sha256/{d.digest[7:]}" for d in app.manifest.layers],
    }
    [index] = json.loads(files["index.json"])["manifests"]
    assert index["digest"] == app.manifest_digest
    assert index["annotations"] == {
        "io.containerd.image.name": "docker.io/library/app:1",
        "org.opencontainers.image.ref.name": "1",
    }
    assert json.loads(files["repositories"]) == {"app": {"1": app.config.diff_ids[-1][7:]}}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


def test_save_by_id_unnamed_and_by_repository(
    app: ImageRecord, store: Store, other: Store, busybox_tar: bytes
) -> None:
    store.tag("app:2", app.manifest_digest)
    second = make_image(store, [busybox_tar], tag="app:old")
    out = io.BytesIO()
    save(store, ["app"], out)
    out.seek(0)
    loaded = load(other, out)
    assert {name for i in loaded for name in i.familiar_names} == {"app:1", "app:2", "app:old"}
    assert {i.id for i in loaded} == {app.id, second.id}

    fresh = Store.open(other.root + "-2")
    out = io.BytesIO()
    save(store, [app.id[7:19]], out)  # by short ID: saved without a name
    out.seek(0)
    [image] = load(fresh, out)
    assert (image.id, image.names) == (app.id, ())
    assert [(i.id, i.names) for i in fresh.images()] == [(app.id, ())]

    with pytest.raises(ImageNotFound):
        save(store, ["nothere:1"], io.BytesIO())
    with pytest.raises(InvalidArgument):
        save(store, [], io.BytesIO())


def test_skopeo_reads_what_save_writes(app: ImageRecord, store: Store, tmp_path: Path) -> None:
    skopeo = need("skopeo")
    path = str(tmp_path / "app.tar")
    save(store, ["app:1"], path)
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{path}").stdout)
    assert info["Layers"] == list(app.config.diff_ids)
    assert info["Architecture"] == "amd64"

    def copied(source: str, name: str) -> tuple[str, str, dict[str, Any]]:
        dest = tmp_path / name
        run(skopeo, "copy", "-q", source, f"oci:{dest}:x")
        [entry] = json.loads((dest / "index.json").read_text())["manifests"]
        manifest = json.loads((dest / "blobs/sha256" / entry["digest"][7:]).read_bytes())
        config = manifest["config"]["digest"]
        return (
            entry["digest"],
            config,
            json.loads((dest / "blobs/sha256" / config[7:]).read_bytes()),
        )

    # from docker-archive, skopeo writes a manifest and config of its own: the same image
    _, _, config = copied(f"docker-archive:{path}", "from-docker")
    assert config["rootfs"]["diff_ids"] == list(app.config.diff_ids)
    assert config["config"]["Cmd"] == ["cat", "/srv/hello.txt"]
    # from oci-archive, it copies the manifest as it is
    manifest, config_digest, _ = copied(f"oci-archive:{path}", "from-oci")
    assert (manifest, config_digest) == (app.manifest_digest, app.id)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """podman with its own storage (vfs), run dir and temp dir under this test's tmp_path."""
    import tempfile

    exe = need("podman")
    root = tmp_path / "podman"
    (root / "tmp").mkdir(parents=True)
    runroot = tempfile.mkdtemp(prefix="kp")  # podman wants a runroot of at most 50 characters
    yield [
        exe,
        "--root",
        str(root / "storage"),
        "--runroot",
        runroot,
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_loads_what_save_writes_and_kobako_loads_podman_save(
    app: ImageRecord, store: Store, tmp_path: Path, podman: list[str]
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path / "podman" / "tmp")}
    path = str(tmp_path / "app.tar")
    save(store, ["app:1"], path)
    out = run(*podman, "load", "-i", path, env=env).stdout
    assert "docker.io/library/app:1" in out
    got = run(*podman, "image", "inspect", "--format", "{{.Id}} {{.Digest}}", "app:1", env=env)
    assert got.stdout.split() == [app.id[7:], app.manifest_digest]
    for fmt in ("docker-archive", "oci-archive"):
        saved = str(tmp_path / f"podman-{fmt}.tar")
        run(*podman, "save", "--format", fmt, "-o", saved, "app:1", env=env)
        fresh = Store.open(str(tmp_path / f"from-{fmt}"))
        [image] = load(fresh, saved)
        assert (image.id, image.names) == (app.id, ("docker.io/library/app:1",)), fmt
        record = fresh.image("app:1")
        assert image_file(fresh, record, "/srv/hello.txt") == b"hello from app\n"


# -- images made by umoci and skopeo -----------------------------------------------------------


@pytest.fixture(scope="module")
def umoci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout made by umoci: busybox plus /umoci.txt, Cmd set, tagged ``v1``."""
    from kobako.fixtures import busybox_rootfs

    umoci = need("umoci")
    base = tmp_path_factory.mktemp("umoci")
    layout, bundle = base / "layout", base / "bundle"
    run(umoci, "init", "--layout", str(layout))
    run(umoci, "new", "--image", f"{layout}:v1")
    run(umoci, "unpack", "--image", f"{layout}:v1", str(bundle))
    busybox_rootfs(bundle / "rootfs")
    (bundle / "rootfs/umoci.txt").write_text("made by umoci\n")
    run(umoci, "repack", "--image", f"{layout}:v1", str(bundle))
    cmd = ["--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "cat /umoci.txt"]
    run(umoci, "config", "--image", f"{layout}:v1", *cmd)
    return layout


def _tar_layout(layout: Path, dest: Path) -> str:
    with tarfile.open(dest, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(layout / name, arcname=name)
    return str(dest)


def test_umoci_image_loads(umoci_layout: Path, store: Store, tmp_path: Path) -> None:
    [image] = load(store, _tar_layout(umoci_layout, tmp_path / "umoci.tar"))
    assert image.names == ()  # umoci names a tag only ("v1"): the image stays unnamed
    index = json.loads((umoci_layout / "index.json").read_text())
    assert image.manifest_digest == index["manifests"][0]["digest"]
    record = store.image(image.id)
    assert record.config.cmd == ("sh", "-c", "cat /umoci.txt")
    assert image_file(store, record, "umoci.txt") == b"made by umoci\n"
    assert image_file(store, record, "bin/busybox").startswith(b"\x7fELF")


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_skopeo_made_archives_load(
    umoci_layout: Path, store: Store, tmp_path: Path, transport: str
) -> None:
    skopeo = need("skopeo")
    path = tmp_path / "skopeo.tar"
    run(skopeo, "copy", "-q", f"oci:{umoci_layout}:v1", f"{transport}:{path}:umoci/app:2")
    [image] = load(store, str(path))
    assert image.names == ("docker.io/umoci/app:2",)
    record = store.image("umoci/app:2")
    assert image_file(store, record, "umoci.txt") == b"made by umoci\n"


@pytest.mark.container
def test_loaded_umoci_image_runs(
    umoci_layout: Path, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [image] = load(store, _tar_layout(umoci_layout, tmp_path / "umoci.tar"))
    monkeypatch.setenv("KOBAKO_ROOT", store.root)
    r = cli("run", "--rm", image.id)
    assert (r.returncode, r.stdout) == (0, "made by umoci\n"), r.stderr


# -- formats built by hand -----------------------------------------------------------------------


def test_legacy_docker_save_loads_with_shared_and_compressed_layers(
    store: Store, busybox_tar: bytes
) -> None:
    top1 = simple_layer("one.txt", b"one\n")
    top2 = simple_layer("two.txt", b"two\n")
    data = legacy_docker_archive(
        [
            ([(busybox_tar, False), (top1, True)], ["app:1", "localhost:5000/team/app:1"]),
            ([(busybox_tar, False), (top2, False)], None),  # shared base: a symlink
        ]
    )
    first, second = load(store, io.BytesIO(data))
    assert first.names == ("docker.io/library/app:1", "localhost:5000/team/app:1")
    assert second.names == ()
    assert first.id == sha256(config_for([busybox_tar, top1]))
    a, b = store.image(first.id), store.image(second.id)
    assert [d.media_type for d in a.manifest.layers] == [OCI_LAYER, OCI_LAYER_GZIP]
    assert [d.media_type for d in b.manifest.layers] == [OCI_LAYER, OCI_LAYER]
    assert a.manifest.layers[0].digest == sha256(busybox_tar)
    assert a.manifest.layers[1].digest == sha256(gzip.compress(top1, mtime=0))
    assert image_file(store, a, "one.txt") == b"one\n"
    assert image_file(store, b, "two.txt") == b"two\n"
    assert len(store.layers()) == 3  # the base once
    assert sorted((i.id, i.names) for i in store.images()) == sorted(
        [(first.id, first.names), (second.id, ())]
    )


@pytest.mark.parametrize("buggy", [False, True], ids=["docker-25", "docker-25.0.0-empty-layers"])
def test_docker25_archive_keeps_its_oci_manifest(store: Store, buggy: bool) -> None:
    layers = [simple_layer("a", b"a\n"), simple_layer("b", b"b\n")]
    data, manifest_digest = docker25_archive(layers, "app:1", buggy=buggy)
    [image] = load(store, io.BytesIO(data))
    assert image.names == ("docker.io/library/app:1",)
    record = store.image("app:1")
    assert len(record.manifest.layers) == 2
    if buggy:  # its manifest lists no layers: manifest.json is used instead
        assert image.manifest_digest != manifest_digest
    else:  # kept byte for byte (Go's key order, not kobako's), so the digest is Docker's
        assert image.manifest_digest == manifest_digest
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.extractfile(f"blobs/sha256/{manifest_digest[7:]}")
            assert member is not None
            assert store.read_blob(manifest_digest) == member.read()
    assert image_file(store, record, "b") == b"b\n"


@pytest.mark.parametrize(
    ("ref_name", "names"),
    [
        (None, ()),
        ("latest", ()),  # a bare tag (umoci, docker's ref.name) names nothing
        ("busybox:1", ("docker.io/library/busybox:1",)),
        ("localhost:5000/a/b:2", ("localhost:5000/a/b:2",)),
        ("docker.io/library/x:y", ("docker.io/library/x:y",)),
        ("Not A Name:!", ()),
    ],
)
def test_oci_archive_names(store: Store, ref_name: str | None, names: tuple[str, ...]) -> None:
    data, manifest_digest = oci_archive([simple_layer("f", b"f\n")], ref_name)
    [image] = load(store, io.BytesIO(data))
    assert (image.names, image.manifest_digest) == (names, manifest_digest)


def test_oci_archive_behind_an_image_index_loads_this_platform(store: Store) -> None:
    data, manifest_digest = oci_archive([simple_layer("f", b"f\n")], "app:3", nested=True)
    [image] = load(store, io.BytesIO(data))
    assert (image.names, image.manifest_digest) == (("docker.io/library/app:3",), manifest_digest)
    assert image_file(store, store.image("app:3"), "f") == b"f\n"


def _compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(
            [need("zstd"), "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    if how == "xz":
        import lzma

        return lzma.compress(data)
    if how == "bzip2":
        import bz2

        return bz2.compress(data)
    return data


@pytest.mark.parametrize("how", ["none", "gzip", "zstd", "xz", "bzip2"])
@pytest.mark.parametrize("via", ["path", "pipe"])
def test_compressed_and_piped_archives_load(
    store: Store, tmp_path: Path, how: str, via: str
) -> None:
    data = legacy_docker_archive([([(simple_layer("f", b"f\n"), True)], ["zipped:1"])])
    packed = _compress(data, how)
    if via == "path":
        (tmp_path / "a.tar").write_bytes(packed)
        loaded = load(store, str(tmp_path / "a.tar"))
    else:
        with pipe_of(packed) as stream:
            loaded = load(store, stream)
    assert [i.names for i in loaded] == [("docker.io/library/zipped:1",)]
    assert os.listdir(os.path.join(store.root, "tmp")) == []  # the spool went with the stage


# -- hostile, tampered and broken archives: an error, and the store as it was -------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "sentinel"
    path.mkdir()
    (path / "keep").write_text("untouched\n")
    return path


def hostile_layers(sentinel: str) -> dict[str, list[tuple[str, str, bytes | str, int]]]:
    return {
        "dotdot": [("../../../../../../pwned", "file", b"x", 0o644)],
        "absolute-symlink": [
            ("link", "symlink", sentinel, 0o777),
            ("link/pwned", "file", b"x", 0o644),
        ],
        "relative-symlink": [
            ("up", "symlink", "../" * 40 + sentinel.lstrip("/"), 0o777),
            ("up/pwned", "file", b"x", 0o644),
        ],
        "hardlink-out": [("h", "hardlink", "../" * 40 + "etc/passwd", 0o644)],
        "whiteout-through-symlink": [
            ("w", "symlink", sentinel, 0o777),
            ("w/.wh.keep", "whiteout", b"", 0o644),
        ],
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute-symlink",
        "relative-symlink",
        "hardlink-out",
        "whiteout-through-symlink",
    ],
)
def test_hostile_layer_fails_and_leaves_the_store_as_it_was(
    app: ImageRecord, store: Store, sentinel: Path, case: str
) -> None:
    bad = tar_of(hostile_layers(str(sentinel))[case])
    data = legacy_docker_archive(
        [([(simple_layer("ok", b"ok\n"), False), (bad, False)], ["evil:1"])]
    )
    before = snapshot(store.root)
    with pytest.raises(LayerError) as e:
        load(store, io.BytesIO(data))
    assert sha256(bad) in str(e.value) and e.value.layer == sha256(bad)
    assert snapshot(store.root) == before
    assert sorted(os.listdir(sentinel)) == ["keep"]
    assert (sentinel / "keep").read_text() == "untouched\n"
    assert [i.names for i in store.images()] == [("docker.io/library/app:1",)]


def test_hostile_member_paths_fail_and_nothing_is_written(
    app: ImageRecord, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = simple_layer("f", b"f\n")
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = snapshot(store.root)
    # manifest.json names a path outside the archive
    data = legacy_docker_archive([([(layer, False)], ["x:1"])], layer_paths=["../../etc/passwd"])
    with pytest.raises(InvalidArgument, match="points outside the archive"):
        load(store, io.BytesIO(data))
    # a layer.tar that is a symlink leading out
    w = tarfile.open(fileobj=(buf := io.BytesIO()), mode="w")  # noqa: SIM115
    cfg = config_for([layer])
    for name, content in [
        (f"{sha256(cfg)[7:]}.json", cfg),
        (
            "manifest.json",
            json.dumps([{"Config": f"{sha256(cfg)[7:]}.json", "Layers": ["l/layer.tar"]}]).encode(),
        ),
    ]:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        w.addfile(info, io.BytesIO(content))
    link = tarfile.TarInfo("l/layer.tar")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
    w.addfile(link)
    evil = tarfile.TarInfo("../../escaped")  # a member named outside: never written
    evil.size = 1
    w.addfile(evil, io.BytesIO(b"x"))
    w.close()
    with pytest.raises(InvalidArgument, match="points outside the archive"):
        load(store, io.BytesIO(buf.getvalue()))
    assert snapshot(store.root) == before
    assert not (tmp_path / "escaped").exists() and os.listdir(work) == []


def test_tampered_layers_and_configs_fail_with_digest_mismatch(
    store: Store, app: ImageRecord
) -> None:
    layer = simple_layer("f", b"f\n")
    other_layer = simple_layer("f", b"tampered\n")
    before = snapshot(store.root)
    # the config's diff ID is not the layer's
    data = legacy_docker_archive([([(layer, False)], ["t:1"])], config=config_for([other_layer]))
    with pytest.raises(DigestMismatch) as e:
        load(store, io.BytesIO(data))
    assert e.value.expected == sha256(other_layer) and e.value.actual == sha256(layer)
    # an OCI blob whose content is not its name
    gz = gzip.compress(layer, mtime=0)
    flipped = gz[:-9] + bytes([gz[-9] ^ 1]) + gz[-8:]  # same size, one bit changed
    data, _ = oci_archive([layer], "t:2", blob_override={sha256(gz): flipped})
    with pytest.raises(DigestMismatch, match="hashes to"):
        load(store, io.BytesIO(data))
    data, _ = oci_archive([layer], "t:2", blob_override={sha256(gz): gzip.compress(other_layer)})
    with pytest.raises(InvalidArgument, match="its descriptor says"):
        load(store, io.BytesIO(data))
    # a config named <hex>.json whose content changed
    cfg = config_for([layer])
    data = legacy_docker_archive([([(layer, False)], ["t:3"])], config=cfg)
    data = data.replace(b'"Cmd": ["sh"]', b'"Cmd": ["xx"]')
    with pytest.raises(DigestMismatch, match="config"):
        load(store, io.BytesIO(data))
    assert snapshot(store.root) == before


def test_a_blob_for_a_layer_already_stored_is_checked_too(store: Store) -> None:
    """The store has layer L; an archive pairs L's diff ID with another (gzip) blob."""
    layer = simple_layer("f", b"f\n")
    load(store, io.BytesIO(legacy_docker_archive([([(layer, False)], ["good:1"])])))
    before = snapshot(store.root)
    lying = legacy_docker_archive(
        [([(simple_layer("f", b"evil\n"), True)], ["bad:1"])], config=config_for([layer])
    )
    with pytest.raises(DigestMismatch):
        load(store, io.BytesIO(lying))
    assert snapshot(store.root) == before
    # the same layer gzipped (another blob, same diff ID) is fine
    [image] = load(store, io.BytesIO(legacy_docker_archive([([(layer, True)], ["gz:1"])])))
    assert store.image("gz:1").manifest.layers[0].media_type == OCI_LAYER_GZIP
    assert image.id == sha256(config_for([layer]))


def test_broken_archives_fail_with_one_line(app: ImageRecord, store: Store, tmp_path: Path) -> None:
    before = snapshot(store.root)
    layer = simple_layer("f", b"f" * 100_000)
    data = legacy_docker_archive([([(layer, False)], ["b:1"])])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        big = max(tar.getmembers(), key=lambda m: m.size)
    cases: dict[str, tuple[bytes, str]] = {
        "truncated": (data[: big.offset_data + big.size // 2], "truncated"),
        "truncated-gzip": (gzip.compress(data)[:400], "truncated gzip stream"),
        "garbage": (b"hello, world\n" * 100, "not a valid tar archive"),
        "empty": (b"", "is empty"),
        "not-an-image": (tar_of([("x", "file", b"x", 0o644)]), "missing manifest.json"),
        "missing-layer": (
            legacy_docker_archive([([(layer, False)], ["b:1"])], layer_paths=["nope/layer.tar"]),
            "missing layer 'nope/layer.tar'",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(content)
        with pytest.raises(InvalidArgument, match=message) as e:
            load(store, str(path))
        assert str(path) in str(e.value) and "\n" not in str(e.value), name
    with pytest.raises(NotFound, match="no such file"):
        load(store, str(tmp_path / "absent.tar"))
    assert snapshot(store.root) == before


# -- crashes and concurrency -------------------------------------------------------------------

_LOAD = (
    "import sys\n"
    "from kobako.image.archive import load\n"
    "from kobako.image.store import Store\n"
    "src = sys.argv[2] if len(sys.argv) > 2 else sys.stdin.buffer\n"
    "print(load(Store.open(sys.argv[1]), src))\n"
)


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("big") / "big.tar"
    path.write_bytes(legacy_docker_archive([([(many_files_layer(4_000), False)], ["big:1"])]))
    return str(path)


def _caught(pattern: str, proc: subprocess.Popen[bytes]) -> bool:
    """Wait until ``pattern`` matches; False if the process finished first."""
    deadline = time.monotonic() + 60
    while not [p for p in glob.glob(pattern) if os.path.getsize(p) > 0 or os.path.isdir(p)]:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"{pattern} never appeared"
        time.sleep(0.0005)
    return True


@pytest.mark.parametrize("point", ["spooling", "extracting"])
def test_a_load_killed_midway_leaves_nothing(big_archive: str, tmp_path: Path, point: str) -> None:
    for attempt in range(5):  # extracting: a fast disk may finish before the kill; again
        root = str(tmp_path / f"store{attempt}")
        Store.open(root)
        if point == "spooling":  # from a pipe, fed half the archive: it cannot finish
            proc = subprocess.Popen([sys.executable, "-c", _LOAD, root], stdin=subprocess.PIPE)
            assert proc.stdin is not None
            with open(big_archive, "rb") as f:
                proc.stdin.write(f.read(os.path.getsize(big_archive) // 2))
                proc.stdin.flush()
            caught = _caught(f"{root}/tmp/stage-*/archive.tar", proc)
        else:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LOAD, root, big_archive], stdout=subprocess.DEVNULL
            )
            caught = _caught(f"{root}/tmp/stage-*/layers/incoming-*/diff/d0*", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if caught:
            break
    else:
        pytest.fail("the load always finished before it could be killed")
    assert os.listdir(os.path.join(root, "tmp")), "the killed load left no stage to clean"
    store = Store.open(root)
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert (store.images(), store.blobs(), store.layers()) == ([], [], [])
    [image] = load(store, big_archive)
    assert [i.names for i in store.images()] == [("docker.io/library/big:1",)]
    assert image_file(store, store.image(image.id), "d099/f00039") == b"x" * 64


def test_two_concurrent_loads_of_one_archive_both_succeed(
    busybox_tar: bytes, tmp_path: Path
) -> None:
    root = str(tmp_path / "store")
    Store.open(root)
    path = tmp_path / "two.tar"
    top = many_files_layer(2_000)
    path.write_bytes(legacy_docker_archive([([(busybox_tar, True), (top, False)], ["two:1"])]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD, root, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert b"docker.io/library/two:1" in out
    store = Store.open(root)
    [image] = store.images()
    assert image.names == ("docker.io/library/two:1",)
    assert store.layers() == sorted(chain_ids(image.config.diff_ids))
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert image_file(store, image, "d050/f00010") == b"x" * 64


# -- import ------------------------------------------------------------------------------------


def test_import_a_rootfs_tarball_with_changes(
    store: Store, busybox_tar: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "rootfs.tar.gz"
    path.write_bytes(gzip.compress(busybox_tar, mtime=0))
    changes = [
        'CMD ["echo", "hi"]',
        "ENV GREETING=hello NAME=world",
        'ENV MSG="$GREETING, ${NAME}!"',
        "WORKDIR /srv",
        "WORKDIR app",
        "LABEL org.example.team=kobako",
        "EXPOSE 80 53/udp",
        "VOLUME /data",
        "USER daemon",
        "STOPSIGNAL SIGQUIT",
    ]
    image = import_image(store, str(path), "imported:1", changes=changes, message="from a test")
    assert image.names == ("docker.io/library/imported:1",)
    c = image.config
    assert c.cmd == ("echo", "hi") and c.entrypoint is None
    assert c.env == ("GREETING=hello", "NAME=world", "MSG=hello, world!")
    assert (c.working_dir, c.user, c.stop_signal) == ("/srv/app", "daemon", "SIGQUIT")
    assert c.labels == {"org.example.team": "kobako"}
    assert set(c.exposed_ports) == {"80/tcp", "53/udp"} and c.volumes == ("/data",)
    os_, arch, _ = host_platform()
    assert (c.os, c.architecture) == (os_, arch)
    assert c.diff_ids == (sha256(busybox_tar),)
    [history] = c.raw["history"]
    assert history["created_by"] == "kobako import" and history["comment"] == "from a test"
    assert history["created"] == c.created and c.created.endswith("Z")
    [layer] = image.manifest.layers
    assert (layer.digest, layer.media_type) == (sha256(path.read_bytes()), OCI_LAYER_GZIP)
    assert image_file(store, image, "bin/busybox").startswith(b"\x7fELF")


@pytest.mark.parametrize("how", ["none", "zstd", "xz"])
def test_import_from_a_stream_unnamed(store: Store, how: str) -> None:
    tar = simple_layer("hello.txt", b"hello\n")
    with pipe_of(_compress(tar, how)) as stream:
        image = import_image(store, stream)
    assert image.names == ()
    assert [i.id for i in store.images()] == [image.id]
    [layer] = image.manifest.layers
    if how == "xz":  # decompressed: the extractor reads plain, gzip and zstd
        assert (layer.digest, layer.media_type) == (sha256(tar), OCI_LAYER)
    assert image.config.diff_ids == (sha256(tar),)
    assert image_file(store, image, "hello.txt") == b"hello\n"


def test_import_failures_store_nothing(store: Store, sentinel: Path) -> None:
    before = snapshot(store.root)
    with pytest.raises(LayerError):
        import_image(store, io.BytesIO(tar_of(hostile_layers(str(sentinel))["dotdot"])), "x")
    with pytest.raises(InvalidArgument, match="empty"):
        import_image(store, io.BytesIO(b""), "x")
    with pytest.raises(InvalidArgument, match="RUN"):
        import_image(store, io.BytesIO(simple_layer("a", b"a")), "x", changes=["RUN true"])
    with pytest.raises(InvalidArgument, match="reference"):
        import_image(store, io.BytesIO(simple_layer("a", b"a")), "Bad Name")
    assert snapshot(store.root) == before
    assert sorted(os.listdir(sentinel)) == ["keep"]


@pytest.mark.container
def test_an_imported_image_runs(
    store: Store, busybox_tar: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_image(
        store,
        io.BytesIO(busybox_tar),
        "imported:run",
        changes=["ENV WHO=kobako", 'CMD echo "hello from $WHO in $(pwd)"', "WORKDIR /tmp"],
    )
    monkeypatch.setenv("KOBAKO_ROOT", store.root)
    r = cli("run", "--rm", "imported:run")
    assert (r.returncode, r.stdout) == (0, "hello from kobako in /tmp\n"), r.stderr


# -- --change --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (["CMD echo hi"], {"Cmd": ["/bin/sh", "-c", "echo hi"]}),
        (['cmd ["a", "b c"]'], {"Cmd": ["a", "b c"]}),
        (["CMD [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),
        (['ENTRYPOINT ["/init"]'], {"Entrypoint": ["/init"], "Cmd": None}),
        (
            ["CMD x", "ENTRYPOINT /e"],
            {"Cmd": ["/bin/sh", "-c", "x"], "Entrypoint": ["/bin/sh", "-c", "/e"]},
        ),
        (["ENV A 1 2  3"], {"Env": ["A=1 2  3"]}),
        (
            ["ENV A=1", "ENV B=$A-${A}-${NOPE:-d}-${A:+set}", "ENV A=2"],
            {"Env": ["B=1-1-d-set", "A=2"]},
        ),
        (["ENV A=1 B=$A"], {"Env": ["A=1", "B="]}),  # values see the env before the line
        (['ENV Q=\'$A\' R="a\\"b" S=a\\ b'], {"Env": ["Q=$A", 'R=a"b', "S=a b"]}),
        (['LABEL "a b"=c d=e', "LABEL f g h"], {"Labels": {"a b": "c", "d": "e", "f": "g h"}}),
        (
            ["EXPOSE 8000-8002/udp 80"],
            {"ExposedPorts": {"8000/udp": {}, "8001/udp": {}, "8002/udp": {}, "80/tcp": {}}},
        ),
        (
            ['VOLUME ["/a", "/b"]', "VOLUME /c /d"],
            {"Volumes": {"/a": {}, "/b": {}, "/c": {}, "/d": {}}},
        ),
        (["WORKDIR /a", "WORKDIR b/../c", "WORKDIR /d"], {"WorkingDir": "/d"}),
        (["WORKDIR a", "WORKDIR b"], {"WorkingDir": "/a/b"}),
        (["ENV U=nobody", "USER $U:1"], {"Env": ["U=nobody"], "User": "nobody:1"}),
        (["STOPSIGNAL 9"], {"StopSignal": "9"}),
        (["STOPSIGNAL term"], {"StopSignal": "term"}),
        (["STOPSIGNAL SIGRTMIN+3"], {"StopSignal": "SIGRTMIN+3"}),
        (["ONBUILD run make"], {"OnBuild": ["RUN make"]}),
    ],
)
def test_apply_changes(changes: list[str], expected: dict[str, object]) -> None:
    assert apply_changes({}, changes) == expected


def test_apply_changes_keeps_and_does_not_mutate_the_base() -> None:
    base = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Labels": {"x": "1"}}
    out = apply_changes(base, ["ENV A=2 B=$PATH", "LABEL y=2"])
    assert out == {
        "Env": ["PATH=/bin", "A=2", "B=/bin"],
        "Cmd": ["sh"],
        "Labels": {"x": "1", "y": "2"},
    }
    assert base == {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Labels": {"x": "1"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("RUN make", "RUN is not one of"),
        ("", "nothing is not one of"),
        ("CMD", "requires an argument"),
        ("ENV A=1 B", "can't find = in 'B'"),
        ("ENV A", "requires an argument|needs a value"),
        ("ENV A='x", "unmatched quote"),
        ("EXPOSE 70000", "invalid port"),
        ("EXPOSE 80/icmp", "invalid port"),
        ("STOPSIGNAL SIGNOPE", "invalid signal"),
        ('VOLUME [""]', "empty string"),
        ("ONBUILD FROM x", "isn't allowed"),
        ("ENV A=${B", "missing '}'"),
    ],
)
def test_apply_changes_rejects(change: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as e:
        apply_changes({}, [change])
    assert "\n" not in str(e.value)


_VALUES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@given(key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), value=_VALUES)
def test_apply_changes_env_quoting_round_trips(key: str, value: str) -> None:
    quoted = '"' + "".join("\\" + c if c in '"\\$' else c for c in value) + '"'
    assert apply_changes({}, [f"ENV {key}={quoted}"]) == {"Env": [f"{key}={value}"]}
    single = "'" + value.replace("'", "") + "'"
    assert apply_changes({}, [f"LABEL {key}={single}"]) == {"Labels": {key: value.replace("'", "")}}


# -- the default image ---------------------------------------------------------------------------


def test_default_image_is_built_once_and_the_same_everywhere(store: Store, other: Store) -> None:
    image = default_image(store)
    assert image.names == ("docker.io/library/busybox:latest",)
    assert image.config.cmd == ("sh",)
    assert image.config.labels == {"org.opencontainers.image.source": DEFAULT_IMAGE_SOURCE}
    [history] = image.config.raw["history"]
    assert "busybox-static" in history["created_by"]
    assert image_file(store, image, "bin/busybox").startswith(b"\x7fELF")
    layer = store.layer(chain_ids(image.config.diff_ids)[0])
    assert layer is not None and os.readlink(os.path.join(layer.path, "bin/sh")) == "busybox"
    assert [d.media_type for d in image.manifest.layers] == [OCI_LAYER_GZIP]
    before = snapshot(store.root)
    assert default_image(store) == image  # found, not rebuilt
    assert snapshot(store.root) == before
    assert default_image(other).id == image.id  # built the same way from the same busybox


def test_default_image_needs_a_static_busybox(tmp_path: Path) -> None:
    """With /bin/busybox hidden (an empty file bound over it, in a private mount namespace)."""
    need("unshare")
    targets = sorted(
        {os.path.realpath(p) for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)}
    )
    hide = " && ".join(f"mount --bind /dev/null {t}" for t in targets)
    code = (
        "from kobako.image.archive import default_image\n"
        "from kobako.image.store import Store\n"
        f"default_image(Store.open({str(tmp_path / 's')!r}))\n"
    )
    r = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{hide} && exec "$0" -c "$1"',
            sys.executable,
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "kobako.errors.NotFound" in r.stderr and "apt-get install busybox-static" in r.stderr


@pytest.mark.container
def test_the_readme_first_command_works_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOBAKO_ROOT", str(tmp_path / "fresh"))
    r = cli("run", "--rm", "busybox", "echo", "hello")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
