"""One config, every stage: `agegender train --config` trains, adds the face descriptor and exports into runs/."""

from __future__ import annotations

import json

import pytest

import agegender.cli as cli
from agegender.config import PROJECT_ROOT, TrainConfig
from agegender.serving.modelio import file_sha256, read_card


def test_the_shipped_recipe_names_its_stages():
    config = TrainConfig.from_json(PROJECT_ROOT / "configs" / "agenet.json")
    assert config.add_descriptor is True and config.export == "float16"
    assert {"add_descriptor", "detail_cap", "export"} <= TrainConfig.POST_TRAINING_FIELDS  # never restart training


@pytest.mark.slow
def test_train_runs_every_stage_into_its_run_folder(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "RUNS_DIR", tmp_path / "runs")
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(dict(model="small_resnet", name="staged", image_size=32, color_mode="rgb", epochs=1,
                                      batch_size=16, limit=32, tta_flip=True, seed=1, model_kwargs={"widths": [8]},
                                      add_descriptor=True, detail_cap=24, export="float16")))
    assert cli.main(["train", "--config", str(config), "--data", str(tiny_folder)]) == 0
    run = tmp_path / "runs" / "staged"
    assert (run / "base" / "staged.keras").is_file()  # the trained network itself
    assert read_card(run / "descriptor" / "staged.keras")["architecture"].endswith("+face_descriptor")
    card = read_card(run / "staged.keras")
    assert card["architecture"].endswith("+face_descriptor+detail_cap") and card["base_model"]["file"] == "staged.keras"
    assert card["detail_cap"]["side"] == 24 and card["detail_cap"]["base_model"]["sha256"] == file_sha256(
        run / "descriptor" / "staged.keras")
    assert card["tflite"]["source_sha256"] == file_sha256(run / "staged.keras")
    assert (run / "staged.tflite").stat().st_size == card["tflite"]["bytes"]
    # the run folder is what `agegender promote` takes
    assert cli.main(["promote", str(run), "--models-dir", str(tmp_path / "shipped")]) == 0
    assert (tmp_path / "shipped" / "staged.tflite").is_file()


def test_an_unknown_export_is_refused(tiny_folder, tmp_path, capsys):
    assert cli.main(["train", "--data", str(tiny_folder), "--set", "export=int4", "--models-dir",
                     str(tmp_path / "m"), "--runs-dir", str(tmp_path / "r")]) == 2
    assert "export must be one of" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
