"""Image verbs: ``images``, ``history``, ``tag``, ``rmi``, ``load``, ``save``, ``import`` and
``image`` (``ls``, ``inspect``, ``history``, ``tag``, ``rm``, ``prune``, ``load``, ``save``,
``import``), with docker's flags, output and messages.

Like docker's, ``rmi`` and ``image inspect`` carry on past an image that fails, print each
failure as one line and exit with status 1 if any failed.
"""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, STRING, STRING_ARRAY, Command, Flag
from kobako.cli.main import fail
from kobako.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from kobako.image.store import ImageRecord, Store

_FORMAT_HELP = (
    "Format output using a custom template: 'table', 'table TEMPLATE', 'json', 'TEMPLATE'"
)

IMAGES = Command(
    "kobako images [OPTIONS] [REPOSITORY[:TAG]]",
    "List images",
    (
        Flag("all", "a", BOOL, "Show all images (default hides intermediate images)"),
        Flag("digests", "", BOOL, "Show digests"),
        Flag(
            "filter",
            "f",
            STRING_ARRAY,
            "Filter output based on conditions provided",
            varname="filter",
        ),
        Flag("format", "", STRING, _FORMAT_HELP),
        Flag("no-trunc", "", BOOL, "Don't truncate output"),
        Flag("quiet", "q", BOOL, "Only show image IDs"),
    ),
)
HISTORY = Command(
    "kobako history [OPTIONS] IMAGE",
    "Show the history of an image",
    (
        Flag("format", "", STRING, _FORMAT_HELP),
        Flag("human", "H", BOOL, "Print sizes and dates in human readable format", default=True),
        Flag("no-trunc", "", BOOL, "Don't truncate output"),
        Flag("quiet", "q", BOOL, "Only show image IDs"),
    ),
)
TAG = Command(
    "kobako tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
    "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
    (),
)
RMI = Command(
    "kobako rmi [OPTIONS] IMAGE [IMAGE...]",
    "Remove one or more images",
    (
        Flag("force", "f", BOOL, "Force removal of the image"),
        Flag("no-prune", "", BOOL, "Do not delete untagged parents"),
    ),
)
INSPECT = Command(
    "kobako image inspect [OPTIONS] IMAGE [IMAGE...]",
    "Display detailed information on one or more images",
    (Flag("format", "f", STRING, "Format output using a custom template"),),
)
PRUNE = Command(
    "kobako image prune [OPTIONS]",
    "Remove unused images",
    (
        Flag("all", "a", BOOL, "Remove all unused images, not just dangling ones"),
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
    ),
)
LOAD = Command(
    "kobako load [OPTIONS]",
    "Load an image from a tar archive or STDIN",
    (
        Flag("input", "i", STRING, "Read from tar archive file, instead of STDIN"),
        Flag("quiet", "q", BOOL, "Suppress the load output"),
    ),
)
SAVE = Command(
    "kobako save [OPTIONS] IMAGE [IMAGE...]",
    "Save one or more images to a tar archive (streamed to STDOUT by default)",
    (Flag("output", "o", STRING, "Write to a file, instead of STDOUT"),),
)
IMPORT = Command(
    "kobako import [OPTIONS] file|- [REPOSITORY[:TAG]]",
    "Import the contents from a tarball to create a filesystem image",
    (
        Flag("change", "c", STRING_ARRAY, "Apply Dockerfile instruction to the created image",
             varname="list"),
        Flag("message", "m", STRING, "Set commit message for imported image"),
    ),
)  # fmt: skip

IMAGE_USAGE = """\
Usage:  kobako image COMMAND

Manage images

Commands:
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Display detailed information on one or more images
  load        Load an image from a tar archive or STDIN
  ls          List images
  prune       Remove unused images
  rm          Remove one or more images
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE

Run 'kobako image COMMAND --help' for more information on a command.
"""

#: ``image SUB`` → the verb that serves it.
_SUBCOMMANDS = {
    "ls": "images",
    "list": "images",
    "inspect": "inspect",
    "history": "history",
    "tag": "tag",
    "rm": "rmi",
    "remove": "rmi",
    "rmi": "rmi",
    "prune": "prune",
    "load": "load",
    "save": "save",
    "import": "import",
}

IMAGE_HEADERS = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
    "VirtualSize": "SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
}
_CREATED = "{{if .CreatedSince}}{{.CreatedSince}}{{else}}N/A{{end}}"
IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t" + _CREATED + "\t{{.Size}}"
IMAGES_TABLE_DIGESTS = (
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t" + _CREATED + "\t{{.Size}}"
)
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_TABLE_RAW = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"

#: docker's history shows dates before this as blank (2000-01-01T00:00:00Z).
_EPOCH = 946684800


def main(argv: list[str], verb: str = "images") -> int:
    """Dispatch an image verb (``verb`` as main found it; ``image`` takes a subcommand)."""
    if verb == "image":
        if not argv or argv[0] in ("-h", "--help"):
            print(IMAGE_USAGE, end="")
            return 0
        sub, argv = argv[0], argv[1:]
        if sub not in _SUBCOMMANDS:
            fail(f"'kobako image {sub}' is not a kobako command")
        verb = _SUBCOMMANDS[sub]
    handlers: dict[str, Callable[[list[str]], int]] = {
        "images": _images,
        "history": _history,
        "tag": _tag,
        "rmi": _rmi,
        "inspect": _inspect,
        "prune": _prune,
        "load": _load,
        "save": _save,
        "import": _import,
    }
    return handlers[verb](argv)


def _store() -> Store:
    from kobako.image.store import Store

    return Store.open()


def _short(image_id: str, trunc: bool = True) -> str:
    """An image ID as docker lists it: 12 hex digits, or whole with ``--no-trunc``."""
    return image_id.split(":", 1)[-1][:12] if trunc else image_id


def _created(record: ImageRecord) -> float | None:
    from kobako.cli.fmt import parse_time

    return parse_time(record.config.created)


# -- images -----------------------------------------------------------------------------


class Usage:
    """What each image's layers take and share, and how many containers use it.

    Args:
        store: The store.
        records: Its images.
        containers: Every container's record.
    """

    def __init__(
        self, store: Store, records: list[ImageRecord], containers: list[dict[str, Any]]
    ) -> None:
        from kobako.image.manifest import chain_ids

        self.chains = {r.id: chain_ids(r.config.diff_ids) for r in records}
        users: dict[str, int] = {}
        for chains in self.chains.values():
            for chain in set(chains):
                users[chain] = users.get(chain, 0) + 1
        self.layer_size: dict[str, int] = {}
        for chain in users:
            layer = store.layer(chain)
            self.layer_size[chain] = layer.size if layer is not None else 0
        self._users = users
        self.containers: dict[str, int] = {}
        for doc in containers:
            image = doc.get("Image", "")
            self.containers[image] = self.containers.get(image, 0) + 1

    def size(self, image_id: str) -> int:
        """The bytes of the image's extracted layers."""
        return sum(self.layer_size[c] for c in set(self.chains[image_id]))

    def shared(self, image_id: str) -> int:
        """The bytes of its layers that other images use too."""
        return sum(self.layer_size[c] for c in set(self.chains[image_id]) if self._users[c] > 1)


def image_row(
    record: ImageRecord,
    name: str | None,
    usage: Usage,
    *,
    trunc: bool = True,
    digest: str = "<none>",
) -> dict[str, str]:
    """One row of ``docker images`` (the fields ``--format`` can name).

    Args:
        record: The image.
        name: The full name this row shows, or None for ``<none>``.
        usage: Sizes and container counts.
        trunc: Shorten the ID to 12 hex digits.
        digest: What the DIGEST column shows.
    """
    import time

    from kobako.cli.fmt import human_duration, human_size
    from kobako.image.reference import parse

    repository = tag = "<none>"
    if name is not None:
        ref = parse(name, default_tag=False)
        repository, tag = ref.familiar_repository, ref.tag or "<none>"
    created = _created(record)
    size = usage.size(record.id)
    shared = usage.shared(record.id)
    stamp = created if created is not None else 0
    return {
        "Containers": str(usage.containers.get(record.id, 0)),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(stamp)),
        "CreatedSince": "" if created is None else human_duration(time.time() - created) + " ago",
        "Digest": digest,
        "ID": _short(record.id, trunc),
        "Repository": repository,
        "SharedSize": human_size(shared),
        "Size": human_size(size, 3),
        "Tag": tag,
        "UniqueSize": human_size(size - shared),
        "VirtualSize": human_size(size),
    }


def _filter(value: str) -> tuple[str, str]:
    key, eq, rest = value.partition("=")
    if not eq:
        raise InvalidArgument("bad format of filter (expected name=value)")
    return key.strip().lower(), rest.strip()


def _bool_filter(key: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={value}'")


def _match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``; ``[...]`` classes, ``\\`` escapes.

    Raises:
        InvalidArgument: The pattern is malformed.
    """
    import re

    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i >= len(pattern):
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            body = pattern[i:end]
            negate = body.startswith("^")
            chars = body[1:] if negate else body
            if not chars:
                raise InvalidArgument(f"syntax error in pattern {pattern!r}")
            escaped = "".join("\\" + ch if ch in "\\]^[" else ch for ch in chars)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return re.fullmatch("".join(out), name) is not None


def _reference_match(patterns: list[str], name: str) -> bool:
    """docker's ``reference.FamiliarMatch``: the familiar name with its tag, or without."""
    from kobako.image.reference import parse

    ref = parse(name, default_tag=False)
    return any(_match(p, ref.familiar) or _match(p, ref.familiar_repository) for p in patterns)


def select_images(
    store: Store, records: list[ImageRecord], filters: list[tuple[str, str]]
) -> list[tuple[ImageRecord, list[str | None]]]:
    """Apply ``docker images`` filters: each image kept, with the names its rows show.

    Supported: ``dangling=true|false``, ``reference=PATTERN`` (repeatable: any matches),
    ``label=KEY`` or ``label=KEY=VALUE`` (repeatable: all match), ``before=IMAGE``,
    ``since=IMAGE``.

    Raises:
        InvalidArgument: An unknown filter or a bad value.
        ImageNotFound: ``before`` or ``since`` names no image.
    """
    by_key: dict[str, list[str]] = {}
    for key, value in filters:
        if key not in ("dangling", "reference", "label", "before", "since"):
            raise InvalidArgument(f"invalid filter '{key}'")
        by_key.setdefault(key, []).append(value)
    dangling = [_bool_filter("dangling", v) for v in by_key.get("dangling", ())]
    bounds: list[tuple[str, float]] = []
    for key in ("before", "since"):
        for ref in by_key.get(key, ()):
            bounds.append((key, _created(store.image(ref)) or 0.0))
    out: list[tuple[ImageRecord, list[str | None]]] = []
    for record in records:
        if dangling and dangling[-1] != (not record.names):
            continue
        labels = record.config.labels
        wanted = by_key.get("label", ())
        if not all(
            (k in labels and labels[k] == v) if eq else k in labels
            for k, eq, v in (w.partition("=") for w in wanted)
        ):
            continue
        created = _created(record) or 0.0
        if not all(created < t if key == "before" else created > t for key, t in bounds):
            continue
        names: list[str | None] = list(record.names)
        if "reference" in by_key:
            names = [n for n in record.names if _reference_match(by_key["reference"], n)]
            if not names:
                continue
        out.append((record, names or [None]))
    out.sort(key=lambda item: (-(_created(item[0]) or 0.0), item[0].id))
    return out


def _images(argv: list[str]) -> int:
    from kobako.cli.fmt import write_list
    from kobako.runtime.containers import ContainerStore

    o = IMAGES.parse(argv)
    if len(o.args) > 1:
        fail(f"'kobako images' accepts at most 1 argument, got {len(o.args)}")
    filters = o.each("filter", _filter)
    if o.args:
        filters.append(("reference", o.args[0]))
    store = _store()
    records = store.images()
    selected = select_images(store, records, filters)
    trunc = not o.get_bool("no-trunc")
    fmt = o.get_string("format")
    if o.get_bool("quiet") and fmt in ("", "table"):
        seen: set[str] = set()
        for record, _ in selected:
            if record.id not in seen:
                seen.add(record.id)
                print(_short(record.id, trunc))
        return 0
    usage = Usage(store, records, ContainerStore(store).list())
    digests = o.get_bool("digests") or "{{.Digest}}" in fmt
    rows = []
    for record, names in selected:
        for name in names:
            digest = record.manifest_digest if digests and name is not None else "<none>"
            rows.append(image_row(record, name, usage, trunc=trunc, digest=digest))
    if fmt.startswith("table") and o.get_bool("digests") and "{{.Digest}}" not in fmt:
        fmt += "\t{{.Digest}}"
    default = IMAGES_TABLE_DIGESTS if o.get_bool("digests") else IMAGES_TABLE
    write_list(fmt, rows, default=default, headers=IMAGE_HEADERS)
    return 0


# -- inspect and history ----------------------------------------------------------------


def _inspect(argv: list[str]) -> int:
    from kobako.cli.fmt import print_inspect
    from kobako.errors import NotFound
    from kobako.images import inspect_doc

    o = INSPECT.parse(argv)
    if not o.args:
        fail("'kobako image inspect' requires at least 1 argument")
    store = _store()
    docs = []
    failed = False
    for ref in o.args:
        try:
            docs.append(inspect_doc(store, store.image(ref)))
        except NotFound:
            print(f"kobako: No such image: {ref}", file=sys.stderr)
            failed = True
    print_inspect(docs, o.get_string("format"))
    return 1 if failed else 0


def history_rows(store: Store, record: ImageRecord) -> list[dict[str, Any]]:
    """The image's history, newest first, as docker's daemon reports it.

    Each entry that made a layer is given that layer's size; the newest entry has the image's
    ID and the others ``<missing>``, as docker shows images it did not build itself.

    Returns:
        Rows with ``ID``, ``Created`` (seconds, 0 if unknown), ``CreatedBy``, ``Size``
        (bytes), ``Comment``.
    """
    from kobako.cli.fmt import parse_time
    from kobako.image.manifest import chain_ids

    raw = record.config.raw.get("history")
    entries = [h for h in raw if isinstance(h, dict)] if isinstance(raw, list) else []
    chains = chain_ids(record.config.diff_ids)
    rows: list[dict[str, Any]] = []
    layer_index = 0
    for entry in entries:
        size = 0
        if not entry.get("empty_layer"):
            if layer_index < len(chains):
                layer = store.layer(chains[layer_index])
                size = layer.size if layer is not None else 0
            layer_index += 1
        rows.append(
            {
                "ID": "<missing>",
                "Created": int(parse_time(str(entry.get("created") or "")) or 0),
                "CreatedBy": str(entry.get("created_by") or ""),
                "Size": size,
                "Comment": str(entry.get("comment") or ""),
            }
        )
    rows.reverse()
    if rows:
        rows[0]["ID"] = record.id
    return rows


def _history(argv: list[str]) -> int:
    import time

    from kobako.cli.fmt import ellipsis, human_duration, human_size, write_list

    o = HISTORY.parse(argv)
    if len(o.args) != 1:
        fail(f"'kobako history' requires exactly 1 argument, got {len(o.args)}")
    store = _store()
    record = store.image(o.args[0])
    trunc = not o.get_bool("no-trunc")
    human = o.get_bool("human")
    rows = []
    for h in history_rows(store, record):
        created_at = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(h["Created"]))
        if created_at.endswith("+0000"):
            created_at = created_at[:-5] + "Z"
        else:  # RFC 3339 offsets have a colon: +01:00
            created_at = created_at[:-2] + ":" + created_at[-2:]
        since = created_at
        if human:
            since = ""
            if h["Created"] > _EPOCH:
                since = human_duration(time.time() - h["Created"]) + " ago"
        created_by = h["CreatedBy"].replace("\t", " ")
        rows.append(
            {
                "ID": h["ID"] if h["ID"] == "<missing>" else _short(h["ID"], trunc),
                "CreatedSince": since,
                "CreatedAt": created_at,
                "CreatedBy": ellipsis(created_by, 45) if trunc else created_by,
                "Size": human_size(h["Size"], 3) if human else str(h["Size"]),
                "Comment": h["Comment"],
            }
        )
    fmt = o.get_string("format")
    if o.get_bool("quiet") and (not fmt or fmt == "table"):
        fmt = "{{.ID}}"
    default = HISTORY_TABLE if human else HISTORY_TABLE_RAW
    write_list(fmt, rows, default=default, headers=HISTORY_HEADERS)
    return 0


# -- names --------------------------------------------------------------------------------


def _tag(argv: list[str]) -> int:
    from kobako.image.reference import parse

    o = TAG.parse(argv)
    if len(o.args) != 2:
        fail(f"'kobako tag' requires exactly 2 arguments, got {len(o.args)}")
    source, target = o.args
    if parse(target).digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {target!r}")
    store = _store()
    record = store.image(source)
    store.tag(target, record.manifest_digest)
    return 0


def _rmi(argv: list[str]) -> int:
    from kobako.errors import KobakoError, NotFound
    from kobako.images import remove_image

    o = RMI.parse(argv)
    if not o.args:
        fail("'kobako rmi' requires at least 1 argument")
    force = o.get_bool("force")
    store = _store()
    failed = fatal = False
    for ref in o.args:
        try:
            events = remove_image(store, ref, force=force, noprune=o.get_bool("no-prune"))
        except KobakoError as e:
            print(f"kobako: {e}", file=sys.stderr)
            failed = True
            fatal = fatal or not isinstance(e, NotFound)
            continue
        for what, name in events:
            print(f"{what}: {name}")
    # as docker: with --force, images that were not there are reported but not an error
    return 1 if failed and (fatal or not force) else 0


def prune_images(store: Store, *, every: bool) -> tuple[list[str], int]:
    """Remove the images no container uses: unnamed ones, or all of them if ``every``.

    Then collect the blobs and layers nothing leads to any more.

    Returns:
        docker's report lines (``untagged: NAME``, ``deleted: sha256:…``) and the bytes freed.
    """
    from kobako.image.reference import familiar
    from kobako.runtime.containers import ContainerStore

    used = {doc.get("Image") for doc in ContainerStore(store).list()}
    lines = []
    for record in store.images():
        if record.id in used or (record.names and not every):
            continue
        lines += [f"untagged: {familiar(name)}" for name in record.names]
        store.forget(record.manifest_digest)
        lines.append(f"deleted: {record.id}")
    collected = store.collect()
    return lines, collected.freed


def confirm(warning: str) -> bool:
    """Ask ``warning`` + `` [y/N] `` on standard output and read one answer line."""
    print(f"{warning} [y/N] ", end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _prune(argv: list[str]) -> int:
    from kobako.cli.fmt import human_size

    o = PRUNE.parse(argv)
    if o.args:
        fail(f"'kobako image prune' accepts no arguments, got {o.args[0]!r}")
    every = o.get_bool("all")
    if not o.get_bool("force"):
        what = (
            "all images without at least one container associated to them"
            if every
            else "all dangling images"
        )
        if not confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?"):
            return 0
    lines, freed = prune_images(_store(), every=every)
    if lines:
        print("Deleted Images:\n" + "".join(line + "\n" for line in lines))
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


# -- archives -----------------------------------------------------------------------------


def _open_input(path: str) -> BinaryIO:
    from kobako.image.archive import open_input

    return open_input(path)


def _load(argv: list[str]) -> int:
    from kobako.image.reference import familiar

    o = LOAD.parse(argv)
    if o.args:
        fail(f"'kobako load' accepts no arguments, got {o.args[0]!r}")
    path = o.get_string("input")
    if path:
        source = _open_input(path)
    elif sys.stdin.isatty():
        raise InvalidArgument("requested load from stdin, but stdin is empty")
    else:
        source = sys.stdin.buffer
    from kobako.image import archive

    try:
        loaded = archive.load(_store(), source)
    finally:
        if path:
            source.close()
    for image in loaded:
        if image.names:
            for name in image.names:
                print(f"Loaded image: {familiar(name)}")
        else:
            print(f"Loaded image ID: {image.id}")
    return 0


def _save(argv: list[str]) -> int:
    from kobako.image import archive

    o = SAVE.parse(argv)
    if not o.args:
        fail("'kobako save' requires at least 1 argument")
    output = o.get_string("output")
    store = _store()
    if not output:
        if os.isatty(1):
            raise InvalidArgument(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect"
            )
        sys.stdout.flush()
        archive.save(store, o.args, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    archive.save(store, o.args, output)  # written whole or not at all
    return 0


def _import(argv: list[str]) -> int:
    from kobako.image import archive
    from kobako.image.reference import parse

    o = IMPORT.parse(argv)
    if not 1 <= len(o.args) <= 2:
        fail(f"'kobako import' requires 1 or 2 arguments, got {len(o.args)}")
    source = o.args[0]
    reference = o.args[1] if len(o.args) > 1 else None
    if reference is not None:
        parse(reference)
    if source.startswith(("http://", "https://")):
        fail(f"importing from a URL is not supported: {source}")
    store = _store()
    changes = o.get_strings("change")
    message = o.get_string("message")
    if source == "-":
        record = archive.import_image(
            store, sys.stdin.buffer, reference, changes=changes, message=message
        )
    else:
        with _open_input(source) as f:
            record = archive.import_image(store, f, reference, changes=changes, message=message)
    print(record.id)
    return 0
