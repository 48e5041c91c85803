"""Helpers for the notebooks: recording metrics that tests read back from executed notebooks."""

from __future__ import annotations

import json
from typing import Any

RECORD_MIME = "application/vnd.agegender.record+json"


def record(name: str, value: Any) -> None:
    """Display ``value`` under ``name`` in a form tests can read from the executed notebook."""
    from IPython.display import display

    payload = json.loads(json.dumps({"name": name, "value": value}, default=float))
    display({RECORD_MIME: payload, "text/plain": f"{name} = {payload['value']!r}"}, raw=True)


def read_records(notebook_path: str) -> dict[str, Any]:
    """All values recorded with :func:`record` in an executed notebook."""
    import nbformat

    records: dict[str, Any] = {}
    for cell in nbformat.read(notebook_path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                records[data[RECORD_MIME]["name"]] = data[RECORD_MIME]["value"]
    return records
