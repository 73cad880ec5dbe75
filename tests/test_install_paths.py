"""How each install path chooses Python and torch: the supported range is written once and checked with a message
that names the fix; a machine without an NVIDIA GPU gets torch's CPU build, and pip (dry run, in a clean
environment of the oldest Python the course supports) installs no nvidia-* package on any CPU path."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from course_lib.runtime.install import SETUP_CELL

ROOT = Path(__file__).resolve().parents[1]
RANGE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
OLDEST = os.environ.get("COURSE_OLDEST_PYTHON", "/usr/bin/python3.11")  # Debian 12's Python 3.11.2


def _torch_source(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "torch_source.sh")], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_without_an_nvidia_gpu_torch_comes_from_the_cpu_index(tmp_path):
    bare = tmp_path / "bin"  # a PATH with bash and the tools the script uses, and no nvidia-smi
    bare.mkdir()
    for tool in ("bash", "grep"):
        (bare / tool).symlink_to(shutil.which(tool))
    result = _torch_source({"PATH": str(bare)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["--extra-index-url", CPU_INDEX]


def test_with_an_nvidia_gpu_torch_comes_from_pypi_and_cpu_or_cuda_can_be_forced(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    assert _torch_source({"PATH": path}).stdout == ""
    assert "an NVIDIA GPU is present" in subprocess.run(
        ["bash", str(ROOT / "scripts" / "torch_source.sh"), "--explain"], capture_output=True, text=True,
        env={**os.environ, "PATH": path}).stdout
    assert _torch_source({"PATH": path, "COURSE_TORCH": "cpu"}).stdout.split() == ["--extra-index-url", CPU_INDEX]
    assert _torch_source({"COURSE_TORCH": "cuda"}).stdout == ""
    wrong = _torch_source({"COURSE_TORCH": "gpu"})
    assert wrong.returncode == 2 and "COURSE_TORCH must be cpu or cuda, got 'gpu'" in wrong.stderr


def test_setup_names_the_python_it_found_and_the_fix_when_none_is_supported(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.99"\n')
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "VENV": str(tmp_path / "venv")})
    assert result.returncode == 1
    found = f"{sys.version_info[0]}.{sys.version_info[1]}."
    assert re.search(rf"error: the course needs Python >=3\.99 \(pyproject\.toml\); found .*{re.escape(found)}",
                     result.stderr), result.stderr
    assert "Fix: install Python 3.11 or 3.12" in result.stderr and "PYTHON=/path/to/python3.11" in result.stderr
    assert not (tmp_path / "venv").exists()  # nothing was made


def test_setup_shows_pips_own_error_and_stops(tmp_path):
    """A failing pip is not swallowed: setup exits non-zero with pip's message (here: a torch pin that cannot exist)."""
    for part in ("scripts/setup.sh", "scripts/torch_source.sh", "pyproject.toml", "requirements/assets.txt"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    (tmp_path / "requirements" / "constraints.txt").write_text("torch==0.0.1\n")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "VENV": str(venv)})
    assert result.returncode != 0
    assert re.search(r"ERROR: .*torch==0\.0\.1", result.stderr), result.stderr  # pip's own words
    assert "error: pip failed (its message is above): pip install --no-deps" in result.stderr
    assert "installing the course environment" not in result.stdout  # it stopped there
    assert not (venv / ".course-installed").exists()


def test_the_supported_range_is_written_once_and_the_readme_quotes_it():
    assert RANGE == ">=3.11,<3.13"
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11 or 3.12" in readme and "requires-python" in readme
    assert 'sed -n \'s/^requires-python' in (ROOT / "scripts" / "setup.sh").read_text()  # read, not repeated


# ----------------------------------------------------------------------------------------------- dry runs
@pytest.fixture(scope="module")
def oldest_python(tmp_path_factory):
    """A clean venv of the oldest supported Python this machine has (Debian 12's 3.11.2)."""
    if not Path(OLDEST).is_file():
        pytest.skip(f"{OLDEST} is not here (COURSE_OLDEST_PYTHON names another)")
    version = subprocess.run([OLDEST, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    venv = tmp_path_factory.mktemp("oldest") / "venv"
    subprocess.run([OLDEST, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "pip>=24"], check=True, timeout=300)
    return venv / "bin" / "python", version


def _dry_run(python: Path, tmp_path: Path, *args: str) -> dict[str, str]:
    """What pip would install, name -> version, into an empty environment (nothing is installed)."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    result = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--retries", "1", "--report", str(report), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def _cpu_only(resolved: dict[str, str]) -> None:
    cuda = sorted(name for name in resolved if name.startswith(("nvidia-", "cuda-", "triton")))
    assert not cuda, f"a CPU-only path would install {cuda}"
    assert resolved["torch"].endswith("+cpu"), resolved["torch"]


@pytest.mark.slow
def test_make_setup_resolves_on_the_oldest_python_with_cpu_torch_and_no_cuda(oldest_python, tmp_path):
    python, version = oldest_python
    assert version.startswith("3.11.")
    torch_source = _torch_source({"COURSE_TORCH": "cpu"}).stdout.split()
    _cpu_only(_dry_run(python, tmp_path, "--no-deps", *torch_source, "torch==2.13.0"))  # setup's torch step
    course = _dry_run(python, tmp_path, *torch_source, "-c", "requirements/constraints.txt", "-e", ".[lab,test,book]")
    _cpu_only(course)  # the course step, as pip would resolve it with nothing installed yet
    assert course["soupsieve"] == "2.10" and course["ipykernel"]


@pytest.mark.slow
def test_environment_yml_and_the_setup_cell_install_no_cuda_packages(oldest_python, tmp_path):
    python, _ = oldest_python
    pip_section = next(item["pip"] for item in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
                       if isinstance(item, dict))
    requirements = tmp_path / "environment-pip.txt"
    absolute = [line.replace("requirements/constraints.txt", str(ROOT / "requirements" / "constraints.txt"))
                .replace('".[', f'"{ROOT}[') for line in pip_section]  # a requirements file reads paths from its folder
    requirements.write_text("\n".join(absolute) + "\n")
    _cpu_only(_dry_run(python, tmp_path, "-r", str(requirements)))
    # the setup cell's own pip arguments where torch is missing and there is no GPU (the course from this clone)
    cpu = re.search(r'cpu = \[\] if shutil\.which\("nvidia-smi"\) else (\[.*\])', SETUP_CELL).group(1)
    torch = [re.search(r'torch = \["(torch==[\d.]+)"', SETUP_CELL).group(1), *json.loads(cpu)]
    _cpu_only(_dry_run(python, tmp_path, "-c", "requirements/constraints.txt", ".", *torch))


def test_the_release_workflow_builds_checks_and_publishes_with_trusted_publishing():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML reads the key `on` as True
    build = " ".join(step.get("run", "") for step in workflow["jobs"]["build"]["steps"])
    assert "python -m build" in build and "twine check --strict dist/*" in build and "GITHUB_REF_NAME" in build
    publish = workflow["jobs"]["publish"]
    assert publish["needs"] == "build" and publish["permissions"] == {"id-token": "write"}
    assert any(step.get("uses", "").startswith("pypa/gh-action-pypi-publish") for step in publish["steps"])
    assert not any("password" in str(step.get("with", {})) for step in publish["steps"])  # no token stored


LESSONS_WITH_A_CACHE = {"00", "05", "08"}  # the sentiment model (00, 08) and the de-quantized decoder (05, 08)


def test_lessons_without_a_cached_model_start_without_building_one(tmp_path):
    """Lessons other than 00, 05 and 08 call no loader of a cached model; the loaders they do call leave an empty
    cache folder empty (a cache is built when a lesson first loads the model that needs it)."""
    import nbformat

    needs_cache = re.compile(r"load_decoder|load_pretrained_decoder|decoder_path|sentiment_model|load_sentiment")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert bool(needs_cache.search(code)) == (path.name[:2] in LESSONS_WITH_A_CACHE), path.name
    probe = ("import course_lib\nfrom course_lib import assets, data\n"
             "assets.load_tokenizer(); assets.load_encoder(); assets.hamlet_text(); data.load_movie_reviews()\n")
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COURSE_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not cache.exists() or not any(cache.iterdir()), sorted(cache.iterdir())


def test_readme_memory_statements_agree_with_the_recorded_timings():
    readme = (ROOT / "README.md").read_text()
    peaks = {name[:2]: entry["quick"]["peak_rss_mb"] / 1024
             for name, entry in json.loads((ROOT / "docs" / "timings.json").read_text())["notebooks"].items()}
    fit = re.search(r"the lessons that peak under 1\.5 GB fit \((\d\d)-(\d\d) and (\d\d)\), (\d\d), (\d\d) and "
                    r"(\d\d) do\s+not", readme)
    assert fit, "README's Binder memory sentence changed: update this test with it"
    first, last, extra, *heavy = fit.groups()
    said_to_fit = {f"{n:02d}" for n in range(int(first), int(last) + 1)} | {extra}
    assert said_to_fit == {name for name, gb in peaks.items() if gb < 1.5}, peaks
    assert set(heavy) == {name for name, gb in peaks.items() if gb >= 1.5}, peaks
    limit = float(re.search(r"memory: \{guarantee: \d+G, limit: (\d+)G\}", readme).group(1))
    assert limit > max(peaks.values()), (limit, peaks)
    assert readme.count("about 4.5-5 GB on disk") == 1 and "about 4 GB in all" not in readme  # one image estimate
