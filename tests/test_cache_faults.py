"""Faults a course cache must survive, injected into the real builders (the de-quantization of the decoder and
the fine-tuning of the sentiment model, cut to a few steps with ``--sentiment-steps``): ``prepare`` killed at
each stage, two ``prepare`` at once, files truncated or changed, a read-only cache shared with another user, a
disk that fills, a strict umask. After each, the user gets one clear message, and ``prepare`` + ``doctor`` pass.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from course_lib import assets, sentiment
from course_lib.runtime import cache, commands
from course_lib.runtime.errors import (
    CacheDamagedError,
    CacheNotWritableError,
    CacheOutOfDateError,
    CourseInputError,
    NotEnoughSpaceError,
)
from course_lib.llama import load_pretrained_decoder

STEPS = 2  # fine-tuning steps of the test builds (the course's model: 150)
DECODER = assets.DECODER_CACHE_NAME
SENTIMENT = sentiment.CACHE_NAME
SPECS = {DECODER: assets.DECODER_CACHE, SENTIMENT: sentiment.cache_spec(STEPS)}
REPO = Path(__file__).resolve().parents[1]


def course_command(command: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "course_lib", command, "--sentiment-steps", str(STEPS), *extra]


def run_course(command: str, cache_root: Path, prefix: tuple[str, ...] = (), **env) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *course_command(command)], capture_output=True, text=True, timeout=1200,
                          cwd=REPO, umask=0o022,
                          env={**os.environ, "COURSE_CACHE_DIR": str(cache_root), "PYTHONUNBUFFERED": "1", **env})


def start_prepare(cache_root: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as errors:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(course_command("prepare"), stdout=subprocess.PIPE, stderr=errors, text=True,
                                cwd=REPO, umask=0o022,
                                env={**os.environ, "COURSE_CACHE_DIR": str(cache_root), "PYTHONUNBUFFERED": "1"})


def kill_prepare_at(cache_root: Path, marker: str, log: Path) -> str:
    """Run ``prepare`` and SIGKILL it the moment it prints a line containing ``marker``; return what it printed."""
    process = start_prepare(cache_root, log)
    watchdog = threading.Timer(900, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                process.send_signal(signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        process.wait()
        process.stdout.close()
    printed = "".join(lines)
    assert process.returncode == -signal.SIGKILL, f"never printed {marker!r}:\n{printed}\n{log.read_text()}"
    return printed


def leftovers(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if ".partial" in p.name or ".old-" in p.name)


def state(cache_root: Path, name: str, checksums: bool = True) -> cache.CacheState:
    return cache.inspect(cache_root / name, SPECS[name], checksums=checksums)


def world_readable_tempdir(prefix: str) -> Path:
    """A temporary folder another user can enter (pytest's own are private to the user running the tests)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def make_writable(folder: Path) -> None:
    for parent, folders, files in os.walk(folder):
        os.chmod(parent, 0o755)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o644)


@pytest.fixture(scope="module")
def shared_cache():
    """Both caches built by one real ``prepare`` under umask 022, in a folder other users can enter."""
    top = world_readable_tempdir("course-cache-")
    root = top / "cache"
    result = run_course("prepare", root)
    assert result.returncode == 0, result.stdout + result.stderr
    yield root
    make_writable(top)
    shutil.rmtree(top)


# ----------------------------------------------------------------------------------------------- permissions
@pytest.mark.slow
def test_prepared_files_follow_the_umask_so_a_whole_class_can_read_them(shared_cache):
    for name in (DECODER, SENTIMENT):
        folder = shared_cache / name
        manifest = json.loads((folder / cache.MANIFEST).read_text())
        assert "model.safetensors" in manifest["files"]  # safetensors writes it as 0600 through a temp file
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def _tiny_safetensors_build(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    spec = cache.CacheSpec("tiny test cache", size_bytes=1_000, source=lambda: {"what": "two tensors"})

    def compute():
        return lambda partial: save_file({"w": torch.ones(2, 3)}, str(partial / "model.safetensors"))

    cache.build_cache(folder, spec, compute, verbose=False)


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
                         ids=["umask-077", "umask-002"])
def test_cache_modes_follow_any_umask(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        _tiny_safetensors_build(tmp_path / "tiny")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "tiny").stat().st_mode) == folder_mode
    for name in ("model.safetensors", cache.MANIFEST):
        assert stat.S_IMODE((tmp_path / "tiny" / name).stat().st_mode) == file_mode


# ----------------------------------------------------------------------------------------------- damaged files
def _truncate(path: Path) -> bytes:
    data_tail_start = path.stat().st_size - min(path.stat().st_size // 2, 4096)
    with path.open("rb+") as file:
        file.seek(data_tail_start)
        tail = file.read()
        file.truncate(data_tail_start)
    return tail


def _flip_byte(path: Path, offset: int | None = None) -> int:
    offset = path.stat().st_size // 2 if offset is None else offset
    with path.open("rb+") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))
    return offset


@pytest.mark.slow
@pytest.mark.parametrize("name", [DECODER, SENTIMENT])
def test_every_cached_file_truncated_or_changed_is_detected_and_named(shared_cache, name):
    folder = shared_cache / name
    files = sorted(json.loads((folder / cache.MANIFEST).read_text())["files"])
    assert {"config.json", "model.safetensors", "SOURCE.json"} <= set(files)
    for file in files:
        path = folder / file
        tail = _truncate(path)
        found = state(shared_cache, name, checksums=False)  # the cheap check every load makes
        with path.open("ab") as restore:
            restore.write(tail)
        assert found.status == "damaged" and file in found.reason, (file, found)

        offset = _flip_byte(path)
        found = state(shared_cache, name, checksums=True)  # what doctor and prepare check
        _flip_byte(path, offset)
        assert found.status == "damaged" and file in found.reason and "sha256" in found.reason, (file, found)
    tail = _truncate(folder / cache.MANIFEST)
    found = state(shared_cache, name)
    with (folder / cache.MANIFEST).open("ab") as restore:
        restore.write(tail)
    assert found.status == "damaged" and cache.MANIFEST in found.reason
    assert state(shared_cache, name).ok


@pytest.mark.slow
def test_loading_a_damaged_cache_raises_one_error_naming_the_folder_and_the_repair(shared_cache, monkeypatch,
                                                                                  tmp_path):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(shared_cache))
    weights = shared_cache / DECODER / "model.safetensors"
    backup = tmp_path / "model.safetensors"
    shutil.copy2(weights, backup)
    try:
        with weights.open("rb+") as file:  # the fault users met: safetensors said "incomplete metadata"
            file.truncate(100)
        for load in (assets.load_decoder, assets.load_decoder_tokenizer, load_pretrained_decoder):
            with pytest.raises(CacheDamagedError) as caught:
                load()
            message = str(caught.value)
            assert str(shared_cache / DECODER) in message and "model.safetensors" in message, message
            assert message.endswith("Fix: run `make prepare`; it rebuilds the cache."), message
        shutil.copy2(backup, weights)
        _flip_byte(weights, 3)  # same size, unreadable header: only the load notices, then a full check explains
        with pytest.raises(CacheDamagedError, match="sha256") as caught:
            assets.load_decoder()
        assert "make prepare" in str(caught.value) and caught.value.__cause__ is not None
    finally:
        shutil.copy2(backup, weights)

    weights = shared_cache / SENTIMENT / "model.safetensors"
    tail = _truncate(weights)
    try:
        with pytest.raises(CacheDamagedError, match=re.escape(str(shared_cache / SENTIMENT))):
            sentiment.load_sentiment_pipeline(steps=STEPS)
    finally:
        with weights.open("ab") as restore:
            restore.write(tail)
    assert state(shared_cache, DECODER).ok and state(shared_cache, SENTIMENT).ok


@pytest.mark.slow
def test_a_cache_built_with_another_recipe_is_out_of_date_not_used(shared_cache, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(shared_cache))
    with pytest.raises(CacheOutOfDateError) as caught:
        sentiment.sentiment_model_path(build=False)  # the course's recipe: 150 steps; this cache has 2
    assert f"recipe.steps {STEPS} (now {sentiment.RECIPE['steps']})" in str(caught.value)
    assert "make prepare" in str(caught.value)


# ----------------------------------------------------------------------------------------------- shared cache
def _as_another_user() -> tuple[list[str], list[str]] | None:
    """(command prefix to run Python as an unprivileged user, the same without extra capabilities) or None."""
    if os.geteuid() != 0:
        return [], []
    tools = []
    if shutil.which("setpriv"):
        tools.append(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    if shutil.which("runuser"):
        tools.append(["runuser", "-u", "nobody", "--"])
    for plain in tools:
        probe = [sys.executable, "-c", "import course_lib"]
        if subprocess.run([*plain, *probe], capture_output=True, cwd=REPO).returncode == 0:
            return plain, plain
        if plain[0] == "setpriv":  # the interpreter may sit in a private home: let it read, not write
            reader = [*plain, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
            if subprocess.run([*reader, *probe], capture_output=True, cwd=REPO).returncode == 0:
                return reader, plain
    return None


@pytest.mark.slow
def test_a_read_only_cache_prepared_by_an_instructor_serves_another_user(shared_cache, tmp_path):
    users = _as_another_user()
    if users is None:
        pytest.skip("running as root without setpriv or runuser: cannot read the cache as another user, and root "
                    "ignores permissions")
    python_user, plain_user = users
    home = world_readable_tempdir("student-home-")
    home.chmod(0o777)
    readonly_empty = world_readable_tempdir("empty-class-cache-")
    before = sorted(str(p) for p in shared_cache.rglob("*"))
    subprocess.run(["chmod", "-R", "a-w", str(shared_cache), str(readonly_empty)], check=True)
    try:
        # Every file can be read by another user, with no privileges at all (mode bits, not root, decide).
        files = [str(p) for p in shared_cache.rglob("*") if p.is_file()]
        read = subprocess.run([*plain_user, "sha256sum", *files], capture_output=True, text=True)
        assert read.returncode == 0, read.stderr
        # The student's doctor verifies and loads both caches from the read-only folder.
        doctor = run_course("doctor", shared_cache, prefix=tuple(python_user), HOME=str(home))
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "8/8 assets ok" in doctor.stdout
        # A cache missing from a read-only class folder: one message saying who can fix it and how.
        missing = subprocess.run(
            [*python_user, sys.executable, "-c",
             "from course_lib import assets\ntry:\n    assets.decoder_path()\nexcept assets.CacheNotWritableError as e:"
             "\n    print(e)"],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(home),
                                                           "COURSE_CACHE_DIR": str(readonly_empty / "course")})
        assert missing.returncode == 0, missing.stderr
        assert f"{readonly_empty / 'course'} does not exist and you (nobody) cannot create it" in missing.stdout \
            or os.geteuid() != 0, missing.stdout
        assert f"COURSE_CACHE_DIR={readonly_empty / 'course'} make prepare" in missing.stdout, missing.stdout
        # A file the instructor's umask kept private (what safetensors did before): named, with the owner's fix.
        weights = shared_cache / DECODER / "model.safetensors"
        weights.chmod(0o600 if os.geteuid() == 0 else 0o200)
        private = subprocess.run(
            [*python_user, sys.executable, "-c",
             "from course_lib import assets\ntry:\n    assets.load_decoder()\nexcept assets.CacheNotReadableError as e:"
             "\n    print(e)"],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": str(home),
                                                           "COURSE_CACHE_DIR": str(shared_cache)})
        assert "model.safetensors has mode" in private.stdout, private.stdout + private.stderr
        assert f"`chmod -R a+rX {shared_cache / DECODER}`" in private.stdout
    finally:
        make_writable(shared_cache)
        make_writable(readonly_empty)
        shutil.rmtree(home)
        shutil.rmtree(readonly_empty)
    assert sorted(str(p) for p in shared_cache.rglob("*")) == before  # the readers wrote nothing


# ----------------------------------------------------------------------------------------------- repair
@pytest.mark.slow
def test_doctor_names_damaged_files_and_prepare_rebuilds_them_without_touching_user_files(shared_cache):
    notes = shared_cache / "my-notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with (shared_cache / DECODER / "model.safetensors").open("rb+") as file:
        file.truncate(file.seek(0, 2) // 2)
    _flip_byte(shared_cache / SENTIMENT / "tokenizer.json")

    doctor = run_course("doctor", shared_cache)
    assert doctor.returncode == 1
    assert re.search(r"decoder \(cache\): DAMAGED: .*model\.safetensors has [\d,]+ bytes instead of", doctor.stdout)
    assert re.search(r"sentiment model: DAMAGED: .*tokenizer\.json differs", doctor.stdout)
    assert "make prepare" in doctor.stdout

    prepare = run_course("prepare", shared_cache)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert f"Rebuilding the de-quantized decoder cache at {shared_cache / DECODER}: model.safetensors has" \
        in prepare.stdout
    assert f"Rebuilding the sentiment model cache at {shared_cache / SENTIMENT}: tokenizer.json differs" \
        in prepare.stdout
    assert "8/8 assets ok" in prepare.stdout
    assert (notes / "todo.txt").read_text() == "mine" and leftovers(shared_cache) == []
    shutil.rmtree(notes)


# ----------------------------------------------------------------------------------------------- kills, rivals
@pytest.mark.slow
def test_prepare_killed_at_any_stage_is_finished_by_the_next_ones_even_two_at_once(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "my-notes").mkdir()
    (root / "my-notes" / "todo.txt").write_text("mine")
    (root / f"{SENTIMENT}.partial").mkdir()  # what an interrupted build of an older course version left
    (root / f"{SENTIMENT}.partial" / "config.json").write_text("{")

    kill_prepare_at(root, "De-quantizing", tmp_path / "1.log")
    assert not (root / DECODER).exists()

    kill_prepare_at(root, "Writing the de-quantized decoder", tmp_path / "2.log")
    assert not (root / DECODER).exists() and any(name.startswith(f"{DECODER}.partial-") for name in leftovers(root))

    printed = kill_prepare_at(root, "Building the course's sentiment model", tmp_path / "3.log")
    assert "left by an interrupted build" in printed and not (root / f"{SENTIMENT}.partial").exists()
    assert state(root, DECODER).ok and not any(name.startswith(DECODER) for name in leftovers(root))

    kill_prepare_at(root, "Writing the sentiment model", tmp_path / "4.log")
    assert not (root / SENTIMENT).exists() and any(name.startswith(f"{SENTIMENT}.partial-") for name in leftovers(root))

    (root / f"{DECODER}.old-12345678").mkdir()  # a swap killed before it deleted the replaced cache
    rivals = [start_prepare(root, tmp_path / f"rival{i}.log") for i in range(2)]
    outputs = [process.communicate(timeout=900)[0] for process in rivals]
    for process, output, i in zip(rivals, outputs, range(2)):
        assert process.returncode == 0, output + (tmp_path / f"rival{i}.log").read_text()
        assert "8/8 assets ok" in output
    both = "".join(outputs)
    assert both.count("Writing the sentiment model") == 1  # one builds, the other waits and reuses it
    assert "Another process is building the sentiment model cache" in both
    assert "Writing the de-quantized decoder" not in both  # it was good: only the leftover beside it went
    assert f"Removed {root / DECODER}.old-12345678" in both

    # Each prepare ended with the doctor's full check (checksums, loads): "8/8 assets ok" above.
    assert leftovers(root) == [] and (root / "my-notes" / "todo.txt").read_text() == "mine"
    assert state(root, DECODER).ok and state(root, SENTIMENT).ok


# ----------------------------------------------------------------------------------------------- full disk
FULL_DISK_SCRIPT = r"""
set -u
top="$1"; python="$2"
# A disk too small from the start: prepare refuses before any work, saying how much it needs.
mkdir -p "$top/small" && mount -t tmpfs -o size=64m tmpfs "$top/small" || exit 99
mkdir "$top/small/cache" && echo mine > "$top/small/cache/notes.txt"
COURSE_CACHE_DIR="$top/small/cache" "$python" -m course_lib prepare --sentiment-steps 2 > "$top/small.out" 2>&1
echo "exit=$?" >> "$top/small.out"
ls -A "$top/small/cache" > "$top/small.ls"
# A disk that another program fills while the decoder is being de-quantized: the write fails half-way.
mkdir -p "$top/big" && mount -t tmpfs -o size=700m tmpfs "$top/big" || exit 99
mkdir "$top/big/cache" && echo mine > "$top/big/cache/notes.txt"
COURSE_CACHE_DIR="$top/big/cache" "$python" -u -c "
from course_lib import assets
try:
    assets.decoder_path()
except assets.NotEnoughSpaceError as error:
    print('ERROR:', error)
" > "$top/big.out" 2>&1 &
builder=$!
while ! grep -q De-quantizing "$top/big.out"; do sleep 0.1; done
head -c 600000000 /dev/zero > "$top/big/filler"
wait $builder
echo "exit=$?" >> "$top/big.out"
ls -A "$top/big/cache" > "$top/big.ls"
df -B1 --output=avail "$top/big" | tail -1 > "$top/big.free"
"""


def _run_in_small_disks(top: Path) -> bool:
    """Run FULL_DISK_SCRIPT in a private mount namespace (as root, or as a user with user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    script = top / "full_disk.sh"
    script.write_text(FULL_DISK_SCRIPT)
    for unshare in (["unshare", "--mount", "--map-root-user"], ["unshare", "--mount"]):
        result = subprocess.run([*unshare, "sh", str(script), str(top), sys.executable], capture_output=True,
                                text=True, cwd=REPO, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if (top / "big.ls").exists():
            return True
        assert result.returncode in (1, 99), result.stdout + result.stderr  # 1: unshare refused; 99: mount refused
    return False


@pytest.mark.slow
def test_a_full_disk_stops_the_build_with_the_space_needed_and_leaves_nothing_behind(tmp_path, monkeypatch):
    top = tmp_path / "disks"
    top.mkdir()
    if not _run_in_small_disks(top):
        _full_disk_through_a_failing_write(tmp_path / "fallback", monkeypatch)
        return
    small = (top / "small.out").read_text()
    assert "exit=1" in small, small
    needed = re.search(r"Not enough free space to build the de-quantized decoder cache in (\S+): it needs about "
                       r"([\d,]+) MB, and ([\d,]+) MB are free", small)
    assert needed and needed.group(1) == f"{top}/small/cache", small
    assert int(needed.group(2).replace(",", "")) > 538  # model.safetensors alone is 538 MB
    assert int(needed.group(3).replace(",", "")) <= 68  # the disk has 64 MiB (67 MB)
    assert "COURSE_CACHE_DIR" in small and "make prepare" in small
    assert "Not enough free space to build the sentiment model cache" in small
    assert set((top / "small.ls").read_text().split()) <= {"notes.txt", f".{DECODER}.lock", f".{SENTIMENT}.lock"}

    big = (top / "big.out").read_text()
    assert "exit=0" in big, big
    assert re.search(r"ERROR: The disk filled up while building the de-quantized decoder cache in \S+ \(.*No space "
                     r"left on device.*\); nothing unfinished was left there\. The cache needs about [\d,]+ MB free",
                     big), big
    assert "make prepare" in big
    assert set((top / "big.ls").read_text().split()) == {f".{DECODER}.lock", "notes.txt"}
    assert int((top / "big.free").read_text()) > 50_000_000  # the half-written copy was deleted


def _full_disk_through_a_failing_write(tmp_path, monkeypatch):
    """Where no file system can be mounted: the low-level safetensors write fails half-way with ENOSPC."""
    import safetensors.torch
    from safetensors import SafetensorError

    real = safetensors.torch.serialize_file

    def fills_up(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "rb+") as file:
            file.truncate(file.seek(0, 2) // 2)
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at path '
                              f'"{filename}"')

    monkeypatch.setattr(safetensors.torch, "serialize_file", fills_up)
    tmp_path.mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotEnoughSpaceError, match="nothing unfinished was left there") as caught:
        _tiny_safetensors_build(tmp_path / "tiny")
    assert str(tmp_path) in str(caught.value) and "make prepare" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "notes.txt"]


# ----------------------------------------------------------------------------------------------- no inodes left
PREPARE = {"clone": "`make prepare`", "installed": "`course-lib prepare`"}
NO_INODES_FIX = ("Every file and folder takes one of the disk's {inodes} inodes, and all are in use; free space is "
                 "not the problem (1,074 MB free). Fix: delete files on that disk (many small files free the most), "
                 "or set COURSE_CACHE_DIR to a folder on another disk; then run {prepare}.")


@pytest.fixture(params=["clone", "installed"])
def where(request, monkeypatch, tmp_path_factory) -> str:
    """The course in this clone, or installed (the clone detection pointed at a site-packages folder)."""
    if request.param == "installed":
        monkeypatch.setattr(commands, "PACKAGE", tmp_path_factory.mktemp("site-packages") / "course_lib")
    assert (commands.clone_root() is None) == (request.param == "installed")
    return request.param


class InodeLimitedDisk:
    """``root`` as a file system with ``inodes`` inodes (each file and folder under it takes one) and 1,074 MB
    free, as ``os.statvfs`` (and ``shutil.disk_usage``, which reads it) reports it."""

    def __init__(self, root: Path, inodes: int, monkeypatch):
        self.root, self.inodes, self.real = root, inodes, os.statvfs
        monkeypatch.setattr(os, "statvfs", self.statvfs)

    def free(self) -> int:
        return max(self.inodes - sum(1 for _ in self.root.rglob("*")), 0)

    def statvfs(self, path):
        if not Path(path).resolve().is_relative_to(self.root.resolve()):
            return self.real(path)
        return os.statvfs_result((4096, 4096, 500_000, 262_207, 262_207, self.inodes, self.free(), self.free(), 0,
                                  255))


def _tiny_build(folder: Path, computed: list) -> None:
    """A build that writes one safetensors file, as the course's builders do."""
    import torch
    from safetensors.torch import save_file

    spec = cache.CacheSpec("tiny", size_bytes=1_000, source=lambda: {"what": "two tensors"})

    def compute():
        computed.append(folder)
        return lambda partial: save_file({"w": torch.ones(2, 3)}, str(partial / "model.safetensors"))

    cache.build_cache(folder, spec, compute, verbose=False)


def test_a_disk_without_free_inodes_is_named_before_the_build_starts(tmp_path, monkeypatch, where):
    (tmp_path / "notes.txt").write_text("mine")
    disk = InodeLimitedDisk(tmp_path, inodes=2, monkeypatch=monkeypatch)  # notes.txt and the build's lock file
    computed = []
    with pytest.raises(NotEnoughSpaceError) as caught:
        _tiny_build(tmp_path / "tiny", computed)
    assert str(caught.value) == (f"Cannot build the tiny cache in {tmp_path}: the disk has no room for more files "
                                 "(inodes). " + NO_INODES_FIX.format(inodes=2, prepare=PREPARE[where]))
    assert computed == [] and disk.free() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "notes.txt"]


def test_running_out_of_inodes_during_a_build_says_so_not_that_the_disk_is_full(tmp_path, monkeypatch, where):
    """The write fails as safetensors reports ENOSPC; deleting the partial build frees inodes again, so the error
    must be told apart before that."""
    import safetensors.torch
    from safetensors import SafetensorError

    (tmp_path / "notes.txt").write_text("mine")
    disk = InodeLimitedDisk(tmp_path, inodes=3, monkeypatch=monkeypatch)  # notes, the lock, the partial folder

    def no_inode_left(tensors, filename, metadata=None):
        assert disk.free() == 0
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at path '
                              f'"{filename}"')

    monkeypatch.setattr(safetensors.torch, "serialize_file", no_inode_left)
    with pytest.raises(NotEnoughSpaceError) as caught:
        _tiny_build(tmp_path / "tiny", [])
    message = str(caught.value)
    assert re.fullmatch(
        r"The disk ran out of room for more files \(inodes\) while building the tiny cache in "
        + re.escape(str(tmp_path)) + " "
        r"\(Error while serializing: I/O error: No space left on device \(os error 28\) at path \"\S+/tiny\.partial-"
        r"\w+/model\.safetensors\"\); nothing unfinished was left there\. "
        + re.escape(NO_INODES_FIX.format(inodes=3, prepare=PREPARE[where])), message), message
    assert "filled up" not in message and "needs about" not in message
    assert isinstance(caught.value.__cause__, SafetensorError)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "notes.txt"]
    assert disk.free() == 1  # what a check after the clean-up would have seen


def test_a_disk_filled_up_during_a_build_still_names_the_space_needed(tmp_path, monkeypatch, where):
    import safetensors.torch
    from safetensors import SafetensorError

    def fills_up(tensors, filename, metadata=None):
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) at path '
                              f'"{filename}"')

    monkeypatch.setattr(safetensors.torch, "serialize_file", fills_up)
    with pytest.raises(NotEnoughSpaceError) as caught:
        _tiny_build(tmp_path / "tiny", [])
    assert re.search(r"^The disk filled up while building the tiny cache in \S+ \(.*No space left on device.*\); "
                     r"nothing unfinished was left there\. The cache needs about 50 MB free \([\d,]+ MB free now\)\. "
                     r"Fix: free some space on that disk, or set COURSE_CACHE_DIR to a folder on a disk with more "
                     rf"room; then run {re.escape(PREPARE[where])}\.$", str(caught.value)), str(caught.value)


# ----------------------------------------------------------------------------------------------- bad arguments
TEST_SPEC = cache.CacheSpec("test cache", size_bytes=1_000, source=lambda: {"what": "a text file"})


def _compute():
    return lambda partial: (partial / "data.txt").write_text("data")


def _fail_to_load(folder, spec):
    with cache.explain_load_failure(folder, spec):
        raise OSError("the loader failed")


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


FOLDER = r"^folder must be a path \(str or pathlib\.Path\), got "
SPEC = r"^spec must be a CacheSpec, got "
BAD_CALLS = [
    pytest.param(lambda t: cache.inspect(None, TEST_SPEC), FOLDER + "None", id="inspect-folder-None"),
    pytest.param(lambda t: cache.inspect("", TEST_SPEC), FOLDER + "''", id="inspect-folder-empty"),
    pytest.param(lambda t: cache.inspect(t / "c", "spec"), SPEC + "str", id="inspect-spec"),
    pytest.param(lambda t: cache.inspect(t / "c", TEST_SPEC, checksums="yes"),
                 r"^checksums must be True or False, got 'yes'$", id="inspect-checksums"),
    pytest.param(lambda t: cache.ensure(3, TEST_SPEC, _compute), FOLDER + "3", id="ensure-folder"),
    pytest.param(lambda t: cache.ensure(t / "c", None, _compute), SPEC + "NoneType", id="ensure-spec"),
    pytest.param(lambda t: cache.ensure(t / "c", TEST_SPEC, None), r"^compute must be a function, got None",
                 id="ensure-compute"),
    pytest.param(lambda t: cache.ensure(t / "c", TEST_SPEC, _compute, build="no"),
                 r"^build must be True or False, got 'no'$", id="ensure-build"),
    pytest.param(lambda t: cache.ensure(t / "c", TEST_SPEC, _compute, repair=None),
                 r"^repair must be True or False, got None$", id="ensure-repair"),
    pytest.param(lambda t: cache.ensure(t / "c", TEST_SPEC, _compute, verbose="loud"),
                 r"^verbose must be True or False, got 'loud'$", id="ensure-verbose"),
    pytest.param(lambda t: cache.build_cache(["c"], TEST_SPEC, _compute), FOLDER + r"\['c'\]", id="build-folder"),
    pytest.param(lambda t: cache.build_cache(t / "c", {"title": "x"}, _compute), SPEC + "dict", id="build-spec"),
    pytest.param(lambda t: cache.build_cache(t / "c", TEST_SPEC, "compute"),
                 r"^compute must be a function, got 'compute'", id="build-compute"),
    pytest.param(lambda t: cache.build_cache(t / "c", TEST_SPEC, _compute, verbose=2),
                 r"^verbose must be True or False, got 2$", id="build-verbose"),
    pytest.param(lambda t: cache.problem(t / "c", TEST_SPEC, "damaged"),
                 r"^state must be a CacheState, not ok, got 'damaged'$", id="problem-state"),
    pytest.param(lambda t: cache.problem(t / "c", TEST_SPEC, cache.CacheState("ok")),
                 r"^state must be a CacheState, not ok, got CacheState\(status='ok'", id="problem-ok-state"),
    pytest.param(lambda t: cache.problem(t / "c", None, cache.CacheState("missing")), SPEC + "NoneType",
                 id="problem-spec"),
    pytest.param(lambda t: _fail_to_load(t / "c", "spec"), SPEC + "str", id="explain-spec"),
    pytest.param(lambda t: cache.remove_leftovers(None), FOLDER + "None", id="leftovers-folder"),
    pytest.param(lambda t: cache.remove_leftovers(t / "c", verbose="yes"),
                 r"^verbose must be True or False, got 'yes'$", id="leftovers-verbose"),
    pytest.param(lambda t: cache.read_manifest(None), FOLDER + "None", id="read-manifest"),
    pytest.param(lambda t: cache.write_manifest(t / "missing", {}),
                 r"^folder must be an existing folder, got \S+/missing$", id="write-manifest-folder"),
    pytest.param(lambda t: cache.write_manifest(t, ["x"]), r"^source must be a dict", id="write-manifest-source"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS)
def test_cache_functions_refuse_bad_arguments_and_touch_nothing(tmp_path, call, message):
    (tmp_path / "notes.txt").write_text("mine")
    before = files_in(tmp_path)
    with pytest.raises(CourseInputError, match=message):
        call(tmp_path)
    assert files_in(tmp_path) == before


@pytest.mark.parametrize("call", [
    pytest.param(lambda folder: cache.ensure(folder, TEST_SPEC, _compute), id="ensure"),
    pytest.param(lambda folder: cache.ensure(folder, TEST_SPEC, _compute, repair=True), id="ensure-repair"),
    pytest.param(lambda folder: cache.build_cache(folder, TEST_SPEC, _compute), id="build_cache"),
])
def test_a_file_in_place_of_the_cache_folder_is_named_with_the_fix(tmp_path, capsys, call):
    (tmp_path / "c").write_text("mine")
    with pytest.raises(CacheDamagedError, match=rf"^{re.escape(str(tmp_path / 'c'))} is not a folder the course "
                                                r"made \(a link or a file\); .*Move it away, then run `make prepare`"):
        call(tmp_path / "c")
    assert files_in(tmp_path) == ["c"] and (tmp_path / "c").read_text() == "mine"
    assert capsys.readouterr().out == ""  # no "Rebuilding ..." before the refusal
    error = cache.problem(tmp_path / "c", TEST_SPEC, cache.inspect(tmp_path / "c", TEST_SPEC))
    assert isinstance(error, CacheDamagedError) and "Move it away" in str(error)


def test_a_file_in_place_of_the_cache_root_is_named(tmp_path):
    (tmp_path / "root").write_text("mine")
    with pytest.raises(CacheNotWritableError, match=r"but \S+/root/sub cannot be created, as \S+/root is a file\."):
        cache.ensure(tmp_path / "root" / "sub" / "c", TEST_SPEC, _compute)
    assert files_in(tmp_path) == ["root"] and (tmp_path / "root").read_text() == "mine"


def test_good_arguments_still_build_check_and_clean(tmp_path):
    folder = cache.ensure(str(tmp_path / "c"), TEST_SPEC, _compute, verbose=False)
    assert folder == tmp_path / "c" and cache.inspect(folder, TEST_SPEC, checksums=True).ok
    (tmp_path / "c.partial-x").mkdir()
    cache.remove_leftovers(str(folder), verbose=False)
    assert not (tmp_path / "c.partial-x").exists()
