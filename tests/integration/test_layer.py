"""Layers on the real filesystem: pack → extract round trips, hostile layers, the tee, the GIL.

Runs as root (chown, mknod, trusted.* and security.capability xattrs). Hostile layers are
built with :mod:`tarfile`, which writes whatever names it is given.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kobako import _native
from kobako.errors import LayerError
from kobako.image.store import tree_size

COMPRESSIONS = ("none", "gzip", "zstd")
LAYER = "sha256:" + "ab" * 32


# --- Building trees and reading them back ----------------------------------------------------


def capability(permitted: int) -> bytes:
    """A ``security.capability`` value (VFS_CAP_REVISION_2, effective) granting ``permitted``."""
    return struct.pack("<IIIII", 0x02000001, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


@dataclass
class Node:
    """One entry of a generated tree; ``kind`` is file, dir, symlink or fifo."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes = b""
    target: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, Node] = field(default_factory=dict)


names = st.one_of(
    st.text(alphabet="abcxyz-_.=é ", min_size=1, max_size=12),
    st.text(alphabet="lo", min_size=90, max_size=140),
).filter(lambda n: n not in (".", "..") and not n.startswith(".wh."))
ids = st.one_of(st.sampled_from([0, 1, 100, 1000, 65534]), st.integers(0, 2**32 - 2))
mtimes = st.one_of(st.integers(0, 2**31), st.integers(2**33, 2**33 + 10**6))
contents = st.one_of(
    st.binary(max_size=3000),
    # Sparse-ish: long runs of zeros with a little data.
    st.builds(lambda n, tail: b"\0" * n + tail, st.integers(0, 300_000), st.binary(max_size=9)),
)
user_xattrs = st.dictionaries(
    st.text(alphabet="abk.", min_size=1, max_size=8).map(lambda k: "user." + k),
    st.one_of(st.binary(max_size=40), st.just(b"a\nb\n"), st.just(b"\n19 path=evil\n")),
    max_size=2,
)


@st.composite
def files(draw: st.DrawFn) -> Node:
    xattrs = draw(user_xattrs)
    if draw(st.booleans()):
        # Bits 1 and 3 make a newline byte, which a PAX parser must not split at.
        xattrs["security.capability"] = capability(draw(st.integers(1, 2**40)) | 0x0A)
    return Node(
        "file",
        draw(st.sampled_from([0o644, 0o755, 0o600, 0o000, 0o4755, 0o2711, 0o6755, 0o1644])),
        draw(ids),
        draw(ids),
        draw(mtimes),
        data=draw(contents),
        xattrs=xattrs,
    )


leaves = st.one_of(
    files(),
    st.builds(
        Node,
        st.just("symlink"),
        st.just(0o777),
        ids,
        ids,
        mtimes,
        target=st.one_of(names, st.just("/nowhere/dangling"), st.just("../..")),
    ),
    st.builds(Node, st.just("fifo"), st.sampled_from([0o644, 0o600, 0o1666]), ids, ids, mtimes),
)


def dirs(children: st.SearchStrategy[dict[str, Node]]) -> st.SearchStrategy[Node]:
    return st.builds(
        Node,
        st.just("dir"),
        st.sampled_from([0o755, 0o700, 0o1777, 0o2775, 0o555]),
        ids,
        ids,
        mtimes,
        xattrs=user_xattrs,
        children=children,
    )


trees = st.recursive(
    st.dictionaries(names, leaves, max_size=5),
    lambda inner: st.dictionaries(names, st.one_of(leaves, dirs(inner)), max_size=5),
    max_leaves=25,
)


def build(root: Path, tree: dict[str, Node], links: list[tuple[int, int, str]]) -> None:
    """Create ``tree`` under ``root``, then hard links ``(file index, dir index, name)``."""
    made_files: list[Path] = []
    made_dirs: list[tuple[Path, Node | None]] = [(root, None)]

    def meta(path: Path, node: Node) -> None:
        os.chown(path, node.uid, node.gid, follow_symlinks=False)
        for key, value in node.xattrs.items():
            os.setxattr(path, key, value, follow_symlinks=False)
        if node.kind != "symlink":
            os.chmod(path, node.mode)

    def make(parent: Path, children: dict[str, Node]) -> None:
        for name, node in children.items():
            path = parent / name
            if node.kind == "file":
                path.write_bytes(node.data)
                made_files.append(path)
            elif node.kind == "symlink":
                os.symlink(node.target, path)
            elif node.kind == "fifo":
                os.mkfifo(path)
            else:
                path.mkdir()
                made_dirs.append((path, node))
                make(path, node.children)
            meta(path, node)
            if node.kind != "dir":
                os.utime(path, (node.mtime, node.mtime), follow_symlinks=False)

    make(root, tree)
    for file_index, dir_index, name in links:
        if made_files:
            target = made_files[file_index % len(made_files)]
            link = made_dirs[dir_index % len(made_dirs)][0] / f"{name}.link"
            if not os.path.lexists(link):
                os.link(target, link)
    # Directory mtimes last: creating their contents changed them.
    for path, node in reversed(made_dirs):
        if node is not None:
            os.utime(path, (node.mtime, node.mtime))


def snapshot(root: Path) -> list[tuple[object, ...]]:
    """Every entry below ``root`` with all it should keep through a layer."""
    out: list[tuple[object, ...]] = []
    first_path: dict[int, str] = {}

    def walk(directory: Path) -> None:
        for name in sorted(os.listdir(directory)):
            path = directory / name
            st_ = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISREG(st_.st_mode):
                what: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st_.st_mode):
                what = os.readlink(path)
            else:
                what = st_.st_rdev
            group = ""
            if not stat.S_ISDIR(st_.st_mode) and st_.st_nlink > 1:
                group = first_path.setdefault(st_.st_ino, rel)
            xattrs = {
                key: os.getxattr(path, key, follow_symlinks=False)
                for key in sorted(os.listxattr(path, follow_symlinks=False))
                if key != "security.selinux"
            }
            out.append(
                (
                    rel,
                    stat.S_IFMT(st_.st_mode),
                    stat.S_IMODE(st_.st_mode),
                    st_.st_uid,
                    st_.st_gid,
                    int(st_.st_mtime),
                    what,
                    group,
                    xattrs,
                )
            )
            if stat.S_ISDIR(st_.st_mode):
                walk(path)

    walk(root)
    return out


def pack(source: Path, blob: Path, **kwargs: object) -> tuple[str, str, int]:
    with open(blob, "wb") as f:
        return _native.pack_layer(str(source), f.fileno(), **kwargs)  # type: ignore[arg-type]


def extract(blob: Path | bytes, target: Path, layer: str = LAYER) -> tuple[str, str, int, int]:
    if isinstance(blob, bytes):
        with tempfile.TemporaryFile() as f:
            f.write(blob)
            f.seek(0)
            return _native.extract_layer(f.fileno(), str(target), layer)
    with open(blob, "rb") as f:
        return _native.extract_layer(f.fileno(), str(target), layer)


# --- Round trips ------------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tree=trees,
    links=st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99), names), max_size=4),
)
def test_round_trip(
    tmp_path: Path, tree: dict[str, Node], links: list[tuple[int, int, str]]
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        base = Path(scratch)
        source = base / "source"
        source.mkdir()
        build(source, tree, links)
        want = snapshot(source)
        for compression in COMPRESSIONS:
            blob = base / f"layer.{compression}"
            blob_digest, diff_id, size = pack(source, blob, compression=compression)
            data = blob.read_bytes()
            assert size == len(data)
            assert blob_digest == "sha256:" + hashlib.sha256(data).hexdigest()
            target = base / f"target.{compression}"
            target.mkdir()
            got = extract(blob, target)
            assert got[:3] == (blob_digest, diff_id, size)
            assert snapshot(target) == want
            assert got[4] == tree_size(str(target))  # the size the store records, counted
            # Same tree, same bytes.
            again = pack(source, base / "again", compression=compression)
            assert again[:2] == (blob_digest, diff_id)


def test_overlay_whiteouts_round_trip(tmp_path: Path) -> None:
    """An OCI layer's whiteouts → overlayfs form on extraction → OCI form again when packed."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in [
            ("a/", tarfile.DIRTYPE, b""),
            ("a/.wh.gone", tarfile.REGTYPE, b""),
            ("o/", tarfile.DIRTYPE, b""),
            ("o/.wh..wh..opq", tarfile.REGTYPE, b""),
            ("o/kept", tarfile.REGTYPE, b"kept"),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode = kind, len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    upper = tmp_path / "upper"
    upper.mkdir()
    extract(layer.getvalue(), upper)
    gone = os.lstat(upper / "a/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(upper / "o", "trusted.overlay.opaque") == b"y"
    os.setxattr(upper / "a", "trusted.overlay.origin", b"\0\xfb")

    blob = tmp_path / "layer.tar"
    pack(upper, blob, overlay_whiteouts=True)
    with tarfile.open(blob) as tar:
        members = [(m.name, m.type, m.pax_headers) for m in tar.getmembers()]
    assert members == [
        ("a", tarfile.DIRTYPE, {}),
        ("a/.wh.gone", tarfile.REGTYPE, {}),
        ("o", tarfile.DIRTYPE, {}),
        ("o/.wh..wh..opq", tarfile.REGTYPE, {}),
        ("o/kept", tarfile.REGTYPE, {}),
    ]


# --- Hostile layers ---------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""


def tar_bytes(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.size, info.linkname = m.kind, len(m.data), m.link
            info.mode = 0o755 if m.kind == tarfile.DIRTYPE else 0o644
            tar.addfile(info, io.BytesIO(m.data))
    return out.getvalue()


def files_below(path: Path) -> list[tuple[str, int, int, bytes]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st_.st_mode) else b""
            found.append((str(p), st_.st_mode, st_.st_nlink, data))
    return sorted(found)


def big_tar(size: int) -> bytes:
    return tar_bytes([Member("big", data=bytes(range(256)) * (size // 256))])


def zstd_layer(size: int) -> bytes:
    """A zstd layer holding one file of ``size`` bytes, made by the packer."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "tree").mkdir()
        (Path(scratch) / "tree/big").write_bytes(bytes(range(256)) * (size // 256))
        blob = Path(scratch) / "blob"
        pack(Path(scratch) / "tree", blob, compression="zstd")
        return blob.read_bytes()


#: Each hostile layer, built from the sentinel's path, and the entry (or entries) its error may
#: name: a stream cut short fails in the entry being read, or after it.
HOSTILE: dict[str, tuple[Callable[[Path], bytes], str | tuple[str, ...]]] = {
    "dotdot": (lambda s: tar_bytes([Member("../sentinel/evil", data=b"x")]), "../sentinel/evil"),
    "dotdot-deep": (
        lambda s: tar_bytes([Member("a/b/../../../sentinel/evil", data=b"x")]),
        "a/b/../../../sentinel/evil",
    ),
    "absolute": (lambda s: tar_bytes([Member(f"{s}/evil", data=b"x")]), "/evil"),
    "absolute-etc": (lambda s: tar_bytes([Member("/etc/kobako-evil", data=b"x")]), "/etc/"),
    "symlink-out-then-file": (
        lambda s: tar_bytes(
            [Member("l", tarfile.SYMTYPE, link=str(s)), Member("l/evil", data=b"x")]
        ),
        "l/evil",
    ),
    "relative-symlink-out-then-file": (
        lambda s: tar_bytes(
            [Member("l", tarfile.SYMTYPE, link="../sentinel"), Member("l/sub/evil", data=b"x")]
        ),
        "l/sub/evil",
    ),
    "symlink-chain-out": (
        lambda s: tar_bytes(
            [
                Member("d/", tarfile.DIRTYPE),
                Member("d/a", tarfile.SYMTYPE, link="../b"),
                Member("b", tarfile.SYMTYPE, link="../sentinel"),
                Member("d/a/evil", data=b"x"),
            ]
        ),
        "d/a/evil",
    ),
    "hardlink-etc-passwd": (
        lambda s: tar_bytes([Member("h", tarfile.LNKTYPE, link="/etc/passwd")]),
        "h",
    ),
    "hardlink-dotdot": (
        lambda s: tar_bytes([Member("h", tarfile.LNKTYPE, link="../sentinel/keep")]),
        "h",
    ),
    "hardlink-through-symlink": (
        lambda s: tar_bytes(
            [Member("s", tarfile.SYMTYPE, link=str(s)), Member("h", tarfile.LNKTYPE, link="s/keep")]
        ),
        "h",
    ),
    "whiteout-through-symlink": (
        lambda s: tar_bytes([Member("s", tarfile.SYMTYPE, link=str(s)), Member("s/.wh.keep")]),
        "s/.wh.keep",
    ),
    "whiteout-dotdot": (lambda s: tar_bytes([Member("../sentinel/.wh.keep")]), "../sentinel"),
    "opaque-through-symlink": (
        lambda s: tar_bytes([Member("s", tarfile.SYMTYPE, link=str(s)), Member("s/.wh..wh..opq")]),
        "s/.wh..wh..opq",
    ),
    "file-over-symlink-out": (
        lambda s: tar_bytes(
            [Member("s", tarfile.SYMTYPE, link=f"{s}/keep"), Member("s", data=b"evil")]
        ),
        "s",
    ),
    "truncated-tar": (lambda s: big_tar(1 << 20)[: 512 + 70_000], "big"),
    "truncated-gzip": (lambda s: gzip.compress(big_tar(1 << 20))[:-20], ("big", "<stream>")),
    "garbage": (lambda s: bytes((i * 2654435761 >> 13) & 255 for i in range(8192)), "<stream>"),
    "gzip-garbage": (lambda s: b"\x1f\x8b" + os.urandom(4096), "<stream>"),
    "zstd-cut-short": (lambda s: zstd_layer(1 << 20)[:-7], ("big", "<stream>")),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_fails_cleanly(tmp_path: Path, case: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_bytes(b"precious")
    target = tmp_path / "target"
    target.mkdir()
    build_blob, entry = HOSTILE[case]
    blob = build_blob(sentinel)
    before = files_below(sentinel)
    passwd = os.stat("/etc/passwd")

    with pytest.raises(LayerError) as caught:
        extract(blob, target)

    err = caught.value
    assert err.layer == LAYER
    entries = entry if isinstance(entry, tuple) else (entry,)
    assert any(e in err.entry for e in entries), (err.entry, str(err))
    assert str(err) == f"layer {LAYER}: {err.entry}: {err.reason}"
    assert err.reason
    assert files_below(sentinel) == before
    assert sorted(os.listdir(tmp_path)) == ["sentinel", "target"]
    assert not os.path.lexists("/etc/kobako-evil")
    after = os.stat("/etc/passwd")
    assert (after.st_nlink, after.st_mtime_ns, after.st_size) == (
        passwd.st_nlink,
        passwd.st_mtime_ns,
        passwd.st_size,
    )


# --- The tee, fds and the GIL -----------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_tee_gets_the_exact_bytes(tmp_path: Path, compression: str) -> None:
    source = tmp_path / "source"
    (source / "etc").mkdir(parents=True)
    (source / "etc/motd").write_bytes(b"hello\n" * 5000)
    blob = tmp_path / "blob"
    blob_digest, diff_id, size = pack(source, blob, compression=compression)
    target = tmp_path / "target"
    target.mkdir()
    r, w = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with open(blob, "rb") as f:
            got = _native.extract_layer(f.fileno(), str(target), "L", tee_fd=w)
            assert f.tell() == size  # read to its end, and the fd left open
    finally:
        os.close(w)
        reader.join()
        os.close(r)
    assert got[:4] == (blob_digest, diff_id, size, 2)
    assert got[4] == tree_size(str(target))
    assert bytes(received) == blob.read_bytes()
    assert (target / "etc/motd").read_bytes() == b"hello\n" * 5000


def test_bad_arguments(tmp_path: Path) -> None:
    from kobako.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="brotli"):
        _native.pack_layer(str(tmp_path), 1, compression="brotli")
    with pytest.raises(InvalidArgument, match="level 42"):
        _native.pack_layer(str(tmp_path), 1, compression="gzip", level=42)
    with pytest.raises(InvalidArgument, match="-1"):
        _native.extract_layer(-1, str(tmp_path), "L")
    with open(__file__, "rb") as f, pytest.raises(LayerError) as caught:
        _native.extract_layer(f.fileno(), str(tmp_path / "missing"), "L")
    assert caught.value.layer == "L"


def test_gil_is_released_while_extracting(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    chunk = os.urandom(1 << 20)
    for i in range(96):
        (source / f"f{i:03}").write_bytes(chunk)
    blob = tmp_path / "layer.tar"
    pack(source, blob)
    target = tmp_path / "target"
    target.mkdir()

    counter = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=count)
    thread.start()
    try:
        before = counter
        extract(blob, target)
        during = counter - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    # Holding the GIL, the counter could move only at the few switch points around the call.
    assert during > 10_000, during
