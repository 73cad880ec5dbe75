"""File-system helpers of the caches: modes from the umask, flushing to disk, and what a full disk looks like."""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the umask allows (libraries write some files as 0600)."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(parent, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o666 & ~mask)


def flush_to_disk(folder: Path) -> None:
    for parent, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def free_now(root: Path) -> str:
    info = os.statvfs(root)
    text = f"{megabytes(info.f_bavail * info.f_frsize)} free now"
    if info.f_files and not info.f_favail:  # f_files == 0: a file system without an inode limit
        text += ", but no room for more files (all inodes used)"
    return text


def is_disk_full(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:  # the library's error may wrap the OSError
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(error) for text in ("No space left on device", "Disk quota exceeded", "os error 28")):
            return True
        error = error.__cause__ or error.__context__
    return False
