"""Fresh value and node names, importable without onnx (``graph.py`` re-exports ``fresh_name``)."""

from __future__ import annotations


def fresh_name(used: set[str], base: str) -> str:
    """base, or base_1, base_2, ... : the first not in used (which then records it)."""
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name
