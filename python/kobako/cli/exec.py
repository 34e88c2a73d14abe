"""``kobako exec``: run a command in a running container."""

from __future__ import annotations

import os
import sys

from kobako.cli.args import BOOL, STRING, STRING_ARRAY, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
    interspersed=False,
)


ATTACH = Command(
    "kobako attach [OPTIONS] CONTAINER",
    "Attach local standard input, output, and error streams to a running container",
    (
        Flag("detach-keys", "", STRING, "Override the key sequence for detaching a container"),
        Flag("no-stdin", "", BOOL, "Do not attach STDIN"),
        Flag("sig-proxy", "", BOOL, "Proxy all received signals to the process", default=True),
    ),
)


def main(argv: list[str], verb: str = "exec") -> int:
    """``exec``: the command's exit status, as docker returns it; ``attach``: the container's."""
    if verb == "attach":
        return _attach(argv)
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


def _env(opts: list[str], files: list[str]) -> tuple[str, ...]:
    if not opts and not files:
        return ()
    from kobako.cli.run import _env as parse_env  # run's parser, imported only when needed

    return parse_env(opts, files)


def _attach(argv: list[str]) -> int:
    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore

    o = ATTACH.parse(argv)
    if len(o.args) != 1:
        fail(f'"kobako attach" requires exactly 1 argument, got {len(o.args)}')
    store = Store.open()
    doc = ContainerStore(store).get(o.args[0])
    if doc["State"].get("Status") != "running":
        fail("You cannot attach to a stopped container, start it first")
    if doc["Config"].get("Tty") and not o.get_bool("no-stdin") and not os.isatty(0):
        fail("the input device is not a TTY")
    return attach_and_wait(
        store,
        doc,
        stdin=not o.get_bool("no-stdin"),
        detach_keys=o.get_string("detach-keys"),
        sig_proxy=o.get_bool("sig-proxy"),
    )


def attach_and_wait(
    store: Any,
    doc: dict[str, Any],
    *,
    stdin: bool,
    detach_keys: str,
    sig_proxy: bool,
    connected: Any = None,
) -> int:
    """Attach until the container exits (its exit code, once its end is recorded) or the
    detach keys are typed (0, the container still running)."""
    from kobako.errors import ContainerNotFound
    from kobako.runtime.attach import DETACHED, attach, parse_detach_keys
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.monitor import wait_stopped

    keys = parse_detach_keys(detach_keys or "ctrl-p,ctrl-q")
    code = attach(
        store, doc, stdin=stdin, detach_keys=keys, sig_proxy=sig_proxy, connected=connected
    )
    if code == DETACHED:
        try:
            doc = ContainerStore(store).get(doc["Id"])
        except ContainerNotFound:
            return 0
        if doc["State"].get("Status") in ("running", "paused"):
            return 0
        return int(doc["State"].get("ExitCode", 0))
    try:  # noqa: SIM105 (contextlib is slow to import, and this is the exec path)
        wait_stopped(store, doc["Id"], timeout=30)  # its exit command: --rm, the record
    except (ContainerNotFound, TimeoutError):
        pass
    return code
