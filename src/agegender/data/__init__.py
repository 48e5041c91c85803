"""Data: UTKFace labels and splits (utkface), safe image decoding (images), cached model-input arrays
(preprocess), the tf.data training pipeline (pipeline) and the list of faces left out of training (cleaning).

The names of :mod:`agegender.data.utkface` are importable from here, as ``from agegender.data import load_utkface``.
"""

from .utkface import (SPLIT_FRACTIONS, Labels, SkipReport, UnparsableName, dataset_fingerprint, load_utkface,
                      parse_filename, split_counts, split_of, spread_subset)

__all__ = ["SPLIT_FRACTIONS", "Labels", "SkipReport", "UnparsableName", "dataset_fingerprint", "load_utkface",
           "parse_filename", "split_counts", "split_of", "spread_subset"]
