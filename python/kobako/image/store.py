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
from kobako.errors import InvalidArgument, KobakoError, NotFound
from kobako.image.reference import parse

TYPE_CHECKING = False  # typing is slow to import; type checkers treat this as True
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, BinaryIO, Protocol

    class Readable(Protocol):
        """A binary stream: what :meth:`Store.ingest` reads."""

        def read(self, size: int = -1, /) -> bytes: ...


__all__ = ["DEFAULT_ROOT", "Descriptor", "DigestMismatch", "Store", "Tag", "default_root"]

#: Where the store lives when neither ``--root`` nor ``$KOBAKO_ROOT`` says otherwise.
DEFAULT_ROOT = "/var/lib/kobako"

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class DigestMismatch(KobakoError):
    """Content does not hash to the digest it should have.

    Attributes:
        expected: The digest the content was supposed to have.
        actual: The digest it has.
    """

    def __init__(self, expected: str, actual: str, message: str = "") -> None:
        super().__init__(message or f"digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class Descriptor(Record):
    """Content named by its digest, as OCI descriptors name it.

    Attributes:
        digest: ``"sha256:"`` and 64 lowercase hex digits.
        size: Its length in bytes.
    """

    digest: str
    size: int


class Tag(Record):
    """A name in the index and the manifest it points to.

    Attributes:
        name: The image name with its tag, e.g. ``"busybox:latest"``.
        digest: The manifest's (or image index's) digest.
        size: The manifest's size in bytes.
        media_type: The manifest's media type.
    """

    name: str
    digest: str
    size: int
    media_type: str


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

    def __init__(self, path: str, *, shared: bool = False, remove: bool = False) -> None:
        self._path = path
        self._op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
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
        for path in (store._blobs, store._layers, store._tmp, store._locks):
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
        import hashlib

        path, fd = self._temp_file("blob-")
        try:
            sha = hashlib.sha256()
            if isinstance(data, bytes | bytearray | memoryview):
                sha.update(data)
                _write_all(fd, data)
                size = len(data)
            else:
                size = 0
                while chunk := data.read(_CHUNK):
                    sha.update(chunk)
                    _write_all(fd, chunk)
                    size += len(chunk)
            digest = "sha256:" + sha.hexdigest()
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

        Args:
            name: An image name; ``:latest`` is added if it has no tag.
            manifest_digest: The manifest's digest; the blob must be in the store.

        Returns:
            The index entry written.

        Raises:
            InvalidArgument: The name or digest is malformed, or the blob is not a manifest.
            NotFound: The store has no such blob.
        """
        import json

        ref = str(parse(name))
        content = self.read_blob(manifest_digest)
        try:
            doc = json.loads(content)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"blob {manifest_digest} is not a manifest")
        media_type = doc.get("mediaType")
        if not isinstance(media_type, str):
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        entry = Tag(name=ref, digest=manifest_digest, size=len(content), media_type=media_type)
        with self._index_lock(shared=False):
            entries = [e for e in self._read_index() if e.name != ref]
            entries.append(entry)
            self._write_index(entries)
        return entry

    def untag(self, name: str) -> None:
        """Remove a name from the index (the blobs stay until collected).

        Raises:
            InvalidArgument: The name is malformed.
            NotFound: No image has that name.
        """
        ref = str(parse(name))
        with self._index_lock(shared=False):
            entries = self._read_index()
            kept = [e for e in entries if e.name != ref]
            if len(kept) == len(entries):
                raise NotFound(f"no such image: {ref}")
            self._write_index(kept)

    def resolve(self, name: str) -> str:
        """The digest of the manifest an image name points to.

        Raises:
            InvalidArgument: The name is malformed.
            NotFound: No image has that name.
        """
        ref = str(parse(name))
        for entry in self.list_images():
            if entry.name == ref:
                return entry.digest
        raise NotFound(f"no such image: {ref}")

    def list_images(self) -> list[Tag]:
        """Every name in the index with its manifest, sorted by name."""
        with self._index_lock(shared=True):
            entries = self._read_index()
        return sorted(entries, key=lambda e: e.name)

    # -- garbage collection -------------------------------------------------------------

    def unreferenced_blobs(self) -> list[str]:
        """The blobs no name leads to: through image indexes, manifests, configs and layers.

        OCI and Docker (v2 schema 2) media types are both followed. A referenced blob the
        store lacks is skipped, so a partly stored image does not stop a collection.

        Returns:
            The digests, sorted.
        """
        import json

        seen: set[str] = set()
        todo = [e.digest for e in self.list_images()]
        while todo:
            digest = todo.pop()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                doc = json.loads(self.read_blob(digest))
            except (NotFound, InvalidArgument, ValueError):
                continue
            if not isinstance(doc, dict):
                continue
            media_type = doc.get("mediaType")
            children: list[Any] = []
            if media_type in _INDEX_TYPES or (media_type is None and "manifests" in doc):
                children = list(doc.get("manifests") or ())
                todo.extend(_digests(children))
            elif media_type in _MANIFEST_TYPES or (media_type is None and "config" in doc):
                children = [doc.get("config"), *(doc.get("layers") or ())]
                seen.update(_digests(children))  # configs and layers refer to nothing else
        return [d for d in self.blobs() if d not in seen]

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
            if isinstance(name, str):
                entries.append(
                    Tag(
                        name=name,
                        digest=m["digest"],
                        size=m["size"],
                        media_type=m.get("mediaType", OCI_MANIFEST),
                    )
                )
        return entries

    def _write_index(self, entries: list[Tag]) -> None:
        """Rewrite ``index.json`` atomically (call with the index lock held exclusively)."""
        import json

        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": e.media_type,
                    "digest": e.digest,
                    "size": e.size,
                    "annotations": {REF_NAME: e.name},
                }
                for e in sorted(entries, key=lambda e: e.name)
            ],
        }
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
