"""The exports' ``TYPE=NAME`` options (``--resource``, ``--gres``), read once for the CLI
and the API alike."""

from __future__ import annotations

from gpupool.model import GpupoolError


def pairs(given: list[str], field: str) -> dict[str, str]:
    """``["A100=nvidia.com/gpu"]`` -> ``{"A100": "nvidia.com/gpu"}``; errors name ``field``."""
    found = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise GpupoolError(f"expected TYPE=NAME, got {item!r}", location=field)
        found[name] = value
    return found
