"""Writing a benchmark's figures into docs/BENCHMARKS.md, between its own markers."""

from __future__ import annotations

import re
from pathlib import Path


def write_block(doc_path: Path, start: str, end: str, heading: str, text: str) -> None:
    """Replace what stands between `start` and `end` with `text`; without the markers yet,
    append them under `heading`."""
    doc = doc_path.read_text() if doc_path.exists() else "# Benchmarks\n"
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        pattern = re.escape(start) + ".*?" + re.escape(end)
        doc = re.sub(pattern, lambda _: block, doc, flags=re.S)
    else:
        doc += f"\n## {heading}\n\n{block}\n"
    doc_path.write_text(doc)


def publish(doc_path: Path, start: str, end: str, heading: str, text: str) -> None:
    """`write_block`, then say where (the path from the project's top: docs/...)."""
    write_block(doc_path, start, end, heading, text)
    print(f"\nwritten to {doc_path.relative_to(doc_path.parents[1])}")
