"""How small the default's weights can be stored, and what each size costs: weight-only quantization, measured.

A probe, not a product. ``quantization_probe.py`` measured int8 *ops* (activations quantized too). This one keeps
every op in float and changes only the stored weights, as "Deep Compression" (Han et al., 2016) does with weight
sharing: each kernel of at least ``--min-size`` values is replaced by

- ``int8`` / ``int6`` / ``int5``: a symmetric linear grid of that many bits, one scale per output channel;
- ``k-means 4``: 16 shared values per kernel (1-D k-means on the kernel divided by each output channel's RMS,
  so that channels of small weights keep their own resolution), one scale per output channel;

and every other weight (biases, batch norm, small kernels) by its float16 value. ``float16`` rounds every weight
that way (the level of ``agegender export``). ``only <part>`` quantizes the kernels of one part of the model
(the EfficientNet backbone, the face-descriptor ResNet or the heads) and rounds the rest to float16.

Per variant: the stored size (the codes of the quantized kernels packed at their bit width and LZMA-compressed,
plus 2 bytes per scale, shared value and float16 weight; for ``float16``, 2 bytes per weight; MB as everywhere
in this project: 2**20 bytes) and, served as the card says on val and test, age MAE, gender accuracy, 60+ MAE and
how far each face's prediction moves from the unquantized model's (mean and largest age difference, share of faces
given the same gender).

    UTKFACE_DIR=/path/to/UTKFace python research/probes/weight_sharing_probe.py [--model models/agenet.keras]
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # _splits, results_table

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _splits import predict_model_splits  # noqa: E402
from quantization_probe import figures  # noqa: E402
from results_table import markdown  # noqa: E402

from agegender.config import default_model_path  # noqa: E402
from agegender.serving.modelio import load_model  # noqa: E402

#: top-level layer-name prefixes of the model's parts (the rest are heads)
PARTS = {"backbone": ("stem", "block", "top_"), "descriptor": ("conv32", "conv64", "conv128", "conv256", "fc")}
VARIANTS = ("float16", "int8", "int6", "int5", "k-means 4", "only backbone int5", "only descriptor int5",
            "only heads int5", "only backbone int8", "only descriptor int8")


def part_of(path: str) -> str:
    top = path.split("/")[0]
    return next((part for part, prefixes in PARTS.items() if top.startswith(prefixes)), "heads")


def channel_scale(kernel: np.ndarray, how: str) -> np.ndarray:
    """One scale per output channel (the last axis of Keras kernels): its largest magnitude or its RMS."""
    axes = tuple(range(kernel.ndim - 1))
    scale = np.abs(kernel).max(axis=axes, keepdims=True) if how == "max" else np.sqrt((kernel ** 2).mean(axis=axes, keepdims=True))
    return np.where(scale == 0, 1.0, scale)


def linear_codes(kernel: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed integer codes on a symmetric grid, and the kernel they stand for."""
    step = channel_scale(kernel, "max") / (2 ** (bits - 1) - 1)
    codes = np.round(kernel / step).astype(np.int64)
    return codes - codes.min(), (codes * step).astype(np.float32)


def kmeans_codes(kernel: np.ndarray, bits: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Indices into 2**bits shared values (1-D k-means, started at quantiles), and the kernel they stand for."""
    scale = channel_scale(kernel, "rms")
    values = np.sort((kernel / scale).ravel())
    sums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    centres = np.quantile(values, (np.arange(2 ** bits) + 0.5) / 2 ** bits)
    for _ in range(iterations):
        bounds = np.concatenate([[0], np.searchsorted(values, (centres[1:] + centres[:-1]) / 2), [len(values)]])
        counts = np.diff(bounds)
        moved = np.where(counts > 0, (sums[bounds[1:]] - sums[bounds[:-1]]) / np.maximum(counts, 1), centres)
        if np.allclose(moved, centres):
            break
        centres = np.sort(moved)
    codes = np.searchsorted((centres[1:] + centres[:-1]) / 2, kernel / scale)
    return codes, (centres[codes] * scale).astype(np.float32)


Coder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def quantizer(variant: str) -> tuple[str | None, Coder | None, int, int]:
    """Of a variant's name: the only part quantized (None: all), the coding function, its bits, and how many shared
    values each kernel stores beside its codes (k-means' centres; none for a linear grid)."""
    if variant == "float16":
        return None, None, 16, 0
    part = variant.split()[1] if variant.startswith("only ") else None
    kind = variant.split()[-1] if part else variant
    if kind.startswith("int"):
        bits = int(kind[3:])
        return part, lambda w: linear_codes(w, bits), bits, 0
    bits = int(kind.split()[-1])
    return part, lambda w: kmeans_codes(w, bits), bits, 2 ** bits


def quantize(model, originals: list[np.ndarray], variant: str, min_size: int) -> float:
    """Assign the variant's weights to ``model``; return their stored size in MB."""
    part, code, bits, shared_values = quantizer(variant)
    packed, small = [], 0
    for variable, original in zip(model.weights, originals):
        if code is not None and original.ndim >= 2 and original.size >= min_size and part in (None, part_of(variable.path)):
            codes, weights = code(original)
            packed.append(np.packbits(((codes.ravel()[:, None] >> np.arange(bits)) & 1).astype(np.uint8)))
            small += original.shape[-1] + shared_values  # the channel scales and shared values, float16
        else:
            weights = original.astype(np.float16).astype(np.float32)
            small += original.size
        variable.assign(weights)
    stored = len(lzma.compress(np.concatenate(packed).tobytes(), preset=6)) if packed else 0
    return (stored + 2 * small) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--min-size", type=int, default=4096, help="kernels with fewer values stay float16")
    args = parser.parse_args()

    model, card = load_model(args.model)
    originals = [variable.numpy() for variable in model.weights]
    reference = predict_model_splits(model, card)
    float32_mb = 4 * sum(w.size for w in originals) / 2 ** 20
    rows = {"float32 (the Keras model)": {"stored MB": float32_mb, **{f"{split} {k}": v for split in reference
                                           for k, v in figures(reference[split], reference[split]).items()}}}
    for variant in args.variants.split(","):
        row = {"stored MB": quantize(model, originals, variant.strip(), args.min_size)}
        for split, pred in predict_model_splits(model, card).items():
            row.update({f"{split} {k}": v for k, v in figures(pred, reference[split]).items()})
        rows[variant.strip()] = row
        print(variant, {k: round(v, 3) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows).T.astype(float).round(3)
    print(f"\nmodel {args.model}; kernels of at least {args.min_size} values quantized, the rest float16")
    print(markdown(table, list(table.columns)))


if __name__ == "__main__":
    main()
