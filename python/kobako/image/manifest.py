"""Manifests, image indexes and image configs: OCI image spec and Docker image manifest v2.2.

Parsing is strict about what kobako relies on (digests, sizes, media types, diff IDs) and
lenient about the rest, as Docker is: unknown fields are kept in the raw documents.
"""

from __future__ import annotations

import os

from kobako._record import Record
from kobako.errors import InvalidArgument
from kobako.image.reference import parse_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Descriptor",
    "ImageConfig",
    "Manifest",
    "chain_ids",
    "host_platform",
    "layer_media_type",
    "parse_config",
    "parse_manifest",
    "select_platform",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


class Descriptor(Record):
    """Content named by its digest, as OCI descriptors name it.

    Attributes:
        digest: ``"sha256:"`` and 64 lowercase hex digits.
        size: Its length in bytes.
        media_type: What it is, when known.
        urls: Where else it can be fetched from (a foreign layer's ``urls``).
    """

    digest: str
    size: int
    media_type: str = ""
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest."""
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            doc["urls"] = list(self.urls)
        return doc


class Manifest(Record):
    """An image manifest (one platform): its config and its layers, bottom first.

    Attributes:
        media_type: OCI or Docker v2.2 manifest media type.
        config: The config blob.
        layers: The layer blobs, bottom first.
    """

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


class ImageConfig(Record):
    """What an image's config says about how to run it, and its root filesystem.

    Attributes:
        entrypoint: ``Entrypoint``, or None.
        cmd: ``Cmd``, or None.
        env: ``Env``, ``KEY=VALUE`` strings.
        working_dir: ``WorkingDir`` ("" if unset).
        user: ``User`` ("" if unset).
        volumes: ``Volumes`` (container paths).
        exposed_ports: ``ExposedPorts`` (``"80/tcp"``).
        stop_signal: ``StopSignal`` ("" if unset).
        labels: ``Labels``.
        diff_ids: ``rootfs.diff_ids``, bottom first.
        created: ``created`` (RFC 3339, "" if unset).
        architecture: ``architecture``.
        os: ``os``.
        raw: The whole config document.
    """

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""
    labels: dict[str, str]
    diff_ids: tuple[str, ...] = ()
    created: str = ""
    architecture: str = ""
    os: str = ""
    raw: dict[str, Any]


def _load(content: bytes, what: str) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(content)
    except ValueError as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return doc


def _descriptor(d: Any, what: str) -> Descriptor:
    if not isinstance(d, dict):
        raise InvalidArgument(f"{what}: descriptor is not an object")
    digest, size = d.get("digest"), d.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise InvalidArgument(f"{what}: descriptor without a valid digest and size")
    try:
        parse_digest(digest)
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: {e}") from None
    media_type = d.get("mediaType")
    urls = d.get("urls")
    return Descriptor(
        digest=digest,
        size=size,
        media_type=media_type if isinstance(media_type, str) else "",
        urls=tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
    )


def document_type(content: bytes) -> str:
    """The media type of a manifest or index document (guessed from its fields if unset)."""
    doc = _load(content, "manifest")
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def parse_index(content: bytes) -> list[tuple[Descriptor, dict[str, Any]]]:
    """The manifests an image index (or Docker manifest list) lists, with their platforms."""
    doc = _load(content, "image index")
    out = []
    for m in doc.get("manifests") or ():
        platform = m.get("platform") if isinstance(m, dict) else None
        out.append((_descriptor(m, "image index"), platform if isinstance(platform, dict) else {}))
    return out


def parse_manifest(content: bytes) -> Manifest:
    """Parse an OCI image manifest or a Docker v2.2 manifest.

    Raises:
        InvalidArgument: It is not one (an index is not a manifest: see :func:`parse_index`).
    """
    doc = _load(content, "manifest")
    media_type = doc.get("mediaType") or OCI_MANIFEST
    if media_type in INDEX_TYPES or (not doc.get("mediaType") and "manifests" in doc):
        raise InvalidArgument("expected an image manifest, got an image index")
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument("unsupported manifest schemaVersion (expected 2)")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument("manifest has no layers list")
    return Manifest(
        media_type=media_type,
        config=_descriptor(doc.get("config"), "manifest config"),
        layers=tuple(_descriptor(layer, "manifest layer") for layer in layers),
    )


def _strings(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # Docker accepts a string where a list is expected
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"image config: {what} is not a list of strings")
    return tuple(value)


def parse_config(content: bytes) -> ImageConfig:
    """Parse an image config (OCI ``application/vnd.oci.image.config.v1+json`` or Docker's).

    Raises:
        InvalidArgument: It is not valid JSON, or a field kobako uses has the wrong type.
    """
    doc = _load(content, "image config")
    cfg = doc.get("config") or doc.get("container_config") or {}
    if not isinstance(cfg, dict):
        raise InvalidArgument("image config: config is not an object")
    rootfs = doc.get("rootfs") or {}
    diff_ids = _strings(rootfs.get("diff_ids") if isinstance(rootfs, dict) else None, "diff_ids")
    for d in diff_ids or ():
        try:
            parse_digest(d)
        except InvalidArgument as e:
            raise InvalidArgument(f"image config: rootfs.diff_ids: {e}") from None
    labels = cfg.get("Labels") or {}
    volumes = cfg.get("Volumes") or {}
    ports = cfg.get("ExposedPorts") or {}
    return ImageConfig(
        entrypoint=_strings(cfg.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(cfg.get("Cmd"), "Cmd"),
        env=_strings(cfg.get("Env"), "Env") or (),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        volumes=tuple(volumes) if isinstance(volumes, dict) else (),
        exposed_ports=tuple(ports) if isinstance(ports, dict) else (),
        stop_signal=str(cfg.get("StopSignal") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        diff_ids=diff_ids or (),
        created=str(doc.get("created") or ""),
        architecture=str(doc.get("architecture") or ""),
        os=str(doc.get("os") or ""),
        raw=doc,
    )


def chain_ids(diff_ids: tuple[str, ...] | list[str]) -> list[str]:
    """The chain ID of each layer: ``C1 = D1``, ``Cn = sha256(C(n-1) + " " + Dn)``."""
    out: list[str] = []
    for diff_id in diff_ids:
        if out:
            import hashlib  # only here: a one-layer image's start does not pay for OpenSSL

            chain = "sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest()
        else:
            chain = diff_id
        out.append(chain)
    return out


def host_platform() -> tuple[str, str, str]:
    """The running platform as OCI names it: (os, architecture, variant)."""
    machine = os.uname().machine
    arch = _ARCH.get(machine, machine)
    variant = "v8" if arch == "arm64" else ("v7" if arch == "arm" else "")
    return "linux", arch, variant


def select_platform(
    entries: list[tuple[Descriptor, dict[str, Any]]], want: tuple[str, str, str] | None = None
) -> Descriptor:
    """Pick the manifest for a platform from an index (the running platform by default).

    Raises:
        NotFound: No entry matches.
    """
    from kobako.errors import NotFound

    os_, arch, variant = want or host_platform()
    best = None
    for desc, plat in entries:
        if plat.get("os", os_) != os_ or plat.get("architecture", arch) != arch:
            continue
        if variant and plat.get("variant") not in (None, "", variant):
            continue
        if best is None or plat.get("variant") == variant:
            best = desc
    if best is None:
        wanted = "/".join(p for p in (os_, arch, variant) if p)
        raise NotFound(f"no matching manifest for {wanted} in the manifest list entries")
    return best


def layer_media_type(compression: str, docker: bool = False) -> str:
    """The layer media type for a compression ("none", "gzip", "zstd")."""
    if docker and compression == "gzip":
        return DOCKER_LAYER
    return {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]


def manifest_json(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """An OCI image manifest document, serialised canonically (sorted keys, no spaces)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return canonical(doc)


def canonical(doc: Any) -> bytes:
    """JSON as kobako writes blobs: sorted keys, compact, UTF-8."""
    import json

    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
