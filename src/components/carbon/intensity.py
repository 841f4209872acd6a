"""Carbon-intensity providers: how many grams of CO2eq one kWh costs here and now."""

from __future__ import annotations

from src.components.carbon.record import Intensity
from src.components.carbon.reference_data import energy_mix


def country_mix_intensity(country_iso_code: str) -> Intensity:
    mix = energy_mix()
    if mix is None:  # TTAConfig refuses this combination; keep the message if called directly
        raise LookupError("codecarbon's country energy mix is unavailable (codecarbon not installed)")
    entry = mix[country_iso_code]
    return Intensity(float(entry["carbon_intensity"]), "country_mix", country_iso_code)


def resolve_intensity(fixed_g_per_kwh: float | None, country_iso_code: str, region: str | None) -> Intensity:
    """The first provider that answers: a fixed override, else the bundled country mix."""
    location = f"{country_iso_code}/{region}" if region else country_iso_code
    if fixed_g_per_kwh is not None:
        return Intensity(float(fixed_g_per_kwh), "fixed", location)
    mix = country_mix_intensity(country_iso_code)
    return Intensity(mix.grams_per_kwh, mix.source, location)
