"""Training: config -> cached arrays -> tf.data -> fit with per-epoch checkpoints -> model + card.

Run state lives in ``runs/<name>/``: ``checkpoint.keras`` (model and optimizer,
written atomically after every epoch), ``state.json`` (epochs done, wall time,
history) and ``config.json``. Running the same command again resumes from the
last completed epoch.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ..config import MODELS_DIR, RUNS_DIR, TrainConfig, project_path, resolve_data_dir
from ..data.cleaning import FaceListError, read_face_list
from ..data.images import channels
from ..data.pipeline import age_balance_weights, make_dataset
from ..data.preprocess import load_split_arrays
from ..data.utkface import SPLIT_FRACTIONS, SkipReport, dataset_fingerprint, load_utkface, split_counts, spread_subset
from ..evaluation.metrics import calibrate_range, evaluate_predictions
from ..models.builders import AGE_READOUTS, SIZE_FLEXIBLE, build_model, with_age_readout
from ..serving.inference import RANGE_QUANTILES, predict_arrays, tta_settings
from ..serving.modelio import save_model_atomic, write_json_atomic
from .distribution import (Distribution, check_workers_agree, chief_value, distribution_for, float32_config,
                           output_folder, run_folder)
from .schedules import BudgetedCosineDecay
from .teacher import (DESCRIPTOR_OUTPUT, TeacherError, descriptor_targets, distilled_gender_targets,
                      gender_probabilities, load_descriptors, mixed_faces,
                      with_descriptor_head, without_training_heads)

log = logging.getLogger(__name__)


def training_sample_weights(config: TrainConfig, ages: np.ndarray,
                            outputs: Collection[str]) -> np.ndarray | dict[str, np.ndarray] | None:
    """The loss weights of ``age_balance``: one array for every head, or one per output when the gender
    loss balances by a power of its own (``age_balance_gender``); None when nothing is weighted.

    A shared power keeps the single array, so recipes without ``age_balance_gender`` train as before.
    """
    gender_power = config.age_balance if config.age_balance_gender is None else config.age_balance_gender
    if gender_power == config.age_balance:
        if not config.age_balance:
            return None
        return age_balance_weights(ages, config.age_balance, config.age_balance_bin_years)
    age_weights = age_balance_weights(ages, config.age_balance, config.age_balance_bin_years)
    weights = {name: age_weights for name in outputs}
    weights["gender_out"] = age_balance_weights(ages, gender_power, config.age_balance_bin_years)
    return weights


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr: Any = config.learning_rate
    if config.schedule == "cosine":
        total = max(1, config.epochs * steps_per_epoch)
        warmup = int(config.warmup_epochs * steps_per_epoch)
        lr = BudgetedCosineDecay(
            initial_learning_rate=config.learning_rate * (0.01 if warmup else 1.0), decay_steps=total - warmup,
            alpha=0.01, warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    elif config.schedule != "constant":
        raise ValueError(f"schedule must be 'constant' or 'cosine', not {config.schedule!r}")
    ema = {"use_ema": True, "ema_momentum": config.ema_momentum} if config.ema_momentum else {}
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay, **ema)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, **ema)
    raise ValueError(f"optimizer must be 'adam' or 'adamw', not {config.optimizer!r}")


@keras.saving.register_keras_serializable(package="agegender")
def label_accuracy(y_true, y_pred):
    """Gender accuracy against the label behind a (possibly soft) target: the teacher's mixed targets stay on
    the label's side of 0.5, where ``BinaryAccuracy`` would count every non-0/1 target as wrong."""
    return keras.metrics.binary_accuracy(keras.ops.cast(y_true > 0.5, y_pred.dtype), y_pred)


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    losses = {"gender_out": keras.losses.BinaryCrossentropy(label_smoothing=config.gender_label_smoothing),
              "age_out": keras.losses.MeanAbsoluteError()}
    weights = {"gender_out": config.gender_loss_weight, "age_out": config.age_loss_weight}
    metrics = {"gender_out": [keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")],
               "age_out": [keras.metrics.MeanAbsoluteError(name="mae")]}
    if "age_dist" in model.output_names:
        # Label-distribution learning: KL to a Gaussian around the true age, plus L1 on its mean.
        losses["age_dist"] = keras.losses.KLDivergence()
        weights["age_dist"] = config.age_loss_weight
        weights["age_out"] = config.age_mean_loss_weight * config.age_loss_weight
    if DESCRIPTOR_OUTPUT in model.output_names:
        losses[DESCRIPTOR_OUTPUT] = keras.losses.MeanSquaredError()
        weights[DESCRIPTOR_OUTPUT] = config.descriptor_loss_weight
    model.compile(optimizer=_optimizer(config, steps_per_epoch), loss=losses, loss_weights=weights,
                  metrics=metrics)


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer and the run state after every epoch; enforces the wall-clock budget.

    ``stages`` is the whole run's plan (:func:`resolution_stages`): with progressive resizing one ``fit`` covers
    only a stage, and an epoch at a larger size takes longer than the ones before it. With ``shorten_schedule``
    (and a :class:`BudgetedCosineDecay` rate), a run forecast to overrun its budget ends its learning-rate decay
    at the last epoch that fits and stops there (``state["schedule_end_epoch"]``), instead of stopping with the
    rate still high.
    """

    clock = staticmethod(time.perf_counter)  # seconds; tests replace it to simulate slow epochs

    def __init__(self, run_dir: Path, state: dict, budget_seconds: float, stages: list[tuple[int, int]],
                 steps_per_epoch: int = 0, shorten_schedule: bool = False,
                 shared_seconds: Callable[[float], float] = float):
        super().__init__()
        self.run_dir, self.state, self.budget, self.stages = run_dir, state, budget_seconds, stages
        self.steps_per_epoch, self.shorten_schedule = steps_per_epoch, shorten_schedule
        self.shared_seconds = shared_seconds  # several workers: the chief's epoch time, so all decide alike
        self._epoch_start = 0.0
        self._timed_an_epoch = False

    def on_train_begin(self, logs=None):
        self._timed_an_epoch = False  # the first epoch of each fit() (each resizing stage, each resume) traces the graph

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.shared_seconds(self.clock() - self._epoch_start)
        self.state["elapsed_seconds"] += seconds
        self.state["epoch_seconds"].append(seconds)
        self.state["epochs_done"] = epoch + 1
        self.state["history"].append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        tracing = self.state.setdefault("tracing_epochs", [0])  # [0]: states written before the field existed
        if not self._timed_an_epoch and epoch not in tracing:
            tracing.append(epoch)
        self._timed_an_epoch = True
        self._fit_schedule_to_budget(epoch)  # before the checkpoint, which then holds the shortened schedule
        save_model_atomic(self.model, self.run_dir / "checkpoint.keras", deflate=False)
        write_json_atomic(self.run_dir / "state.json", self.state)
        pd.DataFrame(self.state["history"]).to_csv(self.run_dir / "history.csv", index=False)
        last = run_end_epoch(self.state, self.stages)
        if epoch + 1 >= last:  # the last epoch has no next one to skip
            if last < self.stages[-1][1]:
                log.warning("stopping after epoch %d of %d: the learning-rate schedule, shortened to fit the "
                            "%.0f-minute budget, has ended", epoch + 1, self.stages[-1][1], self.budget / 60)
                self._stop()
            return
        if not self.budget:
            return
        next_seconds = predicted_epoch_seconds(self.state["epoch_seconds"], self.stages,
                                               tracing=self.state["tracing_epochs"])
        if self.state["elapsed_seconds"] + next_seconds > self.budget:
            log.warning("stopping after epoch %d: the next epoch (about %.0f s) would exceed the %.0f-minute budget",
                        epoch + 1, next_seconds, self.budget / 60)
            if epoch_image_size(self.stages, epoch) < self.stages[-1][0]:
                log.warning("the model stops before any epoch at its full size (%d px): progressive_resizing "
                            "plans more small epochs than the budget leaves room for", self.stages[-1][0])
            self._stop()

    def _stop(self) -> None:
        self.state["stopped_by_budget"] = True
        write_json_atomic(self.run_dir / "state.json", self.state)
        self.model.stop_training = True

    def _fit_schedule_to_budget(self, epoch: int) -> None:
        """Shorten the learning-rate decay to the epochs the budget still has room for, if fewer than planned."""
        schedule = _budgeted_schedule(self.model.optimizer)
        last = run_end_epoch(self.state, self.stages)
        seconds, tracing = self.state["epoch_seconds"], self.state["tracing_epochs"]
        if (not (self.shorten_schedule and self.budget and self.steps_per_epoch) or schedule is None
                or epoch + 1 >= last or not steady_epochs(seconds, tracing)):
            return  # (a first epoch's time, tracing included, is no pace to cut a schedule by)
        fit = epochs_that_fit(seconds, self.stages, self.budget - self.state["elapsed_seconds"], tracing)
        if fit == 0 or epoch + 1 + fit >= last:
            return  # nothing fits (the budget stop handles it), or the plan fits
        new_last = epoch + 1 + fit
        schedule.finish_by((epoch + 1) * self.steps_per_epoch, new_last * self.steps_per_epoch)
        self.state["schedule_end_epoch"] = new_last
        log.warning("after epoch %d, about %.0f s per epoch leave room for %d more in the %.0f-minute budget: the "
                    "learning-rate schedule now ends with epoch %d instead of %d", epoch + 1,
                    predicted_epoch_seconds(seconds, self.stages, tracing=tracing), fit, self.budget / 60,
                    new_last, last)


def _budgeted_schedule(optimizer: keras.optimizers.Optimizer | None) -> BudgetedCosineDecay | None:
    """The optimizer's shortenable schedule, if it has one (Keras keeps a schedule in ``_learning_rate`` and
    has no public accessor for it; ``tests/test_schedules.py`` checks this still finds it)."""
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, BudgetedCosineDecay) else None


def load_arrays(config: TrainConfig, folder: str | os.PathLike | None,
                decode: Collection[str] = tuple(SPLIT_FRACTIONS)) -> tuple[dict, dict]:
    """``{split: (images, rows)}`` and the card's data facts; splits not in ``decode`` get their rows only
    (images None), for a caller that needs their labels and not their pixels."""
    report = SkipReport()
    frame = load_utkface(folder, report=report)
    left_out, exclusion = _excluded_training_faces(config, frame)
    arrays: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
    undecodable: dict[str, str] = {}
    for split in SPLIT_FRACTIONS:
        part = frame[frame["split"] == split]
        if split == "train" and left_out:
            part = part[~part["filename"].isin(left_out)]
        if config.limit:
            part = spread_subset(part, config.limit)
        if part.empty:
            raise ValueError(f"the {split} split of {resolve_data_dir(folder)} is empty; need more images")
        if split not in decode:
            arrays[split] = (None, part)
            continue
        images, rows, errors = load_split_arrays(part, config.image_size, config.color_mode, resize=config.resize)
        undecodable.update(errors)
        arrays[split] = (images, rows)
    data_info = {"folder": str(resolve_data_dir(folder)), "count": int(len(frame)),
                 "fingerprint": dataset_fingerprint(frame), "split_counts": split_counts(frame),
                 "used_counts": {s: int(len(a[1])) for s, a in arrays.items()},
                 "skipped": report.to_dict(), "undecodable": len(undecodable),
                 "set_aside": {reason: len(names) for reason, names in frame.attrs.get("set_aside", {}).items()},
                 "split": {"method": "sha1(file name) -> uniform in [0,1) -> train < 0.8 <= val < 0.9 <= test; "
                                     "byte-identical copies set aside (agegender.data.duplicates)",
                           "fractions": SPLIT_FRACTIONS}}
    if exclusion:
        data_info["excluded"] = exclusion
    return arrays, data_info


def _excluded_training_faces(config: TrainConfig, frame: pd.DataFrame) -> tuple[set[str], dict | None]:
    """The training faces ``config.exclude_faces`` lists, and the card's note of them (none without a list).

    A list that names val or test faces is refused: leaving faces out of the evaluation splits would make the
    run's figures incomparable with every other run's."""
    if not config.exclude_faces:
        return set(), None
    listed, sha1 = read_face_list(config.exclude_faces)
    held_out = frame[frame["split"].isin(["val", "test"]) & frame["filename"].isin(listed)]
    if not held_out.empty:
        raise FaceListError(f"{config.exclude_faces} lists {len(held_out)} val/test faces (e.g. "
                            f"{held_out['filename'].iloc[0]}); only training faces may be left out")
    present = listed & set(frame["filename"])
    log.info("leaving out %d training faces listed in %s (%d listed)", len(present), config.exclude_faces, len(listed))
    return present, {"list": str(config.exclude_faces), "sha1": sha1, "listed": len(listed),
                     "left_out": len(present)}


def _check_refit(config: TrainConfig) -> None:
    """A refit on train + val has no held-out val left to choose anything with: refuse what would need it."""
    if not config.train_on_val:
        return
    if config.age_readout == "val":
        raise ValueError("train_on_val fits on the val split, so age_readout cannot be chosen on it ('val'): "
                         "name the read-out the recipe's val run chose ('median' or 'expectation')")
    if config.early_stopping_patience:
        raise ValueError("train_on_val fits on the val split, so it cannot early-stop on it")
    if config.teacher_descriptors:
        raise ValueError("train_on_val is not supported with a teacher (its targets are made per split)")


def resolution_stages(config: TrainConfig) -> list[tuple[int, int]]:
    """``(input side, last epoch)`` per stage: ``progressive_resizing``'s stages, then ``image_size`` to the end.

    Early epochs at a smaller input cost less (AgeNet at 96 px trains about 1.8x faster than at 128 px) and
    learn the coarse features as well; the last epochs at full size adapt the network to the size it serves at.
    """
    stages, end = [], 0
    for entry in config.progressive_resizing:
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
            raise ValueError(f"progressive_resizing takes [size, epochs] pairs of integers, not {entry!r}")
        size, epochs = entry
        if not 0 < size <= config.image_size or epochs < 1:
            raise ValueError(f"progressive_resizing stage {entry}: the size must be 1..image_size "
                             f"({config.image_size}) and the epochs at least 1")
        end += epochs
        stages.append((size, end))
    if not stages:
        return [(config.image_size, config.epochs)]
    if end >= config.epochs:
        raise ValueError(f"progressive_resizing covers {end} of {config.epochs} epochs; leave at least the last "
                         f"one at image_size ({config.image_size}), the size the model serves at")
    if config.model not in SIZE_FLEXIBLE:
        raise ValueError(f"progressive_resizing needs a model that takes any input size: {sorted(SIZE_FLEXIBLE)}")
    if config.early_stopping_patience:
        raise ValueError("progressive_resizing cannot be combined with early stopping (one stage's best epoch "
                         "is not comparable with another's)")
    return stages + [(config.image_size, config.epochs)]


def epoch_image_size(stages: list[tuple[int, int]], epoch: int) -> int:
    """The training input side of (0-based) ``epoch`` in a :func:`resolution_stages` plan."""
    for size, last_epoch in stages:
        if epoch < last_epoch:
            return size
    return stages[-1][0]


def steady_epochs(epoch_seconds: list[float], tracing: Collection[int] = ()) -> list[int]:
    """The (0-based) epochs whose time says how fast the run goes: all but the ``tracing`` ones, the first of
    each ``fit()`` (the run's, a resume's, each resizing stage's), which also traced the training graph
    (AgeNet's first epoch takes ~540 s on this host, the next ones ~380 s)."""
    return [done for done in range(len(epoch_seconds)) if done not in tracing]


def predicted_epoch_seconds(epoch_seconds: list[float], stages: list[tuple[int, int]],
                            epoch: int | None = None, tracing: Collection[int] = ()) -> float:
    """How long (0-based) ``epoch`` will take, by default the one after ``epoch_seconds``: the mean of the
    :func:`steady_epochs` so far (of all, while there are none), each scaled to that epoch's input size by the
    ratio of pixels (a convolution's work grows with the area; AgeNet's 128 px epochs took 1.8-1.9x its 96 px
    ones)."""
    size = epoch_image_size(stages, len(epoch_seconds) if epoch is None else epoch)
    timed = steady_epochs(epoch_seconds, tracing) or range(len(epoch_seconds))
    return float(np.mean([epoch_seconds[done] * (size / epoch_image_size(stages, done)) ** 2 for done in timed]))


def run_end_epoch(state: dict, stages: list[tuple[int, int]]) -> int:
    """The epoch the run ends with: the plan's last, or the end of a schedule the budget shortened."""
    return state.get("schedule_end_epoch", stages[-1][1])


def epochs_that_fit(epoch_seconds: list[float], stages: list[tuple[int, int]], seconds_left: float,
                    tracing: Collection[int] = ()) -> int:
    """How many of the planned epochs after ``epoch_seconds`` fit in ``seconds_left``, at the forecast pace."""
    count, total = 0, 0.0
    for epoch in range(len(epoch_seconds), stages[-1][1]):
        total += predicted_epoch_seconds(epoch_seconds, stages, epoch, tracing)
        if total > seconds_left:
            break
        count += 1
    return count


def _fit_splits(config: TrainConfig) -> list[str]:
    """The splits the network is fitted on: train, plus val for a refit (``train_on_val``)."""
    return ["train", "val"] if config.train_on_val else ["train"]


def _fit_arrays(arrays: dict, splits: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """The images and rows of ``splits``, in that order (one split is returned as is, without a copy)."""
    if len(splits) == 1:
        return arrays[splits[0]]
    return (np.concatenate([arrays[s][0] for s in splits]),
            pd.concat([arrays[s][1] for s in splits], ignore_index=True))


def train(config: TrainConfig, folder: str | os.PathLike | None = None, *, models_dir: Path = MODELS_DIR,
          runs_dir: Path = RUNS_DIR, fresh: bool = False, verbose: int = 2) -> dict[str, Any]:
    """Train (or resume) a run and write ``models/<name>.keras`` with its card. Returns the card.

    ``config.distribution`` chooses the devices (:mod:`.distribution`); with several workers only the chief
    writes into ``runs_dir`` and ``models_dir``, the others into temporary folders they delete.
    """
    dist = distribution_for(config)  # first: several workers set up their links before TensorFlow runs anything
    models_dir = Path(models_dir)
    with run_folder(dist, Path(runs_dir) / config.output_name) as run_dir, output_folder(dist, models_dir) as out_dir:
        return _train(config, folder, dist, models_dir=models_dir, run_dir=run_dir, out_dir=out_dir, fresh=fresh,
                      verbose=verbose)


def _train(config: TrainConfig, folder: str | os.PathLike | None, dist: Distribution, *, models_dir: Path,
           run_dir: Path, out_dir: Path, fresh: bool, verbose: int) -> dict[str, Any]:
    """:func:`train` in this process's folders: ``run_dir`` for the run state, ``out_dir`` for the final model
    and card (``models_dir`` is where earlier stages' models are read from)."""
    _check_refit(config)
    stages = resolution_stages(config)
    keras.utils.set_random_seed(config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays, data_info = load_arrays(config, folder)
    data_info["fit_splits"] = _fit_splits(config)
    (x_train, train_rows), (x_val, val_rows) = _fit_arrays(arrays, data_info["fit_splits"]), arrays["val"]
    steps = int(np.ceil(len(x_train) / config.batch_size))
    distribution = False
    teacher_targets, teacher_info = _teacher_targets(config, train_rows, val_rows)

    state_file, checkpoint = run_dir / "state.json", run_dir / "checkpoint.keras"
    saved_config = run_dir / "config.json"
    resume = (not fresh and checkpoint.exists() and state_file.exists() and saved_config.exists()
              and TrainConfig.from_dict(json.loads(saved_config.read_text())).training_fields()
              == config.training_fields())
    state = (json.loads(state_file.read_text()) if resume
             else {"epochs_done": 0, "elapsed_seconds": 0.0, "epoch_seconds": [], "history": []})
    check_workers_agree(dist, state["epochs_done"])  # before the workers build a model together
    with dist.scope():  # the model's variables, optimizer and metrics belong to the strategy
        if resume:
            model = keras.saving.load_model(checkpoint)  # compiled, with the optimizer state
            log.info("resuming %s after epoch %d", config.output_name, state["epochs_done"])
        else:
            input_size = config.image_size if len(stages) == 1 else None  # progressive resizing: any size
            model = build_model(config.model, input_size, channels(config.color_mode), **config.model_kwargs)
            if config.init_weights:
                load_weights_from(model, _init_path(config.init_weights, models_dir))
            if teacher_targets:
                model = with_descriptor_head(model, teacher_targets["train"].shape[1])
            compile_model(model, config, steps)
            write_json_atomic(saved_config, config.to_dict())
    distribution = "age_dist" in model.output_names

    def dataset(images, rows, training, image_size=None):
        split = "train" if training else "val"
        genders = rows["gender"].to_numpy()
        if training and "train_gender" in teacher_targets:
            genders = teacher_targets["train_gender"]  # labels mixed with the teacher's P(female)
        return make_dataset(images, rows["age"].to_numpy(), genders, batch_size=config.batch_size,
                            training=training, augment=config.augment and training,
                            # a resumed run must not replay epoch 1's shuffle and augmentation draws
                            seed=config.seed + state["epochs_done"],
                            age_distribution=distribution, age_sigma=config.age_sigma,
                            age_sigma_per_year=config.age_sigma_per_year,
                            sample_weights=(training_sample_weights(config, rows["age"].to_numpy(), model.output_names)
                                            if training else None),
                            extra_targets={DESCRIPTOR_OUTPUT: teacher_targets[split]} if teacher_targets else None,
                            low_resolution=config.augment_low_resolution, erase=config.augment_erase,
                            photo=config.augment_photo, low_resolution_keep=tuple(config.low_resolution_keep),
                            mixup=config.mixup_alpha if training else 0.0, image_size=image_size)

    callbacks: list[keras.callbacks.Callback] = [
        _EpochCheckpoint(run_dir, state, config.max_train_minutes * 60, stages, steps_per_epoch=steps,
                         shorten_schedule=config.budget_shortens_schedule,
                         shared_seconds=functools.partial(chief_value, dist))]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_age_out_mae", mode="min", patience=config.early_stopping_patience,
                                                       restore_best_weights=True))
    for image_size, last_epoch in stages:  # validation always at the full size, so epochs compare
        if state["epochs_done"] >= min(last_epoch, run_end_epoch(state, stages)) or state.get("stopped_by_budget"):
            continue
        model.fit(dataset(x_train, train_rows, True, image_size), validation_data=dataset(x_val, val_rows, False),
                  epochs=last_epoch, initial_epoch=state["epochs_done"], callbacks=callbacks, verbose=verbose,
                  shuffle=False)  # the dataset shuffles itself
        if last_epoch < config.epochs and model.optimizer.use_ema and not state.get("stopped_by_budget"):
            _continue_from_raw_weights(model, checkpoint)

    if model.optimizer.use_ema:
        # fit() does this when it ends; a run re-finished from its checkpoint holds the raw weights
        model.optimizer.finalize_variable_values(model.trainable_variables)
    final, readout = inference_copy(without_training_heads(model), config.image_size), None
    if distribution:
        final, readout = choose_age_readout(final, config, *arrays["val"])
    card = model_card(final, config, data_info, state, arrays, train_rows, models_dir)
    card["training"].update(dist.card())
    if teacher_info:
        card["teacher"] = teacher_info
    if readout:
        card["age_readout"] = readout
    write_json_atomic(saved_config, config.to_dict())  # the post-training fields this card was made with
    save_model_atomic(final, out_dir / f"{config.output_name}.keras", card)
    write_json_atomic(run_dir / "card.json", card)
    return card


def _teacher_targets(config: TrainConfig, train_rows: pd.DataFrame,
                     val_rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Standardised teacher descriptors for the train and val faces (empty without a teacher)."""
    if not config.teacher_descriptors:
        if config.teacher_gender_weight:
            raise TeacherError("teacher_gender_weight needs teacher_descriptors (the file `make teacher` writes)")
        return {}, {}
    descriptors = load_descriptors(config.teacher_descriptors)
    train, stats = descriptor_targets(train_rows, descriptors)
    val, _ = descriptor_targets(val_rows, descriptors, **stats)
    path = project_path(config.teacher_descriptors)
    info = {"descriptors": str(config.teacher_descriptors), "faces": len(descriptors), "dimensions": train.shape[1],
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "head": f"Dense({train.shape[1]}) on the pooled backbone features, MSE to standardised descriptors, "
                    f"weight {config.descriptor_loss_weight}; dropped from the saved model"}
    targets = {"train": train, "val": val}
    if config.teacher_gender_weight:
        targets["train_gender"], info["gender"] = _teacher_gender_targets(config, train_rows, train, descriptors)
    return targets, info


def _teacher_gender_targets(config: TrainConfig, train_rows: pd.DataFrame, standardised: np.ndarray,
                            descriptors: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    """Soft gender targets for the training faces: labels mixed with the teacher's out-of-fold P(female)."""
    genders, ages = train_rows["gender"].to_numpy(), train_rows["age"].to_numpy()
    has_descriptor = train_rows["filename"].map(lambda name: name in descriptors).to_numpy()
    probabilities = gender_probabilities(standardised, genders, train_rows["filename"], usable=has_descriptor)
    targets = distilled_gender_targets(genders, ages, probabilities, has_descriptor,
                                       weight=config.teacher_gender_weight, min_age=config.teacher_gender_min_age)
    mixed = mixed_faces(ages, has_descriptor, config.teacher_gender_min_age)
    correct = (probabilities > 0.5) == (genders == 1)
    info = {"method": "logistic regression on the standardised descriptors, 5 folds by sha1(file name); "
                      f"targets (1 - {config.teacher_gender_weight}) * label + {config.teacher_gender_weight} * "
                      f"P(female) for faces aged {config.teacher_gender_min_age}+",
            "faces_mixed": int(mixed.sum()),
            "teacher_accuracy_out_of_fold": float(correct[mixed].mean()) if mixed.any() else None}
    log.info("teacher gender: %d training faces get mixed targets; teacher accuracy on them %.4f",
             info["faces_mixed"], info["teacher_accuracy_out_of_fold"] or float("nan"))
    return targets, info


def _continue_from_raw_weights(model: keras.Model, checkpoint: Path) -> None:
    """Undo the weight average that ``fit()`` swaps in when it ends, for a stage that is not the last.

    The next stage goes on from the raw weights, which the stage's last checkpoint holds, exactly as a run
    resumed from that checkpoint would.
    """
    raw = keras.saving.load_model(checkpoint, compile=False)
    for variable, value in zip(model.trainable_variables, raw.trainable_variables, strict=True):
        variable.assign(value)


def load_weights_from(model: keras.Model, path: str | os.PathLike) -> None:
    """Weights of a saved model (``.keras``) or weights file (``.weights.h5``), matched by layer path.

    Matching by path, not by order, keeps this right when the phases differ in which layers train.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"initial weights {path} not found (train the previous phase first)")
    if path.suffix == ".keras":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "init.weights.h5"
            keras.saving.load_model(path, compile=False).save_weights(weights)
            model.load_weights(weights)
    else:
        model.load_weights(path)


def choose_age_readout(model: keras.Model, config: TrainConfig, val_images: np.ndarray,
                       val_rows: pd.DataFrame) -> tuple[keras.Model, dict[str, Any]]:
    """``model`` with the age read-out the config asks for; ``"val"`` picks the lowest validation MAE."""
    names = list(AGE_READOUTS) if config.age_readout == "val" else [config.age_readout]
    candidates = {name: with_age_readout(model, name) for name in names}
    val_mae = {}
    for name, candidate in candidates.items():
        ages = predict_arrays(candidate, val_images, **tta_settings(config.to_dict()))["age"]
        val_mae[name] = round(float(np.abs(ages - val_rows["age"].to_numpy()).mean()), 4)
    chosen = min(val_mae, key=val_mae.get)
    return candidates[chosen], {"method": chosen, "setting": config.age_readout, "val_age_mae": val_mae}


def inference_copy(model: keras.Model, image_size: int | None = None) -> keras.Model:
    """The same network without optimizer state (a third of the file size of a checkpoint).

    ``image_size`` fixes the input side of a network built for any size, as serving reads it from the model.
    """
    config = float32_config(model.get_config())  # served in float32 whatever the training precision
    if image_size:
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                shape = layer["config"]["batch_shape"]
                layer["config"]["batch_shape"] = [shape[0], image_size, image_size, shape[-1]]
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _init_path(init_weights: str, models_dir: Path) -> Path:
    """A bare name means a model of an earlier stage in the same models folder."""
    path = Path(init_weights)
    return models_dir / f"{init_weights}.keras" if not path.suffix and len(path.parts) == 1 else path


def _previous_stage(init_weights: str | os.PathLike | None) -> dict[str, Any] | None:
    """What the model this run started from cost, from its card (training time adds up over stages)."""
    if not init_weights:
        return None
    card_file = Path(init_weights).with_suffix(".json")
    if not card_file.is_file():
        return None
    training = json.loads(card_file.read_text()).get("training", {})
    return {"weights": str(init_weights), "epochs_completed": training.get("epochs_completed"),
            "wall_seconds": training.get("wall_seconds"),
            "wall_seconds_all_stages": training.get("wall_seconds_all_stages", training.get("wall_seconds", 0.0))}


def machine_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """What the card records of the machine, e.g. ``x86_64, 2 CPUs, AMD EPYC``.

    Training minutes compare only on the same processor (hosts of this project have differed by a factor of
    two), so its name is recorded: from ``cpuinfo`` (Linux) or :func:`platform.processor`, and left out when
    neither knows it.
    """
    description = f"{platform.machine()}, {os.cpu_count()} CPUs"
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name") and ":" in line]
    processor = names[0] if names else platform.processor()
    return f"{description}, {processor}" if processor else description


def split_metrics(model: keras.Model, tta: dict[str, Any], arrays: dict, train_rows: pd.DataFrame,
                  fit_splits: Collection[str] = ("train",)) -> dict[str, dict]:
    """The card's metrics of ``model`` on the val and test splits, served with the test-time views ``tta``.

    The age range's quantiles are calibrated on val (:func:`calibrate_range`) unless the model was fitted on val.
    """
    preds = {split: predict_arrays(model, arrays[split][0], **tta) for split in ("val", "test")}
    quantiles = RANGE_QUANTILES
    if "age_dist" in preds["val"] and "val" not in fit_splits:
        quantiles = calibrate_range(arrays["val"][1]["age"].to_numpy(), preds["val"]["age_dist"])
    metrics = {}
    for split in ("val", "test"):
        rows, pred = arrays[split][1], preds[split]
        metrics[split] = evaluate_predictions(rows, pred["age"], pred["p_female"],
                                              train_rows["age"].to_numpy(), train_rows["gender"].to_numpy(),
                                              age_dist=pred.get("age_dist"), range_quantiles=quantiles)
        if split in fit_splits:
            metrics[split]["seen_in_training"] = True  # in-sample figures (a refit on train + val)
    return metrics


def model_card(model: keras.Model, config: TrainConfig, data_info: dict, state: dict,
               arrays: dict, train_rows: pd.DataFrame, models_dir: Path = MODELS_DIR) -> dict[str, Any]:
    """Everything a consumer needs: input spec, provenance, timings and metrics.

    ``train_rows`` are the rows the network was fitted on (train, or train + val for a refit).
    """
    metrics = split_metrics(model, tta_settings(config.to_dict()), arrays, train_rows, data_info["fit_splits"])
    seconds = state["epoch_seconds"]
    images_per_epoch = len(train_rows)
    previous = _previous_stage(config.init_weights and _init_path(config.init_weights, models_dir))
    return {
        "name": config.output_name,
        "architecture": config.model,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": int(model.count_params()),
        "input": {"image_size": config.image_size, "color_mode": config.color_mode, "resize": config.resize,
                  "scaling": "float32 pixels in 0..255; the model normalises them itself",
                  "face_crop": "UTKFace aligned crop (face centred, whole head visible)"},
        "outputs": {"gender_out": "P(female)", "age_out": "age in years",
                    **({"age_dist": "P(age = 0..116)"} if "age_dist" in model.output_names else {})},
        **tta_settings(config.to_dict()),
        "config": config.to_dict(),
        "data": data_info,
        "training": {
            "epochs_completed": state["epochs_done"], "epochs_planned": config.epochs,
            "stopped_by_budget": bool(state.get("stopped_by_budget")),
            # the epoch with which the learning rate reached its floor, if the budget made it come early
            **({"schedule_end_epoch": state["schedule_end_epoch"]} if "schedule_end_epoch" in state else {}),
            "wall_seconds": round(state["elapsed_seconds"], 1),
            "seconds_per_epoch": round(float(np.mean(seconds)), 1) if seconds else None,
            "images_per_second": round(images_per_epoch / float(np.mean(seconds)), 1) if seconds else None,
            "backend": keras.backend.backend(), "keras": keras.__version__, "tensorflow": tf.__version__,
            "machine": machine_description(),
            "history": state["history"],
            **({"previous_stage": previous,
                "wall_seconds_all_stages": round(state["elapsed_seconds"] + previous["wall_seconds_all_stages"], 1)}
               if previous else {"wall_seconds_all_stages": round(state["elapsed_seconds"], 1)}),
        },
        "metrics": metrics,
    }
