"""Where one face's time goes in a model that runs AgeNet and dlib's network in one graph (``add-descriptor``).

    python benchmarks/parts_speed.py [--model models/agenet.keras] [--repeats 300] [--rounds 3]

Each part is exported to float16 TFLite as ``agegender export`` does and timed on one face (median of
``--repeats`` calls, with the threads serving uses: one per CPU):

- AgeNet with its views (the face and its mirror, as one batch of two, when the model holds the mirror),
- dlib's face-recognition network up to the features the heads read,
- the two parts alternating, one call of each per face, as two interpreters,
- both networks in one graph without the heads,
- the whole model's export as served (``models/agenet.tflite``), heads and read-out included.

Each part's own loop keeps its weights in the processor's cache between calls; alternating the two evicts
them, so "alternating" minus the two parts alone is the price of running both on one face. The figures are
the host's, so compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from _timing import median_ms  # noqa: E402
from agegender.config import default_model_path  # noqa: E402
from agegender.serving.export import convert  # noqa: E402
from agegender.serving.litert import TFLiteModel  # noqa: E402
from agegender.serving.modelio import load_model, load_serving_model  # noqa: E402

PARTS = ("agenet", "face_descriptor")


def network_parts(model: keras.Model) -> dict[str, keras.Model]:
    """The model's two networks as models of the same face input: AgeNet with the views the model gives it,
    dlib's network with every output it has, and both in one graph without what comes after them."""
    names = {layer.name for layer in model.layers}
    missing = [name for name in PARTS if name not in names]
    if missing:
        raise ValueError(f"{model.name} has no {' or '.join(missing)} layer: not a model built by add-descriptor")
    face = keras.Input(model.input_shape[1:], name="image")
    views = model.get_layer("mirror_views")(face) if "mirror_views" in names else face
    agenet = model.get_layer("agenet")(views)
    descriptor = model.get_layer("face_descriptor")(face)
    descriptor = descriptor if isinstance(descriptor, dict) else {"descriptor": descriptor}
    return {"agenet": keras.Model(face, agenet, name="agenet_views"),
            "face_descriptor": keras.Model(face, descriptor, name="face_descriptor_alone"),
            "both": keras.Model(face, {**{f"agenet_{k}": v for k, v in agenet.items()}, **descriptor},
                                name="both_networks")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    served, _ = load_serving_model(args.model)  # the export, when it is the one made from this Keras file
    if not isinstance(served, TFLiteModel):
        raise SystemExit(f"{args.model} has no current TFLite export; run agegender export --model {args.model} first")
    model, _ = load_model(args.model)
    face = np.random.default_rng(0).uniform(0, 255, (1, *model.input_shape[1:])).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        lite = {}
        for name, part in network_parts(model).items():
            path = Path(folder) / f"{name}.tflite"
            path.write_bytes(convert(part))
            lite[name] = TFLiteModel(path)  # threads as serving sets them
        lite["served"] = served
        calls = {"AgeNet with its views": lambda: lite["agenet"].infer(face),
                 "dlib's network": lambda: lite["face_descriptor"].infer(face),
                 "the two alternating": lambda: (lite["agenet"].infer(face), lite["face_descriptor"].infer(face)),
                 "both in one graph, no heads": lambda: lite["both"].infer(face),
                 f"the served export ({served.path.name})": lambda: lite["served"].infer(face)}
        medians: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                medians[name].append(median_ms(call, args.repeats))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {args.model}; one face, medians of {args.repeats} calls per round, {args.rounds} rounds, "
          f"{os.cpu_count()} threads, load average {load:.1f} at the end")
    for name, values in medians.items():
        print(f"{name:<40} " + "  ".join(f"{v:5.2f}" for v in values) + " ms")
    alone = [a + d for a, d in zip(medians["AgeNet with its views"], medians["dlib's network"])]
    print(f"{'sum of the two alone':<40} " + "  ".join(f"{v:5.2f}" for v in alone) + " ms")


if __name__ == "__main__":
    main()
