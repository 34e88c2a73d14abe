"""Short-lived host mounts: a read-only merged view of layers, and copying trees between them.

The container's own root filesystem is mounted inside its mount namespace by the native core;
what is mounted here (for ``export``, and to fill a new volume from an image) is mounted on a
private directory of the store for the time of one copy and detached right after.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager
    from typing import Any

__all__ = ["bind_at", "copy_tree", "merged_view"]

_MS_RDONLY = 1
_MNT_DETACH = 2
# The new mount API (Linux 5.12): one number on every architecture.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_MOUNT_ATTR_RDONLY = 1


def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    )
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    return libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def merged_view(
    lower: list[str] | tuple[str, ...],
    scratch: str,
    *,
    upper: str | None = None,
    work: str | None = None,
) -> AbstractContextManager[str]:
    """A read-only view of layers stacked top first, for the time of a ``with`` block.

    One layer is its own view; more are mounted as a read-only overlay on a new directory
    under ``scratch``, unmounted (detached, with anything mounted under it) and removed when
    the block ends. The layers are named through ``/proc/self/fd`` so that any number of them
    fits in a page of options. With ``upper`` and ``work`` (an overlayfs upper and work
    directory) the view is writable, and what is written goes to ``upper``.
    """
    from contextlib import contextmanager

    @contextmanager
    def view() -> Iterator[str]:
        if len(lower) == 1 and upper is None:
            yield lower[0]
            return
        fds = [os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for p in lower]
        target = os.path.join(scratch, "view-" + os.urandom(6).hex())
        os.mkdir(target, 0o700)
        libc = _libc()
        try:
            data = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
            flags = _MS_RDONLY
            if upper is not None and work is not None:
                data += f",upperdir={upper},workdir={work}"
                flags = 0
            ret = libc.mount(b"overlay", target.encode(), b"overlay", flags, data.encode())
            _check(ret, f"mount overlay on {target}")
            try:
                yield target
            finally:
                _check(libc.umount2(target.encode(), _MNT_DETACH), f"umount {target}")
        finally:
            for fd in fds:
                os.close(fd)
            os.rmdir(target)

    return view()


def bind_at(source: str, target_fd: int, *, readonly: bool = False) -> None:
    """Bind ``source`` (with what is mounted under it) on the file or directory ``target_fd``.

    The target is named by its fd (opened with ``O_PATH``, resolved as the caller saw fit) and
    the mount made with the new mount API (open_tree, mount_setattr, move_mount), so nothing is
    looked up again between resolving the target and mounting on it. The mount is left for the
    caller to detach, normally with the view it was made in (see :func:`merged_view`).
    """
    import ctypes

    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    flags = _OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC
    tree = libc.syscall(_SYS_OPEN_TREE, -100, source.encode(), ctypes.c_uint(flags))
    if tree < 0:
        _check(-1, f"open_tree {source}")
    try:
        if readonly:
            attr = (ctypes.c_uint64 * 4)(_MOUNT_ATTR_RDONLY, 0, 0, 0)
            ret = libc.syscall(
                _SYS_MOUNT_SETATTR,
                tree,
                b"",
                ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
                attr,
                ctypes.c_size_t(ctypes.sizeof(attr)),
            )
            _check(ret, f"make {source} read-only")
        where = ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH)
        ret = libc.syscall(_SYS_MOVE_MOUNT, tree, b"", target_fd, b"", where)
        _check(ret, f"bind {source}")
    finally:
        os.close(tree)


def copy_tree(source: str, target: str, name: str) -> None:
    """Copy a directory tree with everything a layer keeps (owners, modes, xattrs, links).

    The tree is packed as a tar on one thread and extracted on this one, through a pipe,
    by the native core (the GIL is released on both sides); ``target`` must exist.

    Raises:
        LayerError: The copy failed (named ``name``).
    """
    import threading

    from kobako import _native

    r, w = os.pipe2(os.O_CLOEXEC)
    errors: list[BaseException] = []

    def pack() -> None:
        try:
            _native.pack_layer(source, w)
        except BaseException as e:  # reported below, after the reader has seen EOF
            errors.append(e)
        finally:
            os.close(w)

    thread = threading.Thread(target=pack, name="kobako-pack")
    thread.start()
    try:
        _native.extract_layer(r, target, name)
    finally:
        os.close(r)  # unblocks the packer if extraction stopped early
        thread.join()
    if errors:
        raise errors[0]
