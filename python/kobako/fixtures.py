"""Small root filesystems made from what the host has, for tests, benchmarks and first runs.

kobako works offline, so it cannot fetch an image to try: :func:`busybox_rootfs` builds one
from Debian's ``busybox-static`` (``/bin/busybox``), a single static binary with a symlink per
applet, plus the /etc files a container expects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kobako.errors import NotFound

__all__ = ["busybox_rootfs"]

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
tty:x:5:
wheel:x:10:root
nogroup:x:65534:
"""


def _find_busybox() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(candidate):
            with open(candidate, "rb") as f:
                head = f.read(4096)
            # a dynamic executable names its loader (PT_INTERP) in its first page
            if head.startswith(b"\x7fELF") and b"/ld-linux" not in head:
                return candidate
    raise NotFound("no static busybox on this host: install Debian's busybox-static")


def busybox_rootfs(dest: str | os.PathLike[str]) -> Path:
    """Build a busybox root filesystem in ``dest`` (created; must not exist or be empty).

    Args:
        dest: Directory to fill.

    Returns:
        The directory, as a Path.

    Raises:
        NotFound: The host has no static busybox.
    """
    root = Path(dest)
    busybox = _find_busybox()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    shutil.copy2(busybox, root / "bin/busybox")
    applets = subprocess.run(
        [busybox, "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(root / "bin/busybox", link.parent)
        link.symlink_to(target)
    # mountpoints for the per-container files, as in Docker's images
    for name in ("hostname", "hosts", "resolv.conf"):
        (root / "etc" / name).touch()
    (root / "etc/passwd").write_text(_PASSWD)
    (root / "etc/group").write_text(_GROUP)
    return root


if __name__ == "__main__":  # python -m kobako.fixtures DIR
    import sys

    print(busybox_rootfs(sys.argv[1]))
