"""``client.images``: images as docker-py shows them (:class:`Image`, :class:`ImageCollection`)."""

from __future__ import annotations

from kobako.errors import Conflict, InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator
    from typing import Any, BinaryIO

    from kobako.client import Client
    from kobako.image.registry import Registry
    from kobako.image.store import ImageRecord, Store

__all__ = ["Image", "ImageCollection", "inspect_doc", "remove_image"]


class Image:
    """An image in the store (docker-py's ``Image``).

    Attributes:
        attrs: ``docker image inspect``'s document for it.
    """

    def __init__(self, client: Client, record: ImageRecord) -> None:
        self.client = client
        self._record = record
        self.attrs: dict[str, Any] = _inspect_doc(client, record)

    def __repr__(self) -> str:
        tags = "', '".join(self.tags)
        return f"<Image: '{tags}'>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def id(self) -> str:
        """The image ID (``sha256:`` and the config's hex digest)."""
        return self._record.id

    @property
    def short_id(self) -> str:
        """The ID as ``docker images`` shows it, with its ``sha256:`` prefix."""
        return self.id[:19]

    @property
    def tags(self) -> list[str]:
        """Its names in Docker's familiar form (``busybox:latest``)."""
        from kobako.image.reference import familiar

        return [familiar(n) for n in self._record.names]

    @property
    def labels(self) -> dict[str, str]:
        """The image's labels."""
        return dict(self._record.config.labels)

    def history(self) -> list[dict[str, Any]]:
        """The image's history, newest first, as ``docker history`` reads it."""
        entries = list(self._record.config.raw.get("history") or [])
        out = []
        for entry in reversed(entries):
            out.append(
                {
                    "Id": "<missing>",
                    "Created": entry.get("created", ""),
                    "CreatedBy": entry.get("created_by", ""),
                    "Comment": entry.get("comment", ""),
                    "Tags": None,
                    "Size": 0,
                    "EmptyLayer": bool(entry.get("empty_layer")),
                }
            )
        if out:
            out[0]["Id"] = self.id
            out[0]["Tags"] = self.tags or None
        return out

    def tag(self, repository: str, tag: str | None = None) -> bool:
        """Give the image another name (``docker tag``)."""
        return self.client.images.tag(self, repository, tag)

    def save(self, named: bool = True) -> Iterator[bytes]:
        """The image as a ``docker save`` archive, in chunks."""
        import tempfile

        from kobako.image import archive

        with tempfile.TemporaryFile() as f:
            archive.save(self.client.store, [self.tags[0] if named and self.tags else self.id], f)
            f.seek(0)
            while chunk := f.read(1 << 20):
                yield chunk

    def reload(self) -> None:
        """Read the image's state from the store again."""
        fresh = self.client.images.get(self.id)
        self._record = fresh._record
        self.attrs = fresh.attrs


def _inspect_doc(client: Client, record: ImageRecord) -> dict[str, Any]:
    return inspect_doc(client.store, record)


def inspect_doc(store: Store, record: ImageRecord) -> dict[str, Any]:
    """``docker image inspect``'s document for an image."""
    from kobako.image.reference import familiar, parse

    raw = record.config.raw
    digests = []
    for name in record.names:
        if record.manifest_digest:
            repo = parse(name).replace(tag=None, digest=record.manifest_digest)
            digests.append(familiar(str(repo)))
    return {
        "Id": record.id,
        "RepoTags": [familiar(n) for n in record.names],
        "RepoDigests": sorted(set(digests)),
        "Parent": "",
        "Comment": next(
            (h.get("comment", "") for h in reversed(raw.get("history") or []) if h), ""
        ),
        "Created": record.config.created,
        "DockerVersion": "",
        "Author": raw.get("author", ""),
        "Config": raw.get("config") or {},
        "Architecture": record.config.architecture,
        "Os": record.config.os,
        "Size": store.image_size(record.manifest, record.config),
        "GraphDriver": {"Name": "overlay", "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(record.config.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


class ImageCollection:
    """The images of a :class:`~kobako.Client` (docker-py's ``client.images``)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, name: str) -> Image:
        """An image by name, ID, ID prefix or digest.

        Raises:
            ImageNotFound: No such image.
        """
        return Image(self.client, self.client.store.image(name))

    def list(
        self, name: str | None = None, all: bool = False, filters: dict[str, Any] | None = None
    ) -> builtins.list[Image]:
        """Images, optionally those of one repository (``docker images [REPOSITORY]``).

        Args:
            name: A repository (``busybox``) or name with tag (``busybox:1.36``).
            all: Accepted for docker-py compatibility (kobako has no intermediate images).
            filters: ``{"dangling": True|False, "label": "k" | "k=v"}``.
        """
        del all
        from kobako.image.reference import parse

        records = self.client.store.images()
        if name is not None:
            ref = parse(name, default_tag=False)
            want = str(ref)
            records = [
                r for r in records if any(n == want or n.rsplit(":", 1)[0] == want for n in r.names)
            ]
        for key, value in (filters or {}).items():
            if key == "dangling":
                dangling = value in (True, "true", "1", 1)
                records = [r for r in records if (not r.names) == dangling]
            elif key == "label":
                k, sep, v = str(value).partition("=")
                records = [
                    r
                    for r in records
                    if k in r.config.labels and (not sep or r.config.labels[k] == v)
                ]
            else:
                raise InvalidArgument(f"invalid filter {key!r}")
        return [Image(self.client, r) for r in records]

    def load(self, data: bytes | BinaryIO | str) -> builtins.list[Image]:
        """Load images from a ``docker save`` or OCI archive (bytes, a stream or a path).

        Returns:
            The images loaded.

        Raises:
            InvalidArgument: The archive is malformed.
            LayerError: A layer is hostile or corrupt (nothing is stored).
        """
        import io

        from kobako.image import archive

        source: BinaryIO | str = io.BytesIO(data) if isinstance(data, bytes) else data
        loaded = archive.load(self.client.store, source)
        return [self.get(item.id) for item in loaded]

    def import_image(
        self,
        src: bytes | BinaryIO | str,
        repository: str | None = None,
        tag: str | None = None,
        changes: builtins.list[str] | None = None,
        message: str = "",
    ) -> Image:
        """Make a one-layer image from a root filesystem tarball (``docker import``).

        Args:
            src: The tarball: bytes, a binary stream, or a path.
            repository: The new image's name (with or without a tag).
            tag: Its tag, if not in ``repository``.
            changes: Dockerfile instructions applied to its config (``--change``).
            message: The history comment.
        """
        import io

        from kobako.image import archive

        source: BinaryIO | str = io.BytesIO(src) if isinstance(src, bytes) else src
        name = f"{repository}:{tag}" if repository and tag else repository
        record = archive.import_image(
            self.client.store, source, name, changes=list(changes or ()), message=message
        )
        return self.get(record.id)

    def pull(
        self,
        repository: str,
        tag: str | None = None,
        all_tags: bool = False,
        *,
        platform: str | None = None,
        auth_config: dict[str, str] | None = None,
    ) -> Image | builtins.list[Image]:
        """Pull an image from its registry (``docker pull``) and return it.

        Args:
            repository: ``busybox``, ``host:5000/app``, or a whole reference with its tag
                or digest.
            tag: The tag (or ``sha256:…`` digest) if ``repository`` has none; ``latest``
                when neither says.
            all_tags: Pull every tag of the repository and return them all (a list).
            platform: ``os/arch[/variant]`` to pick from a multi-platform image.
            auth_config: ``{"username": ..., "password": ...}`` instead of the credentials
                in Docker's config.json.

        Raises:
            ImageNotFound: The registry has no such image.
            AuthenticationError: The registry refused the credentials.
            RegistryUnreachable: It cannot be reached.
            RegistryError: It answered with another error.
            DigestMismatch, LayerError: The content is corrupt or hostile (nothing stored).
        """
        from kobako.errors import InvalidArgument
        from kobako.image.pull import parse_platform, pull
        from kobako.image.reference import parse

        want = parse_platform(platform) if platform else None
        if all_tags:
            if tag:
                raise InvalidArgument("tag can't be used with all_tags")
            given = parse(repository, default_tag=False)
            if given.tag is not None or given.digest is not None:
                raise InvalidArgument("tag can't be used with all_tags")
            from kobako.image.registry import Registry

            registry = _registry(given.domain, auth_config) or Registry(given.domain)
            with registry:
                return [
                    Image(
                        self.client,
                        pull(
                            self.client.store,
                            f"{given.repository}:{t}",
                            platform=want,
                            registry=registry,
                        ).image,
                    )
                    for t in sorted(registry.list_tags(given.path))
                ]
        name = _with_tag(repository, tag)
        result = pull(
            self.client.store,
            name,
            platform=want,
            registry=_registry(parse(name).domain, auth_config),
        )
        return Image(self.client, result.image)

    def push(
        self,
        repository: str,
        tag: str | None = None,
        *,
        auth_config: dict[str, str] | None = None,
    ) -> str:
        """Push an image to its registry (``docker push``); returns the manifest digest.

        Raises:
            ImageNotFound: No image has that name here.
            AuthenticationError: The registry refused the credentials (or wants some).
            RegistryUnreachable: It cannot be reached.
            RegistryError: It answered with another error.
        """
        from kobako.image.push import push
        from kobako.image.reference import parse

        name = _with_tag(repository, tag)
        registry = _registry(parse(name).domain, auth_config)
        return push(self.client.store, name, registry=registry)

    def tag(self, image: Image | str, repository: str, tag: str | None = None) -> bool:
        """Name an image ``repository[:tag]`` (``docker tag``)."""
        record = self.client.store.image(image.id if isinstance(image, Image) else image)
        name = f"{repository}:{tag}" if tag else repository
        self.client.store.tag(name, record.manifest_digest)
        return True

    def remove(self, image: Image | str, force: bool = False, noprune: bool = False) -> None:
        """Remove an image, or one of its names (``docker rmi``); see :func:`remove_image`.

        Raises:
            ImageNotFound: No such image.
            Conflict: A container uses it, or an ID names an image with several names
                (without ``force``).
        """
        ref = image.id if isinstance(image, Image) else image
        remove_image(self.client.store, ref, force=force, noprune=noprune)

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove unnamed images no container uses (every unused one with ``dangling=False``).

        Returns:
            ``{"ImagesDeleted": [{"Deleted": id}...], "SpaceReclaimed": bytes}``.
        """
        from kobako.runtime.containers import ContainerStore

        store = self.client.store
        only_dangling = (filters or {}).get("dangling", True) in (True, "true", "1", 1)
        used = {d["Image"] for d in ContainerStore(store).list()}
        deleted = []
        for record in store.images():
            if record.id in used or (only_dangling and record.names):
                continue
            store.forget(record.manifest_digest)
            deleted.append({"Deleted": record.id})
        collected = store.collect()
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": collected.freed}


def _with_tag(repository: str, tag: str | None) -> str:
    if not tag:
        return repository
    return f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"


def _registry(domain: str, auth_config: dict[str, str] | None) -> Registry | None:
    """A registry client with the caller's credentials, or None for Docker's config."""
    if not auth_config:
        return None
    from kobako.image.registry import Registry

    return Registry(
        domain,
        credentials=(auth_config["username"], auth_config["password"]),
        use_config=False,
    )


def remove_image(
    store: Store, ref: str, *, force: bool = False, noprune: bool = False
) -> builtins.list[tuple[str, str]]:
    """Remove an image or one of its names, as ``docker rmi`` does.

    A name that is not the image's last only goes (``Untagged``). Removing the last name, or
    the image by ID, deletes the image (``Deleted``) and collects its blobs and layers, unless
    ``noprune``. An image a container uses is refused, unless ``force``, which takes its
    names and keeps it unnamed for the container.

    Returns:
        What happened, in order: ``("Untagged", familiar name)`` and ``("Deleted", image ID)``.

    Raises:
        ImageNotFound: No such image.
        Conflict: A container uses it, or an ID names an image with several names
            (without ``force``).
    """
    from kobako.image.reference import familiar, parse
    from kobako.runtime.containers import ContainerStore

    record = store.image(ref)
    try:
        full = str(parse(ref))
    except InvalidArgument:
        full = ""
    by_name = full if full in record.names else None
    users = ContainerStore(store).users_of(record.id)
    if by_name is not None and len(record.names) > 1:
        store.untag(by_name)
        return [("Untagged", familiar(by_name))]
    if by_name is None and len(record.names) > 1 and not force:
        raise Conflict(
            f"conflict: unable to delete {record.id[7:19]} (must be forced) - image is "
            "referenced in multiple repositories"
        )
    if users:
        if not force:
            what = f'repository reference "{familiar(by_name)}"' if by_name else record.id[7:19]
            raise Conflict(
                f"conflict: unable to remove {what} (must force) - container "
                f"{users[0]['Id'][:12]} is using its referenced image {record.id[7:19]}"
            )
        events = []
        for name in record.names:
            store.untag(name, keep_unnamed=True)
            events.append(("Untagged", familiar(name)))
        return events
    events = [("Untagged", familiar(name)) for name in record.names]
    store.forget(record.manifest_digest)
    events.append(("Deleted", record.id))
    if not noprune:
        store.collect(wait=False)
    return events
