"""Label cleaning: lists of training faces left out of a run; val and test are never cleaned."""

from __future__ import annotations

import numpy as np
import pytest

from agegender.config import TrainConfig
from agegender.data import load_utkface
from agegender.data.cleaning import FaceListError, contradicted_faces, read_face_list, write_face_list


def test_contradicted_faces_are_those_the_model_calls_the_other_gender_confidently():
    names = np.array(["d.jpg", "a.jpg", "b.jpg", "c.jpg"])
    genders = np.array([0, 1, 0, 1])  # 1 = female
    p_female = np.array([0.95, 0.1, 0.7, 0.9])
    # d: a man called female at 0.95; a: a woman called male at 0.9; b: 0.7 is not confident enough; c: agrees
    assert list(contradicted_faces(names, genders, p_female, 0.8)) == ["a.jpg", "d.jpg"]
    assert list(contradicted_faces(names, genders, p_female, 0.5)) == ["a.jpg", "b.jpg", "d.jpg"]
    with pytest.raises(ValueError, match="threshold"):
        contradicted_faces(names, genders, p_female, 0.3)


def test_face_lists_round_trip_with_comments_and_reject_missing_or_empty_files(tmp_path):
    path = write_face_list(tmp_path / "flags" / "list.txt", np.array(["b.jpg", "a.jpg"]), ["made by a test", "two"])
    text = path.read_text()
    assert text.startswith("# made by a test\n# two\n")
    names, sha1 = read_face_list(path)
    assert names == {"a.jpg", "b.jpg"} and len(sha1) == 40
    with pytest.raises(FaceListError, match="not found"):
        read_face_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(FaceListError, match="names no face"):
        read_face_list(tmp_path / "empty.txt")


def test_the_recipe_setting_is_known():
    assert TrainConfig.from_dict({"exclude_faces": "data/label_flags/x.txt"}).exclude_faces == "data/label_flags/x.txt"


def test_training_leaves_out_listed_training_faces_only(tiny_folder, tmp_path):
    from agegender.training.loop import load_arrays

    frame = load_utkface(tiny_folder)
    train_names = sorted(frame.loc[frame["split"] == "train", "filename"])
    listed = tmp_path / "flags.txt"
    listed.write_text("# two training faces\n" + "\n".join(train_names[:2]) + "\nnot_in_this_folder.jpg\n")
    config = TrainConfig(model="seed_cnn", image_size=32, color_mode="rgb", exclude_faces=str(listed))
    arrays, info = load_arrays(config, tiny_folder, decode=())
    kept = set(arrays["train"][1]["filename"])
    assert kept == set(train_names[2:])
    for split in ("val", "test"):  # never cleaned
        assert len(arrays[split][1]) == int((frame["split"] == split).sum())
    assert info["excluded"]["listed"] == 3 and info["excluded"]["left_out"] == 2
    assert info["used_counts"]["train"] == len(train_names) - 2


def test_a_list_naming_val_or_test_faces_is_refused(tiny_folder, tmp_path):
    from agegender.training.loop import load_arrays

    frame = load_utkface(tiny_folder)
    test_face = frame.loc[frame["split"] == "test", "filename"].iloc[0]
    listed = tmp_path / "flags.txt"
    listed.write_text(test_face + "\n")
    config = TrainConfig(model="seed_cnn", image_size=32, color_mode="rgb", exclude_faces=str(listed))
    with pytest.raises(FaceListError, match="only training faces may be left out"):
        load_arrays(config, tiny_folder, decode=())


def test_flag_labels_lists_the_training_faces_the_model_contradicts(tiny_model, tmp_path, capsys):
    """`agegender flag-labels` writes a list `exclude_faces` reads, with the model's hash and the command on top."""
    from agegender.cli import main
    from agegender.data.preprocess import load_split_arrays
    from agegender.serving.inference import predict_arrays, tta_settings
    from agegender.serving.modelio import file_sha256, input_resize, load_serving_model

    out = tmp_path / "flags.txt"
    args = ["flag-labels", "--model", str(tiny_model.path), "--data", str(tiny_model.folder), "--out", str(out)]
    assert main([*args, "--threshold", "0.55"]) == 0
    names, _ = read_face_list(out)  # what a run's exclude_faces reads
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert f"# model sha256 {file_sha256(tiny_model.path)}" in header
    assert any("command: agegender flag-labels" in line and "--threshold 0.55" in line for line in header)
    # exactly the training faces whose label the model gives less than 45 % (recomputed here)
    frame = load_utkface(tiny_model.folder)
    train = frame[frame["split"] == "train"]
    model, card = load_serving_model(tiny_model.path)
    images, rows, _ = load_split_arrays(train, card["input"]["image_size"], card["input"]["color_mode"],
                                        resize=input_resize(card), progress=False)
    p_female = predict_arrays(model, images, **tta_settings(card))["p_female"]
    p_other = np.where(rows["gender"].to_numpy() == 1, 1 - p_female, p_female)
    assert names == set(rows["filename"].to_numpy()[p_other > 0.55]) and names
    assert f"{len(names)} of {len(rows)} training faces" in capsys.readouterr().out

    assert main([*args, "--threshold", "1.2"]) == 2
    assert "--threshold must be in [0.5, 1)" in capsys.readouterr().err
    other = tmp_path / "other"  # a folder the model was not trained on: its verdicts would mean nothing there
    other.mkdir()
    for path in sorted(tiny_model.folder.iterdir())[:40]:
        (other / path.name).write_bytes(path.read_bytes())
    assert main(["flag-labels", "--model", str(tiny_model.path), "--data", str(other), "--out", str(out)]) == 2
    assert "was trained on other data" in capsys.readouterr().err
