"""Volumes: directories that outlive containers, kept as Docker's ``local`` driver keeps them.

A volume lives in ``ROOT/volumes/NAME/``::

    volume.json     its record, in the shape of ``docker volume inspect`` (written atomically)
    _data/          what containers mount

A named volume is made by ``volume create`` or on first use (``-v NAME:/path``); an anonymous
one (``-v /path``, or a ``VOLUME`` of the image) gets 64 random hex digits as its name and
Docker's label ``com.docker.volume.anonymous``. A new or empty volume is filled with what
the image has at the path it is mounted on (Docker's first-use copy), unless ``nocopy``.

Everything that makes, uses or removes a volume holds ``ROOT/locks/volume-NAME``: two
commands creating one name get one volume, and a volume is not removed while a container
that is being made records it. A volume is in use while any container's record (running or
not) names it in its ``Mounts``.
"""

from __future__ import annotations

import os

from kobako.errors import Conflict, InvalidArgument, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager
    from typing import Any

    from kobako.image.store import Store

__all__ = [
    "ANONYMOUS_LABEL",
    "VolumeStore",
    "check_name",
    "copy_image_content",
    "filter_bool",
    "is_anonymous",
    "match_labels",
    "select",
]

#: The label Docker puts on the volumes it makes for ``-v /path`` and an image's VOLUME.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")


def check_name(name: str) -> str:
    """Check a volume name as Docker's local driver does (``[a-zA-Z0-9][a-zA-Z0-9_.-]+``).

    Raises:
        InvalidArgument: It is not such a name.
    """
    if len(name) < 2 or name[0] not in _NAME_FIRST or not set(name[1:]) <= _NAME_REST:
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path"
        )
    return name


def is_anonymous(doc: Mapping[str, Any]) -> bool:
    """Whether a volume's record marks it anonymous."""
    return ANONYMOUS_LABEL in (doc.get("Labels") or {})


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class VolumeStore:
    """The volumes of one kobako root.

    Args:
        store: The image store under whose root they live.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = os.path.join(store.root, "volumes")
        self._locks = os.path.join(store.root, "locks")
        self._held: set[str] = set()
        os.makedirs(self.root, mode=0o701, exist_ok=True)

    def path(self, name: str) -> str:
        """The volume's directory (its record and ``_data``)."""
        return os.path.join(self.root, name)

    def data(self, name: str) -> str:
        """What containers mount: ``ROOT/volumes/NAME/_data``."""
        return os.path.join(self.root, name, "_data")

    # -- locking ------------------------------------------------------------------------

    def lock(self, *names: str) -> AbstractContextManager[None]:
        """Hold the locks of some volumes (in name order) for a ``with`` block.

        Methods of this store called inside the block do not take those locks again.

        Raises:
            InvalidArgument: A name is not a volume name.
        """
        from contextlib import ExitStack, contextmanager

        from kobako.image.store import _Lock

        wanted = sorted({check_name(name) for name in names} - self._held)

        @contextmanager
        def held() -> Iterator[None]:
            with ExitStack() as stack:
                try:
                    for name in wanted:
                        path = os.path.join(self._locks, f"volume-{name}")
                        stack.enter_context(_Lock(path, remove=True))
                        self._held.add(name)
                    yield
                finally:
                    self._held.difference_update(wanted)

        return held()

    # -- records ------------------------------------------------------------------------

    def _load(self, name: str) -> dict[str, Any] | None:
        import json

        base = self.path(name)
        try:
            with open(os.path.join(base, "volume.json"), "rb") as f:
                doc: dict[str, Any] = json.load(f)
            return doc
        except (FileNotFoundError, NotADirectoryError, ValueError):
            pass
        try:  # a volume an older kobako made for an image's VOLUME: no record, anonymous
            st = os.stat(os.path.join(base, "_data"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        import time

        return {
            "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
            "Driver": "local",
            "Labels": {ANONYMOUS_LABEL: ""},
            "Mountpoint": os.path.join(base, "_data"),
            "Name": name,
            "Options": None,
            "Scope": "local",
        }

    def create(
        self,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        driver: str | None = None,
        options: Mapping[str, str] | None = None,
        anonymous: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Make a volume, or find the one of that name (``docker volume create`` is idempotent).

        Args:
            name: Its name; 64 random hex digits if None.
            labels: Its labels (``{}`` when made by ``volume create``, None on first use).
            driver: ``"local"`` (or None): the only driver.
            options: The local driver's options (``type``, ``device``, ``o``): none supported.
            anonymous: Mark it anonymous (Docker's label).

        Returns:
            Its record, and whether it was made now.

        Raises:
            InvalidArgument: A bad name, another driver, or driver options.
        """
        import shutil

        from kobako.runtime.containers import _write_json

        name = os.urandom(32).hex() if name is None else check_name(name)
        if driver not in (None, "", "local"):
            raise InvalidArgument(
                f"create {name}: error looking up volume plugin {driver}: "
                f'plugin "{driver}" not found'
            )
        if options:
            keys = ", ".join(sorted(options))
            raise InvalidArgument(f"create {name}: local volume options are not supported: {keys}")
        with self.lock(name):
            existing = self._load(name)
            if existing is not None:
                return existing, False
            record_labels: dict[str, str] | None = dict(labels) if labels is not None else None
            if anonymous:
                record_labels = {**(record_labels or {}), ANONYMOUS_LABEL: ""}
            doc: dict[str, Any] = {
                "CreatedAt": _now(),
                "Driver": "local",
                "Labels": record_labels,
                "Mountpoint": self.data(name),
                "Name": name,
                "Options": dict(options) if options is not None else None,
                "Scope": "local",
            }
            building = os.path.join(self.root, f".{name}.new-{os.getpid()}")
            shutil.rmtree(building, ignore_errors=True)  # what a killed create of ours left
            os.mkdir(building, 0o701)
            try:
                os.mkdir(os.path.join(building, "_data"), 0o755)
                _write_json(os.path.join(building, "volume.json"), doc)
                os.rename(building, self.path(name))
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        return doc, True

    def get(self, name: str) -> dict[str, Any]:
        """A volume's record.

        Raises:
            NotFound: No volume has that name.
        """
        doc = self._load(name) if name and "/" not in name and not name.startswith(".") else None
        if doc is None:
            raise NotFound(f"get {name}: no such volume")
        return doc

    def list(self) -> builtins.list[dict[str, Any]]:
        """Every volume's record, by name."""
        self._cleanup()
        out = []
        for name in sorted(os.listdir(self.root)):
            if name.startswith("."):
                continue
            doc = self._load(name)
            if doc is not None:
                out.append(doc)
        return out

    def users(self) -> dict[str, builtins.list[str]]:
        """Volume name → the IDs of the containers whose records mount it."""
        from kobako.runtime.containers import ContainerStore

        out: dict[str, list[str]] = {}
        for doc in ContainerStore(self.store).list():
            for mount in doc.get("Mounts") or ():
                if mount.get("Type") == "volume" and mount.get("Name"):
                    ids = out.setdefault(mount["Name"], [])
                    if doc["Id"] not in ids:
                        ids.append(doc["Id"])
        return out

    # -- removal ------------------------------------------------------------------------

    def remove(self, name: str, *, force: bool = False) -> None:
        """Remove a volume no container uses (``docker volume rm``).

        Args:
            name: The volume.
            force: A missing volume is not an error (as Docker's ``-f``; a volume in use is
                still refused, as Docker refuses it).

        Raises:
            NotFound: No such volume (unless ``force``).
            Conflict: A container uses it.
        """
        try:
            self.get(name)  # checks the name before it names a lock file
        except NotFound:
            if force:
                return
            raise
        with self.lock(name):
            if self._load(name) is None:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = self.users().get(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            self._delete(name)

    def prune(
        self, *, every: bool = False, labels: Sequence[str] = ()
    ) -> tuple[builtins.list[str], int]:
        """Remove the volumes no container uses: anonymous ones, or all of them if ``every``.

        Args:
            every: Named volumes too (``volume prune -a``, the filter ``all=true``).
            labels: Docker's ``label`` filters: ``KEY``, ``KEY=VALUE``, or with ``!`` before
                the ``=`` (``label!=KEY``) those that must not match; all must hold.

        Returns:
            The names removed and the bytes freed.
        """
        from kobako.image.store import tree_size

        removed: list[str] = []
        freed = 0
        in_use = self.users()
        for doc in self.list():
            name = doc["Name"]
            if not (every or is_anonymous(doc)) or not match_labels(doc, labels):
                continue
            if name in in_use:
                continue
            with self.lock(name):
                if self._load(name) is None or name in self.users():
                    continue
                size = tree_size(self.data(name))
                self._delete(name)
            removed.append(name)
            freed += size
        return removed, freed

    def _delete(self, name: str) -> None:
        """Remove a volume's directory (the caller holds its lock)."""
        import shutil

        doomed = os.path.join(self.root, f".{name}.gone")
        shutil.rmtree(doomed, ignore_errors=True)  # what a killed removal left
        os.rename(self.path(name), doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _cleanup(self) -> None:
        """Remove what a killed removal or creation left (``.NAME.gone``, ``.NAME.new-PID``)."""
        import shutil

        for entry in os.listdir(self.root):
            if not entry.startswith("."):
                continue
            if entry.endswith(".gone") or not _pid_alive(entry.rpartition("-")[2]):
                shutil.rmtree(os.path.join(self.root, entry), ignore_errors=True)


def _pid_alive(text: str) -> bool:
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def match_labels(doc: Mapping[str, Any], filters: Sequence[str]) -> bool:
    """Whether a volume's labels pass Docker's ``label=`` (and ``label!=``) filters.

    A filter is ``KEY`` or ``KEY=VALUE``; one that starts with ``!`` must not match.
    """
    labels = doc.get("Labels") or {}
    for item in filters:
        negate = item.startswith("!")
        key, eq, value = item.removeprefix("!").partition("=")
        hit = key in labels and (not eq or labels[key] == value)
        if hit == negate:
            return False
    return True


def filter_bool(key: str, value: str) -> bool:
    """A boolean filter's value (``true``/``1``, ``false``/``0``).

    Raises:
        InvalidArgument: Anything else.
    """
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={value}'")


def select(
    docs: Sequence[dict[str, Any]],
    users: Mapping[str, Sequence[str]],
    filters: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """Apply ``docker volume ls`` filters: ``dangling``, ``name`` (a substring), ``label``
    (``KEY`` or ``KEY=VALUE``; ``label!=`` negates), ``driver``; all must hold."""
    dangling = [filter_bool("dangling", v) for v in filters.get("dangling", ())]
    out = []
    for doc in docs:
        if dangling and dangling[-1] != (doc["Name"] not in users):
            continue
        if filters.get("name") and not any(n in doc["Name"] for n in filters["name"]):
            continue
        if filters.get("driver") and doc["Driver"] not in filters["driver"]:
            continue
        if not match_labels(doc, filters.get("label", ())):
            continue
        out.append(doc)
    return out


def copy_image_content(lower: tuple[str, ...], scratch: str, path: str, data: str) -> None:
    """Copy what the image's layers have at ``path`` into a volume's ``data`` (first use).

    Nothing is copied when the image has no directory there, or when ``path`` is (or passes
    through) a symlink in the image: an image cannot make kobako copy a host directory.

    Args:
        lower: The image's layers, top first.
        scratch: A private directory where a merged view may be mounted for the copy.
        path: The absolute path in the container.
        data: The volume's ``_data``.

    Raises:
        LayerError: The copy failed.
    """
    from kobako.runtime.mounts import copy_tree, merged_view

    with merged_view(lower, scratch) as view:
        fd = _open_dir_nofollow(view, path)
        if fd < 0:
            return
        try:
            copy_tree(f"/proc/self/fd/{fd}", data, f"volume {path}")
        finally:
            os.close(fd)


def _open_dir_nofollow(root: str, path: str) -> int:
    """Open a directory below ``root`` without following any symlink; -1 if there is none.

    ``root`` itself is the store's (a layer's short link may name it) and is followed.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags & ~os.O_NOFOLLOW)
    try:
        for part in [p for p in path.split("/") if p]:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError:
                os.close(fd)
                return -1
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
