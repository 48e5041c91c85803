"""The numbered notebooks, executed headlessly with papermill on a small subset, asserting what they record."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agegender.config import PROJECT_ROOT, SAMPLE_DIR
from agegender.notebook import RECORD_MIME

papermill = pytest.importorskip("papermill")
NOTEBOOKS = PROJECT_ROOT / "notebooks"


def read_records(notebook_path: str) -> dict[str, Any]:
    """All values recorded with :func:`agegender.notebook.record` in an executed notebook."""
    import nbformat

    records: dict[str, Any] = {}
    for cell in nbformat.read(notebook_path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                records[data[RECORD_MIME]["name"]] = data[RECORD_MIME]["value"]
    return records


def run(name: str, tmp_path: Path, notebooks: Path = NOTEBOOKS, **parameters) -> dict:
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(notebooks / f"{name}.ipynb"), str(out), parameters=parameters,
                               cwd=str(notebooks), kernel_name="python3", progress_bar=False)
    return read_records(str(out))


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of notebooks/ in a folder laid out as the repository (configs, models, benchmarks linked), so that the
    notebooks run with their own default output folders; yields it, then checks that neither it nor the real
    repository's models/ and figures/ changed."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns("executed", ".ipynb_checkpoints"))
    for name in ("configs", "models", "benchmarks", "data", "figures"):
        (root / name).symlink_to(PROJECT_ROOT / name, target_is_directory=True)
    before = {name: tree_state(PROJECT_ROOT / name) for name in ("models", "figures")}
    yield root
    for name, state in before.items():
        assert tree_state(PROJECT_ROOT / name) == state, f"running the notebooks changed {name}/"


def test_notebooks_store_no_outputs():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name}: no parameters cell"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has stored outputs"


@pytest.mark.slow
def test_01_eda(workdir):
    records = run("01_eda", workdir, data_dir=str(SAMPLE_DIR), figures_dir=str(workdir / "figures"))
    assert records["n_images"] == 400
    assert records["split_counts"] == {"train": 322, "val": 45, "test": 33}
    assert (workdir / "figures" / "label_distributions.png").stat().st_size > 10_000


@pytest.mark.slow
def test_02_preprocessing(workdir):
    records = run("02_preprocessing", workdir, data_dir=str(SAMPLE_DIR), image_size=64, color_mode="rgb")
    assert records["images_shape"] == [400, 64, 64, 3]
    assert records["dtype"] == "uint8"
    assert records["cached_seconds"] < 5


@pytest.mark.slow
def test_03_train_writes_only_under_runs(checkout, workdir):
    records = run("03_train_cnn", workdir, checkout / "notebooks", data_dir=str(SAMPLE_DIR),
                  overrides={"epochs": 1, "batch_size": 32, "max_train_minutes": 0, "name": "nb_seed"})
    assert records["epochs_completed"] == 1
    assert 0 < records["test_age_mae"] < 60
    assert 0 <= records["test_gender_accuracy"] <= 1
    out = checkout / "runs" / "notebooks"
    assert (out / "nb_seed.keras").exists() and (out / "nb_seed.json").exists()


@pytest.mark.slow
def test_04_evaluate(tiny_model, workdir):
    import json

    records = run("04_evaluate", workdir, data_dir=str(tiny_model.folder), model_path=str(tiny_model.path),
                  figures_dir=str(workdir / "figures"))
    # same model, same test split, same preprocessing: evaluation reproduces the card's figure
    card = json.loads(tiny_model.path.with_suffix(".json").read_text())
    assert records["age_mae"] == pytest.approx(card["metrics"]["test"]["age_mae"], abs=1e-3)
    face = records["sample_prediction"]
    assert face["gender"] in ("male", "female") and 0.5 <= face["gender_probability"] <= 1
    assert (workdir / "figures" / "tiny_confusion_matrix.png").exists()


@pytest.mark.slow
def test_06_transfer_vgg16_mechanics(checkout, workdir):
    records = run("06_transfer_vgg16", workdir, checkout / "notebooks", data_dir=str(SAMPLE_DIR), weights=None,
                  recipe_overrides={"head_epochs": 1, "finetune_epochs": 1, "limit": 16, "image_size": 64,
                                    "batch_size": 8, "name": "nb_vgg16"})
    assert records["params_block5_False"] == [34_148_546, 19_433_730]
    assert records["params_block5_True"] == [34_148_546, 26_513_154]
    assert records["phases"] == 2
    assert records["predicted_faces"] == 3


@pytest.mark.slow
def test_05_train_best(checkout, tiny_model, workdir):
    """The committed config trains (tiny overrides), is compared with another model and exported for serving."""
    import json

    models = checkout / "runs" / "notebooks"
    config = workdir / "agenet.json"
    config.write_text(json.dumps({**json.loads((PROJECT_ROOT / "configs" / "agenet.json").read_text()),
                                  "name": "nb_agenet"}))
    records = run("05_train_best", workdir, checkout / "notebooks", data_dir=str(SAMPLE_DIR),
                  compare_with=[str(tiny_model.path)], config_path=str(config),
                  overrides={"epochs": 1, "limit": 48, "image_size": 64, "batch_size": 16, "max_train_minutes": 0})
    assert 0 < records["test_age_mae"] < 60
    assert (models / "nb_agenet.keras").exists() and (models / "nb_agenet.tflite").exists()
    assert (models / "agenet_base" / "nb_agenet.keras").exists()  # the AgeNet itself, before the face descriptor
    card = json.loads((models / "nb_agenet.json").read_text())
    assert card["face_descriptor"]["agenet_logit_weight"] == records["descriptor_weight"]
    assert card["face_descriptor"]["age_head"]["agenet_dist_weight"] == records["age_head_weight"]
    assert records["test_gender_accuracy"] == card["metrics"]["test"]["gender_accuracy"]
    assert card["tflite"]["bytes"] == (models / "nb_agenet.tflite").stat().st_size
    assert records["tflite_mb"] > 0 and records["tflite_max_age_diff"] < 1.0
    assert records["train_minutes"] == pytest.approx(card["training"]["wall_seconds_all_stages"] / 60)
    names = [row["model"] for row in records["comparison"]]
    assert names[-1] == "nb_agenet"
    # the comparison re-evaluates the trained model on the same split: it must agree with the card
    assert records["comparison"][-1]["test age MAE"] == pytest.approx(records["test_age_mae"], abs=0.01)
    assert 0 <= records["age_range_coverage"] <= 1
    assert records["age_range_coverage"] == card["metrics"]["test"]["age_range"]["coverage"]
    face = records["sample_prediction"]  # the notebook ends predicting on a photo with the model it trained
    assert face["gender"] in ("male", "female") and 0 <= face["age_low"] <= face["age"] <= face["age_high"]
