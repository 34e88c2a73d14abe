"""The content-addressed image store: blobs by digest, an index of names, layer directories.

The layout is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``) with
kobako's own directories beside it, as containerd's content store keeps its blobs::

    ROOT/                   $KOBAKO_ROOT, else /var/lib/kobako
      oci-layout            {"imageLayoutVersion": "1.0.0"}
      index.json            the tagged manifests (annotation org.opencontainers.image.ref.name)
      blobs/sha256/HEX      manifests, configs and layer blobs, read-only, named by digest
      layers/HEX            extracted layers, named by chain ID
      tmp/                  writes in progress; each entry is flock()ed by its writer
      locks/                index.lock, and one lock per digest while a blob is written

What keeps it whole, under concurrency and crashes:

- A blob is streamed into ``tmp/`` while it is hashed, checked against the digest it should
  have, fsynced and only then linked under its name: a blob is visible whole or not at all,
  and a blob already there is never replaced. Two writers of the same (expected) digest take
  its lock in turn, so the second finds the blob written; no store-wide lock is held while
  a blob streams.
- ``index.json`` is rewritten whole (temporary file, fsync, rename, fsync of the directory)
  under an exclusive lock on ``locks/index.lock``; readers take it shared.
- A writer holds an exclusive ``flock`` on its entry in ``tmp/`` for as long as it works on
  it; the kernel drops the lock when the writer dies, however it dies. :meth:`Store.open`
  removes every entry of ``tmp/`` whose lock is free: what a killed command left.
"""

from __future__ import annotations

import fcntl
import os
import stat

from kobako._record import Record
from kobako.errors import DigestMismatch, ImageNotFound, InvalidArgument, NotFound
from kobako.image.manifest import Descriptor
from kobako.image.reference import parse

TYPE_CHECKING = False  # typing is slow to import; type checkers treat this as True
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, BinaryIO, Protocol

    from kobako.image.manifest import ImageConfig, Manifest

    class Readable(Protocol):
        """A binary stream: what :meth:`Store.ingest` reads."""

        def read(self, size: int = -1, /) -> bytes: ...


__all__ = [
    "DEFAULT_ROOT",
    "Collected",
    "Descriptor",
    "DigestMismatch",
    "Layer",
    "Stage",
    "Store",
    "Tag",
    "default_root",
]

#: Where the store lives when neither ``--root`` nor ``$KOBAKO_ROOT`` says otherwise.
DEFAULT_ROOT = "/var/lib/kobako"

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class Tag(Record):
    """An entry of the index: a manifest (or image index) and the name it has, if any.

    Attributes:
        name: The full image name with its tag, e.g. ``"docker.io/library/busybox:latest"``,
            or None for an image that has lost its names (Docker's ``<none>:<none>``).
        digest: The manifest's (or image index's) digest.
        size: The manifest's size in bytes.
        media_type: The manifest's media type.
    """

    name: str | None
    digest: str
    size: int
    media_type: str


class ImageRecord(Record):
    """An image in the store: its manifest, its config and the names it has.

    Attributes:
        id: The image ID, the digest of its config (as Docker shows it).
        manifest_digest: The digest of the index entry (a manifest, or an image index).
        manifest: The image manifest for this platform.
        config: The parsed config.
        names: Its names in full form (``docker.io/library/busybox:latest``), sorted.
    """

    id: str
    manifest_digest: str
    manifest: Manifest
    config: ImageConfig
    names: tuple[str, ...]


class Collected(Record):
    """What a collection removed.

    Attributes:
        blobs: The digests of the blobs removed.
        layers: The chain IDs of the layers removed.
        freed: Bytes freed (blob sizes plus layer sizes).
        skipped: True if the collection did not run because the store was busy.
    """

    blobs: tuple[str, ...]
    layers: tuple[str, ...]
    freed: int
    skipped: bool = False


class Layer(Record):
    """An extracted layer in the store.

    Attributes:
        chain_id: The layer's chain ID (its name in ``layers/``).
        diff_id: The digest of its uncompressed tar.
        path: The directory holding its files (an overlayfs lower dir).
        size: The bytes its files take (apparent sizes of regular files and symlinks).
    """

    chain_id: str
    diff_id: str
    path: str
    size: int


def default_root() -> str:
    """The store's root: ``$KOBAKO_ROOT`` if set and not empty, else :data:`DEFAULT_ROOT`."""
    return os.environ.get("KOBAKO_ROOT") or DEFAULT_ROOT


def _hex(digest: str) -> str:
    """The hex part of a sha256 digest, checked."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or not set(hexpart) <= _HEX:
        raise InvalidArgument(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return hexpart


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _same_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it may have been unlinked)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


class _Lock:
    """An ``flock`` on a lock file, held inside a ``with`` block.

    A lock made with ``remove=True`` unlinks its file when released, so per-digest lock files
    do not pile up; a taker that then finds its file unlinked under it starts over.
    """

    def __init__(
        self, path: str, *, shared: bool = False, remove: bool = False, wait: bool = True
    ) -> None:
        self._path = path
        self._op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        self._remove = remove and not shared
        self._fd = -1

    def __enter__(self) -> None:
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, self._op)
            except BaseException:
                os.close(fd)
                raise
            if _same_file(self._path, fd):
                self._fd = fd
                return
            os.close(fd)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._remove:
            os.unlink(self._path)
        os.close(self._fd)
        self._fd = -1


class Store:
    """kobako's image store under one root directory.

    Make one with :meth:`open`, which creates the layout and cleans what crashed commands
    left; the constructor only remembers the paths.

    Args:
        root: The store's root directory.

    Example:
        >>> store = Store.open(tmp)  # doctest: +SKIP
        >>> desc = store.ingest(b'{"schemaVersion": 2}')  # doctest: +SKIP
        >>> store.read_blob(desc.digest)  # doctest: +SKIP
        b'{"schemaVersion": 2}'
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._blobs = os.path.join(self.root, "blobs", "sha256")
        self._layers = os.path.join(self.root, "layers")
        self._tmp = os.path.join(self.root, "tmp")
        self._locks = os.path.join(self.root, "locks")
        self._leases = os.path.join(self.root, "leases")
        self._index = os.path.join(self.root, "index.json")

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    @classmethod
    def open(cls, root: str | None = None) -> Store:
        """Open the store at ``root``, creating its layout and removing stale temporary files.

        Args:
            root: The root directory; :func:`default_root` if None.

        Returns:
            The store.
        """
        store = cls(default_root() if root is None else root)
        os.makedirs(store.root, mode=0o711, exist_ok=True)
        for path in (store._blobs, store._layers, store._tmp, store._locks, store._leases):
            os.makedirs(path, mode=0o700, exist_ok=True)
        layout = os.path.join(store.root, "oci-layout")
        if not os.path.exists(layout):
            store._replace(layout, b'{"imageLayoutVersion":"1.0.0"}')
        if not os.path.exists(store._index):
            with store._index_lock(shared=False):
                if not os.path.exists(store._index):
                    store._write_index([])
        store.cleanup()
        return store

    # -- paths --------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        """The path a blob has (or would have) in the store.

        Raises:
            InvalidArgument: ``digest`` is not a sha256 digest.
        """
        return os.path.join(self._blobs, _hex(digest))

    def layer_path(self, chain_id: str) -> str:
        """The directory an extracted layer has (or would have), named by its chain ID.

        Raises:
            InvalidArgument: ``chain_id`` is not a sha256 digest.
        """
        return os.path.join(self._layers, _hex(chain_id))

    # -- blobs --------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        """Whether the store holds the blob ``digest``."""
        return os.path.exists(self.blob_path(digest))

    def ingest(
        self, data: bytes | bytearray | memoryview | Readable, expected_digest: str | None = None
    ) -> Descriptor:
        """Store a blob, hashing it as it is written; visible only once whole and checked.

        Args:
            data: The content, or a binary stream to read to its end.
            expected_digest: The digest the content must have. When given, a blob already
                stored under it is kept and ``data`` is not read, and two processes writing
                it at once write it once.

        Returns:
            The blob's digest and size.

        Raises:
            InvalidArgument: ``expected_digest`` is not a sha256 digest.
            DigestMismatch: The content does not have ``expected_digest``; nothing is kept.
        """
        if expected_digest is None:
            return self._write_blob(data, None)
        hexpart = _hex(expected_digest)
        with _Lock(os.path.join(self._locks, f"sha256-{hexpart}"), remove=True):
            try:
                size = os.stat(os.path.join(self._blobs, hexpart)).st_size
                return Descriptor(digest=expected_digest, size=size)
            except FileNotFoundError:
                return self._write_blob(data, expected_digest)

    def _write_blob(
        self, data: bytes | bytearray | memoryview | Readable, expected: str | None
    ) -> Descriptor:

        path, fd = self._temp_file("blob-")
        try:
            digest, size = _write_hashed(fd, data)
            if expected is not None and digest != expected:
                raise DigestMismatch(expected, digest)
            os.fchmod(fd, 0o444)
            os.fsync(fd)
            try:
                os.link(path, os.path.join(self._blobs, digest[7:]))
            except FileExistsError:
                pass  # the same content, written by someone else: keep theirs
            else:
                _fsync_dir(self._blobs)
            return Descriptor(digest=digest, size=size)
        finally:
            os.unlink(path)  # before the lock goes, so cleanup never sees it unlocked
            os.close(fd)

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a blob for reading (not verified: see :meth:`verify`).

        Returns:
            A binary file object; close it (or use it in a ``with`` block).

        Raises:
            NotFound: The store has no such blob.
        """
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"no such blob: {digest}") from None

    def read_blob(self, digest: str) -> bytes:
        """A blob's content (not verified: see :meth:`verify`).

        Raises:
            NotFound: The store has no such blob.
        """
        with self.open_blob(digest) as f:
            return f.read()

    def verify(self, digest: str) -> Descriptor:
        """Hash a stored blob again and check it still has its digest.

        Returns:
            The blob's digest and size.

        Raises:
            NotFound: The store has no such blob.
            DigestMismatch: The blob's content has changed on disk.
        """
        import hashlib

        sha = hashlib.sha256()
        size = 0
        with self.open_blob(digest) as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        actual = "sha256:" + sha.hexdigest()
        if actual != digest:
            raise DigestMismatch(digest, actual, f"blob {digest} is corrupt: it hashes to {actual}")
        return Descriptor(digest=digest, size=size)

    def remove_blob(self, digest: str) -> None:
        """Delete a blob (whether anything still refers to it is the caller's business).

        Raises:
            NotFound: The store has no such blob.
        """
        hexpart = _hex(digest)
        with _Lock(os.path.join(self._locks, f"sha256-{hexpart}"), remove=True):
            try:
                os.unlink(os.path.join(self._blobs, hexpart))
            except FileNotFoundError:
                raise NotFound(f"no such blob: {digest}") from None
            _fsync_dir(self._blobs)

    def blobs(self) -> list[str]:
        """The digests of every stored blob, sorted."""
        return sorted(f"sha256:{name}" for name in os.listdir(self._blobs) if len(name) == 64)

    # -- names --------------------------------------------------------------------------

    def tag(self, name: str, manifest_digest: str) -> Tag:
        """Point ``name`` at a stored manifest (or image index), replacing what it named.

        An image that loses its last name this way stays in the index without one (Docker's
        dangling ``<none>:<none>`` image) until it is removed or pruned.

        Args:
            name: An image name; normalised as Docker does (``busybox`` is
                ``docker.io/library/busybox:latest``).
            manifest_digest: The manifest's digest; the blob must be in the store.

        Returns:
            The index entry written.

        Raises:
            InvalidArgument: The name or digest is malformed, or the blob is not a manifest.
            NotFound: The store has no such blob.
        """
        ref = _tag_name(name)
        entry = self._entry_for(manifest_digest, ref)
        with self._index_lock(shared=False):
            entries = self._read_index()
            old = [e.digest for e in entries if e.name == ref and e.digest != manifest_digest]
            entries = [e for e in entries if e.name != ref]
            entries = [e for e in entries if not (e.name is None and e.digest == manifest_digest)]
            entries.append(entry)
            for digest in old:
                if not any(e.digest == digest for e in entries):
                    entries.append(self._entry_for(digest, None))
            self._write_index(entries)
        return entry

    def add_unnamed(self, manifest_digest: str) -> Tag:
        """Keep a stored manifest in the index without a name (unless it already has one).

        Raises:
            InvalidArgument: The blob is not a manifest.
            NotFound: The store has no such blob.
        """
        entry = self._entry_for(manifest_digest, None)
        with self._index_lock(shared=False):
            entries = self._read_index()
            for e in entries:
                if e.digest == manifest_digest:
                    return e
            entries.append(entry)
            self._write_index(entries)
        return entry

    def untag(self, name: str, *, keep_unnamed: bool = False) -> Tag:
        """Remove a name from the index (the blobs stay until collected).

        Args:
            name: The image name.
            keep_unnamed: If that was the image's last name, keep the image as an unnamed
                entry rather than dropping it from the index.

        Returns:
            The entry removed.

        Raises:
            InvalidArgument: The name is malformed.
            NotFound: No image has that name.
        """
        ref = _tag_name(name)
        with self._index_lock(shared=False):
            entries = self._read_index()
            gone = [e for e in entries if e.name == ref]
            if not gone:
                raise ImageNotFound(f"No such image: {_familiar(ref)}")
            kept = [e for e in entries if e.name != ref]
            digest = gone[0].digest
            if keep_unnamed and not any(e.digest == digest for e in kept):
                kept.append(gone[0].replace(name=None))
            self._write_index(kept)
        return gone[0]

    def forget(self, manifest_digest: str) -> list[Tag]:
        """Drop every index entry of a manifest, named or not; returns them."""
        with self._index_lock(shared=False):
            entries = self._read_index()
            gone = [e for e in entries if e.digest == manifest_digest]
            if gone:
                self._write_index([e for e in entries if e.digest != manifest_digest])
        return gone

    def resolve(self, name: str) -> str:
        """The digest of the manifest an image name points to.

        Raises:
            InvalidArgument: The name is malformed.
            NotFound: No image has that name.
        """
        ref = _tag_name(name)
        for entry in self.list_images():
            if entry.name == ref:
                return entry.digest
        raise ImageNotFound(f"No such image: {_familiar(ref)}")

    def list_images(self) -> list[Tag]:
        """Every entry of the index, named ones sorted by name, then the unnamed ones."""
        with self._index_lock(shared=True):
            entries = self._read_index()
        return sorted(entries, key=lambda e: (e.name is None, e.name or "", e.digest))

    def images(self) -> list[ImageRecord]:
        """Every image in the index, one per manifest, named ones first (sorted by name).

        Entries whose blobs are missing or malformed are skipped.
        """
        from kobako.image.manifest import parse_config

        names: dict[str, list[str]] = {}
        for entry in self.list_images():
            names.setdefault(entry.digest, [])
            if entry.name is not None:
                names[entry.digest].append(entry.name)
        out = []
        for digest, tags in names.items():
            try:
                manifest = self.manifest(digest)
                config = parse_config(self.read_blob(manifest.config.digest))
            except (NotFound, InvalidArgument):
                continue
            out.append(
                ImageRecord(
                    id=manifest.config.digest,
                    manifest_digest=digest,
                    manifest=manifest,
                    config=config,
                    names=tuple(sorted(tags)),
                )
            )
        return out

    def image(self, ref: str) -> ImageRecord:
        """Find an image by name, ID, unique ID prefix or manifest digest, as Docker does.

        Raises:
            ImageNotFound: Nothing matches.
            InvalidArgument: An ID prefix matches several images.
        """
        images = self.images()
        name: str | None
        try:
            parsed = parse(ref)
        except InvalidArgument:
            name = None
        else:
            name = str(parsed.replace(digest=None)) if parsed.digest is None else None
            if parsed.digest is not None:
                for image in images:
                    if image.manifest_digest == parsed.digest or image.id == parsed.digest:
                        return image
        if name is not None:
            for image in images:
                if name in image.names:
                    return image
        prefix = ref.removeprefix("sha256:")
        if prefix and set(prefix) <= _HEX:
            matches = {
                image.id: image
                for image in images
                if image.id[7:].startswith(prefix) or image.manifest_digest[7:] == prefix
            }
            if len(matches) == 1:
                return next(iter(matches.values()))
            if len(matches) > 1:
                raise InvalidArgument(f"image ID prefix {ref!r} is ambiguous")
        raise ImageNotFound(f"No such image: {ref}")

    def _entry_for(self, manifest_digest: str, name: str | None) -> Tag:
        from kobako.image.manifest import document_type

        content = self.read_blob(manifest_digest)
        try:
            media_type = document_type(content)
        except InvalidArgument:
            raise InvalidArgument(f"blob {manifest_digest} is not a manifest") from None
        return Tag(name=name, digest=manifest_digest, size=len(content), media_type=media_type)

    # -- manifests and layers -----------------------------------------------------------

    def manifest(self, digest: str, platform: tuple[str, str, str] | None = None) -> Manifest:
        """The image manifest a stored manifest or image index stands for on a platform.

        Raises:
            NotFound: A blob is missing, or the index has nothing for the platform.
            InvalidArgument: A document is malformed.
        """
        from kobako.image.manifest import (
            INDEX_TYPES,
            document_type,
            parse_index,
            parse_manifest,
            select_platform,
        )

        content = self.read_blob(digest)
        for _ in range(4):  # an index may point to an index; not forever
            if document_type(content) not in INDEX_TYPES:
                return parse_manifest(content)
            desc = select_platform(parse_index(content), platform)
            content = self.read_blob(desc.digest)
        raise InvalidArgument(f"image index {digest} nests too deeply")

    def layer(self, chain_id: str) -> Layer | None:
        """The extracted layer with that chain ID, or None if it is not in the store."""
        path = self.layer_path(chain_id)
        try:
            with open(os.path.join(path, "layer.json"), "rb") as f:
                meta = _json_loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Layer(
            chain_id=chain_id,
            diff_id=meta["diff_id"],
            path=os.path.join(path, "diff"),
            size=meta.get("size", 0),
        )

    def layers(self) -> list[str]:
        """The chain IDs of every extracted layer, sorted."""
        return sorted(f"sha256:{n}" for n in os.listdir(self._layers) if len(n) == 64)

    def ensure_layers(self, manifest: Manifest, config: ImageConfig) -> list[Layer]:
        """The image's layers, bottom first, extracting from stored blobs any that are missing.

        Raises:
            LayerError: A layer cannot be extracted (nothing of it is kept).
            DigestMismatch: A layer blob's content or diff ID is not what the image says.
            NotFound: A layer blob is missing.
        """
        from kobako.image.manifest import chain_ids

        if len(manifest.layers) != len(config.diff_ids):
            raise InvalidArgument(
                f"image has {len(manifest.layers)} layers but its config lists "
                f"{len(config.diff_ids)} diff IDs"
            )
        chains = chain_ids(config.diff_ids)
        out: list[Layer] = []
        stage: Stage | None = None
        try:
            for desc, diff_id, chain in zip(manifest.layers, config.diff_ids, chains, strict=True):
                layer = self.layer(chain)
                if layer is None:
                    if stage is None:
                        stage = self.stage()
                    stage.add_layer(desc.digest, diff_id, chain)
                    layer = stage.commit_layer(chain)
                out.append(layer)
        finally:
            if stage is not None:
                stage.close()
        return out

    def image_size(self, manifest: Manifest, config: ImageConfig) -> int:
        """The bytes an image's extracted layers take (layers not extracted count as 0)."""
        from kobako.image.manifest import chain_ids

        total = 0
        for chain in chain_ids(config.diff_ids):
            layer = self.layer(chain)
            total += layer.size if layer else 0
        del manifest
        return total

    def stage(self) -> Stage:
        """Begin staging blobs and layers that become visible together (see :class:`Stage`)."""
        return Stage(self)

    # -- leases and garbage collection --------------------------------------------------

    def lease(self, holder: str, manifest_digest: str) -> None:
        """Keep an image's blobs and layers from collection while ``holder`` (a container) lives.

        Taken under the collection lock, so a collection running now cannot remove what the
        image needs after the caller checked it is there.
        """
        with self._gc_lock(shared=True):
            path = os.path.join(self._leases, holder)
            self._replace(path, manifest_digest.encode())

    def release(self, holder: str) -> None:
        """Drop a lease (missing leases are ignored)."""
        try:  # noqa: SIM105 (contextlib is slow to import)
            os.unlink(os.path.join(self._leases, holder))
        except FileNotFoundError:
            pass

    def leases(self) -> dict[str, str]:
        """Every lease: holder → manifest digest."""
        out = {}
        for name in os.listdir(self._leases):
            try:
                with open(os.path.join(self._leases, name), "rb") as f:
                    out[name] = f.read().decode().strip()
            except FileNotFoundError:
                continue
        return out

    def collect(self, *, wait: bool = True) -> Collected:
        """Remove every blob and layer that no index entry and no lease leads to.

        Args:
            wait: Wait for commands that are adding to the store; if False and one is,
                collect nothing (and say so in the result).

        Returns:
            What was removed and the bytes freed.
        """
        from kobako.image.manifest import chain_ids, parse_config

        lock = self._gc_lock(shared=False, wait=wait)
        try:
            lock.__enter__()
        except BlockingIOError:
            return Collected(blobs=(), layers=(), freed=0, skipped=True)
        try:
            roots = [e.digest for e in self.list_images()] + list(self.leases().values())
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for root in roots:
                keep_blobs.update(self._reachable(root))
                try:
                    manifest = self.manifest(root)
                    config = parse_config(self.read_blob(manifest.config.digest))
                except (NotFound, InvalidArgument):
                    continue
                keep_layers.update(chain_ids(config.diff_ids))
            freed = 0
            blobs = []
            for digest in self.blobs():
                if digest not in keep_blobs:
                    try:
                        freed += os.stat(self.blob_path(digest)).st_size
                        self.remove_blob(digest)
                    except (FileNotFoundError, NotFound):
                        continue
                    blobs.append(digest)
            layers = []
            for chain in self.layers():
                if chain not in keep_layers:
                    layer = self.layer(chain)
                    freed += layer.size if layer else 0
                    self._remove_layer(chain)
                    layers.append(chain)
            links = os.path.join(self.root, "l")
            for name in os.listdir(links) if os.path.isdir(links) else ():
                link = os.path.join(links, name)
                if not os.path.exists(link):  # the layer it named is gone
                    os.unlink(link)
            return Collected(blobs=tuple(blobs), layers=tuple(layers), freed=freed)
        finally:
            lock.__exit__(None, None, None)

    def unreferenced_blobs(self) -> list[str]:
        """The blobs no index entry or lease leads to, sorted (what :meth:`collect` removes)."""
        seen: set[str] = set()
        for root in [e.digest for e in self.list_images()] + list(self.leases().values()):
            seen.update(self._reachable(root))
        return [d for d in self.blobs() if d not in seen]

    def _reachable(self, digest: str) -> set[str]:
        """The blobs a manifest or index leads to (itself included).

        OCI and Docker (v2 schema 2) media types are both followed. A referenced blob the
        store lacks is skipped, so a partly stored image does not stop a collection.
        """
        from kobako.image.manifest import INDEX_TYPES, MANIFEST_TYPES

        seen: set[str] = set()
        todo = [digest]
        while todo:
            digest = todo.pop()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                doc = _json_loads(self.read_blob(digest))
            except (NotFound, InvalidArgument, ValueError):
                continue
            if not isinstance(doc, dict):
                continue
            media_type = doc.get("mediaType")
            if media_type in INDEX_TYPES or (media_type is None and "manifests" in doc):
                todo.extend(_digests(list(doc.get("manifests") or ())))
            elif media_type in MANIFEST_TYPES or (media_type is None and "config" in doc):
                children = [doc.get("config"), *(doc.get("layers") or ())]
                seen.update(_digests(children))  # configs and layers refer to nothing else
        return seen

    def _remove_layer(self, chain_id: str) -> None:
        """Remove an extracted layer: renamed into ``tmp/`` first, so it vanishes at once."""
        import shutil

        path = self.layer_path(chain_id)
        doomed = os.path.join(self._tmp, "gone-" + os.urandom(8).hex())
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    # -- temporary files and cleanup ----------------------------------------------------

    def cleanup(self) -> int:
        """Remove what commands that died left: unlocked entries of ``tmp/``, stale locks.

        Every writer holds its entry in ``tmp/`` (and a per-digest lock file) locked while
        it works, and the kernel drops those locks when it dies, so a free lock means an
        abandoned entry, whatever its age.

        Returns:
            How many entries of ``tmp/`` were removed.
        """
        tmp = self._tmp
        removed = sum(_remove_if_unlocked(os.path.join(tmp, n)) for n in os.listdir(tmp))
        for name in os.listdir(self._locks):
            if name.startswith("sha256-"):
                _remove_if_unlocked(os.path.join(self._locks, name))
        return removed

    def _temp_file(self, prefix: str) -> tuple[str, int]:
        """A new file in ``tmp/``, open and locked; unlink it before closing it."""
        while True:
            path = os.path.join(self._tmp, prefix + os.urandom(8).hex())
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # a cleanup may have locked and unlinked it between our open and our flock
            if _same_file(path, fd):
                return path, fd
            os.close(fd)

    def _replace(self, path: str, content: bytes) -> None:
        """Write a file whole or not at all: temporary file, fsync, rename, fsync the dir."""
        tmp, fd = self._temp_file("file-")
        try:
            _write_all(fd, content)
            os.fchmod(fd, 0o644)
            os.fsync(fd)
            os.rename(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(path))

    # -- the index ----------------------------------------------------------------------

    def _index_lock(self, *, shared: bool) -> _Lock:
        return _Lock(os.path.join(self._locks, "index.lock"), shared=shared)

    def _gc_lock(self, *, shared: bool, wait: bool = True) -> _Lock:
        """Taken shared by whatever adds to the store, exclusively by a collection."""
        return _Lock(os.path.join(self._locks, "gc.lock"), shared=shared, wait=wait)

    def _read_index(self) -> list[Tag]:
        """The tagged entries of ``index.json`` (call with the index lock held)."""
        import json

        try:
            with open(self._index, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return []
        entries = []
        for m in doc.get("manifests") or ():
            name = (m.get("annotations") or {}).get(REF_NAME)
            entries.append(
                Tag(
                    name=_stored_name(name) if isinstance(name, str) else None,
                    digest=m["digest"],
                    size=m["size"],
                    media_type=m.get("mediaType", OCI_MANIFEST),
                )
            )
        return entries

    def _write_index(self, entries: list[Tag]) -> None:
        """Rewrite ``index.json`` atomically (call with the index lock held exclusively)."""
        import json

        manifests = []
        for e in sorted(entries, key=lambda e: (e.name is None, e.name or "", e.digest)):
            m: dict[str, Any] = {"mediaType": e.media_type, "digest": e.digest, "size": e.size}
            if e.name is not None:
                m["annotations"] = {REF_NAME: e.name}
            manifests.append(m)
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        self._replace(self._index, json.dumps(doc, indent=2).encode() + b"\n")


def _digests(descriptors: list[Any]) -> list[str]:
    return [d["digest"] for d in descriptors if isinstance(d, dict) and "digest" in d]


def _remove_if_unlocked(path: str) -> bool:
    """Remove a file or directory tree unless someone holds it ``flock``ed."""
    try:
        # O_NONBLOCK: a fifo left here must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:  # a symlink (ELOOP) or a device we may not open: never a writer's
        os.unlink(path)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        if not _same_file(path, fd):
            return False
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            import shutil

            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True
    finally:
        os.close(fd)


class Stage:
    """Blobs and extracted layers written aside, then put in the store in one step.

    A stage is a directory in ``tmp/`` that its writer holds ``flock``ed: if the command
    dies, the next :meth:`Store.open` removes it, and the store shows nothing of it. While
    blobs stream in and layers extract, other commands add to the store freely; the stage
    holds the collection lock *shared* from start to close, so that a collection (which
    takes it exclusively) cannot remove a blob or layer between the moment the stage finds
    it present (and relies on it instead of fetching it again) and the moment a name leads
    to it. ``rmi`` then leaves the collecting to a later command rather than wait; ``prune``
    waits. :meth:`commit` links each blob and renames each layer into place, keeping what
    another writer put there first.

    Use it as a context manager, or call :meth:`close`::

        with store.stage() as stage:
            desc = stage.add_blob(stream)
            stage.add_layer(desc.digest, diff_id, chain_id)
            stage.commit(tags=["app:1"], manifest_digest=manifest)
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._gc = store._gc_lock(shared=True)
        self._gc.__enter__()
        try:
            while True:
                path = os.path.join(store._tmp, "stage-" + os.urandom(8).hex())
                os.mkdir(path, 0o700)
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(path, fd):
                    break
                os.close(fd)
        except BaseException:
            self._gc.__exit__(None, None, None)
            raise
        self.path = path
        self._fd = fd
        self._blobs = os.path.join(path, "blobs")
        self._layers = os.path.join(path, "layers")
        os.mkdir(self._blobs)
        os.mkdir(self._layers)
        self._staged_blobs: dict[str, int] = {}
        self._staged_layers: dict[str, Layer] = {}

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove what was staged and not committed."""
        import shutil

        if self._fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = -1
        self._gc.__exit__(None, None, None)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is staged or already in the store."""
        return digest in self._staged_blobs or self._store.has_blob(digest)

    def blob_path(self, digest: str) -> str:
        """Where to read a blob: the staged copy, else the store's."""
        if digest in self._staged_blobs:
            return os.path.join(self._blobs, _hex(digest))
        return self._store.blob_path(digest)

    def read_blob(self, digest: str) -> bytes:
        """A staged or stored blob's content.

        Raises:
            NotFound: Neither has it.
        """
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"no such blob: {digest}") from None

    def add_blob(
        self,
        data: bytes | bytearray | memoryview | Readable,
        expected_digest: str | None = None,
    ) -> Descriptor:
        """Stage a blob, hashing it as it is written (not read at all if already stored).

        Raises:
            DigestMismatch: The content does not have ``expected_digest``; nothing is kept.
        """

        if expected_digest is not None and self.has_blob(expected_digest):
            path = self.blob_path(expected_digest)
            return Descriptor(digest=expected_digest, size=os.stat(path).st_size)
        tmp = os.path.join(self._blobs, "incoming-" + os.urandom(8).hex())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            digest, size = _write_hashed(fd, data)
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatch(expected_digest, digest)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        if self.has_blob(digest):
            os.unlink(tmp)
        else:
            os.rename(tmp, os.path.join(self._blobs, digest[7:]))
            self._staged_blobs[digest] = size
        return Descriptor(digest=digest, size=size)

    def add_layer(
        self, blob_digest: str, diff_id: str | None, chain_id: str | None = None
    ) -> Layer:
        """Extract a staged or stored layer blob (unless the store already has the layer).

        Args:
            blob_digest: The layer blob (checked against its digest while it extracts).
            diff_id: The digest its uncompressed tar must have, or None to accept any (its
                chain ID is then computed as for a bottom layer unless ``chain_id`` is given).
            chain_id: The layer's chain ID; ``diff_id`` for a bottom layer if None.

        Returns:
            The layer (as it will be once committed, or as it is in the store).

        Raises:
            LayerError: An entry is hostile or corrupt, or the stream is truncated.
            DigestMismatch: The blob or its tar does not hash as it should.
        """
        if chain_id is not None and (existing := self._layer(chain_id)) is not None:
            return existing
        try:
            fd = os.open(self.blob_path(blob_digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no such blob: {blob_digest}") from None
        try:
            return self._extract(fd, blob_digest, diff_id, chain_id, None)
        finally:
            os.close(fd)

    def add_layer_stream(
        self, source_fd: int, blob_digest: str, diff_id: str | None, chain_id: str | None = None
    ) -> Layer:
        """Extract a layer blob as it streams in from ``source_fd``, staging the blob too.

        The blob is written to the stage as it is read (it is what ``save`` and ``push``
        send later), checked against ``blob_digest`` in the same pass, and kept only if it
        matches. ``source_fd`` is read to its end (a pipe a download writes into, say).

        Raises:
            LayerError: An entry is hostile or corrupt, or the stream is truncated.
            DigestMismatch: The blob or its tar does not hash as it should.
        """
        tmp = os.path.join(self._blobs, "incoming-" + os.urandom(8).hex())
        tee = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            layer = self._extract(source_fd, blob_digest, diff_id, chain_id, tee)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(tee)
        if self.has_blob(blob_digest):
            os.unlink(tmp)
        else:
            staged = os.path.join(self._blobs, _hex(blob_digest))
            os.rename(tmp, staged)
            self._staged_blobs[blob_digest] = os.stat(staged).st_size
        return layer

    def _extract(
        self,
        fd: int,
        blob_digest: str,
        diff_id: str | None,
        chain_id: str | None,
        tee_fd: int | None,
    ) -> Layer:
        from kobako import _native

        work = os.path.join(self._layers, "incoming-" + os.urandom(8).hex())
        diff = os.path.join(work, "diff")
        os.mkdir(work, 0o700)
        os.mkdir(diff, 0o755)
        try:
            digest, actual_diff_id, _, _, size = _native.extract_layer(
                fd, diff, blob_digest, tee_fd=tee_fd
            )
            if digest != blob_digest:
                raise DigestMismatch(
                    blob_digest, digest, f"layer {blob_digest} is corrupt: it hashes to {digest}"
                )
            if diff_id is not None and actual_diff_id != diff_id:
                raise DigestMismatch(
                    diff_id,
                    actual_diff_id,
                    f"layer {blob_digest}: its tar hashes to {actual_diff_id}, "
                    f"but the image config says {diff_id}",
                )
        except BaseException:
            _remove_tree(work)
            raise
        chain = chain_id or actual_diff_id
        if (existing := self._layer(chain)) is not None:
            _remove_tree(work)
            return existing
        meta = {"chain_id": chain, "diff_id": actual_diff_id, "blob": blob_digest, "size": size}
        with open(os.path.join(work, "layer.json"), "wb") as f:
            f.write(_json_dumps(meta))
        os.rename(work, os.path.join(self._layers, _hex(chain)))
        layer = Layer(
            chain_id=chain,
            diff_id=actual_diff_id,
            path=os.path.join(self._store.layer_path(chain), "diff"),
            size=size,
        )
        self._staged_layers[chain] = layer
        return layer

    def _layer(self, chain_id: str) -> Layer | None:
        return self._staged_layers.get(chain_id) or self._store.layer(chain_id)

    def commit_layer(self, chain_id: str) -> Layer:
        """Move one staged layer into the store now (for :meth:`Store.ensure_layers`)."""
        with self._store._gc_lock(shared=True):
            self._move_layer(chain_id)
        layer = self._store.layer(chain_id)
        if layer is None:
            raise NotFound(f"layer {chain_id} vanished while it was committed")
        return layer

    def _move_layer(self, chain_id: str) -> None:
        if self._staged_layers.pop(chain_id, None) is None:
            return
        hexpart = _hex(chain_id)
        try:
            os.rename(os.path.join(self._layers, hexpart), self._store.layer_path(chain_id))
        except OSError as e:
            import errno

            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another command put the same layer there first: keep theirs, ours goes with us

    def commit(
        self, *, manifest_digest: str | None = None, tags: list[str] | tuple[str, ...] = ()
    ) -> list[Tag]:
        """Put every staged blob and layer into the store, then name the manifest.

        Args:
            manifest_digest: The image to name (its manifest must be staged or stored).
            tags: Names to give it; with none, it is kept as an unnamed image.

        Returns:
            The index entries written.
        """
        store = self._store
        with store._gc_lock(shared=True):
            for digest in list(self._staged_blobs):
                src = os.path.join(self._blobs, _hex(digest))
                try:  # noqa: SIM105 (contextlib is slow to import)
                    os.link(src, store.blob_path(digest))
                except FileExistsError:
                    pass  # the same content, put there by another command
            if self._staged_blobs:
                _fsync_dir(store._blobs)
            self._staged_blobs.clear()
            for chain in list(self._staged_layers):
                self._move_layer(chain)
            if manifest_digest is None:
                return []
            if tags:
                return [store.tag(name, manifest_digest) for name in tags]
            return [store.add_unnamed(manifest_digest)]


def _tag_name(name: str) -> str:
    """A name as the index keeps it: normalised, with a tag, without a digest."""
    ref = parse(name)
    if ref.digest is not None:
        raise InvalidArgument(f"invalid image name {name!r}: a digest cannot be a tag")
    return str(ref)


def _stored_name(name: str) -> str:
    """A name read from an index (perhaps written by another tool) in kobako's full form."""
    try:
        return _tag_name(name)
    except InvalidArgument:
        return name


def _familiar(name: str) -> str:
    from kobako.image.reference import familiar

    return familiar(name)


def _json_loads(content: bytes) -> Any:
    import json

    return json.loads(content)


def _json_dumps(doc: Any) -> bytes:
    import json

    return json.dumps(doc, sort_keys=True, indent=2).encode() + b"\n"


def _write_hashed(fd: int, data: bytes | bytearray | memoryview | Readable) -> tuple[str, int]:
    """Write ``data`` (bytes, or a stream read to its end) to ``fd``; its digest and size."""
    import hashlib

    sha = hashlib.sha256()
    if isinstance(data, bytes | bytearray | memoryview):
        sha.update(data)
        _write_all(fd, data)
        return "sha256:" + sha.hexdigest(), len(data)
    size = 0
    while chunk := data.read(_CHUNK):
        sha.update(chunk)
        _write_all(fd, chunk)
        size += len(chunk)
    return "sha256:" + sha.hexdigest(), size


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def tree_size(path: str) -> int:
    """Apparent bytes of the regular files and symlinks under ``path`` (hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total
