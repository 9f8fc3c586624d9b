"""On-disk cache of symbolic derivations.

Entries are keyed by the SHA-256 of a canonical JSON serialisation of the
key fields plus the package version, stored as pickles and written
atomically (temporary file in the same folder, then :func:`os.replace`).

The folder is ``$LORA_THEORY_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/lora-theory``, else ``~/.cache/lora-theory``. Setting
``LORA_THEORY_CACHE_DIR`` to an empty string disables the cache. Pickles are
only read from this folder, which contains files this package wrote; do not
point it at files from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

__all__ = ["cache_dir", "cache_key", "load", "store"]


def cache_dir() -> Optional[Path]:
    """Return the cache folder, or ``None`` when caching is disabled."""
    configured = os.environ.get("LORA_THEORY_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lora-theory"


def cache_key(kind: str, fields: dict) -> str:
    """SHA-256 of the canonical JSON of ``fields`` plus the package version."""
    from . import __version__

    payload = json.dumps({"kind": kind, "version": __version__, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _path(kind: str, fields: dict) -> Optional[Path]:
    folder = cache_dir()
    if folder is None:
        return None
    return folder / f"{kind}-{cache_key(kind, fields)}.pickle"


def load(kind: str, fields: dict) -> Optional[Any]:
    """Load a stored value, or return ``None`` when it is absent or unreadable (unreadable entries also warn)."""
    path = _path(kind, fields)
    if path is None or not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)
    except Exception as error:  # a corrupt or foreign entry is recomputed, not fatal
        warnings.warn(f"ignoring unreadable cache entry {path}: {error}", RuntimeWarning, stacklevel=2)
        return None


def store(kind: str, fields: dict, value: Any) -> None:
    """Write ``value`` atomically; an unwritable cache folder only produces a warning."""
    path = _path(kind, fields)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=".tmp-", delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            temporary = handle.name
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(f"could not write cache entry {path}: {error}", RuntimeWarning, stacklevel=2)
