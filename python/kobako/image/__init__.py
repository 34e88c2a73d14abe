"""Images: the content-addressed store and image names.

:class:`Store` keeps blobs by digest in an OCI image layout, with an index of names; see
:mod:`kobako.image.store` for how it stays whole under concurrent commands and crashes.
"""

from __future__ import annotations

from kobako.image.reference import Reference, parse
from kobako.image.store import DEFAULT_ROOT, Descriptor, DigestMismatch, Store, Tag, default_root

__all__ = [
    "DEFAULT_ROOT",
    "Descriptor",
    "DigestMismatch",
    "Reference",
    "Store",
    "Tag",
    "default_root",
    "parse",
]
