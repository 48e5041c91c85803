"""What the serving runtime's disk size is made of: the packages the CLI needs, and what the app adds on top.

Run it with the runtime environment's Python (``make install-runtime`` first):

    .venv-runtime/bin/python scripts/runtime_size.py

Sizes are the files each installed distribution lists in its RECORD (bytecode included), over the closure of its
requirements; "CLI" is what `agegender predict` imports (LiteRT, NumPy, OpenCV, Pillow, pillow-heif), "app" the rest
of `pip install .` (pandas, Streamlit, streamlit-webrtc and theirs).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

CLI = ("ai-edge-litert", "numpy", "opencv-python-headless", "pillow", "pillow-heif")
APP = ("pandas", "streamlit", "streamlit-webrtc", "aiortc", "av", "pylibsrtp")
MB = 1e6


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: tuple[str, ...]) -> set[str]:
    """The distributions ``names`` need, transitively (extras left out), as installed here."""
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = normal(stack.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        stack += [re.split(r"[ ;<>=!~\[(]", r)[0] for r in dist.requires or [] if "extra ==" not in r]
    return seen


def size(name: str) -> int:
    dist = md.distribution(name)
    total = 0
    for file in dist.files or []:
        try:
            total += os.path.getsize(dist.locate_file(file))
        except OSError:
            pass
    return total


def tree_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    cli = closure(CLI)
    app = closure(CLI + APP) - cli
    sizes = {name: size(name) for name in cli | app}
    print(f"environment {sys.prefix}: {tree_size(Path(sys.prefix)) / MB:,.0f} MB on disk")
    for label, names in (("CLI (agegender predict)", cli), ("the app adds", app)):
        top = ", ".join(f"{n} {sizes[n] / MB:.0f}" for n in sorted(names, key=sizes.get, reverse=True)[:6])
        print(f"{label}: {sum(sizes[n] for n in names) / MB:,.0f} MB in {len(names)} packages ({top}, ...)")


if __name__ == "__main__":
    main()
