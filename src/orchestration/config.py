"""TTAConfig: the daemon's settings, from args > env > env file > YAML > defaults."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import unicodedata
import urllib.parse
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from src.components.carbon.files import kind_of
from src.components.carbon.intensity import DEFAULT_ELECTRICITYMAPS_URL, LOOPBACK_HOSTS, ProfileProvider, default_zone
from src.components.carbon.reference_data import energy_mix
from src.components.carbon.sinks.web_config import WebConfig, load_web_config
from src.orchestration.sources import (
    ARGUMENTS,
    CONFIG_FILE_DEFAULT,
    ENV_FILE,
    ENV_FILE_DEFAULT,
    ENVIRONMENT,
    YAML_FILE,
    ConfigError,
    Layer,
    env_file_layer,
    env_name,
    environment_layer,
    file_exists,
    locate,
    looks_secret,
    parse_env_file,
    short_repr,
    show,
    yaml_layer,
)

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 3600.0
DEFAULT_METRICS_PORT = 9880

_layers: ContextVar[list[Layer]] = ContextVar("tta_config_layers", default=[])
_environ: ContextVar[dict[str, str] | None] = ContextVar("tta_config_environ", default=None)
# Files a validator has parsed while checking a setting (profile, web config), handed to the
# model once validation passes: each file is read once, and what was checked is what runs.
_parsed: ContextVar[dict[str, Any] | None] = ContextVar("tta_config_parsed", default=None)


def known_country_codes() -> frozenset[str] | None:
    """ISO 3166-1 alpha-3 codes for which codecarbon ships an energy mix; None if unknown."""
    mix = energy_mix()
    return None if mix is None else frozenset(mix)


class _LayerSource(PydanticBaseSettingsSource):
    """Adapts one already-read Layer to pydantic-settings' source interface."""

    def __init__(self, settings_cls: type[BaseSettings], layer: Layer) -> None:
        super().__init__(settings_cls)
        self.layer = layer

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.layer.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.layer.values)


@dataclass(frozen=True, slots=True)
class Override:
    """A setting the YAML file gives that the environment (file or variable) gives too.

    The environment wins, so the YAML line is dead: editing it and reloading changes nothing.
    """

    setting: str  # field name, as in the YAML file
    name: str  # the environment name, e.g. CARBON_MEASUREMENT_INTERVAL
    value: str  # as written in the environment (never show it when ``secret``)
    origin: str  # "<env file> line N" or "environment variable NAME"
    in_env_file: bool  # False: a process environment variable (not the env file's own value)
    yaml_value: Any
    yaml_origin: str  # "<config file> line N"

    @property
    def secret(self) -> bool:
        """Values never to show: the token, and anything whose name looks like a secret."""
        return self.setting == "electricitymaps_token" or looks_secret(self.setting) or looks_secret(self.name)


class TTAConfig(BaseSettings):
    """Settings for the carbon component. ``docs/configuration.md`` documents each one."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    env: str = Field("staging", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
                     description="environment label in records and metrics")
    config_file: Path = Field(CONFIG_FILE_DEFAULT, description="YAML file to read")
    env_file: Path = Field(ENV_FILE_DEFAULT, description="environment file to read")
    output_dir: Path = Field(Path("/var/log/tta/staging/codecarbon"),
                             description="NDJSON records; must be a directory if it exists")
    project_name: str = Field("TTA-Staging", min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$",
                              description="project name in records and `tta_carbon_build_info`; printable characters")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="log level (any case)")
    log_file: Path | None = Field(Path("/var/log/tta/staging/carbon.log"),
                                  description="daemon log (JSON lines); empty = stderr/journald only")
    measurement_interval: float = Field(
        15.0, ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S, allow_inf_nan=False,
        description="seconds between measurements; below 1 s the measurement itself becomes the load, "
                    "above an hour Prometheus marks the series stale")
    metrics_address: str = Field("127.0.0.1",
                                 description="IP literal /metrics listens on; anything but loopback exposes /metrics "
                                             "to the network")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT, ge=1, le=65535,
        description="TCP port of /metrics; chosen to avoid Prometheus (9090), Pushgateway (9091), "
                    "Alertmanager (9093) and node_exporter (9100)")
    state_dir: Path = Field(Path("/var/lib/tta/staging"),
                            description="cumulative totals (`carbon_state.json`); must be a directory if it exists")
    country_iso_code: str = Field("USA", description="ISO 3166-1 alpha-3 code with a bundled energy mix "
                                                     "(codecarbon's data)")
    region: str | None = Field(None, max_length=64, description="recorded with the location")
    intensity_g_per_kwh: float | None = Field(
        None, gt=0, le=3000, allow_inf_nan=False,
        description="fixed carbon intensity override in gCO2eq/kWh; wins over every other intensity source "
                    "(docs/intensity.md)")
    offline: bool = Field(True, description="no outbound network connection; `false` enables Electricity Maps and "
                                            "requires a token")
    electricitymaps_token: SecretStr | None = Field(None, description="secret: never printed, logged or written")
    electricitymaps_zone: str | None = Field(
        None, pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,10}){0,3}$",
        description="Electricity Maps zone, e.g. `FR`, `US-CAL-CISO`; unset = derived from `country_iso_code` for "
                    "single-zone countries, required otherwise (USA, CAN, ...) when `offline` is false")
    electricitymaps_url: str = Field(DEFAULT_ELECTRICITYMAPS_URL,
                                     description="Electricity Maps endpoint; `https://` only (`http://` to loopback "
                                                 "only); no query")
    electricitymaps_refresh_interval: float = Field(
        900.0, ge=1, le=86400, allow_inf_nan=False,
        description="seconds between requests (retry after a failure: min(60, this))")
    electricitymaps_timeout: float = Field(5.0, gt=0, le=60, allow_inf_nan=False,
                                           description="seconds per request")
    intensity_profile_file: Path | None = Field(
        None, description="CSV of `hour,g_per_kwh` (24 UTC hours) or `timestamp,g_per_kwh` (RFC 3339 steps); "
                          "validated at load, see docs/intensity.md")
    energy_source: Literal["auto", "rapl", "cpu_load_tdp", "codecarbon"] = Field(
        "auto", description="`auto` (codecarbon's EmissionsTracker; our RAPL/NVML readers where they measure; "
                            "our CPU-load estimate if codecarbon cannot run), `rapl`, `cpu_load_tdp` (lean, no "
                            "codecarbon), `codecarbon` (codecarbon's tracker for everything); see docs/energy-sources.md")
    cpu_tdp_watts: float | None = Field(None, gt=0, le=5000, allow_inf_nan=False,
                                        description="TDP in W for the estimate; unset = codecarbon's CPU table, "
                                                    "else 4 W per thread")
    ram_watts: float | None = Field(None, gt=0, le=2000, allow_inf_nan=False,
                                    description="RAM power in W for the estimate; unset = codecarbon's per-DIMM model")
    powercap_root: Path = Field(Path("/sys/class/powercap"), description="where RAPL zones live")
    gpu: Literal["auto", "on", "off"] = Field(
        "auto", description="NVIDIA GPUs through NVML: `auto` (when NVML lists a GPU), `on`, `off`; see docs/gpu.md")
    # The platform meter: whole-machine power (docs/platform-power.md).
    platform_meter: Literal["auto", "off", "hwmon", "ipmi_dcmi", "redfish"] = Field(
        "auto", description="whole-machine power meter: `auto` (a hwmon power meter such as ACPI's when present), "
                            "`off`, `hwmon`, `ipmi_dcmi` (the BMC's DCMI power reading), `redfish`; see "
                            "docs/platform-power.md")
    hwmon_root: Path = Field(Path("/sys/class/hwmon"), description="where hwmon devices live")
    hwmon_device: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$",
                              description="a hwmon device's `name` or `hwmonN` to read as the platform meter; "
                                          "empty = the first power meter found")
    platform_sample_s: float | None = Field(None, ge=0.1, le=300, allow_inf_nan=False,
                                            description="seconds between platform meter readings; unset = 1 "
                                                        "(hwmon) or 5 (IPMI, Redfish)")
    platform_max_watts: float = Field(50_000.0, gt=0, le=1e6, allow_inf_nan=False,
                                      description="readings above this are refused as absurd")
    ipmi_host: str = Field("", max_length=253, pattern=r"^[A-Za-z0-9:._-]*$",
                           description="the BMC for `ipmi_dcmi` over LAN+; empty = the local BMC, in-band")
    ipmi_port: int = Field(623, ge=1, le=65535, description="the BMC's RMCP+ UDP port")
    ipmi_user: str = Field("", max_length=16, description="IPMI user name (LAN+)")
    ipmi_password: SecretStr | None = Field(None, description="secret: IPMI password (LAN+); never printed")
    redfish_url: str = Field("", max_length=2048, pattern=r"^(https://[^\s/?#@]+/?)?$",
                             description="the BMC for `redfish`, as `https://host[:port]`")
    redfish_user: str = Field("", max_length=256, description="Redfish user name")
    redfish_password: SecretStr | None = Field(None, description="secret: Redfish password; never printed")
    redfish_ca_file: Path | None = Field(None, description="CA certificate(s) for the BMC's TLS certificate; "
                                                           "unset = the system's CAs")
    redfish_verify_tls: bool = Field(True, description="`false` accepts any certificate (warned once in the log)")
    # Embodied carbon: the host's manufacturing footprint, amortised over its life (docs/embodied.md).
    embodied_kgco2e: float | None = Field(
        None, gt=0, le=1e6, allow_inf_nan=False,
        description="the host's manufacturing footprint in kg CO2eq (a manufacturer's product carbon footprint "
                    "sheet, or Boavizta's estimate); unset = no embodied carbon. Needs embodied_lifetime_years")
    embodied_lifetime_years: float | None = Field(
        None, gt=0, le=50, allow_inf_nan=False,
        description="years the embodied footprint is spread over (e.g. 4 or 6); needs embodied_kgco2e")
    host_name: str | None = Field(
        None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the host's name in records (`host`) and on `tta_carbon_build_info{host}`; unset = the "
                    "system hostname. Set it to the `host` target label Prometheus gives this host (docs/fleet.md)")
    record_hostname: bool = Field(True, description="`false` omits `host` from records and from `tta_carbon_build_info`")
    metrics_web_config: Path | None = Field(
        None, description="exporter-toolkit style web config (TLS and/or bcrypt basic auth) for /metrics; "
                          "see docs/security.md")
    # Per-systemd-unit attribution (docs/attribution.md).
    attribution_enabled: bool = Field(True, description="per-systemd-unit split in each record (docs/attribution.md)")
    cgroup_root: Path = Field(Path("/sys/fs/cgroup"),
                              description="cgroup mount point; v2, hybrid (`unified/`) and v1 `cpuacct` are detected")
    proc_root: Path = Field(Path("/proc"), description="where the attribution reads `stat` (host CPU time)")
    attribution_include: tuple[str, ...] = Field(
        ("system.slice/*.service",),
        description="globs on the cgroup path below the root; a list in YAML, comma/space-separated in env")
    attribution_exclude: tuple[str, ...] = Field(
        (), description="globs; a matching cgroup is not a unit (its CPU time is `unattributed`)")
    attribution_top_n: int = Field(20, ge=0, le=1000,
                                   description="units that keep their name per record; the rest are summed as `other`")
    metrics_unit_grace: float = Field(
        120.0, ge=0, le=86400, allow_inf_nan=False,
        description="seconds a unit's `tta_carbon_unit_*` series stays on /metrics after the last record naming it "
                    "(at most 2 x `attribution_top_n` units are shown); see docs/attribution.md")

    _profile: ProfileProvider | None = PrivateAttr(None)
    _web_config: WebConfig = PrivateAttr(default_factory=WebConfig)
    _layers_read: tuple[Layer, ...] = PrivateAttr(())

    def __init__(self, **values: Any) -> None:
        token = _layers.set([])
        parsed = _parsed.set({})
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, _layers.get())) from None
        finally:
            _layers.reset(token)
            _parsed.reset(parsed)

    @property
    def intensity_profile(self) -> ProfileProvider | None:
        """The parsed ``intensity_profile_file`` (read once, when the setting was checked)."""
        return self._profile

    @property
    def web_config(self) -> WebConfig:
        """The parsed ``metrics_web_config``: TLS context and users (empty when unset)."""
        return self._web_config

    def setting_origins(self) -> dict[str, list[tuple[str, str]]]:
        """Every setting given anywhere: (source, where) for each source that gives it, winner first.

        Sources are ``arguments``, ``environment``, ``env_file`` and ``yaml``; ``where`` names the
        argument, the environment variable, or the file and line. Precedence is not changed by
        this: the first entry is the value in force.
        """
        out: dict[str, list[tuple[str, str]]] = {}
        for layer in self._layers_read:
            for key in layer.values:
                out.setdefault(key, []).append((layer.kind, layer.origins.get(key, layer.name)))
        return out

    def yaml_overrides(self) -> list[Override]:
        """Settings the YAML file gives whose YAML value is ignored because the environment gives them too.

        Command-line arguments (``--set``, ``--config``) are left out: they are deliberate, and
        last only one run. An environment variable holding the environment file's own value
        (systemd's EnvironmentFile= and ``set -a; . environment`` put it there) is reported once,
        as the file's line.
        """
        by_kind = {layer.kind: layer for layer in self._layers_read}
        yaml_file = by_kind.get(YAML_FILE)
        if yaml_file is None:
            return []
        env_file = by_kind.get(ENV_FILE, Layer(""))
        environ = by_kind.get(ENVIRONMENT, Layer(""))
        out: list[Override] = []
        for key, yaml_value in yaml_file.values.items():
            yaml_origin = yaml_file.origins.get(key, yaml_file.name)
            in_file = key in env_file.values
            if key in environ.values and not (in_file and environ.values[key] == env_file.values[key]):
                out.append(Override(key, env_name(key), environ.values[key], environ.origins[key], False,
                                    yaml_value, yaml_origin))
            if in_file:
                out.append(Override(key, env_name(key), env_file.values[key], env_file.origins[key], True,
                                    yaml_value, yaml_origin))
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        fields = set(cls.model_fields)
        init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        layers = [Layer("arguments", dict(init_kwargs), {k: f"argument {k}" for k in init_kwargs}, ARGUMENTS)]
        environ = _environ.get()
        environ = dict(os.environ) if environ is None else environ
        # The environment file is located (arguments, then TTA_ENV_FILE) and parsed before the
        # environment layer is built, so that a variable systemd copied in from it is named with
        # its file and line; its own errors still come after the environment's, as before.
        env_path, env_origin = locate(
            init_kwargs.get("env_file"), "TTA_ENV_FILE", environ, layers, "env_file", ENV_FILE_DEFAULT
        )
        env_pairs: dict[str, tuple[str, str]] | None = None
        env_file_error: ConfigError | None = None
        try:
            if file_exists(env_path, "environment file", env_origin):
                env_pairs = parse_env_file(env_path)
        except ConfigError as exc:
            env_file_error = exc
        layers.append(environment_layer(environ, fields, env_pairs))
        if env_file_error is not None:
            raise env_file_error
        if env_pairs is not None:
            layers.append(env_file_layer(env_path, fields, env_pairs))
        yaml_path, yaml_origin = locate(
            init_kwargs.get("config_file"), "TTA_CONFIG", environ, layers, "config_file", CONFIG_FILE_DEFAULT
        )
        if file_exists(yaml_path, "config file", yaml_origin):
            layers.append(yaml_layer(yaml_path, fields))
        _layers.get().extend(layers)
        return (init_settings, *(_LayerSource(settings_cls, layer) for layer in layers[1:]))

    @field_validator("attribution_include", "attribution_exclude", mode="before")
    @classmethod
    def _glob_list(cls, value: Any) -> Any:
        # Env files and --set give one string: globs separated by commas or whitespace.
        if isinstance(value, str):
            return tuple(g for g in re.split(r"[,\s]+", value) if g)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("region", "log_file", "intensity_g_per_kwh", "electricitymaps_token", "cpu_tdp_watts",
                     "ram_watts", "electricitymaps_zone", "intensity_profile_file", "platform_sample_s",
                     "ipmi_password", "redfish_password", "redfish_ca_file", "embodied_kgco2e",
                     "embodied_lifetime_years", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty value in an env file means "not set", as systemd operators expect.
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("electricitymaps_token", "ipmi_password", "redfish_password")
    @classmethod
    def _token_has_no_control_character(cls, value: SecretStr | None) -> SecretStr | None:
        # A YAML "|" block keeps its final newline and a CRLF-edited file leaves "\r": sent as an
        # HTTP header the value is refused, and the refusal quotes it. Name the character, never the token.
        text = value.get_secret_value() if value is not None else ""
        bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
        if bad is not None:
            where = "ends with" if text.endswith(bad) else "contains"
            hint = " (a YAML '|' block or a CRLF line ending?)" if bad in "\r\n" else ""
            raise PydanticCustomError(
                "token_control_character",
                "the secret {where} the control character {char}{hint}; set it on one line, without it",
                {"where": where, "char": ascii(bad), "hint": hint},
            )
        return value

    @field_validator("measurement_interval", "metrics_port", "intensity_g_per_kwh", "metrics_unit_grace",
                     mode="before")
    @classmethod
    def _number_not_bool(cls, value: Any) -> Any:
        # pydantic reads True as 1: `measurement_interval: yes` must not mean one second, nor `metrics_port: on` port 1.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("metrics_address")
    @classmethod
    def _ip_literal(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address such as 127.0.0.1") from None

    @field_validator("country_iso_code", mode="before")
    @classmethod
    def _country(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        code = value.strip().upper()
        known = known_country_codes()
        if not re.fullmatch(r"[A-Z]{3}", code) or (known is not None and code not in known):
            raise ValueError("must be a known ISO 3166-1 alpha-3 country code such as USA, FRA or DEU")
        return code

    @field_validator("output_dir", "state_dir", "powercap_root", mode="before")
    @classmethod
    def _path_not_empty(cls, value: Any) -> Any:
        # Path("") is the current directory: an empty CARBON_OUTPUT_DIR= must not mean "write here".
        if isinstance(value, str) and value.strip() == "":
            raise ValueError("must not be empty")
        return value

    @field_validator("output_dir", "state_dir")
    @classmethod
    def _directory_path(cls, value: Path) -> Path:
        if _path_kind(value) == "other":
            raise ValueError("exists and is not a directory")
        return value

    @field_validator("metrics_web_config", mode="before")
    @classmethod
    def _web_config_empty(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("metrics_web_config")
    @classmethod
    def _web_config_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            _remember("web_config", load_web_config(value))  # ValueError: one line naming the problem
        return value

    @field_validator("log_file")
    @classmethod
    def _log_file_path(cls, value: Path | None) -> Path | None:
        if value is not None and _path_kind(value) == "dir":
            raise ValueError("is a directory; give a file path, or an empty value for no log file")
        if value is not None and _path_kind(value) == "other":
            mode = value.stat().st_mode
            if not stat.S_ISREG(mode):  # a FIFO would block the daemon's every log line
                raise ValueError(f"is {kind_of(mode)}, not a regular file; give a file path, or an empty value "
                                 "for no log file")
        return value

    @field_validator("electricitymaps_url")
    @classmethod
    def _electricitymaps_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value.strip())
        if parts.scheme == "https" and parts.hostname:
            pass
        elif parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            pass  # plain http only to loopback (a local relay, tests): the token must not cross a network
        else:
            raise ValueError("must be an https:// URL (http:// only to 127.0.0.1, ::1 or localhost)")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment (zone is added as ?zone=...)")
        return value.strip()

    @field_validator("intensity_profile_file")
    @classmethod
    def _profile_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            # ProfileError (a ValueError) names file and line. The chain sets the location.
            _remember("profile", ProfileProvider.load(value))
        return value

    @model_validator(mode="after")
    def _keep_parsed_files(self) -> TTAConfig:
        parsed = _parsed.get() or {}
        self._profile = parsed.get("profile")
        self._web_config = parsed.get("web_config", WebConfig())
        # What each source said, for setting_origins() / yaml_overrides() (read-only copies).
        self._layers_read = tuple(
            Layer(layer.name, dict(layer.values), dict(layer.origins), layer.kind) for layer in _layers.get()
        )
        return self

    @model_validator(mode="after")
    def _online_needs_token(self) -> TTAConfig:
        if not self.offline and self.electricitymaps_token is None:
            # ctx["setting"] lets _describe name offline's value and where it was set.
            raise PydanticCustomError(
                "offline_needs_token",
                "offline=false needs electricitymaps_token (CARBON_ELECTRICITYMAPS_TOKEN)",
                {"setting": "offline"},
            )
        if (not self.offline and self.electricitymaps_zone is None
                and default_zone(self.country_iso_code) is None):
            raise PydanticCustomError(
                "offline_needs_zone",
                "offline=false needs electricitymaps_zone (CARBON_ELECTRICITYMAPS_ZONE): {country} has several "
                "Electricity Maps zones, e.g. US-CAL-CISO",
                {"setting": "country_iso_code", "country": self.country_iso_code},
            )
        return self

    @model_validator(mode="after")
    def _embodied_needs_both(self) -> TTAConfig:
        if (self.embodied_kgco2e is None) != (self.embodied_lifetime_years is None):
            given, missing = (("embodied_kgco2e", "embodied_lifetime_years") if self.embodied_lifetime_years is None
                              else ("embodied_lifetime_years", "embodied_kgco2e"))
            raise PydanticCustomError(
                "embodied_needs_both",
                "{given} is set but {missing} is not (CARBON_{upper}): embodied carbon needs both",
                {"setting": given, "given": given, "missing": missing, "upper": missing.upper()},
            )
        return self

    @model_validator(mode="after")
    def _intensity_available(self) -> TTAConfig:
        if self.intensity_g_per_kwh is None and energy_mix() is None:
            raise ValueError("no carbon intensity: codecarbon (which ships the country energy mix) is not "
                             "installed; set intensity_g_per_kwh (CARBON_INTENSITY_G_PER_KWH)")
        return self

    @classmethod
    def load(cls, explicit: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> TTAConfig:
        """Like ``TTAConfig(**explicit)``, reading ``environ`` instead of the process environment."""
        token = _environ.set(environ)
        try:
            return cls(**(explicit or {}))
        finally:
            _environ.reset(token)

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to print or log: secrets masked."""
        data = self.model_dump(mode="json")
        for name, value in data.items():
            if isinstance(getattr(self, name), SecretStr):
                data[name] = "**********"
        return data


def _remember(name: str, parsed: Any) -> None:
    """Keep what a validator parsed for ``_keep_parsed_files`` (only inside TTAConfig's own __init__)."""
    store = _parsed.get()
    if store is not None:
        store[name] = parsed


def _path_kind(path: Path) -> str:
    """'missing', 'dir' or 'other'; ValueError (a one-line reason) when the path cannot be checked."""
    if "\x00" in str(path):
        raise ValueError("contains a NUL byte")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:  # ENAMETOOLONG, EACCES on a parent, ENOTDIR, ELOOP...
        raise ValueError(f"cannot be used: {exc.strerror}") from None
    return "dir" if stat.S_ISDIR(mode) else "other"


def _describe(exc: ValidationError, layers: list[Layer]) -> str:
    """Turn pydantic's report into one line per problem naming key, value and origin."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        setting = (err.get("ctx") or {}).get("setting")
        if not loc and setting:  # a model-level check about one setting: report that setting
            loc = (setting,)
        key = str(loc[0]) if loc else "config"
        # The value as the operator wrote it (before normalising validators), from the layer that won.
        fallback = err.get("input")
        if isinstance(fallback, dict):  # a model-level check: show the setting's own value, not the whole model
            field_info = TTAConfig.model_fields.get(key)
            fallback = fallback.get(key, field_info.default if field_info else None)
        raw = next((layer.values[key] for layer in layers if key in layer.values), fallback)
        origin = next((layer.origins[key] for layer in layers if key in layer.origins), None)
        if origin is None:
            origin = "default" if key in TTAConfig.model_fields else "unknown source"
        origin = show(origin)
        shown = "***" if key == "electricitymaps_token" or looks_secret(key) else short_repr(raw)
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            lines.append(f"unknown setting {show(key)}={shown} ({origin})")
        elif key == "config":
            lines.append(f"invalid configuration: {msg}")
        else:
            if key == "measurement_interval":
                msg += f" (allowed: {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} seconds)"
            if origin == "default":
                origin = f"default; override with {env_name(key)}"
            lines.append(f"invalid {key}={shown} ({origin}): {msg}")
    return "; ".join(lines)
