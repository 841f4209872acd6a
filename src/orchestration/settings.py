"""TTAConfig -> the small settings each part of the library takes. The one place they are built.

The library (``src.components.carbon``) never sees TTAConfig: each part gets its own
frozen dataclass, built here. Reload rules live here too: which settings apply live.
Every builder takes a TTAConfig or its plain :class:`ConfigValues` (what the running daemon
holds), so this module never imports the config model at run time.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.components.carbon.accounting import Embodied
from src.components.carbon.attribution import AttributionSettings
from src.components.carbon.intensity import IntensitySettings, OnlineSettings, default_zone
from src.components.carbon.sinks.http_server import HttpSettings
from src.components.carbon.secret import Secret
from src.components.carbon.sources.select import SourceSettings
from src.orchestration.values import ConfigValues

if TYPE_CHECKING:
    from src.orchestration.config import TTAConfig

    Config = TTAConfig | ConfigValues

# Settings a SIGHUP applies without a restart (docs/operations.md#reload).
LIVE_SETTINGS = frozenset({
    "log_level", "log_file", "project_name", "intensity_g_per_kwh", "country_iso_code", "region",
    "host_name", "record_hostname", "offline", "electricitymaps_token", "electricitymaps_zone", "electricitymaps_url",
    "electricitymaps_refresh_interval", "electricitymaps_timeout", "intensity_profile_file",
    "embodied_kgco2e", "embodied_lifetime_years",
})


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """Who the records are about."""

    host: str | None  # None: records carry no host
    project: str
    env: str


@dataclass(frozen=True, slots=True)
class ComponentSettings:
    output_dir: Path
    state_dir: Path
    log_file: Path | None
    interval_s: float
    records: RecordSettings
    sources: SourceSettings
    intensity: IntensitySettings
    attribution: AttributionSettings
    http: HttpSettings
    embodied: Embodied | None  # None: no embodied carbon configured


def record_settings(config: Config) -> RecordSettings:
    host = (config.host_name or socket.gethostname()) if config.record_hostname else None
    return RecordSettings(host, config.project_name, config.env)


def _secret(value: Any) -> Secret | None:
    """The library's Secret from pydantic's SecretStr (a TTAConfig) or a Secret (ConfigValues)."""
    return None if value is None else Secret(value.get_secret_value())


def source_settings(config: Config) -> SourceSettings:
    return SourceSettings(
        energy_source=config.energy_source, powercap_root=config.powercap_root,
        country_iso_code=config.country_iso_code, project_name=config.project_name,
        codecarbon_dir=config.output_dir, cpu_tdp_watts=config.cpu_tdp_watts, ram_watts=config.ram_watts,
        gpu=config.gpu, platform_meter=config.platform_meter, hwmon_root=config.hwmon_root,
        hwmon_device=config.hwmon_device, platform_sample_s=config.platform_sample_s,
        platform_max_watts=config.platform_max_watts, ipmi_host=config.ipmi_host, ipmi_port=config.ipmi_port,
        ipmi_user=config.ipmi_user, ipmi_password=_secret(config.ipmi_password), redfish_url=config.redfish_url,
        redfish_user=config.redfish_user, redfish_password=_secret(config.redfish_password),
        redfish_ca_file=config.redfish_ca_file, redfish_verify_tls=config.redfish_verify_tls,
    )


def intensity_settings(config: Config) -> IntensitySettings:
    online = None
    zone = config.electricitymaps_zone or default_zone(config.country_iso_code)
    if not config.offline and config.electricitymaps_token is not None and zone:  # TTAConfig guarantees a zone
        online = OnlineSettings(
            Secret(config.electricitymaps_token.get_secret_value()), zone, config.electricitymaps_url,
            refresh_s=config.electricitymaps_refresh_interval, timeout_s=config.electricitymaps_timeout,
        )
    return IntensitySettings(
        country_iso_code=config.country_iso_code, region=config.region,
        fixed_g_per_kwh=config.intensity_g_per_kwh, profile=config.intensity_profile, online=online,
    )


def attribution_settings(config: Config) -> AttributionSettings:
    return AttributionSettings(
        enabled=config.attribution_enabled, cgroup_root=config.cgroup_root, proc_root=config.proc_root,
        include=config.attribution_include, exclude=config.attribution_exclude, top_n=config.attribution_top_n,
        metrics_grace_s=config.metrics_unit_grace,
    )


def http_settings(config: Config) -> HttpSettings:
    return HttpSettings(config.metrics_address, config.metrics_port, config.web_config)


def component_settings(config: Config) -> ComponentSettings:
    return ComponentSettings(
        output_dir=Path(config.output_dir), state_dir=Path(config.state_dir), log_file=config.log_file,
        interval_s=config.measurement_interval, records=record_settings(config), sources=source_settings(config),
        intensity=intensity_settings(config), attribution=attribution_settings(config), http=http_settings(config),
        embodied=embodied_settings(config),
    )


def embodied_settings(config: Config) -> Embodied | None:
    """TTAConfig guarantees both settings or neither."""
    if config.embodied_kgco2e is None or config.embodied_lifetime_years is None:
        return None
    return Embodied(config.embodied_kgco2e, config.embodied_lifetime_years)


def apply_live(running: Config, new: Config) -> tuple[ConfigValues, list[str]]:
    """The configuration in force after a reload, and the changed settings that need a restart.

    Live settings take their new values; the others keep the running ones until a restart.
    """
    running, new = ConfigValues.of(running), ConfigValues.of(new)
    old_values, new_values = running.model_dump(), new.model_dump()
    needs_restart = sorted(k for k in old_values if old_values[k] != new_values[k] and k not in LIVE_SETTINGS)
    # The parsed profile goes with its (live) setting.
    effective = running.replaced({k: new_values[k] for k in LIVE_SETTINGS}, new.intensity_profile)
    return effective, needs_restart
