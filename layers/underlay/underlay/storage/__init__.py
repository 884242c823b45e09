"""Application objects in the `storage` bucket: keys, presigned uploads and downloads, and CDN URLs.

    from underlay.storage import cdn_url, object_key, storage, validate_key

- `underlay.storage.keys`: `object_key(kind, id, ext, public=)` builds `{prefix}/{kind}/{id}.{ext}`;
  `validate_key(key)` refuses anything else (traversal, odd characters, too long) with a 422 naming the field.
- `underlay.storage.client`: `storage()` (a `StorageClient`: `presign_upload`, `presign_download`, `head`,
  `exists`, `delete`) and `cdn_url(key)`.
- `underlay.storage.settings`: `StorageSettings` (`UNDERLAY_STORAGE__...`).

`underlay.settings` imports `StorageSettings`, so this package imports its modules only when a name is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from underlay.storage.client import StorageClient, cdn_url, storage
    from underlay.storage.keys import object_key, parse_key, validate_key

__all__ = ["StorageClient", "cdn_url", "object_key", "parse_key", "storage", "validate_key"]

_EXPORTS = {
    "StorageClient": "underlay.storage.client",
    "cdn_url": "underlay.storage.client",
    "storage": "underlay.storage.client",
    "object_key": "underlay.storage.keys",
    "parse_key": "underlay.storage.keys",
    "validate_key": "underlay.storage.keys",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'underlay.storage' has no attribute {name!r}")
    return getattr(import_module(module), name)
