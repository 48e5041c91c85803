"""A trained AgeNet with dlib's face-recognition network beside it, for gender and age: `agegender add-descriptor`.

dlib's network tells adults' gender apart about as well as AgeNet, but errs on other faces, so a mix of the two
logits is right more often than either (``research/results/face_descriptor_probe.md``); its 128-D descriptor
knows little about age, but its inner blocks do (``face_age``). The combined network holds AgeNet unchanged, its
mirror view inside the graph (the two views go through as a batch of two and are averaged, as
``predict_arrays(tta_flip=True)`` does outside; ``mirror=False`` leaves it out), and on the face alone the
network (``backbones.face_recognition_net``) with heads fitted on AgeNet's own training faces:

- gender: MLP heads on the inner features (``gender_head="mlp"``, the default) or a logistic regression on the
  descriptor (``"regression"``) give a second logit; P(female) is ``sigmoid(a * logit(AgeNet's) + (1 - a) * it)``;
- age (``age_head``): MLP heads on the inner features give a second age distribution; the served one is
  ``b * AgeNet's + (1 - b) * the heads'`` and the age its median (at ``b = 1`` ages stay AgeNet's, to the digit).

The gender heads are ``face_gender``'s, the age heads ``face_age``'s; ``a`` and ``b`` are chosen on val
(``recipes.md``: ``agenet_frn``, ``agenet_fra``, ``agenet_frg``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import layers

from ..config import GENDER_HEADS, MODELS_DIR, TrainConfig
from ..serving.inference import predict_arrays, tta_settings
from ..serving.modelio import file_sha256, load_model, require_same_data, require_train_fit, save_model_atomic
from ..training.loop import load_arrays, split_metrics
from .backbones.face_recognition_net import AGE_FEATURE_BLOCKS, build_face_descriptor, default_weights_path, weight_files
from .builders import MeanOfViews, MedianAge, MirrorViews, MixedDistribution, MixedGender
from .face_age import choose_age_weight, fit_age_heads
from .face_gender import REGRESSION_L2, choose_weight, fit_gender_heads, fit_regression, regression_layer
from .feature_heads import HEAD_EPOCHS, HEAD_HIDDEN, HEAD_SEEDS


def build_with_descriptor(agenet: keras.Model, descriptor: keras.Model, gender_head: keras.Layer, weight: float,
                          name: str, *, gender_input: str = "descriptor", age_head: keras.Model | None = None,
                          age_weight: float = 1.0, mirror: bool = True) -> keras.Model:
    """One network: AgeNet over the face and its mirror (``mirror``) or the face alone, and on the face the
    descriptor network, whose output ``gender_input`` (``"descriptor"`` or ``"inner"``, the inner features of a
    network built with ``inner_blocks``) gives ``gender_head``'s logit; with ``age_head`` (on the inner features)
    and an ``age_weight`` below 1, the age distribution mixed with the head's and the age its median."""
    inputs = keras.Input(agenet.input_shape[1:], name="image")
    own = keras.Model(agenet.input, {key: agenet.get_layer(key).output for key in ("gender_out", "age_dist", "age_out")},
                      name="agenet")
    if mirror:
        views = own(MirrorViews(name="mirror_views")(inputs))
        agenet_out = {key: MeanOfViews(name=f"{key}_views")(views[key]) for key in ("gender_out", "age_dist", "age_out")}
    else:
        agenet_out = own(inputs)
    features = descriptor(inputs)
    features = features if isinstance(features, dict) else {"descriptor": features}
    needed = {gender_input} | ({"inner"} if age_head is not None and age_weight < 1.0 else set())
    if not needed <= set(features):
        raise ValueError(f"the heads read {sorted(needed)}; the descriptor network gives {sorted(features)} "
                         "(build it with inner_blocks for the inner features)")
    outputs = {"gender_out": MixedGender(weight, name="gender_out")(
                   [agenet_out["gender_out"], gender_head(features[gender_input])])}
    if age_head is None or age_weight == 1.0:
        outputs["age_dist"] = layers.Identity(name="age_dist")(agenet_out["age_dist"])
        outputs["age_out"] = layers.Identity(name="age_out")(agenet_out["age_out"])
    else:
        outputs["age_dist"] = MixedDistribution(age_weight, name="age_dist")(
            [agenet_out["age_dist"], age_head(features["inner"])])
        outputs["age_out"] = MedianAge(name="age_out")(outputs["age_dist"])
    return keras.Model(inputs, outputs, name=name)


def descriptor_outputs(descriptor: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """``{"descriptor": ...}``, and ``"inner"`` when the network was built with inner blocks."""
    values = descriptor.predict(np.asarray(images, "float32"), batch_size=256, verbose=0)
    return values if isinstance(values, dict) else {"descriptor": values}


def _heads_record(faces: int) -> dict[str, Any]:
    return {"heads": len(HEAD_SEEDS), "seeds": list(HEAD_SEEDS), "hidden": HEAD_HIDDEN, "epochs": HEAD_EPOCHS,
            "faces": faces}


def _fit_gender(gender_head: str, train_features: dict[str, np.ndarray],
                genders: pd.Series) -> tuple[str, keras.Layer, dict[str, Any]]:
    """The descriptor network's gender model, the output it reads and its card record, fitted on training faces."""
    genders = genders.to_numpy()
    if gender_head == "mlp":
        heads = fit_gender_heads(train_features["inner"], genders)
        return "inner", heads, {"features": "inner", **_heads_record(len(genders))}
    layer = regression_layer(*fit_regression(train_features["descriptor"], genders))
    return "descriptor", layer, {"faces": int(len(genders)), "l2": REGRESSION_L2}


def _fit_age(config: TrainConfig, train_features: np.ndarray, train_ages: pd.Series, val_features: np.ndarray,
             val_agenet: dict[str, np.ndarray], val_ages: pd.Series) -> tuple[keras.Model, dict[str, Any]]:
    """The age heads, fitted on training faces, and their card record with the mixing weight chosen on val."""
    heads = fit_age_heads(train_features, train_ages.to_numpy(), config)
    head_val = heads.predict(val_features, batch_size=1024, verbose=0)
    weight, val_mae = choose_age_weight(val_agenet["age"], val_agenet["age_dist"], head_val, val_ages.to_numpy())
    return heads, {"blocks": list(AGE_FEATURE_BLOCKS), "features": int(train_features.shape[1]),
                   **_heads_record(len(train_ages)), "agenet_dist_weight": weight, "val_age_mae_by_weight": val_mae}


def augmented_faces(images: np.ndarray, config: TrainConfig, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """One augmented copy of each face (float32), drawn as AgeNet's training draws them (``config``'s augmentations:
    flip, shift and zoom, brightness and contrast, and its low-resolution, erasing and photo-domain probabilities)."""
    import tensorflow as tf

    from ..data.pipeline import augment_batch

    out = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(np.asarray(images[start:start + batch_size], "float32"))
        out.append(augment_batch(batch, tf.constant([seed, start], tf.int32), config.augment_low_resolution,
                                 config.augment_erase, config.augment_photo,
                                 tuple(config.low_resolution_keep)).numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), "float32")


def add_descriptor(model_path: str | os.PathLike, name: str, folder: str | os.PathLike | None = None, *,
                   models_dir: Path = MODELS_DIR, weights: str | os.PathLike | None = None,
                   age_head: bool = True, gender_head: str = "mlp", mirror: bool = True,
                   augment: bool = False) -> dict[str, Any]:
    """AgeNet at ``model_path`` plus the descriptor network's gender (``gender_head``, one of ``GENDER_HEADS``)
    and, with ``age_head``, its age heads, written to ``models_dir/<name>.keras``; its card. AgeNet sees the face and
    its mirror (``mirror``, as it was served alone) or the face alone.

    The gender and age heads are fitted on the faces AgeNet was trained on (its config's split and
    left-out faces), the two weights chosen on val; the card's training time is AgeNet's plus this step's. With
    ``augment`` the heads see one augmented copy of each training face (:func:`augmented_faces`) instead of the
    face itself, so that they, like AgeNet, do not learn UTKFace's look.
    """
    start = time.perf_counter()
    model_path = Path(model_path)
    agenet, card = load_model(model_path)
    require_train_fit(card, model_path, "the mix")
    if tta_settings(card)["tta_zoom"] or (mirror and not tta_settings(card)["tta_flip"]):
        raise ValueError(f"{model_path} is served with views {tta_settings(card)}; the combination holds "
                         f"{'the mirror view only' if mirror else 'no views'}")
    if card["input"]["color_mode"] != "rgb":
        raise ValueError(f"{model_path} takes {card['input']['color_mode']} faces; the face descriptor needs RGB")
    if gender_head not in GENDER_HEADS:
        raise ValueError(f"unknown gender head {gender_head!r}; choose one of {GENDER_HEADS}")
    if age_head and "age_dist" not in agenet.output_names:
        raise ValueError(f"{model_path} has no age distribution to mix the age head's with; use --no-age-head")
    output = Path(models_dir) / f"{name}.keras"
    if output.resolve() == model_path.resolve():
        raise ValueError(f"{output} is the model it starts from; write the combination under another name")
    config = TrainConfig.from_dict(card["config"])
    arrays, data_info = load_arrays(config, folder)
    require_same_data(card, model_path, data_info)
    weights_path = Path(weights) if weights is not None else default_weights_path()
    descriptor = build_face_descriptor(int(card["input"]["image_size"]), weights_path,
                                       inner_blocks=AGE_FEATURE_BLOCKS if age_head or gender_head == "mlp" else ())

    train_images, train_rows = arrays["train"]
    train_features = descriptor_outputs(descriptor, augmented_faces(train_images, config, seed=config.seed)
                                        if augment else train_images)
    gender_input, gender_model, gender_record = _fit_gender(gender_head, train_features, train_rows["gender"])
    val_images, val_rows = arrays["val"]
    val_agenet = predict_arrays(agenet, val_images, tta_flip=mirror)
    val_features = descriptor_outputs(descriptor, val_images)
    val_logits = np.ravel(keras.ops.convert_to_numpy(gender_model(val_features[gender_input])))
    weight, val_accuracy = choose_weight(val_agenet["p_female"], val_logits, val_rows["gender"].to_numpy())
    heads, age_record = (_fit_age(config, train_features["inner"], train_rows["age"], val_features["inner"],
                                  val_agenet, val_rows["age"]) if age_head else (None, None))
    model = build_with_descriptor(agenet, descriptor, gender_model, weight, name, gender_input=gender_input,
                                  age_head=heads, age_weight=age_record["agenet_dist_weight"] if age_record else 1.0,
                                  mirror=mirror)
    step_seconds = time.perf_counter() - start

    views = "mean of the face and its mirror" if mirror else "the face alone"
    base_training = card.get("training", {})
    base_seconds = float(base_training.get("wall_seconds_all_stages", base_training.get("wall_seconds", 0.0)))
    new_card = {
        **{k: v for k, v in card.items() if k not in ("tflite", "trained_as", "metrics", "created")},
        "name": name,
        "architecture": f"{card['architecture']}+face_descriptor",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": int(model.count_params()),
        "outputs": {**card.get("outputs", {}),
                    "gender_out": f"P(female): AgeNet's ({views}) mixed with the face "
                                  f"descriptor network's {'MLP heads' if gender_head == 'mlp' else 'regression'}, "
                                  "in logits",
                    **({"age_dist": f"AgeNet's age distribution ({views}) mixed with the "
                                    "descriptor's age heads'",
                        "age_out": "the median of age_dist"}
                       if age_record and age_record["agenet_dist_weight"] < 1.0 else {})},
        "tta_flip": False, "tta_zoom": [],  # AgeNet's views are inside the graph
        "views_in_graph": "mirror (AgeNet only)" if mirror else "none",
        "base_model": {"file": model_path.name, "name": card.get("name"), "sha256": file_sha256(model_path),
                       "trained_as": card.get("trained_as", card.get("name")),
                       "metrics": {split: {k: card["metrics"][split][k] for k in ("age_mae", "gender_accuracy")}
                                   for split in ("val", "test") if split in card.get("metrics", {})}},
        "face_descriptor": {
            "network": "dlib face-recognition ResNet (face-api.js FaceRecognitionNet), 128-D, at 150 px",
            "weights_sha256": {path.name: file_sha256(path) for path in weight_files(weights_path)},
            **({"gender_heads": gender_record} if gender_head == "mlp" else {"regression": gender_record}),
            "agenet_logit_weight": weight, "val_gender_accuracy_by_weight": val_accuracy,
            "step_seconds": round(step_seconds, 1), "heads_saw": "augmented faces" if augment else "faces",
            **({"age_head": age_record} if age_record else {}),
        },
        "data": {**data_info, "fit_splits": ["train"]},
        "training": {**base_training, "wall_seconds": round(base_seconds + step_seconds, 1),
                     "wall_seconds_all_stages": round(base_seconds + step_seconds, 1),
                     "base_wall_seconds": base_seconds},
    }
    new_card["metrics"] = split_metrics(model, tta_settings(new_card), arrays, train_rows)
    save_model_atomic(model, output, new_card)
    return new_card
