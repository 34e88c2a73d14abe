"""What the CLI imports to run a container stays lean: start latency is a feature.

``kobako run`` aims to start within a few milliseconds of crun. Each module below costs a
millisecond or more to import (``typing`` 3, ``dataclasses`` with ``inspect`` 10, ``re``
with ``enum`` 7...), so the runtime modules on the CLI's path import none of them; the paths
that need one (a seccomp cache miss, ``-t``, a signal name) import it when they run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

SLOW = {
    "argparse",
    "collections",
    "contextlib",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "importlib.resources",
    "inspect",
    "json",
    "pathlib",
    "re",
    "shutil",
    "signal",
    "subprocess",
    "tempfile",
    "threading",
    "typing",
}

HAS_NATIVE = importlib.util.find_spec("kobako._native") is not None


def imported_by(*modules: str) -> set[str]:
    """The modules that importing ``modules`` loads in a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_spec_and_parsers_import_nothing_slow() -> None:
    loaded = imported_by("kobako.runtime.spec", "kobako.runtime.parse")
    assert loaded & SLOW == set()


@pytest.mark.skipif(not HAS_NATIVE, reason="kobako._native is not built")
def test_run_path_imports_nothing_slow() -> None:
    loaded = imported_by("kobako.runtime.lifecycle", "kobako.runtime.seccomp")
    assert loaded & SLOW == set()
