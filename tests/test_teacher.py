"""Teacher distillation: cached face descriptors as an extra training target, dropped from the saved model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from agegender.config import TrainConfig  # noqa: E402
from agegender.serving.modelio import load_model  # noqa: E402
from agegender.training import loop as train_module  # noqa: E402
from agegender.training.teacher import (DESCRIPTOR_OUTPUT, TeacherError, descriptor_targets,  # noqa: E402
                               distilled_gender_targets, gender_probabilities, load_descriptors,
                               with_descriptor_head, without_training_heads)

TEACHER_CONFIG = dict(model="small_resnet", name="taught", image_size=32, color_mode="rgb", epochs=1, batch_size=16,
                      limit=32, seed=3, model_kwargs={"widths": [8]}, descriptor_loss_weight=0.5)


def write_descriptors(path, names, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, name=np.array(sorted(names)), descriptor=rng.normal(2.0, 3.0, (len(names), dim)).astype("float32"))
    return path


def test_targets_are_standardised_with_the_training_statistics():
    descriptors = {"a.jpg": np.array([0.0, 10.0], "float32"), "b.jpg": np.array([2.0, 30.0], "float32"),
                   "c.jpg": np.array([4.0, 20.0], "float32")}
    train, stats = descriptor_targets(pd.DataFrame({"filename": ["a.jpg", "b.jpg"]}), descriptors)
    np.testing.assert_allclose(train, [[-1, -1], [1, 1]], atol=1e-5)
    other, _ = descriptor_targets(pd.DataFrame({"filename": ["c.jpg"]}), descriptors, **stats)
    np.testing.assert_allclose(other, [[3, 0]], atol=1e-5)  # (4 - 1) / 1 and (20 - 20) / 10


def test_a_face_without_descriptor_gets_the_mean_and_low_coverage_is_an_error():
    descriptors = {f"{i}.jpg": np.full(2, float(i), "float32") for i in range(99)}
    rows = pd.DataFrame({"filename": [f"{i}.jpg" for i in range(100)]})  # 99.jpg has none
    targets, _ = descriptor_targets(rows, descriptors)
    np.testing.assert_array_equal(targets[99], [0.0, 0.0])
    with pytest.raises(TeacherError, match="covers 50.0% of these 2 faces"):
        descriptor_targets(pd.DataFrame({"filename": ["0.jpg", "elsewhere.jpg"]}), descriptors)


def test_missing_and_damaged_teacher_files(tmp_path):
    with pytest.raises(TeacherError, match="not found; create them with `make teacher`"):
        load_descriptors(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an npz file")
    with pytest.raises(TeacherError, match="unreadable"):
        load_descriptors(tmp_path / "bad.npz")


def test_descriptor_head_shares_weights_and_is_dropped_again():
    from agegender.models import build_small_resnet

    model = build_small_resnet((32, 32, 3), widths=(8,))
    taught = with_descriptor_head(model, 8)
    assert DESCRIPTOR_OUTPUT in taught.output_names
    served = without_training_heads(taught)
    assert sorted(served.output_names) == sorted(model.output_names)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(served(x)["age_out"], model(x)["age_out"], rtol=1e-6)


@pytest.mark.slow
def test_training_with_a_teacher(tiny_folder, tmp_path):
    names = [p.name for p in tiny_folder.iterdir()]
    teacher = write_descriptors(tmp_path / "teacher.npz", names)
    config = TrainConfig(**TEACHER_CONFIG, teacher_descriptors=str(teacher))
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["teacher"]["faces"] == len(names) and card["teacher"]["dimensions"] == 8
    assert len(card["teacher"]["sha256"]) == 64
    history = card["training"]["history"][0]
    assert f"{DESCRIPTOR_OUTPUT}_loss" in history and f"val_{DESCRIPTOR_OUTPUT}_loss" in history
    model, _ = load_model(tmp_path / "models" / "taught.keras")
    assert DESCRIPTOR_OUTPUT not in model.output_names  # serving never pays for the teacher head


def test_teacher_of_other_data_is_refused_before_training(tiny_folder, tmp_path):
    teacher = write_descriptors(tmp_path / "teacher.npz", ["1_0_0_20170101000000000.jpg.chip.jpg"])
    config = TrainConfig(**TEACHER_CONFIG, teacher_descriptors=str(teacher))
    with pytest.raises(TeacherError, match="covers 0.0%"):
        train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs", verbose=0)
    assert not (tmp_path / "runs" / "taught" / "checkpoint.keras").exists()


@pytest.mark.slow
def test_interrupted_run_with_a_teacher_resumes_with_its_head(tiny_folder, tmp_path, monkeypatch):
    names = [p.name for p in tiny_folder.iterdir()]
    teacher = write_descriptors(tmp_path / "teacher.npz", names)
    config = TrainConfig(**{**TEACHER_CONFIG, "epochs": 2}, teacher_descriptors=str(teacher))
    dirs = dict(models_dir=tmp_path / "models", runs_dir=tmp_path / "runs")
    original = train_module._EpochCheckpoint.on_epoch_end

    def stop_after_first(cb, epoch, logs=None):
        original(cb, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt("simulated Ctrl-C after epoch 1")

    with monkeypatch.context() as mp:
        mp.setattr(train_module._EpochCheckpoint, "on_epoch_end", stop_after_first)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, tiny_folder, verbose=0, **dirs)
    checkpoint = keras.saving.load_model(tmp_path / "runs" / "taught" / "checkpoint.keras")
    assert DESCRIPTOR_OUTPUT in checkpoint.output_names  # the head and its optimizer state are in the checkpoint

    card = train_module.train(config, tiny_folder, verbose=0, **dirs)
    assert [row["epoch"] for row in card["training"]["history"]] == [1, 2]
    assert all(f"{DESCRIPTOR_OUTPUT}_loss" in row for row in card["training"]["history"])
    assert DESCRIPTOR_OUTPUT not in load_model(tmp_path / "models" / "taught.keras")[0].output_names


def test_teacher_gender_probabilities_are_out_of_fold():
    rng = np.random.default_rng(0)
    names = pd.Series([f"{i}_face.jpg" for i in range(400)])
    genders = rng.integers(0, 2, 400)
    descriptors = rng.normal(0, 1, (400, 6)).astype("float32")
    descriptors[:, 0] += 2.0 * (2 * genders - 1)  # one dimension carries gender
    probabilities = gender_probabilities(descriptors, genders, names)
    assert ((probabilities > 0.5) == (genders == 1)).mean() > 0.9
    flipped = genders.copy()
    flipped[7] = 1 - flipped[7]
    again = gender_probabilities(descriptors, flipped, names)
    # a face's own label never reaches its probability (it only moves the other folds' regressions)
    assert again[7] == pytest.approx(probabilities[7], abs=1e-6)
    assert not np.allclose(again, probabilities)
    # faces without a real descriptor are not fitted on: changing their labels changes no other face
    usable = np.arange(400) >= 10
    relabelled = genders.copy()
    relabelled[:10] = 1 - relabelled[:10]
    np.testing.assert_allclose(gender_probabilities(descriptors, relabelled, names, usable=usable)[10:],
                               gender_probabilities(descriptors, genders, names, usable=usable)[10:], atol=1e-6)


def test_distilled_gender_targets_keep_children_and_faces_without_descriptor():
    genders = np.array([0, 1, 0, 1])
    ages = np.array([5, 30, 40, 70])
    probabilities = np.array([0.9, 0.2, 0.4, 0.8], "float32")
    has = np.array([True, True, True, False])
    targets = distilled_gender_targets(genders, ages, probabilities, has, weight=0.5, min_age=13)
    np.testing.assert_allclose(targets, [0.0, 0.6, 0.2, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        distilled_gender_targets(genders, ages, probabilities, has, weight=1.5, min_age=13)


@pytest.mark.slow
def test_training_with_the_teachers_gender(tiny_folder, tmp_path, monkeypatch):
    names = [p.name for p in tiny_folder.iterdir()]
    teacher = write_descriptors(tmp_path / "teacher.npz", names)
    config = TrainConfig(**TEACHER_CONFIG, teacher_descriptors=str(teacher), teacher_gender_weight=0.5,
                         teacher_gender_min_age=0)
    seen = {}
    original = train_module.make_dataset

    def spy(images, ages, genders, **kwargs):
        seen[kwargs["training"]] = np.asarray(genders)
        return original(images, ages, genders, **kwargs)

    monkeypatch.setattr(train_module, "make_dataset", spy)
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["teacher"]["gender"]["faces_mixed"] == len(seen[True])
    assert not np.isin(seen[True], [0.0, 1.0]).all()  # soft targets for training ...
    assert np.isin(seen[False], [0, 1]).all()  # ... while validation keeps the labels


def test_teacher_gender_without_descriptors_is_refused(tiny_folder, tmp_path):
    config = TrainConfig(**TEACHER_CONFIG, teacher_gender_weight=0.5)
    with pytest.raises(TeacherError, match="teacher_gender_weight needs teacher_descriptors"):
        train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs", verbose=0)


def test_gender_accuracy_counts_soft_targets_by_their_label():
    y_true = np.array([[0.6], [0.2], [0.7], [1.0]], "float32")  # mixed targets of labels 1, 0, 1 and a plain 1
    y_pred = np.array([[0.9], [0.1], [0.3], [0.8]], "float32")
    assert float(keras.ops.mean(train_module.label_accuracy(y_true, y_pred))) == pytest.approx(0.75)
