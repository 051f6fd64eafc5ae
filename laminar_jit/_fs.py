"""File-system access of checkpoints and sinks: every write, sync and rename they make goes through here.

Keeping these few calls in one module gives one place to reason about
durability (what is synced before what is renamed) and one place where the
tests inject storage faults — a full disk, a failing rename — by replacing a
function of this module (``tests/test_faults.py``). Callers therefore call
them as ``_fs.replace(...)``, never bind them with ``from ._fs import ...``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["explain_os_error", "fsync_dir", "replace", "write_file", "write_parquet"]


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (creations, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data) -> None:
    """Write ``data`` (bytes-like) to a new file ``path`` and sync it to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_parquet(table: pa.Table, path: Path, compression: str) -> None:
    """Write ``table`` as the Parquet file ``path`` and sync it; a failed write removes what it left."""
    try:
        pq.write_table(table, path, compression=compression)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` atomically (same file system), replacing a file ``dst``."""
    os.replace(src, dst)


#: errno -> what to do about it, for messages.
_FIXES = {
    errno.ENOSPC: "the file system is full — free space on it or use a directory on another file system",
    errno.EDQUOT: "the disk quota is used up — free space or raise the quota",
    errno.EACCES: "permission denied — make the directory writable by this user",
    errno.EPERM: "operation not permitted — make the directory writable by this user",
    errno.EROFS: "the file system is read-only — remount it read-write or use another directory",
    errno.EIO: "the device reported an I/O error — check the disk (dmesg) before trusting it again",
}


def explain_os_error(exc: BaseException) -> str:
    """``"<cause> (<what to do>)"`` for an OS error, e.g. a full disk, for error messages.

    pyarrow reports some OS errors as plain ``OSError`` without ``errno``
    (the cause is then only in the text), so the text is matched as well.
    """
    code = getattr(exc, "errno", None)
    text = str(exc) or type(exc).__name__
    if code not in _FIXES:
        lowered = text.lower()
        code = next((c for c, words in ((errno.ENOSPC, "no space left"), (errno.EDQUOT, "quota exceeded"),
                                        (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied"))
                     if words in lowered), code)
    fix = _FIXES.get(code, "check that the directory exists, is writable and its device works")
    return f"{text} ({fix})"
