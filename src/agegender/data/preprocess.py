"""Decode a list of face crops into one uint8 array, in parallel, cached on disk.

The cache key is a hash of the file list (names, sizes, modification times) and
the preprocessing parameters, so changing either invalidates it; a cached run
loads a single ``.npy`` file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import cache_dir
from .images import DEFAULT_RESIZE, ImageError, channels, load_for_model

log = logging.getLogger(__name__)
CACHE_VERSION = 3


@dataclass
class ImageArray:
    """Decoded images and which input rows they came from."""

    images: np.ndarray  # uint8, (N, size, size, channels)
    kept: np.ndarray  # bool per input path: False where decoding failed
    errors: dict[str, str]  # path -> reason, for the rows that failed
    from_cache: bool
    seconds: float


def cache_key(paths: list[str], image_size: int, color_mode: str, resize: str = DEFAULT_RESIZE) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}|{color_mode}|{resize}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_all(paths: list[str], image_size: int, color_mode: str, resize: str, workers: int,
                progress: bool) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    out = np.zeros((len(paths), image_size, image_size, channels(color_mode)), dtype=np.uint8)
    kept = np.ones(len(paths), dtype=bool)
    errors: dict[str, str] = {}

    def work(index: int) -> None:
        try:
            out[index] = load_for_model(paths[index], image_size, color_mode, resize)
        except ImageError as exc:
            kept[index] = False
            errors[paths[index]] = str(exc)

    # OpenCV releases the GIL while decoding and resizing, so threads scale without
    # the pickling cost of processes and write straight into the output array.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(work, range(len(paths))),
                  total=len(paths), disable=not progress, desc=f"decode {image_size}px {color_mode}",
                  mininterval=1.0))
    return out, kept, errors


def load_images(paths: list[str] | pd.Series, image_size: int, color_mode: str, *,
                resize: str = DEFAULT_RESIZE, use_cache: bool = True, workers: int | None = None, progress: bool = True) -> ImageArray:
    """Decode ``paths`` into uint8 arrays of ``image_size`` squared.

    Corrupt files are not fatal: their rows are marked in ``kept`` and explained
    in ``errors``; callers drop them (see :func:`load_split_arrays`).
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no images to preprocess")
    start = time.perf_counter()
    workers = workers or max(2, os.cpu_count() or 2)
    key = cache_key(paths, image_size, color_mode, resize)
    folder = cache_dir()
    array_file, meta_file = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache and array_file.exists() and meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            images = np.load(array_file)
            kept = np.asarray(meta["kept"], dtype=bool)
            if images.shape[0] == len(paths):
                return ImageArray(images, kept, meta["errors"], True, time.perf_counter() - start)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring damaged cache %s: %s", array_file, exc)
    images, kept, errors = _decode_all(paths, image_size, color_mode, resize, workers, progress)
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = array_file.with_suffix(".tmp.npy")
        np.save(tmp, images)
        tmp_meta = meta_file.with_suffix(".tmp.json")
        tmp_meta.write_text(json.dumps({"kept": kept.tolist(), "errors": errors, "image_size": image_size,
                                        "color_mode": color_mode, "resize": resize,
                                        "count": len(paths)}))
        os.replace(tmp, array_file)
        os.replace(tmp_meta, meta_file)
    if errors:
        log.warning("%d images could not be decoded, e.g. %s", len(errors), next(iter(errors.values())))
    return ImageArray(images, kept, errors, False, time.perf_counter() - start)


def load_split_arrays(frame: pd.DataFrame, image_size: int, color_mode: str, **kwargs) -> tuple[np.ndarray, pd.DataFrame, dict[str, str]]:
    """Images for every row of ``frame`` that decodes, and the matching rows."""
    result = load_images(frame["path"].tolist(), image_size, color_mode, **kwargs)
    if result.kept.all():
        return result.images, frame.reset_index(drop=True), result.errors
    rows = frame[result.kept].reset_index(drop=True)
    return result.images[result.kept], rows, result.errors
