"""Helpers for the notebooks: recording metrics that tests read back from executed notebooks (test_notebooks.py)."""

from __future__ import annotations

import json
from typing import Any

RECORD_MIME = "application/vnd.agegender.record+json"


def record(name: str, value: Any) -> None:
    """Display ``value`` under ``name`` in a form tests can read from the executed notebook."""
    from IPython.display import display

    payload = json.loads(json.dumps({"name": name, "value": value}, default=float))
    display({RECORD_MIME: payload, "text/plain": f"{name} = {payload['value']!r}"}, raw=True)

