"""TTAConfig: precedence, env-file syntax, every validation error, secrets, and robustness.

Project rule under test: bad input of any kind gives a ConfigError whose message is ONE line naming
the key, the bad value and where it came from ("environment variable X", "<path> line N"), and
nothing else escapes (no traceback, no other exception type).

Isolation: every test points TTA_CONFIG / TTA_ENV_FILE at files under tmp_path (the ``cfg`` fixture),
removes the host's CARBON_* / TTA_* variables, and moves the built-in default file locations into
tmp_path, so the host's /etc/tta is never read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

import src.orchestration.config as config_module
from src.orchestration import ConfigError, TTAConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "emaps-tok-3f9c1d77e2b84a51"


# --------------------------------------------------------------------------- helpers


def assert_one_line(message: str, *parts: str) -> str:
    """The message is a single non-empty line and contains every part."""
    assert message, "empty error message"
    assert len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


class Cfg:
    """Writes the YAML file and environment file for one test and sets TTA_CONFIG / TTA_ENV_FILE."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = tmp_path
        self.mp = monkeypatch
        self.yaml_path = tmp_path / "config.yaml"
        self.env_path = tmp_path / "environment"
        self.yaml_path.write_text("")
        self.env_path.write_text("")
        monkeypatch.setenv("TTA_CONFIG", str(self.yaml_path))
        monkeypatch.setenv("TTA_ENV_FILE", str(self.env_path))

    def yaml(self, text: str | bytes) -> Cfg:
        _write(self.yaml_path, text)
        return self

    def envfile(self, text: str | bytes) -> Cfg:
        _write(self.env_path, text)
        return self

    def env(self, **values: str) -> Cfg:
        for name, value in values.items():
            self.mp.setenv(name, value)
        return self

    def load(self, **kwargs: Any) -> TTAConfig:
        return TTAConfig(**kwargs)

    def error(self, *parts: str, **kwargs: Any) -> str:
        with pytest.raises(ConfigError) as info:
            TTAConfig(**kwargs)
        return assert_one_line(str(info.value), *parts)


def _write(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _clean_environment(mp: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CARBON_", "TTA_")):
            mp.delenv(name)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clean_environment(monkeypatch)
    # Belt and braces: even a test that forgets TTA_CONFIG / TTA_ENV_FILE never falls back to /etc/tta.
    monkeypatch.setattr(config_module, "CONFIG_FILE_DEFAULT", tmp_path / "no-default-config.yaml")
    monkeypatch.setattr(config_module, "ENV_FILE_DEFAULT", tmp_path / "no-default-environment")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cfg:
    return Cfg(tmp_path, monkeypatch)


# --------------------------------------------------------------------------- precedence

LAYERS = ["default", "yaml", "envfile", "env", "args"]
# key -> (environment name, value written per layer (None for default), expected typed value per layer)
PRECEDENCE_KEYS: dict[str, tuple[str, list[str | None], list[Any]]] = {
    "measurement_interval": (
        "CARBON_MEASUREMENT_INTERVAL",
        [None, "20", "30", "40", "50"],
        [15.0, 20.0, 30.0, 40.0, 50.0],
    ),
    "log_level": ("CARBON_LOG_LEVEL", [None, "debug", "warning", "error", "critical"],
                  ["info", "debug", "warning", "error", "critical"]),
    "metrics_port": ("CARBON_METRICS_PORT", [None, "9001", "9002", "9003", "9004"], [9880, 9001, 9002, 9003, 9004]),
    "project_name": ("CARBON_PROJECT_NAME", [None, "from-yaml", "from-envfile", "from-env", "from-args"],
                     ["TTA-Staging", "from-yaml", "from-envfile", "from-env", "from-args"]),
    "country_iso_code": ("CARBON_COUNTRY_ISO_CODE", [None, "FRA", "DEU", "GBR", "JPN"],
                         ["USA", "FRA", "DEU", "GBR", "JPN"]),
    "record_hostname": ("CARBON_RECORD_HOSTNAME", [None, "false", "true", "false", "true"],
                        [True, False, True, False, True]),
}


def _set_layer(cfg: Cfg, layer: str, key: str, env_name: str, value: str, args: dict[str, Any]) -> None:
    if layer == "yaml":
        cfg.yaml(f"{key}: {value}\n")
    elif layer == "envfile":
        cfg.envfile(f"{env_name}={value}\n")
    elif layer == "env":
        cfg.env(**{env_name: value})
    elif layer == "args":
        args[key] = value


@pytest.mark.parametrize("fill", ["all_layers_below", "only_this_layer"])
@pytest.mark.parametrize("top", LAYERS)
@pytest.mark.parametrize("key", sorted(PRECEDENCE_KEYS))
def test_precedence_args_over_env_over_envfile_over_yaml_over_default(cfg: Cfg, key: str, top: str, fill: str) -> None:
    env_name, written, expected = PRECEDENCE_KEYS[key]
    top_index = LAYERS.index(top)
    args: dict[str, Any] = {}
    for index in range(1, top_index + 1):
        if fill == "all_layers_below" or index == top_index:
            _set_layer(cfg, LAYERS[index], key, env_name, written[index], args)
    assert getattr(cfg.load(**args), key) == expected[top_index]


def test_each_layer_supplies_a_different_key(cfg: Cfg) -> None:
    cfg.yaml("measurement_interval: 20\nmetrics_port: 9001\nproject_name: from-yaml\n")
    cfg.envfile("CARBON_METRICS_PORT=9002\nCARBON_LOG_LEVEL=debug\n")
    cfg.env(CARBON_LOG_LEVEL="error", CARBON_COUNTRY_ISO_CODE="fra")
    c = cfg.load(country_iso_code="DEU")
    assert (c.measurement_interval, c.metrics_port, c.log_level, c.country_iso_code, c.project_name) == (
        20.0, 9002, "error", "DEU", "from-yaml",
    )
    assert c.region is None and c.energy_source == "auto"  # defaults where no layer speaks


def test_defaults_with_empty_files(cfg: Cfg) -> None:
    c = cfg.load()
    assert c.measurement_interval == 15.0 and c.metrics_port == 9880 and c.log_level == "info"
    assert c.metrics_address == "127.0.0.1" and c.country_iso_code == "USA" and c.offline is True
    assert c.env == "staging" and c.project_name == "TTA-Staging" and c.electricitymaps_token is None
    assert c.config_file == cfg.yaml_path and c.env_file == cfg.env_path


def test_absent_default_files_are_skipped(tmp_path: Path) -> None:
    # No TTA_CONFIG / TTA_ENV_FILE: the (relocated) defaults do not exist, which is fine.
    assert TTAConfig().measurement_interval == 15.0


def test_present_default_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "default.yaml").write_text("measurement_interval: 21\n")
    (tmp_path / "default.env").write_text("CARBON_METRICS_PORT=9005\n")
    monkeypatch.setattr(config_module, "CONFIG_FILE_DEFAULT", tmp_path / "default.yaml")
    monkeypatch.setattr(config_module, "ENV_FILE_DEFAULT", tmp_path / "default.env")
    c = TTAConfig()
    assert (c.measurement_interval, c.metrics_port) == (21.0, 9005)


def test_tta_config_named_inside_environment_file(cfg: Cfg) -> None:
    other = cfg.dir / "named-in-envfile.yaml"
    other.write_text("measurement_interval: 42\n")
    cfg.mp.delenv("TTA_CONFIG")
    cfg.envfile(f"# points at the YAML file\nTTA_CONFIG={other}\n")
    c = cfg.load()
    assert c.measurement_interval == 42.0 and c.config_file == other


def test_tta_config_quoted_with_export_inside_environment_file(cfg: Cfg) -> None:
    other = cfg.dir / "quoted.yaml"
    other.write_text("metrics_port: 9111\n")
    cfg.mp.delenv("TTA_CONFIG")
    cfg.envfile(f'export TTA_CONFIG="{other}"\n')
    assert cfg.load().metrics_port == 9111


def test_tta_config_env_var_beats_the_one_in_environment_file(cfg: Cfg) -> None:
    ignored = cfg.dir / "ignored.yaml"
    ignored.write_text("measurement_interval: 0\n")  # would be an error if it were read
    cfg.yaml("measurement_interval: 33\n").envfile(f"TTA_CONFIG={ignored}\n")
    assert cfg.load().measurement_interval == 33.0


def test_explicit_config_and_env_file_beat_tta_variables(cfg: Cfg) -> None:
    cfg.yaml("measurement_interval: 0\n").envfile("CARBON_METRICS_PORT=0\n")  # both would fail if read
    explicit_yaml = cfg.dir / "explicit.yaml"
    explicit_env = cfg.dir / "explicit.env"
    explicit_yaml.write_text("measurement_interval: 7\n")
    explicit_env.write_text("CARBON_METRICS_PORT=9007\n")
    c = cfg.load(config_file=str(explicit_yaml), env_file=str(explicit_env))
    assert (c.measurement_interval, c.metrics_port) == (7.0, 9007)
    assert c.config_file == explicit_yaml and c.env_file == explicit_env


# --------------------------------------------------------------------------- origins and dead YAML keys (issue 13)


def test_setting_origins_lists_every_source_winner_first(cfg: Cfg) -> None:
    cfg.yaml("# staging\nmetrics_port: 9001\nlog_level: info\n")
    cfg.envfile("# x\nCARBON_LOG_LEVEL=warning\n")
    cfg.env(CARBON_LOG_LEVEL="error")
    c = cfg.load(log_level="debug")
    assert c.log_level == "debug"  # precedence unchanged by keeping the layers
    origins = c.setting_origins()
    assert origins["log_level"] == [
        ("arguments", "argument log_level"),
        ("environment", "environment variable CARBON_LOG_LEVEL"),
        ("env_file", f"{cfg.env_path} line 2"),
        ("yaml", f"{cfg.yaml_path} line 3"),
    ]
    assert origins["metrics_port"] == [("yaml", f"{cfg.yaml_path} line 2")]
    assert "measurement_interval" not in origins  # a default is no source


def test_yaml_overrides_name_both_files_and_lines(cfg: Cfg) -> None:
    cfg.yaml("measurement_interval: 15\nlog_level: info\nmetrics_port: 9001\nproject_name: from-yaml\n")
    cfg.envfile("# comment\nCARBON_MEASUREMENT_INTERVAL=30\nCARBON_METRICS_ADDRESS=::1\nCARBON_PROJECT_NAME=x\n")
    c = cfg.load()
    assert (c.measurement_interval, c.project_name) == (30.0, "x")  # the environment file wins ...
    got = [(o.setting, o.name, o.value, o.origin, o.in_env_file, o.yaml_value, o.yaml_origin)
           for o in c.yaml_overrides()]
    assert got == [  # ... and each YAML key it hides is named, in YAML file order
        ("measurement_interval", "CARBON_MEASUREMENT_INTERVAL", "30", f"{cfg.env_path} line 2", True, 15,
         f"{cfg.yaml_path} line 1"),
        ("project_name", "CARBON_PROJECT_NAME", "x", f"{cfg.env_path} line 4", True, "from-yaml",
         f"{cfg.yaml_path} line 4"),
    ]


def test_yaml_overrides_env_var_with_the_files_value_is_the_file_line(cfg: Cfg) -> None:
    """systemd's EnvironmentFile= (and `set -a; . environment`) copy the file into the process environment."""
    cfg.yaml("log_level: info\nproject_name: from-yaml\n")
    cfg.envfile("CARBON_LOG_LEVEL=debug\nCARBON_PROJECT_NAME=from-file\n")
    cfg.env(CARBON_LOG_LEVEL="debug", CARBON_PROJECT_NAME="from-env")
    got = [(o.setting, o.origin, o.value) for o in cfg.load().yaml_overrides()]
    assert got == [
        ("log_level", f"{cfg.env_path} line 1", "debug"),  # once: the env var is the file's own value
        ("project_name", "environment variable CARBON_PROJECT_NAME", "from-env"),  # the winner first
        ("project_name", f"{cfg.env_path} line 2", "from-file"),
    ]


def test_yaml_overrides_leave_out_arguments_and_keys_set_once(cfg: Cfg) -> None:
    cfg.yaml("log_level: info\nmetrics_port: 9001\n").envfile("CARBON_REGION=eu-west\n")
    assert cfg.load(log_level="debug", metrics_port=9002).yaml_overrides() == []


def test_yaml_overrides_without_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "env").write_text("CARBON_LOG_LEVEL=debug\n")
    c = TTAConfig(env_file=str(tmp_path / "env"))  # the (relocated) default YAML file does not exist
    assert c.yaml_overrides() == []
    assert c.setting_origins()["log_level"] == [("env_file", f"{tmp_path / 'env'} line 1")]


# --------------------------------------------------------------------------- systemd's EnvironmentFile= (issue 13)


def test_env_var_holding_the_env_files_value_names_the_file_and_line(cfg: Cfg) -> None:
    """systemd passes the environment file as process variables: the error points at the file's line."""
    cfg.envfile("# staging\nTTA_ENV=staging\nCARBON_LOG_LEVEL=info\nCARBON_MEASUREMENT_INTERVAL=abc\n")
    cfg.env(TTA_ENV="staging", CARBON_LOG_LEVEL="info", CARBON_MEASUREMENT_INTERVAL="abc")
    msg = cfg.error("invalid measurement_interval='abc' (environment variable CARBON_MEASUREMENT_INTERVAL, "
                    f"from {cfg.env_path} line 4): ")
    assert msg.count("line") == 1


def test_env_var_typo_holding_the_env_files_value_names_the_file_and_line(cfg: Cfg) -> None:
    cfg.envfile("CARBON_PROJECT_NAME=x\nexport CARBON_LOGLEVEL='debug'\n")
    cfg.env(CARBON_PROJECT_NAME="x", CARBON_LOGLEVEL="debug")  # quotes and `export` as the file parser reads them
    cfg.error("unknown setting CARBON_LOGLEVEL='debug' (environment variable CARBON_LOGLEVEL, "
              f"from {cfg.env_path} line 2)")


def test_env_var_differing_from_the_env_file_is_only_the_variable(cfg: Cfg) -> None:
    cfg.envfile("CARBON_MEASUREMENT_INTERVAL=15\n")
    cfg.env(CARBON_MEASUREMENT_INTERVAL="abc")
    msg = cfg.error("invalid measurement_interval='abc' (environment variable CARBON_MEASUREMENT_INTERVAL): ")
    assert str(cfg.env_path) not in msg


def test_env_file_errors_still_come_after_the_environments(cfg: Cfg) -> None:
    """Parsing the file first (to name its lines) does not change which error is reported."""
    cfg.envfile("CARBON_LOG_LEVEL=info\nnot a line\n")
    cfg.env(CARBON_MESUREMENT_INTERVAL="5")
    cfg.error("unknown setting CARBON_MESUREMENT_INTERVAL='5' (environment variable CARBON_MESUREMENT_INTERVAL)")
    os.environ.pop("CARBON_MESUREMENT_INTERVAL")
    cfg.error(f"environment file {cfg.env_path} line 2: expected KEY=value")


def test_setting_origins_name_the_env_file_behind_a_variable(cfg: Cfg) -> None:
    cfg.envfile("# x\nCARBON_LOG_LEVEL=warning\n")
    cfg.env(CARBON_LOG_LEVEL="warning")
    assert cfg.load().setting_origins()["log_level"] == [
        ("environment", f"environment variable CARBON_LOG_LEVEL, from {cfg.env_path} line 2"),
        ("env_file", f"{cfg.env_path} line 2"),
    ]


@pytest.mark.parametrize(("yaml_key", "env_line", "secret"), [
    ("electricitymaps_token", f"CARBON_ELECTRICITYMAPS_TOKEN={TOKEN}", True),
    ("log_level", "CARBON_LOG_LEVEL=debug", False),
])
def test_yaml_override_secret_flag(cfg: Cfg, yaml_key: str, env_line: str, secret: bool) -> None:
    cfg.yaml(f"{yaml_key}: {'other-token' if secret else 'info'}\n").envfile(env_line + "\n")
    (override,) = cfg.load().yaml_overrides()
    assert override.secret is secret


# --------------------------------------------------------------------------- environment file syntax


def test_export_and_plain_lines_both_accepted(cfg: Cfg) -> None:
    cfg.envfile("export CARBON_LOG_LEVEL=debug\nCARBON_METRICS_PORT=9010\nexport   CARBON_REGION = eu-west\n")
    c = cfg.load()
    assert (c.log_level, c.metrics_port, c.region) == ("debug", 9010, "eu-west")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('CARBON_PROJECT_NAME="double quoted"', "double quoted"),
        ("CARBON_PROJECT_NAME='single quoted'", "single quoted"),
        ("export CARBON_PROJECT_NAME='exported quoted'", "exported quoted"),
        ('CARBON_PROJECT_NAME = "  spaces kept inside quotes  "', "  spaces kept inside quotes  "),
        ("CARBON_PROJECT_NAME=\"it's\"", "it's"),
        ("CARBON_PROJECT_NAME='say \"hi\"'", 'say "hi"'),
        ("CARBON_PROJECT_NAME=unquoted value   ", "unquoted value"),
        ("CARBON_PROJECT_NAME=a=b=c", "a=b=c"),
        ("CARBON_PROJECT_NAME=#not-a-comment", "#not-a-comment"),
    ],
)
def test_env_file_quotes_stripped(cfg: Cfg, line: str, expected: str) -> None:
    cfg.envfile(line + "\n")
    assert cfg.load().project_name == expected


def test_env_file_comments_blank_lines_crlf_and_no_final_newline(cfg: Cfg) -> None:
    cfg.envfile(b"# comment\r\n\r\n   \r\n   # indented\r\nCARBON_LOG_LEVEL=warning\r\n\tCARBON_METRICS_PORT=9020")
    c = cfg.load()
    assert (c.log_level, c.metrics_port) == ("warning", 9020)


def test_env_file_ignores_variables_that_are_not_ours(cfg: Cfg) -> None:
    cfg.envfile("PATH=/usr/bin\nHOME=/root\nPYTHONUNBUFFERED=1\nCARBON_LOG_LEVEL=error\n")
    cfg.env(SOME_OTHER_TOOL="x", CODECARBON_LOG_LEVEL="debug")
    assert cfg.load().log_level == "error"


def test_env_file_empty_value_means_unset_for_optional_settings(cfg: Cfg) -> None:
    cfg.yaml("region: from-yaml\n").envfile("CARBON_LOG_FILE=\nCARBON_REGION=''\nCARBON_INTENSITY_G_PER_KWH=\n")
    c = cfg.load()
    assert c.log_file is None and c.region is None and c.intensity_g_per_kwh is None


def test_env_file_last_duplicate_wins(cfg: Cfg) -> None:
    cfg.envfile("CARBON_LOG_LEVEL=debug\nCARBON_LOG_LEVEL=error\n")
    assert cfg.load().log_level == "error"


def test_values_are_normalised(cfg: Cfg) -> None:
    cfg.env(CARBON_LOG_LEVEL="  WARNING ", CARBON_COUNTRY_ISO_CODE=" fra ", CARBON_METRICS_ADDRESS=" ::1 ")
    c = cfg.load()
    assert (c.log_level, c.country_iso_code, c.metrics_address) == ("warning", "FRA", "::1")


# --------------------------------------------------------------------------- validation errors: env vars

ENV_VAR_ERRORS = [
    # (variable, value, setting named in the message, how the value is shown, extra text)
    ("CARBON_MEASUREMENT_INTERVAL", "0", "measurement_interval", "'0'", "allowed: 1 to 3600 seconds"),
    ("CARBON_MEASUREMENT_INTERVAL", "-5", "measurement_interval", "'-5'", "greater than or equal to 1"),
    ("CARBON_MEASUREMENT_INTERVAL", "3601", "measurement_interval", "'3601'", "less than or equal to 3600"),
    ("CARBON_MEASUREMENT_INTERVAL", "nan", "measurement_interval", "'nan'", "finite number"),
    ("CARBON_MEASUREMENT_INTERVAL", "inf", "measurement_interval", "'inf'", "finite number"),
    ("CARBON_MEASUREMENT_INTERVAL", "-inf", "measurement_interval", "'-inf'", "finite number"),
    ("CARBON_MEASUREMENT_INTERVAL", "1e400", "measurement_interval", "'1e400'", "finite number"),
    ("CARBON_MEASUREMENT_INTERVAL", "fast", "measurement_interval", "'fast'", "valid number"),
    ("CARBON_MEASUREMENT_INTERVAL", "15s", "measurement_interval", "'15s'", "valid number"),
    ("CARBON_MEASUREMENT_INTERVAL", "", "measurement_interval", "''", "valid number"),
    ("CARBON_MEASUREMENT_INTERVAL", "1\t5", "measurement_interval", "'1\\t5'", "valid number"),
    ("CARBON_METRICS_PORT", "0", "metrics_port", "'0'", "greater than or equal to 1"),
    ("CARBON_METRICS_PORT", "65536", "metrics_port", "'65536'", "less than or equal to 65535"),
    ("CARBON_METRICS_PORT", "-1", "metrics_port", "'-1'", "greater than or equal to 1"),
    ("CARBON_METRICS_PORT", "http", "metrics_port", "'http'", "valid integer"),
    ("CARBON_METRICS_PORT", "80.5", "metrics_port", "'80.5'", "valid integer"),
    ("CARBON_METRICS_ADDRESS", "localhost", "metrics_address", "'localhost'", "IPv4 or IPv6"),
    ("CARBON_METRICS_ADDRESS", "256.0.0.1", "metrics_address", "'256.0.0.1'", "IPv4 or IPv6"),
    ("CARBON_METRICS_ADDRESS", "127.0.0.1:9880", "metrics_address", "'127.0.0.1:9880'", "IPv4 or IPv6"),
    ("CARBON_LOG_LEVEL", "verbose", "log_level", "'verbose'", "'debug', 'info'"),
    ("CARBON_LOG_LEVEL", "", "log_level", "''", "'debug', 'info'"),
    ("CARBON_COUNTRY_ISO_CODE", "XYZ", "country_iso_code", "'XYZ'", "ISO 3166-1 alpha-3"),
    ("CARBON_COUNTRY_ISO_CODE", "US", "country_iso_code", "'US'", "ISO 3166-1 alpha-3"),
    ("CARBON_COUNTRY_ISO_CODE", "U5A", "country_iso_code", "'U5A'", "ISO 3166-1 alpha-3"),
    ("CARBON_OFFLINE", "maybe", "offline", "'maybe'", "valid boolean"),
    ("CARBON_RECORD_HOSTNAME", "2", "record_hostname", "'2'", "valid boolean"),
    ("CARBON_ENERGY_SOURCE", "solar", "energy_source", "'solar'", "'auto', 'rapl', 'cpu_load_tdp' or 'codecarbon'"),
    ("CARBON_INTENSITY_G_PER_KWH", "-1", "intensity_g_per_kwh", "'-1'", "greater than 0"),
    ("CARBON_INTENSITY_G_PER_KWH", "3001", "intensity_g_per_kwh", "'3001'", "less than or equal to 3000"),
    ("CARBON_INTENSITY_G_PER_KWH", "nan", "intensity_g_per_kwh", "'nan'", "finite number"),
    ("CARBON_PROJECT_NAME", "bad\x1b[31mname", "project_name", "'bad\\x1b[31mname'", "match pattern"),
    ("CARBON_PROJECT_NAME", "x" * 101, "project_name", "'xxxxxxxxxx", "at most 100 characters"),
    ("CARBON_REGION", "r" * 65, "region", "'rrrrrrrrrr", "at most 64 characters"),
    ("TTA_ENV", "Prod Env!", "env", "'Prod Env!'", "match pattern"),
]


@pytest.mark.parametrize(("var", "value", "key", "shown", "extra"), ENV_VAR_ERRORS)
def test_bad_environment_variable(cfg: Cfg, var: str, value: str, key: str, shown: str, extra: str) -> None:
    cfg.env(**{var: value})
    message = cfg.error(f"invalid {key}=", shown, f"(environment variable {var})", extra)
    assert len(message) < 400


@pytest.mark.parametrize("typo", ["CARBON_MEASURMENT_INTERVAL", "CARBON_LOGLEVEL", "CARBON_", "CARBON_CONFIG_FILE"])
def test_unknown_carbon_environment_variable_is_a_typo(cfg: Cfg, typo: str) -> None:
    cfg.env(**{typo: "5"})
    cfg.error(f"unknown setting {typo}='5'", f"(environment variable {typo})")


def test_values_from_args_name_the_argument(cfg: Cfg) -> None:
    cfg.error("invalid measurement_interval='-1'", "(argument measurement_interval)", measurement_interval="-1")
    cfg.error("unknown setting nope='1'", "(argument nope)", nope="1")


# --------------------------------------------------------------------------- validation errors: YAML

YAML_ERRORS = [
    # (YAML text, message parts)
    ("measurement_interval: 0\n", ["invalid measurement_interval=0", "line 1", "allowed: 1 to 3600"]),
    ("# c\nmeasurement_interval: -3\n", ["invalid measurement_interval=-3", "line 2"]),
    ("measurement_interval: 3601\n", ["invalid measurement_interval=3601", "less than or equal to 3600"]),
    ("measurement_interval: .nan\n", ["invalid measurement_interval=nan", "finite number"]),
    ("measurement_interval: .inf\n", ["invalid measurement_interval=inf", "finite number"]),
    ("measurement_interval: -.inf\n", ["invalid measurement_interval=-inf", "finite number"]),
    ("measurement_interval: 1e400\n", ["invalid measurement_interval='1e400'", "finite number"]),
    ("measurement_interval: soon\n", ["invalid measurement_interval='soon'", "valid number"]),
    ("measurement_interval: [15]\n", ["invalid measurement_interval=[15]", "valid number"]),
    ("measurement_interval: {s: 15}\n", ["invalid measurement_interval={'s': 15}", "valid number"]),
    ("measurement_interval: yes\n", ["invalid measurement_interval=True", "not a boolean"]),
    ("metrics_port: on\n", ["invalid metrics_port=True", "not a boolean"]),
    ("intensity_g_per_kwh: true\n", ["invalid intensity_g_per_kwh=True", "not a boolean"]),
    ("metrics_port: 0\n", ["invalid metrics_port=0", "greater than or equal to 1"]),
    ("metrics_port: 65536\n", ["invalid metrics_port=65536", "less than or equal to 65535"]),
    ("metrics_port: http\n", ["invalid metrics_port='http'", "valid integer"]),
    ("metrics_port: [9880]\n", ["invalid metrics_port=[9880]", "valid integer"]),
    ("metrics_address: 127\n", ["invalid metrics_address=127", "valid string"]),
    ("metrics_address: example.com\n", ["invalid metrics_address='example.com'", "IPv4 or IPv6"]),
    ("log_level: 3\n", ["invalid log_level=3", "'debug', 'info'"]),
    ("log_level: loud\n", ["invalid log_level='loud'", "'debug', 'info'"]),
    ("country_iso_code: 840\n", ["invalid country_iso_code=840", "valid string"]),
    ("country_iso_code: ZZZ\n", ["invalid country_iso_code='ZZZ'", "ISO 3166-1 alpha-3"]),
    ("project_name: [a, b]\n", ["invalid project_name=['a', 'b']", "valid string"]),
    ("project_name: {a: 1}\n", ["invalid project_name={'a': 1}", "valid string"]),
    ("offline: maybe\n", ["invalid offline='maybe'", "valid boolean"]),
    ("record_hostname: 2\n", ["invalid record_hostname=2", "valid boolean"]),
    ("energy_source: nuclear\n", ["invalid energy_source='nuclear'", "'auto', 'rapl', 'cpu_load_tdp' or 'codecarbon'"]),
    ("powercap_root: 3\n", ["invalid powercap_root=3", "valid path"]),
    ("env: Staging Env\n", ["invalid env='Staging Env'", "match pattern"]),
    ("measurement_interval: 2001-12-14\n", ["invalid measurement_interval=datetime.date(2001, 12, 14)"]),
]


@pytest.mark.parametrize(("text", "parts"), YAML_ERRORS)
def test_bad_yaml_value(cfg: Cfg, text: str, parts: list[str]) -> None:
    cfg.yaml(text)
    line = len(text.splitlines())
    cfg.error(*parts, f"({cfg.yaml_path} line {line})")


def test_several_bad_values_reported_on_one_line(cfg: Cfg) -> None:
    cfg.yaml("measurement_interval: 0\nmetrics_port: 0\n").env(CARBON_LOG_LEVEL="loud")
    message = cfg.error("invalid measurement_interval=0", f"{cfg.yaml_path} line 1", "invalid metrics_port=0",
                        f"{cfg.yaml_path} line 2", "invalid log_level='loud' (environment variable CARBON_LOG_LEVEL)")
    assert message.count("; ") == 2


@pytest.mark.parametrize(
    ("text", "key_shown", "line"),
    [
        ("measurement_interval: 15\nmeasurment_interval: 15\n", "'measurment_interval'", 2),
        ("config_file: /etc/other.yaml\n", "'config_file'", 1),  # locators only make sense outside the file
        ("env_file: /etc/other.env\n", "'env_file'", 1),
        ("CARBON_LOG_LEVEL: info\n", "'CARBON_LOG_LEVEL'", 1),
        ("# a\n\n1: 2\n", "1", 3),
        ("true: 1\n", "True", 1),
        ("null: x\n", "None", 1),
        ("log_level: info\n? [a, b]\n: c\n", None, 2),  # unhashable key: a YAML error, still with its line
    ],
)
def test_unknown_yaml_key(cfg: Cfg, text: str, key_shown: str | None, line: int) -> None:
    cfg.yaml(text)
    if key_shown is None:
        cfg.error("YAML syntax error", f"line {line}")
    else:
        cfg.error(f"unknown setting {key_shown}", f"({cfg.yaml_path} line {line})")


@pytest.mark.parametrize(
    ("text", "key", "first", "again"),
    [
        ("measurement_interval: 15\nlog_level: info\nmeasurement_interval: 1\n", "'measurement_interval'", 1, 3),
        ("log_level: info\n# later edit\n\nlog_level: debug\n", "'log_level'", 1, 4),
        ('"metrics_port": 9880\nmetrics_port: 9881\n', "'metrics_port'", 1, 2),  # quoting does not make it another key
    ],
)
def test_duplicate_yaml_key_is_refused_with_both_lines(cfg: Cfg, text: str, key: str, first: int, again: int) -> None:
    cfg.yaml(text)
    cfg.error(f"config file {cfg.yaml_path} line {again}: setting {key} given twice (first on line {first})")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("measurement_interval: 15\n  metrics_port: 9880\n", 2, "mapping values are not allowed here"),
        ("log_level: info\nregion:\n\t- a\n", 3, "cannot start any token"),
        ('log_level: info\n\nproject_name: "unterminated\n', 4, "found unexpected end of stream"),
        ("region: [a, b\n", 2, "expected ',' or ']'"),
        ("log_level: info\n---\nlog_level: debug\n", 2, "but found another document"),
        ("output_dir: !!python/object/apply:os.system ['touch /tmp/x']\n", 1, "could not determine a constructor"),
        ("log_level: info\nlog_level: *nope\n", 2, "found undefined alias"),
        ("project_name: a\x00b\n", 1, "unacceptable character"),
        ("log_level: info\n# c\nproject_name: \x07\n", 3, "unacceptable character"),
    ],
)
def test_yaml_syntax_error_reports_line(cfg: Cfg, text: str, line: int, problem: str) -> None:
    cfg.yaml(text)
    cfg.error(f"config file {cfg.yaml_path} line {line}", "YAML syntax error", problem)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int"), ("[1, 2]\n", "list")],
)
def test_yaml_top_level_not_a_mapping(cfg: Cfg, text: str, kind: str) -> None:
    cfg.yaml(text)
    cfg.error(f"config file {cfg.yaml_path}: top level must be a mapping of settings, got {kind}")


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n", "---\n", "~\n"])
def test_empty_yaml_is_fine(cfg: Cfg, text: str) -> None:
    cfg.yaml(text)
    assert cfg.load().measurement_interval == 15.0


def test_yaml_line_numbers_count_newlines_only(cfg: Cfg) -> None:
    # PyYAML counts NEL / U+2028 as line breaks; an editor (and the operator) does not.
    cfg.yaml("region: \"a\u2028b\"\nlog_level: info\nmetrics_port: 0\n")
    cfg.error("invalid metrics_port=0", f"({cfg.yaml_path} line 3)")


# --------------------------------------------------------------------------- validation errors: environment file


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ("CARBON_MEASUREMENT_INTERVAL=0", ["invalid measurement_interval='0'"]),
        ("export CARBON_MEASUREMENT_INTERVAL=99999", ["invalid measurement_interval='99999'"]),
        ("CARBON_MEASUREMENT_INTERVAL=15 # seconds", ["invalid measurement_interval='15 # seconds'"]),
        ("CARBON_METRICS_PORT='65536'", ["invalid metrics_port='65536'"]),
        ("CARBON_COUNTRY_ISO_CODE=Narnia", ["invalid country_iso_code='Narnia'"]),
        ("CARBON_LOG_LEVEL=in\x0bfo", ["invalid log_level='in\\x0bfo'"]),  # \v is not a line break here
        ("CARBON_MESUREMENT_INTERVAL=15", ["unknown setting CARBON_MESUREMENT_INTERVAL='15'"]),
    ],
)
def test_bad_env_file_value_names_file_and_line(cfg: Cfg, line: str, parts: list[str]) -> None:
    cfg.envfile(f"# staging\n\n{line}\nCARBON_REGION=after\n")
    cfg.error(*parts, f"({cfg.env_path} line 3)")


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ("this is not an assignment", ["expected KEY=value", "'this is not an assignment'"]),
        ("CARBON_LOG_LEVEL: info", ["expected KEY=value", "'CARBON_LOG_LEVEL: info'"]),
        ("1CARBON_X=1", ["expected KEY=value"]),
        ("export", ["expected KEY=value"]),
        ("CARBON-LOG-LEVEL=info", ["expected KEY=value"]),
        ("CARBON_LOG_LEVEL='info", ["unterminated quote in CARBON_LOG_LEVEL"]),
        ('CARBON_LOG_LEVEL="info\'', ["unterminated quote in CARBON_LOG_LEVEL"]),
    ],
)
def test_env_file_bad_line_reports_line_number(cfg: Cfg, line: str, parts: list[str]) -> None:
    cfg.envfile(f"CARBON_LOG_LEVEL=info\n# comment\n\n{line}\n")
    cfg.error(f"environment file {cfg.env_path} line 4", *parts)


def test_env_file_line_numbers_count_newlines_only(cfg: Cfg) -> None:
    # str.splitlines() would split inside these values and blame a later line.
    cfg.envfile("CARBON_PROJECT_NAME=a\x0cb\x1cc\x85d\u2028e\nCARBON_METRICS_PORT=bad\n")
    cfg.error("project_name=", f"({cfg.env_path} line 1)")


# --------------------------------------------------------------------------- paths


def test_output_dir_that_is_a_file(cfg: Cfg) -> None:
    afile = cfg.dir / "afile"
    afile.write_text("x")
    cfg.env(CARBON_OUTPUT_DIR=str(afile))
    cfg.error(f"invalid output_dir='{afile}'", "(environment variable CARBON_OUTPUT_DIR)", "not a directory")


def test_state_dir_that_is_a_file(cfg: Cfg) -> None:
    afile = cfg.dir / "afile"
    afile.write_text("x")
    cfg.yaml(f"log_level: info\nstate_dir: {afile}\n")
    cfg.error(f"invalid state_dir='{afile}'", f"({cfg.yaml_path} line 2)", "exists and is not a directory")


def test_log_file_that_is_a_directory(cfg: Cfg) -> None:
    cfg.envfile(f"CARBON_LOG_FILE={cfg.dir}\n")
    cfg.error(f"invalid log_file='{cfg.dir}'", f"({cfg.env_path} line 1)", "is a directory")


@pytest.mark.parametrize("var", ["CARBON_OUTPUT_DIR", "CARBON_STATE_DIR"])
def test_empty_directory_setting_is_rejected_not_cwd(cfg: Cfg, var: str) -> None:
    # Path("") is "." : an empty value used to make the daemon write into its working directory.
    cfg.env(**{var: ""})
    cfg.error(f"invalid {var.removeprefix('CARBON_').lower()}=''", f"(environment variable {var})",
              "must not be empty")


def test_path_with_nul_byte(cfg: Cfg) -> None:
    # systemd would stop reading the file at the NUL and run with output_dir ".../a".
    cfg.envfile(f"CARBON_LOG_LEVEL=info\nCARBON_OUTPUT_DIR={cfg.dir}/a\x00b\n")
    cfg.error(f"environment file {cfg.env_path} line 2: holds a NUL byte")


@pytest.mark.parametrize("var", ["CARBON_OUTPUT_DIR", "CARBON_STATE_DIR", "CARBON_LOG_FILE"])
def test_path_too_long(cfg: Cfg, var: str) -> None:
    cfg.env(**{var: str(cfg.dir / ("n" * 300))})
    message = cfg.error(f"(environment variable {var})", "File name too long")
    assert len(message) < 400


def test_path_below_a_regular_file(cfg: Cfg) -> None:
    afile = cfg.dir / "afile"
    afile.write_text("x")
    cfg.yaml(f"output_dir: {afile}/sub\n")
    cfg.error("invalid output_dir=", f"({cfg.yaml_path} line 1)", "Not a directory")


def test_missing_directories_are_fine_and_not_created(cfg: Cfg) -> None:
    out, state, log = cfg.dir / "o" / "deep", cfg.dir / "s", cfg.dir / "l" / "carbon.log"
    cfg.env(CARBON_OUTPUT_DIR=str(out), CARBON_STATE_DIR=str(state), CARBON_LOG_FILE=str(log))
    before = sorted(cfg.dir.rglob("*"))
    c = cfg.load()
    assert (c.output_dir, c.state_dir, c.log_file) == (out, state, log)
    assert sorted(cfg.dir.rglob("*")) == before


# --------------------------------------------------------------------------- offline needs a token


@pytest.mark.parametrize(
    ("where", "origin"),
    [("env", "environment variable CARBON_OFFLINE"), ("envfile", "line 1"), ("yaml", "line 1")],
)
def test_offline_false_without_token(cfg: Cfg, where: str, origin: str) -> None:
    if where == "env":
        cfg.env(CARBON_OFFLINE="false")
    elif where == "envfile":
        cfg.envfile("CARBON_OFFLINE=false\n")
    else:
        cfg.yaml("offline: false\n")
    cfg.error("invalid offline=", "false", origin, "needs electricitymaps_token")


def test_offline_false_with_token_is_fine(cfg: Cfg) -> None:
    cfg.envfile(f"CARBON_OFFLINE=false\nCARBON_ELECTRICITYMAPS_TOKEN={TOKEN}\nCARBON_ELECTRICITYMAPS_ZONE=US-CAL-CISO\n")
    c = cfg.load()
    assert c.offline is False and c.electricitymaps_token.get_secret_value() == TOKEN


def test_offline_false_in_a_multi_zone_country_needs_a_zone(cfg: Cfg) -> None:
    cfg.envfile(f"CARBON_OFFLINE=false\nCARBON_ELECTRICITYMAPS_TOKEN={TOKEN}\n")
    msg = cfg.error()
    assert msg == ("invalid country_iso_code='USA' (default; override with CARBON_COUNTRY_ISO_CODE): offline=false "
                   "needs electricitymaps_zone (CARBON_ELECTRICITYMAPS_ZONE): USA has several Electricity Maps "
                   "zones, e.g. US-CAL-CISO")


# --------------------------------------------------------------------------- files


def test_non_utf8_yaml(cfg: Cfg) -> None:
    cfg.yaml(b"log_level: info\nproject_name: caf\xe9\n")
    cfg.error(f"config file {cfg.yaml_path}: not valid UTF-8", "at byte 33")


def test_non_utf8_env_file(cfg: Cfg) -> None:
    cfg.envfile(b"CARBON_PROJECT_NAME=\xff\xfe\n")
    cfg.error(f"environment file {cfg.env_path}: not valid UTF-8", "at byte 20")


def test_missing_config_file_named_by_tta_config(cfg: Cfg) -> None:
    missing = cfg.dir / "missing.yaml"
    cfg.env(TTA_CONFIG=str(missing))
    cfg.error(f"config file {missing} does not exist", "(set by environment variable TTA_CONFIG)")


def test_missing_env_file_named_by_tta_env_file(cfg: Cfg) -> None:
    missing = cfg.dir / "missing.env"
    cfg.env(TTA_ENV_FILE=str(missing))
    cfg.error(f"environment file {missing} does not exist", "(set by environment variable TTA_ENV_FILE)")


def test_missing_files_named_explicitly(cfg: Cfg) -> None:
    cfg.error(f"config file {cfg.dir / 'nope.yaml'} does not exist", "(set by --config argument)",
              config_file=str(cfg.dir / "nope.yaml"))
    cfg.error(f"environment file {cfg.dir / 'nope.env'} does not exist", "(set by --env-file argument)",
              env_file=str(cfg.dir / "nope.env"))


def test_missing_config_file_named_inside_environment_file_names_that_line(cfg: Cfg) -> None:
    missing = cfg.dir / "missing.yaml"
    cfg.mp.delenv("TTA_CONFIG")
    cfg.envfile(f"# where the YAML is\nTTA_CONFIG={missing}\n")
    cfg.error(f"config file {missing} does not exist", f"(set by {cfg.env_path} line 2)")


def test_config_path_too_long(cfg: Cfg) -> None:
    cfg.env(TTA_CONFIG=str(cfg.dir / ("c" * 300)))
    message = cfg.error("config file ", "(set by environment variable TTA_CONFIG)", "File name too long")
    assert len(message) < 400


def test_config_file_that_is_a_directory_cannot_be_read(cfg: Cfg) -> None:
    # A directory in place of the file: unreadable as a file even for root (chmod 000 would not stop root).
    cfg.env(TTA_CONFIG=str(cfg.dir))
    cfg.error(f"config file {cfg.dir}: is a directory, not a regular file")


def test_env_file_that_is_a_directory_cannot_be_read(cfg: Cfg) -> None:
    cfg.env(TTA_ENV_FILE=str(cfg.dir))
    cfg.error(f"environment file {cfg.dir}: is a directory, not a regular file")


def test_file_names_with_control_characters_stay_on_one_line(cfg: Cfg) -> None:
    weird = cfg.dir / "line\nbreak.yaml"
    weird.write_text("measurement_interval: 0\n")
    cfg.env(TTA_CONFIG=str(weird))
    cfg.error("invalid measurement_interval=0", "line\\nbreak.yaml", "line 1")
    cfg.env(TTA_CONFIG=str(cfg.dir / "gone\r\n.yaml"))
    cfg.error("does not exist", "gone\\r\\n.yaml")


def test_environment_variable_name_with_newline_stays_on_one_line(cfg: Cfg) -> None:
    cfg.env(**{"CARBON_ODD\nNAME": "1"})
    cfg.error("unknown setting", "CARBON_ODD\\nNAME")


# Unreadable files for real: root ignores chmod 000, so as root the check runs in a subprocess whose
# capability bounding set lacks CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (still uid 0, so the venv under
# /root stays usable). As a normal user chmod 000 is enough.
_PROBE = textwrap.dedent(
    """
    import json, sys
    try:
        open(sys.argv[1], "rb").close()
    except PermissionError:
        pass
    else:
        print(json.dumps({"result": "privileges-not-dropped"})); sys.exit(0)
    from src.orchestration import ConfigError, TTAConfig
    try:
        TTAConfig()
    except ConfigError as exc:
        print(json.dumps({"result": "ConfigError", "message": str(exc)}))
    except BaseException as exc:
        print(json.dumps({"result": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"result": "loaded"}))
    """
)


def _load_without_read_permission(probe_path: Path, env: dict[str, str]) -> dict[str, str]:
    cmd = [sys.executable, "-c", _PROBE, str(probe_path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is missing: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_", "TTA_"))} | env
    proc = subprocess.run(cmd, env=full_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0 and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if result["result"] == "privileges-not-dropped":
        pytest.skip("could not drop the privilege to read any file")
    return result


@pytest.mark.parametrize("which", ["config", "env"])
def test_unreadable_file_permission_denied(tmp_path: Path, which: str) -> None:
    yaml_path, env_path = tmp_path / "config.yaml", tmp_path / "environment"
    yaml_path.write_text("log_level: info\n")
    env_path.write_text("CARBON_LOG_LEVEL=info\n")
    locked = yaml_path if which == "config" else env_path
    locked.chmod(0)
    try:
        result = _load_without_read_permission(locked, {"TTA_CONFIG": str(yaml_path), "TTA_ENV_FILE": str(env_path)})
    finally:
        locked.chmod(0o644)
    assert result["result"] == "ConfigError", result
    what = "config file" if which == "config" else "environment file"
    assert_one_line(result["message"], f"{what} {locked}: cannot read: Permission denied")


def test_output_dir_below_unsearchable_directory_permission_denied(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("")
    (tmp_path / "environment").write_text("")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "inner").mkdir()
    locked.chmod(0)
    try:
        result = _load_without_read_permission(locked / "probe", {
            "TTA_CONFIG": str(tmp_path / "config.yaml"), "TTA_ENV_FILE": str(tmp_path / "environment"),
            "CARBON_OUTPUT_DIR": str(locked / "inner"), "CARBON_STATE_DIR": str(tmp_path / "state"),
            "CARBON_LOG_FILE": "",
        })
    finally:
        locked.chmod(0o755)
    assert result["result"] == "ConfigError", result
    assert_one_line(result["message"], f"invalid output_dir='{locked / 'inner'}'",
                    "(environment variable CARBON_OUTPUT_DIR)", "Permission denied")


# --------------------------------------------------------------------------- secrets


def _config_with_token(cfg: Cfg) -> TTAConfig:
    cfg.envfile(f"CARBON_ELECTRICITYMAPS_TOKEN={TOKEN}\nCARBON_OFFLINE=false\nCARBON_ELECTRICITYMAPS_ZONE=FR\n")
    return cfg.load()


def test_token_is_secret_str_and_hidden_in_repr_str_and_public_dict(cfg: Cfg) -> None:
    c = _config_with_token(cfg)
    assert isinstance(c.electricitymaps_token, SecretStr)
    assert c.electricitymaps_token.get_secret_value() == TOKEN
    public = c.public_dict()
    assert public["electricitymaps_token"] == "**********"
    for text in (repr(c), str(c), json.dumps(public), c.model_dump_json(), repr(c.model_dump())):
        assert TOKEN not in text


@pytest.mark.parametrize("where", ["env", "envfile", "yaml"])
def test_token_never_in_an_error_about_another_setting(cfg: Cfg, where: str) -> None:
    if where == "env":
        cfg.env(CARBON_ELECTRICITYMAPS_TOKEN=TOKEN)
    elif where == "envfile":
        cfg.envfile(f"CARBON_ELECTRICITYMAPS_TOKEN={TOKEN}\n")
    else:
        cfg.yaml(f"electricitymaps_token: {TOKEN}\n")
    cfg.env(CARBON_MEASUREMENT_INTERVAL="0", CARBON_OFFLINE="false")
    assert TOKEN not in cfg.error("invalid measurement_interval='0'")


@pytest.mark.parametrize("value", [f"[{TOKEN}]", f"{{t: {TOKEN}}}", "12345678901234567890"])
def test_token_of_wrong_type_is_masked(cfg: Cfg, value: str) -> None:
    cfg.yaml(f"electricitymaps_token: {value}\n")
    message = cfg.error("invalid electricitymaps_token=***", f"({cfg.yaml_path} line 1)", "valid string")
    assert TOKEN not in message and "1234567890" not in message


@pytest.mark.parametrize("name", ["CARBON_ELECTRICITYMAP_TOKEN", "CARBON_ELECTRICITY_MAPS_TOKEN", "CARBON_API_KEY"])
def test_misspelt_token_variable_does_not_leak_its_value(cfg: Cfg, name: str) -> None:
    cfg.env(**{name: TOKEN})
    assert TOKEN not in cfg.error(f"unknown setting {name}=***", f"(environment variable {name})")
    cfg.mp.delenv(name)
    cfg.envfile(f"{name}={TOKEN}\n")
    assert TOKEN not in cfg.error(f"unknown setting {name}=***", f"({cfg.env_path} line 1)")


def test_misspelt_token_argument_does_not_leak_its_value(cfg: Cfg) -> None:
    assert TOKEN not in cfg.error("unknown setting electricitymap_token=***", electricitymap_token=TOKEN)


def test_malformed_token_line_in_env_file_does_not_leak_it(cfg: Cfg) -> None:
    cfg.envfile(f"CARBON_LOG_LEVEL=info\nCARBON_ELECTRICITYMAPS_TOKEN: {TOKEN}\n")
    assert TOKEN not in cfg.error(f"environment file {cfg.env_path} line 2: expected KEY=value")


def test_unknown_yaml_key_next_to_token_does_not_leak_it(cfg: Cfg) -> None:
    cfg.yaml(f"electricitymap_token: {TOKEN}\n")
    assert TOKEN not in cfg.error("unknown setting 'electricitymap_token'", f"({cfg.yaml_path} line 1)")


# --------------------------------------------------------------------------- hostile input stays bounded


def test_deeply_nested_yaml(cfg: Cfg) -> None:
    cfg.yaml("project_name: " + "[" * 5000 + "]" * 5000 + "\n")
    cfg.error(f"config file {cfg.yaml_path}", "nesting too deep")


_BOMB_PROBE = textwrap.dedent(
    """
    import json, resource
    limit = 2 << 30  # a regression must fail with MemoryError, not take the machine down
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from src.orchestration import ConfigError, TTAConfig
    try:
        TTAConfig()
    except ConfigError as exc:
        print(json.dumps({"result": "ConfigError", "message": str(exc)}))
    except BaseException as exc:
        print(json.dumps({"result": type(exc).__name__, "message": str(exc)[:500]}))
    else:
        print(json.dumps({"result": "loaded"}))
    """
)


def test_yaml_alias_bomb_is_reported_quickly_in_bounded_memory(cfg: Cfg) -> None:
    # 9 ** 9 leaves behind two short lines. The old error formatter called repr() on the whole structure:
    # it never returned and ate all memory (the kernel OOM-killed it at 24 GB). Run it in a subprocess
    # with a 2 GiB address-space limit and a timeout, so a regression fails instead of hurting the host.
    levels = ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10))
    cfg.yaml(f"region: [&a0 [x, x, x, x, x, x, x, x, x], {levels}]\nproject_name: *a9\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBON_", "TTA_"))}
    env |= {"TTA_CONFIG": str(cfg.yaml_path), "TTA_ENV_FILE": str(cfg.env_path)}
    proc = subprocess.run([sys.executable, "-c", _BOMB_PROBE], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["result"] == "ConfigError", result
    message = assert_one_line(result["message"], "invalid project_name=[[", f"({cfg.yaml_path} line 2)",
                              "invalid region=")
    assert len(message) < 600


def test_very_long_values_give_a_bounded_message(cfg: Cfg) -> None:
    cfg.env(CARBON_COUNTRY_ISO_CODE="Q" * 100_000)
    assert len(cfg.error("invalid country_iso_code='QQQQ", "...")) < 400
    cfg.mp.delenv("CARBON_COUNTRY_ISO_CODE")
    cfg.envfile("CARBON_NOT_A_SETTING=" + "v" * 100_000 + "\n")
    assert len(cfg.error("unknown setting CARBON_NOT_A_SETTING='vvvv")) < 400
    cfg.envfile("z" * 100_000 + "\n")
    assert len(cfg.error("line 1: expected KEY=value, got 'zzzz")) < 400


def test_recursive_yaml_alias(cfg: Cfg) -> None:
    cfg.yaml("project_name: &a [*a]\n")
    cfg.error("invalid project_name=", f"({cfg.yaml_path} line 1)", "valid string")


def test_binary_garbage_in_env_var(cfg: Cfg) -> None:
    # Undecodable bytes in the environment arrive as lone surrogates (surrogateescape).
    cfg.env(CARBON_PROJECT_NAME=os.fsdecode(b"TTA\xff\xfe"), CARBON_MEASUREMENT_INTERVAL=os.fsdecode(b"\xc3\x28"))
    message = cfg.error("invalid measurement_interval=", "invalid project_name=", "\\udcff")
    message.encode("utf-8")  # printable to any terminal: the surrogates are escaped


# --------------------------------------------------------------------------- property tests

_ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
_FIELDS = sorted(set(TTAConfig.model_fields) - {"config_file", "env_file"})
_ENV_NAMES = [("TTA_ENV" if f == "env" else f"CARBON_{f.upper()}") for f in _FIELDS]
_PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load_or_one_line_error(**kwargs: Any) -> TTAConfig | None:
    """The property: a valid config, or ConfigError with a one-line message; anything else fails the test."""
    try:
        return TTAConfig(**kwargs)
    except ConfigError as exc:
        assert_one_line(str(exc))
        return None


@_PROPERTY_SETTINGS
@given(value=_ENV_TEXT)
def test_property_interval_env_var(cfg: Cfg, value: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARBON_MEASUREMENT_INTERVAL", value)
        try:
            c = TTAConfig()
        except ConfigError as exc:
            assert_one_line(str(exc), "measurement_interval", "(environment variable CARBON_MEASUREMENT_INTERVAL)")
            return
    assert math.isfinite(c.measurement_interval) and 1 <= c.measurement_interval <= 3600


@_PROPERTY_SETTINGS
@given(name=st.sampled_from(_ENV_NAMES), value=_ENV_TEXT)
def test_property_any_env_var(cfg: Cfg, name: str, value: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(name, value)
        _load_or_one_line_error()


@_PROPERTY_SETTINGS
@given(key=st.sampled_from(_FIELDS), text=_ANY_TEXT)
def test_property_raw_yaml_value_text(cfg: Cfg, key: str, text: str) -> None:
    cfg.yaml(f"{key}: {text}\n")
    _load_or_one_line_error()


_YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), _ANY_TEXT,
)
_YAML_VALUES = st.recursive(
    _YAML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)


@_PROPERTY_SETTINGS
@given(data=st.dictionaries(st.one_of(st.sampled_from(_FIELDS), _ANY_TEXT), _YAML_VALUES, max_size=4))
def test_property_yaml_documents(cfg: Cfg, data: dict[str, Any]) -> None:
    cfg.yaml(yaml.safe_dump(data, allow_unicode=True))
    _load_or_one_line_error()


_ENV_LINE = st.one_of(
    _ANY_TEXT,
    st.builds(
        lambda export, name, spaces, quote, value: f"{export}{name}{spaces}={spaces}{quote}{value}{quote}",
        st.sampled_from(["", "export ", "export\t"]),
        st.one_of(st.sampled_from(_ENV_NAMES), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)),
        st.sampled_from(["", " ", "\t"]),
        st.sampled_from(["", "'", '"']),
        _ANY_TEXT,
    ),
)


@_PROPERTY_SETTINGS
@given(lines=st.lists(_ENV_LINE, max_size=6))
def test_property_env_file_lines(cfg: Cfg, lines: list[str]) -> None:
    cfg.envfile("\n".join(lines).encode("utf-8"))
    _load_or_one_line_error()


@_PROPERTY_SETTINGS
@given(raw=st.binary(max_size=80))
def test_property_binary_files(cfg: Cfg, raw: bytes) -> None:
    cfg.envfile(raw)
    _load_or_one_line_error()
    cfg.envfile(b"")
    cfg.yaml(raw)
    _load_or_one_line_error()


@pytest.mark.parametrize("name", ["Proj\x85Next", "Proj\x9bcsi"])
def test_project_name_refuses_c1_control_characters(cfg: Cfg, name: str) -> None:
    """C1 controls (U+0080-U+009F: NEL, CSI) were accepted as "printable" project names."""
    cfg.env(CARBON_PROJECT_NAME=name)
    cfg.error("invalid project_name=")


def test_env_file_line_numbers_count_lines_inside_quoted_values(cfg: Cfg) -> None:
    """A value spanning lines (quotes, backslash-newline) moves the next key's line number on."""
    cfg.envfile('CARBON_PROJECT_NAME="a\nb"\nCARBON_REGION=x\\\ny\nCARBON_METRICS_PORT=bad\n')
    cfg.error("invalid metrics_port='bad'", f"({cfg.env_path} line 5)")


def test_env_file_unterminated_quote_names_the_line_it_opened_on(cfg: Cfg) -> None:
    cfg.envfile("CARBON_LOG_LEVEL=info\nCARBON_PROJECT_NAME='open\nCARBON_REGION=x\n")
    cfg.error(f"environment file {cfg.env_path} line 2: unterminated quote in CARBON_PROJECT_NAME")


@pytest.mark.parametrize("name", ["bad host", "-leading-dash", "host\tname", "h" * 254, "ünïcode"])
def test_host_name_refuses_what_is_not_a_host_name(cfg: Cfg, name: str) -> None:
    cfg.env(CARBON_HOST_NAME=name)
    cfg.error("invalid host_name=")


def test_host_name_accepts_short_and_fully_qualified_names(cfg: Cfg) -> None:
    for name in ("carbon-staging-01", "node7.dc2.example.internal", "A1_b"):
        cfg.env(CARBON_HOST_NAME=name)
        assert cfg.load().host_name == name
