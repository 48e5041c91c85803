"""Data: UTKFace labels and splits (utkface), safe image decoding (images), cached model-input arrays
(preprocess), the tf.data training pipeline (pipeline) and the list of faces left out of training (cleaning).

The names of :mod:`agegender.data.utkface` are importable from here, as ``from agegender.data import load_utkface``.
They load on first use: ``utkface`` needs pandas, which serving (it imports only :mod:`agegender.data.images`) never
loads.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SPLIT_FRACTIONS", "Labels", "SkipReport", "UnparsableName", "dataset_fingerprint", "load_utkface",
           "parse_filename", "split_counts", "split_of", "spread_subset"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`agegender.data.utkface`, imported when first asked for (PEP 562)."""
    if name in __all__:
        return getattr(importlib.import_module(".utkface", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
