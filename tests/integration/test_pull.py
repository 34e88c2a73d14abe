"""Pull (and push) through a real registry: Debian's docker-registry on 127.0.0.1.

Images are made in a source store, saved with kobako and pushed by skopeo (a third-party
client), then pulled by kobako's CLI and API into empty stores and run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import kobako
from kobako.errors import AuthenticationError, DigestMismatch, ImageNotFound, RegistryUnreachable
from kobako.image.archive import save
from kobako.image.pull import pull
from kobako.image.store import Store
from tests.conftest import kobako as cli
from tests.imagetools import make_image, tar_of, tar_of_dir
from tests.registry_server import RegistryServer


@contextmanager
def serving(path: Path, **kw: Any) -> Iterator[RegistryServer]:
    """A started registry of the test's own, stopped and deleted afterwards."""
    server = RegistryServer(path, **kw)
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store holding the images the tests push: busybox, and app (busybox + 2 layers)."""
    from kobako.fixtures import busybox_rootfs

    base = tmp_path_factory.mktemp("source")
    store = Store.open(str(base / "store"))
    bb = tar_of_dir(str(busybox_rootfs(base / "rootfs")))
    make_image(store, [bb], tag="busybox:1", config={"Cmd": ["sh"]})
    one = tar_of([("srv", "dir", b"", 0o755), ("srv/hello.txt", "file", b"hello\n", 0o644)])
    big = os.urandom(3 << 20)  # incompressible: a layer that takes a moment
    two = tar_of([("srv/big", "file", big, 0o600), ("srv/.wh.hello.txt", "whiteout", b"", 0)])
    make_image(
        store,
        [bb, one, two],
        tag="app:1",
        config={"Cmd": ["sh", "-c", "ls /srv"], "Env": ["PATH=/bin"]},
    )
    return store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, source: Store) -> Iterator[RegistryServer]:
    """An open registry holding busybox:1 and app:1, pushed by skopeo from kobako's archive."""
    base = tmp_path_factory.mktemp("registry")
    with serving(base) as reg:
        for name in ("busybox:1", "app:1"):
            archive = base / f"{name.replace(':', '_')}.tar"
            save(source, [name], str(archive))
            reg.push_archive(str(archive), name)
        yield reg


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "store")
    monkeypatch.setenv("KOBAKO_ROOT", path)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return path


def _empty(store: Store) -> bool:
    return store.images() == [] and store.blobs() == [] and store.layers() == []


def test_cli_pull_prints_what_docker_prints_and_the_image_is_identical(
    server: RegistryServer, source: Store, root: str
) -> None:
    ref = f"{server.host}/app:1"
    r = cli("pull", ref)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "1: Pulling from app"
    complete = [ln for ln in lines if ln.endswith(": Pull complete")]
    assert len(complete) == 3 and all(len(ln.split(":")[0]) == 12 for ln in complete)
    assert "Status: Downloaded newer image for " + ref in lines
    assert lines[-1] == ref
    assert any(ln.startswith("Digest: sha256:") for ln in lines)
    store = Store.open(root)
    pulled = store.image(ref)
    assert pulled.id == source.image("app:1").id
    assert pulled.manifest_digest == source.image("app:1").manifest_digest
    # every blob arrived byte for byte
    for digest in [pulled.manifest_digest, pulled.manifest.config.digest] + [
        d.digest for d in pulled.manifest.layers
    ]:
        with open(store.blob_path(digest), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == digest

    again = cli("pull", ref)
    assert again.returncode == 0, again.stderr
    assert "Status: Image is up to date for " + ref in again.stdout


def test_pull_quiet_and_by_digest(server: RegistryServer, source: Store, root: str) -> None:
    r = cli("pull", "-q", f"{server.host}/busybox:1")
    assert (r.returncode, r.stdout) == (0, f"{server.host}/busybox:1\n"), r.stderr
    digest = source.image("app:1").manifest_digest
    r = cli("pull", "-q", f"{server.host}/app@{digest}")
    assert r.returncode == 0, r.stderr
    store = Store.open(root)
    assert store.image(f"{server.host}/app@{digest}").manifest_digest == digest


def test_layers_already_stored_are_not_fetched_again(server: RegistryServer, root: str) -> None:
    events: list[tuple[str, str]] = []
    store = Store.open(root)
    pull(store, f"{server.host}/busybox:1")
    pull(
        store,
        f"{server.host}/app:1",
        progress=lambda layer, status, done, total: events.append((layer, status)),
    )
    statuses = {}
    for layer, status in events:
        statuses.setdefault(layer, []).append(status)
    assert sorted(s[-1] for s in statuses.values()) == [
        "Already exists",
        "Pull complete",
        "Pull complete",
    ]


@pytest.mark.container
def test_pulled_image_runs_and_run_pulls_what_is_missing(server: RegistryServer, root: str) -> None:
    ref = f"{server.host}/app:1"
    never = cli("run", "--rm", "--pull", "never", ref)
    assert never.returncode == 125 and "Unable to find image" in never.stderr
    assert never.stderr.count("\n") == 1
    r = cli("run", "--rm", ref)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "big\n"  # hello.txt was whited out by the top layer
    assert f"Unable to find image '{ref}' locally" in r.stderr
    r = cli("run", "--rm", "--pull", "always", ref, "/bin/busybox", "wc", "-c", "/srv/big")
    assert (r.returncode, r.stdout.split()) == (0, [str(3 << 20), "/srv/big"]), r.stderr
    assert "Status: Image is up to date" in r.stderr


@pytest.mark.container
def test_api_pull_and_run(server: RegistryServer, source: Store, root: str) -> None:
    client = kobako.Client(root=root)
    image = client.images.pull(f"{server.host}/busybox", tag="1")
    assert image.id == source.image("busybox:1").id
    assert image.tags == [f"{server.host}/busybox:1"]
    out = client.containers.run(f"{server.host}/app:1", remove=True)  # pulled on demand
    assert out == b"big\n"


def test_unknown_tag_and_repository_say_so_in_one_line(server: RegistryServer, root: str) -> None:
    for ref in (f"{server.host}/app:nope", f"{server.host}/nothing:1"):
        r = cli("pull", ref)
        assert r.returncode == 1  # as docker pull exits on a daemon error
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert "not found" in r.stderr and "manifest unknown" in r.stderr
    with pytest.raises(ImageNotFound):
        pull(Store.open(root), f"{server.host}/app:nope")
    assert _empty(Store.open(root))


def test_unreachable_registry_is_one_line_and_quick(root: str) -> None:
    r = cli("pull", "127.0.0.1:1/app:1", timeout=30)
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert "127.0.0.1:1" in r.stderr
    with pytest.raises(RegistryUnreachable):
        pull(Store.open(root), "127.0.0.1:1/app:1")


def test_a_tampered_blob_fails_naming_its_digest_and_nothing_is_stored(
    tmp_path: Path, source: Store, root: str
) -> None:
    with serving(tmp_path) as reg:
        archive = tmp_path / "app.tar"
        save(source, ["app:1"], str(archive))
        reg.push_archive(str(archive), "app:1")
        image = source.image("app:1")
        victim = image.manifest.layers[1].digest  # the small middle layer
        blob = reg.blob_file(victim)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        store = Store.open(root)
        with pytest.raises((DigestMismatch, kobako.errors.LayerError)) as e:
            pull(store, f"{reg.host}/app:1")
        assert victim in str(e.value)
        assert _empty(store)
        r = cli("pull", f"{reg.host}/app:1")
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and victim in r.stderr


def test_registry_down_then_up_leaves_the_store_intact(
    tmp_path: Path, source: Store, root: str
) -> None:
    with serving(tmp_path) as reg:
        archive = tmp_path / "bb.tar"
        save(source, ["busybox:1"], str(archive))
        reg.push_archive(str(archive), "busybox:1")
        store = Store.open(root)
        pull(store, f"{reg.host}/busybox:1")
        before = (store.images(), store.blobs(), store.layers())
        reg.stop()
        r = cli("pull", f"{reg.host}/busybox:1")
        assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
        assert (store.images(), store.blobs(), store.layers()) == before
        reg.start()
        r = cli("pull", f"{reg.host}/busybox:1")
        assert r.returncode == 0 and "up to date" in r.stdout, r.stderr


def test_multi_platform_index_picks_this_platform_or_the_one_asked(
    tmp_path: Path, source: Store, root: str
) -> None:
    """An OCI index with amd64 and arm64 entries (the arm64 one a real manifest too)."""
    from kobako.image.manifest import canonical, host_platform

    image = source.image("busybox:1")
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    for d in [image.manifest.config.digest] + [x.digest for x in image.manifest.layers]:
        put(Path(source.blob_path(d)).read_bytes())
    native = Path(source.blob_path(image.manifest_digest)).read_bytes()
    other_config = dict(image.config.raw, architecture="arm64", variant="v8")
    other_cfg = put(canonical(other_config))
    other_doc = json.loads(native)
    other_doc["config"] = {
        "mediaType": other_doc["config"]["mediaType"],
        "digest": other_cfg,
        "size": len(canonical(other_config)),
    }
    other = canonical(other_doc)
    native_digest, other_digest = put(native), put(other)
    _, arch, _ = host_platform()
    foreign = "arm64" if arch != "arm64" else "amd64"
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": other_digest,
                    "size": len(other),
                    "platform": {"os": "linux", "architecture": foreign},
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": native_digest,
                    "size": len(native),
                    "platform": {"os": "linux", "architecture": arch},
                },
            ],
        }
    )
    index_digest = put(index)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": index_digest,
                        "size": len(index),
                        "annotations": {"org.opencontainers.image.ref.name": "multi"},
                    }
                ],
            }
        )
    )
    with serving(tmp_path) as reg:
        subprocess.run(
            ["skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi",
             f"docker://{reg.host}/multi:1"],
            check=True, capture_output=True,
        )  # fmt: skip
        store = Store.open(root)
        got = pull(store, f"{reg.host}/multi:1")
        assert got.digest == index_digest and got.image.id == image.id
        assert got.image.manifest_digest == index_digest  # Docker's RepoDigest: the index
        assert got.image.manifest.config.digest == image.manifest.config.digest
        theirs = pull(store, f"{reg.host}/multi:1", platform=("linux", foreign, ""))
        assert theirs.image.id == other_cfg
        r = cli("pull", "--platform", "nonsense", f"{reg.host}/multi:1")
        assert r.returncode != 0 and "nonsense" in r.stderr and r.stderr.count("\n") == 1


def test_login_pull_push_logout_with_htpasswd(tmp_path: Path, source: Store, root: str) -> None:
    with serving(tmp_path, auth="htpasswd") as reg:
        ref = f"{reg.host}/app:1"
        store = Store.open(root)
        src_ref = "app:1"
        source.tag(ref, source.image(src_ref).manifest_digest)
        try:
            with pytest.raises(AuthenticationError):
                kobako.Client(root=source.root).images.push(ref)
            bad = cli("login", "-u", "kobako", "--password-stdin", reg.host, input=b"wrong\n")
            assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
            assert "Traceback" not in bad.stderr
            ok = cli("login", "-u", "kobako", "--password-stdin", reg.host, input=b"secret\n")
            assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok.stderr
            config = json.loads((Path(os.environ["DOCKER_CONFIG"]) / "config.json").read_text())
            assert reg.host in config["auths"]
            pushed = cli("--root", source.root, "push", ref)
            assert pushed.returncode == 0, pushed.stderr
            assert f"1: digest: {source.image(ref).manifest_digest}" in pushed.stdout
            r = cli("pull", ref)
            assert r.returncode == 0, r.stderr
            assert store.image(ref).id == source.image(src_ref).id
            out = cli("logout", reg.host)
            assert out.stdout == f"Removing login credentials for {reg.host}\n"
            assert cli("logout", reg.host).stdout == f"Not logged in to {reg.host}\n"
            denied = cli("pull", f"{reg.host}/busybox:1")
            assert denied.returncode != 0 and denied.stderr.count("\n") == 1
        finally:
            source.untag(ref)


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory, source: Store) -> Iterator[RegistryServer]:
    """A registry holding big:1, busybox plus a 48 MiB incompressible layer (a slow pull)."""
    base = tmp_path_factory.mktemp("big")
    bb = source.image("busybox:1")
    store = Store.open(str(base / "store"))
    with open(source.blob_path(bb.manifest.layers[0].digest), "rb") as f:
        import gzip

        bb_tar = gzip.decompress(f.read())
    make_image(
        store, [bb_tar, tar_of([("blob", "file", os.urandom(48 << 20), 0o644)])], tag="big:1"
    )
    with serving(base) as reg:
        save(store, ["big:1"], str(base / "big.tar"))
        reg.push_archive(str(base / "big.tar"), "big:1")
        yield reg


def test_registry_stopped_mid_pull_resumes_or_fails_cleanly(
    big_server: RegistryServer, root: str
) -> None:
    import threading

    store = Store.open(root)
    stopped = threading.Event()

    def progress(layer: str, status: str, done: int, total: int) -> None:
        if status == "Downloading" and total > 40 << 20 and done > 0 and not stopped.is_set():
            stopped.set()
            big_server.stop()  # the connection breaks mid-blob
            threading.Timer(0.5, big_server.start).start()

    try:
        result = pull(store, f"{big_server.host}/big:1", progress=progress)
    except RegistryUnreachable:  # a clear error, and nothing stored
        assert _empty(store)
    else:  # resumed with a Range request: the image is whole
        assert stopped.is_set()
        for desc in result.image.manifest.layers:
            with open(store.blob_path(desc.digest), "rb") as f:
                assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == desc.digest
        assert store.image(f"{big_server.host}/big:1").id == result.image.id
    finally:
        big_server.start()  # for the next test, whatever happened


def test_a_pull_killed_midway_leaves_nothing_and_the_next_one_works(
    big_server: RegistryServer, root: str
) -> None:
    import glob
    import signal
    import time

    from tests.conftest import KOBAKO

    proc = subprocess.Popen(
        [KOBAKO, "pull", "-q", f"{big_server.host}/big:1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not glob.glob(f"{root}/tmp/stage-*/blobs/incoming-*") and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pull ended before it could be killed"
    store = Store.open(root)  # opening cleans what the killed command left in tmp/
    assert _empty(store)
    assert os.listdir(os.path.join(root, "tmp")) == []
    r = cli("pull", "-q", f"{big_server.host}/big:1")
    assert r.returncode == 0, r.stderr
    assert store.image(f"{big_server.host}/big:1").names == (f"{big_server.host}/big:1",)


def test_a_foreign_layer_comes_from_its_urls_as_docker_fetches_it(
    tmp_path: Path, source: Store, root: str
) -> None:
    """A non-distributable layer the registry lacks is fetched from its ``urls`` (here a
    server of the test's own on 127.0.0.1), without the registry's credentials."""
    import http.server
    import threading

    from kobako.image.manifest import canonical, chain_ids
    from kobako.image.push import push

    app = source.image("app:1")
    top = app.manifest.layers[-1]
    served = tmp_path / "served"
    served.mkdir()
    (served / "layer.tar.gz").write_bytes(Path(source.blob_path(top.digest)).read_bytes())
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(served), **kw)

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/layer.tar.gz"
        doc = json.loads(source.read_blob(app.manifest_digest))
        doc["layers"][-1]["mediaType"] = (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        )
        doc["layers"][-1]["urls"] = [url]
        content = canonical(doc)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        with serving(tmp_path, foreign_urls=True) as reg:
            name = f"{reg.host}/foreign:1"
            with source.stage() as stage:
                stage.add_blob(content, digest)
                stage.commit(manifest_digest=digest, tags=[name])
            try:
                assert push(source, name) == digest  # the foreign layer is not uploaded
                assert not reg.blob_file(top.digest).exists()
                store = Store.open(root)
                pulled = pull(store, name)
                assert pulled.image.manifest.layers[-1].urls == (url,)
                assert pulled.image.id == app.id
                assert seen == [""]  # fetched once, and without credentials
                top_chain = chain_ids(app.config.diff_ids)[-1]
                layer = store.layer(top_chain)
                assert layer is not None
                assert os.path.getsize(os.path.join(layer.path, "srv", "big")) == 3 << 20
            finally:
                source.untag(name)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_all_tags_both_ways(tmp_path: Path, source: Store, root: str) -> None:
    with serving(tmp_path) as reg:
        archive = tmp_path / "bb.tar"
        save(source, ["busybox:1"], str(archive))
        for tag in ("1", "2", "latest"):
            reg.push_archive(str(archive), f"box:{tag}")
        r = cli("pull", "-a", f"{reg.host}/box")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == f"{reg.host}/box"
        assert "2: Pulling from box" in r.stdout
        store = Store.open(root)
        assert sorted(n for i in store.images() for n in i.names) == [
            f"{reg.host}/box:{t}" for t in ("1", "2", "latest")
        ]
        bad = cli("pull", "-a", f"{reg.host}/box:1")
        assert bad.returncode == 125 and "tag can't be used with --all-tags/-a" in bad.stderr

        images = kobako.Client(root=root).images.pull(f"{reg.host}/box", all_tags=True)
        assert isinstance(images, list) and len(images) == 3

        # push -a: every local tag of the repository, into another repository
        for t in ("1", "2"):
            store.tag(f"{reg.host}/copy:{t}", store.image(f"{reg.host}/box:{t}").manifest_digest)
        r = cli("push", "-a", "-q", f"{reg.host}/copy")
        assert r.returncode == 0, r.stderr
        assert reg.inspect_raw("copy:2") == reg.inspect_raw("box:2")
        missing = cli("push", "-a", f"{reg.host}/nothing")
        assert missing.returncode == 125 and missing.stderr.count("\n") == 1


def test_two_concurrent_pulls_of_one_image_both_finish(
    big_server: RegistryServer, root: str
) -> None:
    from tests.conftest import KOBAKO

    ref = f"{big_server.host}/big:1"
    procs = [
        subprocess.Popen(
            [KOBAKO, "pull", "-q", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    store = Store.open(root)
    [image] = store.images()
    assert image.names == (ref,)
    for desc in image.manifest.layers:  # one copy of each blob, whole
        with open(store.blob_path(desc.digest), "rb") as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == desc.digest
    assert len(store.layers()) == 2 and os.listdir(os.path.join(root, "tmp")) == []
