"""What the research probes share: the largest face of each labelled photo, found as `agegender predict` finds it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from agegender.data.images import open_image
from agegender.evaluation.photos import largest_face_index, read_labels
from agegender.serving.faces import crop_face


def largest_faces(predictor, folder: str | Path):
    """(photos, [(rgb, face or None)]) for every photo labelled in ``folder/labels.csv``."""
    photos = read_labels(Path(folder) / "labels.csv", folder)
    found = []
    for photo in photos:
        rgb = np.asarray(open_image(photo.path))
        faces = predictor.detector.detect(rgb)
        found.append((rgb, faces[largest_face_index([f.box for f in faces])] if faces else None))
    return photos, found


def model_inputs(predictor, folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The largest faces as the model's inputs (photos without a face left out) and their true ages."""
    photos, found = largest_faces(predictor, folder)
    keep = [(photo, rgb, face) for photo, (rgb, face) in zip(photos, found) if face is not None]
    crops = np.stack([predictor.prepare(crop_face(rgb, face)) for _, rgb, face in keep])
    return crops, np.asarray([photo.age for photo, _, _ in keep], float)
