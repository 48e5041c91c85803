"""The shipped models change only by `agegender promote`: training writes under runs/, promotion checks and copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import agegender.cli as cli
from agegender.config import MODELS_DIR
from agegender.serving.modelio import ModelFileError, card_path
from agegender.serving.promote import find_model, promote


def shipped_state() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in MODELS_DIR.iterdir() if p.is_file()}


def run_folder(tiny_model, root: Path, name: str = "cand") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copyfile(tiny_model.path, folder / f"{name}.keras")
    card = {**tiny_model.card, "name": name}
    card.pop("tflite", None)
    card_path(folder / f"{name}.keras").write_text(json.dumps(card))
    return folder


@pytest.mark.slow
def test_cli_train_by_default_writes_only_under_runs(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "RUNS_DIR", tmp_path / "runs")
    before = shipped_state()
    assert cli.main(["train", "--data", str(tiny_folder), "--set", "model=seed_cnn", "--set", "name=first_run",
                     "--set", "epochs=1", "--set", "limit=16", "--set", "image_size=48", "--set", "batch_size=8"]) == 0
    assert (tmp_path / "runs" / "first_run" / "first_run.keras").is_file()
    assert (tmp_path / "runs" / "first_run" / "first_run.json").is_file()
    assert shipped_state() == before


def test_find_model_in_a_run_folder(tiny_model, tmp_path):
    folder = run_folder(tiny_model, tmp_path)
    assert find_model(folder) == folder / "cand.keras"
    assert find_model(folder / "cand.keras") == folder / "cand.keras"
    shutil.copyfile(folder / "cand.keras", folder / "other.keras")
    card_path(folder / "other.keras").write_text(card_path(folder / "cand.keras").read_text())
    assert find_model(folder) == folder / "cand.keras"  # the one named after its run
    (folder / "cand.keras").rename(folder / "third.keras")
    card_path(folder / "cand.keras").rename(card_path(folder / "third.keras"))
    with pytest.raises(ModelFileError, match="expected one model with a card"):
        find_model(folder)
    with pytest.raises(ModelFileError, match="no such model file or run folder"):
        find_model(tmp_path / "nowhere")
    with pytest.raises(ModelFileError, match="promote a Keras model"):
        find_model(card_path(folder / "other.keras"))


@pytest.mark.slow
def test_promote_checks_the_export_then_copies(tiny_model, tmp_path, capsys):
    from agegender.serving.export import export_with_test_images

    folder = run_folder(tiny_model, tmp_path / "runs")
    shipped = tmp_path / "models"
    # no export: refused unless asked for
    assert cli.main(["promote", str(folder), "--models-dir", str(shipped)]) == 2
    assert "no TFLite export" in capsys.readouterr().err
    assert not shipped.exists() or not any(shipped.iterdir())
    export_with_test_images(folder / "cand.keras", tiny_model.folder, check_images=8)
    assert cli.main(["promote", str(folder), "--models-dir", str(shipped)]) == 0
    out = capsys.readouterr().out
    assert "promoted" in out and "replaced" not in out
    for name in ("cand.keras", "cand.tflite", "cand.json"):
        assert (shipped / name).read_bytes() == (folder / name).read_bytes()
    assert not [p for p in shipped.iterdir() if p.name.startswith(".")]  # no temporary file left
    # the served model loads from the promoted files
    from agegender.serving.litert import TFLiteModel
    from agegender.serving.modelio import load_serving_model

    assert isinstance(load_serving_model(shipped / "cand.keras")[0], TFLiteModel)
    # promoting again replaces and says what it replaced
    assert cli.main(["promote", str(folder / "cand.keras"), "--models-dir", str(shipped)]) == 0
    assert "replaced" in capsys.readouterr().out
    # a stale export (the model changed after it) is refused, and nothing shipped changes
    before = {p.name: p.read_bytes() for p in shipped.iterdir() if p.is_file()}  # not the digests of .cache/
    with open(folder / "cand.keras", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFileError, match="made from another version"):
        promote(folder, shipped)
    assert {p.name: p.read_bytes() for p in shipped.iterdir() if p.is_file()} == before


def test_promote_refuses_a_card_without_metrics_or_export_file(tiny_model, tmp_path):
    folder = run_folder(tiny_model, tmp_path)
    card = json.loads(card_path(folder / "cand.keras").read_text())
    with pytest.raises(ModelFileError, match="is already in"):
        promote(folder, folder, require_export=False)
    card["tflite"] = {"file": "cand.tflite", "source_sha256": "x"}
    card_path(folder / "cand.keras").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="export .*cand.tflite is missing"):
        promote(folder, tmp_path / "m")
    del card["metrics"]["test"]["gender_accuracy"]
    card_path(folder / "cand.keras").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="no test gender_accuracy"):
        promote(folder, tmp_path / "m", require_export=False)
    assert not (tmp_path / "m" / "cand.keras").exists()


def test_promote_without_export_removes_the_replaced_models_stale_export(tiny_model, tmp_path):
    folder = run_folder(tiny_model, tmp_path / "runs")
    shipped = tmp_path / "models"
    shipped.mkdir()
    (shipped / "cand.tflite").write_bytes(b"old export")
    result = promote(folder, shipped, require_export=False)
    assert result["after"]["test"]["age_mae"] == tiny_model.card["metrics"]["test"]["age_mae"]
    assert not (shipped / "cand.tflite").exists() and (shipped / "cand.keras").is_file()


@pytest.mark.slow
def test_promote_under_another_name_renames_the_export_and_keeps_the_trained_name(tiny_model, tmp_path):
    from agegender.serving.export import export_with_test_images
    from agegender.serving.litert import TFLiteModel
    from agegender.serving.modelio import load_serving_model, read_card

    folder = run_folder(tiny_model, tmp_path / "runs", name="cand_x")
    export_with_test_images(folder / "cand_x.keras", tiny_model.folder, check_images=8)
    shipped = tmp_path / "models"
    promote(folder, shipped, name="shipped")
    assert sorted(p.name for p in shipped.iterdir()) == ["shipped.json", "shipped.keras", "shipped.tflite"]
    card = read_card(shipped / "shipped.keras")
    assert card["name"] == "shipped" and card["trained_as"] == "cand_x" and card["tflite"]["file"] == "shipped.tflite"
    assert isinstance(load_serving_model(shipped / "shipped.keras")[0], TFLiteModel)  # the renamed export serves
    with pytest.raises(ModelFileError, match="not a model name"):
        promote(folder, shipped, name="../x")
