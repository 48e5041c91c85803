"""Training: the model card, resuming an interrupted run, and saved-model loading errors."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from agegender.config import TrainConfig  # noqa: E402
from agegender.data import dataset_fingerprint, load_utkface  # noqa: E402
from agegender.serving.modelio import ModelFileError, card_path, load_model  # noqa: E402
from agegender.training import loop as train_module  # noqa: E402

from conftest import TINY_CONFIG  # noqa: E402


# -- the card of the session's tiny model -------------------------------------------------------------
def test_card_input_and_config(tiny_model):
    card = tiny_model.card
    assert card["name"] == "tiny" and card["architecture"] == "seed_cnn"
    assert card["input"]["image_size"] == 64
    assert card["input"]["color_mode"] == "grayscale"
    assert card["config"] == TrainConfig(**TINY_CONFIG).to_dict()
    assert set(card["outputs"]) == {"gender_out", "age_out"}
    assert card["tta_flip"] is False
    model, _ = load_model(tiny_model.path)
    assert card["parameters"] == model.count_params()


def test_card_data_provenance(tiny_model):
    data = tiny_model.card["data"]
    frame = load_utkface(tiny_model.folder)
    assert data["fingerprint"] == dataset_fingerprint(frame)
    assert data["count"] == 60
    assert data["split_counts"] == {"train": 40, "val": 10, "test": 10}
    assert data["used_counts"] == {"train": 32, "val": 10, "test": 10}  # limit=32
    assert data["undecodable"] == 0 and data["skipped"] == {}
    assert "sha1" in data["split"]["method"]
    assert data["split"]["fractions"] == {"train": 0.8, "val": 0.1, "test": 0.1}


def test_card_training_and_metrics(tiny_model):
    training = tiny_model.card["training"]
    assert training["epochs_completed"] == 1 and training["epochs_planned"] == 1
    assert training["stopped_by_budget"] is False
    assert isinstance(training["wall_seconds"], (int, float)) and training["wall_seconds"] >= 0
    assert training["images_per_second"] > 0
    assert training["seconds_per_epoch"] is not None
    assert len(training["history"]) == 1 and training["history"][0]["epoch"] == 1
    assert "val_age_out_mae" in training["history"][0]
    assert training["machine"] == train_module.machine_description()
    for split in ("val", "test"):
        metrics = tiny_model.card["metrics"][split]
        assert metrics["n"] == 10
        assert 0 <= metrics["age_mae"] < 120
        assert 0 <= metrics["gender_accuracy"] <= 1
        assert "baseline" in metrics and "by_age_band" in metrics


def test_machine_description_names_the_processor(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\n\nprocessor\t: 1\n"
                       "model name\t: Example CPU @ 2.0GHz\n")
    monkeypatch.setattr(train_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(train_module.platform, "machine", lambda: "x86_64")
    assert train_module.machine_description(cpuinfo) == "x86_64, 2 CPUs, Example CPU @ 2.0GHz"
    # No cpuinfo (macOS, Windows) and no processor name either: just the architecture and the count.
    monkeypatch.setattr(train_module.platform, "processor", lambda: "")
    assert train_module.machine_description(tmp_path / "absent") == "x86_64, 2 CPUs"
    monkeypatch.setattr(train_module.platform, "processor", lambda: "arm")
    assert train_module.machine_description(tmp_path / "absent") == "x86_64, 2 CPUs, arm"


def test_card_written_beside_model_and_in_run_dir(tiny_model):
    beside = json.loads(card_path(tiny_model.path).read_text())
    run_dir = tiny_model.path.parent.parent / "runs" / "tiny"
    in_run = json.loads((run_dir / "card.json").read_text())
    assert beside == in_run
    assert beside["data"]["fingerprint"] == tiny_model.card["data"]["fingerprint"]
    assert (run_dir / "checkpoint.keras").is_file() and (run_dir / "history.csv").is_file()
    # the final model has no optimizer state: smaller than the checkpoint
    assert tiny_model.path.stat().st_size < (run_dir / "checkpoint.keras").stat().st_size
    # the model is deflated; the checkpoint, rewritten every epoch, is not (its time goes to training)
    with zipfile.ZipFile(tiny_model.path) as model, zipfile.ZipFile(run_dir / "checkpoint.keras") as checkpoint:
        assert {m.compress_type for m in model.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {m.compress_type for m in checkpoint.infolist()} == {zipfile.ZIP_STORED}


# -- loading saved models ----------------------------------------------------------------------------
def test_saved_model_loads_and_predicts(tiny_model):
    model, card = load_model(tiny_model.path)
    assert card == json.loads(card_path(tiny_model.path).read_text())
    x = np.full((2, 64, 64, 1), 128, dtype="float32")
    out = model(x, training=False)
    assert keras.ops.convert_to_numpy(out["age_out"]).shape == (2, 1)


def test_truncated_model_file(tiny_model, tmp_path):
    damaged = tmp_path / "damaged.keras"
    data = tiny_model.path.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    shutil.copyfile(card_path(tiny_model.path), card_path(damaged))
    with pytest.raises(ModelFileError, match="damaged .* not a complete .keras"):
        load_model(damaged)


def test_not_a_model_file(tiny_model, tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("hello")
    shutil.copyfile(card_path(tiny_model.path), card_path(fake))
    with pytest.raises(ModelFileError, match="damaged or not a Keras model"):
        load_model(fake)
    with zipfile.ZipFile(fake, "w") as archive:  # a whole zip, but not a Keras model: Keras's own error is kept
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="damaged or not a Keras model: .*Error"):
        load_model(fake)


def test_missing_card(tiny_model, tmp_path):
    lonely = tmp_path / "lonely.keras"
    shutil.copyfile(tiny_model.path, lonely)
    with pytest.raises(ModelFileError, match="card .* is missing"):
        load_model(lonely)


def test_damaged_card(tiny_model, tmp_path):
    copy = tmp_path / "copy.keras"
    shutil.copyfile(tiny_model.path, copy)
    card_path(copy).write_text('{"input": ')
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(copy)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nothing.keras")


# -- resume -----------------------------------------------------------------------------------------
RESUME_CONFIG = dict(model="seed_cnn", name="resume", image_size=64, color_mode="grayscale",
                     epochs=2, batch_size=16, limit=32, seed=11)


class _Spy:
    """Records which epochs start, the optimizer step count at their start, and ``layer``'s kernel at the start
    and end (after the checkpoint is written) of each epoch."""

    def __init__(self, monkeypatch, layer: str = "conv_32"):
        self.begun: list[int] = []
        self.iterations: list[int] = []
        self.first_kernel: list[np.ndarray] = []
        self.end_kernel: list[np.ndarray] = []
        original_begin = train_module._EpochCheckpoint.on_epoch_begin
        original_end = train_module._EpochCheckpoint.on_epoch_end
        spy = self

        def kernel(model):
            return keras.ops.convert_to_numpy(model.get_layer(layer).kernel).copy()

        def on_epoch_begin(cb, epoch, logs=None):
            spy.begun.append(epoch)
            spy.iterations.append(int(keras.ops.convert_to_numpy(cb.model.optimizer.iterations)))
            spy.first_kernel.append(kernel(cb.model))
            return original_begin(cb, epoch, logs)

        def on_epoch_end(cb, epoch, logs=None):
            original_end(cb, epoch, logs)
            spy.end_kernel.append(kernel(cb.model))

        monkeypatch.setattr(train_module._EpochCheckpoint, "on_epoch_begin", on_epoch_begin)
        monkeypatch.setattr(train_module._EpochCheckpoint, "on_epoch_end", on_epoch_end)


def _interrupt_after_epoch(monkeypatch, number: int = 1):
    original = train_module._EpochCheckpoint.on_epoch_end

    def on_epoch_end(cb, epoch, logs=None):
        original(cb, epoch, logs)  # the checkpoint of this epoch is written
        if epoch + 1 == number:
            raise KeyboardInterrupt(f"simulated Ctrl-C after epoch {number}")

    monkeypatch.setattr(train_module._EpochCheckpoint, "on_epoch_end", on_epoch_end)


def _state(run_dir):
    return json.loads((run_dir / "state.json").read_text())


@pytest.mark.slow
def test_interrupted_run_resumes(tiny_folder, tmp_path, monkeypatch):
    models_dir, runs_dir = tmp_path / "models", tmp_path / "runs"
    run_dir = runs_dir / "resume"
    config = TrainConfig(**RESUME_CONFIG)
    steps_per_epoch = 2  # 32 training images / batch 16

    # 1. a two-epoch run interrupted after its first epoch
    with monkeypatch.context() as mp:
        _interrupt_after_epoch(mp)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    state = _state(run_dir)
    assert state["epochs_done"] == 1
    assert [row["epoch"] for row in state["history"]] == [1]
    assert (run_dir / "checkpoint.keras").is_file()
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    assert not (models_dir / "resume.keras").exists()  # no final model for an unfinished run
    checkpoint_kernel = keras.ops.convert_to_numpy(
        keras.saving.load_model(run_dir / "checkpoint.keras").get_layer("conv_32").kernel)
    first_history = state["history"][0]

    # 2. the same call again continues with epoch 2 from the checkpoint
    with monkeypatch.context() as mp:
        spy = _Spy(mp)
        card = train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    assert spy.begun == [1]  # epoch 1 (0-based 0) was not redone
    assert spy.iterations == [steps_per_epoch]  # optimizer state restored
    np.testing.assert_array_equal(spy.first_kernel[0], checkpoint_kernel)  # weights restored
    state = _state(run_dir)
    assert state["epochs_done"] == 2
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    assert state["history"][0] == first_history
    assert len(state["epoch_seconds"]) == 2
    assert card["training"]["epochs_completed"] == 2
    assert len(card["training"]["history"]) == 2
    assert (models_dir / "resume.keras").is_file() and card_path(models_dir / "resume.keras").is_file()

    # 3. once more: the run is complete, nothing is trained, the model is written again
    with monkeypatch.context() as mp:
        spy = _Spy(mp)
        again = train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    assert spy.begun == []
    assert _state(run_dir)["epochs_done"] == 2
    assert again["training"]["epochs_completed"] == 2
    assert again["metrics"]["test"]["age_mae"] == pytest.approx(card["metrics"]["test"]["age_mae"], abs=1e-6)

    # 4. fresh=True ignores the checkpoint
    with monkeypatch.context() as mp:
        spy = _Spy(mp)
        train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, fresh=True, verbose=0)
    assert spy.begun == [0, 1]
    assert spy.iterations[0] == 0


@pytest.mark.slow
def test_changed_config_starts_over(tiny_folder, tmp_path, monkeypatch):
    """Resuming needs the identical config: a finished 1-epoch run asked for 2 epochs trains both again."""
    models_dir, runs_dir = tmp_path / "models", tmp_path / "runs"
    run_dir = runs_dir / "resume"
    one = TrainConfig(**{**RESUME_CONFIG, "epochs": 1})
    train_module.train(one, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    assert _state(run_dir)["epochs_done"] == 1
    two = TrainConfig(**RESUME_CONFIG)
    with monkeypatch.context() as mp:
        spy = _Spy(mp)
        card = train_module.train(two, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    assert spy.begun == [0, 1]
    assert spy.iterations[0] == 0
    state = _state(run_dir)
    assert state["epochs_done"] == 2 and [r["epoch"] for r in state["history"]] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text()) == two.to_dict()
    assert card["config"]["epochs"] == 2


def test_empty_split_is_an_error(tmp_path, tiny_folder):
    folder = tmp_path / "train_only"
    folder.mkdir()
    frame = load_utkface(tiny_folder)
    for path in frame.loc[frame["split"] == "train", "path"][:5]:
        shutil.copyfile(path, folder / frame.loc[frame["path"] == path, "filename"].item())
    with pytest.raises(ValueError, match="split .* is empty"):
        train_module.train(TrainConfig(**{**RESUME_CONFIG, "name": "x"}), folder, models_dir=tmp_path / "m",
                           runs_dir=tmp_path / "r", verbose=0)
    assert not (tmp_path / "m").exists()


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict({"epochs": 1, "epoch": 2})
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    assert TrainConfig(model="small_resnet").output_name == "small_resnet"
    assert TrainConfig(model="small_resnet", name="x").output_name == "x"


@pytest.mark.slow
def test_second_stage_starts_from_the_first(tiny_model, tmp_path, monkeypatch):
    """``init_weights`` by bare name: the model of an earlier stage in the same models folder."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copy(tiny_model.path, models_dir / "stage1.keras")
    shutil.copy(tiny_model.path.with_suffix(".json"), models_dir / "stage1.json")
    config = TrainConfig(**{**RESUME_CONFIG, "name": "stage2", "epochs": 1, "learning_rate": 0.0,
                            "image_size": tiny_model.config.image_size, "init_weights": "stage1"})
    with monkeypatch.context() as mp:
        spy = _Spy(mp)
        card = train_module.train(config, tiny_model.folder, models_dir=models_dir, runs_dir=tmp_path / "runs",
                                  verbose=0)
    first, _ = load_model(tiny_model.path)
    np.testing.assert_array_equal(spy.first_kernel[0], keras.ops.convert_to_numpy(first.get_layer("conv_32").kernel))
    assert card["training"]["previous_stage"]["epochs_completed"] == tiny_model.card["training"]["epochs_completed"]
    with pytest.raises(FileNotFoundError, match="not found"):
        train_module.train(TrainConfig(**{**RESUME_CONFIG, "name": "s3", "init_weights": "nothing"}), tiny_model.folder,
                           models_dir=models_dir, runs_dir=tmp_path / "runs", verbose=0)


def test_config_from_json_with_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "agenet", "epochs": 10, "model_kwargs": {"dropout": 0.3}}))
    config = TrainConfig.from_json(path, epochs=1, limit=8)
    assert (config.model, config.epochs, config.limit, config.model_kwargs) == ("agenet", 1, 8, {"dropout": 0.3})
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_json(path, epoch=1)


@pytest.mark.slow
def test_age_readout_chosen_on_val_and_changed_without_retraining(tiny_folder, tmp_path, monkeypatch):
    """``age_readout="val"`` keeps the read-out with the lower val MAE; switching it later re-finishes, not retrains."""
    models_dir, runs_dir = tmp_path / "models", tmp_path / "runs"
    config = TrainConfig(model="small_resnet", name="readout", image_size=32, color_mode="rgb", epochs=1,
                         batch_size=16, limit=32, seed=5, age_readout="val", model_kwargs={"widths": [8]})
    card = train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    readout = card["age_readout"]
    assert readout["setting"] == "val" and set(readout["val_age_mae"]) == {"expectation", "median"}
    assert readout["method"] == min(readout["val_age_mae"], key=readout["val_age_mae"].get)
    assert card["metrics"]["val"]["age_mae"] == pytest.approx(readout["val_age_mae"][readout["method"]], abs=1e-3)
    model, _ = load_model(models_dir / "readout.keras")
    assert type(model.get_layer("age_out")).__name__ == {"expectation": "ExpectedAge", "median": "MedianAge"}[readout["method"]]

    begun: list[int] = []
    monkeypatch.setattr(train_module._EpochCheckpoint, "on_epoch_begin", lambda cb, epoch, logs=None: begun.append(epoch))
    other = "median" if readout["method"] == "expectation" else "expectation"
    again = train_module.train(TrainConfig(**{**config.to_dict(), "age_readout": other}), tiny_folder,
                               models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    assert begun == []  # the finished run was not trained again
    assert again["age_readout"]["method"] == other
    assert again["metrics"]["val"]["age_mae"] == pytest.approx(readout["val_age_mae"][other], abs=1e-3)
    assert json.loads((runs_dir / "readout" / "config.json").read_text())["age_readout"] == other


@pytest.mark.slow
def test_weight_average_is_the_final_model_also_when_refinished(tiny_folder, tmp_path):
    """``ema_momentum``: the model written is the moving average of the weights, not the last step's weights,
    and re-finishing the completed run from its checkpoint (raw weights + averages) writes the same model."""
    models_dir, runs_dir = tmp_path / "models", tmp_path / "runs"
    config = TrainConfig(**{**RESUME_CONFIG, "name": "ema", "ema_momentum": 0.9})
    train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)

    def kernel(model):
        return keras.ops.convert_to_numpy(model.get_layer("conv_32").kernel)

    final = kernel(load_model(models_dir / "ema.keras")[0])
    last_step = kernel(keras.saving.load_model(runs_dir / "ema" / "checkpoint.keras"))
    assert not np.allclose(final, last_step)
    train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=runs_dir, verbose=0)
    np.testing.assert_allclose(kernel(load_model(models_dir / "ema.keras")[0]), final, rtol=1e-6, atol=1e-7)


# -- refit on train + val -------------------------------------------------------------------------
@pytest.mark.slow
def test_refit_fits_on_train_and_val_and_marks_val_in_sample(tiny_folder, tmp_path, monkeypatch):
    """``train_on_val``: the network sees the 40 train and 10 val faces; val figures are flagged, test is not."""
    fitted: list[tuple[int, int]] = []
    original = train_module.make_dataset

    def spy(images, ages, genders, **kwargs):
        if kwargs.get("training"):
            fitted.append((len(images), len(ages)))
        return original(images, ages, genders, **kwargs)

    monkeypatch.setattr(train_module, "make_dataset", spy)
    config = TrainConfig(**{**RESUME_CONFIG, "name": "refit", "epochs": 1, "limit": 0, "train_on_val": True})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert fitted == [(50, 50)]
    assert card["data"]["fit_splits"] == ["train", "val"]
    assert card["metrics"]["val"]["seen_in_training"] is True
    assert "seen_in_training" not in card["metrics"]["test"]
    assert card["metrics"]["test"]["n"] == 10


@pytest.mark.parametrize("setting, message", [({"age_readout": "val"}, "age_readout"),
                                              ({"early_stopping_patience": 2}, "early-stop"),
                                              ({"teacher_descriptors": "t.npz"}, "teacher")])
def test_refit_refuses_what_needs_a_held_out_val(tiny_folder, tmp_path, setting, message):
    config = TrainConfig(**{**RESUME_CONFIG, "name": "refit", "train_on_val": True, **setting})
    with pytest.raises(ValueError, match=message):
        train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                           verbose=0)
    assert not (tmp_path / "runs").exists()  # refused before anything is written


def _record_datasets(monkeypatch) -> list[dict]:
    """The keyword arguments of every ``make_dataset`` call training makes, in order."""
    calls: list[dict] = []
    original = train_module.make_dataset

    def spy(images, ages, genders, **kwargs):
        calls.append(kwargs)
        return original(images, ages, genders, **kwargs)

    monkeypatch.setattr(train_module, "make_dataset", spy)
    return calls


@pytest.mark.slow
def test_low_resolution_erasing_and_mixup_reach_training_only(tiny_folder, tmp_path, monkeypatch):
    """``augment_low_resolution``, ``augment_erase`` and ``mixup_alpha`` are handed to the training batches;
    validation images stay as they are."""
    calls = _record_datasets(monkeypatch)
    config = TrainConfig(**{**RESUME_CONFIG, "name": "lowres", "epochs": 1, "augment": True,
                            "augment_low_resolution": 0.25, "augment_erase": 0.5, "mixup_alpha": 0.2})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    handed = {c["training"]: (c["low_resolution"], c["erase"], c["mixup"]) if c["augment"] else
              (0.0, 0.0, c["mixup"]) for c in calls}
    assert handed == {True: (0.25, 0.5, 0.2), False: (0.0, 0.0, 0.0)}
    assert (card["config"]["augment_low_resolution"], card["config"]["augment_erase"],
            card["config"]["mixup_alpha"]) == (0.25, 0.5, 0.2)


@pytest.mark.slow
def test_gender_loss_balances_by_a_power_of_its_own(tiny_folder, tmp_path, monkeypatch):
    """``age_balance_gender``: the age losses keep ``age_balance``'s weights, the gender loss gets its own
    (here none), and a run with per-output weights trains to the end."""
    calls = _record_datasets(monkeypatch)
    config = TrainConfig(**{**RESUME_CONFIG, "name": "balance", "epochs": 1, "age_balance": 1.0,
                            "age_balance_gender": 0.0})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    weights = next(c["sample_weights"] for c in calls if c["training"])
    assert set(weights) == {"gender_out", "age_out"}
    assert np.allclose(weights["gender_out"], 1.0) and weights["age_out"].std() > 0.1
    assert all(c["sample_weights"] is None for c in calls if not c["training"])
    assert card["config"]["age_balance_gender"] == 0.0


@pytest.mark.parametrize("gender_power, shared", [(None, True), (0.5, True), (1.0, False)])
def test_training_sample_weights_share_one_array_unless_gender_differs(gender_power, shared):
    ages = np.array([3] * 10 + [30] * 80 + [70] * 10)
    config = TrainConfig(model="agenet", age_balance=0.5, age_balance_gender=gender_power)
    weights = train_module.training_sample_weights(config, ages, ["age_dist", "age_out", "gender_out"])
    if shared:  # the earlier recipes' single array, unchanged
        assert isinstance(weights, np.ndarray) and weights[0] / weights[50] == pytest.approx(8 ** 0.5, rel=1e-5)
    else:
        assert np.array_equal(weights["age_dist"], weights["age_out"])
        assert weights["gender_out"][0] / weights["gender_out"][50] == pytest.approx(8.0, rel=1e-5)
    assert train_module.training_sample_weights(TrainConfig(model="agenet"), ages, ["gender_out"]) is None


@pytest.mark.slow
@pytest.mark.parametrize("epochs, completed, stopped", [(3, 1, True), (1, 1, False)])
def test_budget_stops_before_an_epoch_that_would_not_fit(tiny_folder, tmp_path, epochs, completed, stopped):
    """A budget far below one epoch's time stops a run after its first epoch; a run that had no next epoch
    to skip finished its plan and is not marked as stopped by the budget."""
    config = TrainConfig(**{**RESUME_CONFIG, "name": "budget", "epochs": epochs, "max_train_minutes": 1e-4})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["training"]["epochs_completed"] == completed
    assert card["training"]["stopped_by_budget"] is stopped


class _SlowClock:
    """A stand-in for the callback's clock under which every epoch takes ``seconds_per_epoch``, the first
    ``first_epoch_seconds`` if given (a first epoch also traces the graph)."""

    def __init__(self, seconds_per_epoch: float, first_epoch_seconds: float | None = None):
        self.now, self.step = 0.0, seconds_per_epoch  # read at each epoch's start and end: they differ by a step
        self.first, self.calls = first_epoch_seconds, 0

    def __call__(self) -> float:
        self.calls += 1
        self.now += self.first if self.calls == 2 and self.first is not None else self.step
        return self.now


def _rate_at_checkpoint(run_dir) -> tuple[float, int]:
    """The learning rate the checkpointed optimizer would use next, and its step count."""
    optimizer = keras.saving.load_model(run_dir / "checkpoint.keras").optimizer
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate)), int(optimizer.iterations.numpy())


BUDGET_CONFIG = {**RESUME_CONFIG, "name": "slow", "epochs": 4, "schedule": "cosine",
                 "max_train_minutes": 100 / 60}  # 30 s epochs: 3 fit in 100 s, 4 do not


@pytest.mark.slow
@pytest.mark.parametrize("shorten", [True, False])
def test_budget_shortens_the_schedule_of_a_run_that_would_overrun(tiny_folder, tmp_path, monkeypatch, shorten):
    """Both runs stop after 3 of 4 epochs; the one whose schedule was shortened ends at the rate's floor,
    the other with the rate still above a tenth of its peak."""
    monkeypatch.setattr(train_module._EpochCheckpoint, "clock", _SlowClock(30.0))
    config = TrainConfig(**{**BUDGET_CONFIG, "budget_shortens_schedule": shorten})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    training = card["training"]
    assert training["epochs_completed"] == 3 and training["stopped_by_budget"]
    rate, steps = _rate_at_checkpoint(tmp_path / "runs" / "slow")
    assert steps == 3 * 2  # 32 images / batch 16
    floor = 0.01 * config.learning_rate  # the cosine's alpha
    if shorten:
        assert training["schedule_end_epoch"] == 3
        assert rate == pytest.approx(floor)
    else:
        assert "schedule_end_epoch" not in training
        assert rate > 10 * floor


@pytest.mark.slow
def test_run_that_fits_its_budget_keeps_its_schedule(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module._EpochCheckpoint, "clock", _SlowClock(30.0))
    config = TrainConfig(**{**BUDGET_CONFIG, "max_train_minutes": 121 / 60})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["training"]["epochs_completed"] == 4 and not card["training"]["stopped_by_budget"]
    assert "schedule_end_epoch" not in card["training"]


@pytest.mark.slow
def test_slow_first_epoch_does_not_shorten_a_run_that_fits_at_its_steady_pace(tiny_folder, tmp_path, monkeypatch):
    """A first epoch twice as slow (tracing) would forecast one more epoch only; the schedule is cut by the
    pace of the epochs after it, at which all four fit (60 + 3 x 30 = 150 s of 155)."""
    monkeypatch.setattr(train_module._EpochCheckpoint, "clock", _SlowClock(30.0, first_epoch_seconds=60.0))
    config = TrainConfig(**{**BUDGET_CONFIG, "max_train_minutes": 155 / 60})
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["training"]["epochs_completed"] == 4 and not card["training"]["stopped_by_budget"]
    assert "schedule_end_epoch" not in card["training"]
    assert _state(tmp_path / "runs" / "slow")["tracing_epochs"] == [0]


@pytest.mark.slow
def test_shortened_schedule_is_kept_when_the_run_resumes(tiny_folder, tmp_path, monkeypatch):
    """Interrupted after the shortening (after epoch 2, the first with a steady pace), the resumed run goes on
    with the shortened schedule from its checkpoint and stops where it ends, as the uninterrupted run does;
    its first epoch after the resume is counted as one that traced the graph."""
    monkeypatch.setattr(train_module._EpochCheckpoint, "clock", _SlowClock(30.0))
    config, run_dir = TrainConfig(**BUDGET_CONFIG), tmp_path / "runs" / "slow"
    with monkeypatch.context() as mp:
        _interrupt_after_epoch(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                               verbose=0)
    assert _state(run_dir)["schedule_end_epoch"] == 3
    card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                              verbose=0)
    assert card["training"]["epochs_completed"] == 3 and card["training"]["schedule_end_epoch"] == 3
    assert _rate_at_checkpoint(run_dir)[0] == pytest.approx(0.01 * config.learning_rate)
    assert _state(run_dir)["tracing_epochs"] == [0, 2]


def test_epochs_that_fit_the_time_left():
    assert train_module.epochs_that_fit([30.0], [(32, 4)], 70.0) == 2
    assert train_module.epochs_that_fit([30.0], [(32, 4)], 29.0) == 0
    assert train_module.epochs_that_fit([30.0], [(32, 4)], 1e6) == 3  # never more than planned
    # at the larger size of the next stage an epoch takes (32 / 16) ** 2 = 4 times as long
    assert train_module.epochs_that_fit([10.0], [(16, 1), (32, 3)], 80.0) == 2
    assert train_module.epochs_that_fit([10.0], [(16, 1), (32, 3)], 79.0) == 1
    # the first epoch's time (tracing included) is left out once a steady one exists
    assert train_module.epochs_that_fit([60.0, 30.0], [(32, 5)], 90.0, tracing=[0]) == 3
    assert train_module.epochs_that_fit([60.0, 30.0], [(32, 5)], 90.0) == 2


def test_forecast_leaves_out_the_epochs_that_traced_the_graph():
    assert train_module.steady_epochs([60.0, 30.0, 50.0, 32.0], tracing=[0, 2]) == [1, 3]
    assert train_module.predicted_epoch_seconds([60.0, 30.0, 50.0, 32.0], [(32, 6)], tracing=[0, 2]) == 31.0
    # with nothing else measured yet, the first epoch is all there is to go by
    assert train_module.predicted_epoch_seconds([60.0], [(32, 6)], tracing=[0]) == 60.0


# -- progressive resizing -------------------------------------------------------------------------
PROGRESSIVE_CONFIG = dict(model="small_resnet", name="progressive", image_size=32, color_mode="rgb", epochs=3,
                          batch_size=16, limit=32, seed=3, model_kwargs={"widths": [8]},
                          progressive_resizing=[[16, 1], [24, 1]])


def test_resolution_stages_plan():
    assert train_module.resolution_stages(TrainConfig(**PROGRESSIVE_CONFIG)) == [(16, 1), (24, 2), (32, 3)]
    assert train_module.resolution_stages(TrainConfig(**{**PROGRESSIVE_CONFIG, "progressive_resizing": []})) == [(32, 3)]


def test_next_epoch_time_is_scaled_to_its_input_size():
    """The budget's forecast of the next epoch: earlier epochs' times scaled by the ratio of pixels, so the first
    epoch at a larger size is not forecast at the small epochs' pace."""
    stages = [(16, 1), (24, 2), (32, 3)]
    assert [train_module.epoch_image_size(stages, epoch) for epoch in range(3)] == [16, 24, 32]
    assert train_module.predicted_epoch_seconds([10.0], stages) == pytest.approx(10.0 * (24 / 16) ** 2)
    assert train_module.predicted_epoch_seconds([10.0, 20.0], stages) == pytest.approx(
        (10.0 * (32 / 16) ** 2 + 20.0 * (32 / 24) ** 2) / 2)
    assert train_module.predicted_epoch_seconds([10.0, 12.0], [(32, 3)]) == pytest.approx(11.0)


@pytest.mark.slow
def test_budget_stop_in_a_small_stage_is_named(tiny_folder, tmp_path, caplog):
    config = TrainConfig(**{**PROGRESSIVE_CONFIG, "max_train_minutes": 1e-4})
    with caplog.at_level("WARNING", logger="agegender.training.loop"):
        card = train_module.train(config, tiny_folder, models_dir=tmp_path / "models", runs_dir=tmp_path / "runs",
                                  verbose=0)
    assert card["training"]["epochs_completed"] == 1 and card["training"]["stopped_by_budget"]
    assert "before any epoch at its full size (32 px)" in caplog.text


@pytest.mark.parametrize("changes, message", [
    ({"progressive_resizing": [[16, 1], [24, 2]]}, "leave at least the last"),
    ({"progressive_resizing": [[48, 1]]}, "size must be 1..image_size"),
    ({"progressive_resizing": [[16, 0]]}, "epochs at least 1"),
    ({"progressive_resizing": [16, 1]}, r"\[size, epochs\] pairs"),
    ({"progressive_resizing": [[16.5, 1]]}, r"\[size, epochs\] pairs"),
    ({"model": "seed_cnn"}, "any input size"),
    ({"early_stopping_patience": 2}, "early stopping"),
])
def test_resolution_stages_refuse_what_cannot_work(changes, message):
    with pytest.raises(ValueError, match=message):
        train_module.resolution_stages(TrainConfig(**{**PROGRESSIVE_CONFIG, **changes}))


@pytest.mark.slow
def test_progressive_resizing_trains_small_first_and_serves_at_full_size(tiny_folder, tmp_path, monkeypatch):
    """Epochs 1-2 see 16 and 24 px batches, the last 32 px; validation is always at 32 px; with weight averaging
    each stage goes on from the raw weights (not the average fit() swaps in at its end); the saved model
    takes 32 px inputs, as serving reads the size from the model."""
    calls = _record_datasets(monkeypatch)
    spy = _Spy(monkeypatch, layer="stem_conv")
    config = TrainConfig(**{**PROGRESSIVE_CONFIG, "ema_momentum": 0.9})
    models_dir = tmp_path / "models"
    card = train_module.train(config, tiny_folder, models_dir=models_dir, runs_dir=tmp_path / "runs", verbose=0)

    assert [c["image_size"] for c in calls if c["training"]] == [16, 24, 32]
    assert [c["image_size"] for c in calls if not c["training"]] == [None] * 3
    for epoch in (1, 2):
        np.testing.assert_array_equal(spy.first_kernel[epoch], spy.end_kernel[epoch - 1])
    assert card["training"]["epochs_completed"] == 3 and not card["training"]["stopped_by_budget"]
    assert _state(tmp_path / "runs" / "progressive")["tracing_epochs"] == [0, 1, 2]  # each stage traces anew
    model, _ = load_model(models_dir / "progressive.keras")
    assert model.input_shape == (None, 32, 32, 3)
    final_kernel = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel)
    assert not np.allclose(final_kernel, spy.end_kernel[-1])  # the model written is the weight average


@pytest.mark.slow
def test_progressive_run_resumed_at_a_stage_boundary_goes_on_at_the_next_size(tiny_folder, tmp_path, monkeypatch):
    calls = _record_datasets(monkeypatch)
    config = TrainConfig(**PROGRESSIVE_CONFIG)
    dirs = dict(models_dir=tmp_path / "models", runs_dir=tmp_path / "runs")
    with monkeypatch.context() as mp:
        _interrupt_after_epoch(mp)
        with pytest.raises(KeyboardInterrupt):
            train_module.train(config, tiny_folder, verbose=0, **dirs)
    assert [c["image_size"] for c in calls if c["training"]] == [16]
    assert _state(tmp_path / "runs" / "progressive")["epochs_done"] == 1
    card = train_module.train(config, tiny_folder, verbose=0, **dirs)
    assert [c["image_size"] for c in calls if c["training"]] == [16, 24, 32]
    assert [row["epoch"] for row in card["training"]["history"]] == [1, 2, 3]


@pytest.mark.parametrize("fit_splits", [("train",), ("train", "val")])
def test_split_metrics_calibrate_the_age_range_on_val_unless_fitted_on_it(fit_splits):
    from agegender.evaluation.metrics import calibrate_range
    from agegender.models import build_model
    from agegender.serving.inference import RANGE_QUANTILES, predict_arrays

    keras.utils.set_random_seed(3)
    model = build_model("small_resnet", 32, 3, widths=[8])
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in (("val", 40), ("test", 30)):
        rows = pd.DataFrame({"age": rng.integers(1, 90, n), "gender": rng.integers(0, 2, n), "race": 0})
        arrays[split] = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rows)
    metrics = train_module.split_metrics(model, {}, arrays, arrays["val"][1], fit_splits)
    expected = RANGE_QUANTILES
    if "val" not in fit_splits:
        val_dist = predict_arrays(model, arrays["val"][0])["age_dist"]
        expected = calibrate_range(arrays["val"][1]["age"].to_numpy(), val_dist)
        assert expected != RANGE_QUANTILES  # this untrained model's range is not calibrated as it stands
    assert metrics["val"]["age_range"]["quantiles"] == list(expected)
    assert metrics["test"]["age_range"]["quantiles"] == list(expected)  # test measured with val's choice

    # serving reports the range the card measured: the predictor's ends are the test faces' ends at those quantiles
    from agegender.serving.inference import age_ranges
    from agegender.serving.predict import Predictor

    predictor = Predictor(model, {"input": {"image_size": 32, "color_mode": "rgb"}, "metrics": metrics})
    faces = predictor.predict_crops(arrays["test"][0])
    low, high = age_ranges(predict_arrays(model, arrays["test"][0])["age_dist"], expected)
    assert [(f.age_low, f.age_high) for f in faces] == list(zip(low, high))
