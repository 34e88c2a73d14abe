"""Registry verbs: ``pull``, ``push``, ``login``, ``logout``, with docker's flags and output.

On a terminal, ``pull`` and ``push`` show a live bar per layer (rich's ``Progress``, which
redraws several bars updated from several threads); otherwise they print one line per
layer status change, as docker does when its output is not a terminal; ``-q`` prints only
the image's name (pull) or nothing but errors (push).
"""

from __future__ import annotations

import os
import sys
import threading

from kobako.cli.args import BOOL, STRING, Command, Flag
from kobako.cli.main import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

    from kobako.image.reference import Reference
    from kobako.image.store import Store

PULL = Command(
    "kobako pull [OPTIONS] NAME[:TAG|@DIGEST]",
    "Download an image from a registry",
    (
        Flag("all-tags", "a", BOOL, "Download all tagged images in the repository"),
        Flag("disable-content-trust", "", BOOL, "Skip image verification", default=True),
        Flag("platform", "", STRING, "Set platform if server is multi-platform capable"),
        Flag("quiet", "q", BOOL, "Suppress verbose output"),
    ),
)
PUSH = Command(
    "kobako push [OPTIONS] NAME[:TAG]",
    "Upload an image to a registry",
    (
        Flag("all-tags", "a", BOOL, "Push all tags of an image to the repository"),
        Flag("disable-content-trust", "", BOOL, "Skip image signing", default=True),
        Flag("quiet", "q", BOOL, "Suppress verbose output"),
    ),
)
LOGIN = Command(
    "kobako login [OPTIONS] [SERVER]",
    "Log in to a registry.\nIf no server is specified, the default is defined by the daemon.",
    (
        Flag("password", "p", STRING, "Password"),
        Flag("password-stdin", "", BOOL, "Take the password from stdin"),
        Flag("username", "u", STRING, "Username"),
    ),
)
LOGOUT = Command(
    "kobako logout [SERVER]",
    "Log out from a registry.\nIf no server is specified, the default is defined by the daemon.",
    (),
)

#: docker shows Docker Hub's credentials key for docker.io.
_HUB = "docker.io"


def main(argv: list[str], verb: str = "pull") -> int:
    """Dispatch a registry verb."""
    handlers: dict[str, Callable[[list[str]], int]] = {
        "pull": _pull,
        "push": _push,
        "login": _login,
        "logout": _logout,
    }
    from kobako.errors import KobakoError

    try:
        return handlers[verb](argv)
    except KobakoError as e:  # what the registry or the store said: exit 1, as docker's
        print(f"kobako: {e}", file=sys.stderr)
        return 1


def _store() -> Store:
    from kobako.image.store import Store

    return Store.open()


def _one_arg(o: Any, verb: str, what: str) -> str:
    if len(o.args) != 1:
        fail(f'"kobako {verb}" requires exactly 1 argument ({what}), got {len(o.args)}')
    return str(o.args[0])


# -- pull -------------------------------------------------------------------------------


def pull_image(store: Store, name: str, *, quiet: bool, platform: str = "", out: Any = None) -> str:
    """Pull ``name`` with docker's output on ``out`` (stdout); returns the image's full name.

    ``run`` and ``create`` use it for ``--pull``, with their output on stderr as docker's.
    """
    from kobako.image.pull import parse_platform, pull
    from kobako.image.reference import parse

    ref = parse(name)
    want = parse_platform(platform) if platform else None
    out = out or sys.stdout
    if quiet:
        result = pull(store, name, platform=want)
        print(result.reference, file=out)
        return result.reference
    given = parse(name, default_tag=False)
    if given.tag is None and given.digest is None:
        print("Using default tag: latest", file=out)
    what = ref.tag if ref.digest is None else ref.digest
    print(f"{what}: Pulling from {ref.path}", file=out, flush=True)
    with _display(out) as display:
        result = pull(store, name, platform=want, progress=display.update)
    print(f"Digest: {result.digest}", file=out)
    shown = ref.familiar
    if result.downloaded:
        print(f"Status: Downloaded newer image for {shown}", file=out)
    else:
        print(f"Status: Image is up to date for {shown}", file=out)
    print(result.reference, file=out, flush=True)
    return result.reference


def _pull(argv: list[str]) -> int:
    o = PULL.parse(argv)
    name = _one_arg(o, "pull", "NAME")
    quiet, platform = o.get_bool("quiet"), o.get_string("platform")
    if not o.get_bool("all-tags"):
        pull_image(_store(), name, quiet=quiet, platform=platform)
        return 0
    from kobako.image.reference import parse
    from kobako.image.registry import Registry

    given = parse(name, default_tag=False)
    if given.tag is not None or given.digest is not None:
        fail("tag can't be used with --all-tags/-a")
    store = _store()
    with Registry(given.domain) as registry:
        tags = registry.list_tags(given.path)
    for tag in sorted(tags):
        _pull_tag(store, given, tag, platform, quiet)
    print(given.repository)
    return 0


def _pull_tag(store: Store, repo: Reference, tag: str, platform: str, quiet: bool) -> None:
    """One tag of ``pull --all-tags``: docker's lines for it, without the final name."""
    from kobako.image.pull import parse_platform, pull

    want = parse_platform(platform) if platform else None
    name = f"{repo.repository}:{tag}"
    if quiet:
        pull(store, name, platform=want)
        return
    print(f"{tag}: Pulling from {repo.path}", flush=True)
    with _display(sys.stdout) as display:
        result = pull(store, name, platform=want, progress=display.update)
    print(f"Digest: {result.digest}")
    status = "Downloaded newer image" if result.downloaded else "Image is up to date"
    print(f"Status: {status} for {repo.familiar}:{tag}", flush=True)


# -- push -------------------------------------------------------------------------------


def _push(argv: list[str]) -> int:
    from kobako.image.reference import parse

    o = PUSH.parse(argv)
    name = _one_arg(o, "push", "NAME[:TAG]")
    store = _store()
    if o.get_bool("all-tags"):
        given = parse(name, default_tag=False)
        if given.tag is not None or given.digest is not None:
            fail("tag can't be used with --all-tags/-a")
        names = sorted(
            n for image in store.images() for n in image.names
            if parse(n).repository == given.repository
        )  # fmt: skip
        if not names:
            fail(f"An image does not exist locally with the tag: {given.familiar}")
        for each in names:
            _push_one(store, each, o.get_bool("quiet"))
        return 0
    return _push_one(store, name, o.get_bool("quiet"))


def _push_one(store: Store, name: str, quiet: bool) -> int:
    from kobako.image.push import push
    from kobako.image.reference import parse

    ref = parse(name)
    image = store.image(name)  # ImageNotFound: "No such image: NAME"
    if quiet:
        push(store, name)
        return 0
    print(f"The push refers to repository [{ref.repository}]", flush=True)
    with _display(sys.stdout) as display:
        digest = push(store, name, progress=display.update)
    size = os.stat(store.blob_path(digest)).st_size if store.has_blob(digest) else 0
    if not size:
        size = len(store.read_blob(image.manifest_digest))
    print(f"{ref.tag}: digest: {digest} size: {size}", flush=True)
    return 0


# -- login / logout ---------------------------------------------------------------------


def _server(o: Any, verb: str) -> str:
    if len(o.args) > 1:
        fail(f'"kobako {verb}" requires at most 1 argument, got {len(o.args)}')
    if not o.args:
        return _HUB
    server = str(o.args[0])
    for scheme in ("https://", "http://"):
        server = server.removeprefix(scheme)
    server = server.split("/", 1)[0]
    if server in ("index.docker.io", "registry-1.docker.io"):
        return _HUB
    if not server:
        fail(f"invalid registry address {o.args[0]!r}")
    return server


def _login(argv: list[str]) -> int:
    from kobako.image.auth import store_credentials
    from kobako.image.registry import Registry

    o = LOGIN.parse(argv)
    server = _server(o, "login")
    username = o.get_string("username")
    password = o.get_string("password")
    if o.get_bool("password-stdin"):
        if password:
            fail("--password and --password-stdin are mutually exclusive")
        if not username:
            fail("Must provide --username with --password-stdin")
        password = sys.stdin.readline().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)  # fmt: skip
    if not username:
        if not sys.stdin.isatty():
            fail("Cannot perform an interactive login from a non TTY device")
        username = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            fail("Cannot perform an interactive login from a non TTY device")
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        fail("Error: Username and password are required")
    registry = Registry(server, credentials=(username, password), use_config=False)
    try:
        registry.ping()
    finally:
        registry.close()
    store_credentials(server, username, password)
    print("Login Succeeded")
    return 0


def _logout(argv: list[str]) -> int:
    from kobako.image.auth import erase_credentials

    o = LOGOUT.parse(argv)
    server = _server(o, "logout")
    if erase_credentials(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


# -- progress ---------------------------------------------------------------------------


class _Lines:
    """Docker's output when stdout is not a terminal: a line per layer status change."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._out.flush()

    def update(self, layer: str, status: str, current: int, total: int) -> None:
        with self._lock:
            if self._last.get(layer) == status:
                return
            self._last[layer] = status
            print(f"{layer}: {status}", file=self._out, flush=True)


class _Bars:
    """A live bar per layer on a terminal (rich), ending with each layer's last status."""

    def __init__(self, out: Any) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.fields[layer]}: {task.description:<17}"),
            BarColumn(bar_width=40),
            DownloadColumn(binary_units=False),
            console=Console(file=out),
            transient=False,
            refresh_per_second=10,
        )
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _Bars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, layer: str, status: str, current: int, total: int) -> None:
        with self._lock:
            task = self._tasks.get(layer)
            if task is None:
                task = self._progress.add_task(status, layer=layer, total=total or None)
                self._tasks[layer] = task
        done = status in ("Pull complete", "Already exists", "Pushed", "Layer already exists")
        if done or status.startswith("Mounted from"):
            self._progress.update(task, description=status, completed=total, total=total or 1)
        else:
            self._progress.update(task, description=status, completed=current, total=total or None)


def _display(out: Any) -> _Lines | _Bars:
    if out.isatty() and os.environ.get("TERM") != "dumb":
        return _Bars(out)
    return _Lines(out)
