"""sha256 of step scripts, cached by (mtime, size) so status views stay cheap."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_cache: dict[str, tuple[int, int, str]] = {}
_lock = threading.Lock()


def script_sha256(path: Path) -> str | None:
    """The sha256 hex digest of a file, or None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = str(path)
    with _lock:
        hit = _cache.get(key)
    if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    with _lock:
        _cache[key] = (st.st_mtime_ns, st.st_size, digest)
    return digest
