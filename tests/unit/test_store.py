"""The image store keeps blobs whole and checked, and its index whole, under races and kills."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kobako.errors import InvalidArgument, NotFound
from kobako.image import DigestMismatch, Store
from kobako.image.store import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

FORK = multiprocessing.get_context("fork")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def listing(store: Store, sub: str) -> list[str]:
    return sorted(os.listdir(os.path.join(store.root, sub)))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "root"))


def test_import_is_cheap() -> None:
    from tests.unit.test_import_cost import SLOW, imported_by

    assert imported_by("kobako.image") & SLOW == set()


# -- layout ------------------------------------------------------------------------------


def test_open_makes_an_oci_layout(store: Store) -> None:
    root = Path(store.root)
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    for sub in ("blobs/sha256", "layers", "tmp", "locks"):
        assert (root / sub).is_dir(), sub
    assert Store.open(store.root).list_images() == []  # opening again changes nothing


def test_root_defaults_to_kobako_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOBAKO_ROOT", str(tmp_path / "env"))
    assert Store.open().root == str(tmp_path / "env")


def test_paths_are_checked(store: Store) -> None:
    digest = sha256(b"x")
    assert store.blob_path(digest) == os.path.join(store.root, "blobs", "sha256", digest[7:])
    assert store.layer_path(digest) == os.path.join(store.root, "layers", digest[7:])
    for bad in ("sha256:abc", "md5:" + "0" * 64, "sha256:" + "A" * 64, "sha256:../" + "0" * 61):
        with pytest.raises(InvalidArgument, match="invalid digest"):
            store.blob_path(bad)


# -- blobs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store.open(str(tmp_path_factory.mktemp("shared")))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3 << 20), as_stream=st.booleans(), with_digest=st.booleans())
def test_ingest_round_trips(
    shared_store: Store, data: bytes, as_stream: bool, with_digest: bool
) -> None:
    store = shared_store
    source = io.BytesIO(data) if as_stream else data
    desc = store.ingest(source, sha256(data) if with_digest else None)
    assert desc.digest == sha256(data)
    assert desc.size == len(data)
    assert store.has_blob(desc.digest)
    assert store.read_blob(desc.digest) == data
    assert store.verify(desc.digest) == desc
    assert store.ingest(data) == desc  # again: the same blob
    assert listing(store, "tmp") == []
    assert listing(store, "locks") in ([], ["index.lock"])


def test_a_stored_blob_is_not_read_again(store: Store) -> None:
    desc = store.ingest(b"hello")

    class Exploding(io.RawIOBase):
        def read(self, size: int = -1, /) -> bytes:
            raise AssertionError("read a blob the store already has")

    assert store.ingest(Exploding(), desc.digest) == desc


def test_digest_mismatch_keeps_nothing(store: Store) -> None:
    wrong = sha256(b"something else")
    with pytest.raises(DigestMismatch) as err:
        store.ingest(io.BytesIO(b"content"), wrong)
    assert err.value.expected == wrong
    assert err.value.actual == sha256(b"content")
    assert wrong in str(err.value) and sha256(b"content") in str(err.value)
    assert listing(store, "blobs/sha256") == []
    assert listing(store, "tmp") == []
    assert listing(store, "locks") == ["index.lock"]


def test_verify_finds_corruption(store: Store) -> None:
    desc = store.ingest(b"original")
    path = store.blob_path(desc.digest)
    assert os.stat(path).st_mode & 0o777 == 0o444
    os.chmod(path, 0o644)
    Path(path).write_bytes(b"tampered")
    with pytest.raises(DigestMismatch, match="corrupt"):
        store.verify(desc.digest)


def test_missing_blobs_are_not_found(store: Store) -> None:
    digest = sha256(b"absent")
    assert not store.has_blob(digest)
    for call in (store.read_blob, store.verify, store.remove_blob):
        with pytest.raises(NotFound, match=digest):
            call(digest)


def test_remove_blob(store: Store) -> None:
    desc = store.ingest(b"doomed")
    store.remove_blob(desc.digest)
    assert not store.has_blob(desc.digest)
    assert store.blobs() == []


class SlowStream(io.RawIOBase):
    """Gives ``data`` in small chunks, counting what was read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._data.read(min(size, 4096) if size > 0 else 4096)
        self.read_bytes += len(chunk)
        return chunk


def _ingest_in_child(
    root: str, data: bytes, digest: str | None, start: object, out: object
) -> None:
    start.wait()  # type: ignore[attr-defined]
    stream = SlowStream(data)
    desc = Store.open(root).ingest(stream, digest)
    out.put((desc.digest, stream.read_bytes))  # type: ignore[attr-defined]


@pytest.mark.parametrize("with_digest", [True, False])
def test_two_processes_ingest_one_blob(store: Store, with_digest: bool) -> None:
    data = os.urandom(4 << 20)
    digest = sha256(data)
    start = FORK.Barrier(2)
    out = FORK.SimpleQueue()
    procs = [
        FORK.Process(
            target=_ingest_in_child,
            args=(store.root, data, digest if with_digest else None, start, out),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [out.get() for _ in procs]
    assert [d for d, _ in results] == [digest, digest]
    if with_digest:  # the digest lock: one writes, the other finds it written
        assert sorted(n for _, n in results) == [0, len(data)]
    assert store.blobs() == [digest]
    assert store.verify(digest).size == len(data)
    assert listing(store, "tmp") == []
    assert listing(store, "locks") == ["index.lock"]


KILLED_WRITER = textwrap.dedent(
    """
    import io, sys
    from kobako.image import Store

    class Stalling(io.RawIOBase):
        calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls <= 3:
                return b"x" * 65536
            print("ready", flush=True)
            sys.stdin.read()  # until killed
            return b""

    Store.open(sys.argv[1]).ingest(Stalling(), sys.argv[2])
    """
)


def test_a_killed_writer_leaves_nothing_visible(store: Store) -> None:
    digest = sha256(b"x" * 3 * 65536)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, store.root, digest],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"ready\n"
        assert len(listing(store, "tmp")) == 1
        assert Store.open(store.root).cleanup() == 0  # its writer is alive: kept
        assert len(listing(store, "tmp")) == 1
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert store.blobs() == []
    assert not store.has_blob(digest)
    assert len(listing(store, "tmp")) == 1
    assert listing(store, "locks") == ["index.lock", f"sha256-{digest[7:]}"]
    Store.open(store.root)  # the next command cleans up
    assert listing(store, "tmp") == []
    assert listing(store, "locks") == ["index.lock"]
    assert store.ingest(b"x" * 3 * 65536, digest).digest == digest  # and the lock is free


def test_cleanup_removes_whatever_is_left(store: Store) -> None:
    leftover = Path(store.root, "tmp", "layer-abandoned")
    (leftover / "usr" / "bin").mkdir(parents=True)
    (leftover / "usr" / "bin" / "sh").write_bytes(b"")
    os.mkfifo(Path(store.root, "tmp", "fifo"))
    os.symlink("/", Path(store.root, "tmp", "link"))
    assert store.cleanup() == 3
    assert listing(store, "tmp") == []


# -- names -------------------------------------------------------------------------------


def put_json(store: Store, doc: object) -> str:
    return store.ingest(json.dumps(doc).encode()).digest


def descriptor(store: Store, digest: str, media_type: str) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": os.path.getsize(store.blob_path(digest)),
    }


def put_image(store: Store, name: bytes, media_type: str = OCI_MANIFEST) -> str:
    config = store.ingest(b'{"config": {}, "name": "' + name + b'"}').digest
    layer = store.ingest(b"layer of " + name).digest
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(store, config, "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(store, layer, "application/vnd.oci.image.layer.v1.tar")],
    }
    return put_json(store, manifest)


def test_tag_resolve_untag(store: Store) -> None:
    manifest = put_image(store, b"one")
    entry = store.tag("busybox", manifest)
    assert entry.name == "docker.io/library/busybox:latest"
    assert entry.media_type == OCI_MANIFEST
    assert entry.size == os.path.getsize(store.blob_path(manifest))
    assert store.resolve("busybox") == manifest
    assert store.resolve("busybox:latest") == manifest

    other = put_image(store, b"two", DOCKER_MANIFEST)
    store.tag("busybox:1.36", other)
    store.tag("busybox", other)  # moves the tag; the first image is left without a name
    assert [(t.name, t.digest) for t in store.list_images()] == [
        ("docker.io/library/busybox:1.36", other),
        ("docker.io/library/busybox:latest", other),
        (None, manifest),
    ]
    assert store.list_images()[0].media_type == DOCKER_MANIFEST
    assert store.forget(manifest)[0].name is None

    store.untag("busybox")
    assert [t.name for t in store.list_images()] == ["docker.io/library/busybox:1.36"]
    with pytest.raises(NotFound, match="busybox:latest"):
        store.resolve("busybox")
    with pytest.raises(NotFound, match="busybox:latest"):
        store.untag("busybox")

    index = json.loads(Path(store.root, "index.json").read_text())
    assert index["manifests"] == [
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": other,
            "size": os.path.getsize(store.blob_path(other)),
            "annotations": {"org.opencontainers.image.ref.name": "docker.io/library/busybox:1.36"},
        }
    ]


def test_tag_needs_a_stored_manifest(store: Store) -> None:
    with pytest.raises(NotFound):
        store.tag("app", sha256(b"absent"))
    with pytest.raises(InvalidArgument, match="not a manifest"):
        store.tag("app", store.ingest(b"\x1f\x8b not json").digest)
    with pytest.raises(InvalidArgument, match="Bad/Name"):  # repository names are lowercase
        store.tag("Bad/Name", put_image(store, b"x"))


def _tag_many(root: str, prefix: str, count: int) -> None:
    store = Store.open(root)
    manifest = put_image(store, prefix.encode())
    for i in range(count):
        store.tag(f"{prefix}:{i}", manifest)
        if i % 2:
            store.untag(f"{prefix}:{i}")


def test_concurrent_taggers_lose_nothing(store: Store) -> None:
    procs = [FORK.Process(target=_tag_many, args=(store.root, p, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = [t.name for t in store.list_images()]
    want = sorted(f"docker.io/library/{p}:{i}" for p in ("a", "b") for i in range(0, 40, 2))
    assert names == want


def test_readers_never_see_a_partial_index(store: Store) -> None:
    writer = FORK.Process(target=_tag_many, args=(store.root, "loop", 150))
    writer.start()
    index = Path(store.root, "index.json")
    reads = 0
    while writer.is_alive() or reads == 0:
        doc = json.loads(index.read_bytes())  # without the lock: the rename keeps it whole
        assert doc["schemaVersion"] == 2
        assert all(m["digest"].startswith("sha256:") for m in doc["manifests"])
        store.list_images()  # with the shared lock
        reads += 1
    writer.join()
    assert writer.exitcode == 0
    assert listing(store, "tmp") == []


# -- garbage collection ------------------------------------------------------------------


def test_unreferenced_blobs_follow_indexes_and_manifests(store: Store) -> None:
    oci = put_image(store, b"oci")
    docker = put_image(store, b"docker", DOCKER_MANIFEST)
    nested = put_image(store, b"nested")
    index = put_json(
        store,
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(store, nested, OCI_MANIFEST)],
        },
    )
    stray = store.ingest(b"stray").digest
    store.tag("oci", oci)
    store.tag("docker", docker)
    store.tag("multi", index)
    assert store.unreferenced_blobs() == [stray]

    store.remove_blob(stray)
    for name in ("oci", "docker", "multi"):
        store.untag(name)
    garbage = store.unreferenced_blobs()
    assert garbage == store.blobs()
    assert len(garbage) == 10  # 3 manifests, 3 configs, 3 layers, 1 index
    for digest in garbage:
        store.remove_blob(digest)
    assert store.blobs() == []


def test_unreferenced_blobs_survive_missing_content(store: Store) -> None:
    manifest = put_image(store, b"partial")
    store.tag("partial", manifest)
    doc = json.loads(store.read_blob(manifest))
    store.remove_blob(doc["layers"][0]["digest"])
    assert store.unreferenced_blobs() == []


# -- references: see test_reference.py ----------------------------------------------------


def test_a_collection_waits_for_a_stage_that_relies_on_stored_content(tmp_path: Path) -> None:
    """A load that finds a blob and a layer already stored (and so does not fetch them) while
    another command removes the image that had them: the collection must not take them away
    before the load's image names them."""
    from tests.imagetools import make_image, tar_of

    store = Store.open(str(tmp_path / "store"))
    base = tar_of([("etc", "dir", b"", 0o755), ("etc/motd", "file", b"base\n", 0o644)])
    first = make_image(store, [base], tag="first:1")
    [layer] = first.manifest.layers
    [chain] = store.layers()

    with store.stage() as stage:  # the second load, half-way
        assert stage.add_blob(b"x", None)  # anything of its own
        stage.add_blob(store.read_blob(layer.digest), layer.digest)  # found stored: skipped
        assert stage.add_layer(layer.digest, first.config.diff_ids[0], chain).chain_id == chain
        store.forget(first.manifest_digest)  # rmi first:1, meanwhile
        assert store.collect(wait=False).skipped  # the stage holds collection off
        config = store.read_blob(first.manifest.config.digest)
        stage.add_blob(config, first.manifest.config.digest)
        stage.add_blob(store.read_blob(first.manifest_digest), first.manifest_digest)
        stage.commit(manifest_digest=first.manifest_digest, tags=["second:1"])
    collected = store.collect(wait=False)
    assert not collected.skipped
    assert store.layer(chain) is not None and store.has_blob(layer.digest)
    assert store.image("second:1").id == first.id
