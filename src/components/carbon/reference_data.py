"""codecarbon's bundled reference data (energy mix, CPU TDP table), read without importing codecarbon.

Importing the package runs codecarbon/__init__.py, which loads its tracker (~0.3 s) and
raises when the install is broken; reading its data files must degrade gracefully instead.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path


def codecarbon_data_file(relative: str) -> Path | None:
    """Path of a file under codecarbon/data, or None when codecarbon is not installed."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / relative
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def energy_mix() -> dict[str, dict] | None:
    """Per-country energy mix (carbon_intensity in g/kWh), keyed by ISO 3166-1 alpha-3."""
    path = codecarbon_data_file("private_infra/global_energy_mix.json")
    try:
        return json.loads(path.read_bytes()) if path else None
    except (OSError, ValueError):
        return None
