"""The entry point of the Python API: :class:`Client` and :func:`from_env`, docker-py's shape.

There is no daemon to connect to: a client is a handle on one kobako root (the image store,
its layers and its containers), and its methods do the work in this process::

    import kobako

    client = kobako.from_env()
    print(client.containers.run("busybox", ["echo", "hello"]))   # b'hello\\n'
    for image in client.images.list():
        print(image.tags, image.short_id)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kobako.containers import ContainerCollection
    from kobako.image.store import Store
    from kobako.images import ImageCollection
    from kobako.networks import NetworkCollection
    from kobako.volumes import VolumeCollection

__all__ = ["Client", "from_env"]


class Client:
    """A handle on one kobako root.

    Args:
        root: The store's root directory (``$KOBAKO_ROOT``, else ``/var/lib/kobako``).
    """

    def __init__(self, root: str | None = None) -> None:
        from kobako.image.store import Store

        self.store: Store = Store.open(root)

    def __repr__(self) -> str:
        return f"Client(root={self.store.root!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (no connection); here for docker-py's shape."""

    @property
    def images(self) -> ImageCollection:
        """The images (``client.images.list()``, ``.get()``, ``.load()``…)."""
        from kobako.images import ImageCollection

        return ImageCollection(self)

    @property
    def containers(self) -> ContainerCollection:
        """The containers (``client.containers.run()``, ``.get()``, ``.list()``)."""
        from kobako.containers import ContainerCollection

        return ContainerCollection(self)

    @property
    def volumes(self) -> VolumeCollection:
        """The volumes (``client.volumes.create()``, ``.get()``, ``.list()``, ``.prune()``)."""
        from kobako.volumes import VolumeCollection

        return VolumeCollection(self)

    @property
    def networks(self) -> NetworkCollection:
        """The networks (``client.networks.create()``, ``.get()``, ``.list()``, ``.prune()``)."""
        from kobako.networks import NetworkCollection

        return NetworkCollection(self)

    def login(
        self,
        username: str,
        password: str | None = None,
        email: str | None = None,
        registry: str | None = None,
        reauth: bool = False,
        dockercfg_path: str | None = None,
    ) -> dict[str, str]:
        """Check credentials with a registry and keep them in Docker's config.json.

        Args:
            username: The user.
            password: The password (or token).
            email: Ignored (as registries ignore it).
            registry: The registry (``docker.io`` if None).
            reauth: Ignored: the credentials are always checked.
            dockercfg_path: Not supported (``$DOCKER_CONFIG`` chooses the config.json).

        Returns:
            ``{"Status": "Login Succeeded"}``, as docker-py returns the daemon's answer.

        Raises:
            AuthenticationError: The registry refused them.
            RegistryUnreachable: It cannot be reached.
        """
        del email, reauth
        from kobako.errors import InvalidArgument
        from kobako.image.auth import store_credentials
        from kobako.image.registry import Registry

        if dockercfg_path is not None:
            raise InvalidArgument("dockercfg_path: set $DOCKER_CONFIG to its directory instead")
        server = registry or "docker.io"
        for scheme in ("https://", "http://"):
            server = server.removeprefix(scheme)
        server = server.split("/", 1)[0]
        client = Registry(server, credentials=(username, password or ""), use_config=False)
        try:
            client.ping()
        finally:
            client.close()
        store_credentials(server, username, password or "")
        return {"Status": "Login Succeeded"}


def from_env() -> Client:
    """A client for the root ``$KOBAKO_ROOT`` names (``/var/lib/kobako`` if unset)."""
    return Client()
