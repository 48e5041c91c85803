"""`agegender combine`: several trained models averaged into one network that serves like any model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.cli import main  # noqa: E402
from agegender.config import TrainConfig  # noqa: E402
from agegender.evaluate import predict_arrays  # noqa: E402
from agegender.modelio import file_sha256, load_model  # noqa: E402
from agegender.train import train  # noqa: E402

MEMBER = dict(model="small_resnet", image_size=32, color_mode="rgb", epochs=1, batch_size=16, limit=32,
              age_readout="val", tta_flip=True)


@pytest.fixture(scope="module")
def members(tiny_folder, tmp_path_factory):
    """Two small networks of different widths and seeds, trained for one epoch on the same faces."""
    root = tmp_path_factory.mktemp("members")
    paths = []
    for name, seed, widths in (("narrow", 1, [8]), ("wide", 2, [8, 16])):
        config = TrainConfig(**MEMBER, name=name, seed=seed, model_kwargs={"widths": widths})
        train(config, tiny_folder, models_dir=root / "models", runs_dir=root / "runs", verbose=0)
        paths.append(root / "models" / f"{name}.keras")
    return paths


def _val_images(folder, card):
    from agegender.data import load_utkface
    from agegender.preprocess import load_split_arrays

    frame = load_utkface(folder)
    images, _, _ = load_split_arrays(frame[frame["split"] == "val"], card["input"]["image_size"],
                                     card["input"]["color_mode"], resize=card["input"]["resize"], progress=False)
    return images


def test_combined_model_averages_its_members_and_adds_up_their_cost(members, tiny_folder, tmp_path, capsys):
    out_dir = tmp_path / "models"
    code = main(["combine", *map(str, members), "--name", "pair", "--data", str(tiny_folder),
                 "--models-dir", str(out_dir)])
    assert code == 0 and "pair: mean of 2 models" in capsys.readouterr().out
    model, card = load_model(out_dir / "pair.keras")
    cards = [load_model(path)[1] for path in members]
    assert card["architecture"] == "ensemble" and card["tta_flip"] is True
    assert [m["file"] for m in card["members"]] == ["narrow.keras", "wide.keras"]
    assert [m["sha256"] for m in card["members"]] == [file_sha256(path) for path in members]
    training = card["training"]
    assert training["wall_seconds"] == pytest.approx(sum(c["training"]["wall_seconds_all_stages"] for c in cards), abs=0.2)
    assert training["epochs_completed"] == "1+1"
    readout = card["age_readout"]
    assert readout["setting"] == "val" and readout["method"] == min(readout["val_age_mae"], key=readout["val_age_mae"].get)
    assert card["metrics"]["val"]["n"] == cards[0]["metrics"]["val"]["n"] > 0

    images = _val_images(tiny_folder, card)
    own = [predict_arrays(load_model(path)[0], images) for path in members]
    mean = predict_arrays(model, images)
    np.testing.assert_allclose(mean["p_female"], np.mean([o["p_female"] for o in own], axis=0), atol=1e-5)
    np.testing.assert_allclose(mean["age_dist"], np.mean([o["age_dist"] for o in own], axis=0), atol=1e-6)
    assert card["metrics"]["val"]["age_mae"] == pytest.approx(readout["val_age_mae"][readout["method"]], abs=1e-3)


def test_combined_model_exports_and_serves(members, tiny_folder, tmp_path):
    from agegender.export import export_with_test_images
    from agegender.litert import TFLiteModel
    from agegender.predict import Predictor

    out_dir = tmp_path / "models"
    assert main(["combine", *map(str, members), "--name", "pair", "--data", str(tiny_folder),
                 "--models-dir", str(out_dir)]) == 0
    record = export_with_test_images(out_dir / "pair.keras", tiny_folder, check_images=8)
    assert record["check"]["max_p_female_diff"] < 0.01
    predictor = Predictor.load(out_dir / "pair.keras")
    assert isinstance(predictor.model, TFLiteModel)
    face = _val_images(tiny_folder, load_model(out_dir / "pair.keras")[1])[:1]
    assert len(predictor.predict_crops(face)) == 1


def test_combine_refuses_what_cannot_be_averaged(members, tiny_folder, small_folder, tmp_path, capsys):
    out = ["--data", str(tiny_folder), "--models-dir", str(tmp_path)]
    assert main(["combine", str(members[0]), "--name", "x", *out]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["combine", str(members[0]), str(members[0]), "--name", "x", *out]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["combine", *map(str, members), "--name", "narrow", "--data", str(tiny_folder),
                 "--models-dir", str(members[0].parent)]) == 2
    assert "one of the members" in capsys.readouterr().err
    # trained on other faces: its val and test splits would not be held out
    assert main(["combine", *map(str, members), "--name", "x", "--data", str(small_folder),
                 "--models-dir", str(tmp_path)]) == 2
    assert "other data" in capsys.readouterr().err
    # another input size
    other = tmp_path / "big.keras"
    shutil.copyfile(members[1], other)
    card = json.loads(members[1].with_suffix(".json").read_text())
    card["input"]["image_size"] = 48
    other.with_suffix(".json").write_text(json.dumps(card))
    assert main(["combine", str(members[0]), str(other), "--name", "x", *out]) == 2
    assert "image_size" in capsys.readouterr().err
    # fitted on val: the ensemble's read-out could not be chosen there
    card = json.loads(members[1].with_suffix(".json").read_text())
    card["data"]["fit_splits"] = ["train", "val"]
    other.with_suffix(".json").write_text(json.dumps(card))
    assert main(["combine", str(members[0]), str(other), "--name", "x", *out]) == 2
    assert "in-sample" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()


def _recipe(tmp_path, members, **extra) -> str:
    for name, seed, widths in (("narrow", 1, [8]), ("wide", 2, [8, 16])):
        (tmp_path / f"{name}.json").write_text(json.dumps({**MEMBER, "name": name, "seed": seed,
                                                           "model_kwargs": {"widths": widths}}))
    path = tmp_path / "pair.json"
    path.write_text(json.dumps({"name": "pair", "members": members, **extra}))
    return str(path)


def test_an_ensemble_recipe_trains_its_members_and_combines_them_with_one_command(tiny_folder, tmp_path, monkeypatch):
    import agegender.train as train_module

    recipe = _recipe(tmp_path, [{"config": "narrow.json"}, {"config": "wide.json", "seed": 3}])
    argv = ["train", "--config", recipe, "--data", str(tiny_folder), "--models-dir", str(tmp_path / "models"),
            "--runs-dir", str(tmp_path / "runs"), "--set", "limit=24"]
    assert main(argv) == 0
    model, card = load_model(tmp_path / "models" / "pair.keras")
    assert [m["file"] for m in card["members"]] == ["narrow.keras", "wide.keras"]
    assert card["members"][1]["config"]["seed"] == 3  # a member's own change
    assert all(m["config"]["limit"] == 24 for m in card["members"])  # --set reaches every member
    assert all(m["history"] and m["history"][0]["epoch"] == 1 for m in card["members"])  # for the plots
    assert (tmp_path / "runs" / "pair_members" / "wide.keras").is_file()
    # run again (e.g. after an interruption): the finished members are not trained again
    begun: list[int] = []
    monkeypatch.setattr(train_module._EpochCheckpoint, "on_epoch_begin", lambda cb, epoch, logs=None: begun.append(epoch))
    assert main(argv) == 0 and begun == []
    # the notebooks' entry point reads either kind of config file
    from agegender.ensemble import train_from_config

    again = train_from_config(recipe, tiny_folder, overrides={"limit": 24}, models_dir=tmp_path / "models",
                              runs_dir=tmp_path / "runs", verbose=0)
    single = train_from_config(tmp_path / "narrow.json", tiny_folder, overrides={"limit": 24},
                               models_dir=tmp_path / "single", runs_dir=tmp_path / "runs", verbose=0)
    assert begun == [] and again["metrics"] == card["metrics"]
    assert single["name"] == "narrow" and "members" not in single


@pytest.mark.parametrize("members, extra, message", [
    ([{"config": "narrow.json"}], {}, "two or more"),
    ([{"config": "narrow.json"}, "wide.json"], {}, "two or more"),
    ([{"config": "narrow.json"}, {"config": "wide.json"}], {"seed": 1}, "unknown ensemble recipe settings"),
    ([{"config": "narrow.json"}, {"config": "narrow.json"}], {}, "names of their own"),
    ([{"config": "narrow.json"}, {"config": "wide.json", "name": "pair"}], {}, "names of their own"),
    ([{"config": "narrow.json"}, {"config": "wide.json", "epoch": 1}], {}, "unknown training settings"),
])
def test_bad_ensemble_recipes_are_refused_before_training(tiny_folder, tmp_path, capsys, members, extra, message):
    recipe = _recipe(tmp_path, members, **extra)
    assert main(["train", "--config", recipe, "--data", str(tiny_folder), "--models-dir", str(tmp_path / "m"),
                 "--runs-dir", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
