"""Pure parts of the launch plan: overlayfs options and mount flags."""

from __future__ import annotations

import pytest

from kobako.errors import InvalidArgument
from kobako.runtime import launch
from kobako.runtime.spec import Mount, Overlay


def test_overlay_data_absolute_when_it_fits() -> None:
    data, chdir = launch.overlay_data(Overlay(lower=("/l/a", "/l/b"), upper="/u", work="/w"))
    assert data == "lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w" and chdir is None


def test_overlay_data_relative_when_long() -> None:
    lower = tuple(f"/var/lib/kobako/layers/{i:064x}" for i in range(50))
    up, work = "/var/lib/kobako/layers/up", "/var/lib/kobako/layers/work"
    data, chdir = launch.overlay_data(Overlay(lower=lower, upper=up, work=work))
    assert chdir == "/var/lib/kobako/layers" and len(data) < 4096
    assert data.startswith(f"lowerdir={0:064x}:") and data.endswith(",upperdir=up,workdir=work")


@pytest.mark.parametrize(
    "overlay",
    [
        Overlay(lower=(), upper="/u", work="/w"),
        Overlay(lower=("/a,b",), upper="/u", work="/w"),
        Overlay(lower=("relative",), upper="/u", work="/w"),
        Overlay(lower=tuple(f"/{i:0200x}" for i in range(40)), upper="/u", work="/w"),
    ],
)
def test_overlay_data_refuses(overlay: Overlay) -> None:
    with pytest.raises(InvalidArgument):
        launch.overlay_data(overlay)


def test_ro_bind_is_bind_then_remount() -> None:
    calls = launch.plan_mounts(Mount(destination="/x", source="/tmp", options=("rbind", "ro")))
    assert [(c[0], c[1], c[3]) for c in calls] == [
        ("/tmp", "/x", launch.MS_BIND | launch.MS_REC),
        (None, "/x", launch.MS_BIND | launch.MS_REMOUNT | launch.MS_RDONLY),
    ]
