"""Push: an image of the store to a registry, its manifest bytes unchanged.

The manifest goes up exactly as stored, so its digest is the one the registry (and any
client reading it back) computes. Per layer, as ``docker push`` does: a HEAD request first
(the registry has it: skipped), then a cross-repository mount from another repository of
the same registry that the image came from or was pushed to (one of its names there), and
an upload only when neither works, up to five layers at once (Docker's
``max-concurrent-uploads``); then the config; the manifest last, once every blob it names
is in. Foreign (non-distributable) layers are not pushed, as Docker does not.
"""

from __future__ import annotations

from kobako.errors import InvalidArgument, NotFound
from kobako.image.reference import parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from kobako.image.manifest import Descriptor
    from kobako.image.registry import Registry
    from kobako.image.store import ImageRecord, Store

    #: ``progress(layer, status, current, total)``: ``layer`` is the blob's short ID (12 hex
    #: digits); ``status`` is one of Docker's: "Preparing", "Pushing", "Pushed",
    #: "Layer already exists", "Mounted from REPO".
    Progress = Callable[[str, str, int, int], None]

__all__ = ["MAX_CONCURRENT_UPLOADS", "push"]

#: Layers uploaded at once (Docker's ``max-concurrent-uploads``).
MAX_CONCURRENT_UPLOADS = 5

#: Layers whose blobs live elsewhere (Windows base layers): Docker does not push them.
_FOREIGN = frozenset(
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    )
)


def push(
    store: Store,
    name: str,
    *,
    progress: Progress | None = None,
    registry: Registry | None = None,
    chunk_size: int | None = None,
) -> str:
    """Push the image named ``name`` (``host:5000/team/app:1.0``) to its registry.

    Args:
        store: Where the image is.
        name: The image's name; its registry, repository and tag are where it goes (a name
            without a tag means ``latest``).
        progress: Called with each layer's status.
        registry: A client to use; made for the name's registry, with Docker's config, if
            None.
        chunk_size: Upload blobs in chunks of this many bytes (None: one request per blob).

    Returns:
        The digest of the manifest pushed.

    Raises:
        ImageNotFound: The store has no image of that name.
        InvalidArgument: The name is malformed.
        NotFound: A blob of the image is missing from the store.
        AuthenticationError: The registry refused the credentials (or wants some).
        RegistryUnreachable: It cannot be reached.
        RegistryError: It refused a blob or the manifest.
    """
    ref = parse(name)
    image = store.image(name)
    digest, content, media_type = _manifest(store, image)
    own = registry is None
    if registry is None:
        from kobako.image.registry import Registry

        registry = Registry(ref.domain)
    try:
        sources = _sources(image, ref.domain, ref.path)
        for layer in image.manifest.layers:
            _report(progress, layer, "Preparing", 0, layer.size)
        todo: list[Descriptor] = []
        for layer in image.manifest.layers:
            if layer.media_type in _FOREIGN:
                _report(progress, layer, "Skipped foreign layer", 0, 0)
            elif layer.digest not in (d.digest for d in todo):
                todo.append(layer)
        _in_parallel(
            lambda layer: _push_blob(
                store, registry, ref.path, layer, sources, progress, chunk_size
            ),
            todo,
            MAX_CONCURRENT_UPLOADS,
        )
        config = image.manifest.config
        _push_blob(store, registry, ref.path, config, sources, None, chunk_size)
        registry.put_manifest(ref.path, ref.tag or digest, content, media_type)
        return digest
    finally:
        if own:
            registry.close()


def _in_parallel(work: Callable[[Descriptor], None], items: list[Descriptor], most: int) -> None:
    """``work(item)`` for every item, ``most`` at a time; the first error is raised.

    Once one fails, the items not started are left alone (those running finish).
    """
    import threading

    if len(items) <= 1:
        for item in items:
            work(item)
        return
    queue = list(items)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if errors or not queue:
                    return
                item = queue.pop(0)
            try:
                work(item)
            except BaseException as e:  # re-raised in the caller's thread
                with lock:
                    errors.append(e)
                return

    threads = [
        threading.Thread(target=worker, daemon=True) for _ in range(min(most, len(items)) - 1)
    ]
    for t in threads:
        t.start()
    worker()  # the calling thread is one of the workers
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _manifest(store: Store, image: ImageRecord) -> tuple[str, bytes, str]:
    """The image's manifest as stored: (digest, bytes, media type).

    An image stored with its image index pushes the manifest of the platform it has (as
    Docker's image store does); a manifest is pushed as is.
    """
    from kobako.image.manifest import (
        INDEX_TYPES,
        MANIFEST_TYPES,
        OCI_MANIFEST,
        document_type,
        parse_index,
        select_platform,
    )

    digest = image.manifest_digest
    content = store.read_blob(digest)
    for _ in range(4):  # an index may name an index; not forever
        media_type = document_type(content)
        if media_type not in INDEX_TYPES:
            break
        entries = parse_index(content)
        wanted = (image.config.os, image.config.architecture, "")
        try:
            digest = select_platform(entries, wanted).digest
        except NotFound:
            digest = select_platform(entries).digest
        content = store.read_blob(digest)
    else:
        raise InvalidArgument(f"image index {image.manifest_digest} nests too deeply")
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"cannot push a manifest of type {media_type!r}")
    return digest, content, media_type or OCI_MANIFEST


def _sources(image: ImageRecord, domain: str, path: str) -> list[str]:
    """Other repositories of the same registry the image has names in: mount sources."""
    out = []
    for other in image.names:
        try:
            ref = parse(other)
        except InvalidArgument:
            continue
        if ref.domain == domain and ref.path != path and ref.path not in out:
            out.append(ref.path)
    return out


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _report(
    progress: Progress | None, desc: Descriptor, status: str, current: int, total: int
) -> None:
    if progress is not None:
        progress(_short(desc.digest), status, current, total)


def _push_blob(
    store: Store,
    registry: Registry,
    repository: str,
    desc: Descriptor,
    sources: list[str],
    progress: Progress | None,
    chunk_size: int | None,
) -> None:
    """One blob: skipped if there, mounted if another repository has it, else uploaded."""
    path = store.blob_path(desc.digest)
    if not store.has_blob(desc.digest):
        raise NotFound(f"blob {desc.digest} of the image is missing from the store")
    if registry.blob_exists(repository, desc.digest) is not None:
        _report(progress, desc, "Layer already exists", desc.size, desc.size)
        return
    for source in sources:
        if registry.mount_blob(repository, desc.digest, source):
            _report(progress, desc, f"Mounted from {source}", desc.size, desc.size)
            return

    def sent(done: int) -> None:
        _report(progress, desc, "Pushing", done, desc.size)

    registry.upload_blob(
        repository,
        desc.digest,
        path,
        chunk_size=chunk_size,
        progress=sent if progress is not None else None,
    )
    _report(progress, desc, "Pushed", desc.size, desc.size)
