"""The package's layout: product and lab apart, serving a TFLite model without the Keras side, the names people
import still where they were."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agegender
from agegender.config import PROJECT_ROOT

PACKAGE = Path(agegender.__file__).resolve().parent
RESEARCH = PROJECT_ROOT / "research"
BENCHMARKS = PROJECT_ROOT / "benchmarks"


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in the Python file at ``path`` (relative ones stay in the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _lab_modules() -> set[str]:
    # research/ scripts run with their own folder on the path, so its modules could be imported by their own names too
    lab = {"research"} | {path.stem for path in RESEARCH.rglob("*.py")}
    assert {"ensemble", "recipe_ablation", "_photos"} <= lab  # research/ensemble.py, research/probes/...
    return lab


@pytest.mark.parametrize("folder", [PACKAGE, BENCHMARKS], ids=["src", "benchmarks"])
def test_the_product_never_imports_research(folder):
    offenders = {str(path.relative_to(folder)): sorted(_imported_modules(path) & _lab_modules())
                 for path in sorted(folder.rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_benchmarks_hold_only_the_products_benchmarks():
    """One-off probes live in research/probes/; benchmarks/ prints the product's figures."""
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts and all(ast.get_docstring(ast.parse(path.read_text())) for path in scripts)
    probes = [path.name for path in scripts if "probe" in ast.get_docstring(ast.parse(path.read_text())).lower()]
    assert probes == [], f"probes belong in research/probes/: {probes}"


_SERVE_TFLITE = """
import json, sys, traceback

first_keras_import = []


class KerasImportSpy:
    # records the stack of the first `import keras`, whichever module asks for it
    def find_spec(self, name, path=None, target=None):
        if name == "keras" and not first_keras_import:
            first_keras_import.extend(frame.filename for frame in traceback.extract_stack())
        return None


sys.meta_path.insert(0, KerasImportSpy())
from agegender.serving.predict import Predictor

predictor = Predictor.load(sys.argv[1])
print(json.dumps({"model": type(predictor.model).__name__, "modules": sorted(sys.modules),
                  "keras_stack": first_keras_import}))
"""


@pytest.mark.slow
def test_serving_a_tflite_model_imports_no_model_builder_and_no_keras_of_its_own():
    model = PROJECT_ROOT / "models" / "agenet.tflite"
    if not model.is_file():
        pytest.skip("no models/agenet.tflite")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                                      os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _SERVE_TFLITE, str(model)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["model"] == "TFLiteModel"
    modules = set(report["modules"])
    assert not {m for m in modules if m.split(".")[:2] in (["agegender", "models"], ["agegender", "training"],
                                                            ["agegender", "evaluation"])}
    assert "keras" not in modules or "tensorflow" in modules
    if report["keras_stack"]:
        # Without LiteRT (ai-edge-litert), the interpreter is TensorFlow's, and `import tensorflow` imports Keras:
        # then the last package frame before Keras is litert's interpreter, and TensorFlow is what imports it.
        stack = report["keras_stack"]
        ours = [i for i, filename in enumerate(stack) if Path(filename).resolve().is_relative_to(PACKAGE)]
        assert ours and Path(stack[ours[-1]]).name == "litert.py", stack
        assert any(f"{os.sep}tensorflow{os.sep}" in filename for filename in stack[ours[-1] + 1:]), stack


def test_the_names_people_import_are_where_they_were():
    pytest.importorskip("keras")
    from agegender import data, models
    from agegender.cli import build_parser, main
    from agegender.data import load_utkface
    from agegender.models import build_agenet, build_model, build_seed_cnn, build_vgg16_transfer
    from agegender.training import run_recipe, train

    assert callable(main) and callable(load_utkface) and callable(train) and callable(run_recipe)
    assert {build_agenet, build_seed_cnn, build_vgg16_transfer} <= set(models.BUILDERS.values())
    assert callable(build_model)
    for package in (data, models):
        assert all(hasattr(package, name) for name in package.__all__)
    assert {"load_utkface", "parse_filename", "split_of", "SkipReport", "dataset_fingerprint"} <= set(data.__all__)
    commands = next(action.choices for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert set(commands) == {"train", "train-vgg16", "add-descriptor", "cap-detail", "evaluate", "calibrate-gender",
                             "flag-labels", "promote", "export", "predict", "predict-batch"}
