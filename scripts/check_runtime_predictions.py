"""Check that serving on LiteRT (``pip install .``) predicts what serving on TensorFlow's tf.lite did.

    UTKFACE_DIR=... FGNET_DIR=... .venv/bin/python scripts/check_runtime_predictions.py \\
        --before .venv/bin/python --after .venv-runtime/bin/python

Both interpreters run the same export (default: the default model, which serves ``models/agenet.tflite``) in a
fresh process each: ``--before`` with ``AGEGENDER_TFLITE_RUNTIME=tensorflow`` (how serving ran before LiteRT),
``--after`` with ``litert``. Compared: every UTKFace test-split crop through ``agegender predict --aligned``, and,
with ``--photos`` (default ``$FGNET_DIR/images``), every whole photo through the detector and the crop. The check
fails (exit 1) if an age moves by more than ``--max-age-diff`` years (default 0.01), a gender flips, or the faces
found differ. ``--before-src`` runs the ``--before`` side on another copy of ``src/`` (e.g. ``git archive`` of an
older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def predict_files(files: list[str], aligned: bool, model: str | None) -> list[dict]:
    """``agegender predict --json [--aligned]`` on ``files``, in this process (the child's side)."""
    from agegender.serving.predict import Predictor

    return Predictor.load(model).predict_files(files, aligned=aligned)


def run_side(python: str, runtime: str, files: list[str], aligned: bool, model: str | None,
             src: str | None) -> list[dict]:
    """:func:`predict_files` in a fresh ``python`` process on ``runtime`` (litert or tensorflow)."""
    with tempfile.TemporaryDirectory() as folder:
        request, answer = Path(folder) / "files.json", Path(folder) / "results.json"
        request.write_text(json.dumps({"files": files, "aligned": aligned, "model": model}))
        env = {**os.environ, "AGEGENDER_TFLITE_RUNTIME": runtime, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if src:
            env["PYTHONPATH"] = src
        subprocess.run([python, __file__, "--child", str(request), str(answer)], check=True, env=env)
        return json.loads(answer.read_text())


def compare(before: list[dict], after: list[dict]) -> dict:
    """Largest age and P(gender) differences, gender flips and images whose faces differ."""
    ages, probs, flips, differ = [0.0], [0.0], 0, []
    for old, new in zip(before, after, strict=True):
        old_faces, new_faces = old.get("faces", []), new.get("faces", [])
        if len(old_faces) != len(new_faces) or ("error" in old) != ("error" in new):
            differ.append(old["path"])
            continue
        for a, b in zip(old_faces, new_faces):
            if max(abs(x - y) for x, y in zip(a["box"], b["box"])) > 1:
                differ.append(old["path"])
            ages.append(abs(a["age"] - b["age"]))
            flips += a["gender"] != b["gender"]
            if a["gender"] == b["gender"]:
                probs.append(abs(a["gender_probability"] - b["gender_probability"]))
    return {"images": len(before), "faces": len(ages) - 1, "max_age_diff": max(ages), "gender_flips": flips,
            "max_gender_probability_diff": max(probs), "faces_differ": differ}


def test_split_files(data_dir: str | None) -> list[str]:
    from agegender.data import load_utkface

    frame = load_utkface(data_dir)
    return [str(p) for p in frame.loc[frame["split"] == "test", "path"]]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        request = json.loads(Path(sys.argv[2]).read_text())
        Path(sys.argv[3]).write_text(json.dumps(predict_files(request["files"], request["aligned"], request["model"])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=str(REPO / ".venv" / "bin" / "python"), help="Python with TensorFlow")
    parser.add_argument("--after", default=str(REPO / ".venv-runtime" / "bin" / "python"), help="Python with LiteRT")
    parser.add_argument("--before-src", help="PYTHONPATH of the --before side (default: its installed agegender)")
    parser.add_argument("--model", help="model file (default: the default model)")
    parser.add_argument("--data", help="UTKFace folder (default: $UTKFACE_DIR)")
    parser.add_argument("--photos", default=os.environ.get("FGNET_DIR") and os.path.join(os.environ["FGNET_DIR"], "images"),
                        help="a folder of whole photos (default: $FGNET_DIR/images); '' to skip")
    parser.add_argument("--max-age-diff", type=float, default=0.01)
    args = parser.parse_args()
    jobs = [("UTKFace test split, aligned crops", test_split_files(args.data), True)]
    if args.photos:
        jobs.append((f"whole photos of {args.photos}", sorted(str(p) for p in Path(args.photos).iterdir()), False))
    ok = True
    for title, files, aligned in jobs:
        before = run_side(args.before, "tensorflow", files, aligned, args.model, args.before_src)
        after = run_side(args.after, "litert", files, aligned, args.model, None)
        result = compare(before, after)
        passed = (result["max_age_diff"] <= args.max_age_diff and not result["gender_flips"]
                  and not result["faces_differ"])
        ok &= passed
        print(f"{title}: {result['images']} images, {result['faces']} faces; ages differ by <= "
              f"{result['max_age_diff']:.5f} y, P(gender) by <= {result['max_gender_probability_diff']:.6f}, "
              f"{result['gender_flips']} genders flipped, {len(result['faces_differ'])} images with other faces "
              f"found: {'same' if passed else 'DIFFERENT'}", flush=True)
        for path in result["faces_differ"][:10]:
            print(f"  faces differ: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
