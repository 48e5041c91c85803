"""File names -> labels, the hash split, and load_utkface on good, bad, empty and missing folders."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from agegender.data import (Labels, SkipReport, UnparsableName, dataset_fingerprint, load_utkface, parse_filename,
                            split_counts, split_of, spread_subset)
from agegender.data.duplicates import CONFLICTING, COPY_OF_TRAIN, LEFT_OUT

from conftest import BAD_FILES


# -- parse_filename -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("25_0_2_20170116174525125.jpg", Labels(25, 0, 2)),
    ("25_1_3_20170116174525125.jpg.chip.jpg", Labels(25, 1, 3)),
    ("1_1_4_20161221193016140.jpg.chip.jpg", Labels(1, 1, 4)),
    ("116_1_0_20170120134921760.jpg.chip.jpg", Labels(116, 1, 0)),
    ("0_0_0_20170110213121589.jpg", Labels(0, 0, 0)),
    ("/some/folder/42_0_1_20170104230051977.jpg.chip.jpg", Labels(42, 0, 1)),
    ("39_1_20170116174525125.jpg.chip.jpg", Labels(39, 1, None)),
    ("61_1_20170109142408075.jpg.chip.jpg", Labels(61, 1, None)),
    ("30_1_0_20170101.png", Labels(30, 1, 0)),
])
def test_parse_filename(name, expected):
    assert parse_filename(name) == expected


@pytest.mark.parametrize("name, expected", [
    # real oddities of the full data set
    ("55_0_0_20170116232725357jpg.chip.jpg", Labels(55, 0, 0)),
    ("24_0_1_20170116220224657 .jpg.chip.jpg", Labels(24, 0, 1)),
])
def test_parse_filename_real_oddities(name, expected):
    assert parse_filename(name) == expected


def test_parse_filename_rejects_invalid_race():
    with pytest.raises(UnparsableName):
        parse_filename("25_0_5_20170116174525125.jpg")


def test_parse_filename_race_missing_is_none_not_zero():
    labels = parse_filename("39_1_20170116174525125.jpg.chip.jpg")
    assert labels.race is None
    assert labels.age == 39 and labels.gender == 1


@pytest.mark.parametrize("name", [
    "not_a_face.jpg",
    "README.jpg",
    "25_2_0_20170116174525125.jpg",  # gender must be 0 or 1
    "25-0-1-20170116174525125.jpg",
    "25_0_.jpg",
    "_0_1_20170116174525125.jpg",
    "25_0.jpg",
    "abc_0_1_20170116174525125.jpg",
    "",
])
def test_parse_filename_rejects(name):
    with pytest.raises(UnparsableName):
        parse_filename(name)


@pytest.mark.parametrize("name", ["117_0_1_20170116174525125.jpg", "999_1_0_20170116174525125.jpg.chip.jpg"])
def test_parse_filename_age_out_of_range(name):
    with pytest.raises(UnparsableName, match="age"):
        parse_filename(name)


def test_unparsable_name_is_a_value_error():
    assert issubclass(UnparsableName, ValueError)


# -- split ----------------------------------------------------------------------------------------
def _names(n: int) -> list[str]:
    return [f"{20 + i % 60}_{i % 2}_{i % 5}_2017{i:013d}.jpg.chip.jpg" for i in range(n)]


def test_split_is_deterministic_and_ignores_folder():
    names = _names(200)
    first = [split_of(n) for n in names]
    assert first == [split_of(n) for n in names]
    assert first == [split_of(os.path.join("/a/b", n)) for n in names]
    assert set(first) == {"train", "val", "test"}


def test_split_fractions_are_about_80_10_10():
    names = _names(20_000)
    counts = Counter(split_of(n) for n in names)
    assert abs(counts["train"] / len(names) - 0.8) < 0.015
    assert abs(counts["val"] / len(names) - 0.1) < 0.01
    assert abs(counts["test"] / len(names) - 0.1) < 0.01


def test_sample_split_counts():
    from agegender.config import SAMPLE_DIR

    frame = load_utkface(SAMPLE_DIR)
    assert len(frame) == 400
    assert split_counts(frame) == {"train": 322, "val": 45, "test": 33}


def test_split_of_a_file_unchanged_when_files_added_or_removed(small_folder):
    before = load_utkface(small_folder).set_index("filename")["split"]
    from agegender.config import SAMPLE_DIR

    # add 30 more files, remove 5 of the original ones
    extra = sorted(p for p in SAMPLE_DIR.iterdir() if p.name.endswith(".jpg") and not (small_folder / p.name).exists())
    for path in extra[:30]:
        shutil.copyfile(path, small_folder / path.name)
    removed = sorted(before.index)[:5]
    for name in removed:
        (small_folder / name).unlink()
    after = load_utkface(small_folder).set_index("filename")["split"]
    assert len(after) == len(before) + 30 - 5
    common = before.index.intersection(after.index)
    assert len(common) == len(before) - 5
    pd.testing.assert_series_equal(before.loc[common], after.loc[common])
    # and every split is what split_of says on the name alone
    assert all(after[name] == split_of(name) for name in after.index)


# -- byte-identical copies ----------------------------------------------------------------------
def _name_in(split: str, age: int, gender: int, start: int = 0) -> str:
    """A UTKFace-style name that the hash puts in ``split``."""
    stamp = start
    while split_of(name := f"{age}_{gender}_0_2017010{stamp:010d}.jpg.chip.jpg") != split:
        stamp += 1
    return name


def test_copies_of_training_files_leave_val_and_test_and_conflicting_copies_leave_training(small_folder):
    before = load_utkface(small_folder)
    train_file = small_folder / before.loc[before["split"] == "train", "filename"].iloc[0]
    labels = parse_filename(train_file.name)
    val_copy = _name_in("val", labels.age, labels.gender)
    test_copy = _name_in("test", labels.age, labels.gender)
    for name in (val_copy, test_copy):
        shutil.copyfile(train_file, small_folder / name)
    # two training copies of another face that disagree on the age, and a val copy of the same face
    other = small_folder / before.loc[before["split"] == "test", "filename"].iloc[0]
    conflict_a = _name_in("train", 30, 0)
    conflict_b = _name_in("train", 55, 0, start=10_000)
    for name in (conflict_a, conflict_b):
        shutil.copyfile(other, small_folder / name)
    after = load_utkface(small_folder)
    split = after.set_index("filename")["split"]
    assert split[val_copy] == split[test_copy] == LEFT_OUT
    assert split[conflict_a] == split[conflict_b] == LEFT_OUT
    assert split[train_file.name] == "train"
    assert split[other.name] == LEFT_OUT  # a test file byte-identical to a training file
    assert sorted(after.attrs["set_aside"][COPY_OF_TRAIN]) == sorted([other.name, test_copy, val_copy])
    assert sorted(after.attrs["set_aside"][CONFLICTING]) == sorted([conflict_a, conflict_b])
    # every other file keeps the split its name gives, and the fingerprint still covers every file
    untouched = split.drop([val_copy, test_copy, conflict_a, conflict_b, other.name])
    assert all(untouched[name] == split_of(name) for name in untouched.index)
    assert len(after) == len(before) + 4


def test_copies_that_agree_within_training_stay(small_folder):
    before = load_utkface(small_folder)
    train_file = small_folder / before.loc[before["split"] == "train", "filename"].iloc[0]
    labels = parse_filename(train_file.name)
    twin = _name_in("train", labels.age, labels.gender)
    shutil.copyfile(train_file, small_folder / twin)
    after = load_utkface(small_folder)
    assert (after.set_index("filename").loc[[train_file.name, twin], "split"] == "train").all()
    assert not any(after.attrs["set_aside"].values())


# -- load_utkface -------------------------------------------------------------------------------
def test_load_utkface_columns_and_types(tiny_folder):
    frame = load_utkface(tiny_folder)
    assert list(frame.columns) == ["path", "filename", "age", "gender", "race", "split"]
    assert len(frame) == 60
    assert split_counts(frame) == {"train": 40, "val": 10, "test": 10}
    assert str(frame["race"].dtype) == "Int64"
    assert frame["gender"].isin([0, 1]).all()
    assert frame["age"].between(0, 116).all()
    row = frame.iloc[0]
    assert Path(row["path"]).name == row["filename"]
    assert parse_filename(row["filename"]).age == row["age"]


def test_load_utkface_bad_folder_skips_and_reports(bad_folder, good_names, caplog):
    report = SkipReport()
    with caplog.at_level("WARNING", logger="agegender.data"):
        frame = load_utkface(bad_folder, report=report)
    reasons = report.reasons
    names = {k: sorted(os.path.basename(p) for p in v) for k, v in reasons.items()}
    by_kind = {kind: name for name, kind in BAD_FILES.items()}
    assert names == {
        "unparsable names": [by_kind["unparsable"]],
        "empty files": [by_kind["empty"]],
        "non-image files": [by_kind["text"]],
    }
    assert report.count == 3
    # Files whose header looks like an image stay: corrupt content is detected when decoding.
    kept = set(frame["filename"])
    expected = set(good_names) | {by_kind[k] for k in ("truncated", "corrupt", "alpha", "grayscale", "bomb", "webp")}
    assert kept == expected
    summary = report.summary()
    assert "skipped 3 files" in summary and "unparsable names" in summary and "empty files" in summary
    assert report.to_dict()["non-image files"] == {"count": 1, "examples": [by_kind["text"]]}
    assert any("skipped 3 files" in r.getMessage() for r in caplog.records)


def test_load_utkface_ignores_hidden_files_docs_and_subfolders(small_folder):
    (small_folder / "README.md").write_text("# about\n")
    (small_folder / "LICENSE.txt").write_text("licence\n")
    (small_folder / ".DS_Store").write_bytes(b"\x00\x01")
    (small_folder / "subdir").mkdir()
    report = SkipReport()
    frame = load_utkface(small_folder, report=report)
    assert len(frame) == 24
    assert report.count == 0


def test_load_utkface_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no usable UTKFace images"):
        load_utkface(tmp_path)


def test_load_utkface_folder_of_only_bad_files(tmp_path):
    (tmp_path / "hello.jpg").write_bytes(b"x")
    (tmp_path / "20_0_0_20170109150557335.jpg").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_utkface(tmp_path)
    text = str(info.value)
    assert "no usable UTKFace images" in text and "unparsable" in text and "empty" in text


def test_load_utkface_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_utkface(tmp_path / "does-not-exist")
    assert "UTKFACE_DIR" in str(info.value)
    assert "does-not-exist" in str(info.value)


def test_load_utkface_uses_utkface_dir(monkeypatch, tiny_folder):
    monkeypatch.setenv("UTKFACE_DIR", str(tiny_folder))
    assert len(load_utkface()) == 60


def test_fingerprint_depends_on_names_and_labels(tiny_folder):
    frame = load_utkface(tiny_folder)
    fp = dataset_fingerprint(frame)
    assert len(fp) == 16
    assert fp == dataset_fingerprint(load_utkface(tiny_folder))
    assert fp != dataset_fingerprint(frame.iloc[1:])
    changed = frame.copy()
    changed.loc[0, "age"] = changed.loc[0, "age"] + 1
    assert fp != dataset_fingerprint(changed)


@pytest.mark.full_data
def test_full_data_counts():
    report = SkipReport()
    frame = load_utkface(os.environ["UTKFACE_DIR"], report=report)
    assert len(frame) == 21_338
    assert int(frame["race"].isna().sum()) == 3
    assert sorted(frame.loc[frame["race"].isna(), "filename"]) == [
        "39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
        "61_1_20170109150557335.jpg.chip.jpg"]
    counts = split_counts(frame)
    set_aside = {reason: len(names) for reason, names in frame.attrs["set_aside"].items()}
    # byte-identical copies (issue #48): 52 val and 50 test copies of training files, 310 training files in the
    # 191 groups whose labels disagree
    assert set_aside == {COPY_OF_TRAIN: 102, CONFLICTING: 310}
    assert counts == {"train": 16_765, "val": 2_096, "test": 2_065}
    assert sum(counts.values()) + 412 == 21_338 == len(frame)
    copies = frame[frame["filename"].isin(frame.attrs["set_aside"][COPY_OF_TRAIN])]
    assert Counter(map(split_of, copies["filename"])) == {"val": 52, "test": 50}
    by_name = Counter(map(split_of, frame["filename"]))  # the split before copies are set aside
    for split, fraction in {"train": 0.8, "val": 0.1, "test": 0.1}.items():
        assert abs(by_name[split] / len(frame) - fraction) < 0.01


def test_implicit_fallback_to_the_bundled_sample_is_announced(monkeypatch, tmp_path, caplog):
    from agegender import config

    monkeypatch.delenv("UTKFACE_DIR", raising=False)
    monkeypatch.setattr(config, "DATA_DIR", tmp_path)  # no data/UTKFace/ there
    with caplog.at_level("WARNING", logger="agegender.data"):
        implicit = load_utkface()
    assert "reading the bundled sample" in caplog.text and "UTKFACE_DIR" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="agegender.data"):
        explicit = load_utkface(config.SAMPLE_DIR)
    assert caplog.text == ""  # asked for by name: nothing to announce
    monkeypatch.setenv("UTKFACE_DIR", str(config.SAMPLE_DIR))
    with caplog.at_level("WARNING", logger="agegender.data"):
        by_setting = load_utkface()
    assert caplog.text == ""  # nor when the setting names it
    assert len(implicit) == len(explicit) == len(by_setting) > 0


def test_spread_subset_mixes_ages_keeps_order_and_nests():
    # names sorted as load_utkface sorts them: by file name, so by age first
    names = sorted(f"{age}_{i % 2}_{i % 5}_2017011{i:05d}.jpg.chip.jpg" for age in range(1, 91) for i in range(20))
    rows = pd.DataFrame({"filename": names, "age": [int(n.split("_")[0]) for n in names]})
    small, large = spread_subset(rows, 60), spread_subset(rows, 300)
    assert len(small) == 60 and len(large) == 300
    assert set(small.index) <= set(large.index)  # a smaller subset lies inside a larger one
    assert list(large.index) == sorted(large.index)  # kept in the frame's order
    assert large["age"].min() < 10 and large["age"].max() > 80  # not just the first (youngest) rows
    assert abs(large["age"].mean() - rows["age"].mean()) < 5
    assert spread_subset(rows, 300).equals(large)  # stable
    assert spread_subset(rows, 10_000).equals(rows) and spread_subset(rows, 0).empty
    with pytest.raises(ValueError, match="count of 0 or more"):
        spread_subset(rows, -1)
