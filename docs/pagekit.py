"""Helpers shared by the docs/make_*_page.py scripts."""

from __future__ import annotations


def kept_section(page: str, model: str, name: str) -> list[str]:
    """The lines of ``model``'s section ("## model" up to the next "## ") in an earlier page (``name``: its path)."""
    lines = page.split("\n")
    if f"## {model}" not in lines:
        raise SystemExit(f"--keep {model}: {name} has no section '## {model}'")
    start = lines.index(f"## {model}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]
