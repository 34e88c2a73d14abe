"""kobako (小箱, "small box"): Docker's job on one Linux host, as a Python library.

No daemon: the library is the engine. The runtime layer (:mod:`kobako.runtime`) runs a
command in a container made from a root filesystem directory, with Docker's default
isolation and confinement.
"""

from kobako.errors import (
    CgroupError,
    CommandNotExecutable,
    CommandNotFound,
    ContainerError,
    InvalidArgument,
    KobakoError,
    NotFound,
    StartError,
)

__version__ = "0.1.0"

__all__ = [
    "CgroupError",
    "CommandNotExecutable",
    "CommandNotFound",
    "ContainerError",
    "InvalidArgument",
    "KobakoError",
    "NotFound",
    "StartError",
    "__version__",
]
