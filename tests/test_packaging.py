"""pyproject.toml, requirements.txt and requirements-lock.txt pin the same versions.

``pip install .`` is the runtime (no TensorFlow or Keras), ``.[train]`` and the other extras add the rest;
requirements.txt is all of them in one list (``make install``), and the lock file pins every package of the tested
environment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

pytestmark = pytest.mark.runtime

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"tensorflow", "keras", "matplotlib", "seaborn", "jupyter", "papermill"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()  # ray[data] is the package ray


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not pinned with ==: {line!r}"
            found[canonical(name)] = version.strip()
    return found


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_runtime_has_no_training_packages():
    runtime = pins(project()["dependencies"])
    assert "ai-edge-litert" in runtime and "pillow-heif" in runtime
    assert not TRAINING_ONLY & set(runtime)
    assert TRAINING_ONLY <= set(pins(project()["optional-dependencies"]["train"]))


def test_pyproject_requirements_and_lock_agree():
    declared: dict[str, str] = pins(project()["dependencies"])
    for extra, requirements in project()["optional-dependencies"].items():
        for name, version in pins(requirements).items():
            assert declared.setdefault(name, version) == version, f"{name} pinned twice ({extra})"
    listed = pins((REPO / "requirements.txt").read_text().splitlines())
    locked = pins((REPO / "requirements-lock.txt").read_text().splitlines())
    assert set(listed) == set(declared), ("requirements.txt lists the runtime and every extra: "
                                          f"{sorted(set(listed) ^ set(declared))} differ")
    for name, version in declared.items():
        assert listed[name] == version, f"{name}: {version} in pyproject.toml, {listed[name]} in requirements.txt"
        assert locked.get(name) == version, f"{name}=={version} in pyproject.toml, {locked.get(name)} in the lock"


def test_runtime_size_splits_the_installed_packages_by_what_needs_them():
    """scripts/runtime_size.py (docs/runtime.md): the CLI's packages and the app's are disjoint and both measured."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("runtime_size", REPO / "scripts" / "runtime_size.py")
    runtime_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime_size)
    cli = runtime_size.closure(runtime_size.CLI)
    app = runtime_size.closure(runtime_size.CLI + runtime_size.APP) - cli
    assert {"numpy", "opencv-python-headless", "pillow", "ai-edge-litert"} <= cli
    assert {"streamlit", "pandas", "pyarrow"} <= app and not cli & app
    assert "tensorflow" not in cli  # LiteRT serves without it
    assert runtime_size.size("numpy") > 10e6
