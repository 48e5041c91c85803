"""`agegender train` end to end on a tiny folder, into temporary directories; argument errors."""

from __future__ import annotations

import json

import pytest

from agegender.cli import build_parser, main
from agegender.config import MODELS_DIR, RUNS_DIR
from agegender.serving.modelio import card_path, load_model


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_train_smoke(tiny_folder, tmp_path, capsys):
    models_dir, runs_dir = tmp_path / "models", tmp_path / "runs"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model": "seed_cnn", "image_size": 64, "epochs": 5, "batch_size": 16}))
    argv = ["train", "--config", config_file, "--data", tiny_folder, "--set", "epochs=1", "--set", "limit=20",
            "--set", "name=cli_smoke", "--set", "color_mode=rgb", "--model-arg", "dropout=0.5",
            "--models-dir", models_dir, "--runs-dir", runs_dir]
    code, out, _ = _run(capsys, argv)
    assert code == 0
    summary = out.strip().splitlines()[-1]  # after Keras' progress lines
    assert summary.startswith("cli_smoke: val age MAE") and "(1 epochs" in summary and "test age" not in summary

    model_file = models_dir / "cli_smoke.keras"
    assert model_file.is_file() and card_path(model_file).is_file()
    model, card = load_model(model_file)
    assert model.input_shape == (None, 64, 64, 3)
    assert card["input"] == {**card["input"], "image_size": 64, "color_mode": "rgb"}
    assert card["config"]["epochs"] == 1 and card["config"]["limit"] == 20 and card["config"]["batch_size"] == 16
    assert card["config"]["model_kwargs"] == {"dropout": 0.5}
    assert card["data"]["used_counts"] == {"train": 20, "val": 10, "test": 10}
    assert card["data"]["folder"] == str(tiny_folder)
    assert {"val", "test"} <= set(card["metrics"])
    run_dir = runs_dir / "cli_smoke"
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 1
    # nothing went into the repository's models/ and runs/
    assert not (MODELS_DIR / "cli_smoke.keras").exists() and not (RUNS_DIR / "cli_smoke").exists()

    # the same command again: the run is complete, it is resumed (no new epoch) and the model rewritten
    code, out, _ = _run(capsys, argv)
    assert code == 0 and "(1 epochs" in out.strip().splitlines()[-1]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epochs_done"] == 1 and len(state["history"]) == 1


def test_cli_train_defaults_write_under_runs_not_models():
    args = build_parser().parse_args(["train"])
    assert args.models_dir is None and args.runs_dir == str(RUNS_DIR)  # the model goes to runs/NAME/
    args = build_parser().parse_args(["train", "--models-dir", "/x/m", "--runs-dir", "/x/r"])
    assert (args.models_dir, args.runs_dir) == ("/x/m", "/x/r")
    for command in (["add-descriptor", "m.keras", "--name", "n"], ["train-vgg16"]):
        assert build_parser().parse_args(command).models_dir is None
    with pytest.raises(SystemExit):  # averaging models is research now: research/ensemble.py
        build_parser().parse_args(["combine", "a", "b", "--name", "n"])
    assert build_parser().parse_args(["promote", "runs/x"]).models_dir == str(MODELS_DIR)


def test_cli_train_unknown_setting(tiny_folder, tmp_path, capsys):
    code, out, err = _run(capsys, ["train", "--data", tiny_folder, "--set", "epoch=1",
                                   "--models-dir", tmp_path / "m", "--runs-dir", tmp_path / "r"])
    assert code == 2
    assert "unknown training settings" in err and "epoch" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_cli_train_unknown_model(tiny_folder, tmp_path, capsys):
    code, _, err = _run(capsys, ["train", "--data", tiny_folder, "--set", "model=resnet9000", "--set", "image_size=32",
                                 "--models-dir", tmp_path / "m", "--runs-dir", tmp_path / "r"])
    assert code == 2 and "unknown model" in err
    assert not (tmp_path / "m").exists()


def test_cli_train_missing_data(tmp_path, capsys):
    code, _, err = _run(capsys, ["train", "--data", tmp_path / "nowhere",
                                 "--models-dir", tmp_path / "m", "--runs-dir", tmp_path / "r"])
    assert code == 2 and "UTKFACE_DIR" in err


def test_cli_needs_a_command():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_cli_predict_needs_images():
    with pytest.raises(SystemExit) as info:
        main(["predict", "--aligned"])
    assert info.value.code == 2


def test_cli_setting_without_value_is_refused(tiny_folder, tmp_path, capsys):
    code, _, err = _run(capsys, ["train", "--data", tiny_folder, "--set", "epochs",
                                 "--models-dir", tmp_path / "m", "--runs-dir", tmp_path / "r"])
    assert code == 2 and "--set expects KEY=VALUE" in err and "'epochs'" in err
    assert not (tmp_path / "m").exists()


def test_cli_train_vgg16_unknown_setting(tiny_folder, tmp_path, capsys):
    code, _, err = _run(capsys, ["train-vgg16", "--data", tiny_folder, "--weights", "none", "--set", "head_epoch=1",
                                 "--models-dir", tmp_path / "m", "--runs-dir", tmp_path / "r"])
    assert code == 2 and "unknown VGG16 recipe settings: head_epoch" in err
    assert not (tmp_path / "m").exists()
