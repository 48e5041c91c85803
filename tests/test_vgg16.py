"""VGG16 transfer learning: exact parameter counts, weights handling, two-phase training end to end."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from agegender.models import build_vgg16_transfer
from agegender.models.transfer import VGG16Recipe, train_vgg16_two_phase
from agegender.serving.predict import Predictor


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("fine_tune, trainable", [(False, 19_433_730), (True, 26_513_154)])
def test_parameter_counts_match_the_published_model(fine_tune, trainable):
    model = build_vgg16_transfer(weights=None, fine_tune_block5=fine_tune)
    assert model.count_params() == 34_148_546
    assert trainable_count(model) == trainable
    assert model.count_params() - trainable_count(model) == {False: 14_714_816, True: 7_635_392}[fine_tune]


def test_vgg16_preprocessing_is_inside_the_model():
    model = build_vgg16_transfer(weights=None, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    inner = model.get_layer("vgg16_preprocess")(x)
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inner), expected, atol=1e-4)


def test_missing_local_weights_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        build_vgg16_transfer(weights=str(tmp_path / "nope.h5"))


def test_imagenet_download_failure_is_explained_not_replaced_by_random_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    import keras.src.applications.vgg16 as vgg_module

    monkeypatch.setattr(vgg_module.file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="~/.keras/models"):
        build_vgg16_transfer(weights="imagenet", input_shape=(64, 64, 3))


def test_local_weights_file_is_used(tmp_path):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(path)
    model = build_vgg16_transfer(weights=str(path), input_shape=(64, 64, 3))
    np.testing.assert_array_equal(model.get_layer("vgg16").get_layer("block1_conv1").get_weights()[0],
                                  base.get_layer("block1_conv1").get_weights()[0])


@pytest.mark.slow
def test_two_phase_training_saves_a_model_that_predicts(tiny_folder, tmp_path):
    recipe = VGG16Recipe(name="vgg_tiny", weights=None, image_size=48, batch_size=8, head_epochs=1,
                         finetune_epochs=1, limit=8)
    card = train_vgg16_two_phase(recipe, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs", verbose=0)
    assert [p["phase"] for p in card["phases"]] == ["heads, base frozen", "block5 fine-tuned"]
    # training time adds up over the phases, from the first phase's card
    previous = card["training"]["previous_stage"]
    assert previous["epochs_completed"] == 1
    assert card["training"]["wall_seconds_all_stages"] == pytest.approx(
        previous["wall_seconds"] + card["training"]["wall_seconds"], abs=0.2)
    assert card["input"] == {**card["input"], "image_size": 48, "color_mode": "rgb"}
    saved = json.loads((tmp_path / "models" / "vgg_tiny.json").read_text())
    assert len(saved["phases"]) == 2
    predictor = Predictor.load(tmp_path / "models" / "vgg_tiny.keras")
    images = sorted(p for p in tiny_folder.iterdir() if p.suffix == ".jpg")[:2]
    results = predictor.predict_files(images, aligned=True)
    assert all(len(r["faces"]) == 1 for r in results)
