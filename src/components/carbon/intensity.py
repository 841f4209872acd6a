"""Carbon-intensity providers: how many grams of CO2eq one kWh costs here and now."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from src.components.carbon.record import Intensity


@lru_cache(maxsize=1)
def _energy_mix() -> dict[str, dict]:
    # Read codecarbon's bundled data directly: importing its tracker pulls in pandas.
    raw = resources.files("codecarbon").joinpath("data/private_infra/global_energy_mix.json").read_bytes()
    return json.loads(raw)


def country_mix_intensity(country_iso_code: str) -> Intensity:
    entry = _energy_mix()[country_iso_code]
    return Intensity(float(entry["carbon_intensity"]), "country_mix", country_iso_code)


def resolve_intensity(fixed_g_per_kwh: float | None, country_iso_code: str, region: str | None) -> Intensity:
    """The first provider that answers: a fixed override, else the bundled country mix."""
    location = f"{country_iso_code}/{region}" if region else country_iso_code
    if fixed_g_per_kwh is not None:
        return Intensity(float(fixed_g_per_kwh), "fixed", location)
    mix = country_mix_intensity(country_iso_code)
    return Intensity(mix.grams_per_kwh, mix.source, location)
