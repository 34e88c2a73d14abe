"""Build images for tests straight into a store: layers as tars made with Python's tarfile.

Independent of kobako's own packer and archive code, so that tests of those can use it.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterable

from kobako.image.manifest import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    Descriptor,
    canonical,
    chain_ids,
    manifest_json,
)
from kobako.image.store import ImageRecord, Store

#: One tar entry: (name, kind, content or link target, mode)
Entry = tuple[str, str, bytes | str, int]


def tar_of_dir(root: str) -> bytes:
    """A tar of a directory tree, names relative to it (``./`` excluded), sorted."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                tar.add(full, arcname=os.path.relpath(full, root), recursive=False)
    return buf.getvalue()


def tar_of(entries: Iterable[Entry]) -> bytes:
    """A tar of entries: kinds ``file``, ``dir``, ``symlink``, ``hardlink``, ``whiteout``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1_700_000_000
            payload = None
            if kind in ("file", "whiteout"):
                content = data if isinstance(data, bytes) else data.encode()
                info.size = len(content)
                payload = io.BytesIO(content)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(data)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = str(data)
            tar.addfile(info, payload)
    return buf.getvalue()


def make_image(
    store: Store,
    layers: list[bytes],
    *,
    tag: str | None = None,
    config: dict[str, object] | None = None,
    compress: bool = True,
) -> ImageRecord:
    """Store an image made of these layer tars (bottom first) and name it ``tag``."""
    import hashlib

    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    with store.stage() as stage:
        descs = []
        for layer, diff_id, chain in zip(layers, diff_ids, chain_ids(diff_ids), strict=True):
            blob = gzip.compress(layer, mtime=0) if compress else layer
            d = stage.add_blob(blob)
            stage.add_layer(d.digest, diff_id, chain)
            media_type = OCI_LAYER_GZIP if compress else OCI_LAYER
            descs.append(Descriptor(digest=d.digest, size=d.size, media_type=media_type))
        doc = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-11-28T00:00:00Z",
            "config": config or {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2026-11-28T00:00:00Z", "created_by": "tests"}] * len(layers),
        }
        c = stage.add_blob(canonical(doc))
        m = stage.add_blob(
            manifest_json(Descriptor(digest=c.digest, size=c.size, media_type=OCI_CONFIG), descs)
        )
        stage.commit(manifest_digest=m.digest, tags=[tag] if tag else [])
    return store.image(m.digest)
