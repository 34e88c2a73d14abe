"""kobako (小箱, "small box"): Docker's job on one Linux host, as a Python library.

No daemon: the library is the engine. :func:`from_env` / :class:`Client` give docker-py's
shape (``client.images``, ``client.containers.run(...)``); the runtime layer
(:mod:`kobako.runtime`) runs a command in a container from a root filesystem directory,
with Docker's default isolation and confinement.
"""

from __future__ import annotations

from kobako.errors import (
    CgroupError,
    CommandNotExecutable,
    CommandNotFound,
    Conflict,
    ContainerError,
    ContainerNotFound,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    KobakoError,
    LayerError,
    NotFound,
    StartError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kobako.client import Client, from_env

__version__ = "0.1.0"

__all__ = [
    "CgroupError",
    "Client",
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
    "NotFound",
    "StartError",
    "__version__",
    "from_env",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "from_env"):
        from kobako import client

        return getattr(client, name)
    raise AttributeError(f"module 'kobako' has no attribute {name!r}")
