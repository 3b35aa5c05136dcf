"""Loading the per-venue conformance fixtures (tests/capture/venues/<venue>/fixtures).

Each fixture file names its sources (URL and the date read) and holds
messages transcribed from the venue's documentation: ``raw`` is the frame
exactly as a test feeds it (UTF-8 of the JSON text, or the plain text),
``expect`` what the venue code must make of it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VENUES_DIR = Path(__file__).resolve().parent.parent / "capture" / "venues"


def load(venue: str, name: str) -> dict[str, Any]:
    doc = json.loads((VENUES_DIR / venue / "fixtures" / name).read_text())
    assert doc.get("read") and doc.get("sources"), f"{name}: every fixture names its sources"
    return doc


def messages(venue: str, name: str) -> list[tuple[str, bytes, dict[str, Any]]]:
    """``(name, raw bytes, expect)`` per message, for ``pytest.mark.parametrize``."""
    doc = load(venue, name)
    for m in doc["messages"]:
        assert m["source"] in doc["sources"], f"{m['name']}: unknown source {m['source']!r}"
    return [(m["name"], m["raw"].encode(), m["expect"]) for m in doc["messages"]]


def ids(cases: list[tuple]) -> list[str]:
    return [c[0] for c in cases]
