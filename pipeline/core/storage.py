"""Atomic file writes and the sweep of temp files a killed or failed write left behind.

Every file the pipeline writes (stored images, detector JSON, report pages, cached heads, evidence)
goes through `atomic_write`: a temp file in the target's folder, fsync, then `os.replace`, so a reader
never sees half a file and a crash leaves at most a ``.tmp-*`` file, which `sweep_stale_temp` removes.
Every file the pipeline reads by a name an export gave it goes through `resolve_inside` (the one
path-escape check), so ``..``, an absolute path or a symlink cannot lead outside the export.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TEMP_PREFIX = ".tmp-"
STALE_AFTER_S = 3600.0  # a temp file older than this belongs to a write that died


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically; the folder is created if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sweep_stale_temp(folder: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove ``.tmp-*`` files below ``folder`` older than ``older_than_s``. Returns how many."""
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in folder.rglob(f"{TEMP_PREFIX}*"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # another sweeper or the writer itself got there first
            continue
    return removed


def resolve_inside(root: Path, name: str | Path) -> Path | None:
    """``root / name`` with symlinks resolved, or None when ``name`` is absolute or the result lies
    outside ``root``: the one path-escape check for names that come from an export."""
    base = root.resolve()
    candidate = (base / name).resolve()
    if Path(name).is_absolute() or not candidate.is_relative_to(base):
        return None
    return candidate
