"""Containers kept in the store: their record, their writable layer, their image's lease.

A container made from an image lives in ``ROOT/containers/ID/``::

    config.json     its record, in the shape of ``docker inspect`` (written atomically)
    upper/ work/    its overlayfs writable layer and overlayfs's work directory
    rootfs/         the mountpoint; the overlay is mounted there only inside the
                    container's own mount namespace, so nothing is left mounted on the host

The image's blobs and layers are leased to the container (:meth:`Store.lease`) for as long as
it exists, so neither ``rmi -f`` nor a prune can pull its layers from under it. Names are
unique: they are checked and taken under ``containers/names.lock``.
"""

from __future__ import annotations

import os
import time

from kobako.errors import Conflict, ContainerNotFound, InvalidArgument, NotFound
from kobako.runtime.proc import boot_id, process_start

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from typing import Any

    from kobako.image.store import ImageRecord, Layer, Store
    from kobako.runtime.spec import Overlay, Spec

__all__ = ["ContainerStore", "is_running", "now_rfc3339", "random_name", "read_exit"]

_HEX = frozenset("0123456789abcdef")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# A short version of Docker's namesgenerator: adjective_surname.
_ADJECTIVES = _words(
    "admiring adoring agitated amazing angry awesome blissful bold boring brave busy charming "
    "clever cool compassionate competent confident crazy dazzling determined distracted dreamy "
    "eager ecstatic elastic elated elegant eloquent epic exciting fervent festive flamboyant "
    "focused friendly frosty funny gallant gifted goofy gracious great happy hardcore heuristic "
    "hopeful hungry infallible inspiring intelligent interesting jolly jovial keen kind laughing "
    "loving lucid magical modest musing mystifying naughty nervous nice nifty nostalgic "
    "objective optimistic peaceful pedantic pensive practical priceless quirky quizzical "
    "recursing relaxed reverent romantic sad serene sharp silly sleepy stoic strange stupefied "
    "suspicious sweet tender thirsty trusting unruffled upbeat vibrant vigilant vigorous "
    "wizardly wonderful xenodochial youthful zealous zen"
)
_SURNAMES = _words(
    "agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach "
    "bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn blackwell bohr booth "
    "borg bose bouman boyd brahmagupta brattain brown buck burnell cannon carson cartwright "
    "cerf chandrasekhar chaplygin chatelet chatterjee chebyshev cohen colden cori cray curie "
    "darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley edison "
    "einstein elbakyan elgamal elion ellis engelbart euclid euler faraday feistel fermat fermi "
    "feynman franklin gagarin galileo galois ganguly gates gauss germain goldberg goldstine "
    "goldwasser golick goodall gould greider grothendieck haibt hamilton haslett hawking "
    "heisenberg hellman hermann herschel hertz heyrovsky hodgkin hofstadter hoover hopper hugle "
    "hypatia jackson jang jemison jennings jepsen johnson joliot jones kalam kapitsa kare keldysh "
    "keller kepler khayyam khorana kilby kirch knuth kowalevski lalande lamarr lamport leakey "
    "leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira margulis "
    "matsumoto maxwell mayer mccarthy mcclintock mclaren mclean mcnulty meitner mendel "
    "mendeleev merkle mestorf mirzakhani montalcini moore morse moser murdock napier nash "
    "neumann newton nightingale nobel noether northcutt noyce panini pare pascal pasteur payne "
    "perlman pike poincare poitras proskuriakova ptolemy raman ramanujan rhodes ride ritchie "
    "robinson roentgen rosalind rubin saha sammet sanderson satoshi shamir shannon shaw shirley "
    "shockley shtern sinoussi snyder solomon spence stonebraker sutherland swanson swartz "
    "swirles taussig tesla tharp thompson torvalds tu turing varahamihira vaughan villani "
    "visvesvaraya volhard wescoff wilbur wiles williams williamson wilson wing wozniak wright wu "
    "yalow yonath zhukovsky"
)


def random_name() -> str:
    """A name as Docker makes them: ``adjective_surname`` (never ``boring_wozniak``)."""
    while True:
        a = _ADJECTIVES[int.from_bytes(os.urandom(2)) % len(_ADJECTIVES)]
        s = _SURNAMES[int.from_bytes(os.urandom(2)) % len(_SURNAMES)]
        if (a, s) != ("boring", "wozniak"):
            return f"{a}_{s}"


def now_rfc3339() -> str:
    """The current UTC time as Docker writes it (RFC 3339 with nanoseconds)."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def _check_name(name: str) -> str:
    name = name.removeprefix("/")
    ok = (
        name
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    )
    if not ok:
        raise InvalidArgument(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    return name


class ContainerStore:
    """The containers of one kobako root.

    Args:
        store: The image store they are made from (and under whose root they live).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = os.path.join(store.root, "containers")
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.cleanup()

    def path(self, cid: str) -> str:
        """The container's directory."""
        return os.path.join(self.root, cid)

    # -- records ------------------------------------------------------------------------

    def create(
        self,
        image: ImageRecord,
        image_name: str,
        *,
        name: str | None,
        config: dict[str, Any],
        host_config: dict[str, Any],
        layers: list[Layer],
    ) -> dict[str, Any]:
        """Make a container's record and writable layer, and lease its image.

        Args:
            image: The image it runs.
            image_name: The image as the user named it.
            name: Its name (a random one if None).
            config: Docker's ``Config`` (Cmd, Entrypoint, Env, WorkingDir, User, Labels…).
            host_config: Docker's ``HostConfig`` as far as kobako keeps it.
            layers: The image's extracted layers, bottom first.

        Returns:
            The record (``docker inspect``'s shape).

        Raises:
            Conflict: The name is taken.
            InvalidArgument: The name is malformed.
        """
        from kobako.image.store import _Lock

        cid = os.urandom(32).hex()
        with _Lock(os.path.join(self.root, "names.lock")):
            taken = {c["Name"].lstrip("/"): c["Id"] for c in self.list()}
            if name is None:
                name = random_name()
                while name in taken:
                    name = random_name()
            else:
                name = _check_name(name)
                if name in taken:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{taken[name]}". You have to remove (or rename) that container to be '
                        "able to reuse that name."
                    )
            base = self.path(cid)
            building = base + ".new"
            os.mkdir(building, 0o700)
            for sub in ("upper", "work", "rootfs"):
                os.mkdir(os.path.join(building, sub), 0o755)
            doc: dict[str, Any] = {
                "Id": cid,
                "Created": now_rfc3339(),
                "Path": "",
                "Args": [],
                "State": {
                    "Status": "created",
                    "Running": False,
                    "Paused": False,
                    "OOMKilled": False,
                    "Pid": 0,
                    "ExitCode": 0,
                    "Error": "",
                    "StartedAt": "0001-01-01T00:00:00Z",
                    "FinishedAt": "0001-01-01T00:00:00Z",
                },
                "Image": image.id,
                "RestartCount": 0,
                "LogPath": "",
                "ImageManifest": image.manifest_digest,
                "ImageName": image_name,
                "Name": "/" + name,
                "Driver": "overlay",
                "GraphDriver": {
                    "Name": "overlay",
                    "Data": {
                        "LowerDir": ":".join(layer.path for layer in reversed(layers)),
                        "UpperDir": os.path.join(base, "upper"),
                        "WorkDir": os.path.join(base, "work"),
                        "MergedDir": os.path.join(base, "rootfs"),
                    },
                },
                "Mounts": [],
                "Config": config,
                "HostConfig": host_config,
            }
            self.store.lease(cid, image.manifest_digest)
            _write_json(os.path.join(building, "config.json"), doc, durable=_durable(doc))
            os.rename(building, base)
        return doc

    def lock(self, cid: str) -> Any:
        """The container's lock, held around every read-modify-write of its record.

        Raises:
            ContainerNotFound: The container is gone.
        """
        from kobako.image.store import _Lock

        if not os.path.isdir(self.path(cid)):
            raise ContainerNotFound(f"No such container: {cid}")
        return _Lock(os.path.join(self.path(cid), "lock"))

    def load(self, cid: str) -> dict[str, Any]:
        """A container's record as stored (not settled; see :meth:`settle`).

        Raises:
            ContainerNotFound: The container is gone.
        """
        doc = self._load(cid)
        if doc is None:
            raise ContainerNotFound(f"No such container: {cid}")
        return doc

    def settle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` as it truly is: a record that says running whose processes are gone (killed,
        or the host rebooted) says exited, with the code the monitor recorded if it did."""
        return _settle(doc, self.path(doc["Id"]))

    def save(self, doc: dict[str, Any]) -> None:
        """Write a container's record atomically."""
        path = os.path.join(self.path(doc["Id"]), "config.json")
        _write_json(path, doc, durable=_durable(doc))

    def save_spec(self, doc: dict[str, Any], spec: Spec) -> None:
        """Keep the spec ``create`` made for the container, for ``start`` to run again."""
        from kobako.runtime.spec import to_json

        path = os.path.join(self.path(doc["Id"]), "spec.json")
        _write_json(path, to_json(spec), durable=_durable(doc))

    def spec(self, doc: dict[str, Any]) -> Spec:
        """The spec kept by :meth:`save_spec`.

        Raises:
            InvalidArgument: The container has none (made by an older kobako, or by ``run
                --rootfs``), or it is unreadable.
        """
        import json

        from kobako.runtime.spec import from_json

        try:
            with open(os.path.join(self.path(doc["Id"]), "spec.json"), "rb") as f:
                return from_json(json.load(f))
        except (FileNotFoundError, ValueError):
            raise InvalidArgument(
                f"container {doc['Id'][:12]} cannot be started again: it has no kept spec"
            ) from None

    def rename(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        """Give a container another name (``docker rename``); returns the record saved.

        Raises:
            InvalidArgument: The name is not valid.
            Conflict: Another container has it.
        """
        from kobako.image.store import _Lock

        name = _check_name(name)
        with _Lock(os.path.join(self.root, "names.lock")):
            taken = {c["Name"].lstrip("/"): c["Id"] for c in self.list()}
            if taken.get(name, doc["Id"]) != doc["Id"]:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{taken[name]}". You have to remove (or rename) that container to be '
                    "able to reuse that name."
                )
            current = self._load(doc["Id"])
            if current is None:
                raise ContainerNotFound(f"No such container: {doc['Id']}")
            current["Name"] = "/" + name
            self.save(current)
            return current

    def list(self) -> list[dict[str, Any]]:
        """Every container's record, newest first."""
        out = []
        for cid in os.listdir(self.root):
            if len(cid) != 64 or not set(cid) <= _HEX:
                continue
            doc = self._load(cid)
            if doc is not None:
                out.append(self._settled(doc))
        out.sort(key=lambda d: d.get("Created", ""), reverse=True)
        return out

    def _load(self, cid: str) -> dict[str, Any] | None:
        import json

        try:
            with open(os.path.join(self.path(cid), "config.json"), "rb") as f:
                doc: dict[str, Any] = json.load(f)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        return doc

    def get(self, ref: str) -> dict[str, Any]:
        """A container by full ID, name, or unique ID prefix (as Docker looks them up).

        Raises:
            ContainerNotFound: Nothing matches.
            InvalidArgument: An ID prefix matches several containers.
        """
        if len(ref) == 64 and set(ref) <= _HEX and (doc := self._load(ref)) is not None:
            return self._settled(doc)
        docs = self.list()
        for doc in docs:
            if doc["Name"].lstrip("/") == ref.lstrip("/"):
                return doc
        if ref and set(ref) <= _HEX:
            matches = [d for d in docs if d["Id"].startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise ContainerNotFound(f"No such container: {ref}")

    def _settled(self, doc: dict[str, Any]) -> dict[str, Any]:
        """:meth:`settle`, and if the container ended with nobody left to record it (its
        monitor killed too), record it now and remove its cgroup and runtime files."""
        status = doc["State"].get("Status")
        settled = self.settle(doc)
        if settled["State"]["Status"] == status or status not in (
            "running",
            "paused",
            "restarting",
        ):
            return settled
        from kobako.errors import KobakoError
        from kobako.runtime.lifecycle import cleanup

        try:
            with self.lock(doc["Id"]):
                current = self._load(doc["Id"])
                if current is None or current["State"].get("Status") != status:
                    return settled if current is None else self.settle(current)
                current = self.settle(current)
                cleanup(doc["Id"])
                self.save(current)
                return current
        except (OSError, KobakoError):
            return settled

    def users_of(self, image_id: str) -> builtins.list[dict[str, Any]]:
        """The containers made from an image."""
        return [d for d in self.list() if d.get("Image") == image_id]

    def remove(self, doc: dict[str, Any], *, volumes: bool = False) -> None:
        """Remove a container's directory, its lease, and its anonymous volumes if asked.

        An anonymous volume another container also mounts is kept, as Docker keeps it.

        Raises:
            Conflict: It is running.
        """
        import shutil

        if is_running(doc):
            raise Conflict(
                f"cannot remove container {doc['Name'].lstrip('/')}: container is running: "
                "stop the container before removing or force remove"
            )
        cid = doc["Id"]
        base = self.path(cid)
        doomed = base + ".gone"
        try:
            os.rename(base, doomed)
        except FileNotFoundError:
            raise ContainerNotFound(f"No such container: {cid}") from None
        shutil.rmtree(doomed, ignore_errors=True)
        self.store.release(cid)
        if volumes:
            self._remove_anonymous_volumes(doc)

    def _remove_anonymous_volumes(self, doc: dict[str, Any]) -> None:
        """Remove the anonymous volumes a removed container mounted, unless another uses one."""
        from kobako.runtime.volumes import VolumeStore, is_anonymous

        names = [m["Name"] for m in doc.get("Mounts") or () if m.get("Type") == "volume"]
        if not names:
            return
        volumes = VolumeStore(self.store)
        for name in names:
            try:
                if is_anonymous(volumes.get(name)):
                    volumes.remove(name)
            except (Conflict, NotFound):
                continue

    def cleanup(self) -> None:
        """Remove what a killed command left: half-made and half-removed container dirs.

        Runs under the names lock, which every command making a container holds while its
        directory is still ``ID.new``.
        """
        leftovers = [n for n in os.listdir(self.root) if n.endswith((".new", ".gone"))]
        if not leftovers:
            return
        import shutil

        from kobako.image.store import _Lock

        with _Lock(os.path.join(self.root, "names.lock")):
            for name in leftovers:
                path = os.path.join(self.root, name)
                cid = name.rsplit(".", 1)[0]
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.exists(self.path(cid)):
                    self.store.release(cid)

    def _short(self, layer_dir: str) -> str:
        if os.path.dirname(os.path.dirname(layer_dir)) != os.path.join(self.store.root, "layers"):
            return layer_dir  # not a store layer (an empty dir of the container's own)
        return _short_link(self.store.root, layer_dir)

    def overlay(self, doc: dict[str, Any]) -> Overlay:
        """The overlay that is the container's root filesystem."""
        from kobako.runtime.spec import Overlay

        data = doc["GraphDriver"]["Data"]
        lower = tuple(self._short(p) for p in data["LowerDir"].split(":") if p)
        if not lower:  # an image without layers: an empty lower dir
            empty = os.path.join(self.path(doc["Id"]), "empty")
            os.makedirs(empty, mode=0o755, exist_ok=True)
            lower = (empty,)
        return Overlay(lower=lower, upper=data["UpperDir"], work=data["WorkDir"])


def _short_link(store_root: str, layer_dir: str) -> str:
    """A short name for a layer's directory: ``ROOT/l/<20 hex>``, a symlink made on demand.

    overlayfs takes its layers in one page of mount options; with names this short (and
    relative to the store's root) about 170 layers fit, as Docker's overlay2 does with its
    ``l/`` links.
    """
    hexpart = os.path.basename(os.path.dirname(layer_dir))
    links = os.path.join(store_root, "l")
    link = os.path.join(links, hexpart[:20])
    if not os.path.islink(link):
        os.makedirs(links, mode=0o700, exist_ok=True)
        tmp = f"{link}.{os.getpid()}.tmp"
        try:
            os.symlink(os.path.relpath(layer_dir, links), tmp)
            os.rename(tmp, link)
        except FileExistsError:
            os.unlink(tmp)
    return link


def _same(state: dict[str, Any], pid_key: str, start_key: str) -> bool:
    """Whether the process the record names (pid, start time, boot) is still there."""
    pid = state.get(pid_key) or 0
    if pid <= 0 or process_start(pid) != state.get(start_key):
        return False
    boot = state.get("BootId")
    return not boot or boot == boot_id()


def is_running(doc: dict[str, Any]) -> bool:
    """Whether a (settled) record says the container runs, is paused or is restarting."""
    return doc["State"].get("Status") in ("running", "paused", "restarting")


def read_exit(base: str) -> tuple[int, str] | None:
    """The monitor's ``exit`` file in a container's directory: (exit code, RFC 3339 time)."""
    try:
        with open(os.path.join(base, "exit")) as f:
            code, ns = f.read().split()
    except (OSError, ValueError):
        return None
    secs, frac = divmod(int(ns), 1_000_000_000)
    return int(code), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def _settle(doc: dict[str, Any], base: str) -> dict[str, Any]:
    """A record that says running whose processes are gone says exited.

    Running means: the container's process lives, or its monitor (or, for a container run
    in the foreground, the kobako process running it) lives and has not written the exit
    file yet. A container restarting lives while its exit command waits out the back-off.
    """
    state = doc["State"]
    status = state.get("Status")
    if status not in ("running", "paused", "restarting"):
        return doc
    if status != "restarting" and _same(state, "Pid", "PidStart"):
        return doc
    ended = read_exit(base) if state.get("PidStart") else None
    if _same(state, "MonitorPid", "MonitorStart") and (status == "restarting" or ended is None):
        return doc
    code, finished = ended if ended else (137, "")
    state.update(
        Status="exited", Running=False, Paused=False, Restarting=False, Pid=0, ExitCode=code
    )
    state.setdefault("Error", "")
    from kobako.network import stopped_settings

    stopped_settings(doc)
    if finished:
        state["FinishedAt"] = finished
    elif state.get("FinishedAt", "").startswith("0001"):
        state["FinishedAt"] = state.get("StartedAt", "")
    return doc


def _durable(doc: dict[str, Any]) -> bool:
    """Whether a container's files must survive a power loss: not those of a container
    removed at its end (``--rm``), which nothing needs afterwards. (A killed command loses
    nothing either way: its writes are in the page cache.) Saves a few fsyncs per run."""
    return not (doc.get("HostConfig") or {}).get("AutoRemove")


def _write_json(path: str, doc: dict[str, Any], *, durable: bool = True) -> None:
    """Write ``doc`` atomically (temp + rename), synced first when ``durable``.

    Compact JSON: the C encoder (``indent`` would take the pure-Python one, milliseconds
    per container record)."""
    import json

    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
