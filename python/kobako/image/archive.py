"""Image archives: ``docker save`` / OCI layout tars in and out, rootfs imports, the default image.

What :func:`load` reads, detected by content (plain, gzip, zstd, xz or bzip2 tar):

- ``docker save`` archives, Docker 1.10 to 24 (``manifest.json`` listing ``Config``,
  ``RepoTags`` and ``Layers``; ``<id>/layer.tar`` files, shared ones as symlinks), and those of
  Docker 25 and later, which are also an OCI image layout (``index.json``, ``blobs/sha256/``):
  there the OCI manifest is kept as it is, so digests stay what Docker showed;
- OCI image layout archives as skopeo, podman, umoci and buildah write them (``index.json``,
  perhaps pointing to image indexes; names from the ``io.containerd.image.name`` or
  ``org.opencontainers.image.ref.name`` annotations).

Everything goes through one :class:`~kobako.image.store.Stage`: every blob is checked against
its digest as it is copied, every layer is extracted (and its diff ID checked) before anything
is committed, so a corrupt or hostile archive leaves the store as it was. Input that cannot be
read at random (a pipe, a compressed archive) is first spooled, decompressed, into the stage.

:func:`save` writes what Docker 25 writes: one tar that is both a ``docker save`` archive and
an OCI image layout, so that ``docker load``, ``podman load`` and ``skopeo`` (``docker-archive:``
or ``oci-archive:``) all read it. :func:`import_image` makes a one-layer image of a root
filesystem tarball (``docker import``), applying Dockerfile ``--change`` instructions with
:func:`apply_changes`. :func:`default_image` builds ``busybox:latest`` from the host's
``busybox-static``, so that the first ``kobako run`` works offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile

from kobako._record import Record
from kobako.errors import DigestMismatch, ImageNotFound, InvalidArgument, LayerError, NotFound
from kobako.image.manifest import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    Descriptor,
    canonical,
    chain_ids,
    document_type,
    host_platform,
    layer_media_type,
    manifest_json,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from kobako.image.reference import familiar, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Protocol

    from kobako.image.store import ImageRecord, Stage, Store

    class Readable(Protocol):
        """A binary stream to read."""

        def read(self, size: int = -1, /) -> bytes: ...

    Source = BinaryIO | str | os.PathLike[str]


__all__ = [
    "DEFAULT_IMAGE",
    "LoadedImage",
    "apply_changes",
    "default_image",
    "import_image",
    "load",
    "open_input",
    "save",
]

#: The name of the image :func:`default_image` builds.
DEFAULT_IMAGE = "busybox:latest"
#: The label the default image carries, saying where it comes from.
DEFAULT_IMAGE_SOURCE = "kobako: built from the host's busybox-static"

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
_OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_CHUNK = 1 << 20
#: The most a JSON member (manifest.json, index.json, a manifest or config) may take.
_JSON_LIMIT = 32 << 20
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_HEX = frozenset("0123456789abcdef")


class LoadedImage(Record):
    """An image :func:`load` put in the store.

    Attributes:
        id: The image ID (its config's digest).
        manifest_digest: The digest of its manifest, as the index names it.
        names: Its names from the archive in full form (``docker.io/library/busybox:latest``);
            empty for an unnamed image.
    """

    id: str
    manifest_digest: str
    names: tuple[str, ...] = ()

    @property
    def familiar_names(self) -> tuple[str, ...]:
        """The names as Docker shows them (``busybox:latest``)."""
        return tuple(familiar(name) for name in self.names)


# -- reading archives -----------------------------------------------------------------------


def compression_of(head: bytes) -> str:
    """The compression a stream's first bytes show: gzip, zstd, xz, bzip2 or none."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


class _Prefixed:
    """A stream whose first bytes were already read: they come first, then the rest."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)


def _decompressed(stream: Readable, compression: str) -> Readable:
    """A reader of ``stream`` decompressed (gzip, xz or bzip2; Python's own decoders)."""
    if compression == "gzip":
        import gzip

        reader: Readable = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[call-overload]
        return reader
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(stream)  # type: ignore[arg-type]
    if compression == "bzip2":
        import bz2

        reader = bz2.BZ2File(stream)  # type: ignore[call-overload]
        return reader
    return stream


def _copy(src: Readable, fd: int) -> int:
    total = 0
    while chunk := src.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        total += len(chunk)
    return total


def _spool(stream: Readable, head: bytes, compression: str, path: str, label: str) -> None:
    """Write ``stream`` (``head`` already read from it), decompressed, to a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        source = _Prefixed(head, stream)
        if compression == "zstd":
            _unzstd(source, fd, label)
            return
        import zlib

        try:
            _copy(_decompressed(source, compression), fd)
        except (EOFError, OSError, zlib.error, ValueError) as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise  # an I/O error (disk full...), not a corrupt stream
            raise InvalidArgument(
                f"archive {label}: corrupt or truncated {compression} stream ({e})"
            ) from None
    finally:
        os.close(fd)


def _unzstd(source: Readable, fd: int, label: str) -> None:
    """Decompress a zstd stream into ``fd`` with the ``zstd`` command."""
    import shutil
    import subprocess

    zstd = shutil.which("zstd")
    if zstd is None:
        raise NotFound(f"archive {label} is zstd-compressed: install zstd (apt-get install zstd)")
    proc = subprocess.Popen(
        [zstd, "-dcq"], stdin=subprocess.PIPE, stdout=fd, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None
    try:
        while chunk := source.read(_CHUNK):
            proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # zstd stopped reading: its status says why
    finally:
        status = proc.wait()
    if status != 0:
        raise InvalidArgument(f"archive {label}: corrupt or truncated zstd stream")


def _norm(name: str) -> str | None:
    """A path inside the archive, normalised; None if it leads outside it."""
    path = posixpath.normpath(name)
    if path.startswith(("/", "../")) or path in ("..", ".", ""):
        return None
    return path


class _Archive:
    """A tar read at random: its regular members by normalised name, links followed."""

    def __init__(self, fileobj: BinaryIO, label: str) -> None:
        self.label = label
        start = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(start)
        try:
            self._tar = tarfile.open(fileobj=fileobj, mode="r:")  # noqa: SIM115 (fileobj's)
            infos = self._tar.getmembers()
        except tarfile.TarError as e:
            raise InvalidArgument(f"archive {label}: not a valid tar archive ({e})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        for info in infos:
            if info.isreg() and info.offset_data + info.size > end:
                raise InvalidArgument(f"archive {label} is truncated (in {info.name!r})")
            key = _norm(info.name)
            if key is not None:  # a member outside the archive is never read, nor written
                self._members[key] = info

    def has(self, name: str) -> bool:
        key = _norm(name)
        return key is not None and key in self._members

    def member(self, name: str, what: str) -> tarfile.TarInfo:
        """The regular member ``name`` leads to (through symlinks and hard links).

        Raises:
            InvalidArgument: It is missing, not a file, or leads outside the archive.
        """
        key = _norm(name)
        for _ in range(40):
            if key is None:
                raise InvalidArgument(
                    f"archive {self.label}: {what} {name!r} points outside the archive"
                )
            info = self._members.get(key)
            if info is None:
                raise InvalidArgument(f"archive {self.label}: missing {what} {name!r}")
            if info.isreg():
                return info
            if info.issym():
                target = info.linkname
                if target.startswith("/"):
                    key = _norm(target.lstrip("/"))
                else:
                    key = _norm(posixpath.join(posixpath.dirname(key), target))
            elif info.islnk():
                key = _norm(info.linkname)
            else:
                raise InvalidArgument(f"archive {self.label}: {what} {name!r} is not a file")
        raise InvalidArgument(f"archive {self.label}: {what} {name!r}: too many levels of links")

    def open(self, name: str, what: str) -> BinaryIO:
        stream = self._tar.extractfile(self.member(name, what))
        assert stream is not None  # a regular member always has content
        return stream  # type: ignore[return-value]

    def size(self, name: str, what: str) -> int:
        return self.member(name, what).size

    def read(self, name: str, what: str) -> bytes:
        info = self.member(name, what)
        if info.size > _JSON_LIMIT:
            raise InvalidArgument(
                f"archive {self.label}: {what} {name!r} is too large ({info.size} bytes)"
            )
        with self.open(name, what) as f:
            return f.read()

    def json(self, name: str, what: str) -> Any:
        try:
            return json.loads(self.read(name, what))
        except ValueError as e:
            raise InvalidArgument(f"archive {self.label}: {what} is not valid JSON: {e}") from None


class _Plan(Record):
    """One image to load: its config, its layers' members, its manifest if the archive has it.

    Attributes:
        names: Full names to give it.
        config: The config's content.
        config_digest: Its digest (checked).
        layers: ``(member, expected blob digest or None, media type or None)``, bottom first.
        manifest: The manifest's content, for an OCI layout; None to write one.
        manifest_digest: Its digest (checked), or None.
    """

    names: tuple[str, ...]
    config: bytes
    config_digest: str
    layers: tuple[tuple[str, str | None, str | None], ...]
    manifest: bytes | None = None
    manifest_digest: str | None = None


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_member(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _read_blob(archive: _Archive, desc: Descriptor, what: str) -> bytes:
    """A small blob of an OCI layout, checked against its descriptor's digest and size."""
    member = _blob_member(desc.digest)
    content = archive.read(member, what)
    if len(content) != desc.size:
        raise InvalidArgument(
            f"archive {archive.label}: {what} {desc.digest} has {len(content)} bytes, "
            f"its descriptor says {desc.size}"
        )
    actual = _sha256(content)
    if actual != desc.digest:
        raise DigestMismatch(
            desc.digest, actual, f"archive {archive.label}: {what} {member} hashes to {actual}"
        )
    return content


def _name_of(annotations: Any) -> str | None:
    """The full image name an index entry's annotations give, if any.

    containerd's (and Docker's) ``io.containerd.image.name`` is a full name; the OCI
    ``org.opencontainers.image.ref.name`` is a name for skopeo and podman, but a bare tag
    (``latest``) for umoci and Docker: an entry with only a bare tag stays unnamed.
    """
    if not isinstance(annotations, dict):
        return None
    name = annotations.get(CONTAINERD_NAME)
    if not isinstance(name, str) or not name:
        name = annotations.get(REF_NAME)
        if not isinstance(name, str) or (":" not in name and "/" not in name):
            return None
    try:
        ref = parse(name)
    except InvalidArgument:
        return None
    return str(ref.replace(digest=None)) if ref.tag is not None else None


def _oci_plans(archive: _Archive, strict: bool) -> list[_Plan]:
    """The images an OCI layout's ``index.json`` names (nested indexes: this platform's)."""
    label = archive.label
    doc = archive.json("index.json", "index.json")
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise InvalidArgument(f"archive {label}: index.json has no manifests list")
    plans: list[_Plan] = []
    for entry in entries:
        try:
            desc = Descriptor(**_descriptor_fields(entry))
        except InvalidArgument as e:
            raise InvalidArgument(f"archive {label}: index.json: {e}") from None
        name = _name_of(entry.get("annotations"))
        content = _read_blob(archive, desc, "manifest")
        digest = desc.digest
        for _ in range(4):  # an index may point to an index; not forever
            if document_type(content) not in INDEX_TYPES:
                break
            try:
                desc = select_platform(parse_index(content))
            except (InvalidArgument, NotFound) as e:
                raise type(e)(f"archive {label}: image index {digest}: {e}") from None
            content = _read_blob(archive, desc, "manifest")
            digest = desc.digest
        else:
            raise InvalidArgument(f"archive {label}: image index {desc.digest} nests too deeply")
        try:
            manifest = parse_manifest(content)
        except InvalidArgument as e:
            raise InvalidArgument(f"archive {label}: manifest {digest}: {e}") from None
        config = _read_blob(archive, manifest.config, "config")
        try:
            diff_ids = parse_config(config).diff_ids
        except InvalidArgument as e:
            raise InvalidArgument(
                f"archive {label}: config {manifest.config.digest}: {e}"
            ) from None
        if len(diff_ids) != len(manifest.layers):
            if not strict:
                continue  # Docker 25.0's buggy layout: its manifest.json is right
            raise InvalidArgument(
                f"archive {label}: manifest {digest} lists {len(manifest.layers)} layers, "
                f"its config {len(diff_ids)} diff IDs"
            )
        layers = []
        for layer in manifest.layers:
            member = _blob_member(layer.digest)
            size = archive.size(member, "layer")
            if size != layer.size:
                raise InvalidArgument(
                    f"archive {label}: layer {layer.digest} has {size} bytes, "
                    f"its descriptor says {layer.size}"
                )
            layers.append((member, layer.digest, layer.media_type or None))
        plans.append(
            _Plan(
                names=(name,) if name else (),
                config=config,
                config_digest=manifest.config.digest,
                layers=tuple(layers),
                manifest=content,
                manifest_digest=digest,
            )
        )
    return plans


def _descriptor_fields(entry: Any) -> dict[str, Any]:
    from kobako.image.reference import parse_digest

    if not isinstance(entry, dict):
        raise InvalidArgument("an entry is not an object")
    digest, size = entry.get("digest"), entry.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise InvalidArgument("an entry has no valid digest and size")
    parse_digest(digest)
    return {"digest": digest, "size": size}


def _docker_plans(archive: _Archive) -> list[_Plan]:
    """The images a ``docker save`` ``manifest.json`` lists."""
    label = archive.label
    items = archive.json("manifest.json", "manifest.json")
    if not isinstance(items, list):
        raise InvalidArgument(f"archive {label}: manifest.json is not a list")
    plans = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise InvalidArgument(f"archive {label}: manifest.json: an entry has no Config")
        layers = item.get("Layers") or []
        tags = item.get("RepoTags") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise InvalidArgument(f"archive {label}: manifest.json: Layers is not a list of paths")
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise InvalidArgument(f"archive {label}: manifest.json: RepoTags is not a list")
        names = []
        for tag in tags:
            try:
                ref = parse(tag)
            except InvalidArgument as e:
                raise InvalidArgument(f"archive {label}: manifest.json: {e}") from None
            if ref.digest is None:
                names.append(str(ref))
        path = item["Config"]
        config = archive.read(path, "config")
        digest = _sha256(config)
        # the file is named by its digest: <hex>.json (Docker < 25), blobs/sha256/<hex> (25+)
        stem = posixpath.basename(path).removesuffix(".json")
        if len(stem) == 64 and set(stem) <= _HEX and digest[7:] != stem:
            raise DigestMismatch(
                f"sha256:{stem}", digest, f"archive {label}: config {path} hashes to {digest}"
            )
        for layer in layers:
            archive.member(layer, "layer")  # every one there before anything is written
        plans.append(
            _Plan(
                names=tuple(names),
                config=config,
                config_digest=digest,
                layers=tuple((layer, None, None) for layer in layers),
            )
        )
    return plans


def _plans(archive: _Archive) -> list[_Plan]:
    """What the archive holds: OCI manifests where it has them, else Docker's manifest.json."""
    docker = archive.has("manifest.json")
    oci = _oci_plans(archive, strict=not docker) if archive.has("index.json") else []
    if not docker and not archive.has("index.json"):
        raise InvalidArgument(
            f"archive {archive.label}: missing manifest.json and index.json: "
            "not a docker save or OCI archive"
        )
    if docker:
        by_config = {plan.config_digest: i for i, plan in enumerate(oci)}
        for plan in _docker_plans(archive):
            i = by_config.get(plan.config_digest)
            if i is None:
                by_config[plan.config_digest] = len(oci)
                oci.append(plan)
            else:  # the OCI manifest of the same image: keep it, add the names
                names = tuple(dict.fromkeys(oci[i].names + plan.names))
                oci[i] = oci[i].replace(names=names)
    merged: dict[str, _Plan] = {}  # one plan per image, names gathered
    for plan in oci:
        key = plan.manifest_digest or plan.config_digest
        if key in merged:
            names = tuple(dict.fromkeys(merged[key].names + plan.names))
            merged[key] = merged[key].replace(names=names)
        else:
            merged[key] = plan
    return list(merged.values())


def _check_diff_id(stage: Stage, blob: str, diff_id: str) -> None:
    """Check a new layer blob's tar hashes to ``diff_id`` when its layer is already extracted.

    The store keeps one directory per layer; a blob staged for a layer it already has must
    still be that layer, or the store would hold (and save) a blob that lies about it.
    """
    if blob == diff_id:
        return  # an uncompressed tar: its digest, checked as it was staged, is its diff ID
    import shutil

    from kobako import _native

    scratch = os.path.join(stage.path, "check-" + os.urandom(8).hex())
    os.mkdir(scratch, 0o700)
    try:
        fd = os.open(stage.blob_path(blob), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _, actual, _, _, _ = _native.extract_layer(fd, scratch, blob)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if actual != diff_id:
        raise DigestMismatch(
            diff_id,
            actual,
            f"layer {blob}: its tar hashes to {actual}, but the image config says {diff_id}",
        )


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(6)


def _stage_plan(
    store: Store, stage: Stage, archive: _Archive, plan: _Plan, extracted: dict[str, str]
) -> tuple[str, str]:
    """Stage an image's blobs and layers; returns (manifest digest, config digest)."""
    label = archive.label
    try:
        diff_ids = parse_config(plan.config).diff_ids
    except InvalidArgument as e:
        raise InvalidArgument(f"archive {label}: config {plan.config_digest}: {e}") from None
    if len(diff_ids) != len(plan.layers):
        raise InvalidArgument(
            f"archive {label}: image {plan.config_digest} has {len(plan.layers)} layers, "
            f"its config lists {len(diff_ids)} diff IDs"
        )
    config = stage.add_blob(plan.config, plan.config_digest)
    descs = []
    for (member, expected, media_type), diff_id, chain in zip(
        plan.layers, diff_ids, chain_ids(diff_ids), strict=True
    ):
        with archive.open(member, "layer") as f:
            try:
                blob = stage.add_blob(f, expected)
            except DigestMismatch as e:
                raise DigestMismatch(
                    e.expected, e.actual, f"archive {label}: layer {member} hashes to {e.actual}"
                ) from None
        if media_type is None:
            compression = compression_of(_head(stage.blob_path(blob.digest)))
            if compression not in ("none", "gzip", "zstd"):
                raise InvalidArgument(
                    f"archive {label}: layer {member} is {compression}-compressed: "
                    "only plain, gzip and zstd layers are supported"
                )
            media_type = layer_media_type(compression)
        try:
            if chain in extracted:  # done earlier in this load: same blob, or check this one
                if extracted[chain] != blob.digest:
                    _check_diff_id(stage, blob.digest, diff_id)
            elif store.layer(chain) is not None:  # in the store: check a blob it lacked
                if not store.has_blob(blob.digest):
                    _check_diff_id(stage, blob.digest, diff_id)
            else:
                stage.add_layer(blob.digest, diff_id, chain)
        except LayerError as e:
            raise LayerError(
                f"archive {label}: {member}: {e}", layer=e.layer, entry=e.entry, reason=e.reason
            ) from None
        extracted[chain] = blob.digest
        descs.append(Descriptor(digest=blob.digest, size=blob.size, media_type=media_type))
    if plan.manifest is None:
        config_desc = Descriptor(digest=config.digest, size=config.size, media_type=OCI_CONFIG)
        manifest = stage.add_blob(manifest_json(config_desc, descs))
    else:
        manifest = stage.add_blob(plan.manifest, plan.manifest_digest)
    return manifest.digest, config.digest


def _label(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def load(store: Store, source: Source) -> list[LoadedImage]:
    """Load the images of a ``docker save`` or OCI archive into the store (``docker load``).

    All of it or nothing: every blob is checked against its digest and every layer extracted
    (its diff ID checked) before the images become visible, so a bad archive, a hostile layer
    or a kill midway leaves the store as it was.

    Args:
        store: The store to load into.
        source: A path, or a binary stream (read to its end; a pipe works).

    Returns:
        The images loaded, in the archive's order.

    Raises:
        InvalidArgument: The archive is malformed or truncated, or lacks a member it names;
            the message names the archive and what is wrong.
        NotFound: ``source`` is a path that does not exist.
        DigestMismatch: A blob, or a layer's tar, does not hash as the archive says.
        LayerError: A layer is hostile or corrupt (it names the layer and the entry).

    Example:
        >>> [image.names for image in load(store, "busybox.tar")]  # doctest: +SKIP
        [('docker.io/library/busybox:latest',)]
    """
    label = _label(source)
    own = None
    if isinstance(source, str | os.PathLike):
        own = open_input(label)
        stream: BinaryIO = own
    else:
        stream = source
    try:
        with store.stage() as stage:
            seekable = _seekable(stream)
            if seekable:
                start = stream.tell()
                head = stream.read(6)
                stream.seek(start)
            else:
                head = stream.read(6)
            if not head:
                raise InvalidArgument(f"archive {label} is empty")
            compression = compression_of(head)
            spooled = None
            if compression != "none" or not seekable:
                path = os.path.join(stage.path, "archive.tar")
                _spool(stream, b"" if seekable else head, compression, path, label)
                spooled = open(path, "rb")  # noqa: SIM115 (closed below)
            try:
                archive = _Archive(spooled or stream, label)
                plans = _plans(archive)
                extracted: dict[str, str] = {}
                staged = [_stage_plan(store, stage, archive, plan, extracted) for plan in plans]
            finally:
                if spooled is not None:  # not needed any more: free its space before commit
                    spooled.close()
                    os.unlink(spooled.name)
            loaded = []
            for plan, (manifest, config) in zip(plans, staged, strict=True):
                stage.commit(manifest_digest=manifest, tags=list(plan.names))
                loaded.append(LoadedImage(id=config, manifest_digest=manifest, names=plan.names))
            return loaded
    finally:
        if own is not None:
            own.close()


def open_input(path: str) -> BinaryIO:
    """Open an input file; a failure is one line, as docker's ``open PATH: reason``.

    Raises:
        NotFound: There is no such file.
        InvalidArgument: It cannot be opened (the reason as docker words it).
    """
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"open {path}: no such file or directory") from None
    except OSError as e:
        raise InvalidArgument(f"open {path}: {(e.strerror or str(e)).lower()}") from None


def _seekable(stream: BinaryIO) -> bool:
    try:
        if not stream.seekable():
            return False
        stream.tell()
    except (AttributeError, OSError, ValueError):
        return False
    return True


# -- writing archives -----------------------------------------------------------------------


class _Saved(Record):
    """One image to save: its manifest (this platform's), record and names."""

    manifest_digest: str
    manifest: bytes
    image: ImageRecord
    names: tuple[str, ...]


def _platform_manifest(store: Store, digest: str) -> tuple[str, bytes]:
    """The image manifest (digest, content) a stored manifest or index stands for here."""
    content = store.read_blob(digest)
    for _ in range(4):
        if document_type(content) not in INDEX_TYPES:
            return digest, content
        digest = select_platform(parse_index(content)).digest
        content = store.read_blob(digest)
    raise InvalidArgument(f"image index {digest} nests too deeply")


def _select(store: Store, refs: list[str]) -> list[_Saved]:
    """The images ``refs`` name, in order, once each, with the names asked for."""
    chosen: dict[str, _Saved] = {}

    def add(image: ImageRecord, name: str | None) -> None:
        digest, content = _platform_manifest(store, image.manifest_digest)
        saved = chosen.get(digest) or _Saved(
            manifest_digest=digest, manifest=content, image=image, names=()
        )
        if name is not None and name not in saved.names:
            saved = saved.replace(names=(*saved.names, name))
        chosen[digest] = saved

    for ref in refs:
        try:
            parsed = parse(ref, default_tag=False)
        except InvalidArgument:
            parsed = None
        if parsed is not None and parsed.tag is None and parsed.digest is None:
            # a repository without a tag: every tag of it, as docker save does
            names = [
                e.name
                for e in store.list_images()
                if e.name is not None and _repository(e.name) == parsed.repository
            ]
            if names:
                for name in names:
                    add(store.image(name), name)
                continue
        image = store.image(ref)
        full = str(parsed.replace(tag=parsed.tag or "latest")) if parsed is not None else None
        add(image, full if full in image.names else None)
    return list(chosen.values())


def _repository(name: str) -> str | None:
    """The repository of a stored name (None for a name another tool wrote that is not one)."""
    try:
        return parse(name).repository
    except InvalidArgument:
        return None


def _info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._f.read(size)
        self.sha.update(data)
        return data


def _write(store: Store, images: list[_Saved], out: BinaryIO) -> None:
    blobs: dict[str, None] = {}
    manifest_json_doc = []
    repositories: dict[str, dict[str, str]] = {}
    index = []
    for saved in images:
        image = saved.image
        blobs[saved.manifest_digest] = None
        blobs[image.manifest.config.digest] = None
        for layer in image.manifest.layers:
            blobs[layer.digest] = None
        manifest_json_doc.append(
            {
                "Config": _blob_member(image.manifest.config.digest),
                "RepoTags": [familiar(name) for name in saved.names],
                "Layers": [_blob_member(layer.digest) for layer in image.manifest.layers],
            }
        )
        raw = image.config.raw
        platform = {
            key: raw[key]
            for key in ("architecture", "os", "variant")
            if isinstance(raw.get(key), str) and raw[key]
        }
        entry: dict[str, Any] = {
            "mediaType": document_type(saved.manifest),
            "digest": saved.manifest_digest,
            "size": len(saved.manifest),
        }
        if "architecture" in platform and "os" in platform:
            entry["platform"] = platform
        for name in saved.names:
            ref = parse(name)
            index.append({**entry, "annotations": {CONTAINERD_NAME: name, REF_NAME: ref.tag}})
            if image.config.diff_ids:
                top = image.config.diff_ids[-1].partition(":")[2]
                repositories.setdefault(ref.familiar_repository, {})[str(ref.tag)] = top
        if not saved.names:
            index.append(entry)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("blobs/", directory=True))
        tar.addfile(_info("blobs/sha256/", directory=True))
        for digest in sorted(blobs):
            with store.open_blob(digest) as f:
                size = os.fstat(f.fileno()).st_size
                reader = _Hashing(f)
                tar.addfile(_info(_blob_member(digest), size), reader)
            actual = "sha256:" + reader.sha.hexdigest()
            if actual != digest:
                raise DigestMismatch(
                    digest, actual, f"blob {digest} is corrupt in the store: it hashes to {actual}"
                )
        index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        files = {
            "index.json": canonical(index_doc) + b"\n",
            "manifest.json": canonical(manifest_json_doc) + b"\n",
            "oci-layout": _OCI_LAYOUT + b"\n",
        }
        if repositories:
            files["repositories"] = canonical(repositories) + b"\n"
        import io

        for name, content in files.items():
            tar.addfile(_info(name, len(content)), io.BytesIO(content))


def save(store: Store, refs: list[str], out: BinaryIO | str | os.PathLike[str]) -> None:
    """Write images to one tar that is both a ``docker save`` archive and an OCI layout.

    As Docker 25 writes it: ``blobs/sha256/`` (manifests, configs, layers as stored),
    ``oci-layout``, ``index.json`` (one entry per name, annotated with the full name and the
    tag), ``manifest.json`` and ``repositories``. The same images give the same bytes.

    Args:
        store: The store to read.
        refs: Image names, IDs or manifest digests; a repository without a tag means every
            tag of it, as for ``docker save``. An image asked for by ID is saved unnamed.
        out: A binary stream to write to (not closed), or a path, written atomically.

    Raises:
        InvalidArgument: ``refs`` is empty, or a reference is malformed or ambiguous.
        ImageNotFound: No image has that name or ID.
        DigestMismatch: A stored blob has changed on disk (a path is then not written).
    """
    if not refs:
        raise InvalidArgument("save: no image given")
    images = _select(store, refs)
    if not isinstance(out, str | os.PathLike):
        _write(store, images, out)
        out.flush()
        return
    path = os.fspath(out)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(store, images, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:  # noqa: SIM105 (contextlib is slow to import)
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# -- docker import and --change ---------------------------------------------------------------


def _rfc3339(seconds: float | None = None) -> str:
    """A time (now by default) as Docker writes it, UTC."""
    import time

    if seconds is None:
        secs, frac = divmod(time.time_ns(), 1_000_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def _platform_fields() -> dict[str, str]:
    os_, arch, variant = host_platform()
    return {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}


def import_image(
    store: Store,
    source: Source,
    reference: str | None = None,
    *,
    changes: list[str] | tuple[str, ...] = (),
    message: str = "",
) -> ImageRecord:
    """Make a one-layer image of a root filesystem tarball, as ``docker import`` does.

    The tarball (plain, gzip or zstd; xz and bzip2 are decompressed first) is stored as it is
    and extracted as the image's layer; the config has this host's platform, the time now,
    and the ``changes`` applied.

    Args:
        store: The store.
        source: The tarball: a path or a binary stream (read to its end).
        reference: The image's name (``app``, ``app:1``); None leaves it unnamed.
        changes: Dockerfile instructions for the config (``--change``; see
            :func:`apply_changes`).
        message: The history entry's comment (``--message``).

    Returns:
        The new image.

    Raises:
        InvalidArgument: The reference or a change is malformed, or the input is empty.
        LayerError: The tarball is hostile, corrupt or truncated (nothing is stored).
    """
    name = None
    if reference is not None:
        ref = parse(reference)
        if ref.digest is not None:
            raise InvalidArgument(f"invalid image name {reference!r}: a digest cannot be a tag")
        name = str(ref)
    config = apply_changes({}, changes)
    label = _label(source)
    own = None
    if isinstance(source, str | os.PathLike):
        own = open_input(label)
        stream: Readable = own
    else:
        stream = source
    try:
        with store.stage() as stage:
            head = stream.read(6)
            if not head:
                raise InvalidArgument(f"import {label}: the input is empty")
            compression = compression_of(head)
            reader: Readable = _Prefixed(head, stream)
            if compression in ("xz", "bzip2"):  # the extractor reads neither: store it plain
                reader = _decompressed(reader, compression)
            try:
                blob = stage.add_blob(reader)
            except (EOFError, ValueError, OSError) as e:
                if isinstance(e, OSError) and e.errno is not None:
                    raise
                raise InvalidArgument(
                    f"import {label}: corrupt or truncated {compression} stream ({e})"
                ) from None
            if compression not in ("gzip", "zstd"):
                compression = "none"
            layer = stage.add_layer(blob.digest, None)
            created = _rfc3339()
            history: dict[str, str] = {"created": created, "created_by": "kobako import"}
            if message:
                history["comment"] = message
            doc = {
                **_platform_fields(),
                "created": created,
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [history],
            }
            c = stage.add_blob(canonical(doc))
            layer_desc = Descriptor(
                digest=blob.digest, size=blob.size, media_type=layer_media_type(compression)
            )
            config_desc = Descriptor(digest=c.digest, size=c.size, media_type=OCI_CONFIG)
            m = stage.add_blob(manifest_json(config_desc, [layer_desc]))
            stage.commit(manifest_digest=m.digest, tags=[name] if name else [])
    finally:
        if own is not None:
            own.close()
    return store.image(m.digest)


#: The instructions ``--change`` accepts (Docker's list).
CHANGE_INSTRUCTIONS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _raw_words(text: str) -> list[str]:
    """Split on blanks outside quotes; quotes and backslashes are kept for expansion."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            word.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(text):
                word.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c.isspace():
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            started = True
            word.append(c)
            if c in "'\"":
                quote = c
            elif c == "\\" and i + 1 < len(text):
                word.append(text[i + 1])
                i += 1
        i += 1
    if quote:
        raise InvalidArgument(f"unmatched quote in {text!r}")
    if started:
        words.append("".join(word))
    return words


def _expand(text: str, env: dict[str, str], *, split: bool) -> list[str]:
    """Docker's word processing: quotes, backslash escapes and ``$VAR``, ``${VAR}``,
    ``${VAR:-word}``, ``${VAR:+word}``; unquoted blanks (and those of unquoted expansions)
    separate words when ``split``."""
    words: list[str] = []
    word: list[str] = []
    started = False

    def end() -> None:
        nonlocal word, started
        if started:
            words.append("".join(word))
        word, started = [], False

    def variable(i: int) -> tuple[str, int]:
        """Expand the reference at text[i] == "$"; returns (value, index after it)."""
        if i + 1 < len(text) and text[i + 1] == "{":
            close = text.find("}", i + 2)
            if close < 0:
                raise InvalidArgument(f"missing '}}' in {text!r}")
            body = text[i + 2 : close]
            for op in (":-", ":+"):
                name, found, alt = body.partition(op)
                if found:
                    value = env.get(name, "")
                    use_alt = (not value) if op == ":-" else bool(value)
                    return (
                        "".join(_expand(alt, env, split=False)) if use_alt else value
                    ), close + 1
            if not body or not set(body) <= _NAME_CHARS:
                raise InvalidArgument(f"bad substitution ${{{body}}} in {text!r}")
            return env.get(body, ""), close + 1
        j = i + 1
        while j < len(text) and text[j] in _NAME_CHARS:
            j += 1
        if j == i + 1:
            return "$", j
        return env.get(text[i + 1 : j], ""), j

    i = 0
    while i < len(text):
        c = text[i]
        if c == "'":
            close = text.find("'", i + 1)
            if close < 0:
                raise InvalidArgument(f"unmatched quote in {text!r}")
            word.append(text[i + 1 : close])
            started, i = True, close + 1
        elif c == '"':
            started = True
            i += 1
            while True:
                if i >= len(text):
                    raise InvalidArgument(f"unmatched quote in {text!r}")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
                    word.append(text[i + 1])
                    i += 2
                elif c == "$":
                    value, i = variable(i)
                    word.append(value)
                else:
                    word.append(c)
                    i += 1
        elif c == "\\":
            started = True
            word.append(text[i + 1] if i + 1 < len(text) else "\\")
            i += 2
        elif c == "$":
            value, i = variable(i)
            if split:
                parts = value.split()
                if value[:1].isspace():
                    end()
                for k, part in enumerate(parts):
                    if k:
                        end()
                    word.append(part)
                    started = True
                if value[-1:].isspace():
                    end()
            else:
                word.append(value)
                started = started or bool(value)
        elif c.isspace() and split:
            end()
            i += 1
        else:
            word.append(c)
            started = True
            i += 1
    if split:
        end()
        return words
    return ["".join(word)]


def _word(text: str, env: dict[str, str]) -> str:
    return _expand(text, env, split=False)[0]


def _exec_form(rest: str) -> list[str] | None:
    """The JSON (exec) form of an argument list, or None if it is in shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _pairs(keyword: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """``KEY=VALUE ...`` (or the legacy ``KEY VALUE``) of ENV and LABEL, expanded."""
    words = _raw_words(rest)
    if "=" not in words[0]:
        key, *rest_of_line = rest.split(None, 1)
        if not rest_of_line:
            raise InvalidArgument(f"{keyword} {key} needs a value: {keyword} {key}=VALUE")
        return [(_word(key, env), _word(rest_of_line[0].strip(), env))]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgument(
                f"{keyword}: can't find = in {word!r}; must be of the form: name=value"
            )
        pairs.append((_word(key, env), _word(value, env)))
    return pairs


def _ports(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        spec, _, proto = word.partition("/")
        proto = proto.lower() or "tcp"
        first, dash, last = spec.partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise InvalidArgument(f"EXPOSE: invalid port {word!r}") from None
        if proto not in ("tcp", "udp", "sctp") or not 0 < lo <= hi <= 65535:
            raise InvalidArgument(f"EXPOSE: invalid port {word!r}")
        out.extend(f"{port}/{proto}" for port in range(lo, hi + 1))
    return out


def _check_signal(value: str) -> str:
    import signal

    if value.isdigit():
        if 0 < int(value) <= signal.SIGRTMAX:
            return value
    else:
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        base, sign, offset = name.partition("+") if "+" in name else name.partition("-")
        if base in signal.Signals.__members__ and not sign:
            return value
        if base in ("SIGRTMIN", "SIGRTMAX") and (not sign or offset.isdigit()):
            return value
    raise InvalidArgument(f"STOPSIGNAL: invalid signal {value!r}")


def apply_changes(config: dict[str, Any], changes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply Dockerfile instructions to an image's ``config`` object, as ``--change`` does.

    ``CMD``, ``ENTRYPOINT`` (JSON exec form, or shell form run by ``/bin/sh -c``), ``ENV``
    and ``LABEL`` (``K=V ...`` or the legacy ``K V``), ``EXPOSE``, ``VOLUME``, ``WORKDIR``
    (relative to the previous one), ``USER``, ``STOPSIGNAL`` and ``ONBUILD``. Variables
    (``$VAR``, ``${VAR}``, ``${VAR:-default}``) are expanded from the ``Env`` set so far,
    except in ``CMD`` and ``ENTRYPOINT``; as in a Dockerfile, ``ENTRYPOINT`` clears a ``Cmd``
    that no ``CMD`` of these changes set.

    Args:
        config: The ``config`` object of an image config (``Cmd``, ``Env``...); not changed.
        changes: One instruction per item, e.g. ``'CMD ["sh"]'``, ``"ENV A=1 B=2"``.

    Returns:
        A new ``config`` object.

    Raises:
        InvalidArgument: An instruction is unknown or malformed; the message names it.

    Example:
        >>> apply_changes({}, ["CMD echo hi", "ENV A=1"])
        {'Cmd': ['/bin/sh', '-c', 'echo hi'], 'Env': ['A=1']}
    """
    out = dict(config)
    cmd_set = False
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword not in CHANGE_INSTRUCTIONS:
            supported = ", ".join(CHANGE_INSTRUCTIONS)
            raise InvalidArgument(
                f"invalid change {change!r}: {keyword or 'nothing'} is not one of {supported}"
            )
        if not rest:
            raise InvalidArgument(f"invalid change {change!r}: {keyword} requires an argument")
        env_list = list(out.get("Env") or [])
        env = dict(e.partition("=")[::2] for e in env_list)
        try:
            if keyword in ("CMD", "ENTRYPOINT"):
                argv = _exec_form(rest)
                command = argv if argv is not None else ["/bin/sh", "-c", rest]
                if keyword == "CMD":
                    out["Cmd"], cmd_set = command, True
                else:
                    out["Entrypoint"] = command
                    if not cmd_set:
                        out["Cmd"] = None
            elif keyword == "ENV":
                for key, value in _pairs(keyword, rest, env):
                    env_list = [e for e in env_list if e.partition("=")[0] != key]
                    env_list.append(f"{key}={value}")
                out["Env"] = env_list
            elif keyword == "LABEL":
                labels = dict(out.get("Labels") or {})
                labels.update(_pairs(keyword, rest, env))
                out["Labels"] = labels
            elif keyword == "EXPOSE":
                ports = dict(out.get("ExposedPorts") or {})
                ports.update((p, {}) for p in _ports(_expand(rest, env, split=True)))
                out["ExposedPorts"] = ports
            elif keyword == "VOLUME":
                argv = _exec_form(rest)
                paths = argv if argv is not None else _expand(rest, env, split=True)
                if not paths or any(not p.strip() for p in paths):
                    raise InvalidArgument("VOLUME specified can not be an empty string")
                volumes = dict(out.get("Volumes") or {})
                volumes.update((p, {}) for p in paths)
                out["Volumes"] = volumes
            elif keyword == "WORKDIR":
                path = _word(rest, env)
                out["WorkingDir"] = posixpath.normpath(
                    posixpath.join("/", out.get("WorkingDir") or "/", path)
                )
            elif keyword == "USER":
                out["User"] = _word(rest, env)
            elif keyword == "STOPSIGNAL":
                out["StopSignal"] = _check_signal(_word(rest, env))
            else:  # ONBUILD
                trigger, _, args = rest.partition(" ")
                if trigger.upper() in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise InvalidArgument(f"{trigger.upper()} isn't allowed as an ONBUILD trigger")
                out["OnBuild"] = [*(out.get("OnBuild") or []), f"{trigger.upper()} {args}".strip()]
        except InvalidArgument as e:
            message = str(e)
            if not message.startswith(keyword):
                message = f"{keyword}: {message}"
            raise InvalidArgument(f"invalid change {change!r}: {message}") from None
    return out


# -- the default image ------------------------------------------------------------------------


def _pack_tree(root: str, mtime: int, out: str) -> tuple[str, str]:
    """Pack a tree as a gzip layer into ``out``, every mtime set to ``mtime`` first (so that
    the same tree gives the same bytes); returns ``(blob digest, diff ID)``."""
    from kobako import _native

    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        digest, diff_id, _ = _native.pack_layer(root, fd, compression="gzip")
    finally:
        os.close(fd)
    return digest, diff_id


def default_image(store: Store) -> ImageRecord:
    """The image named ``busybox:latest``, built from the host's busybox-static if missing.

    kobako works offline and ships no image: this one, a static busybox with its applets
    and the /etc files a container expects (:func:`kobako.fixtures.busybox_rootfs`), makes
    the README's first ``kobako run`` work on a fresh machine. It is built the same way each
    time (every mtime is the binary's), so two builds from one busybox have one image ID.

    Returns:
        The image (the store's ``busybox:latest``, whatever it is, if it has one).

    Raises:
        NotFound: The host has no static busybox at /bin/busybox.
    """

    from kobako.fixtures import busybox_rootfs

    try:
        return store.image(DEFAULT_IMAGE)
    except ImageNotFound:
        pass
    with store.stage() as stage:
        rootfs = os.path.join(stage.path, "rootfs")
        try:
            busybox_rootfs(rootfs)
        except NotFound:
            raise NotFound(
                f"cannot build the default image {DEFAULT_IMAGE}: no static busybox at "
                "/bin/busybox; apt-get install busybox-static"
            ) from None
        mtime = int(os.stat(os.path.join(rootfs, "bin", "busybox")).st_mtime)
        packed = os.path.join(stage.path, "layer.tar.gz")
        digest, diff_id = _pack_tree(rootfs, mtime, packed)
        with open(packed, "rb") as f:
            blob = stage.add_blob(f, digest)
        stage.add_layer(blob.digest, diff_id, diff_id)
        created = _rfc3339(mtime)
        doc = {
            **_platform_fields(),
            "created": created,
            "config": {
                "Cmd": ["sh"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Labels": {"org.opencontainers.image.source": DEFAULT_IMAGE_SOURCE},
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [
                {
                    "created": created,
                    "created_by": f"{DEFAULT_IMAGE_SOURCE} (/bin/busybox)",
                    "comment": "the offline default image: busybox, its applets and /etc files",
                }
            ],
        }
        c = stage.add_blob(canonical(doc))
        layer = Descriptor(digest=blob.digest, size=blob.size, media_type=layer_media_type("gzip"))
        config = Descriptor(digest=c.digest, size=c.size, media_type=OCI_CONFIG)
        m = stage.add_blob(manifest_json(config, [layer]))
        stage.commit(manifest_digest=m.digest, tags=[DEFAULT_IMAGE])
    return store.image(m.digest)
