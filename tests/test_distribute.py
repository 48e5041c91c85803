"""Training on several devices or machines (agegender.training.distribution): the settings and their errors, and
(slow) mirrored training on two logical CPU devices and a two-worker run on this machine, each in fresh processes
(tests/distributed_run.py), since devices and worker links are set up only before TensorFlow runs anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.config import TrainConfig  # noqa: E402
from agegender.training import distribution as dist_module  # noqa: E402
from agegender.training.distribution import (  # noqa: E402
    DistributionError, distribution_for, float32_config, is_chief, local_tf_configs, output_folder, read_tf_config,
    run_folder, writes_outputs)

RUNNER = Path(__file__).resolve().parent / "distributed_run.py"
SRC = Path(__file__).resolve().parents[1] / "src"
#: one step per epoch: under a strategy Keras reads a batch before training (to build the model), which moves the
#: dataset's reshuffling on by one, so a mirrored run sees the batches in another order than a one-device run
#: when an epoch has several; with one batch per epoch the order within it does not change the gradient.
#: No dropout: each replica would draw its own masks.
EQUAL_CONFIG = dict(model="seed_cnn", image_size=64, color_mode="grayscale", epochs=3, batch_size=32, limit=32,
                    seed=7, model_kwargs={"dropout": 0.0}, ema_momentum=0.5)
WORKER_CONFIG = dict(model="seed_cnn", name="pair", image_size=64, color_mode="grayscale", epochs=2, batch_size=16,
                     limit=32, seed=7, max_train_minutes=30, distribution="multi_worker")


def tf_config(workers: list[str], kind: str = "worker", index: int = 0, **cluster: list[str]) -> dict[str, str]:
    task = {"type": kind, "index": index}
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": workers, **cluster}, "task": task})}


# -- settings -----------------------------------------------------------------------------------------
def test_distribution_setting_is_checked_when_the_config_is_made():
    assert TrainConfig().distribution == "none" and TrainConfig().mixed_precision is False
    with pytest.raises(ValueError, match=r"one of \['none', 'mirrored', 'multi_worker'\], not 'gpu'"):
        TrainConfig(distribution="gpu")
    with pytest.raises(ValueError, match="distribution must be one of"):
        TrainConfig.from_dict({"distribution": "Mirrored"})
    with pytest.raises(ValueError, match="mixed_precision is true or false"):
        TrainConfig(mixed_precision="yes")


def test_a_run_may_resume_under_another_distribution_but_not_another_precision():
    base = TrainConfig(epochs=3)
    assert TrainConfig(epochs=3, distribution="mirrored").training_fields() == base.training_fields()
    assert TrainConfig(epochs=3, mixed_precision=True).training_fields() != base.training_fields()


@pytest.mark.parametrize("value, message", [
    (None, "TF_CONFIG environment variable, which is not set"),
    ("", "which is not set"),
    ("{cluster: 1}", "TF_CONFIG is not valid JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', "needs a 'cluster' and a 'task'"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "lists no machine"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     r"'worker' and 'chief' machines only .* not \['ps'\]"),
    ('{"cluster": {"worker": ["host-without-port"]}, "task": {"type": "worker", "index": 0}}', "'host:port'"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "must be a list"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task.type is 'chief'"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', r"task.index .* \(0..1\)"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": "1"}}', "task.index"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "task.index"),
])
def test_tf_config_errors_say_what_is_wrong(value, message):
    environ = {} if value is None else {"TF_CONFIG": value}
    with pytest.raises(DistributionError, match=message):
        read_tf_config(environ)


def test_the_chief_is_worker_0_unless_the_cluster_names_one():
    two = ["a:1", "b:1"]
    assert is_chief(read_tf_config(tf_config(two, index=0)))
    assert not is_chief(read_tf_config(tf_config(two, index=1)))
    assert is_chief(read_tf_config(tf_config(two, kind="chief", index=0, chief=["c:1"])))
    assert not is_chief(read_tf_config(tf_config(two, index=0, chief=["c:1"])))
    config = TrainConfig(distribution="multi_worker")
    assert writes_outputs(config, tf_config(two, index=0)) and not writes_outputs(config, tf_config(two, index=1))
    assert writes_outputs(TrainConfig(), {})  # one process: it writes, TF_CONFIG or not


def test_local_tf_configs_give_each_worker_its_place_on_distinct_ports():
    configs = [json.loads(text) for text in local_tf_configs(3)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(c["cluster"]["worker"] == addresses for c in configs)
    assert [is_chief(read_tf_config({"TF_CONFIG": json.dumps(c)})) for c in configs] == [True, False, False]


def test_strategies_and_what_the_card_records(monkeypatch):
    one = distribution_for(TrainConfig())
    assert one.replicas == 1 and one.chief
    assert one.card() == {"distribution": {"strategy": "none", "replicas": 1, "workers": 1}, "precision": "float32"}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DistributionError, match="TF_CONFIG"):  # refused before any strategy is made
        distribution_for(TrainConfig(distribution="multi_worker"))


def test_mixed_precision_is_refused_without_a_gpu(monkeypatch):
    monkeypatch.setattr(dist_module.tf.config, "list_physical_devices", lambda kind=None: [])
    with pytest.raises(DistributionError, match="mixed_precision needs a GPU"):
        distribution_for(TrainConfig(mixed_precision=True))


def test_mixed_precision_builds_in_float16_and_serves_in_float32(monkeypatch):
    """With a GPU (faked: the policy itself works on a CPU), the model is built under mixed_float16, the global
    policy comes back afterwards, and the served copy computes in float32."""
    from agegender.models.builders import build_model
    from agegender.training.loop import inference_copy

    monkeypatch.setattr(dist_module.tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    dist = distribution_for(TrainConfig(mixed_precision=True))
    assert dist.card()["precision"] == "mixed_float16"
    with dist.scope():
        model = build_model("seed_cnn", 64, 1)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("conv_32").dtype_policy.name == "mixed_float16"
    served = inference_copy(model)
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), served.get_weights(), strict=True))
    assert float32_config({"a": [1, {"class_name": "DTypePolicy", "config": {"name": "float32"}}]}) == \
        {"a": [1, {"class_name": "DTypePolicy", "config": {"name": "float32"}}]}


def test_other_workers_keep_their_files_in_a_copy_they_delete(tmp_path):
    run_dir, models_dir = tmp_path / "runs" / "x", tmp_path / "models"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text("{}")
    chief = distribution_for(TrainConfig())
    with run_folder(chief, run_dir) as folder, output_folder(chief, models_dir) as out:
        assert (folder, out) == (run_dir, models_dir)
    other = dist_module.Distribution("multi_worker", chief.strategy, chief=False, workers=2)
    with run_folder(other, run_dir) as folder, output_folder(other, models_dir) as out:
        assert folder != run_dir and (folder / "state.json").read_text() == "{}"  # resumes from the chief's state
        (folder / "state.json").write_text('{"epochs_done": 1}')
        (out / "x.keras").write_text("model")
    assert not folder.exists() and not out.exists()
    assert (run_dir / "state.json").read_text() == "{}" and not models_dir.exists()


# -- training under the strategies (slow) --------------------------------------------------------------
def _run(configs: list[dict], folder: Path, out: Path, env: dict[str, str], logical_cpus: int = 1
         ) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RUNNER), json.dumps(configs), str(folder), str(out),
                             "--logical-cpus", str(logical_cpus)],
                            env={**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes: list[subprocess.Popen], timeout: float = 900) -> list[tuple[int, list[dict], str]]:
    """Each process's exit status, printed runs and error output; if one hangs, all are stopped (a worker left
    alone would wait forever for the others)."""
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            results.append((process.returncode, [json.loads(line) for line in out.splitlines() if line.startswith("{")],
                            err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


def _succeeded(results: list[tuple[int, list[dict], str]]) -> list[list[dict]]:
    for code, _, err in results:
        assert code == 0, err[-3000:]
    return [runs for _, runs, _ in results]


def _weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_mirrored_on_two_devices_trains_as_one_device_at_the_same_global_batch(tiny_folder, tmp_path):
    configs = [{**EQUAL_CONFIG, "name": "one"}, {**EQUAL_CONFIG, "name": "two", "distribution": "mirrored"}]
    [(one, two)] = _succeeded(_finish([_run(configs, tiny_folder, tmp_path, {}, logical_cpus=2)]))
    assert one["distribution"] == {"strategy": "none", "replicas": 1, "workers": 1}
    assert two["distribution"] == {"strategy": "mirrored", "replicas": 2, "workers": 1}
    assert len(one["history"]) == len(two["history"]) == 3
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("loss", "age_out_mae", "gender_out_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["epoch"])
    models = tmp_path / "models"
    # the final models (the EMA weights) agree to float rounding (seen: 3e-7 on weights up to 0.15)
    for a, b in zip(_weights(models / "one" / "one.keras"), _weights(models / "two" / "two.keras"), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)


@pytest.mark.slow
def test_two_local_workers_train_one_model_that_the_chief_writes(tiny_folder, tmp_path):
    scratch = tmp_path / "scratch"  # the workers' temporary folders
    scratch.mkdir()

    def pair(outs: tuple[str, str] = ("out", "out")) -> list[tuple[int, list[dict], str]]:
        return _finish([_run([WORKER_CONFIG], tiny_folder, tmp_path / out, {"TF_CONFIG": tf_config_text,
                                                                             "TMPDIR": str(scratch)})
                        for tf_config_text, out in zip(local_tf_configs(2), outs, strict=True)])

    [chief], [other] = _succeeded(pair())
    for worker in (chief, other):
        assert worker["distribution"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2}
        assert [epoch["epoch"] for epoch in worker["history"]] == [1, 2]
    assert chief["history"] == other["history"]  # one training ...
    assert chief["wall_seconds"] == other["wall_seconds"]  # ... timed by the chief's clock on both (the budget)
    models = tmp_path / "out" / "models" / "pair"
    assert sorted(p.name for p in models.iterdir()) == ["pair.json", "pair.keras"]
    card = json.loads((models / "pair.json").read_text())
    assert card["training"]["distribution"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2}
    assert card["training"]["epochs_completed"] == 2 and card["config"]["distribution"] == "multi_worker"
    assert [p.name for p in (tmp_path / "out" / "runs").iterdir()] == ["pair"]
    assert list(scratch.iterdir()) == []  # the other worker deleted its copies

    # run again: both resume from the chief's checkpoint (the run is complete: they only re-finish it)
    written = (models / "pair.keras").stat().st_mtime_ns
    [chief_again], [other_again] = _succeeded(pair())
    assert chief_again["history"] == other_again["history"] == chief["history"]
    assert (models / "pair.keras").stat().st_mtime_ns > written
    assert sorted(p.name for p in models.iterdir()) == ["pair.json", "pair.keras"]
    assert list(scratch.iterdir()) == []

    # a worker that cannot see the chief's run folder would start afresh while the chief resumes: both refuse
    for code, _, err in pair(("out", "elsewhere")):
        assert code != 0 and "the workers would start from different epochs" in err
    assert list(scratch.iterdir()) == []
