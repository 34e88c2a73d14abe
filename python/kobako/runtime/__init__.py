"""The runtime layer: run one process in a container from a root filesystem directory.

Build a :class:`Spec` and call :func:`run`; the images and containers API builds on this.
The submodules (parsers, seccomp, cgroups) import without the native core; ``run`` and
``Exit`` are loaded on first use.
"""

from __future__ import annotations

from kobako.runtime.spec import (
    IdMap,
    Mount,
    Namespaces,
    Overlay,
    Process,
    Resources,
    Rlimit,
    Security,
    Spec,
)

TYPE_CHECKING = False  # not typing's: the CLI imports this package and typing is slow to import
if TYPE_CHECKING:
    from typing import Any

    from kobako.runtime.lifecycle import Exit, run

__all__ = [
    "Exit",
    "IdMap",
    "Mount",
    "Namespaces",
    "Overlay",
    "Process",
    "Resources",
    "Rlimit",
    "Security",
    "Spec",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in ("Exit", "run"):
        from kobako.runtime import lifecycle

        return getattr(lifecycle, name)
    raise AttributeError(f"module 'kobako.runtime' has no attribute {name!r}")
