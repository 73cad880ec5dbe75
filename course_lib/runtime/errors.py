"""The errors of the asset layer. Each message names the file or folder concerned and the command that fixes it."""
from __future__ import annotations


class AssetMissingError(RuntimeError):
    """A model or data package of the course is not installed, or a cache is not built yet."""


class CacheOutOfDateError(AssetMissingError):
    """A cache was built from other packages or another recipe (or by an older course without a manifest)."""


class CacheError(RuntimeError):
    """A cache of the course (a folder in ``cache_dir()``) cannot be used or built as it is."""


class CacheDamagedError(CacheError):
    """A cache's files no longer match what its MANIFEST.json recorded when it was built."""


class CacheNotReadableError(CacheError):
    """A cache exists but its files are not readable by this user (a shared cache with strict permissions)."""


class CacheNotWritableError(CacheError):
    """A cache must be built or repaired, but its folder is not writable by this user."""


class NotEnoughSpaceError(CacheError):
    """The disk holding the cache folder has too little free space for a build (or filled up during one)."""


class CourseInputError(ValueError, TypeError):
    """A public function or command got an argument it cannot use; the message names the argument and the fix.

    It is a ``ValueError`` and a ``TypeError`` at once, so code written against either keeps catching it.
    """
