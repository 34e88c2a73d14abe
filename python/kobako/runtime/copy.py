"""``cp``: files between a container's filesystem and the host's, or a tar stream.

Docker's rules (``docker cp``): a file is copied to a new file, over a file, or into a
directory under its own name; a directory is copied into a directory that exists, or becomes
the destination if it does not; ``SRC/.`` copies a directory's contents; a destination ending
in ``/`` must be a directory. ``-L`` follows a symlink at the end of the source (one level, as
docker's client does; a symlink at the end of a container destination is always followed one
level). Without ``archive`` what lands in a container belongs to its root, and what lands on
the host to whoever runs kobako; with it both keep their owners. A tar stream comes out as
docker's does (entries named from the source's base name, ``.`` for ``SRC/.``) and goes in
keeping its owners.

The container's files are hostile: it may plant symlinks (``/evil -> /``) and swap paths
while the copy runs (CVE-2018-15664), so no path inside it is ever resolved by the host's
rules. Its root is an fd: ``/proc/PID/root`` of its first process (checked by start time
after opening) while it runs, else its overlay mounted on a private directory of the store,
writable, under the container's lock (so ``start`` waits) with its volumes bound in. A path
in it is resolved once, by openat2 with ``RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS``
(:func:`kobako._native.open_in_root`), to the fd of its parent directory; from there the tree
is walked and made with ``*at`` calls relative to directory fds held open, every one with
``O_NOFOLLOW``, and a file is read only after ``fstat`` says it is the regular file that
was listed. A symlink swapped in mid-copy is copied as a symlink or makes the copy fail;
it is never followed. Nothing from the container is executed or loaded (CVE-2019-14271).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from kobako.errors import Conflict, InvalidArgument, KobakoError, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from typing import IO, Any

    from kobako.image.store import Store
    from kobako.runtime.containers import ContainerStore
    from kobako.runtime.spec import IdMap

    Owner = Callable[["_Entry | None"], "tuple[int, int] | None"]

__all__ = ["copy_from_container", "copy_to_container", "get_archive", "put_archive"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: How long a container that is starting or stopping is waited for.
_SETTLE_TRIES = 100
_SETTLE_PAUSE_S = 0.05
#: The uid a container shows for a host uid its user namespace does not map (the kernel's).
_OVERFLOW_ID = 65534
#: Kernel filesystems (statfs magic numbers) a copy neither reads nor writes: proc, sysfs,
#: devpts, mqueue, cgroup, cgroup2, debugfs, securityfs, tracefs, bpf, pstore, configfs,
#: fusectl, selinuxfs, efivarfs, binfmt_misc, nsfs. A running container has them mounted;
#: to a copy they are empty directories, as in the image (docker's view of a container).
_KERNEL_FS = frozenset(
    (
        *(0x9FA0, 0x62656572, 0x1CD1, 0x19800202, 0x27E0EB, 0x63677270, 0x64626720),
        *(0x73636673, 0x74726163, 0xCAFE4A11, 0x6165676C, 0x62656570, 0x65735543),
        *(0xF97CFF8C, 0xDE5E81E4, 0x42494E4D, 0x6E736673),
    )
)
_libc: Any = None


# -- what is copied --------------------------------------------------------------------------


class _Entry:
    """One file of a copy, as a tar header sees it.

    ``path`` is relative to where the copy lands (``.`` for that directory itself), with
    ``/`` between names and no ``.`` or ``..`` in it. ``kind`` is ``file``, ``dir``,
    ``symlink``, ``hardlink`` (``link`` is the path of the entry it links to), ``chr``,
    ``blk`` or ``fifo``. ``data`` is an open fd (a tree) or a file object (a tar).
    """

    __slots__ = ("data", "gid", "kind", "link", "mode", "mtime_ns", "path", "rdev", "size", "uid")

    def __init__(self, path: str, kind: str, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.size = 0
        self.link = ""
        self.rdev = 0
        self.data: int | IO[bytes] | None = None


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFIFO: "fifo",
}


def _join(base: str, name: str) -> str:
    return name if base == "." else f"{base}/{name}"


def _walk(
    parent_fd: int, name: str, arc: str, ids: Callable[[int, int], tuple[int, int]]
) -> Generator[_Entry]:
    """The entries of ``name`` in the directory ``parent_fd`` and of all under it, named from
    ``arc``, in name order; ``ids`` turns owners on disk into the owners entries show.

    Every name is opened relative to its directory's fd with ``O_NOFOLLOW``; a name that is
    not what listing it said (swapped meanwhile) fails the walk. Sockets are left out, as tar
    leaves them. A file's ``data`` fd is closed when the next entry is asked for.
    """
    seen: dict[tuple[int, int], str] = {}
    stack: list[tuple[int, str, Iterator[str]]] = []
    try:
        entry, sub = _visit(parent_fd, name, arc, seen, ids)
        while entry is not None:
            if sub is not None:
                stack.append((sub, entry.path, iter(())))  # the stack owns it before listing
                stack[-1] = (sub, entry.path, iter(sorted(os.listdir(sub))))
            try:
                yield entry
            finally:
                if isinstance(entry.data, int):
                    os.close(entry.data)
            entry, sub = None, None
            while stack and entry is None:
                fd, base, names = stack[-1]
                child = next(names, None)
                if child is None:
                    stack.pop()
                    os.close(fd)
                else:
                    entry, sub = _visit(fd, child, _join(base, child), seen, ids)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _visit(
    dir_fd: int,
    name: str,
    arc: str,
    seen: dict[tuple[int, int], str],
    ids: Callable[[int, int], tuple[int, int]],
) -> tuple[_Entry | None, int | None]:
    """The entry for one name, and its fd if it is a directory to descend into."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    kind = _KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None, None
    uid, gid = ids(st.st_uid, st.st_gid)
    entry = _Entry(arc, kind, stat.S_IMODE(st.st_mode), uid, gid, st.st_mtime_ns)
    if kind == "dir":
        fd = os.open(name, _DIR, dir_fd=dir_fd)
        _same(fd, st, arc)
        try:
            kernel = _kernel_fs(fd)
        except OSError:
            os.close(fd)
            raise
        if kernel:
            os.close(fd)
            return entry, None
        return entry, fd
    if kind == "file":
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in seen:
            entry.kind, entry.link = "hardlink", seen[key]
            return entry, None
        seen[key] = arc
        fd = os.open(name, _READ, dir_fd=dir_fd)
        entry.size = _same(fd, st, arc).st_size
        entry.data = fd
    elif kind == "symlink":
        entry.link = os.readlink(name, dir_fd=dir_fd)
    elif kind in ("chr", "blk"):
        entry.rdev = st.st_rdev
    return entry, None


def _kernel_fs(fd: int) -> bool:
    """Whether ``fd`` is on one of :data:`_KERNEL_FS` (fstatfs; an ``O_PATH`` fd will do)."""
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type, a long, comes first
    if _libc.fstatfs(fd, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ctypes.c_long.from_buffer(buf).value in _KERNEL_FS


def _same(fd: int, st: os.stat_result, arc: str) -> os.stat_result:
    """``fstat(fd)``, if it is the file ``st`` describes (else the fd is closed, and it fails)."""
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino, stat.S_IFMT(now.st_mode)) != (
        st.st_dev,
        st.st_ino,
        stat.S_IFMT(st.st_mode),
    ):
        os.close(fd)
        raise KobakoError(f"{arc} changed during the copy")
    return now


def _tar_entries(source: IO[bytes]) -> Generator[_Entry]:
    """The entries of a tar stream (plain or compressed), names made relative and checked.

    Only headers are taken from the tar; nothing is extracted by :mod:`tarfile`.

    Raises:
        InvalidArgument: A name or hard link that climbs out of the destination, or an entry
            of a kind docker does not extract.
    """
    import tarfile

    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                if member.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                    continue
                path = _tar_name(member.name)
                kind = (
                    "file"
                    if member.isreg()
                    else "dir"
                    if member.isdir()
                    else "symlink"
                    if member.issym()
                    else "hardlink"
                    if member.islnk()
                    else "chr"
                    if member.ischr()
                    else "blk"
                    if member.isblk()
                    else "fifo"
                    if member.isfifo()
                    else None
                )
                if kind is None:
                    raise InvalidArgument(f"unhandled tar header type {member.type!r}: {path}")
                entry = _Entry(
                    path,
                    kind,
                    member.mode & 0o7777,
                    member.uid,
                    member.gid,
                    int(member.mtime * 1e9),
                )
                entry.size = member.size
                if kind == "hardlink":
                    entry.link = _tar_name(member.linkname)
                elif kind == "symlink":
                    entry.link = member.linkname
                elif kind in ("chr", "blk"):
                    entry.rdev = os.makedev(member.devmajor, member.devminor)
                elif kind == "file":
                    entry.data = tar.extractfile(member)
                yield entry
    except tarfile.TarError as e:
        raise InvalidArgument(f"invalid tar stream: {e}") from None


def _tar_name(name: str) -> str:
    """A tar entry's name made relative to where it lands; one that climbs out is refused."""
    clean = posixpath.normpath(name.lstrip("/") or ".")
    if clean == ".." or clean.startswith("../"):
        raise InvalidArgument(f"invalid tar entry {name!r}: it is outside the destination")
    return clean


# -- where it lands --------------------------------------------------------------------------


class _Writer:
    """Makes entries under the directory ``base_fd`` (not closed), following no symlink.

    An entry's parent is reached one name at a time from ``base_fd`` with ``O_NOFOLLOW`` (the
    directories of the entries before are kept open, so a tree is not walked again); the
    entry is made relative to it with ``*at`` calls and ``O_EXCL``. What is in the way is
    unlinked first, as docker's extraction removes it: a file over a file, a symlink or a
    node; never a directory for a non-directory or the reverse. A directory's mode and time
    are set when the entries under it are done.

    Args:
        base_fd: The directory the entries' paths are relative to.
        shown: How errors name that directory (``c1:/tmp``, ``/home/me/out``).
        owner: The owner to give an entry (or an implied parent directory, for None); None
            leaves the one the file is made with.
    """

    def __init__(self, base_fd: int, shown: str, owner: Owner) -> None:
        self._base = base_fd
        self._shown = shown
        self._owner = owner
        self._open: list[tuple[str, int, _Entry | None]] = []
        self.bytes = 0
        if _kernel_fs(base_fd):
            raise InvalidArgument(f"cannot copy into {shown}: it is in a kernel filesystem")

    def put(self, entry: _Entry) -> None:
        """Make one entry (``.``, the base directory itself, is left as it is)."""
        if entry.path == ".":
            return
        parent, _, name = entry.path.rpartition("/")
        parent_fd = self._parent(parent)
        existing = _lstat(name, parent_fd)
        is_dir = existing is not None and stat.S_ISDIR(existing.st_mode)
        if entry.kind == "dir":
            if existing is not None and not is_dir:
                raise Conflict(
                    f"cannot overwrite non-directory {self._name(entry.path)} with a directory"
                )
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = self._open_dir(name, parent_fd, entry.path)
            self._chown(fd, entry)
            self._open.append((entry.path, fd, entry))
            return
        if is_dir:
            raise Conflict(
                f"cannot overwrite directory {self._name(entry.path)} with a non-directory"
            )
        if existing is not None:
            os.unlink(name, dir_fd=parent_fd)
        if entry.kind == "file":
            self._file(parent_fd, name, entry)
        elif entry.kind == "symlink":
            os.symlink(entry.link, name, dir_fd=parent_fd)
            owner = self._owner(entry)
            if owner is not None:
                os.chown(name, *owner, dir_fd=parent_fd, follow_symlinks=False)
            times = (entry.mtime_ns, entry.mtime_ns)
            os.utime(name, ns=times, dir_fd=parent_fd, follow_symlinks=False)
        elif entry.kind == "hardlink":
            self._link(parent_fd, name, entry)
        else:
            if entry.kind == "fifo":
                os.mkfifo(name, 0o600, dir_fd=parent_fd)
            else:
                kind = stat.S_IFCHR if entry.kind == "chr" else stat.S_IFBLK
                os.mknod(name, kind | 0o600, entry.rdev, dir_fd=parent_fd)
            self._node_meta(parent_fd, name, entry)

    def close(self) -> None:
        """Finish the directories still open (their modes and times)."""
        while self._open:
            self._finish(self._open.pop())

    def abort(self) -> None:
        """Close what is open, setting nothing more."""
        while self._open:
            os.close(self._open.pop()[1])

    def _name(self, path: str) -> str:
        return f'"{self._shown.rstrip("/")}/{path}"'

    def _parent(self, path: str) -> int:
        """The fd of the directory ``path`` (relative to the base; made if missing)."""
        while self._open and not (
            path == self._open[-1][0] or path.startswith(self._open[-1][0] + "/")
        ):
            self._finish(self._open.pop())
        fd, done = (self._open[-1][1], self._open[-1][0]) if self._open else (self._base, "")
        rest = path[len(done) :].lstrip("/")
        for name in rest.split("/") if rest else ():
            done = f"{done}/{name}" if done else name
            try:
                sub = self._open_dir(name, fd, done)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=fd)  # as docker's MkdirAll for a tar's parents
                sub = os.open(name, _DIR, dir_fd=fd)
                self._chown(sub, None)
            self._open.append((done, sub, None))
            fd = sub
        return fd

    def _open_dir(self, name: str, parent_fd: int, path: str) -> int:
        fd = os.open(name, _DIR, dir_fd=parent_fd)
        if _kernel_fs(fd):
            os.close(fd)
            raise InvalidArgument(
                f"cannot copy into {self._name(path)}: it is in a kernel filesystem"
            )
        return fd

    def _finish(self, item: tuple[str, int, _Entry | None]) -> None:
        _, fd, entry = item
        try:
            if entry is not None:
                os.chmod(fd, entry.mode)
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _chown(self, fd: int, entry: _Entry | None) -> None:
        owner = self._owner(entry)
        if owner is not None:
            os.chown(fd, *owner)

    def _file(self, parent_fd: int, name: str, entry: _Entry) -> None:
        fd = os.open(name, _CREATE, 0o600, dir_fd=parent_fd)
        try:
            data = entry.data
            if isinstance(data, int):
                while (n := os.sendfile(fd, data, None, 1 << 30)) > 0:
                    self.bytes += n
            elif data is not None:
                while chunk := data.read(1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    self.bytes += len(chunk)
            self._chown(fd, entry)
            os.chmod(fd, entry.mode)  # after chown, which clears set-id bits
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _link(self, parent_fd: int, name: str, entry: _Entry) -> None:
        """A hard link to an entry made before (its path walked again, following nothing)."""
        target_dir, _, target = entry.link.rpartition("/")
        fd = os.open(".", _DIR, dir_fd=self._base)
        try:
            for part in target_dir.split("/") if target_dir else ():
                sub = os.open(part, _DIR, dir_fd=fd)
                os.close(fd)
                fd = sub
            os.link(target, name, src_dir_fd=fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def _node_meta(self, parent_fd: int, name: str, entry: _Entry) -> None:
        """Owner, mode and time of a device or fifo just made, through an ``O_PATH`` fd."""
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        try:
            if _KINDS.get(stat.S_IFMT(os.fstat(fd).st_mode)) != entry.kind:
                raise KobakoError(f"{self._name(entry.path)} changed during the copy")
            here = f"/proc/self/fd/{fd}"  # this very inode: /proc/self is ours, not theirs
            owner = self._owner(entry)
            if owner is not None:
                os.chown(here, *owner)
            os.chmod(here, entry.mode)
            os.utime(here, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _pump(entries: Generator[_Entry], writer: _Writer, what: str) -> int:
    """Write every entry; returns the bytes of file content written.

    Raises:
        KobakoError: A file could not be read or made (the entry named).
    """
    current = ""
    try:
        for entry in entries:
            current = entry.path
            writer.put(entry)
        writer.close()
    except OSError as e:
        writer.abort()
        raise KobakoError(f"{what}: {current}: {e.strerror or e}") from None
    except BaseException:
        writer.abort()
        raise
    finally:
        entries.close()
    return writer.bytes


def _write_tar(entries: Iterator[_Entry], out: IO[bytes]) -> int:
    """Write the entries as a tar (PAX) to ``out``; returns the bytes of file content."""
    import io
    import tarfile

    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.type = types[entry.kind]
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = entry.mtime_ns // 1_000_000_000
            if entry.kind in ("symlink", "hardlink"):
                info.linkname = entry.link
            if entry.kind in ("chr", "blk"):
                info.devmajor, info.devminor = os.major(entry.rdev), os.minor(entry.rdev)
            if entry.kind == "file" and isinstance(entry.data, int):
                info.size = entry.size
                with io.FileIO(entry.data, "rb", closefd=False) as data:
                    tar.addfile(info, data)
                total += entry.size
            else:
                tar.addfile(info)
    return total


# -- paths on either side --------------------------------------------------------------------


class _Path:
    """A path as given, cleaned: docker's ``SplitPathDirEntry`` and trailing-slash rules."""

    __slots__ = ("contents", "dir_wanted", "given", "path")

    def __init__(self, given: str, absolute: str) -> None:
        self.given = given
        base = posixpath.basename(given.rstrip("/")) if given.rstrip("/") else "/"
        #: ``SRC/.``: a directory's contents, not the directory
        self.contents = base == "." or absolute == "/"
        #: ends in ``/`` or ``/.``: must be a directory
        self.dir_wanted = given.endswith("/") or base == "."
        self.path = absolute


def _container_path(given: str) -> _Path:
    """A path in a container: relative to its ``/``, ``..`` cleaned lexically as docker does."""
    return _Path(given, posixpath.normpath("/" + given.lstrip("/")))


def _host_path(given: str) -> _Path:
    return _Path(given, os.path.abspath(given))


class _Found:
    """A path's last name, in its parent directory's fd (owned); ``st`` None if missing."""

    __slots__ = ("name", "parent", "path", "st")

    def __init__(self, parent: int, name: str, path: str) -> None:
        self.parent = parent
        self.name = name
        self.path = path
        self.st = _lstat(name, parent)

    def close(self) -> None:
        os.close(self.parent)

    @property
    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return self.st is not None and stat.S_ISLNK(self.st.st_mode)


def _find(open_dir: Callable[[str], int], path: str) -> _Found | None:
    """``path``'s parent opened by ``open_dir``; None if the parent is missing."""
    head, name = posixpath.split(path) if path != "/" else ("/", ".")
    try:
        parent = open_dir(head)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:  # a /proc magic link on the way
            raise
        return None
    return _Found(parent, name, path)


def _in_root(root: int) -> Callable[[str], int]:
    from kobako import _native

    return lambda path: _native.open_in_root(root, path, _PATH_DIR)


def _on_host(path: str) -> int:
    return os.open(path, _PATH_DIR)


def _follow_once(root: int, found: _Found) -> _Found | None:
    """A container path whose last name is a symlink, as docker's client follows it: the
    link read, joined to the link's directory if relative, and found again (in the root)."""
    if not found.is_link:
        return found
    target = os.readlink(found.name, dir_fd=found.parent)
    found.close()
    joined = posixpath.join(posixpath.dirname(found.path), target)
    return _find(_in_root(root), posixpath.normpath("/" + joined.lstrip("/")))


def _open_dir(found: _Found) -> int:
    return os.open(found.name, _DIR, dir_fd=found.parent)


def _landing(
    src_is_dir: bool, src_name: str, src: _Path, dst: _Found, dst_path: _Path, shown: str
) -> tuple[int, str]:
    """Where a copy lands, as docker's ``PrepareArchiveCopy`` decides: the directory fd
    (owned by the caller) the entries go under, and the source's name there.

    Raises:
        Conflict: A directory onto a file.
        NotFound: A file into a directory that does not exist.
    """
    if dst.is_dir:
        into = _open_dir(dst)
        return into, "." if src_is_dir and src.contents else src_name
    if dst.st is not None:
        if src_is_dir:
            raise Conflict(f"cannot copy directory {src.given} onto file {shown}")
        if dst_path.dir_wanted:
            raise Conflict(f"destination {shown} is not a directory")
    elif not src_is_dir and dst_path.dir_wanted:
        raise NotFound(f"destination directory {shown} does not exist")
    return os.dup(dst.parent), dst.name


# -- the container's root ----------------------------------------------------------------------


def _container_root(store: Store, doc: dict[str, Any]) -> Any:
    """The container's root filesystem as a directory fd, for a ``with`` block.

    Running (or paused): ``/proc/PID/root`` of its first process, opened and then checked to
    be that process by its start time. Otherwise its overlay, mounted writable on a private
    directory and detached afterwards, with its volumes and binds mounted in; the container's
    lock is held meanwhile, so it is not started under the copy.

    Raises:
        Conflict: It stays between starting and running (or stopping) for seconds.
    """
    import time
    from contextlib import contextmanager

    from kobako.runtime.containers import ContainerStore, is_running

    containers = ContainerStore(store)
    cid = doc["Id"]

    @contextmanager
    def root() -> Iterator[int]:
        for _ in range(_SETTLE_TRIES):
            with containers.lock(cid):
                current = containers.settle(containers.load(cid))
                state = current["State"]
                if not is_running(current) or state.get("Status") == "restarting":
                    with _overlay_root(containers, current) as fd:
                        yield fd
                    return
                fd = _proc_root(state)
            if fd is not None:
                try:
                    yield fd
                finally:
                    os.close(fd)
                return
            time.sleep(_SETTLE_PAUSE_S)  # starting (no pid yet), or its process just ended
        raise Conflict(f"container {cid[:12]} is starting or stopping; try again")

    return root()


def _proc_root(state: dict[str, Any]) -> int | None:
    """``/proc/PID/root`` of the container's process, if that process is still the one the
    record names (its start time checked after opening: the fd then is of that process)."""
    from kobako.runtime.proc import process_start

    pid, start = state.get("Pid") or 0, state.get("PidStart")
    if pid <= 0 or not start:
        return None
    try:
        fd = os.open(f"/proc/{pid}/root", _PATH_DIR)
    except (FileNotFoundError, ProcessLookupError):
        return None
    if process_start(pid) != start:
        os.close(fd)
        return None
    return fd


def _overlay_root(containers: ContainerStore, doc: dict[str, Any]) -> Any:
    """A stopped container's overlay, writable, with its mounts bound in (a ``with`` block).

    Each volume or bind is mounted on its destination resolved inside the overlay (one that
    does not exist yet, in a container never started, is left out); they all go with the
    overlay when it is detached. The view is not in the container's directory, which ``rm``
    deletes as a tree: that would reach into the volumes mounted in it.
    """
    from contextlib import contextmanager

    from kobako.runtime.mounts import bind_at, merged_view

    @contextmanager
    def mounted() -> Iterator[int]:
        from kobako import _native

        overlay = containers.overlay(doc)
        upper, work = overlay.upper, overlay.work
        with merged_view(overlay.lower, containers.root, upper=upper, work=work) as view:
            root = os.open(view, _PATH_DIR)
            try:
                mounts = sorted(doc.get("Mounts") or (), key=lambda m: m["Destination"].count("/"))
                for m in mounts:
                    if not m.get("Source"):
                        continue
                    try:
                        target = _native.open_in_root(root, m["Destination"], os.O_PATH)
                    except FileNotFoundError:
                        continue
                    try:
                        bind_at(m["Source"], target, readonly=not m.get("RW", True))
                    finally:
                        os.close(target)
                yield root
            finally:
                os.close(root)

    return mounted()


class _Ids:
    """The container's user namespace maps (none: ids are the same on both sides)."""

    def __init__(self, uid_map: tuple[IdMap, ...], gid_map: tuple[IdMap, ...]) -> None:
        self._uids = uid_map
        self._gids = gid_map

    @staticmethod
    def of(containers: ContainerStore, doc: dict[str, Any]) -> _Ids:
        try:
            ns = containers.spec(doc).namespaces
        except InvalidArgument:  # no kept spec: no user namespace either
            return _Ids((), ())
        return _Ids(ns.uid_map, ns.gid_map)

    def to_host(self, uid: int, gid: int) -> tuple[int, int]:
        """Ids in the container as stored on disk.

        Raises:
            InvalidArgument: The container's user namespace does not map one of them.
        """
        return _map(uid, self._uids, True), _map(gid, self._gids, True)

    def to_container(self, uid: int, gid: int) -> tuple[int, int]:
        """Ids on disk as the container sees them (unmapped: the overflow id)."""
        return _map(uid, self._uids, False), _map(gid, self._gids, False)


def _map(value: int, idmap: tuple[IdMap, ...], to_host: bool) -> int:
    if not idmap:
        return value
    for m in idmap:
        start, other = (m.container_id, m.host_id) if to_host else (m.host_id, m.container_id)
        if start <= value < start + m.size:
            return other + value - start
    if to_host:
        raise InvalidArgument(f"Container ID {value} cannot be mapped to a host ID")
    return _OVERFLOW_ID


# -- the four directions -------------------------------------------------------------------------


def _missing(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {ref}")


def _source_in(root: int, src: _Path, ref: str, follow_link: bool) -> tuple[_Found, str]:
    """The source in the container and the name it is copied under (a followed link's)."""
    found = _find(_in_root(root), src.path)
    if found is None or found.st is None:
        if found is not None:
            found.close()
        raise _missing(src.given, ref)
    name = found.name
    if follow_link and found.is_link:
        followed = _follow_once(root, found)
        if followed is None or followed.st is None:
            if followed is not None:
                followed.close()
            raise _missing(src.given, ref)
        found = followed
    if found.name != "." and _kernel_fs(found.parent):  # not in the image: not there
        found.close()
        raise _missing(src.given, ref)
    if src.dir_wanted and not found.is_dir:
        found.close()
        raise NotFound(f"{src.given}: not a directory")
    return found, name


def copy_from_container(
    store: Store,
    doc: dict[str, Any],
    src: str,
    dst: str,
    *,
    follow_link: bool = False,
    archive: bool = False,
    ref: str | None = None,
) -> int:
    """``docker cp CONTAINER:SRC DST``: copy from the container to a host path.

    Args:
        store: The store the container is in.
        doc: The container's record.
        src: The path in the container (relative to its ``/``).
        dst: The host path.
        follow_link: ``-L``: copy what a symlink at the end of ``src`` points to.
        archive: ``-a``: keep the owners (as the container sees them).
        ref: The container as the user named it, for messages (default: its name).

    Returns:
        The bytes of file content copied.

    Raises:
        NotFound: ``src`` is not in the container, or the directory ``dst`` is to go into
            does not exist.
        Conflict: A directory onto a file, or the reverse.
        KobakoError: A file could not be read or written.
    """
    ref = ref or doc["Name"].lstrip("/")
    source = _container_path(src)
    target = _host_path(dst)
    parent = os.path.dirname(target.path)
    if not os.path.isdir(parent):
        raise NotFound(f'invalid output path: directory "{parent}" does not exist')
    landing = _find(_on_host, os.path.realpath(target.path))
    if landing is None:
        raise NotFound(f'invalid output path: directory "{parent}" does not exist')
    try:
        if landing.st is not None and not (landing.is_dir or stat.S_ISREG(landing.st.st_mode)):
            raise Conflict(f'invalid output path: "{target.path}" must be a directory or a file')
        with _container_root(store, doc) as root:
            found, name = _source_in(root, source, ref, follow_link)
            try:
                into, top = _landing(found.is_dir, name, source, landing, target, target.path)
                try:
                    ids = _Ids.of(_store_of(store), doc).to_container
                    owner: Owner = (lambda e: (e.uid, e.gid) if e else None) if archive else _nobody
                    writer = _Writer(into, target.path, owner)
                    entries = _walk(found.parent, found.name, top, ids)
                    return _pump(entries, writer, f"copying to {target.path}")
                finally:
                    os.close(into)
            finally:
                found.close()
    finally:
        landing.close()


def _nobody(entry: _Entry | None) -> tuple[int, int] | None:
    return None


def _store_of(store: Store) -> ContainerStore:
    from kobako.runtime.containers import ContainerStore

    return ContainerStore(store)


def _destination_in(root: int, dst: _Path, ref: str) -> _Found:
    """The destination in the container, a symlink at its end followed once; its parent must
    exist (the destination itself need not).

    Raises:
        NotFound: Its parent directory does not exist.
        Conflict: It is neither a directory nor a regular file.
    """
    found = _find(_in_root(root), dst.path)
    if found is not None and found.is_link:
        found = _follow_once(root, found)
    if found is None:
        raise _missing(posixpath.dirname(dst.path), ref)
    if found.st is not None and not (found.is_dir or stat.S_ISREG(found.st.st_mode)):
        found.close()
        raise Conflict(f'destination "{ref}:{dst.given}" must be a directory or a regular file')
    return found


def copy_to_container(
    store: Store,
    doc: dict[str, Any],
    src: str,
    dst: str,
    *,
    follow_link: bool = False,
    archive: bool = False,
    ref: str | None = None,
) -> int:
    """``docker cp SRC CONTAINER:DST``: copy a host path into the container.

    Args:
        store: The store the container is in.
        doc: The container's record.
        src: The host path.
        dst: The path in the container (relative to its ``/``).
        follow_link: ``-L``: copy what a symlink at the end of ``src`` points to.
        archive: ``-a``: keep the owners (else the container's root owns what is made).
        ref: The container as the user named it, for messages (default: its name).

    Returns:
        The bytes of file content copied.

    Raises:
        NotFound: ``src`` does not exist, or the directory ``dst`` is to go into does not.
        Conflict: A directory onto a file, or the reverse.
        InvalidArgument: With ``archive``, an owner the container's user namespace lacks.
        KobakoError: A file could not be read or written.
    """
    ref = ref or doc["Name"].lstrip("/")
    source = _host_path(src)
    name = posixpath.basename(source.path) or "."
    path = os.path.realpath(source.path) if follow_link else source.path
    found = _find(_on_host, path)
    if found is None or found.st is None:
        if found is not None:
            found.close()
        raise NotFound(f"lstat {source.path}: no such file or directory")
    try:
        if source.dir_wanted and not found.is_dir:
            raise NotFound(f"{source.path}: not a directory")
        containers = _store_of(store)
        ids = _Ids.of(containers, doc)
        root_owner = ids.to_host(0, 0)

        def owner(entry: _Entry | None) -> tuple[int, int]:
            return ids.to_host(entry.uid, entry.gid) if entry and archive else root_owner

        target = _container_path(dst)
        shown = f"{ref}:{target.path}"
        with _container_root(store, doc) as root:
            landing = _destination_in(root, target, ref)
            try:
                into, top = _landing(found.is_dir, name, source, landing, target, shown)
            finally:
                landing.close()
            try:
                writer = _Writer(into, shown, owner)
                entries = _walk(found.parent, found.name, top, lambda u, g: (u, g))
                return _pump(entries, writer, f"copying to {shown}")
            finally:
                os.close(into)
    finally:
        found.close()


def get_archive(
    store: Store,
    doc: dict[str, Any],
    path: str,
    out: IO[bytes],
    *,
    follow_link: bool = False,
    ref: str | None = None,
) -> dict[str, Any]:
    """``docker cp CONTAINER:PATH -``: write a path of the container as a tar to ``out``.

    Entries are named from the path's base name (``.`` and bare names for ``PATH/.``), with
    the owners the container sees.

    Returns:
        Docker's stat of the path: ``name``, ``size``, ``mode`` (Go's ``FileMode`` bits),
        ``mtime`` (RFC 3339) and ``linkTarget``.

    Raises:
        NotFound: The path is not in the container.
        KobakoError: A file could not be read.
    """
    ref = ref or doc["Name"].lstrip("/")
    source = _container_path(path)
    ids = _Ids.of(_store_of(store), doc).to_container
    with _container_root(store, doc) as root:
        found, name = _source_in(root, source, ref, follow_link)
        try:
            assert found.st is not None
            link = os.readlink(found.name, dir_fd=found.parent) if found.is_link else ""
            info = _stat_doc(name, found.st, link)
            top = "." if found.is_dir and source.contents else name
            entries = _walk(found.parent, found.name, top, ids)
            try:
                _write_tar(entries, out)
            except OSError as e:
                raise KobakoError(f"reading {ref}:{source.path}: {e.strerror or e}") from None
            finally:
                entries.close()
            return info
        finally:
            found.close()


def _stat_doc(name: str, st: os.stat_result, link: str) -> dict[str, Any]:
    """Docker's ``ContainerPathStat``: the mode in Go's ``FileMode`` bits."""
    import time

    go_bits = {
        stat.S_IFDIR: 1 << 31,
        stat.S_IFLNK: 1 << 27,
        stat.S_IFBLK: 1 << 26,
        stat.S_IFIFO: 1 << 25,
        stat.S_IFSOCK: 1 << 24,
        stat.S_IFCHR: (1 << 26) | (1 << 21),
    }
    mode = go_bits.get(stat.S_IFMT(st.st_mode), 0) | (st.st_mode & 0o777)
    mode |= (1 << 23) * bool(st.st_mode & stat.S_ISUID) | (1 << 22) * bool(
        st.st_mode & stat.S_ISGID
    )
    mode |= (1 << 20) * bool(st.st_mode & stat.S_ISVTX)
    secs, frac = divmod(st.st_mtime_ns, 1_000_000_000)
    mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    return {"name": name, "size": st.st_size, "mode": mode, "mtime": mtime, "linkTarget": link}


def put_archive(
    store: Store, doc: dict[str, Any], path: str, data: IO[bytes], *, ref: str | None = None
) -> int:
    """``docker cp - CONTAINER:PATH``: extract a tar (plain or compressed) into a directory
    of the container, each entry keeping the owner the tar gives it.

    Returns:
        The bytes of file content written.

    Raises:
        NotFound: The directory is not in the container.
        Conflict: The path is not a directory, or an entry clashes with what is there.
        InvalidArgument: A malformed or hostile tar (nothing is written outside ``path``).
        KobakoError: A file could not be written.
    """
    ref = ref or doc["Name"].lstrip("/")
    target = _container_path(path)
    shown = f"{ref}:{target.path}"
    ids = _Ids.of(_store_of(store), doc)
    root_owner = ids.to_host(0, 0)

    def owner(entry: _Entry | None) -> tuple[int, int]:
        return ids.to_host(entry.uid, entry.gid) if entry else root_owner

    with _container_root(store, doc) as root:
        landing = _destination_in(root, target, ref)
        try:
            if landing.st is None:
                raise _missing(target.given, ref)
            if not landing.is_dir:
                raise Conflict(f'destination "{ref}:{target.given}" must be a directory')
            into = _open_dir(landing)
        finally:
            landing.close()
        try:
            return _pump(_tar_entries(data), _Writer(into, shown, owner), f"extracting to {shown}")
        finally:
            os.close(into)
