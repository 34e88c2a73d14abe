"""The ``kobako`` command: dispatch to a verb, turn every error into one line and an exit code.

Exit codes follow docker's: the container's own status when it ran, 125 when kobako itself
failed (bad flag, bad value, set-up error), 126 when the command cannot be executed, 127 when
it does not exist.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

#: verb -> module under kobako.cli (imported only when used, to keep start-up lean); each
#: module's ``main(argv, verb)`` serves the verbs mapped to it.
VERBS = {
    "run": "run",
    "create": "run",
    "images": "images",
    "image": "images",
    "history": "images",
    "tag": "images",
    "rmi": "images",
    "load": "images",
    "save": "images",
    "import": "images",
    "ps": "containers",
    "container": "containers",
    "rm": "containers",
    "diff": "containers",
    "commit": "containers",
    "export": "containers",
    "inspect": "containers",
    "start": "containers",
    "wait": "containers",
    "rename": "containers",
    "stop": "containers",
    "kill": "containers",
    "restart": "containers",
    "logs": "logs",
    "exec": "exec",
    "attach": "exec",
    "cp": "cp",
    "top": "observe",
    "stats": "observe",
    "port": "observe",
    "pause": "observe",
    "unpause": "observe",
    "system": "system",
    "volume": "volumes",
    "network": "network",
    "pull": "registry",
    "push": "registry",
    "login": "registry",
    "logout": "registry",
}

USAGE = """\
Usage:  kobako [OPTIONS] COMMAND

Docker's job on one host, without a daemon.

Options:
      --root string   Root of kobako's store (default $KOBAKO_ROOT or /var/lib/kobako)

Commands:
  run         Run a command in a new container
  create      Create a new container
  ps          List containers
  start       Start one or more stopped containers
  wait        Block until one or more containers stop, then print their exit codes
  rename      Rename a container
  stop        Stop one or more running containers
  kill        Kill one or more running containers
  restart     Restart one or more containers
  logs        Fetch the logs of a container
  exec        Execute a command in a running container
  attach      Attach local standard input, output, and error streams to a running container
  cp          Copy files/folders between a container and the local filesystem
  top         Display the running processes of a container
  stats       Display a live stream of container(s) resource usage statistics
  port        List port mappings or a specific mapping for the container
  pause       Pause all processes within one or more containers
  unpause     Unpause all processes within one or more containers
  rm          Remove one or more containers
  diff        Inspect changes to files or directories on a container's filesystem
  commit      Create a new image from a container's changes
  export      Export a container's filesystem as a tar archive
  images      List images
  history     Show the history of an image
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
  rmi         Remove one or more images
  load        Load an image from a tar archive or STDIN
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  import      Import the contents from a tarball to create a filesystem image
  pull        Download an image from a registry
  push        Upload an image to a registry
  login       Log in to a registry
  logout      Log out from a registry
  inspect     Return low-level information on containers or images

Management Commands:
  container   Manage containers
  image       Manage images
  network     Manage networks
  system      Manage kobako (df, prune)
  volume      Manage volumes

Run 'kobako COMMAND --help' for more information on a command.
"""


class UsageError(Exception):
    """A bad flag or argument: printed as one line, exit status 125 (as docker does)."""


class Help(Exception):
    """``--help`` was given (cobra's ErrHelp): print the usage on stdout, exit status 0."""

    def __init__(self, usage: str) -> None:
        super().__init__(usage)
        self.usage = usage


def fail(message: str) -> NoReturn:
    """Raise a :class:`UsageError` with ``message``."""
    raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """Run the kobako command line; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(args)
    except Help as e:
        print(e.usage, end="")
        return 0
    except UsageError as e:
        print(f"kobako: {e}", file=sys.stderr)  # one line (docker adds a 'See --help' hint)
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:
        from kobako.errors import KobakoError

        if os.environ.get("KOBAKO_DEBUG"):
            raise
        if isinstance(e, KobakoError):
            print(f"kobako: {e}", file=sys.stderr)
            return e.exit_code
        print(f"kobako: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 125


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 1
    if args[0] in ("-v", "--version", "version"):
        from kobako import __version__

        print(f"kobako version {__version__}")
        return 0
    while args and args[0].startswith("--root"):
        flag = args.pop(0)
        if flag == "--root":
            if not args:
                fail("flag needs an argument: --root")
            value = args.pop(0)
        elif flag.startswith("--root="):
            value = flag[len("--root=") :]
        else:
            fail(f"unknown flag: {flag}")
        if not value:
            fail("--root: empty path")
        os.environ["KOBAKO_ROOT"] = os.path.abspath(value)
    if not args:
        print(USAGE, end="")
        return 1
    verb = args[0]
    if verb.startswith("-"):
        fail(f"unknown flag: {verb}")
    if verb not in VERBS:
        fail(f"'{verb}' is not a kobako command")
    name = f"kobako.cli.{VERBS[verb]}"
    __import__(name)
    module = sys.modules[name]
    status: int = module.main(args[1:], verb)
    return status


if __name__ == "__main__":
    sys.exit(main())
