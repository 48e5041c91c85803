"""`agegender predict-batch` (Ray Data): sources, Parquet parts, resume after a kill, and the same results as
`agegender predict`. The tests that start Ray are marked slow and share one embedded Ray where they can."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from agegender.serving import batch
from agegender.serving.batch import (NO_FACE, PHOTO_SCHEMA, SCHEMA, PartStore, expand_sources, flatten_photos,
                                     predict_decoded)
from agegender.serving.predict import FacePrediction

from conftest import REPO, SAMPLE, corrupt_jpeg, sample_names

ASSETS = Path(__file__).parent / "assets"


def _crops(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(SAMPLE / name, folder / name)) for name in sample_names()[start:start + count]]


def _bad_files(folder: Path) -> dict[str, str]:
    """A corrupt JPEG, an empty file and a text file named .jpg: name -> what ``agegender predict`` reports."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.jpg").write_bytes(corrupt_jpeg((SAMPLE / sample_names()[0]).read_bytes()))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture\n" * 5)
    return {"corrupt.jpg": "corrupt", "empty.jpg": "empty file", "text.jpg": "not an image file"}


def _read(output: Path) -> pa.Table:
    return pq.read_table(output, schema=SCHEMA)


# -- without Ray ------------------------------------------------------------------------------------------------
def test_expand_sources_folders_globs_and_lists(tmp_path):
    photos = _crops(tmp_path / "a", 3)
    (tmp_path / "a" / "notes.csv").write_text("x")  # not an image: left out, as by agegender predict
    more = _crops(tmp_path / "b", 2, start=3)
    listed = tmp_path / "lists" / "photos.txt"
    listed.parent.mkdir()
    listed.write_text(f"# chosen\n\n../b/{more[0].name}\n{more[1]}\nmissing.jpg\n")
    assert expand_sources([tmp_path / "a"]) == [str(p) for p in photos]
    # the same photos named several ways are taken once
    found = expand_sources([listed, str(tmp_path / "a" / "*.jpg"), tmp_path / "a", tmp_path / "lists" / ".." / "b"])
    assert found == sorted(map(str, [*photos, *more, listed.parent / "missing.jpg"]))  # a listed missing file stays
    assert all(os.path.isabs(p) for p in found)
    (tmp_path / "notes.csv").write_text("x")
    assert expand_sources([str(tmp_path / "*")]) == sorted(map(str, photos + more))  # folders and images a glob matches
    for sources, message in (([tmp_path / "nothing"], "no such file or folder"),
                             ([str(tmp_path / "*.png")], "matches no file"), ([], "no SOURCE"),
                             ([tmp_path / "lists"], "no photos")):
        with pytest.raises(ValueError, match=message):
            expand_sources(sources)
    listed.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ValueError, match="cannot read the list of photos"):
        expand_sources([listed])


def test_part_store_writes_whole_parts_and_reads_what_is_done(tmp_path):
    output = tmp_path / "out.parquet"
    store = PartStore(output)
    face = {"path": "/p/a.jpg", "face": 0, "age": 30.0, "age_low": 25.0, "age_high": 36.0, "gender": "male",
            "gender_probability": 0.9, "box_x": 0, "box_y": 0, "box_w": 10, "box_h": 10, "model_sha256": "abc"}
    first = store.write(pa.Table.from_pylist([face, {**face, "face": 1}], schema=SCHEMA), {"aligned": False})
    (output / ".part-00001.parquet.tmp").write_bytes(b"half a part")  # what a kill while writing leaves
    store = PartStore(output)
    assert not (output / ".part-00001.parquet.tmp").exists()
    second = store.write(pa.Table.from_pylist([{"path": "/p/b.jpg", "error": NO_FACE}], schema=SCHEMA))
    assert [first.name, second.name] == ["part-00000.parquet", "part-00001.parquet"] == [p.name for p in store.parts()]
    done = store.done()
    assert (done.paths, done.face_rows, done.error_rows, done.model_sha256, done.aligned) == \
        ({"/p/a.jpg", "/p/b.jpg"}, 2, 1, {"abc"}, {False})
    assert _read(output).num_rows == 3  # the folder reads as one table
    (tmp_path / "file.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        PartStore(tmp_path / "file.parquet")


class _FakePredictor:
    """Faces by the photo's width: 1 px wide photos have none, 3 px two, 5 px raise."""

    def faces_in(self, image, aligned):
        if image.width == 5:
            raise ValueError("odd photo")
        count = 0 if image.width == 1 else 2
        return [np.zeros((4, 4, 3), np.uint8)] * count, [[i, 0, 1, 1] for i in range(count)]

    def predict_crops(self, crops, boxes):
        return [FacePrediction(20.0 + i, 18.0, 25.0, "female", 0.75, list(box)) for i, box in enumerate(boxes)]


def test_predict_decoded_gives_every_photo_its_rows():
    def decoded(path, width=None, error=None):
        pixels = None if width is None else bytes(3 * width)
        return {"path": path, "error": error, "pixels": pixels, "height": None if width is None else 1, "width": width}

    rows = [decoded("/a", 3), decoded("/none", 1), decoded("/bad", error="/bad: empty file (0 bytes)"),
            decoded("/odd", 5)]
    photos = predict_decoded(_FakePredictor(), pa.Table.from_pylist(rows, schema=batch.DECODED_SCHEMA), False, "h")
    assert photos.schema == PHOTO_SCHEMA and photos.column("path").to_pylist() == ["/a", "/none", "/bad", "/odd"]
    table = flatten_photos(photos).to_pylist()
    assert [(r["path"], r["face"], r["age"], r["box_x"], r["model_sha256"]) for r in table[:2]] == \
        [("/a", 0, 20.0, 0, "h"), ("/a", 1, 21.0, 1, "h")]
    assert [(r["path"], r["error"], r["age"], r["model_sha256"]) for r in table[2:]] == \
        [("/none", NO_FACE, None, None), ("/bad", "/bad: empty file (0 bytes)", None, None),
         ("/odd", "/odd: ValueError: odd photo", None, None)]


def test_missing_ray_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(RuntimeError, match=r"pip install \.\[cluster\]"):
        batch.import_ray()
    from agegender.cli import main

    assert main(["predict-batch", str(SAMPLE), "--output", str(tmp_path / "out.parquet")]) == 2
    assert "pip install .[cluster]" in capsys.readouterr().err
    assert not (tmp_path / "out.parquet").exists()


def test_clear_errors_before_ray_starts(tmp_path, capsys):
    pytest.importorskip("ray")
    from agegender.cli import main

    out = str(tmp_path / "out.parquet")
    assert main(["predict-batch", str(SAMPLE), "--output", out, "--model", str(tmp_path / "none.keras")]) == 2
    assert "model file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict-batch", str(tmp_path / "empty"), "--output", out]) == 2
    assert "no photos" in capsys.readouterr().err
    assert main(["predict-batch", str(tmp_path / "nowhere"), "--output", out]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_predict_and_the_package_do_not_import_ray():
    code = ("import sys; import agegender.cli, agegender.serving.predict, agegender.serving.batch; "
            "agegender.cli.build_parser(); assert 'ray' not in sys.modules, 'ray imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- with Ray ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray for the tests of this module (predict_batch leaves a running Ray running)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def predictor():
    from agegender.serving.predict import Predictor

    return Predictor.load()


def _assert_same_as_predict(table: pa.Table, results: list[dict]) -> None:
    """The Parquet rows are `agegender predict --json`'s results, one row per face or error."""
    by_path: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_path.setdefault(row["path"], []).append(row)
    assert sorted(by_path) == sorted(r["path"] for r in results)
    for result in results:
        rows = sorted(by_path[result["path"]], key=lambda r: r["face"] if r["face"] is not None else -1)
        if "error" in result or not result["faces"]:
            assert len(rows) == 1 and rows[0]["error"] == result.get("error", NO_FACE)
            assert all(value is None for key, value in rows[0].items() if key not in ("path", "error"))
            continue
        assert [r["face"] for r in rows] == list(range(len(result["faces"])))
        for row, face in zip(rows, result["faces"]):
            assert row["error"] is None and row["gender"] == face["gender"]
            assert [row["box_x"], row["box_y"], row["box_w"], row["box_h"]] == face["box"]
            for key in ("age", "age_low", "age_high", "gender_probability"):
                assert row[key] == pytest.approx(face[key], abs=1e-3), key


@pytest.mark.slow
def test_photos_crops_and_bad_files_match_predict(ray_session, predictor, tmp_path):
    photos = tmp_path / "photos"
    _crops(photos, 3)
    for asset in ("face.jpg", "group3.jpg"):
        shutil.copyfile(ASSETS / asset, photos / asset)
    Image.new("RGB", (320, 240), (90, 140, 200)).save(photos / "sky.jpg")  # no face
    bad = _bad_files(photos)
    (photos / "notes.txt").write_text("not a photo: left out")

    summary = batch.predict_batch([photos], tmp_path / "out.parquet", num_workers=1, batch_size=2, part_size=3,
                                  progress=False)
    table = _read(tmp_path / "out.parquet")
    results = predictor.predict_files([photos])
    assert summary.predicted == len(results) == 9  # 3 crops, 2 photos, a sky, 3 bad files; not the notes
    assert summary.parts_written == len(PartStore(tmp_path / "out.parquet").parts()) >= 2
    assert table.num_rows == summary.total_face_rows + summary.total_error_rows
    group = [r for r in results if r["path"].endswith("group3.jpg")][0]
    assert len(group["faces"]) == 3  # one row per face below
    _assert_same_as_predict(table, results)
    errors = {Path(r["path"]).name: r["error"] for r in table.to_pylist() if r["error"]}
    assert errors.keys() == {*bad, "sky.jpg"} and errors["sky.jpg"] == NO_FACE
    assert all(what in errors[name] for name, what in bad.items())
    assert len(set(table.column("model_sha256").drop_null().to_pylist())) == 1

    # --aligned: each image is one face, its box the whole image, as `agegender predict --aligned`
    crops = tmp_path / "crops"
    _crops(crops, 5, start=10)
    _bad_files(crops)
    summary = batch.predict_batch([crops], tmp_path / "aligned.parquet", aligned=True, batch_size=4,
                                  progress=False)
    table = _read(tmp_path / "aligned.parquet")
    assert (summary.face_rows, summary.error_rows) == (5, 3)
    _assert_same_as_predict(table, predictor.predict_files([crops], aligned=True))
    with pytest.raises(ValueError, match="written with --aligned"):  # a resumed output keeps its mode
        batch.predict_batch([photos], tmp_path / "aligned.parquet", progress=False)


@pytest.mark.slow
def test_ray_data_runs_within_the_streaming_budget_and_leaves_the_context_as_it_was(ray_session, monkeypatch,
                                                                                     tmp_path):
    """Memory stays flat because Ray Data may hold only STREAMING_BUDGET bytes in flight (docs/scaling.md)."""
    context = ray_session.data.DataContext.get_current()
    before = context.execution_options.resource_limits
    seen = []
    write_parts = batch._write_parts

    def spy(*args, **kwargs):
        seen.append(context.execution_options.resource_limits.object_store_memory)
        return write_parts(*args, **kwargs)

    monkeypatch.setattr(batch, "_write_parts", spy)
    _crops(tmp_path / "crops", 2)
    summary = batch.predict_batch([tmp_path / "crops"], tmp_path / "out.parquet", aligned=True, progress=False)
    assert summary.face_rows == 2
    assert seen == [batch.STREAMING_BUDGET]
    assert context.execution_options.resource_limits == before


def _kill_session(session: int) -> None:
    """SIGKILL every process of ``session`` (the command and whatever it started), until none is left."""
    import psutil

    for _ in range(50):
        alive = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
                    alive.append(process)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes of session {session} still alive")


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicates(ray_session, tmp_path):
    crops = tmp_path / "crops"
    photos = _crops(crops, 80)
    (crops / "empty.jpg").write_bytes(b"")
    output = tmp_path / "out.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    # the command runs as a driver of this module's Ray (--ray-address: no second Ray to start) and is killed
    command = [sys.executable, "-m", "agegender.cli", "predict-batch", str(crops), "--aligned", "--output",
               str(output), "--batch-size", "2", "--part-size", "2", "--no-progress",
               "--ray-address", ray_session.get_runtime_context().gcs_address]
    log = tmp_path / "driver.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=handle, stderr=handle)
    try:
        deadline = time.monotonic() + 600
        while not (output / "part-00000.parquet").exists():
            assert process.poll() is None, f"predict-batch ended before writing a part:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no part after 10 minutes"
            time.sleep(0.02)
    finally:
        _kill_session(process.pid)  # a crash: SIGKILL, no chance to clean up (Ray ends the dead driver's actors)
        process.wait()
    before = {part.name: part.read_bytes() for part in PartStore(output).parts()}
    done = PartStore(output).done().paths
    assert 0 < len(done) < len(photos) + 1, "the run was not interrupted midway"

    summary = batch.predict_batch([crops], output, aligned=True, batch_size=8, part_size=16, progress=False)
    assert (summary.skipped, summary.predicted) == (len(done), len(photos) + 1 - len(done))
    for name, content in before.items():  # the parts written before the kill are kept as they were
        assert (output / name).read_bytes() == content
    paths = _read(output).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == len(photos) + 1  # aligned: one row per image, none twice, none missing
    assert set(paths) == {str(p) for p in photos} | {str(crops / "empty.jpg")}

    again = batch.predict_batch([crops], output, aligned=True, progress=False)  # nothing left to do
    assert (again.predicted, again.parts_written, again.skipped) == (0, 0, len(photos) + 1)
