"""``kobako exec``: run a command in a running container."""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, STRING, STRING_ARRAY, Command, Flag
from kobako.cli.main import fail

EXEC = Command(
    "kobako exec [OPTIONS] CONTAINER COMMAND [ARG...]",
    "Execute a command in a running container",
    (
        Flag("detach", "d", BOOL, "Detached mode: run command in the background"),
        Flag("detach-keys", "", STRING, "Override the key sequence for detaching a container"),
        Flag("env", "e", STRING_ARRAY, "Set environment variables", varname="list"),
        Flag(
            "env-file", "", STRING_ARRAY, "Read in a file of environment variables", varname="list"
        ),
        Flag("interactive", "i", BOOL, "Keep STDIN open even if not attached"),
        Flag("privileged", "", BOOL, "Give extended privileges to the command"),
        Flag("tty", "t", BOOL, "Allocate a pseudo-TTY"),
        Flag("user", "u", STRING, "Username or UID (format: <name|uid>[:<group|gid>])"),
        Flag("workdir", "w", STRING, "Working directory inside the container"),
    ),
)


def main(argv: list[str], verb: str = "exec") -> int:
    """``exec``: the command's exit status, as docker returns it."""
    from kobako.cli.run import _env
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.execute import exec_in

    o = EXEC.parse(argv)
    if len(o.args) < 2:
        fail(f'"kobako exec" requires at least 2 arguments, got {len(o.args)}')
    store = Store.open()
    doc = ContainerStore(store).get(o.args[0])
    tty = o.get_bool("tty")
    interactive = o.get_bool("interactive")
    detach = o.get_bool("detach")
    if tty and not detach and not os.isatty(0):
        fail("the input device is not a TTY")
    null = -1
    if not interactive or detach:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        return exec_in(
            store,
            doc,
            o.args[1:],
            env=_env(o.get_strings("env"), o.get_strings("env-file")),
            workdir=o.get_string("workdir") or None,
            user=o.get_string("user") or None,
            tty=tty,
            interactive=interactive and not detach,
            detach=detach,
            privileged=o.get_bool("privileged"),
            stdin=null,
            stdout=null if detach else -1,
            stderr=null if detach else -1,
        )
    finally:
        if null >= 0:
            os.close(null)
        sys.stdout.flush()
