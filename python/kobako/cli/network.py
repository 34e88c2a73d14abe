"""``kobako network`` (``create``, ``ls``, ``inspect``, ``rm``, ``connect``, ``disconnect``,
``prune``), with docker's flags, output and messages.

Like docker's, ``network inspect`` and ``network rm`` carry on past a network that fails,
print each failure as one line and exit with status 1 if any failed.
"""

from __future__ import annotations

import sys

from kobako.cli.args import BOOL, STRING, STRING_ARRAY, Command, Flag, key_values, parse_filters
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kobako.image.store import Store

CREATE = Command(
    "kobako network create [OPTIONS] NETWORK",
    "Create a network",
    (
        Flag("driver", "d", STRING, "Driver to manage the Network", default="bridge"),
        Flag("gateway", "", STRING_ARRAY, "IPv4 Gateway for the master subnet",
             varname="strings"),
        Flag("internal", "", BOOL, "Restrict external access to the network"),
        Flag("label", "", STRING_ARRAY, "Set metadata on a network", varname="list"),
        Flag("opt", "o", STRING_ARRAY, "Set driver specific options", varname="map"),
        Flag("subnet", "", STRING_ARRAY,
             "Subnet in CIDR format that represents a network segment", varname="strings"),
    ),
)  # fmt: skip
LS = Command(
    "kobako network ls [OPTIONS]",
    "List networks",
    (
        Flag("filter", "f", STRING_ARRAY, "Provide filter values (e.g. 'driver=bridge')",
             varname="filter"),
        Flag("format", "", STRING,
             "Format output using a custom template: 'table', 'table TEMPLATE', 'json', "
             "'TEMPLATE'"),
        Flag("no-trunc", "", BOOL, "Do not truncate the output"),
        Flag("quiet", "q", BOOL, "Only display network IDs"),
    ),
)  # fmt: skip
INSPECT = Command(
    "kobako network inspect [OPTIONS] NETWORK [NETWORK...]",
    "Display detailed information on one or more networks",
    (Flag("format", "f", STRING, "Format output using a custom template"),),
)
RM = Command(
    "kobako network rm NETWORK [NETWORK...]",
    "Remove one or more networks",
    (Flag("force", "f", BOOL, "Do not error if the network does not exist"),),
)
CONNECT = Command(
    "kobako network connect [OPTIONS] NETWORK CONTAINER",
    "Connect a container to a network",
    (
        Flag("alias", "", STRING_ARRAY, "Add network-scoped alias for the container",
             varname="strings"),
        Flag("ip", "", STRING, 'IPv4 address (e.g., "172.30.100.104")'),
    ),
)  # fmt: skip
DISCONNECT = Command(
    "kobako network disconnect [OPTIONS] NETWORK CONTAINER",
    "Disconnect a container from a network",
    (Flag("force", "f", BOOL, "Force the container to disconnect from a network"),),
)
PRUNE = Command(
    "kobako network prune [OPTIONS]",
    "Remove all unused networks",
    (
        Flag("filter", "", STRING_ARRAY, "Provide filter values (e.g. 'label=<label>')",
             varname="filter"),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ),
)  # fmt: skip

NETWORK_USAGE = """\
Usage:  kobako network COMMAND

Manage networks

Commands:
  connect     Connect a container to a network
  create      Create a network
  disconnect  Disconnect a container from a network
  inspect     Display detailed information on one or more networks
  ls          List networks
  prune       Remove all unused networks
  rm          Remove one or more networks

Run 'kobako network COMMAND --help' for more information on a command.
"""

NETWORK_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
NETWORKS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"


def main(argv: list[str], verb: str = "network") -> int:
    """Dispatch ``kobako network SUB``."""
    del verb
    if not argv or argv[0] in ("-h", "--help"):
        print(NETWORK_USAGE, end="")
        return 0
    sub, argv = argv[0], argv[1:]
    handlers: dict[str, Callable[[list[str]], int]] = {
        "create": _create,
        "ls": _ls,
        "list": _ls,
        "inspect": _inspect,
        "rm": _rm,
        "remove": _rm,
        "connect": _connect,
        "disconnect": _disconnect,
        "prune": _prune,
    }
    if sub not in handlers:
        fail(f"'kobako network {sub}' is not a kobako command")
    return handlers[sub](argv)


def _store() -> Store:
    from kobako.image.store import Store

    return Store.open()


def _one(values: list[str], flag: str) -> str | None:
    if len(values) > 1:
        fail(f"only one {flag} per network is supported (IPv4), got {len(values)}")
    return values[0] if values else None


def _create(argv: list[str]) -> int:
    from kobako.network.store import NetworkStore

    o = CREATE.parse(argv)
    if len(o.args) != 1:
        fail(f"'kobako network create' requires exactly 1 argument, got {len(o.args)}")
    doc = NetworkStore(_store()).create(
        o.args[0],
        driver=o.get_string("driver"),
        subnet=_one(o.get_strings("subnet"), "--subnet"),
        gateway=_one(o.get_strings("gateway"), "--gateway"),
        internal=o.get_bool("internal"),
        labels=key_values(o.get_strings("label"), "label"),
        options=key_values(o.get_strings("opt"), "option"),
    )
    print(doc["Id"])
    return 0


def _created_at(created: str) -> str:
    """``Created`` as docker's ``CreatedAt`` column prints it (Go's ``time.String``)."""
    import time

    from kobako.cli.fmt import parse_time

    stamp = parse_time(created) or 0
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(stamp))


def _ls(argv: list[str]) -> int:
    from kobako.cli.fmt import write_list
    from kobako.network.store import NetworkStore
    from kobako.networks import FILTERS, select

    o = LS.parse(argv)
    if o.args:
        fail(f"'kobako network ls' accepts no arguments, got {o.args[0]!r}")
    filters = parse_filters(o.get_strings("filter"), FILTERS)
    docs = select(NetworkStore(_store()).list(), filters)
    width = None if o.get_bool("no-trunc") else 12
    fmt = o.get_string("format")
    if o.get_bool("quiet") and fmt in ("", "table"):
        for doc in docs:
            print(doc["Id"][:width])
        return 0
    rows = [
        {
            "CreatedAt": _created_at(doc.get("Created", "")),
            "Driver": doc["Driver"],
            "ID": doc["Id"][:width],
            "IPv6": str(bool(doc.get("EnableIPv6"))).lower(),
            "Internal": str(bool(doc.get("Internal"))).lower(),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted((doc.get("Labels") or {}).items())),
            "Name": doc["Name"],
            "Scope": doc["Scope"],
        }
        for doc in docs
    ]
    write_list(fmt, rows, default=NETWORKS_TABLE, headers=NETWORK_HEADERS)
    return 0


def _inspect(argv: list[str]) -> int:
    from kobako.cli.fmt import print_inspect
    from kobako.errors import KobakoError
    from kobako.network.store import NetworkStore
    from kobako.networks import inspect

    o = INSPECT.parse(argv)
    if not o.args:
        fail("'kobako network inspect' requires at least 1 argument")
    store = _store()
    networks = NetworkStore(store)
    docs: list[dict[str, Any]] = []
    failed = False
    for name in o.args:
        try:
            docs.append(networks.get(name))
        except KobakoError as e:
            print(f"kobako: {_no_such(name, e)}", file=sys.stderr)
            failed = True
    print_inspect(inspect(store, docs), o.get_string("format"))
    return 1 if failed else 0


def _no_such(name: str, e: Exception) -> str:
    from kobako.errors import NetworkNotFound

    return f"No such network: {name}" if isinstance(e, NetworkNotFound) else str(e)


def _rm(argv: list[str]) -> int:
    from kobako.errors import KobakoError, NetworkNotFound
    from kobako.network.store import NetworkStore

    o = RM.parse(argv)
    if not o.args:
        fail("'kobako network rm' requires at least 1 argument")
    networks = NetworkStore(_store())
    failed = False
    for name in o.args:
        try:
            networks.remove(name)
        except KobakoError as e:
            if not (isinstance(e, NetworkNotFound) and o.get_bool("force")):
                print(f"kobako: {e}", file=sys.stderr)
                failed = True
            continue
        print(name)
    return 1 if failed else 0


def _connect(argv: list[str]) -> int:
    from kobako.network.connect import connect

    o = CONNECT.parse(argv)
    if len(o.args) != 2:
        fail(f"'kobako network connect' requires exactly 2 arguments, got {len(o.args)}")
    network, container = o.args
    connect(
        _store(),
        container,
        network,
        ip=o.get_string("ip"),
        aliases=tuple(o.get_strings("alias")),
    )
    return 0


def _disconnect(argv: list[str]) -> int:
    from kobako.network.connect import disconnect

    o = DISCONNECT.parse(argv)
    if len(o.args) != 2:
        fail(f"'kobako network disconnect' requires exactly 2 arguments, got {len(o.args)}")
    network, container = o.args
    disconnect(_store(), container, network, force=o.get_bool("force"))
    return 0


def _prune(argv: list[str]) -> int:
    from kobako.cli.images import confirm
    from kobako.network.store import NetworkStore

    o = PRUNE.parse(argv)
    if o.args:
        fail(f"'kobako network prune' accepts no arguments, got {o.args[0]!r}")
    filters = parse_filters(o.get_strings("filter"), ("label",))
    if not o.get_bool("force"):
        warning = (
            "WARNING! This will remove all custom networks not used by at least one container."
        )
        if not confirm(f"{warning}\nAre you sure you want to continue?"):
            return 0
    names = NetworkStore(_store()).prune(filters.get("label", ()))
    if names:
        print("Deleted Networks:\n" + "".join(name + "\n" for name in names))
    return 0
