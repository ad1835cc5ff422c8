"""Files only this service's user may read: keys, the embedded database, its WAL."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

PRIVATE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700


def private_dir(path: Path) -> Path:
    """path as a directory, created 0700 when it does not exist yet (existing ones are kept)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def create_private(path: Path, content: bytes) -> bool:
    """Write content to a new file created 0600; False (nothing written) when it exists.

    O_EXCL: two processes starting together must not each write their own secret.
    """
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def make_private(path: Path) -> None:
    """Create path empty and 0600 if absent, else take group and other access away.

    SQLite creates its -wal and -shm files with the mode of the database file, so a
    database file made private before SQLite first opens it keeps all three private.
    """
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # A file left by an older version (0644): tighten it rather than keep serving it.
        path.chmod(mode & 0o700)
