"""Appending a benchmark's Markdown report to its file under ``benchmarks/results/``."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def append_record(name: str, title: str, text: str) -> Path:
    """Append ``text`` to ``results/<name>``, starting a new file with the heading ``title``."""
    out = RESULTS / name
    header = "" if out.exists() else f"# {title}\n\n"
    with out.open("a", encoding="utf-8") as handle:
        handle.write(header + text + "\n")
    return out
