"""The exceptions kobako raises.

Every error kobako raises on purpose derives from :class:`KobakoError`, so one
``except KobakoError`` catches them all; the CLI prints such an error as a single line
and exits with its :attr:`KobakoError.exit_code` (125 unless said otherwise, as docker does)::

    KobakoError                      base; .exit_code
    ├── InvalidArgument (ValueError) a flag, spec field or parsed value is wrong
    ├── NotFound                     a rootfs, file, user, group or object that does not exist
    │   ├── ImageNotFound            no image has that name or ID
    │   └── ContainerNotFound        no container has that name or ID
    ├── Conflict                     the operation clashes with the state (an image in use…)
    ├── LayerError                   a layer cannot be applied; .layer, .entry, .reason
    ├── DigestMismatch               content does not hash to its digest; .expected, .actual
    ├── RegistryError                a registry refused or failed; .registry, .status, .code
    │   ├── AuthenticationError      credentials missing or refused (unauthorized, denied)
    │   └── RegistryUnreachable      no answer: DNS, refused connection, timeout, TLS
    ├── CgroupError                  creating, limiting or removing a cgroup failed
    ├── StartError                   setting up the container failed; .step, .errno, .path
    │   ├── CommandNotFound          the command does not exist in the container (exit 127)
    │   └── CommandNotExecutable     it exists but cannot be executed (exit 126)
    └── ContainerError               the command ran and failed; .exit_status, .stderr

Errors raised by the native core carry the step that failed (``"mount"``, ``"pivot_root"``,
``"exec"``…) and the errno, so that a message names what went wrong and where.
"""

from __future__ import annotations

import os

__all__ = [
    "AuthenticationError",
    "CgroupError",
    "CommandNotExecutable",
    "CommandNotFound",
    "Conflict",
    "ContainerError",
    "ContainerNotFound",
    "DigestMismatch",
    "ImageNotFound",
    "InvalidArgument",
    "KobakoError",
    "LayerError",
    "NetworkError",
    "NetworkNotFound",
    "NotFound",
    "RegistryError",
    "RegistryUnreachable",
    "StartError",
]


class KobakoError(Exception):
    """Base of every error kobako raises on purpose."""

    #: The exit status the CLI uses for this error (docker uses 125 for its own failures).
    exit_code: int = 125


class InvalidArgument(KobakoError, ValueError):
    """A flag, a spec field or a value to parse is malformed."""


class NotFound(KobakoError):
    """Something named by the caller does not exist (a rootfs, a user, a file)."""


class ImageNotFound(NotFound):
    """No image in the store has the name or ID asked for."""


class ContainerNotFound(NotFound):
    """No container has the name or ID asked for."""


class Conflict(KobakoError):
    """The operation clashes with what exists: an image a container uses, a name taken."""


class LayerError(KobakoError):
    """A layer could not be applied: a hostile or corrupt entry, a truncated stream.

    Raised from the native extractor; nothing was written outside the layer's directory.

    Attributes:
        layer: The layer (its digest, or the file it came from).
        entry: The tar entry that failed (``"<stream>"`` for the stream itself).
        reason: What was wrong with it.
    """

    def __init__(self, message: str, layer: str = "", entry: str = "", reason: str = ""):
        super().__init__(message)
        self.layer = layer
        self.entry = entry
        self.reason = reason


class DigestMismatch(KobakoError):
    """Content does not hash to the digest it should have; nothing of it was kept.

    Attributes:
        expected: The digest the content was supposed to have.
        actual: The digest it has.
    """

    def __init__(self, expected: str, actual: str, message: str = "") -> None:
        super().__init__(message or f"digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class RegistryError(KobakoError):
    """A registry answered with an error (or something that is not the distribution API).

    Attributes:
        registry: The registry's host (``registry-1.docker.io``, ``127.0.0.1:5000``).
        status: The HTTP status (0 if none).
        code: The distribution spec's error code (``MANIFEST_UNKNOWN``, ``DENIED``…) or "".
    """

    def __init__(self, message: str, registry: str = "", status: int = 0, code: str = ""):
        super().__init__(message)
        self.registry = registry
        self.status = status
        self.code = code


class AuthenticationError(RegistryError):
    """The registry wants credentials, or refused the ones given (401, 403, a failed token)."""


class RegistryUnreachable(RegistryError):
    """The registry could not be reached or did not answer in time."""


class CgroupError(KobakoError):
    """A cgroup could not be created, configured, read or removed."""


class NetworkNotFound(NotFound):
    """No network has that name or ID."""


class NetworkError(KobakoError):
    """A network could not be set up or torn down: a link, an address, a route, a rule.

    Attributes:
        errno: The errno the kernel answered with (0 if none).
    """

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class StartError(KobakoError):
    """The container could not be set up; raised from the native core.

    Attributes:
        step: The set-up step that failed, e.g. ``"mount"``, ``"pivot_root"``, ``"exec"``.
        errno: The errno the failing system call returned (0 if none).
        path: The path the step worked on, if any.
    """

    def __init__(self, message: str, step: str = "", errno: int = 0, path: str | None = None):
        if errno and not message:
            message = f"{step}: {os.strerror(errno)}"
        super().__init__(message)
        self.step = step
        self.errno = errno
        self.path = path


class CommandNotFound(StartError):
    """The command is not in the container (docker exits 127)."""

    exit_code = 127


class CommandNotExecutable(StartError):
    """The command exists but cannot be executed (docker exits 126)."""

    exit_code = 126


class ContainerError(KobakoError):
    """The container's command exited with a non-zero status.

    Attributes:
        exit_status: The exit status as docker reports it (128+N for signal N).
        command: The command that ran.
        stderr: What the command wrote to stderr, if it was captured.
        container: The container (a ``kobako.containers.Container``), unless it was removed.
        image: The image it ran, as named.
    """

    def __init__(
        self,
        exit_status: int,
        command: list[str],
        stderr: bytes | None = None,
        *,
        container: object = None,
        image: str | None = None,
    ):
        detail = f": {stderr.decode(errors='replace').strip()}" if stderr else ""
        where = f" in image {image}" if image else ""
        super().__init__(
            f"command {command!r}{where} returned non-zero exit status {exit_status}{detail}"
        )
        self.exit_status = exit_status
        self.command = command
        self.stderr = stderr
        self.container = container
        self.image = image
