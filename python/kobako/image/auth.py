"""Registry credentials in Docker's ``config.json``, so that ``docker login`` and kobako share them.

Where Docker looks, kobako looks, in the same order::

    credHelpers[REGISTRY]   docker-credential-<helper> get   (one helper per registry)
    credsStore              docker-credential-<store> get    (every registry)
    auths[REGISTRY]         {"auth": base64("user:password")} or {"username", "password"}

Docker Hub's entry is ``https://index.docker.io/v1/``. A credential helper speaks Docker's
protocol: the verb (``get``, ``store``, ``erase``) as its argument, the server URL (or, for
``store``, ``{"ServerURL", "Username", "Secret"}``) on stdin, JSON on stdout. The file is
``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; it is rewritten whole
(temporary file, rename, mode 0600), keeping every key kobako does not use.
"""

from __future__ import annotations

import os

from kobako.errors import InvalidArgument, KobakoError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "HUB_SERVER",
    "config_path",
    "erase_credentials",
    "get_credentials",
    "store_credentials",
]

#: The key Docker keeps Docker Hub's credentials under.
HUB_SERVER = "https://index.docker.io/v1/"
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_NOT_FOUND = "credentials not found"


def config_path() -> str:
    """Docker's client config: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(directory, "config.json")


def _server(domain: str) -> str:
    """The name Docker stores a registry's credentials under."""
    return HUB_SERVER if domain in _HUB_NAMES else domain


def _hostname(key: str) -> str:
    """A config key (``https://host/v1/``, ``host:5000``) as a registry host."""
    host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return "docker.io" if host in _HUB_NAMES else host


def _load() -> dict[str, Any]:
    path = config_path()
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise KobakoError(f"cannot read {path}: {e.strerror}") from None
    import json

    try:
        doc = json.loads(content) if content.strip() else {}
    except ValueError as e:
        raise InvalidArgument(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path} is not a JSON object")
    return doc


def _save(doc: dict[str, Any]) -> None:
    """Write the config atomically (temporary file, fsync, rename), mode 0600."""
    import json

    path = config_path()
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".config.json.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        data = (json.dumps(doc, indent="\t") + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise


def _helper_for(doc: dict[str, Any], domain: str) -> str | None:
    """The credential helper for a registry: its credHelpers entry, else credsStore."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(name, str) and name and _hostname(key) == _hostname(domain):
                return name
    store = doc.get("credsStore")
    return store if isinstance(store, str) and store else None


def _run_helper(name: str, verb: str, data: bytes) -> bytes | None:
    """Run ``docker-credential-NAME VERB`` with ``data`` on stdin; None if it has nothing.

    Raises:
        KobakoError: The helper is missing or failed.
    """
    import subprocess

    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, verb], input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise KobakoError(
            f"credential helper {program} is not installed (credsStore/credHelpers in "
            f"{config_path()})"
        ) from None
    except subprocess.TimeoutExpired:
        raise KobakoError(f"credential helper {program} {verb} did not answer") from None
    if done.returncode != 0:
        message = (done.stdout or done.stderr).decode(errors="replace").strip()
        if _NOT_FOUND in message.lower():
            return None
        raise KobakoError(f"credential helper {program} {verb} failed: {message}")
    return done.stdout


def get_credentials(domain: str) -> tuple[str, str] | None:
    """The credentials Docker's config holds for a registry, or None.

    Args:
        domain: The registry as a reference names it (``docker.io``, ``localhost:5000``).

    Returns:
        (username, password); an identity token comes as ``("<token>", token)``.

    Raises:
        KobakoError: The config is unreadable, or its credential helper failed.
    """
    doc = _load()
    server = _server(domain)
    helper = _helper_for(doc, domain)
    if helper is not None:
        out = _run_helper(helper, "get", server.encode())
        if out is None:
            return None
        import json

        try:
            answer = json.loads(out)
            username, secret = answer["Username"], answer["Secret"]
        except (ValueError, KeyError, TypeError):
            raise KobakoError(
                f"credential helper docker-credential-{helper} sent garbage"
            ) from None
        if not isinstance(username, str) or not isinstance(secret, str) or not secret:
            return None
        return username, secret
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = auths.get(server)
    if entry is None:
        for key, value in auths.items():
            if _hostname(key) == _hostname(domain):
                entry = value
                break
    return _decode_entry(entry) if isinstance(entry, dict) else None


def _decode_entry(entry: dict[str, Any]) -> tuple[str, str] | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return "<token>", token
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        import base64
        import binascii

        try:
            user, sep, secret = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(f"invalid auth entry in {config_path()}") from None
        return (user, secret) if sep else None
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return username, password
    return None


def store_credentials(domain: str, username: str, password: str) -> str:
    """Keep credentials for a registry as ``docker login`` does.

    Returns:
        Where they went: ``docker-credential-NAME`` (a helper), or the config file's path
        (then they are stored unencrypted, base64 only).

    Raises:
        KobakoError: The config is unreadable or its credential helper failed.
    """
    import json

    doc = _load()
    server = _server(domain)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = doc["auths"] = {}
    helper = _helper_for(doc, domain)
    if helper is not None:
        payload = {"ServerURL": server, "Username": username, "Secret": password}
        _run_helper(helper, "store", json.dumps(payload).encode())
        auths[server] = {}  # Docker keeps an empty entry: the registry is logged in to
        _save(doc)
        return f"docker-credential-{helper}"
    import base64

    auths[server] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _save(doc)
    return config_path()


def erase_credentials(domain: str) -> bool:
    """Forget a registry's credentials (``docker logout``).

    Returns:
        Whether there were any.

    Raises:
        KobakoError: The config is unreadable or its credential helper failed.
    """
    doc = _load()
    server = _server(domain)
    found = False
    helper = _helper_for(doc, domain)
    if helper is not None:
        found = _run_helper(helper, "erase", server.encode()) is not None
    auths = doc.get("auths")
    if isinstance(auths, dict):
        keys = [k for k in auths if k == server or _hostname(k) == _hostname(domain)]
        for key in keys:
            del auths[key]
        if keys:
            found = True
            _save(doc)
    return found
