"""Evaluation: metrics on a labelled UTKFace split (metrics), on labelled whole photos (photos), plots (plots) and
the published figures a model is compared with (reference)."""
