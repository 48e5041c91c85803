"""scripts/extract_face_descriptors.py without dlib: which faces it describes, what it reuses, what it writes."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import extract_face_descriptors as script  # noqa: E402

from agegender.training.teacher import load_descriptors  # noqa: E402


def fake_describe(calls):
    def describe(paths):
        calls.append([Path(p).name for p in paths])
        names = [Path(p).name for p in paths]
        return names, np.array([[len(n), i] for i, n in enumerate(names)], dtype="float32")
    return describe


def make_folder(root, names):
    root.mkdir()
    for name in names:
        (root / name).write_bytes(b"\xff\xd8\xff")  # the script only lists files; describing them is dlib's job
    (root / "notes.txt").write_text("not an image")
    return root


def test_describes_every_crop_and_writes_what_training_reads(tmp_path):
    folder = make_folder(tmp_path / "faces", ["1_0_0_1.jpg", "22_1_2_2.jpg.chip.jpg"])
    calls = []
    count = script.extract(folder, tmp_path / "out" / "teacher.npz", describe=fake_describe(calls))
    assert count == 2 and calls == [["1_0_0_1.jpg", "22_1_2_2.jpg.chip.jpg"]]  # notes.txt is not a face
    loaded = load_descriptors(tmp_path / "out" / "teacher.npz")
    np.testing.assert_array_equal(loaded["22_1_2_2.jpg.chip.jpg"], [21, 1])
    assert not list((tmp_path / "out").glob("*partial*"))


def test_reuses_an_earlier_file_and_drops_faces_no_longer_there(tmp_path):
    folder = make_folder(tmp_path / "faces", ["1_0_0_1.jpg", "2_0_0_2.jpg"])
    earlier = tmp_path / "earlier.npz"  # the probe's format: full paths, not base names
    np.savez(earlier, path=np.array(["/elsewhere/1_0_0_1.jpg", "/elsewhere/gone.jpg"]),
             descriptor=np.array([[7, 7], [8, 8]], dtype="float32"))
    calls = []
    script.extract(folder, tmp_path / "teacher.npz", reuse=earlier, describe=fake_describe(calls))
    assert calls == [["2_0_0_2.jpg"]]
    loaded = load_descriptors(tmp_path / "teacher.npz")
    assert sorted(loaded) == ["1_0_0_1.jpg", "2_0_0_2.jpg"]
    np.testing.assert_array_equal(loaded["1_0_0_1.jpg"], [7, 7])


@pytest.mark.parametrize("make", [lambda root: root.mkdir(), lambda root: None])
def test_empty_or_missing_folder_is_a_clear_error(tmp_path, make):
    make(tmp_path / "faces")
    with pytest.raises(SystemExit, match="no images in|is not a folder"):
        script.extract(tmp_path / "faces", tmp_path / "teacher.npz", describe=fake_describe([]))
    assert not (tmp_path / "teacher.npz").exists()
