"""Which part of an add-descriptor model carries the bias on other photos: AgeNet's age, the descriptor heads', the mix.

For each weight w of AgeNet's distribution in the mixture (the model's own is chosen on val), prints val and FG-NET
age MAE and bias of the median age. FG-NET faces go through the whole-photo path (largest face, crop as served).

    UTKFACE_DIR=... .venv/bin/python research/probes/mixture_parts.py ../shared/datasets/fgnet [--model M]
"""
from __future__ import annotations

import argparse

import keras
import numpy as np

from agegender.data import load_utkface
from agegender.data.preprocess import load_split_arrays
from agegender.serving.modelio import input_resize, load_model
from agegender.serving.predict import Predictor
from _photos import model_inputs


def medians(dist: np.ndarray) -> np.ndarray:
    return (np.cumsum(dist, axis=-1) < 0.5).sum(axis=-1).astype(float)


def mixture_parts(model: keras.Model) -> keras.Model:
    """A model giving AgeNet's and the heads' age distributions (the two inputs of the mixture), also for a model
    whose detail cap wraps the descriptor model (``agegender cap-detail``: image -> DetailCap -> inner model)."""
    inputs = model.get_layer("age_dist").input
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
        return keras.Model(model.input, inputs)
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    capped = model.get_layer("detail_cap")(model.input)
    return keras.Model(model.input, mixture_parts(inner)(capped))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fgnet")
    parser.add_argument("--model", default="models/agenet.keras")
    args = parser.parse_args()
    model, card = load_model(args.model)
    parts = mixture_parts(model)
    predictor = Predictor.load(args.model)
    crops, fg_ages = model_inputs(predictor, args.fgnet)
    frame = load_utkface()
    val = frame[frame["split"] == "val"]
    val_images, val_rows, _ = load_split_arrays(val, card["input"]["image_size"], card["input"]["color_mode"],
                                                resize=input_resize(card), progress=False)
    sets = {"val": (val_images, val_rows["age"].to_numpy(float)), "fgnet": (crops, fg_ages)}
    outs = {name: [np.asarray(v) for v in parts.predict(x.astype("float32"), batch_size=64, verbose=0)]
            for name, (x, _) in sets.items()}
    print(f"model weight of AgeNet's distribution: {card['face_descriptor']['age_head']['agenet_dist_weight']}")
    for w in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0):
        line = [f"w={w:.1f}"]
        for name, (_, ages) in sets.items():
            agenet, heads = outs[name]
            err = medians(w * agenet + (1 - w) * heads) - ages
            line.append(f"{name} MAE {np.abs(err).mean():.2f} bias {err.mean():+.2f}")
        print("  ".join(line), flush=True)


if __name__ == "__main__":
    main()
