"""The caches the course builds from its assets: built whole or not at all, checked, repaired, shareable.

A cache is one folder in ``cache_dir()``, e.g. ``smollm2-135m-instruct``. :func:`build` makes it so that a
folder with that name is always complete:

1. one builder at a time per cache (an ``fcntl`` lock on ``.<name>.lock``; the kernel drops it when a builder
   dies); a second builder waits, then finds the cache built and returns it;
2. the free space is checked against what the cache needs, and that inodes are left, before any work starts;
3. the content is computed, then written into a fresh ``<name>.partial-XXXX`` folder together with
   ``MANIFEST.json`` (size and sha256 of every file, and what the cache was built from), given the
   permissions the user's umask allows, flushed to disk, and renamed into place.

A killed build leaves only a ``.partial-`` folder, which the next build removes; a failed write removes its own.

:func:`inspect` compares a folder with its manifest: by size and readability (cheap, done on every load) or
also by checksum (``doctor`` and ``prepare``; about 0.4 s for the 540 MB decoder). :func:`ensure` is what the
loaders call: return a good cache, build a missing or out-of-date one, and raise a clear error for a damaged
one (``prepare`` repairs it instead).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from course_lib.runtime import disk
from course_lib.runtime.commands import fix_command
from course_lib.runtime.errors import (
    AssetMissingError,
    CacheDamagedError,
    CacheNotReadableError,
    CacheNotWritableError,
    CacheOutOfDateError,
    CourseInputError,
    NotEnoughSpaceError,
)

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
SPACE_MARGIN = 0.10  # a build needs the cache's size plus 10% plus 50 MB free
SPACE_MARGIN_BYTES = 50_000_000

Saver = Callable[[Path], None]  # writes the computed content into a folder


def _require(ok: bool, message: str) -> None:  # not runtime.validate: it imports torch; the asset layer stays light
    if not ok:
        raise CourseInputError(message)


@dataclass(frozen=True)
class CacheSpec:
    """What a cache is: a title for messages, its measured size, and what it is built from."""

    title: str  # e.g. "de-quantized decoder"
    size_bytes: int  # size of a built cache, measured; the space check adds a margin
    source: Callable[[], dict]  # package versions, recipe...: a cache built from something else is out of date

    @property
    def bytes_needed(self) -> int:
        return int(self.size_bytes * (1 + SPACE_MARGIN)) + SPACE_MARGIN_BYTES


@dataclass(frozen=True)
class CacheState:
    """The verdict of :func:`inspect`: ``ok``, ``missing``, ``stale``, ``damaged`` or ``unreadable``."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _folder(folder, **flags) -> Path:  # a Path (a file there is allowed: inspect() reports it), flags checked
    for name, value in flags.items():
        _require(isinstance(value, bool), f"{name} must be True or False, got {value!r}")
    _require(isinstance(folder, (str, os.PathLike)) and str(folder).strip() != "",
             f"folder must be a path (str or pathlib.Path), got {folder!r}")
    return Path(folder)


def _arguments(folder, spec, compute=callable, **flags) -> Path:  # compute: only where one is given
    _require(isinstance(spec, CacheSpec), f"spec must be a CacheSpec, got {type(spec).__name__}")
    _require(callable(compute), f"compute must be a function, got {compute!r}")
    return _folder(folder, **flags)


def _not_ours(folder: Path) -> CacheDamagedError:
    return CacheDamagedError(f"{folder} is not a folder the course made (a link or a file); the course will not "
                             f"replace it. Move it away, then run {fix_command('prepare')}.")


# ----------------------------------------------------------------------------------------------- checking
def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_manifest(folder: Path) -> dict:
    """The manifest of a built cache (raises OSError or ValueError when it is absent or unreadable)."""
    folder = _folder(folder)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or "source" not in manifest:
        raise ValueError(f"{MANIFEST} is not a format-{MANIFEST_FORMAT} course manifest")
    for name, entry in files.items():
        if not isinstance(entry, dict) or not {"size", "sha256"} <= set(entry) or ".." in Path(name).parts:
            raise ValueError(f"{MANIFEST} has a bad entry for {name!r}")
    return manifest


def _source_change(recorded, expected) -> str:
    changes = []
    for key in sorted(set(recorded) | set(expected), key=str):
        old, new = recorded.get(key), expected.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{k} {old.get(k)!r} (now {new.get(k)!r})" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        else:
            changes.append(f"{key} {old!r} (now {new!r})")
    return "it was built with " + ", ".join(changes)


def _name(uid: int) -> str:  # of a file's owner, or of the user running this (os.geteuid())
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def inspect(folder: Path, spec: CacheSpec, checksums: bool = False) -> CacheState:
    """Compare ``folder`` with its manifest: files present, sizes, readable; ``checksums`` adds sha256."""
    folder = _arguments(folder, spec, checksums=checksums)
    if not folder.exists():
        return CacheState("missing", "it is not built yet")
    if not folder.is_dir():
        return CacheState("damaged", f"{folder} is not a folder")
    if not os.access(folder, os.R_OK | os.X_OK):
        info = folder.stat()
        return CacheState("unreadable", f"the folder has mode {stat.filemode(info.st_mode)} and belongs to "
                                        f"{_name(info.st_uid)}")
    if not (folder / MANIFEST).exists():
        return CacheState("stale", f"it has no {MANIFEST} (built by an older version of the course)")
    try:
        manifest = read_manifest(folder)
    except PermissionError:
        info = (folder / MANIFEST).stat()
        return CacheState("unreadable", f"{MANIFEST} has mode {stat.filemode(info.st_mode)} and belongs to "
                                        f"{_name(info.st_uid)}")
    except (OSError, ValueError, AttributeError) as error:
        return CacheState("damaged", f"its {MANIFEST} is unreadable ({error})")
    expected = spec.source()
    if manifest["source"] != expected:
        return CacheState("stale", _source_change(manifest["source"], expected))
    for name, entry in manifest["files"].items():
        path = folder / name
        try:
            info = path.stat()
        except FileNotFoundError:
            return CacheState("damaged", f"{name} is missing")
        if info.st_size != entry["size"]:
            return CacheState("damaged", f"{name} has {info.st_size:,} bytes instead of {entry['size']:,}")
        if not os.access(path, os.R_OK):
            return CacheState("unreadable", f"{name} has mode {stat.filemode(info.st_mode)} and belongs to "
                                            f"{_name(info.st_uid)}")
    if checksums:
        for name, entry in manifest["files"].items():
            if sha256_of(folder / name) != entry["sha256"]:
                return CacheState("damaged", f"{name} differs from the file written at build time (sha256 "
                                             "mismatch)")
    return CacheState("ok")


def problem(folder: Path, spec: CacheSpec, state: CacheState) -> Exception:
    """The error that tells the user what is wrong with a cache and what fixes it."""
    folder = _arguments(folder, spec)
    _require(isinstance(state, CacheState) and not state.ok, f"state must be a CacheState, not ok, got {state!r}")
    if folder.exists() and not folder.is_dir():
        return _not_ours(folder)
    where, repair = f"The {spec.title} cache at {folder}", fix_command("prepare")
    if state.status == "missing":
        return AssetMissingError(f"{where} is not built yet. Fix: run {repair}.")
    if state.status == "stale":
        return CacheOutOfDateError(f"{where} is out of date: {state.reason}. Fix: run {repair}.")
    if state.status == "unreadable":
        return CacheNotReadableError(
            f"{where} is not readable by you ({_name(os.geteuid())}): {state.reason}. Fix: its owner runs "
            f"`chmod -R a+rX {folder}` (and prepares shared caches with `umask 022`)."
        )
    return CacheDamagedError(f"{where} is damaged: {state.reason}. Fix: run {repair}; it rebuilds the cache.")


@contextlib.contextmanager
def explain_load_failure(folder: Path, spec: CacheSpec) -> Iterator[None]:
    """If loading a cache fails and a full check finds it damaged, raise that instead of the library's error."""
    try:  # the arguments: checked by inspect()
        yield
    except Exception as error:
        state = inspect(folder, spec, checksums=True)
        if state.status in ("damaged", "unreadable"):
            raise problem(folder, spec, state) from error
        raise


# ----------------------------------------------------------------------------------------------- building
def ensure(folder: Path, spec: CacheSpec, compute: Callable[[], Saver], *, build: bool = True,
           repair: bool = False, checksums: bool = False, verbose: bool = True) -> Path:
    """Return ``folder`` if it holds a good cache; else build it (``build``) or repair it (``repair``).

    ``compute()`` does the work (de-quantize, fine-tune) and returns a function that saves it into a folder.
    A missing or out-of-date cache is built when ``build``; a damaged one only when ``repair`` (``prepare``),
    otherwise its error names the folder and the repair command.
    """
    folder = _arguments(folder, spec, compute, build=build, repair=repair, checksums=checksums, verbose=verbose)
    if folder.exists() and not folder.is_dir():
        raise _not_ours(folder)
    state = inspect(folder, spec, checksums=checksums)
    if state.ok:
        if repair:
            remove_leftovers(folder, verbose)
        return folder
    if state.status == "unreadable" or (state.status == "damaged" and not repair) or not build:
        raise problem(folder, spec, state)
    if verbose and state.status != "missing":
        print(f"Rebuilding the {spec.title} cache at {folder}: {state.reason}.")
    return build_cache(folder, spec, compute, verbose=verbose)


def build_cache(folder: Path, spec: CacheSpec, compute: Callable[[], Saver], *, verbose: bool = True) -> Path:
    """Build the cache ``folder`` (see the module docstring); safe against kills, full disks and rival builders."""
    folder = _arguments(folder, spec, compute, verbose=verbose)
    root = folder.parent
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise _not_ours(folder)
    _require_writable(root, folder, spec)
    try:
        with _build_lock(root / f".{folder.name}.lock", spec, verbose) as exclusive:
            if inspect(folder, spec, checksums=True).ok:  # another process built it while this one waited
                return folder
            if exclusive:
                _remove_leftovers(root, folder.name, verbose)
            _check_free_space(root, spec)
            _write_and_swap(folder, spec, compute(), verbose)
    except NotEnoughSpaceError:
        raise
    except BaseException as error:
        if not disk.is_disk_full(error):
            raise
        raise NotEnoughSpaceError(disk.no_room(root, spec.title, spec.bytes_needed, fix_command("prepare"), error)) \
            from error
    if verbose:
        print(f"Built the {spec.title} cache: {folder}")
    return folder


def _write_and_swap(folder: Path, spec: CacheSpec, save: Saver, verbose: bool) -> None:
    """Write into a fresh partial folder, add the manifest, fix modes, flush, rename into place."""
    partial = Path(tempfile.mkdtemp(prefix=f"{folder.name}.partial-", dir=folder.parent))
    try:
        if verbose:
            print(f"Writing the {spec.title} into {partial} ...", flush=True)
        save(partial)
        write_manifest(partial, spec.source())
        disk.apply_umask(partial)
        disk.flush_to_disk(partial)
        _swap_into_place(partial, folder)
    except BaseException as error:  # KeyboardInterrupt too: never leave a partial folder behind
        inodes = disk.is_disk_full(error) and disk.inodes_exhausted(partial)  # seen before deleting frees some
        shutil.rmtree(partial, ignore_errors=True)
        if inodes:
            raise NotEnoughSpaceError(disk.no_room(folder.parent, spec.title, spec.bytes_needed,
                                                   fix_command("prepare"), error, inodes=True)) from error
        raise


def write_manifest(folder: Path, source: dict) -> dict:
    """Record size and sha256 of every file in ``folder`` and what it was built from, in MANIFEST.json."""
    folder = _folder(folder)
    _require(folder.is_dir(), f"folder must be an existing folder, got {folder}")
    _require(isinstance(source, dict), f"source must be a dict (what the cache was built from), got {source!r}")
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST:
            files[name] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {"format": MANIFEST_FORMAT, "source": source, "files": files,
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _swap_into_place(partial: Path, folder: Path) -> None:
    if folder.exists():  # an out-of-date or damaged cache: move it aside, put the new one in, then delete it
        old = folder.with_name(f"{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(folder, old)
        os.rename(partial, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, folder)


def _leftovers(root: Path, name: str) -> list[Path]:
    """``<name>.partial*`` and ``<name>.old-*`` folders: what interrupted builds and swaps leave."""
    return [entry for entry in root.iterdir() if entry.name.startswith((f"{name}.partial", f"{name}.old-"))
            and entry.is_dir() and not entry.is_symlink()]


def _remove_leftovers(root: Path, name: str, verbose: bool) -> None:
    """Remove the leftovers of interrupted builds (only while holding the build lock: none is in progress)."""
    for entry in _leftovers(root, name):
        shutil.rmtree(entry, ignore_errors=True)
        if verbose:
            print(f"Removed {entry}, left by an interrupted build.")


def remove_leftovers(folder: Path, verbose: bool = True) -> None:
    """Remove what interrupted builds of ``folder`` left, unless a build is running now (it holds the lock)."""
    folder = _folder(folder, verbose=verbose)
    root = folder.parent
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK) or not _leftovers(root, folder.name):
        return
    with contextlib.suppress(OSError):
        fd = os.open(root / f".{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError (an OSError): a build is running
            _remove_leftovers(root, folder.name, verbose)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _build_lock(path: Path, spec: CacheSpec, verbose: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``; yields False where the file system cannot lock (no cleanup then)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            exclusive = True
        except BlockingIOError:
            if verbose:
                print(f"Another process is building the {spec.title} cache; waiting for it ({path}) ...",
                      flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
            exclusive = True
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            exclusive = False
        yield exclusive
    finally:
        os.close(fd)  # releases the lock


def _require_writable(root: Path, folder: Path, spec: CacheSpec) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        file = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
        why = f"cannot be created, as {file} is a file" if file else \
            f"is not writable by you ({_name(os.geteuid())})" if root.is_dir() else \
            f"does not exist and you ({_name(os.geteuid())}) cannot create it"
        raise CacheNotWritableError(
            f"The {spec.title} cache at {folder} has to be built, but {root} {why}. "
            f"If it is a class cache prepared by an instructor, ask them to run "
            f"{fix_command('prepare', COURSE_CACHE_DIR=root)}; otherwise set COURSE_CACHE_DIR to a folder of your "
            f"own and run {fix_command('prepare')}."
        )


def _check_free_space(root: Path, spec: CacheSpec) -> None:
    why = disk.no_room(root, spec.title, spec.bytes_needed, fix_command("prepare"))  # too little space, or no inodes
    if why:
        raise NotEnoughSpaceError(why)
