"""The registry client and push against a real registry (Debian's docker-registry), skopeo,
and small local servers for the faults a real registry will not stage on demand."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kobako.errors import (
    AuthenticationError,
    DigestMismatch,
    KobakoError,
    RegistryError,
    RegistryUnreachable,
)
from kobako.image import auth
from kobako.image.push import push
from kobako.image.registry import Registry
from kobako.image.store import ImageRecord, Store
from tests.imagetools import make_image, tar_of
from tests.registry_server import RegistryServer, auth_registry, registry

__all__ = ["auth_registry", "registry"]  # the fixtures, imported for this module's tests


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "store"))


def _image(store: Store, name: str, payload: bytes = b"hello\n") -> ImageRecord:
    bottom = tar_of([("etc", "dir", b"", 0o755), ("etc/motd", "file", b"bottom\n", 0o644)])
    top = tar_of([("data", "file", payload, 0o644)])
    return make_image(store, [bottom, top], tag=name)


class Events:
    """A progress callback that records (status, layer) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, layer: str, status: str, current: int, total: int) -> None:
        self.events.append((status, layer))

    def statuses(self) -> set[str]:
        return {status for status, _ in self.events}


def _read_fd(fd: int) -> bytes:
    out = bytearray()
    while chunk := os.read(fd, 1 << 16):
        out += chunk
    return bytes(out)


# -- push, read back by skopeo ----------------------------------------------------------


def test_push_is_read_back_byte_identical_by_skopeo(
    registry: RegistryServer, store: Store, tmp_path: Path
) -> None:
    image = _image(store, f"{registry.host}/team/app:v1")
    events = Events()
    digest = push(store, f"{registry.host}/team/app:v1", progress=events)

    assert digest == image.manifest_digest
    assert registry.inspect_raw("team/app:v1") == store.read_blob(digest)
    out = registry.copy_to_dir("team/app:v1", tmp_path / "copy")
    assert (out / "manifest.json").read_bytes() == store.read_blob(digest)
    for desc in (*image.manifest.layers, image.manifest.config):
        assert (out / desc.digest.removeprefix("sha256:")).read_bytes() == store.read_blob(
            desc.digest
        )
    assert {"Preparing", "Pushing", "Pushed"} <= events.statuses()

    with Registry(registry.host) as reg:
        content, media_type, got = reg.get_manifest("team/app", "v1")
        assert (content, got) == (store.read_blob(digest), digest)
        assert media_type == image.manifest.media_type
        assert reg.get_manifest("team/app", digest)[0] == content
        config = image.manifest.config
        assert reg.get_blob("team/app", config.digest) == store.read_blob(config.digest)
        layer = image.manifest.layers[1]
        assert reg.blob_exists("team/app", layer.digest) == layer.size
        assert reg.blob_exists("team/app", _digest(b"nothing")) is None


def test_second_push_finds_layers_there(registry: RegistryServer, store: Store) -> None:
    name = f"{registry.host}/team/app:v1"
    _image(store, name)
    push(store, name)
    events = Events()
    push(store, name, progress=events)
    assert [s for s, _ in events.events if s != "Preparing"] == ["Layer already exists"] * 2


def test_push_to_another_repository_mounts(registry: RegistryServer, store: Store) -> None:
    first = f"{registry.host}/team/app:v1"
    image = _image(store, first)
    push(store, first)
    second = f"{registry.host}/other/copy:v2"
    store.tag(second, image.manifest_digest)
    events = Events()
    digest = push(store, second, progress=events)
    assert [s for s, _ in events.events if s != "Preparing"] == ["Mounted from team/app"] * 2
    assert registry.inspect_raw("other/copy:v2") == store.read_blob(digest)


def test_chunked_upload(registry: RegistryServer, store: Store, tmp_path: Path) -> None:
    payload = os.urandom(300_000)  # random: gzip leaves it as large
    name = f"{registry.host}/team/big:1"
    image = _image(store, name, payload)
    events = Events()
    push(store, name, progress=events, chunk_size=64 << 10)
    out = registry.copy_to_dir("team/big:1", tmp_path / "copy")
    for desc in image.manifest.layers:
        assert (out / desc.digest.removeprefix("sha256:")).read_bytes() == store.read_blob(
            desc.digest
        )
    big = image.manifest.layers[1]
    pushing = [s for s, layer in events.events if layer == big.digest[7:19] and s == "Pushing"]
    assert len(pushing) >= big.size // (64 << 10)


# -- errors -----------------------------------------------------------------------------


def test_unknown_tag_is_manifest_unknown(registry: RegistryServer) -> None:
    with Registry(registry.host) as reg, pytest.raises(RegistryError) as e:
        reg.get_manifest("team/none", "v9")
    assert e.value.code == "MANIFEST_UNKNOWN"
    assert e.value.status == 404
    assert str(e.value) == "manifest unknown: manifest for team/none:v9 not found"


def test_tampered_blob_is_a_digest_mismatch(registry: RegistryServer, tmp_path: Path) -> None:
    content = b'{"architecture":"amd64","os":"linux"}'
    digest = _digest(content)
    blob = tmp_path / "blob"
    blob.write_bytes(content)
    with Registry(registry.host) as reg:
        reg.upload_blob("team/app", digest, str(blob))
        assert reg.get_blob("team/app", digest) == content
        registry.blob_file(digest).write_bytes(content.replace(b"amd64", b"arm64"))
        with pytest.raises(DigestMismatch) as e:
            reg.get_blob("team/app", digest)
    assert digest in str(e.value)
    assert e.value.expected == digest


def test_https_registry(tmp_path: Path, store: Store) -> None:
    server = RegistryServer(tmp_path, tls=True)
    server.start()
    try:
        name = f"{server.host}/team/app:v1"
        _image(store, name)
        # A loopback registry: plain HTTP first, then HTTPS (its certificate not checked).
        digest = push(store, name)
        with Registry(server.host, insecure=True) as reg:
            assert reg.get_manifest("team/app", "v1")[2] == digest
        with Registry(server.host, insecure=False) as reg, pytest.raises(RegistryUnreachable) as e:
            reg.ping()
        assert "certificate verify failed" in str(e.value).lower()
        assert server.inspect_raw("team/app:v1") == store.read_blob(digest)
    finally:
        server.remove()


def test_closed_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Registry(f"127.0.0.1:{port}") as reg, pytest.raises(RegistryUnreachable) as e:
        reg.get_manifest("team/app", "v1")
    assert "connection refused" in str(e.value)
    assert f"127.0.0.1:{port}" in str(e.value)
    assert "\n" not in str(e.value)


def test_silent_server_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # connections are accepted by the kernel, and never answered
        host = f"127.0.0.1:{s.getsockname()[1]}"
        with Registry(host, timeout=0.3) as reg, pytest.raises(RegistryUnreachable) as e:
            reg.get_manifest("team/app", "v1")
    assert str(e.value) == f"cannot reach registry {host}: i/o timeout"


# -- basic auth and Docker's config.json ------------------------------------------------


def test_basic_auth_right_and_wrong(auth_registry: RegistryServer, store: Store) -> None:
    name = f"{auth_registry.host}/team/app:v1"
    _image(store, name)
    with Registry(auth_registry.host, credentials=("kobako", "secret"), use_config=False) as reg:
        reg.ping()
        digest = push(store, name, registry=reg)
        assert reg.get_manifest("team/app", "v1")[2] == digest
    assert auth_registry.inspect_raw("team/app:v1") == store.read_blob(digest)

    wrong = Registry(auth_registry.host, credentials=("kobako", "nope"), use_config=False)
    with wrong, pytest.raises(AuthenticationError) as e:
        wrong.ping()
    assert str(e.value) == "unauthorized: incorrect username or password"

    anonymous = Registry(auth_registry.host, use_config=False)
    with anonymous, pytest.raises(AuthenticationError) as e:
        anonymous.get_manifest("team/app", "v1")
    assert str(e.value).startswith("unauthorized: authentication required")
    assert "\n" not in str(e.value)


def test_config_json_round_trip(
    auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"psFormat": "table {{.ID}}"}))
    host = auth_registry.host

    assert auth.get_credentials(host) is None
    assert auth.store_credentials(host, "kobako", "secret") == str(config_dir / "config.json")
    doc = json.loads((config_dir / "config.json").read_text())
    assert doc["psFormat"] == "table {{.ID}}"
    assert base64.b64decode(doc["auths"][host]["auth"]) == b"kobako:secret"
    assert stat.S_IMODE(os.stat(config_dir / "config.json").st_mode) == 0o600
    assert auth.get_credentials(host) == ("kobako", "secret")
    with Registry(host) as reg:  # the credentials come from config.json
        reg.ping()
    assert auth.erase_credentials(host)
    assert auth.get_credentials(host) is None
    assert not auth.erase_credentials(host)
    assert json.loads((config_dir / "config.json").read_text())["psFormat"] == "table {{.ID}}"


_HELPER = """\
#!{python}
import json, os, sys
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "secrets.json")
secrets = json.load(open(path)) if os.path.exists(path) else {{}}
verb, data = sys.argv[1], sys.stdin.read()
if verb == "store":
    entry = json.loads(data)
    secrets[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
elif verb == "get":
    if data not in secrets:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = secrets[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
elif verb == "erase":
    if secrets.pop(data, None) is None:
        print("credentials not found in native keychain")
        sys.exit(1)
json.dump(secrets, open(path, "w"))
"""


def test_creds_store_helper(
    auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-kobakotest"
    helper.write_text(_HELPER.format(python=sys.executable))
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "kobakotest"}))
    host = auth_registry.host

    assert auth.get_credentials(host) is None
    assert auth.store_credentials(host, "kobako", "secret") == "docker-credential-kobakotest"
    assert json.loads((bin_dir / "secrets.json").read_text()) == {host: ["kobako", "secret"]}
    doc = json.loads((config_dir / "config.json").read_text())
    assert doc == {"credsStore": "kobakotest", "auths": {host: {}}}  # no secret in the file
    assert auth.get_credentials(host) == ("kobako", "secret")
    with Registry(host) as reg:
        reg.ping()
    assert auth.erase_credentials(host)
    assert auth.get_credentials(host) is None
    assert json.loads((bin_dir / "secrets.json").read_text()) == {}


def test_missing_helper_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"r.lan": "absent"}}))
    with pytest.raises(KobakoError, match="docker-credential-absent is not installed"):
        auth.get_credentials("r.lan")
    assert auth.get_credentials("other.lan") is None


# -- resuming downloads -----------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to a registry that cuts its first ``cuts`` connections carrying a body
    after ``after`` bytes of response, and records the requests it forwards."""

    def __init__(self, upstream: str, *, after: int, cuts: int) -> None:
        self.upstream = upstream
        self.after = after
        self.cuts = cuts
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        host, port = self.upstream.rsplit(":", 1)
        server = socket.create_connection((host, int(port)))

        def upstream() -> None:
            try:
                while data := client.recv(65536):
                    with self.lock:
                        self.requests.append(data)
                    server.sendall(data)
            except OSError:
                pass

        threading.Thread(target=upstream, daemon=True).start()
        sent = 0
        try:
            while data := server.recv(65536):
                with self.lock:
                    cut = self.cuts > 0 and sent + len(data) > self.after
                    if cut:
                        self.cuts -= 1
                if cut:
                    client.sendall(data[: self.after - sent])
                    break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, server):  # shutdown: the other thread may be in recv()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def blob(registry: RegistryServer, tmp_path: Path) -> tuple[bytes, str]:
    """A 3 MiB blob in the registry's team/app repository."""
    content = os.urandom(3 << 20)
    digest = _digest(content)
    path = tmp_path / "blob"
    path.write_bytes(content)
    with Registry(registry.host) as reg:
        reg.upload_blob("team/app", digest, str(path))
    return content, digest


def test_fetch_blob_resumes_with_range(
    registry: RegistryServer, blob: tuple[bytes, str], tmp_path: Path
) -> None:
    content, digest = blob
    proxy = CuttingProxy(registry.host, after=1 << 20, cuts=2)
    try:
        out = tmp_path / "out"
        reports: list[int] = []
        with Registry(proxy.host) as reg, open(out, "wb") as f:
            n = reg.fetch_blob("team/app", digest, f.fileno(), progress=reports.append)
    finally:
        proxy.close()
    assert n == len(content)
    assert out.read_bytes() == content
    assert reports[-1] == len(content)
    assert reports == sorted(reports)
    ranges = [r for r in proxy.requests if b"Range: bytes=" in r]
    assert len(ranges) == 2


def test_fetch_blob_survives_a_registry_restart(
    registry: RegistryServer, blob: tuple[bytes, str]
) -> None:
    content, digest = blob
    r, w = os.pipe()
    result: list[int | BaseException] = []

    def download() -> None:
        try:
            with Registry(registry.host) as reg:
                result.append(reg.fetch_blob("team/app", digest, w, size=len(content)))
        except BaseException as e:
            result.append(e)
        finally:
            os.close(w)

    thread = threading.Thread(target=download)
    thread.start()
    head = os.read(r, 1 << 16)  # the download is under way, held back by the full pipe
    registry.stop()
    registry.start()
    rest = _read_fd(r)
    os.close(r)
    thread.join()
    assert result == [len(content)]
    assert head + rest == content


class _Handler(http.server.BaseHTTPRequestHandler):
    """A request handler whose behaviour is a function of the test's."""

    protocol_version = "HTTP/1.1"
    respond: object = None

    def do_GET(self) -> None:
        self.respond(self)  # type: ignore[operator]

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(address: str, respond: object) -> Iterator[http.server.ThreadingHTTPServer]:
    handler = type("Handler", (_Handler,), {"respond": staticmethod(respond)})  # type: ignore[arg-type]
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    h.send_response(status)
    for key, value in headers.items():
        h.send_header(key.replace("_", "-"), value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_fetch_blob_skips_when_range_is_ignored(tmp_path: Path) -> None:
    content = os.urandom(1 << 20)
    digest = _digest(content)
    calls: list[str | None] = []

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path == "/v2/":
            return _send(h, 200, b"{}")
        calls.append(h.headers.get("Range"))
        h.send_response(200)  # always the whole blob, whatever Range says
        h.send_header("Content-Length", str(len(content)))
        h.end_headers()
        if len(calls) == 1:
            h.wfile.write(content[:300_000])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(content)

    for server in _serve("127.0.0.1", respond):
        host = f"127.0.0.1:{server.server_address[1]}"
        out = tmp_path / "out"
        with Registry(host) as reg, open(out, "wb") as f:
            assert reg.fetch_blob("team/app", digest, f.fileno()) == len(content)
        assert out.read_bytes() == content
        assert calls[0] is None
        assert calls[1] is not None and calls[1].startswith("bytes=")


def test_redirect_to_another_host_drops_authorization(tmp_path: Path) -> None:
    content = b"layer bytes " * 1000
    digest = _digest(content)
    seen: dict[str, list[str | None]] = {"registry": [], "storage": []}

    def storage(h: http.server.BaseHTTPRequestHandler) -> None:
        seen["storage"].append(h.headers.get("Authorization"))
        _send(h, 200, content)

    for store_server in _serve("127.0.0.2", storage):
        storage_url = f"http://127.0.0.2:{store_server.server_address[1]}/blob?sig=x"

        def registry_api(h: http.server.BaseHTTPRequestHandler, url: str = storage_url) -> None:
            given = h.headers.get("Authorization")
            seen["registry"].append(given)
            if given != "Basic " + base64.b64encode(b"kobako:secret").decode():
                return _send(h, 401, b"", WWW_Authenticate='Basic realm="test"')
            if h.path == "/v2/":
                return _send(h, 200, b"{}")
            _send(h, 307, b"", Location=url)

        for api in _serve("127.0.0.1", registry_api):
            host = f"127.0.0.1:{api.server_address[1]}"
            reg = Registry(host, credentials=("kobako", "secret"), use_config=False)
            with reg, open(tmp_path / "out", "wb") as f:
                assert reg.fetch_blob("team/app", digest, f.fileno()) == len(content)
                assert reg.get_blob("team/app", digest) == content
    assert (tmp_path / "out").read_bytes() == content
    assert seen["storage"] == [None, None]
    assert seen["registry"][-1] is not None


def test_bearer_tokens_are_cached_per_scope_and_refreshed(tmp_path: Path) -> None:
    manifest = b'{"schemaVersion":2}'
    tokens: list[str] = []  # tokens handed out; only the last one is valid
    token_requests: list[tuple[str | None, str]] = []

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        port = h.server.server_address[1]
        if h.path.startswith("/token?"):
            token_requests.append((h.headers.get("Authorization"), h.path))
            tokens.append(f"t{len(tokens)}")
            return _send(h, 200, json.dumps({"token": tokens[-1], "expires_in": 300}).encode())
        if tokens and h.headers.get("Authorization") == f"Bearer {tokens[-1]}":
            return _send(
                h, 200, manifest, Content_Type="application/vnd.oci.image.manifest.v1+json"
            )
        challenge = f'Bearer realm="http://127.0.0.1:{port}/token",service="test"'
        _send(
            h,
            401,
            b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}',
            WWW_Authenticate=challenge,
        )

    for server in _serve("127.0.0.1", respond):
        host = f"127.0.0.1:{server.server_address[1]}"
        with Registry(host, use_config=False) as reg:
            for _ in range(3):
                assert reg.get_manifest("team/app", "v1")[0] == manifest
            assert len(token_requests) == 1  # fetched once, then cached
            assert token_requests[0][0] is None  # anonymous
            assert "scope=repository%3Ateam%2Fapp%3Apull" in token_requests[0][1]
            tokens.append("revoked")  # the cached token is no longer valid
            assert reg.get_manifest("team/app", "v1")[0] == manifest
            assert len(token_requests) == 2
        with Registry(host, credentials=("kobako", "secret"), use_config=False) as reg:
            reg.get_manifest("team/other", "v1")
        authorization, path = token_requests[-1]
        assert authorization == "Basic " + base64.b64encode(b"kobako:secret").decode()
        assert "account=kobako" in path
