"""``client.volumes``: volumes as docker-py shows them.

::

    volume = client.volumes.create("cache", labels={"team": "kobako"})
    client.containers.run("busybox", "touch /cache/x", volumes={"cache": {"bind": "/cache"}})
    volume.remove()
"""

from __future__ import annotations

from kobako._model import Model, filter_map

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from kobako.client import Client
    from kobako.runtime.volumes import VolumeStore

__all__ = ["Volume", "VolumeCollection"]


class Volume(Model):
    """A volume (docker-py's ``Volume``).

    Attributes:
        attrs: ``docker volume inspect``'s document for it.
    """

    id_attribute = "Name"  # a volume's ID is its name, as in docker-py

    @property
    def name(self) -> str:
        """Its name."""
        return str(self.attrs["Name"])

    def reload(self) -> None:
        """Read its record again.

        Raises:
            NotFound: It was removed.
        """
        self.attrs = _store(self.client).get(self.id)

    def remove(self, force: bool = False) -> None:
        """Remove it (``docker volume rm``).

        Args:
            force: A volume already gone is not an error (a volume in use still is).

        Raises:
            NotFound: It does not exist (unless ``force``).
            Conflict: A container uses it.
        """
        _store(self.client).remove(self.id, force=force)


def _store(client: Client) -> VolumeStore:
    from kobako.runtime.volumes import VolumeStore

    return VolumeStore(client.store)


class VolumeCollection:
    """The volumes of a :class:`~kobako.Client` (docker-py's ``client.volumes``)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(
        self,
        name: str | None = None,
        *,
        driver: str | None = None,
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Volume:
        """Make a volume, or get the one of that name.

        Args:
            name: Its name; 64 random hex digits if None.
            driver: ``"local"`` (the only driver) or None.
            driver_opts: The driver's options: none supported.
            labels: Its labels.

        Returns:
            The volume.

        Raises:
            InvalidArgument: A bad name, another driver, or driver options.
        """
        doc, _ = _store(self.client).create(
            name, labels=dict(labels or {}), driver=driver, options=dict(driver_opts or {})
        )
        return Volume(self.client, doc)

    def get(self, volume_id: str) -> Volume:
        """A volume by name.

        Raises:
            NotFound: No such volume.
        """
        return Volume(self.client, _store(self.client).get(volume_id))

    def list(self, filters: Mapping[str, Any] | None = None) -> list[Volume]:
        """The volumes, by name.

        Args:
            filters: docker-py's filters: ``dangling`` (bool), ``name``, ``label``,
                ``driver`` (a value or a list of them).
        """
        from kobako.runtime.volumes import select

        store = _store(self.client)
        wanted = filter_map(filters, ("dangling", "name", "label", "driver"))
        docs = select(store.list(), store.users(), wanted)
        return [Volume(self.client, doc) for doc in docs]

    def prune(self, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Remove the anonymous volumes no container uses (all unused ones with ``all``).

        Args:
            filters: ``label`` (``KEY`` or ``KEY=VALUE``, a list for several) and ``all``
                (bool: named volumes too, as Docker 23's API takes it).

        Returns:
            ``{"VolumesDeleted": [names], "SpaceReclaimed": bytes}``.
        """
        by_key = filter_map(filters, ("label", "all"))
        every = any(v.lower() in ("true", "1") for v in by_key.get("all", ()))
        names, freed = _store(self.client).prune(every=every, labels=by_key.get("label", ()))
        return {"VolumesDeleted": names, "SpaceReclaimed": freed}
