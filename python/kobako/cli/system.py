"""``kobako system df`` and ``kobako system prune``: what the store takes, and reclaiming it.

``df`` counts what is on disk: the blobs and extracted layers of the store (an image's share
is what a container using it keeps: its leased blobs and layers), each container's writable
layer, and the volumes under ``ROOT/volumes``. ``prune`` removes stopped containers,
unused images (dangling ones, or all with ``-a``) and, with ``--volumes``, anonymous volumes no
container uses, then collects the blobs and layers nothing leads to.
"""

from __future__ import annotations

import os

from kobako.cli.args import BOOL, STRING, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore

DF = Command(
    "kobako system df [OPTIONS]",
    "Show kobako disk usage",
    (
        Flag("format", "", STRING, "Format output using a custom template: 'table', 'json'"),
        Flag("verbose", "v", BOOL, "Show detailed information on space usage"),
    ),
)
PRUNE = Command(
    "kobako system prune [OPTIONS]",
    "Remove unused data",
    (
        Flag("all", "a", BOOL, "Remove all unused images not just dangling ones"),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
        Flag("volumes", "", BOOL, "Prune anonymous volumes"),
    ),
)

SYSTEM_USAGE = """\
Usage:  kobako system COMMAND

Manage kobako

Commands:
  df          Show kobako disk usage
  prune       Remove unused data

Run 'kobako system COMMAND --help' for more information on a command.
"""

DF_HEADERS = {
    "Type": "TYPE",
    "TotalCount": "TOTAL",
    "Active": "ACTIVE",
    "Size": "SIZE",
    "Reclaimable": "RECLAIMABLE",
}
DF_TABLE = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_IMAGES_TABLE = (
    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}"
    "\t{{.UniqueSize}}\t{{.Containers}}"
)
DF_CONTAINERS_TABLE = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}"
    "\t{{.Status}}\t{{.Names}}"
)
DF_CONTAINER_HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "LocalVolumes": "LOCAL VOLUMES",
    "Size": "SIZE",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "Names": "NAMES",
}
DF_VOLUMES_TABLE = "table {{.Name}}\t{{.Links}}\t{{.Size}}"
DF_VOLUME_HEADERS = {"Name": "VOLUME NAME", "Links": "LINKS", "Size": "SIZE"}
DF_CACHE_HEADER = "CACHE ID\tCACHE TYPE\tSIZE\tCREATED\tLAST USED\tUSAGE\tSHARED"


def main(argv: list[str], verb: str = "system") -> int:
    """``kobako system df`` and ``kobako system prune``."""
    del verb
    if not argv or argv[0] in ("-h", "--help"):
        print(SYSTEM_USAGE, end="")
        return 0
    sub, argv = argv[0], argv[1:]
    if sub == "df":
        return _df(argv)
    if sub == "prune":
        return _prune(argv)
    fail(f"'kobako system {sub}' is not a kobako command")


def _tree_size(path: str) -> int:
    from kobako.image.store import tree_size

    return tree_size(path)


def _volumes(store: Store) -> dict[str, str]:
    """Every volume: name → its directory (``ROOT/volumes/NAME``)."""
    base = os.path.join(store.root, "volumes")
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return {}
    return {n: os.path.join(base, n) for n in sorted(names) if not n.startswith(".")}


def _volume_links(docs: list[dict[str, Any]]) -> dict[str, int]:
    """Volume name → how many containers mount it."""
    links: dict[str, int] = {}
    for doc in docs:
        for mount in doc.get("Mounts") or ():
            if mount.get("Type") == "volume" and mount.get("Name"):
                links[mount["Name"]] = links.get(mount["Name"], 0) + 1
    return links


def _pinned(store: Store) -> tuple[set[str], set[str]]:
    """The blobs and layers that containers hold leases on (what pruning cannot free)."""
    from kobako.errors import InvalidArgument, NotFound
    from kobako.image.manifest import chain_ids, parse_config

    blobs: set[str] = set()
    layers: set[str] = set()
    for digest in set(store.leases().values()):
        try:
            manifest = store.manifest(digest)
            config = parse_config(store.read_blob(manifest.config.digest))
        except (NotFound, InvalidArgument):
            continue
        blobs.update((digest, manifest.config.digest, *(d.digest for d in manifest.layers)))
        layers.update(chain_ids(config.diff_ids))
    return blobs, layers


def _reclaimable(size: int, reclaimable: int) -> str:
    from kobako.cli.fmt import human_size

    if size > 0:
        return f"{human_size(reclaimable)} ({reclaimable * 100 // size}%)"
    return human_size(reclaimable)


def _df(argv: list[str]) -> int:
    from kobako.cli.fmt import human_size, write_list
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore

    o = DF.parse(argv)
    if o.args:
        fail(f"'kobako system df' accepts no arguments, got {o.args[0]!r}")
    store = Store.open()
    containers = ContainerStore(store)
    docs = containers.list()
    records = store.images()

    # images: every blob and extracted layer in the store
    blob_sizes = {d: _file_size(store.blob_path(d)) for d in store.blobs()}
    layer_sizes = {}
    for chain in store.layers():
        layer = store.layer(chain)
        layer_sizes[chain] = layer.size if layer is not None else 0
    images_size = sum(blob_sizes.values()) + sum(layer_sizes.values())
    pinned_blobs, pinned_layers = _pinned(store)
    pinned = sum(blob_sizes.get(d, 0) for d in pinned_blobs)
    pinned += sum(layer_sizes.get(c, 0) for c in pinned_layers)
    used_ids = {doc.get("Image") for doc in docs}

    # containers: their writable layers
    upper = {doc["Id"]: _tree_size(doc["GraphDriver"]["Data"]["UpperDir"]) for doc in docs}
    running = [doc for doc in docs if doc["State"].get("Status") == "running"]
    containers_size = sum(upper.values())
    stopped_size = containers_size - sum(upper[doc["Id"]] for doc in running)

    # volumes
    volumes = _volumes(store)
    links = _volume_links(docs)
    volume_sizes = {name: _tree_size(os.path.join(path, "_data")) for name, path in volumes.items()}
    volumes_size = sum(volume_sizes.values())
    unused_volumes = sum(size for name, size in volume_sizes.items() if not links.get(name))

    if o.get_bool("verbose"):
        _df_verbose(store, records, docs, upper, volume_sizes, links)
        return 0
    rows = [
        {
            "Type": "Images",
            "TotalCount": str(len(records)),
            "Active": str(sum(1 for r in records if r.id in used_ids)),
            "Size": human_size(images_size),
            "Reclaimable": _reclaimable(images_size, images_size - pinned),
        },
        {
            "Type": "Containers",
            "TotalCount": str(len(docs)),
            "Active": str(len(running)),
            "Size": human_size(containers_size),
            "Reclaimable": _reclaimable(containers_size, stopped_size),
        },
        {
            "Type": "Local Volumes",
            "TotalCount": str(len(volumes)),
            "Active": str(sum(1 for name in volumes if links.get(name))),
            "Size": human_size(volumes_size),
            "Reclaimable": _reclaimable(volumes_size, unused_volumes),
        },
        {
            "Type": "Build Cache",
            "TotalCount": "0",
            "Active": "0",
            "Size": human_size(0),
            "Reclaimable": human_size(0),
        },
    ]
    write_list(o.get_string("format"), rows, default=DF_TABLE, headers=DF_HEADERS)
    return 0


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _df_verbose(
    store: Store,
    records: list[Any],
    docs: list[dict[str, Any]],
    upper: dict[str, int],
    volume_sizes: dict[str, int],
    links: dict[str, int],
) -> None:
    """``system df -v``: a table each for images, containers, volumes and the build cache."""
    import sys

    from kobako.cli.fmt import (
        container_status,
        ellipsis,
        human_duration_since,
        human_size,
        print_table,
        write_list,
    )
    from kobako.cli.images import IMAGE_HEADERS, Usage, image_row

    usage = Usage(store, records, docs)
    rows = [image_row(r, r.names[0] if r.names else None, usage) for r in records]
    print("Images space usage:\n")
    write_list("", rows, default=DF_IMAGES_TABLE, headers=IMAGE_HEADERS)

    print("\nContainers space usage:\n")
    container_rows = []
    for doc in docs:
        command = " ".join([doc.get("Path", ""), *doc.get("Args", [])]).strip()
        mounts = doc.get("Mounts") or ()
        container_rows.append(
            {
                "ID": doc["Id"][:12],
                "Image": doc.get("ImageName") or doc.get("Image", "")[7:19],
                "Command": f'"{ellipsis(command, 20)}"',
                "LocalVolumes": str(sum(1 for m in mounts if m.get("Type") == "volume")),
                "Size": human_size(upper[doc["Id"]], 3),
                "RunningFor": human_duration_since(doc.get("Created", "")),
                "Status": container_status(doc),
                "Names": doc["Name"].lstrip("/"),
            }
        )
    write_list("", container_rows, default=DF_CONTAINERS_TABLE, headers=DF_CONTAINER_HEADERS)

    print("\nLocal Volumes space usage:\n")
    volume_rows = [
        {"Name": name, "Links": str(links.get(name, 0)), "Size": human_size(size)}
        for name, size in volume_sizes.items()
    ]
    write_list("", volume_rows, default=DF_VOLUMES_TABLE, headers=DF_VOLUME_HEADERS)

    print(f"\nBuild cache usage: {human_size(0)}\n")
    print_table(DF_CACHE_HEADER.split("\t"), [], file=sys.stdout)


def _prune(argv: list[str]) -> int:
    from kobako.cli.fmt import human_size
    from kobako.cli.images import confirm, prune_images
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore

    o = PRUNE.parse(argv)
    if o.args:
        fail(f"'kobako system prune' accepts no arguments, got {o.args[0]!r}")
    every = o.get_bool("all")
    with_volumes = o.get_bool("volumes")
    if not o.get_bool("force"):
        warnings = ["all stopped containers"]
        if with_volumes:
            warnings.append("all anonymous volumes not used by at least one container")
        warnings.append(
            "all images without at least one container associated to them"
            if every
            else "all dangling images"
        )
        listed = "".join(f"\n  - {w}" for w in warnings)
        if not confirm(f"WARNING! This will remove:{listed}\n\nAre you sure you want to continue?"):
            return 0
    store = Store.open()
    containers = ContainerStore(store)
    removed, freed = _prune_containers(containers)
    if removed:
        print("Deleted Containers:\n" + "".join(cid + "\n" for cid in removed))
    if with_volumes:
        names, size = _prune_volumes(store)
        freed += size
        if names:
            print("Deleted Volumes:\n" + "".join(name + "\n" for name in names))
    lines, size = prune_images(store, every=every)
    freed += size
    if lines:
        print("Deleted Images:\n" + "".join(line + "\n" for line in lines))
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def _prune_containers(containers: ContainerStore) -> tuple[list[str], int]:
    """Remove every container that is not running; returns their IDs and the bytes freed."""
    from kobako.errors import Conflict, ContainerNotFound

    removed = []
    freed = 0
    for doc in containers.list():
        if doc["State"].get("Status") not in ("exited", "created"):
            continue
        size = _tree_size(doc["GraphDriver"]["Data"]["UpperDir"])
        try:
            containers.remove(doc)
        except (Conflict, ContainerNotFound):  # started, or removed, by someone else meanwhile
            continue
        removed.append(doc["Id"])
        freed += size
    return removed, freed


def _prune_volumes(store: Store) -> tuple[list[str], int]:
    """Remove the anonymous volumes no container uses; returns their names and the bytes freed.

    Named volumes stay, as with Docker 23 and later (``volume prune -a`` removes them).
    """
    from kobako.runtime.volumes import VolumeStore

    return VolumeStore(store).prune()
