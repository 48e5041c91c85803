"""Batch prediction on Ray Data (``agegender predict-batch``): many photos in, one Parquet row per face out.

The driver lists the photos (sorted), leaves out those already in the output and streams the rest through Ray
Data: Ray tasks read and decode the files (:func:`decode_photos`), a fixed pool of actors runs the face detector
and the model, one TFLite interpreter each (:class:`FaceWorker`), and the driver writes the results as numbered
Parquet parts, each complete or absent (written to a temporary name, then ``os.replace``).

The output ``OUT.parquet`` is a folder of parts ``part-00000.parquet``, ``part-00001.parquet``, ... that pandas,
pyarrow, DuckDB, Spark and Ray read as one table. All rows of a photo are in one part, so rerunning the same
command after a crash or Ctrl-C reads the parts' ``path`` column and predicts only the photos not in it.

Ray is optional (``pip install .[cluster]``): it is imported only when a batch runs, never by ``agegender
predict`` or the app.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import default_model_path
from ..data.images import IMAGE_EXTENSIONS, ImageError, has_image_signature, image_files_in, open_image
from .modelio import ModelFileError, file_sha256, read_card

if TYPE_CHECKING:
    from .predict import Predictor

log = logging.getLogger(__name__)

RAY_REQUIREMENT = "ray[data]==2.58.0"
NO_FACE = "no face found"
#: Files given as SOURCE that hold a list of paths, one a line (any other file is a photo).
LIST_SUFFIXES = (".txt", ".lst")
#: CPUs a decoding task asks Ray for. Not the actors' request, so that Ray Data keeps decoding in tasks of its own
#: rather than fusing it into the actors (operators with equal requests are fused).
DECODE_CPUS = 0.5
#: Bytes of decoded photos and results Ray Data may hold in the object store at once. Decoding is faster than
#: prediction, so without a bound it runs ahead and the queue of decoded photos grows with the collection (up to
#: Ray's default store of 30 % of RAM); with it, decoding waits and memory stays flat in the number of photos.
STREAMING_BUDGET = 256 * 2**20
#: The object store of an embedded Ray (started here, not joined): the budget plus room for the actors' results.
EMBEDDED_OBJECT_STORE = 2 * STREAMING_BUDGET

#: The output: one row per face; one row per photo that could not be read or has no face (``error`` set, every
#: other column but ``path`` null). ``face`` numbers a photo's faces from 0, left to right; boxes are in pixels of
#: the photo as decoded (EXIF orientation applied).
SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("face", pa.int32()),
    pa.field("age", pa.float64()),
    pa.field("age_low", pa.float64()),
    pa.field("age_high", pa.float64()),
    pa.field("gender", pa.string()),
    pa.field("gender_probability", pa.float64()),
    pa.field("box_x", pa.int32()),
    pa.field("box_y", pa.int32()),
    pa.field("box_w", pa.int32()),
    pa.field("box_h", pa.int32()),
    pa.field("model_sha256", pa.string()),
    pa.field("error", pa.string()),
])
#: Between the actors and the driver: one row per photo holding all its output rows, so that a part never splits
#: a photo.
PHOTO_SCHEMA = pa.schema([pa.field("path", pa.string()), pa.field("rows", pa.list_(pa.struct(list(SCHEMA))))])
#: Between the decoding tasks and the actors: RGB pixels, or why there are none.
DECODED_SCHEMA = pa.schema([pa.field("path", pa.string()), pa.field("error", pa.string()),
                            pa.field("pixels", pa.large_binary()), pa.field("height", pa.int32()),
                            pa.field("width", pa.int32())])


def import_ray():
    """The ``ray`` module with Ray Data, or a RuntimeError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"agegender predict-batch needs Ray Data, an optional dependency: pip install .[cluster] "
                           f"(or pip install \"{RAY_REQUIREMENT}\"); missing: {exc.name or exc}") from None
    return ray


# -- the photos --------------------------------------------------------------------------------------------
_GLOB = re.compile(r"[*?[]")


def read_path_list(path: str | os.PathLike) -> list[str]:
    """The paths in a list file, one a line: blank lines and ``#`` comments skipped, relative paths taken from the
    list's folder. Raises ValueError if the file cannot be read as text."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the list of photos {path}: {exc}") from None
    entries = [line.strip() for line in lines]
    return [os.path.join(path.parent, entry) for entry in entries if entry and not entry.startswith("#")]


def _photos_at(path: str) -> list[str]:
    """A folder's image files (as ``agegender predict`` takes them), else the path itself."""
    if os.path.isdir(path):
        try:
            found = [str(p) for p in image_files_in(path)]
        except OSError as exc:
            raise ValueError(f"cannot list the folder {path}: {exc}") from None
        if not found:
            log.warning("%s: a folder with no image files in it", path)
        return found
    return [path]


def _looks_like_image(path: str) -> bool:
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return True
    try:
        return has_image_signature(path)
    except OSError:
        return False


def expand_sources(sources: Sequence[str | os.PathLike]) -> list[str]:
    """The photos named by SOURCE arguments: absolute paths, sorted, each once.

    A folder stands for the image files directly inside it (as for ``agegender predict``); a glob (``*``, ``?``,
    ``[``) for the folders and image files it matches (images by name or by their first bytes); a ``.txt`` or ``.lst`` file for the paths listed in it (see :func:`read_path_list`;
    a listed photo that is missing is kept and gets an error row); any other file is a photo. Raises ValueError
    for a SOURCE that names nothing, an unreadable list, or no photo at all.
    """
    if not sources:
        raise ValueError("no SOURCE given: name folders, files, globs or lists of paths")
    found: set[str] = set()
    for source in map(str, sources):
        if not source:
            raise ValueError("an empty SOURCE: name a folder, a file, a glob or a list of paths")
        if os.path.isfile(source) and source.lower().endswith(LIST_SUFFIXES):
            for entry in read_path_list(source):
                found.update(_photos_at(entry))
        elif os.path.exists(source):
            found.update(_photos_at(source))
        elif _GLOB.search(source):
            matches = glob.glob(source)
            if not matches:
                raise ValueError(f"{source}: the pattern matches no file")
            for match in matches:  # files a pattern matches count if they are images by name or bytes
                if os.path.isdir(match) or _looks_like_image(match):
                    found.update(_photos_at(match))
        else:
            raise ValueError(f"{source}: no such file or folder")
    if not found:
        raise ValueError(f"no photos in {', '.join(map(str, sources))}")
    return sorted({os.path.abspath(p) for p in found})  # abspath normalises: a/../b/x.jpg is b/x.jpg


# -- the output: Parquet parts -------------------------------------------------------------------------------
@dataclass
class Done:
    """What the parts of an output folder already hold."""

    paths: set[str]
    face_rows: int
    error_rows: int
    model_sha256: set[str]
    aligned: set[bool]


class PartStore:
    """An output folder of numbered Parquet parts (``part-00000.parquet``, ...), each written whole.

    A part is written to a hidden temporary file (which Parquet readers skip) and renamed into place, so a
    crash leaves only complete parts; leftover temporary files are removed when the store is opened.
    """

    PREFIX, SUFFIX = "part-", ".parquet"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{self.folder} is a file; predict-batch writes a folder of Parquet parts there: "
                             "choose another --output")
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f".{self.PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
        parts = self.parts()
        self._next = 1 + max((int(p.name[len(self.PREFIX):-len(self.SUFFIX)]) for p in parts), default=-1)

    def parts(self) -> list[Path]:
        """The complete parts, in the order they were written."""
        pattern = re.compile(rf"{self.PREFIX}\d+{re.escape(self.SUFFIX)}")
        return sorted(p for p in self.folder.iterdir() if pattern.fullmatch(p.name))

    def done(self) -> Done:
        """The photos the parts hold (their ``path`` column), and the models and modes they were made with."""
        paths: set[str] = set()
        face_rows = error_rows = 0
        hashes: set[str] = set()
        aligned: set[bool] = set()
        for part in self.parts():
            try:
                with pq.ParquetFile(part) as file:
                    table = file.read(columns=["path", "model_sha256", "error"])
                    meta = json.loads((file.schema_arrow.metadata or {}).get(b"agegender", b"{}"))
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(f"{part} is not a readable Parquet part ({exc}); move it away and run again") from None
            paths.update(table.column("path").to_pylist())
            faces = table.column("error").null_count  # face rows have no error
            face_rows += faces
            error_rows += table.num_rows - faces
            hashes.update(h for h in pc.unique(table.column("model_sha256")).to_pylist() if h)
            if "aligned" in meta:
                aligned.add(bool(meta["aligned"]))
        return Done(paths, face_rows, error_rows, hashes, aligned)

    def write(self, table: pa.Table, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``table`` as the next part, atomically; returns its path."""
        if metadata:
            table = table.replace_schema_metadata({"agegender": json.dumps(metadata)})
        final = self.folder / f"{self.PREFIX}{self._next:05d}{self.SUFFIX}"
        temporary = self.folder / f".{final.name}.tmp"
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        self._next += 1
        return final


def flatten_photos(photos: pa.Table) -> pa.Table:
    """One row per face or error (:data:`SCHEMA`) from the actors' one row per photo (:data:`PHOTO_SCHEMA`)."""
    rows = pc.list_flatten(photos.column("rows")).combine_chunks()
    if len(rows) == 0:
        return SCHEMA.empty_table()
    return pa.Table.from_struct_array(rows).cast(SCHEMA)


# -- the work: decoding tasks and predicting actors ---------------------------------------------------------
def decode_photos(batch: pa.Table) -> pa.Table:
    """Ray task: read and decode each ``path`` as ``agegender predict`` does (:func:`open_image`: EXIF orientation,
    transparency on white) into RGB pixels; a file that cannot be used gets the reason in ``error``."""
    columns: dict[str, list] = {name: [] for name in DECODED_SCHEMA.names}
    for path in batch.column("path").to_pylist():
        try:
            array = np.asarray(open_image(path), dtype=np.uint8)
            values = (None, array.tobytes(), array.shape[0], array.shape[1])
        except ImageError as exc:
            values = (str(exc), None, None, None)
        for name, value in zip(DECODED_SCHEMA.names, (path, *values)):
            columns[name].append(value)
    return pa.table(columns, schema=DECODED_SCHEMA)


def _error_row(path: str, error: str) -> dict[str, Any]:
    return {"path": path, "error": error}


def predict_decoded(predictor: Predictor, batch: pa.Table, aligned: bool, model_sha256: str) -> pa.Table:
    """The output rows of a batch of decoded photos (:data:`DECODED_SCHEMA`), one row per photo holding them
    (:data:`PHOTO_SCHEMA`). Faces are found and cut as ``agegender predict`` does (``Predictor.faces_in``; the whole
    image when ``aligned``) and all faces of the batch go through the model together."""
    from PIL import Image

    paths = batch.column("path").to_pylist()
    errors = batch.column("error").to_pylist()
    pixels, heights, widths = (batch.column(name) for name in ("pixels", "height", "width"))
    crops: list[np.ndarray] = []
    boxes: list[list[int]] = []
    owners: list[int] = []
    for i, path in enumerate(paths):
        if errors[i] is not None:
            continue
        try:
            shape = (heights[i].as_py(), widths[i].as_py(), 3)
            rgb = np.frombuffer(pixels[i].as_buffer(), dtype=np.uint8).reshape(shape)
            faces, face_boxes = predictor.faces_in(Image.fromarray(rgb), aligned)
        except Exception as exc:  # noqa: BLE001  (one odd photo must not end a long run: it gets an error row)
            errors[i] = f"{path}: {type(exc).__name__}: {exc}"
            continue
        crops.extend(faces)
        boxes.extend(face_boxes)
        owners.extend([i] * len(faces))
    predictions = predictor.predict_crops(np.stack(crops), boxes) if crops else []
    rows: list[list[dict[str, Any]]] = [[] for _ in paths]
    for i, prediction in zip(owners, predictions):
        x, y, w, h = (int(v) for v in prediction.box)
        rows[i].append({"path": paths[i], "face": len(rows[i]), "age": prediction.age, "age_low": prediction.age_low,
                        "age_high": prediction.age_high, "gender": prediction.gender,
                        "gender_probability": prediction.gender_probability, "box_x": x, "box_y": y, "box_w": w,
                        "box_h": h, "model_sha256": model_sha256})
    for i, path in enumerate(paths):
        if errors[i] is not None or not rows[i]:
            rows[i] = [_error_row(path, errors[i] or NO_FACE)]
    return pa.table({"path": paths, "rows": rows}, schema=PHOTO_SCHEMA)


class FaceWorker:
    """Ray actor of the pool: loads the face detector and the model once (one TFLite interpreter with
    ``num_threads`` threads) and predicts batches of decoded photos (:func:`predict_decoded`)."""

    def __init__(self, model_path: str, aligned: bool, model_sha256: str, num_threads: int = 1):
        from .predict import Predictor

        self.predictor = Predictor.load(model_path, num_threads=num_threads)
        self.aligned, self.model_sha256 = aligned, model_sha256
        if not aligned:
            self.predictor.detector  # noqa: B018  (load the detector now, not inside the first batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return predict_decoded(self.predictor, batch, self.aligned, self.model_sha256)


# -- the driver ------------------------------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a run did: photos named, photos skipped as already done, rows written now and in all."""

    output: Path
    photos: int
    skipped: int
    predicted: int
    face_rows: int
    error_rows: int
    parts_written: int
    total_face_rows: int
    total_error_rows: int

    def __str__(self) -> str:
        skipped = f"{self.skipped:,} already in the output, " if self.skipped else ""
        return (f"{self.photos:,} photos: {skipped}{self.predicted:,} predicted now ({self.face_rows:,} faces; "
                f"{self.error_rows:,} photos unreadable or without a face) in {self.parts_written} new parts. "
                f"{self.output} holds {self.total_face_rows:,} face rows and {self.total_error_rows:,} error rows")


def _check_model(model_path: str | os.PathLike) -> str:
    """The SHA-256 of the model file, after checking that it and its card are there."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found; pass --model PATH to an existing .keras or .tflite file")
    read_card(path)  # raises ModelFileError with the reason
    return file_sha256(path)


def _init_ray(ray, address: str | None, num_cpus: int) -> bool:
    """Connect to ``address`` or start an embedded local Ray; False if Ray was already running here."""
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=EMBEDDED_OBJECT_STORE, **quiet)
    return True


def _dataset(ray, todo: list[str], *, model_path: str, model_sha256: str, aligned: bool, num_workers: int,
             threads: int, batch_size: int):
    """The Ray Data pipeline: paths -> decoding tasks -> the actor pool -> one row per photo (:data:`PHOTO_SCHEMA`)."""
    return (ray.data.from_items([{"path": p} for p in todo], override_num_blocks=math.ceil(len(todo) / batch_size))
            .map_batches(decode_photos, batch_size=batch_size, batch_format="pyarrow", num_cpus=DECODE_CPUS)
            .map_batches(FaceWorker, batch_size=batch_size, batch_format="pyarrow",
                         compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=threads,
                         fn_constructor_kwargs=dict(model_path=model_path, aligned=aligned, model_sha256=model_sha256,
                                                    num_threads=threads)))


def _write_parts(photos: Iterable[pa.Table], store: PartStore, summary: BatchSummary, part_size: int,
                 metadata: dict[str, Any], progress: bool) -> None:
    """Write the streamed per-photo results as parts of at least ``part_size`` photos (the last may be smaller)."""
    from tqdm.auto import tqdm

    pending: list[pa.Table] = []

    def flush() -> None:
        table = flatten_photos(pa.concat_tables(pending))
        faces = table.column("error").null_count
        store.write(table, metadata)
        summary.predicted += sum(block.num_rows for block in pending)
        summary.face_rows += faces
        summary.error_rows += table.num_rows - faces
        summary.parts_written += 1
        pending.clear()

    with tqdm(total=summary.photos, initial=summary.skipped, unit="photo", disable=not progress,
              desc="predict-batch") as bar:
        for block in photos:
            pending.append(block)
            bar.update(block.num_rows)
            if sum(b.num_rows for b in pending) >= part_size:
                flush()
        if pending:
            flush()


def predict_batch(sources: Sequence[str | os.PathLike], output: str | os.PathLike, *, aligned: bool = False,
                  model_path: str | os.PathLike | None = None, ray_address: str | None = None, num_workers: int = 1,
                  batch_size: int = 16, part_size: int = 1000, progress: bool = True) -> BatchSummary:
    """Predict every photo named by ``sources`` that ``output`` does not hold yet, writing parts of ``part_size``
    photos (see the module's docstring). ``num_workers`` actors predict; ``ray_address`` names a running Ray
    cluster (else Ray runs here, embedded, and stops at the end; a Ray already running in this process is used and
    left running). Memory stays flat in the number of photos: the driver holds their paths and one part."""
    ray = import_ray()
    if num_workers < 1 or batch_size < 1 or part_size < 1:
        raise ValueError("--num-workers, --batch-size and --part-size must be at least 1")
    model_path = str(model_path or default_model_path())
    model_sha256 = _check_model(model_path)
    photos = expand_sources(sources)
    store = PartStore(output)
    done = store.done()
    if done.model_sha256 - {model_sha256}:
        raise ValueError(f"{store.folder} holds predictions of another model (SHA-256 "
                         f"{', '.join(sorted(done.model_sha256))}); choose another --output to use {model_path}")
    if done.aligned - {aligned}:
        raise ValueError(f"{store.folder} was written {'with' if not aligned else 'without'} --aligned; run the same "
                         "command again to resume it, or choose another --output")
    todo = [p for p in photos if p not in done.paths]
    summary = BatchSummary(store.folder, len(photos), len(photos) - len(todo), 0, 0, 0, 0,
                           done.face_rows, done.error_rows)
    if todo:
        cpus = os.cpu_count() or 1
        threads = max(1, cpus // num_workers) if not ray_address else 1
        started = _init_ray(ray, ray_address, num_cpus=max(cpus, num_workers * threads + 1))
        context = ray.data.DataContext.get_current()
        options = context.execution_options
        saved = (context.enable_progress_bars, context.print_on_execution_start, options.preserve_order,
                 options.resource_limits)
        try:
            context.enable_progress_bars = False  # one bar, of photos (_write_parts)
            context.print_on_execution_start = False
            options.preserve_order = True  # parts in the order of the sorted paths
            options.resource_limits = options.resource_limits.copy(object_store_memory=STREAMING_BUDGET)
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
            dataset = _dataset(ray, todo, model_path=model_path, model_sha256=model_sha256, aligned=aligned,
                               num_workers=num_workers, threads=threads, batch_size=batch_size)
            metadata = {"model": model_path, "model_sha256": model_sha256, "aligned": aligned}
            _write_parts(dataset.iter_batches(batch_size=None, batch_format="pyarrow"), store, summary, part_size,
                         metadata, progress)
        finally:
            (context.enable_progress_bars, context.print_on_execution_start, options.preserve_order,
             options.resource_limits) = saved
            if started:
                ray.shutdown()
    summary.total_face_rows += summary.face_rows
    summary.total_error_rows += summary.error_rows
    return summary
