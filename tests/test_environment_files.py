"""The environment files agree: pyproject's dependencies, the constraints lock, environment.yml, assets."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements/constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version
    return pins


def _pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {_norm(re.split(r"[<>=!~\[; ]", d)[0]) for d in deps}


def _environment_yml() -> tuple[str, dict[str, str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    pins = dict(line.split("==") for line in pip if "==" in line)
    return python, {_norm(k): v for k, v in pins.items()}


def test_every_pyproject_dependency_is_pinned_in_the_constraints():
    missing = _pyproject_names() - set(_constraints())
    assert not missing, f"add exact versions to requirements/constraints.txt for: {sorted(missing)}"


def test_environment_yml_pins_every_dependency_at_the_locked_version():
    _, env_pins = _environment_yml()
    constraints = _constraints()
    assert _pyproject_names() <= set(env_pins), sorted(_pyproject_names() - set(env_pins))
    drift = {name: (version, constraints.get(name)) for name, version in env_pins.items()
             if constraints.get(name) != version}
    assert not drift, f"environment.yml differs from requirements/constraints.txt: {drift}"


def test_environment_yml_uses_python_311_and_the_constraints_file():
    python, _ = _environment_yml()
    assert python == "python=3.11"
    assert "-c requirements/constraints.txt" in (ROOT / "environment.yml").read_text()


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert _constraints()["torch"] == "2.13.0"


def test_installed_packages_match_the_constraints():
    from importlib.metadata import version

    mismatched = {}
    for name, pinned in _constraints().items():
        try:
            installed = version(name)
        except Exception:
            mismatched[name] = (pinned, None)
            continue
        if installed.split("+")[0] != pinned:
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"installed versions differ from the lock (run `make setup`): {mismatched}"


def test_code_reads_each_pin_from_the_installed_pyproject_instead_of_repeating_it():
    from course_lib.runtime.install import requirement
    from course_lib.viz import scripts

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    exact = {_norm(d.split("==")[0]): d.split("#")[0].strip() for d in declared if "==" in d}
    assert exact, "pyproject pins no package exactly"
    for name, pin in exact.items():
        assert requirement(name) == pin.replace(" ", "")
    assert requirement("a-package-the-course-does-not-use") == "a-package-the-course-does-not-use"
    assert (scripts.D3[2], scripts.JQUERY[2], scripts.BERTVIZ[2]) == (
        exact["mpld3"], exact["sphinxcontrib-jquery"], exact["bertviz"])
    for path in (ROOT / "course_lib").rglob("*.py"):
        for name, pin in exact.items():
            assert pin not in path.read_text(encoding="utf-8"), f"{path.name} repeats the pin {pin}"
