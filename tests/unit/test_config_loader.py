"""The daemon validates its configuration in a child process (src/service/config_loader.py) and
keeps plain values: what travels back, and how every failure of the child becomes one line."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from src.components.carbon.secret import Secret
from src.orchestration import ConfigError, TTAConfig
from src.orchestration.settings import apply_live, component_settings
from src.orchestration.values import ConfigValues
from src.service import config_loader
from src.service.config_loader import load_in_child

REPO = Path(__file__).resolve().parents[2]


def explicit(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {"config_file": "/dev/null", "env_file": "/dev/null", "output_dir": str(tmp_path / "out"),
            "state_dir": str(tmp_path / "state"), **settings}


def test_values_come_back_equal_to_the_config_validated_here(tmp_path):
    given = explicit(tmp_path, measurement_interval="7", offline="false", electricitymaps_token="tok-123",
                     country_iso_code="FRA")
    loaded = load_in_child(given, environ={}, want_reload_environ=True)
    here = TTAConfig.load(given, {})
    values = loaded.values
    assert isinstance(values, ConfigValues) and values.measurement_interval == 7.0
    assert values.electricitymaps_token == Secret("tok-123") and "tok-123" not in repr(values.electricitymaps_token)
    assert component_settings(values) == component_settings(here)
    assert loaded.reload_environ == {}
    assert apply_live(values, here)[1] == []  # nothing differs that would need a restart


def test_a_refused_config_is_the_same_one_line_error(tmp_path):
    given = explicit(tmp_path, measurement_interval="-7")
    with pytest.raises(ConfigError) as here:
        TTAConfig.load(given, {})
    with pytest.raises(ConfigError) as child:
        load_in_child(given, environ={})
    assert str(child.value) == str(here.value) and "\n" not in str(child.value)


def test_a_child_that_dies_is_one_line_naming_its_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(config_loader.sys, "executable", "/bin/false")
    with pytest.raises(ConfigError, match=r"^configuration check failed \(exit 1\): no output$"):
        load_in_child(explicit(tmp_path), environ={})


def test_a_child_that_hangs_is_stopped(tmp_path, monkeypatch):
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    monkeypatch.setattr(config_loader.sys, "executable", str(hang))
    with pytest.raises(ConfigError, match=r"^configuration check did not finish within 0.5 s$"):
        load_in_child(explicit(tmp_path), environ={}, timeout_s=0.5)


def test_values_pickle_without_pydantic_and_rebuild_the_web_config(tmp_path):
    """The daemon unpickles in a process that never imported pydantic: nothing pydantic may travel."""
    values = ConfigValues.of(TTAConfig.load(explicit(tmp_path, offline="false", electricitymaps_token="t", country_iso_code="FRA"), {}))
    data = pickle.dumps(values)
    assert b"pydantic" not in data
    back = pickle.loads(data)
    assert back.model_dump() == values.model_dump() and back.web_config.users == {}


def test_the_daemon_imports_neither_the_config_model_nor_rich():
    """Everything `tta-carbon run` imports (the CLI, the daemon, the component and its sources)."""
    code = ("import sys; import src.service.cli, src.service.daemon, src.service.config_loader, "
            "src.components.carbon_component, src.components.carbon.sources.select; "
            "print(sorted(m for m in ('pydantic', 'pydantic_settings', 'yaml', 'rich', 'pygments') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
