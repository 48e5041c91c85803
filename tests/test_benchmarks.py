"""The product benchmarks' own arithmetic (their figures come from real runs; these check how they are computed).

The probes of research/probes/ are tested in test_research_probes.py."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _timing  # noqa: E402
import fgnet  # noqa: E402
import inference_speed  # noqa: E402
import parts_speed  # noqa: E402
import resolution_robustness  # noqa: E402


@pytest.mark.slow
def test_untrained_predictor_serves_the_asked_size_as_the_cards_model_is_served(tmp_path):
    """``inference_speed.py --build``: the timed model is a TFLite export of the asked backbone and input side,
    fed as the template card says (its mirror view included), and gives a valid prediction for a face."""
    from agegender.config import SAMPLE_DIR
    from agegender.data.images import open_image
    from agegender.serving.litert import TFLiteModel

    card = {"input": {"image_size": 128, "color_mode": "rgb", "resize": "antialias"}, "tta_flip": True,
            "age_readout": {"method": "median"}, "config": {"model_kwargs": {"crop_fraction": 0.75}}}
    (tmp_path / "template.json").write_text(json.dumps(card))
    predictor = inference_speed.untrained_predictor("lite0", 48, str(tmp_path / "template.keras"), tmp_path)
    assert isinstance(predictor.model, TFLiteModel) and predictor.model.path.is_file()
    assert predictor.image_size == 48 and predictor.views["tta_flip"]
    face = predictor.prepare(open_image(sorted(SAMPLE_DIR.glob("*.jpg"))[0]))
    assert face.shape == (48, 48, 3)
    (out,) = predictor.predict_crops(np.stack([face]))
    assert out.gender in ("female", "male") and 0.5 <= out.gender_probability <= 1.0
    assert 0.0 <= out.age_low <= out.age <= out.age_high <= 116.0
    assert card["input"]["image_size"] == 128  # the template is not changed


def test_resolution_robustness_degrades_every_face_by_the_fraction_asked():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)  # more than one chunk
    assert resolution_robustness.degraded(images, 1.0) is images
    half, quarter = (resolution_robustness.degraded(images, f) for f in (0.5, 0.25))
    assert half.shape == quarter.shape == images.shape

    def detail(x):
        return np.abs(np.diff(np.asarray(x, dtype=float), axis=2)).mean(axis=(1, 2, 3))

    assert (detail(quarter) < detail(half)).all() and (detail(half) < detail(images)).all()


def _combined(mirror: bool):
    """A small stand-in for an add-descriptor model: layers named as its two networks, AgeNet behind the mirror."""
    import keras
    from keras import layers

    from agegender.models import MeanOfViews, MirrorViews

    def network(name, outputs):
        face = keras.Input((8, 8, 3))
        pooled = layers.GlobalAveragePooling2D()(face)
        return keras.Model(face, {key: layers.Dense(units, name=f"{name}_{key}")(pooled) for key, units in outputs.items()},
                           name=name)

    agenet = network("agenet", {"gender_out": 1, "age_dist": 4})
    descriptor = network("face_descriptor", {"descriptor": 5, "inner": 6})
    face = keras.Input((8, 8, 3), name="image")
    own = agenet(MirrorViews(name="mirror_views")(face) if mirror else face)
    own = {key: MeanOfViews()(value) for key, value in own.items()} if mirror else own
    inner = descriptor(face)["inner"]
    return keras.Model(face, {"gender_out": own["gender_out"], "age": layers.Add()([own["age_dist"], inner[:, :4]])}), agenet, descriptor


@pytest.mark.parametrize("mirror", [True, False])
def test_network_parts_are_the_models_own_networks_with_agenets_views(mirror):
    """``parts_speed.py`` times the two networks the model holds, AgeNet over the views it sees in the model."""
    import keras

    model, agenet, descriptor = _combined(mirror)
    parts = parts_speed.network_parts(model)
    face = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    views = np.concatenate([face, face[:, :, ::-1]]) if mirror else face
    own = agenet.predict(views, verbose=0)
    assert len(parts["agenet"].predict(face, verbose=0)["age_dist"]) == len(views)
    np.testing.assert_allclose(parts["agenet"].predict(face, verbose=0)["age_dist"], own["age_dist"], rtol=1e-5)
    np.testing.assert_allclose(parts["face_descriptor"].predict(face, verbose=0)["inner"],
                               descriptor.predict(face, verbose=0)["inner"], rtol=1e-5)
    both = parts["both"].predict(face, verbose=0)
    assert set(both) == {"agenet_gender_out", "agenet_age_dist", "descriptor", "inner"}
    np.testing.assert_allclose(both["agenet_gender_out"], own["gender_out"], rtol=1e-5)
    with pytest.raises(ValueError, match="no agenet or face_descriptor layer: not a model built by add-descriptor"):
        parts_speed.network_parts(keras.Model(agenet.input, agenet.output))


def test_median_ms_times_the_call_after_its_warm_up():
    calls = []
    assert _timing.median_ms(lambda: calls.append(time.sleep(0.002)), repeats=5, warmup=2) >= 2.0
    assert len(calls) == 7


def test_fgnet_benchmark_stores_its_summary_in_the_card(tiny_model, tmp_path, monkeypatch, capsys):
    import shutil

    from PIL import Image

    from agegender.serving.modelio import read_card

    model = tmp_path / "m.keras"
    shutil.copyfile(tiny_model.path, model)
    shutil.copyfile(tiny_model.path.with_suffix(".json"), model.with_suffix(".json"))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copyfile(Path(__file__).parent / "assets" / "face.jpg", photos / "a.jpg")
    Image.new("RGB", (64, 64)).save(photos / "b.jpg")
    (photos / "labels.csv").write_text("file,age,gender,subject\na.jpg,30,,1\nb.jpg,5,,2\n")
    monkeypatch.setattr(sys, "argv", ["fgnet.py", str(model), "--folder", str(photos), "--update-card"])
    fgnet.main()
    out = capsys.readouterr().out
    assert "| m |" not in out and f"| {tiny_model.card['name']} | 2 | 1 |" in out
    assert "trained on 80 % of FG-NET" in out
    stored = read_card(model)["metrics"]["fgnet"]
    assert stored["photos"] == 2 and stored["n"] == 1 and stored["missed"] == 1 and "failures" not in stored
    assert stored["age_mae"] == pytest.approx(abs(stored["age_bias"]))
