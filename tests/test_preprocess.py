"""Batch decoding into uint8 arrays, the on-disk cache and its invalidation, dropping corrupt files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from agegender.config import cache_dir
from agegender.data import load_utkface
from agegender.data.preprocess import load_images, load_split_arrays

from conftest import BAD_FILES, SAMPLE


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("AGEGENDER_CACHE", str(folder))
    return folder


def _paths(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir())


def test_cache_is_isolated_from_repository(isolated_cache):
    assert cache_dir() == isolated_cache
    assert "data/cache" not in str(cache_dir())


@pytest.mark.parametrize("mode, c", [("grayscale", 1), ("rgb", 3)])
def test_shapes_and_dtype(small_folder, own_cache, mode, c):
    paths = _paths(small_folder)
    result = load_images(paths, 64, mode, progress=False)
    assert result.images.shape == (len(paths), 64, 64, c)
    assert result.images.dtype == np.uint8
    assert result.kept.dtype == bool and result.kept.all()
    assert result.errors == {}
    assert not result.from_cache
    # every image has content (no zero-filled rows)
    assert (result.images.reshape(len(paths), -1).max(axis=1) > 0).all()
    assert result.images.std() > 10


def test_second_call_from_cache_identical(small_folder, own_cache):
    paths = _paths(small_folder)
    first = load_images(paths, 64, "grayscale", progress=False)
    assert not first.from_cache
    assert len(list(own_cache.glob("*.npy"))) == 1 and len(list(own_cache.glob("*.json"))) == 1
    assert not list(own_cache.glob("*.tmp*"))
    second = load_images(paths, 64, "grayscale", progress=False)
    assert second.from_cache
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.kept, second.kept)
    assert second.errors == first.errors


def test_use_cache_false_neither_reads_nor_writes(small_folder, own_cache):
    paths = _paths(small_folder)
    result = load_images(paths, 32, "rgb", use_cache=False, progress=False)
    assert not result.from_cache
    assert not own_cache.exists() or not any(own_cache.iterdir())
    load_images(paths, 32, "rgb", progress=False)
    again = load_images(paths, 32, "rgb", use_cache=False, progress=False)
    assert not again.from_cache


@pytest.mark.parametrize("change", ["image_size", "color_mode"])
def test_cache_invalidated_by_parameters(small_folder, own_cache, change):
    paths = _paths(small_folder)
    load_images(paths, 64, "grayscale", progress=False)
    size, mode = (48, "grayscale") if change == "image_size" else (64, "rgb")
    other = load_images(paths, size, mode, progress=False)
    assert not other.from_cache
    assert other.images.shape[1:] == (size, size, 1 if mode == "grayscale" else 3)
    assert load_images(paths, size, mode, progress=False).from_cache


def test_cache_invalidated_when_file_added(small_folder, own_cache):
    paths = _paths(small_folder)
    load_images(paths, 64, "grayscale", progress=False)
    extra = next(p for p in sorted(SAMPLE.glob("*.jpg")) if not (small_folder / p.name).exists())
    shutil.copyfile(extra, small_folder / extra.name)
    more = _paths(small_folder)
    result = load_images(more, 64, "grayscale", progress=False)
    assert not result.from_cache
    assert result.images.shape[0] == len(paths) + 1


def test_cache_invalidated_when_file_removed(small_folder, own_cache):
    paths = _paths(small_folder)
    load_images(paths, 64, "grayscale", progress=False)
    result = load_images(paths[1:], 64, "grayscale", progress=False)
    assert not result.from_cache
    assert result.images.shape[0] == len(paths) - 1


def test_cache_invalidated_when_file_modified(small_folder, own_cache):
    paths = _paths(small_folder)
    first = load_images(paths, 64, "grayscale", progress=False)
    # touch: same content, new modification time
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = load_images(paths, 64, "grayscale", progress=False)
    assert not touched.from_cache
    np.testing.assert_array_equal(first.images, touched.images)
    # replace a file's content with another face (same name): must be decoded again
    other = next(p for p in sorted(SAMPLE.glob("*.jpg")) if not (small_folder / p.name).exists())
    shutil.copyfile(other, paths[1])
    replaced = load_images(paths, 64, "grayscale", progress=False)
    assert not replaced.from_cache
    assert not np.array_equal(replaced.images[1], first.images[1])
    np.testing.assert_array_equal(replaced.images[2:], first.images[2:])


def test_damaged_cache_is_ignored(small_folder, own_cache):
    paths = _paths(small_folder)
    first = load_images(paths, 32, "grayscale", progress=False)
    for npy in own_cache.glob("*.npy"):
        npy.write_bytes(b"not numpy")
    again = load_images(paths, 32, "grayscale", progress=False)
    assert not again.from_cache
    np.testing.assert_array_equal(first.images, again.images)
    assert load_images(paths, 32, "grayscale", progress=False).from_cache  # rewritten


def test_no_paths():
    with pytest.raises(ValueError, match="no images"):
        load_images([], 64, "grayscale")


def test_corrupt_files_dropped(bad_folder, good_names, own_cache):
    frame = load_utkface(bad_folder)
    result = load_images(frame["path"], 64, "rgb", progress=False)
    failed = {Path(p).name for p, ok in zip(frame["path"], result.kept) if not ok}
    undecodable = {name for name, kind in BAD_FILES.items() if kind in ("truncated", "corrupt", "bomb")}
    assert failed == undecodable
    assert {Path(p).name for p in result.errors} == undecodable
    for path, reason in result.errors.items():
        kind = BAD_FILES[Path(path).name]
        assert ("pixels" if kind == "bomb" else "corrupt or truncated") in reason
    assert not result.images[~result.kept].any()  # rows of failed files are left zero

    images, rows, errors = load_split_arrays(frame, 64, "rgb", progress=False)
    assert len(images) == len(rows) == len(frame) - len(undecodable)
    assert not set(rows["filename"]) & undecodable
    assert list(rows.index) == list(range(len(rows)))
    assert errors == result.errors
    # the kept rows line up with their images
    ok_positions = np.flatnonzero(result.kept)
    np.testing.assert_array_equal(images, result.images[ok_positions])

    cached = load_images(frame["path"], 64, "rgb", progress=False)
    assert cached.from_cache and cached.errors == result.errors
    np.testing.assert_array_equal(cached.kept, result.kept)


def test_load_split_arrays_all_good(tiny_folder, own_cache):
    frame = load_utkface(tiny_folder)
    part = frame[frame["split"] == "val"]
    images, rows, errors = load_split_arrays(part, 32, "grayscale", progress=False)
    assert images.shape == (10, 32, 32, 1)
    assert errors == {}
    assert list(rows["filename"]) == list(part["filename"])
    assert list(rows.index) == list(range(10))
