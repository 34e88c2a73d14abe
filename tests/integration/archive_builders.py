"""Image archives built by hand with tarfile, as Docker, podman and OCI tools lay them out.

Independent of kobako's own writer, so that its reader is tested against the formats
themselves: Docker 1.10-24's ``docker save`` (``<id>/layer.tar``, ``<hex>.json``, shared
layers as symlinks), Docker 25's (also an OCI layout) and a plain OCI image layout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable

from tests.imagetools import tar_of

#: A layer: its uncompressed tar, and whether the archive holds it gzipped.
Layer = tuple[bytes, bool]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes], cmd: list[str] | None = None, **extra: object) -> bytes:
    """An image config for these uncompressed layer tars (Go's key order, not canonical)."""
    doc = {
        "architecture": "amd64",
        "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "created": "2026-01-02T03:04:05Z",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in layers]},
        **extra,
    }
    return json.dumps(doc).encode()


def simple_layer(name: str, content: bytes) -> bytes:
    return tar_of([(name, "file", content, 0o644)])


class ArchiveWriter:
    """Members for a tar written in order, each with a fixed mtime."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def file(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 1_700_000_000
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self.tar.addfile(info)

    def directory(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.tar.addfile(info)

    def getvalue(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def legacy_docker_archive(
    images: Iterable[tuple[list[Layer], list[str] | None]],
    *,
    config: bytes | None = None,
    layer_paths: list[str] | None = None,
) -> bytes:
    """A ``docker save`` archive as Docker 1.10-24 wrote it.

    Args:
        images: ``(layers, repo_tags)`` per image; a layer already written by an earlier
            image becomes a symlink ``<id>/layer.tar -> ../<first id>/layer.tar``, as Docker
            writes shared layers.
        config: A config to use (for one image) instead of the one made from its layers.
        layer_paths: Paths to name in manifest.json's Layers (for one image) instead.
    """
    w = ArchiveWriter()
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    written: dict[str, str] = {}
    for number, (layers, tags) in enumerate(images):
        cfg = config or config_for([t for t, _ in layers])
        paths = []
        parent = ""
        for tar, compressed in layers:
            v1 = hashlib.sha256(f"{number}:{parent}{sha256(tar)}".encode()).hexdigest()
            parent = v1
            path = f"{v1}/layer.tar"
            blob = gzip.compress(tar, mtime=0) if compressed else tar
            w.directory(f"{v1}/")
            if sha256(blob) in written:
                w.symlink(path, f"../{written[sha256(blob)]}")
            else:
                w.file(f"{v1}/VERSION", b"1.0")
                w.file(f"{v1}/json", json.dumps({"id": v1}).encode())
                w.file(path, blob)
                written[sha256(blob)] = path
            paths.append(path)
        w.file(f"{sha256(cfg)[7:]}.json", cfg)
        manifest.append(
            {
                "Config": f"{sha256(cfg)[7:]}.json",
                "RepoTags": tags,
                "Layers": layer_paths or paths,
            }
        )
        for tag in tags or ():
            repo, _, t = tag.rpartition(":")
            repositories.setdefault(repo, {})[t] = parent
    w.file("manifest.json", json.dumps(manifest).encode())
    if repositories:
        w.file("repositories", json.dumps(repositories).encode())
    return w.getvalue()


def oci_manifest(config: bytes, blobs: list[tuple[bytes, str]]) -> bytes:
    """An OCI manifest as Go's encoder writes it (struct order, not sorted)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": media_type, "digest": sha256(blob), "size": len(blob)}
            for blob, media_type in blobs
        ],
    }
    return json.dumps(doc).encode()


def docker25_archive(layers: list[bytes], tag: str, *, buggy: bool = False) -> tuple[bytes, str]:
    """A ``docker save`` archive as Docker 25 writes it (also an OCI layout).

    Args:
        layers: Uncompressed layer tars.
        tag: The familiar name (``app:1``).
        buggy: Write Docker 25.0.0's OCI manifest, which listed no layers.

    Returns:
        The archive and its OCI manifest's digest.
    """
    cfg = config_for(layers)
    media = "application/vnd.oci.image.layer.v1.tar"
    manifest = oci_manifest(cfg, [] if buggy else [(t, media) for t in layers])
    repo, _, t = tag.rpartition(":")
    full = f"docker.io/library/{tag}" if "/" not in repo else tag
    w = ArchiveWriter()
    w.directory("blobs/")
    w.directory("blobs/sha256/")
    for blob in sorted({*layers, cfg, manifest}, key=sha256):
        w.file(f"blobs/sha256/{sha256(blob)[7:]}", blob)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {
                    "io.containerd.image.name": full,
                    "org.opencontainers.image.ref.name": t,
                },
            }
        ],
    }
    w.file("index.json", json.dumps(index).encode())
    entry = {
        "Config": f"blobs/sha256/{sha256(cfg)[7:]}",
        "RepoTags": [tag],
        "Layers": [f"blobs/sha256/{sha256(x)[7:]}" for x in layers],
    }
    w.file("manifest.json", json.dumps([entry]).encode() + b"\n")
    w.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    w.file("repositories", json.dumps({repo: {t: sha256(layers[-1])[7:]}}).encode())
    return w.getvalue(), sha256(manifest)


def oci_archive(
    layers: list[bytes],
    ref_name: str | None,
    *,
    blob_override: dict[str, bytes] | None = None,
    nested: bool = False,
) -> tuple[bytes, str]:
    """An OCI image layout archive with gzip layers (as skopeo's ``oci-archive:`` writes).

    Args:
        layers: Uncompressed layer tars.
        ref_name: The ``org.opencontainers.image.ref.name`` annotation, if any.
        blob_override: Member content to write instead of a blob, by digest (tampering).
        nested: Put the manifest behind an image index for this platform.

    Returns:
        The archive and its manifest's digest.
    """
    from kobako.image.manifest import host_platform

    cfg = config_for(layers)
    blobs = [gzip.compress(t, mtime=0) for t in layers]
    manifest = oci_manifest(
        cfg, [(b, "application/vnd.oci.image.layer.v1.tar+gzip") for b in blobs]
    )
    top = {"mediaType": "application/vnd.oci.image.manifest.v1+json"}
    extra = []
    if nested:
        os_, arch, _ = host_platform()
        inner = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {"os": os_, "architecture": arch},
                }
            ],
        }
        index_blob = json.dumps(inner).encode()
        extra.append(index_blob)
        top = {"mediaType": "application/vnd.oci.image.index.v1+json"}
        pointed = index_blob
    else:
        pointed = manifest
    entry: dict[str, object] = {**top, "digest": sha256(pointed), "size": len(pointed)}
    if ref_name is not None:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    w = ArchiveWriter()
    w.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    w.file("index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
    for blob in [*blobs, cfg, manifest, *extra]:
        digest = sha256(blob)
        w.file(f"blobs/sha256/{digest[7:]}", (blob_override or {}).get(digest, blob))
    return w.getvalue(), sha256(manifest)


def snapshot(root: str) -> dict[str, tuple[str, int, str]]:
    """Every path under a store's root: its kind, size, and the hash of a file's content.

    Lock files (``locks/``, empty files made on first use) are not content and are left out.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.relpath(path, root).startswith("locks" + os.sep):
                continue
            st = os.lstat(path)
            if os.path.isdir(path) and not os.path.islink(path):
                out[os.path.relpath(path, root)] = ("dir", 0, "")
            elif os.path.islink(path):
                out[os.path.relpath(path, root)] = ("link", 0, os.readlink(path))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[os.path.relpath(path, root)] = ("file", st.st_size, digest)
    return out


def many_files_layer(count: int) -> bytes:
    """A layer of ``count`` small files in 100 directories (slow-ish to extract)."""
    entries: list[tuple[str, str, bytes | str, int]] = []
    for d in range(100):
        entries.append((f"d{d:03}", "dir", b"", 0o755))
        entries.extend((f"d{d:03}/f{i:05}", "file", b"x" * 64, 0o644) for i in range(count // 100))
    return tar_of(entries)
