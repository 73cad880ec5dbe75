"""File-system helpers of the caches: modes from the umask, flushing to disk, and what a full disk (no space, or no
inodes left for more files) looks like, with the fix."""
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


def inodes_exhausted(path: Path) -> bool:
    """True when the file system holding ``path`` has no inode left for another file or folder (f_files == 0: a
    file system without an inode limit)."""
    try:
        return _no_inode_left(os.statvfs(path))
    except OSError:
        return False


def _no_inode_left(info: os.statvfs_result) -> bool:
    return info.f_files > 0 and info.f_favail == 0


def no_room(root: Path, title: str, needed: int, fix: str, error: BaseException | None = None,
            inodes: bool | None = None) -> str | None:
    """Why the ``title`` cache cannot be built in ``root``, with the fix: before a build (``error`` None), None when
    there is room; after a build failed with ``error`` (a full disk), always a message. ``inodes``: whether the
    inodes ran out, as seen before the failed build's files were deleted (None: look now)."""
    info = os.statvfs(root)
    free = megabytes(info.f_bavail * info.f_frsize)
    if inodes or (inodes is None and _no_inode_left(info)):
        what = (f"The disk ran out of room for more files (inodes) while building the {title} cache in {root} "
                f"({error}); nothing unfinished was left there." if error is not None else
                f"Cannot build the {title} cache in {root}: the disk has no room for more files (inodes).")
        return (f"{what} Every file and folder takes one of the disk's {info.f_files:,} inodes, and all are in "
                f"use; free space is not the problem ({free} free). Fix: delete files on that disk (many small "
                f"files free the most), or set COURSE_CACHE_DIR to a folder on another disk; then run {fix}.")
    if error is not None:
        return (f"The disk filled up while building the {title} cache in {root} ({error}); nothing unfinished was "
                f"left there. The cache needs about {megabytes(needed)} free ({free} free now). Fix: free some "
                f"space on that disk, or set COURSE_CACHE_DIR to a folder on a disk with more room; then run {fix}.")
    if info.f_bavail * info.f_frsize < needed:
        return (f"Not enough free space to build the {title} cache in {root}: it needs about {megabytes(needed)}, "
                f"and {free} are free. Fix: free some space on that disk, or set COURSE_CACHE_DIR to a folder on a "
                f"disk with more room; then run {fix}.")
    return None


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
