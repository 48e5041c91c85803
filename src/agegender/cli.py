"""Command line: ``agegender train | train-vgg16 | add-descriptor | cap-detail | evaluate | calibrate-gender |
flag-labels | export | promote | predict | predict-batch``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import GENDER_HEADS, MB, MODELS_DIR, RUNS_DIR, default_model_path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
#: What `pip install .[train]` adds and `pip install .` (serving) leaves out.
TRAINING_PACKAGES = frozenset({"tensorflow", "keras", "matplotlib", "seaborn", "tqdm", "papermill"})


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(items: list[str] | None, option: str) -> dict:
    """``["epochs=5", "name=x"]`` -> ``{"epochs": 5, "name": "x"}`` (values parsed as JSON where they are JSON)."""
    values = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        values[key.replace("-", "_")] = _parse_value(value)
    return values


#: Commands that make a model print its val figures only: models are chosen on val, and test is read once, for a
#: model that is promoted (it is in the card: `agegender evaluate --model ...` prints it).
VAL_ONLY = "test figures are in the card, for the model you promote"


def _output_dir(chosen: str | None, name: str) -> Path:
    """Where a command writes the model it makes: the folder asked for, else ``runs/<name>/``, never ``models/``
    (only ``agegender promote`` changes the shipped models)."""
    return Path(chosen) if chosen else RUNS_DIR / name


def _train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .training.recipe import run_recipe

    values = {**(TrainConfig.from_json(args.config).to_dict() if args.config else {}), **_key_values(args.set, "--set")}
    model_args = _key_values(args.model_arg, "--model-arg")
    if model_args:
        values["model_kwargs"] = {**values.get("model_kwargs", {}), **model_args}
    config = TrainConfig.from_dict(values)
    card = run_recipe(config, args.data, out_dir=_output_dir(args.models_dir, config.output_name),
                      runs_dir=Path(args.runs_dir), fresh=args.fresh, verbose=2)
    val = card["metrics"]["val"]
    print(f"{card['name']}: val age MAE {val['age_mae']:.2f} y, gender accuracy {100 * val['gender_accuracy']:.1f} % "
          f"({card['training']['epochs_completed']} epochs, {card['training']['wall_seconds'] / 60:.1f} min; "
          f"{VAL_ONLY})")
    return 0


def _train_vgg16(args: argparse.Namespace) -> int:
    import dataclasses

    from .models.transfer import VGG16Recipe, train_vgg16_two_phase

    values = _key_values(args.set, "--set")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(VGG16Recipe)})
    if unknown:
        raise ValueError(f"unknown VGG16 recipe settings: {', '.join(unknown)}")
    recipe = dataclasses.replace(VGG16Recipe(weights=None if args.weights == "none" else args.weights), **values)
    card = train_vgg16_two_phase(recipe, args.data, models_dir=_output_dir(args.models_dir, recipe.name),
                                 runs_dir=Path(args.runs_dir))
    val = card["metrics"]["val"]
    print(f"{card['name']}: val age MAE {val['age_mae']:.2f} y, gender accuracy {100 * val['gender_accuracy']:.1f} % "
          f"({VAL_ONLY})")
    return 0


def _add_descriptor(args: argparse.Namespace) -> int:
    from .models.add_descriptor import add_descriptor

    card = add_descriptor(args.model, args.name, args.data, models_dir=_output_dir(args.models_dir, args.name),
                          weights=args.weights,
                          age_head=not args.no_age_head, gender_head=args.gender_head, mirror=not args.no_mirror,
                          augment=args.augment)
    val = card["metrics"]["val"]
    age_head = card["face_descriptor"].get("age_head")
    age_weight = f", of AgeNet's age distribution {age_head['agenet_dist_weight']}" if age_head else ""
    print(f"{card['name']}: {card['base_model']['file']} + face descriptor (weight of AgeNet's logit "
          f"{card['face_descriptor']['agenet_logit_weight']}{age_weight}, chosen on val); val age MAE {val['age_mae']:.2f} y, "
          f"gender {100 * val['gender_accuracy']:.2f} % ({card['training']['wall_seconds'] / 60:.1f} training minutes in "
          f"all; {VAL_ONLY})")
    return 0


def _cap_detail(args: argparse.Namespace) -> int:
    from .training.cap_detail import cap_detail

    card = cap_detail(args.model, args.side, args.name, args.data, models_dir=_output_dir(args.models_dir, args.name))
    val, base = card["metrics"]["val"], card["detail_cap"]["base_model"]["metrics"]["val"]
    print(f"{card['name']}: {card['detail_cap']['base_model']['file']} with its inputs' detail capped at "
          f"{args.side} px; val age MAE {val['age_mae']:.3f} y (uncapped {base['age_mae']:.3f}), gender "
          f"{100 * val['gender_accuracy']:.2f} % ({100 * base['gender_accuracy']:.2f}); {VAL_ONLY}")
    return 0


def _update_card(args: argparse.Namespace) -> int:
    from .config import default_model_path
    from .training.remeasure import remeasure_card

    if args.all:
        raise ValueError("--update-card measures the card's val and test splits; it does not go with --all")
    path = Path(args.model) if args.model else default_model_path()
    card = remeasure_card(path, args.folder)
    counts = card["evaluated_on"]["used_counts"]
    for split in ("val", "test"):
        metrics = card["metrics"][split]
        print(f"{card['name']} {split} ({counts[split]:,} faces): age MAE {metrics['age_mae']:.3f} y, gender "
              f"{100 * metrics['gender_accuracy']:.2f} %")
    print(f"written to the card beside {path} (the figures replaced are kept as metrics_before_remeasure)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.photos:
        return _evaluate_photos(args)
    if args.labels or args.predictions:
        raise ValueError("--labels and --predictions go with --photos (a folder of whole photos and a labels CSV)")
    if args.update_card:
        return _update_card(args)
    from .evaluation.metrics import evaluate_folder, format_report

    metrics = evaluate_folder(args.folder, args.model, use_all=args.all)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_report(metrics, f"{metrics['model']} on the {metrics['subset']} images of {metrics['folder']}"))
    return 0


def _evaluate_photos(args: argparse.Namespace) -> int:
    from .evaluation.photos import evaluate_photos, format_photo_report

    if not args.folder:
        raise ValueError("--photos needs the folder of photos")
    if args.all:
        raise ValueError("--all is for UTKFace folders; --photos evaluates every labelled photo")
    metrics, frame = evaluate_photos(args.folder, args.labels, model_path=args.model, progress=not args.json,
                                     with_predictions=True)
    if args.predictions:
        frame.to_csv(args.predictions, index=False)
    print(json.dumps(metrics, indent=2) if args.json else format_photo_report(metrics))
    return 0


def _calibrate_gender(args: argparse.Namespace) -> int:
    from .serving.gender_confidence import calibrate_model, format_section, write_to_card

    path = Path(args.model) if args.model else default_model_path()
    section = calibrate_model(path, args.data, method=args.method, target=args.target)
    print(format_section(section))
    if args.dry_run:
        print("not written (--dry-run)")
    else:
        write_to_card(path, section)
        print(f"written to the card beside {path} as gender_confidence")
    return 0


def _flag_labels(args: argparse.Namespace) -> int:
    from .training.flag_labels import flag_label_errors

    flagged = flag_label_errors(args.out, model_path=args.model, data_dir=args.data, threshold=args.threshold,
                                progress=True)
    print("\n".join(flagged.header))
    print(f"written to {flagged.path}; leave them out of a run with --set exclude_faces={args.out}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from .serving.promote import promote

    result = promote(args.source, Path(args.models_dir), require_export=not args.without_export, name=args.name)

    def figures(values):
        return ", ".join(f"{split} {values[split]['age_mae']:.2f} y / {100 * values[split]['gender_accuracy']:.2f} %"
                         for split in ("val", "test") if values[split]["age_mae"] is not None)

    if result["before"]:
        print(f"replaced {result['model']}: was {figures(result['before'])}")
    print(f"promoted {result['model']}: {figures(result['after'])}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .serving.export import export_with_test_images

    model_path = Path(args.model or default_model_path())
    record = export_with_test_images(model_path, args.data, check_images=args.check_images,
                                     quantization=args.quantization)
    check_info = record["check"]
    differences = [f"ages by {check_info['mean_age_diff_years']:.3f} years on average "
                   f"and <= {check_info['max_age_diff_years']:.3f}",
                   f"P(female) by <= {check_info['max_p_female_diff']:.4f}"]
    if "max_age_dist_tv" in check_info:  # models that predict an age distribution
        differences.append(f"age distributions by <= {check_info['max_age_dist_tv']:.4f} (total variation)")
    print(f"{model_path.with_name(record['file'])}: {record['bytes'] / MB:.1f} MB ({record['quantization']}); "
          f"on {check_info['images']} images it differs from the model: {', '.join(differences)}; gender agrees on "
          f"{100 * check_info['gender_agreement']:.1f} %")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .serving.predict import Predictor, format_results

    predictor = Predictor.load(args.model)
    results = predictor.predict_files(args.images, aligned=args.aligned, annotate_dir=args.annotate)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    ok = any("faces" in r for r in results)
    return 0 if ok else 1


def _predict_batch(args: argparse.Namespace) -> int:
    from .serving.batch import predict_batch

    try:
        summary = predict_batch(args.sources, args.output, aligned=args.aligned, model_path=args.model,
                                ray_address=args.ray_address, num_workers=args.num_workers,
                                batch_size=args.batch_size, part_size=args.part_size, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: the parts written so far are complete; run the same command again to go on",
              file=sys.stderr)
        return 130
    print(summary)
    return 0 if summary.total_face_rows else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agegender", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (resumes an interrupted run of the same config)")
    p.add_argument("--config", help="JSON file with TrainConfig fields (see agegender.config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config field, e.g. --set epochs=5")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="keyword argument for the model builder")
    p.add_argument("--data", help="UTKFace folder (default: $UTKFACE_DIR, data/UTKFace, data/sample)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start again")
    p.add_argument("--models-dir", help="where the final model and card go (default: runs/NAME/; models/ changes only "
                                        "by `agegender promote`)")
    p.add_argument("--runs-dir", default=str(RUNS_DIR), help="checkpoints and history (default: runs/)")
    p.set_defaults(func=_train)

    p = sub.add_parser("train-vgg16", help="VGG16 transfer learning, two phases (heads, then block5)")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (Keras download, cached in ~/.keras/models), a local VGG16 notop .h5 file, "
                        "or 'none' (random weights: tests only)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a VGG16Recipe field, e.g. --set head_epochs=3 --set limit=64")
    p.add_argument("--data", help="UTKFace folder (default: $UTKFACE_DIR, data/UTKFace, data/sample)")
    p.add_argument("--models-dir", help="where the model and card go (default: runs/NAME/)")
    p.add_argument("--runs-dir", default=str(RUNS_DIR))
    p.set_defaults(func=_train_vgg16)

    p = sub.add_parser("add-descriptor",
                       help="a trained AgeNet plus dlib's face descriptor for gender and age, as one model")
    p.add_argument("model", help="the trained AgeNet .keras file (served with its mirror view)")
    p.add_argument("--name", required=True, help="the new model's name: written as runs/NAME/NAME.keras")
    p.add_argument("--data", help="UTKFace folder the model was trained on (default: as for train)")
    p.add_argument("--models-dir", help="where the new model and card go (default: runs/NAME/)")
    p.add_argument("--weights", help="face-recognition weights (default: models/pretrained/, make face-recognition-net)")
    p.add_argument("--gender-head", choices=GENDER_HEADS, default="mlp",
                   help="the descriptor network's gender: MLP heads on its inner features (default) or a logistic "
                        "regression on its 128-D descriptor (the default before 2026-12-05 08:40)")
    p.add_argument("--no-mirror", action="store_true",
                   help="AgeNet on the face alone, not also on its mirror image (about 3 ms less per face)")
    p.add_argument("--augment", action="store_true",
                   help="fit the heads on augmented copies of the training faces (AgeNet's own augmentations)")
    p.add_argument("--no-age-head", action="store_true",
                   help="gender only: no age head on the descriptor's inner features (AgeNet's ages unchanged)")
    p.set_defaults(func=_add_descriptor)

    p = sub.add_parser("cap-detail", help="a trained model with every input's detail capped at N px (in the graph)")
    p.add_argument("model", help="the trained .keras file")
    p.add_argument("--side", type=int, required=True,
                   help="shrink each input to this side (area) and enlarge it back (bilinear): the default recipe "
                        "uses 80 for 128 px faces (research/domain_robustness.md)")
    p.add_argument("--name", required=True, help="the new model's name: written as runs/NAME/NAME.keras")
    p.add_argument("--data", help="UTKFace folder the model was trained on (default: as for train)")
    p.add_argument("--models-dir", help="where the new model and card go (default: runs/NAME/)")
    p.set_defaults(func=_cap_detail)

    p = sub.add_parser("evaluate", help="metrics on the test split of a UTKFace folder, or on labelled photos (--photos)")
    p.add_argument("folder", nargs="?", help="UTKFace folder (default: $UTKFACE_DIR, data/UTKFace, data/sample)")
    p.add_argument("--model", help="model .keras file (default: models/agenet.keras, the default model)")
    p.add_argument("--all", action="store_true", help="evaluate on every image of the folder, not just the test split")
    p.add_argument("--photos", action="store_true",
                   help="FOLDER holds whole photos labelled in a CSV (see --labels): detect, crop and predict the "
                        "largest face of each, as `agegender predict` does")
    p.add_argument("--labels", metavar="FILE.csv",
                   help="with --photos: columns file,age[,gender][,subject] (default: FOLDER/labels.csv)")
    p.add_argument("--predictions", metavar="OUT.csv", help="with --photos: also write one row per photo here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--update-card", action="store_true",
                   help="measure the model's val and test figures again on today's splits (after the split rules "
                        "change) and store them in its card")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("calibrate-gender",
                       help="fit the gender confidence's calibration and its 'uncertain' threshold on val, measure "
                            "them on test, and store them in the model's card (read by the app)")
    p.add_argument("--model", help="model .keras file (default: models/agenet.keras, the default model); its TFLite "
                                   "export is measured when that is what serves it")
    p.add_argument("--data", help="the UTKFace folder it was trained on (default: $UTKFACE_DIR, data/UTKFace, "
                                  "data/sample)")
    p.add_argument("--method", choices=["temperature", "platt"], default="temperature",
                   help="temperature scaling of P(female)'s logit (keeps the model's label; default) or Platt "
                        "scaling (a scale and a shift)")
    p.add_argument("--target", type=float, default=0.95,
                   help="accuracy the faces given a gender must reach in every age band on val (default 0.95)")
    p.add_argument("--dry-run", action="store_true", help="print the figures, do not write the card")
    p.set_defaults(func=_calibrate_gender)

    p = sub.add_parser("flag-labels",
                       help="list the training faces whose gender label a trained model still confidently "
                            "contradicts (likely label errors), for the training setting exclude_faces")
    p.add_argument("--model", help="a model trained on the folder's training split (default: models/agenet.keras)")
    p.add_argument("--data", help="the UTKFace folder (default: $UTKFACE_DIR, data/UTKFace, data/sample)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="P(the other gender) above which a face is listed (0.5-1; default 0.8)")
    p.add_argument("--out", required=True, help="the list to write, e.g. data/label_flags/agenet_gender_0.8.txt")
    p.set_defaults(func=_flag_labels)

    p = sub.add_parser("promote", help="make a trained model (a run folder or its .keras file) a shipped one in models/")
    p.add_argument("source", help="a run folder (runs/NAME/) or the .keras file a run wrote")
    p.add_argument("--models-dir", default=str(MODELS_DIR), help="the shipped models' folder (default: models/)")
    p.add_argument("--name", help="ship it under this name (e.g. agenet, the default model); default: its own")
    p.add_argument("--without-export", action="store_true",
                   help="promote a model that has no TFLite export (served by Keras; the seed CNN)")
    p.set_defaults(func=_promote)

    p = sub.add_parser("export", help="write a TFLite copy of a model (float16 weights), used for serving")
    p.add_argument("--model", help="model .keras file (default: models/agenet.keras, the default model)")
    p.add_argument("--data", help="UTKFace folder whose test images check the export (default: as for train)")
    p.add_argument("--check-images", type=int, default=256, help="how many test images to compare on")
    p.add_argument("--quantization", default="float16", choices=["float16", "none"])
    p.set_defaults(func=_export)

    p = sub.add_parser("predict", help="age and gender for images")
    p.add_argument("images", nargs="+", help="image files, or folders of them (the images directly inside)")
    p.add_argument("--model", help="model .keras file (default: models/agenet.keras, the default model)")
    p.add_argument("--aligned", action="store_true", help="each image is already a face crop as in UTKFace")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write annotated copies of the images here")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=_predict)

    p = sub.add_parser("predict-batch", help="age and gender for many photos on Ray Data, into Parquet (resumable)",
                       description="Predict many photos with Ray Data (reading and decoding in tasks, the detector "
                                   "and model in a pool of actors) into a folder of Parquet parts, one row per face "
                                   "and one per photo without a usable face. Running the same command again "
                                   "skips the photos already in the output. Needs pip install .[cluster].")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="folders (the images directly inside), globs, image files, or .txt/.lst files listing "
                        "paths one a line (relative to the list's folder)")
    p.add_argument("--output", required=True, metavar="OUT.parquet",
                   help="the output folder of Parquet parts (created; an existing one is resumed)")
    p.add_argument("--aligned", action="store_true", help="each image is already a face crop as in UTKFace")
    p.add_argument("--model", help="model .keras file (default: models/agenet.keras, the default model)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="a running Ray cluster (e.g. auto or HOST:6379 after `ray start --head`); "
                        "default: an embedded Ray on this machine")
    p.add_argument("--num-workers", type=int, default=1, metavar="N",
                   help="actors that each load the detector and the model (default: 1)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="photos per batch (default: 16)")
    p.add_argument("--part-size", type=int, default=1000, metavar="P",
                   help="photos per Parquet part: the most a crash loses (default: 1000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "train" else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .serving.modelio import ModelFileError

    try:
        return args.func(args)
    except (ModelFileError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in TRAINING_PACKAGES:
            raise
        print(f"error: `agegender {args.command}` needs {exc.name}, which the serving install (`pip install .`) "
              "leaves out: pip install '.[train]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
