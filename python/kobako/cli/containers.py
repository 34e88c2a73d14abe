"""Container verbs: ``ps``, ``rm``, ``diff``, ``commit``, ``export``, ``inspect``, ``container``."""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, INT, STRING, STRING_ARRAY, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.image.store import Store

PS = Command(
    "kobako ps [OPTIONS]",
    "List containers",
    (
        Flag("all", "a", BOOL, "Show all containers (default shows just running)"),
        Flag("quiet", "q", BOOL, "Only display container IDs"),
        Flag("no-trunc", "", BOOL, "Don't truncate output"),
        Flag("format", "", STRING, "Format output using a custom template: 'json'"),
        Flag("filter", "f", STRING_ARRAY, "Filter output based on conditions provided"),
    ),
)
RM = Command(
    "kobako rm [OPTIONS] CONTAINER [CONTAINER...]",
    "Remove one or more containers",
    (
        Flag("force", "f", BOOL, "Force the removal of a running container"),
        Flag("volumes", "v", BOOL, "Remove anonymous volumes associated with the container"),
    ),
)
DIFF = Command("kobako diff CONTAINER", "Inspect changes to files on a container's filesystem", ())
COMMIT = Command(
    "kobako commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
    "Create a new image from a container's changes",
    (
        Flag("author", "a", STRING, 'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")'),
        Flag("change", "c", STRING_ARRAY, "Apply Dockerfile instruction to the created image"),
        Flag("message", "m", STRING, "Commit message"),
        Flag("pause", "p", BOOL, "Pause container during commit", default=True),
    ),
)
EXPORT = Command(
    "kobako export [OPTIONS] CONTAINER",
    "Export a container's filesystem as a tar archive",
    (Flag("output", "o", STRING, "Write to a file, instead of STDOUT"),),
)
INSPECT = Command(
    "kobako inspect [OPTIONS] NAME|ID [NAME|ID...]",
    "Return low-level information on containers or images",
    (
        Flag("format", "f", STRING, "Format output using a custom template"),
        Flag("type", "", STRING, "Return JSON for specified type"),
    ),
)

START = Command(
    "kobako start [OPTIONS] CONTAINER [CONTAINER...]",
    "Start one or more stopped containers",
    (
        Flag("attach", "a", BOOL, "Attach STDOUT/STDERR and forward signals"),
        Flag("interactive", "i", BOOL, "Attach container's STDIN"),
    ),
)
STOP = Command(
    "kobako stop [OPTIONS] CONTAINER [CONTAINER...]",
    "Stop one or more running containers",
    (
        Flag("signal", "s", STRING, "Signal to send to the container"),
        Flag("time", "t", INT, "Seconds to wait before killing the container", default=10),
    ),
)
RESTART = Command(
    "kobako restart [OPTIONS] CONTAINER [CONTAINER...]",
    "Restart one or more containers",
    (
        Flag("signal", "s", STRING, "Signal to send to the container"),
        Flag("time", "t", INT, "Seconds to wait before killing the container", default=10),
    ),
)
KILL = Command(
    "kobako kill [OPTIONS] CONTAINER [CONTAINER...]",
    "Kill one or more running containers",
    (Flag("signal", "s", STRING, "Signal to send to the container", default="KILL"),),
)
WAIT = Command(
    "kobako wait CONTAINER [CONTAINER...]",
    "Block until one or more containers stop, then print their exit codes",
    (),
)
RENAME = Command("kobako rename CONTAINER NEW_NAME", "Rename a container", ())

CONTAINER_USAGE = """\
Usage:  kobako container COMMAND

Manage containers

Commands:
  commit      Create a new image from a container's changes
  create      Create a new container
  diff        Inspect changes to files or directories on a container's filesystem
  export      Export a container's filesystem as a tar archive
  inspect     Display detailed information on one or more containers
  ls          List containers
  prune       Remove all stopped containers
  rename      Rename a container
  rm          Remove one or more containers
  run         Create and run a new container from an image
  start       Start one or more stopped containers
  stop        Stop one or more running containers
  kill        Kill one or more running containers
  restart     Restart one or more containers
  wait        Block until one or more containers stop, then print their exit codes
"""


def main(argv: list[str], verb: str = "ps") -> int:
    """Dispatch a container verb."""
    if verb == "container":
        if not argv or argv[0] in ("-h", "--help"):
            print(CONTAINER_USAGE, end="")
            return 0
        sub, argv = argv[0], argv[1:]
        if sub in ("run", "create"):
            from kobako.cli import run

            return run.main(argv, sub)
        verb = {"ls": "ps", "list": "ps", "remove": "rm"}.get(sub, sub)
        known = (
            *("ps", "rm", "diff", "commit", "export", "inspect", "prune", "start", "wait"),
            *("stop", "kill", "restart"),
        )
        if verb not in (*known, "rename"):
            fail(f"'kobako container {sub}' is not a kobako command")
        if verb == "inspect":
            argv = ["--type", "container", *argv]
    handler = {
        "ps": _ps,
        "rm": _rm,
        "diff": _diff,
        "commit": _commit,
        "export": _export,
        "inspect": _inspect,
        "prune": _prune,
        "start": _start,
        "wait": _wait,
        "rename": _rename,
        "stop": _stop,
        "kill": _kill,
        "restart": _restart,
    }[verb]
    return handler(argv)


def _start(argv: list[str]) -> int:
    """``start``: run a created or stopped container again; detached, or to its end with -a."""
    from kobako.cli.run import _report, _with_stdin
    from kobako.runtime.containers import is_running
    from kobako.runtime.from_image import start
    from kobako.runtime.monitor import start_detached

    o = START.parse(argv)
    if not o.args:
        fail('"kobako start" requires at least 1 argument')
    attach = o.get_bool("attach") or o.get_bool("interactive")
    if attach and len(o.args) != 1:
        fail("you cannot start and attach multiple containers at once")
    store = _store()
    containers = _containers(store)
    if attach:
        doc = containers.get(o.args[0])
        if is_running(doc):
            fail(f"container {doc['Id'][:12]} is already running")
        spec = containers.spec(doc)
        interactive = o.get_bool("interactive")
        result = _with_stdin(interactive, lambda stdin: start(store, doc, spec, **stdin))
        return _report(result)

    def one(ref: str) -> None:
        doc = containers.get(ref)
        if not is_running(doc):  # as docker: starting a running container does nothing
            start_detached(store, doc, containers.spec(doc))

    return _each(o.args, one)


def _each(refs: list[str], action: Any) -> int:
    """Apply ``action`` to each container named, as docker's multi-container verbs do: at once
    (stopping fifty containers takes one timeout, not fifty), then print each name done in
    the order given, one line per failure (and exit status 1 if any)."""
    from kobako.errors import KobakoError

    def attempt(ref: str) -> str | None:
        try:
            action(ref)
        except KobakoError as e:
            return str(e)
        return None

    if len(refs) == 1:
        results = [attempt(refs[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(refs), 16)) as pool:
            results = list(pool.map(attempt, refs))
    failed = False
    for ref, error in zip(refs, results, strict=True):
        if error is None:
            print(ref, flush=True)
        else:
            print(f"kobako: {error}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _stop(argv: list[str], restart: bool = False) -> int:
    """``stop`` (and ``restart``, which starts each container again once it has stopped)."""
    from kobako.runtime.monitor import start_detached, stop
    from kobako.runtime.parse import parse_signal

    verb = "restart" if restart else "stop"
    o = (RESTART if restart else STOP).parse(argv)
    if not o.args:
        fail(f'"kobako {verb}" requires at least 1 argument')
    sig = o.get_string("signal") or None
    if sig:
        parse_signal(sig)
    store = _store()
    containers = _containers(store)
    timeout = o.get_int("time")

    def one(ref: str) -> None:
        doc = containers.get(ref)
        stop(store, doc, None if timeout < 0 else timeout, sig)
        if restart:
            doc = containers.get(doc["Id"])
            start_detached(store, doc, containers.spec(doc))

    return _each(o.args, one)


def _restart(argv: list[str]) -> int:
    return _stop(argv, restart=True)


def _kill(argv: list[str]) -> int:
    from kobako.errors import Conflict
    from kobako.runtime.containers import is_running
    from kobako.runtime.monitor import kill
    from kobako.runtime.parse import parse_signal

    o = KILL.parse(argv)
    if not o.args:
        fail('"kobako kill" requires at least 1 argument')
    sig = o.get_string("signal")
    parse_signal(sig)
    store = _store()
    containers = _containers(store)

    def one(ref: str) -> None:
        doc = containers.get(ref)
        if not is_running(doc):
            raise Conflict(
                f"cannot kill container: {ref}: container {doc['Id'][:12]} is not running"
            )
        kill(store, doc, sig)

    return _each(o.args, one)


def _wait(argv: list[str]) -> int:
    """``wait``: each container's exit code, once it is not running any more."""
    from kobako.errors import NotFound
    from kobako.runtime.monitor import wait_stopped

    o = WAIT.parse(argv)
    if not o.args:
        fail('"kobako wait" requires at least 1 argument')
    store = _store()
    containers = _containers(store)
    failed = False
    for ref in o.args:
        try:
            doc = wait_stopped(store, containers.get(ref)["Id"])
        except NotFound as e:
            print(f"kobako: {e}", file=sys.stderr)
            failed = True
            continue
        print(doc["State"].get("ExitCode", 0), flush=True)
    return 1 if failed else 0


def _rename(argv: list[str]) -> int:
    o = RENAME.parse(argv)
    if len(o.args) != 2:
        fail(f'"kobako rename" requires exactly 2 arguments, got {len(o.args)}')
    containers = _containers(_store())
    containers.rename(containers.get(o.args[0]), o.args[1])
    return 0


def _store() -> Store:
    from kobako.image.store import Store

    return Store.open()


def _containers(store: Store) -> Any:
    from kobako.runtime.containers import ContainerStore

    return ContainerStore(store)


def _ps(argv: list[str]) -> int:
    from kobako.cli.fmt import container_status, go_json, human_duration_since, print_table

    o = PS.parse(argv)
    if o.args:
        fail(f'"kobako ps" accepts no arguments, got {o.args[0]!r}')
    store = _store()
    docs = _containers(store).list()
    filters = _ps_filters(o.get_strings("filter"))
    if not o.get_bool("all") and not filters:  # as docker: a filter shows stopped ones too
        docs = [d for d in docs if d["State"].get("Status") in ("running", "paused", "restarting")]
    if filters:
        docs = [d for d in docs if _ps_match(store, d, filters)]
    trunc = not o.get_bool("no-trunc")
    if o.get_bool("quiet"):
        for doc in docs:
            print(doc["Id"][:12] if trunc else doc["Id"])
        return 0
    from kobako.cli.fmt import ports_column
    from kobako.runtime.observe import ports

    rows = []
    for doc in docs:
        command = " ".join([doc.get("Path", ""), *doc.get("Args", [])])
        if trunc and len(command) > 20:
            command = command[:19] + "…"
        rows.append(
            {
                "ID": doc["Id"][:12] if trunc else doc["Id"],
                "Image": doc.get("ImageName") or doc["Image"][7:19],
                "Command": f'"{command}"',
                "CreatedAt": doc["Created"],
                "RunningFor": human_duration_since(doc["Created"]),
                "Status": container_status(doc),
                "State": doc["State"].get("Status", ""),
                "Ports": ports_column(ports(doc)),
                "Names": doc["Name"].lstrip("/"),
            }
        )
    if o.get_string("format") == "json":
        for row in rows:
            print(go_json(row))
        return 0
    if o.get_string("format"):
        fail("--format: only 'json' is supported")
    header = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
    keys = ("ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names")
    print_table(header, [tuple(r[k] for k in keys) for r in rows])
    return 0


_PS_FILTERS = ("id", "name", "label", "status", "exited", "ancestor")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def _ps_filters(items: list[str]) -> dict[str, list[str]]:
    """``--filter key=value`` (repeatable): values of one key are alternatives, keys all hold."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"bad format of filter (expected name=value): {item!r}")
        if key not in _PS_FILTERS:
            fail(f"invalid filter '{key}'")
        if key == "status" and value not in _STATUSES:
            fail(f"invalid filter 'status={value}'")
        if key == "exited" and not value.lstrip("-").isdigit():
            fail(f"invalid filter 'exited={value}'")
        out.setdefault(key, []).append(value)
    return out


def _ps_match(store: Store, doc: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    state = doc["State"]
    labels = doc["Config"].get("Labels") or {}
    for key, values in filters.items():
        if key == "id":
            ok = any(doc["Id"].startswith(v) for v in values)
        elif key == "name":  # docker matches a substring (a regexp, in fact) of the name
            ok = any(v.lstrip("/") in doc["Name"].lstrip("/") for v in values)
        elif key == "label":
            ok = all(
                (k in labels) and (not sep or labels[k] == v)
                for k, sep, v in (item.partition("=") for item in values)
            )
        elif key == "status":
            ok = state.get("Status") in values
        elif key == "exited":
            ok = state.get("Status") == "exited" and str(state.get("ExitCode", 0)) in values
        else:  # ancestor: the image, by any of its names or its ID
            ok = any(_is_image(store, doc, v) for v in values)
        if not ok:
            return False
    return True


def _is_image(store: Store, doc: dict[str, Any], ref: str) -> bool:
    from kobako.errors import KobakoError

    try:
        return bool(store.image(ref).id == doc["Image"])
    except KobakoError:
        return False


def _rm(argv: list[str]) -> int:
    from kobako.runtime.containers import is_running
    from kobako.runtime.monitor import stop

    o = RM.parse(argv)
    if not o.args:
        fail("'kobako rm' requires at least 1 argument")
    store = _store()
    containers = _containers(store)

    def one(ref: str) -> None:
        doc = containers.get(ref)
        if is_running(doc) and o.get_bool("force"):
            stop(store, doc, 0, "SIGKILL")
            doc = containers.get(doc["Id"])
        containers.remove(doc, volumes=o.get_bool("volumes"))

    return _each(o.args, one)


PRUNE = Command(
    "kobako container prune [OPTIONS]",
    "Remove all stopped containers",
    (Flag("force", "f", BOOL, "Do not prompt for confirmation"),),
)


def _prune(argv: list[str]) -> int:
    from kobako.cli.fmt import human_size

    o = PRUNE.parse(argv)
    if not o.get_bool("force"):
        print(
            "WARNING! This will remove all stopped containers.\n"
            "Are you sure you want to continue? [y/N] ",
            end="",
            flush=True,
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    store = _store()
    containers = _containers(store)
    removed = []
    freed = 0
    for doc in containers.list():
        if doc["State"].get("Status") in ("exited", "created"):
            freed += _tree_bytes(doc["GraphDriver"]["Data"]["UpperDir"])
            containers.remove(doc)
            removed.append(doc["Id"])
    if removed:
        print("Deleted Containers:")
        for cid in removed:
            print(cid)
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def _tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _one(argv: list[str], command: Command, verb: str) -> tuple[Any, list[str]]:
    o = command.parse(argv)
    if not o.args:
        fail(f"'kobako {verb}' requires at least 1 argument")
    return o, o.args


def _diff(argv: list[str]) -> int:
    from kobako.runtime.from_image import changes

    _, args = _one(argv, DIFF, "diff")
    if len(args) != 1:
        fail(f"'kobako diff' requires exactly 1 argument, got {len(args)}")
    store = _store()
    doc = _containers(store).get(args[0])
    for kind, path in changes(store, doc):
        print(f"{kind} {path}")
    return 0


def _commit(argv: list[str]) -> int:
    from kobako.runtime.from_image import commit

    o, args = _one(argv, COMMIT, "commit")
    if len(args) > 2:
        fail(f"'kobako commit' requires at most 2 arguments, got {len(args)}")
    store = _store()
    doc = _containers(store).get(args[0])
    image = commit(
        store,
        doc,
        args[1] if len(args) > 1 else None,
        message=o.get_string("message"),
        author=o.get_string("author"),
        changes_=o.get_strings("change"),
    )
    print(image.id)
    return 0


def _export(argv: list[str]) -> int:
    from kobako.runtime.from_image import export

    o, args = _one(argv, EXPORT, "export")
    if len(args) != 1:
        fail(f"'kobako export' requires exactly 1 argument, got {len(args)}")
    store = _store()
    doc = _containers(store).get(args[0])
    output = o.get_string("output")
    if not output:
        if os.isatty(1):
            fail("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        sys.stdout.flush()
        export(store, doc, 1)
        return 0
    tmp = f"{output}.kobako-{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        export(store, doc, fd)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, output)
    return 0


def _inspect(argv: list[str]) -> int:
    from kobako.cli.fmt import print_inspect
    from kobako.errors import NotFound

    o = INSPECT.parse(argv)
    if not o.args:
        fail("'kobako inspect' requires at least 1 argument")
    kind = o.get_string("type")
    if kind not in ("", "container", "image"):
        fail(f'"{kind}" is not a valid value for --type')
    store = _store()
    containers = _containers(store)
    docs: list[Any] = []
    failed = False
    for ref in o.args:
        doc: Any = None
        if kind in ("", "container"):
            try:
                doc = containers.get(ref)
            except NotFound:
                doc = None
        if doc is None and kind in ("", "image"):
            from kobako.images import inspect_doc

            try:
                doc = inspect_doc(store, store.image(ref))
            except NotFound:
                doc = None
        if doc is None:
            print(f"kobako: No such object: {ref}", file=sys.stderr)
            failed = True
            continue
        docs.append(doc)
    print_inspect(docs, o.get_string("format"))
    return 1 if failed else 0
