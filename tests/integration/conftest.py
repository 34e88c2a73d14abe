"""Fixtures the integration tests share: a busybox layer, and a store of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from kobako.image.store import Store
from tests.imagetools import tar_of_dir


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A layer tar of a busybox root filesystem (read-only: bytes)."""
    from kobako.fixtures import busybox_rootfs

    return tar_of_dir(str(busybox_rootfs(tmp_path_factory.mktemp("bb") / "rootfs")))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store root of the test's own, which the CLI uses too (``KOBAKO_ROOT``)."""
    path = str(tmp_path / "store")
    monkeypatch.setenv("KOBAKO_ROOT", path)
    return path


@pytest.fixture
def store(root: str) -> Store:
    """The store at :func:`root`."""
    return Store.open(root)
