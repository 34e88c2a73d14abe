"""A real registry for tests: Debian's ``docker-registry`` (CNCF distribution) on 127.0.0.1.

Each server has its own config, storage and (for ``auth="htpasswd"``) password file in a
temporary directory, and listens on a free port of 127.0.0.1 only, so it never clashes with
the package's own service (``/etc/docker/registry/config.yml``, port 5000) if that runs.
Images get in with a third-party client, ``skopeo copy``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

REGISTRY = "/usr/bin/docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: kobako-tests
{tls}{auth}{validation}"""

_FOREIGN_URLS = """validation:
  manifests:
    urls:
      allow:
        - ^http://127\\.0\\.0\\.1[:/]
"""

_TLS = """\
  tls:
    certificate: {cert}
    key: {key}
"""

_HTPASSWD = """\
auth:
  htpasswd:
    realm: kobako-tests
    path: {path}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryServer:
    """A ``docker-registry`` process of a test's own.

    Args:
        tmp_path: A directory for its config, storage and log.
        auth: ``"none"`` (open), or ``"htpasswd"`` (basic auth with ``users``).
        users: User names and passwords, for ``auth="htpasswd"``.
        tls: Serve HTTPS with a self-signed certificate for 127.0.0.1 (``.cert``).
        foreign_urls: Accept manifests whose foreign layers have ``urls`` on 127.0.0.1 (the
            registry refuses any URL unless told which to allow).

    Attributes:
        host: ``"127.0.0.1:PORT"``, the registry as a reference names it.
        storage: The storage driver's root directory (blobs under
            ``docker/registry/v2/blobs/sha256/XX/HEX/data``).
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        auth: Literal["none", "htpasswd"] = "none",
        users: dict[str, str] | None = None,
        tls: bool = False,
        foreign_urls: bool = False,
    ) -> None:
        if not os.path.exists(REGISTRY):
            pytest.skip(f"{REGISTRY} is not installed (apt-get install docker-registry)")
        self.dir = tmp_path / f"registry-{auth}{'-tls' if tls else ''}"
        self.dir.mkdir()
        self.storage = self.dir / "storage"
        self.storage.mkdir()
        self.users = users if users is not None else {"kobako": "secret"}
        self.auth = auth
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth_section = ""
        if auth == "htpasswd":
            htpasswd = self.dir / "htpasswd"
            lines = [
                subprocess.run(
                    ["htpasswd", "-Bbn", user, password],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                for user, password in self.users.items()
            ]
            htpasswd.write_text("\n".join(lines) + "\n")
            auth_section = _HTPASSWD.format(path=htpasswd)
        tls_section = ""
        self.cert: Path | None = None
        if tls:
            self.cert, key = self.dir / "cert.pem", self.dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(self.cert)],
                check=True,
                capture_output=True,
            )  # fmt: skip
            tls_section = _TLS.format(cert=self.cert, key=key)
        self.config = self.dir / "config.yml"
        self.config.write_text(
            _CONFIG.format(
                storage=self.storage,
                port=self.port,
                auth=auth_section,
                tls=tls_section,
                validation=_FOREIGN_URLS if foreign_urls else "",
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the registry and wait until it answers (on the same port as before)."""
        if self.process is not None:
            return
        log = open(self.dir / "log", "ab")  # noqa: SIM115 (the process keeps it)
        with log:
            self.process = subprocess.Popen(
                [REGISTRY, "serve", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.dir / "log").read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start: {log_text}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        """Stop the registry (its storage stays: :meth:`start` brings it back as it was)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None

    def blob_file(self, digest: str) -> Path:
        """The file holding a blob in the registry's storage."""
        hexpart = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def push_archive(self, path_or_ref: str | os.PathLike[str], repository_tag: str) -> None:
        """Push an image with ``skopeo copy`` to ``HOST/REPOSITORY:TAG``.

        Args:
            path_or_ref: A skopeo source (``oci:DIR:TAG``, ``docker-archive:FILE``...), or a
                path: a docker-save or OCI archive file, an OCI layout or a ``dir:`` dir.
            repository_tag: ``REPOSITORY:TAG`` in this registry.
        """
        source = os.fspath(path_or_ref)
        if os.path.isdir(source):
            layout = os.path.exists(os.path.join(source, "oci-layout"))
            source = f"{'oci' if layout else 'dir'}:{source}"
        elif os.path.isfile(source):
            with tarfile.open(source) as tar:
                oci = "oci-layout" in tar.getnames()
            source = f"{'oci-archive' if oci else 'docker-archive'}:{source}"
        self.skopeo(
            "copy",
            "--dest-tls-verify=false",
            *self._creds("--dest-creds"),
            source,
            f"docker://{self.host}/{repository_tag}",
        )

    def skopeo(self, *args: str) -> bytes:
        """Run skopeo (quietly, without any user policy or auth file); its stdout."""
        done = subprocess.run(
            ["skopeo", "--insecure-policy", *args],
            capture_output=True,
            timeout=120,
            env={**os.environ, "REGISTRY_AUTH_FILE": str(self.dir / "no-auth.json")},
        )
        if done.returncode != 0:
            raise RuntimeError(f"skopeo {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout

    def inspect_raw(self, repository_tag: str) -> bytes:
        """``skopeo inspect --raw``: the manifest bytes the registry serves."""
        return self.skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            *self._creds("--creds"),
            f"docker://{self.host}/{repository_tag}",
        )

    def copy_to_dir(self, repository_tag: str, dest: Path) -> Path:
        """``skopeo copy`` an image out to a ``dir:`` directory (blobs named by hex digest)."""
        self.skopeo(
            "copy",
            "--src-tls-verify=false",
            *self._creds("--src-creds"),
            f"docker://{self.host}/{repository_tag}",
            f"dir:{dest}",
        )
        return dest

    def _creds(self, flag: str) -> list[str]:
        if self.auth == "none":
            return []
        user, password = next(iter(self.users.items()))
        return [flag, f"{user}:{password}"]

    def remove(self) -> None:
        """Stop the registry and delete its files."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """An open registry on 127.0.0.1, started."""
    server = RegistryServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry that wants basic auth: user ``kobako``, password ``secret``."""
    server = RegistryServer(tmp_path, auth="htpasswd")
    server.start()
    try:
        yield server
    finally:
        server.remove()
