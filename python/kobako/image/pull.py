"""Pull: an image from a registry into the store, each layer streamed into extraction.

Per layer, one thread downloads the blob into a pipe and the native extractor reads the
other end (the GIL released), writing the blob to the stage as it reads it and checking its
digest and diff ID in the same pass: download, decompression and file creation overlap,
and nothing is read twice. Layers already in the store are skipped; up to three download at
once (Docker's ``max-concurrent-downloads``). The manifest, config and layers go into one
:class:`~kobako.image.store.Stage`, committed only when every layer is in: a pull that fails
or is killed leaves the store as it was.
"""

from __future__ import annotations

import os
import threading

from kobako._record import Record
from kobako.errors import ImageNotFound, InvalidArgument, KobakoError, NotFound, RegistryError
from kobako.image.reference import parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from kobako.image.manifest import Descriptor
    from kobako.image.registry import Registry
    from kobako.image.store import ImageRecord, Stage, Store

    #: ``progress(layer, status, current, total)``: ``layer`` is the blob's short ID (12 hex
    #: digits); ``status`` is one of Docker's: "Waiting", "Downloading", "Download complete",
    #: "Pull complete", "Already exists".
    Progress = Callable[[str, str, int, int], None]

__all__ = ["MAX_CONCURRENT_DOWNLOADS", "Pulled", "parse_platform", "pull"]

MAX_CONCURRENT_DOWNLOADS = 3
_PIPE_SIZE = 1 << 20


class Pulled(Record):
    """What a pull did.

    Attributes:
        image: The image, as stored.
        digest: The digest the registry gave the pulled reference (an index's, if it was one).
        reference: The name pulled, in full (``docker.io/library/busybox:latest``).
        downloaded: Whether anything new was stored (Docker's "Downloaded newer image" as
            opposed to "Image is up to date").
    """

    image: ImageRecord
    digest: str
    reference: str
    downloaded: bool


def parse_platform(value: str) -> tuple[str, str, str]:
    """``--platform``: ``os/arch[/variant]`` (``linux/arm64/v8``) as (os, arch, variant).

    Raises:
        InvalidArgument: It is not of that form.
    """
    parts = value.lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise InvalidArgument(
            f'"{value}": unknown operating system or architecture: invalid argument'
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def pull(
    store: Store,
    name: str,
    *,
    platform: tuple[str, str, str] | None = None,
    progress: Progress | None = None,
    registry: Registry | None = None,
    max_concurrent: int = MAX_CONCURRENT_DOWNLOADS,
) -> Pulled:
    """Pull ``name`` (``busybox``, ``host:5000/app:1``, ``app@sha256:…``) into ``store``.

    Args:
        store: Where the image goes.
        name: The reference, normalised as Docker does (a missing tag means ``latest``).
        platform: The platform to pick from an index; the running one if None.
        progress: Called with each layer's status (from several threads).
        registry: A client to use (its credentials, its connections); made for the
            reference's registry, with Docker's config, if None.
        max_concurrent: Layers downloaded at once.

    Raises:
        ImageNotFound: The registry has no such repository, tag or digest.
        AuthenticationError: The registry refused the credentials (or wants some).
        RegistryUnreachable: It cannot be reached.
        RegistryError: It answered with another error.
        DigestMismatch: A blob is not what its digest says (nothing is stored).
        LayerError: A layer is hostile or corrupt (nothing is stored).
        NotFound: The index has no manifest for the platform.
    """
    from kobako.image.manifest import (
        INDEX_TYPES,
        chain_ids,
        document_type,
        parse_config,
        parse_index,
        parse_manifest,
        select_platform,
    )

    ref = parse(name)
    full = str(ref)
    own = registry is None
    if registry is None:
        from kobako.image.registry import Registry

        registry = Registry(ref.domain)
    repo = ref.path
    try:
        documents: list[tuple[str, bytes]] = []
        try:
            content, _, digest = registry.get_manifest(repo, ref.digest or ref.tag or "latest")
        except RegistryError as e:
            if e.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN") or e.status == 404:
                why = (e.code or "MANIFEST_UNKNOWN").lower().replace("_", " ")
                raise ImageNotFound(f"manifest for {ref.familiar} not found: {why}") from None
            raise
        documents.append((digest, content))
        for _ in range(4):  # an index may name an index; not forever
            if document_type(content) not in INDEX_TYPES:
                break
            desc = select_platform(parse_index(content), platform)
            content, _, child = registry.get_manifest(repo, desc.digest)
            documents.append((child, content))
        else:
            raise InvalidArgument(f"image index {digest} nests too deeply")
        manifest_digest, manifest_content = documents[-1]
        manifest = parse_manifest(manifest_content)
        # The name leads to what the registry named (an index, as Docker's RepoDigests
        # show it), unless another platform than this one was asked for: the store reads an
        # index for the running platform.
        named = digest if ref.digest or platform is None else manifest_digest

        current = _current(store, full if ref.digest is None else named)
        if current is not None and current.manifest_digest == named and _complete(store, current):
            for layer in manifest.layers:
                _report(progress, layer.digest, "Already exists", 0, 0)
            return Pulled(image=current, digest=digest, reference=full, downloaded=False)

        with store.stage() as stage:
            config_desc = manifest.config
            if stage.has_blob(config_desc.digest):
                config_bytes = stage.read_blob(config_desc.digest)
            else:
                config_bytes = registry.get_blob(repo, config_desc.digest)
            config = parse_config(config_bytes)
            if len(config.diff_ids) != len(manifest.layers):
                raise InvalidArgument(
                    f"image {ref.familiar}: the manifest has {len(manifest.layers)} layers "
                    f"but the config names {len(config.diff_ids)}"
                )
            chains = chain_ids(config.diff_ids)
            todo = []
            for desc, diff_id, chain in zip(manifest.layers, config.diff_ids, chains, strict=True):
                if store.layer(chain) is not None and store.has_blob(desc.digest):
                    _report(progress, desc.digest, "Already exists", 0, 0)
                else:
                    todo.append((desc, diff_id, chain))
            _fetch_layers(registry, repo, stage, todo, progress, max_concurrent)
            stage.add_blob(config_bytes, config_desc.digest)
            for doc_digest, doc in documents:
                stage.add_blob(doc, doc_digest)
            stage.commit(manifest_digest=named, tags=[] if ref.digest else [full])
        image = store.image(full if ref.digest is None else named)
        return Pulled(image=image, digest=digest, reference=full, downloaded=True)
    finally:
        if own:
            registry.close()


def _current(store: Store, ref: str) -> ImageRecord | None:
    try:
        return store.image(ref)
    except NotFound:
        return None


def _complete(store: Store, image: ImageRecord) -> bool:
    """Whether every layer of a stored image is extracted (a pull can then be skipped)."""
    from kobako.image.manifest import chain_ids

    return all(store.layer(c) is not None for c in chain_ids(image.config.diff_ids))


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _report(progress: Progress | None, digest: str, status: str, current: int, total: int) -> None:
    if progress is not None:
        progress(_short(digest), status, current, total)


class _Cancelled(Exception):
    """Another layer failed: this one stops downloading."""


def _fetch_layers(
    registry: Registry,
    repo: str,
    stage: Stage,
    todo: list[tuple[Descriptor, str, str]],
    progress: Progress | None,
    max_concurrent: int,
) -> None:
    """Download and extract layers, ``max_concurrent`` at a time; the first error wins."""
    if not todo:
        return
    for desc, _, _ in todo:
        _report(progress, desc.digest, "Waiting", 0, desc.size)
    failed = threading.Event()
    errors: list[BaseException] = []
    queue = list(todo)
    lock = threading.Lock()

    def worker() -> None:
        while not failed.is_set():
            with lock:
                if not queue:
                    return
                desc, diff_id, chain = queue.pop(0)
            try:
                _fetch_layer(registry, repo, stage, desc, diff_id, chain, progress, failed)
            except BaseException as e:
                with lock:
                    if not isinstance(e, _Cancelled):
                        errors.append(e)
                failed.set()
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max_concurrent)]
    for t in threads[1:]:
        t.start()
    worker()  # the calling thread is one of the workers
    for t in threads[1:]:
        t.join()
    if errors:
        raise errors[0]


def _fetch_layer(
    registry: Registry,
    repo: str,
    stage: Stage,
    desc: Descriptor,
    diff_id: str,
    chain: str,
    progress: Progress | None,
    failed: threading.Event,
) -> None:
    """One layer: a download thread writes the blob into a pipe that extraction reads."""
    import fcntl

    r, w = os.pipe2(os.O_CLOEXEC)
    try:  # noqa: SIM105 (contextlib is slow to import)
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass  # above /proc/sys/fs/pipe-max-size for this user: the default will do
    download_error: list[BaseException] = []

    def on_progress(done: int) -> None:
        if failed.is_set():
            raise _Cancelled
        _report(progress, desc.digest, "Downloading", done, desc.size)

    def download() -> None:
        try:
            registry.fetch_blob(
                repo, desc.digest, w, size=desc.size, progress=on_progress, urls=desc.urls
            )
        except BaseException as e:
            download_error.append(e)
        finally:
            os.close(w)

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    try:
        stage.add_layer_stream(r, desc.digest, diff_id, chain)
    except KobakoError:
        os.close(r)  # the download stops on EPIPE
        r = -1
        thread.join()
        if download_error:  # the download's failure is the cause, not the truncated tar
            raise download_error[0] from None
        raise
    finally:
        if r >= 0:
            os.close(r)
    thread.join()
    if download_error:
        raise download_error[0]
    _report(progress, desc.digest, "Pull complete", desc.size, desc.size)
