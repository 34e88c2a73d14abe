"""``cp``: copy files and directories between a container and the host, or a tar stream."""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, Command, Flag
from kobako.cli.main import fail

CP = Command(
    "kobako cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
    "\tkobako cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
    "Copy files/folders between a container and the local filesystem\n\n"
    "Use '-' as the source to read a tar archive from stdin\n"
    "and extract it to a directory destination in a container.\n"
    "Use '-' as the destination to stream a tar archive of a\n"
    "container source to stdout.",
    (
        Flag("archive", "a", BOOL, "Archive mode (copy all uid/gid information)"),
        Flag("follow-link", "L", BOOL, "Always follow symlinks in SRC_PATH"),
        Flag(
            "quiet",
            "q",
            BOOL,
            "Suppress progress output during copy. Progress output is automatically "
            "suppressed if no terminal is attached",
        ),
    ),
)


def split(arg: str) -> tuple[str, str]:
    """``CONTAINER:PATH`` or a local path, as docker tells them apart: a local path with a
    ``:`` in it must start with ``/`` or ``.`` (``./file:name``). Returns (container, path)."""
    if arg.startswith("/"):
        return "", arg
    container, colon, path = arg.partition(":")
    if not colon or container.startswith("."):
        return "", arg
    return container, path


def main(argv: list[str], verb: str = "cp") -> int:
    """``kobako cp``."""
    from kobako.cli.fmt import human_size
    from kobako.image.store import Store
    from kobako.runtime import copy
    from kobako.runtime.containers import ContainerStore

    o = CP.parse(argv)
    if len(o.args) != 2:
        fail(f"'kobako {verb}' requires exactly 2 arguments, got {len(o.args)}")
    src, dst = o.args
    if not src:
        fail("source can not be empty")
    if not dst:
        fail("destination can not be empty")
    src_ref, src_path = split(src)
    dst_ref, dst_path = split(dst)
    if src_ref and dst_ref:
        fail("copying between containers is not supported")
    if not src_ref and not dst_ref:
        fail("must specify at least one container source")
    quiet = o.get_bool("quiet") if o.changed("quiet") else not os.isatty(1)
    follow, archive = o.get_bool("follow-link"), o.get_bool("archive")
    store = Store.open()
    ref = src_ref or dst_ref
    doc = ContainerStore(store).get(ref)
    if src_ref:
        if dst_path == "-":
            sys.stdout.flush()
            with open(sys.stdout.fileno(), "wb", closefd=False) as out:
                copy.get_archive(store, doc, src_path, out, follow_link=follow, ref=ref)
            return 0
        size = copy.copy_from_container(
            store, doc, src_path, dst_path, follow_link=follow, archive=archive, ref=ref
        )
        shown = os.path.abspath(dst_path)
    elif src_path == "-":
        with open(sys.stdin.fileno(), "rb", closefd=False) as data:
            size = copy.put_archive(store, doc, dst_path, data, ref=ref)
        shown = f"{ref}:{dst_path}"
    else:
        size = copy.copy_to_container(
            store, doc, src_path, dst_path, follow_link=follow, archive=archive, ref=ref
        )
        shown = f"{ref}:{dst_path}"
    if not quiet:
        print(f"Successfully copied {human_size(size, 3)} to {shown}", file=sys.stderr)
    return 0
