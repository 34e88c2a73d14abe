"""``kobako volume`` (``create``, ``ls``, ``inspect``, ``rm``, ``prune``), with docker's flags,
output and messages.

Like docker's, ``volume inspect`` and ``volume rm`` carry on past a volume that fails, print
each failure as one line and exit with status 1 if any failed.
"""

from __future__ import annotations

import sys

from kobako.cli.args import BOOL, STRING, STRING_ARRAY, Command, Flag, key_values, parse_filters
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from kobako.runtime.volumes import VolumeStore

CREATE = Command(
    "kobako volume create [OPTIONS] [VOLUME]",
    "Create a volume",
    (
        Flag("driver", "d", STRING, "Specify volume driver name", default="local"),
        Flag("label", "", STRING_ARRAY, "Set metadata for a volume", varname="list"),
        Flag("opt", "o", STRING_ARRAY, "Set driver specific options", varname="map"),
    ),
)
LS = Command(
    "kobako volume ls [OPTIONS]",
    "List volumes",
    (
        Flag("filter", "f", STRING_ARRAY, "Provide filter values (e.g. 'dangling=true')",
             varname="filter"),
        Flag("format", "", STRING,
             "Format output using a custom template: 'table', 'table TEMPLATE', 'json', "
             "'TEMPLATE'"),
        Flag("quiet", "q", BOOL, "Only display volume names"),
    ),
)  # fmt: skip
INSPECT = Command(
    "kobako volume inspect [OPTIONS] VOLUME [VOLUME...]",
    "Display detailed information on one or more volumes",
    (Flag("format", "f", STRING, "Format output using a custom template"),),
)
RM = Command(
    "kobako volume rm [OPTIONS] VOLUME [VOLUME...]",
    "Remove one or more volumes",
    (Flag("force", "f", BOOL, "Force the removal of one or more volumes"),),
)
PRUNE = Command(
    "kobako volume prune [OPTIONS]",
    "Remove unused local volumes",
    (
        Flag("all", "a", BOOL, "Remove all unused volumes, not just anonymous ones"),
        Flag("filter", "", STRING_ARRAY, "Provide filter values (e.g. 'label=<label>')",
             varname="filter"),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ),
)  # fmt: skip

VOLUME_USAGE = """\
Usage:  kobako volume COMMAND

Manage volumes

Commands:
  create      Create a volume
  inspect     Display detailed information on one or more volumes
  ls          List volumes
  prune       Remove unused local volumes
  rm          Remove one or more volumes

Run 'kobako volume COMMAND --help' for more information on a command.
"""

VOLUME_HEADERS = {
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "CreatedAt": "CREATED AT",
}
VOLUMES_TABLE = "table {{.Driver}}\t{{.Name}}"


def main(argv: list[str], verb: str = "volume") -> int:
    """Dispatch ``kobako volume SUB``."""
    del verb
    if not argv or argv[0] in ("-h", "--help"):
        print(VOLUME_USAGE, end="")
        return 0
    sub, argv = argv[0], argv[1:]
    handlers: dict[str, Callable[[list[str]], int]] = {
        "create": _create,
        "ls": _ls,
        "list": _ls,
        "inspect": _inspect,
        "rm": _rm,
        "remove": _rm,
        "prune": _prune,
    }
    if sub not in handlers:
        fail(f"'kobako volume {sub}' is not a kobako command")
    return handlers[sub](argv)


def _volumes() -> VolumeStore:
    from kobako.image.store import Store
    from kobako.runtime.volumes import VolumeStore

    return VolumeStore(Store.open())


def _create(argv: list[str]) -> int:
    o = CREATE.parse(argv)
    if len(o.args) > 1:
        fail(f"'kobako volume create' requires at most 1 argument, got {len(o.args)}")
    doc, _ = _volumes().create(
        o.args[0] if o.args else None,
        labels=key_values(o.get_strings("label"), "label"),
        driver=o.get_string("driver"),
        options=key_values(o.get_strings("opt"), "option"),
    )
    print(doc["Name"])
    return 0


def _labels_text(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _ls(argv: list[str]) -> int:
    from kobako.cli.fmt import write_list

    o = LS.parse(argv)
    if o.args:
        fail(f"'kobako volume ls' accepts no arguments, got {o.args[0]!r}")
    from kobako.runtime.volumes import select

    filters = parse_filters(o.get_strings("filter"), ("dangling", "name", "label", "driver"))
    volumes = _volumes()
    docs = select(volumes.list(), volumes.users(), filters)
    fmt = o.get_string("format")
    if o.get_bool("quiet") and fmt in ("", "table"):
        for doc in docs:
            print(doc["Name"])
        return 0
    rows = [
        {
            "Availability": "N/A",
            "Driver": doc["Driver"],
            "Group": "N/A",
            "Labels": _labels_text(doc.get("Labels")),
            "Links": "N/A",
            "Mountpoint": doc["Mountpoint"],
            "Name": doc["Name"],
            "Scope": doc["Scope"],
            "Size": "N/A",
            "Status": "N/A",
        }
        for doc in docs
    ]
    write_list(fmt, rows, default=VOLUMES_TABLE, headers=VOLUME_HEADERS)
    return 0


def _inspect(argv: list[str]) -> int:
    from kobako.cli.fmt import print_inspect
    from kobako.errors import NotFound

    o = INSPECT.parse(argv)
    if not o.args:
        fail("'kobako volume inspect' requires at least 1 argument")
    volumes = _volumes()
    docs = []
    failed = False
    for name in o.args:
        try:
            docs.append(volumes.get(name))
        except NotFound:
            print(f"kobako: No such volume: {name}", file=sys.stderr)
            failed = True
    print_inspect(docs, o.get_string("format"))
    return 1 if failed else 0


def _rm(argv: list[str]) -> int:
    from kobako.errors import KobakoError

    o = RM.parse(argv)
    if not o.args:
        fail("'kobako volume rm' requires at least 1 argument")
    volumes = _volumes()
    failed = False
    for name in o.args:
        try:
            volumes.remove(name, force=o.get_bool("force"))
        except KobakoError as e:
            print(f"kobako: {e}", file=sys.stderr)
            failed = True
            continue
        print(name)
    return 1 if failed else 0


def _prune(argv: list[str]) -> int:
    from kobako.cli.fmt import human_size
    from kobako.cli.images import confirm
    from kobako.runtime.volumes import filter_bool

    o = PRUNE.parse(argv)
    if o.args:
        fail(f"'kobako volume prune' accepts no arguments, got {o.args[0]!r}")
    filters = parse_filters(o.get_strings("filter"), ("label", "all"))
    every = o.get_bool("all") or any(filter_bool("all", v) for v in filters.get("all", ()))
    if not o.get_bool("force"):
        what = "all local volumes" if every else "anonymous local volumes"
        warning = f"WARNING! This will remove {what} not used by at least one container."
        if not confirm(f"{warning}\nAre you sure you want to continue?"):
            return 0
    names, freed = _volumes().prune(every=every, labels=filters.get("label", ()))
    if names:
        print("Deleted Volumes:\n" + "".join(name + "\n" for name in names))
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0
