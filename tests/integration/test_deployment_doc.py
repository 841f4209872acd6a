"""docs/deployment.md: every seed-guide mistake is fixed, marked, and stays in step with the shipped files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.ops_helpers import REPO, clean_env

DOC = REPO / "docs" / "deployment.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```$", re.M | re.S)


def code_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def fixed_notes() -> list[str]:
    """The text of every '**Fixed:**' note (a blockquote paragraph)."""
    notes, current = [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("> **Fixed:**"):
            current = [line]
            notes.append(current)
        elif current is not None and line.startswith(">") and line.strip() != ">":
            current.append(line)
        else:
            current = None
    return [" ".join(n) for n in notes]


@pytest.mark.parametrize("must", [
    ("9090", "9880"),
    ("export", "EnvironmentFile="),
    ("tta-staging", "tta-staging-carbon.service"),
    ("source", "set -a"),
    ("health_check_carbon.py", "uv run"),
    ("chown -R tta-user:tta-group /opt/tta/staging", "root"),  # issue 13, item 7
    ("Python 3.12", "Debian 12", "Ubuntu 22.04", "/root", "203/EXEC"),  # item 8
    ("theinterneti/TTA", "<commit>", "git tag"),  # item 9
    ("Alertmanager", "localhost:9093"),  # item 10
])
def test_each_required_fix_has_a_fixed_note(must: tuple[str, str]) -> None:
    assert any(all(word in note for word in must) for note in fixed_notes()), must


def test_no_command_repeats_a_seed_mistake() -> None:
    for doc in (DOC, REPO / "docs" / "operations.md"):
        for block in code_blocks(doc):
            for line in block.splitlines():
                if line.lstrip().startswith("#"):
                    continue
                assert not re.search(r"systemctl \S+ .*\btta-staging\b(?!-carbon)", line), line
                # 9090 is Prometheus's own port: never a scrape target (the seed's mistake); only
                # Prometheus's own API may be asked there.
                assert "9090" not in line.replace("http://localhost:9090/api/v1/", ""), line
                assert not re.match(r"\s*export\s", line), line
                assert not re.match(r"\s*source\s", line), line
                if "health_check_carbon.py" in line:
                    assert re.search(r"uv run (--no-sync )?python scripts/health_check_carbon\.py", line), line


def test_environment_sample_is_the_shipped_file_and_systemd_clean() -> None:
    shipped = (REPO / "config" / "environment").read_text()
    assert shipped in code_blocks(DOC)
    for line in shipped.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", line), f"not systemd EnvironmentFile= syntax: {line}"


def test_shipped_environment_file_sets_nothing_config_yaml_sets() -> None:
    """Issue 13: the environment outranks the YAML file, so a key in both makes the YAML line dead."""
    from src.orchestration import TTAConfig

    env_file, yaml_file = REPO / "config" / "environment", REPO / "config" / "staging.yaml"
    config = TTAConfig.load({"config_file": str(yaml_file), "env_file": str(env_file),
                             "output_dir": "/nonexistent/out", "state_dir": "/nonexistent/state"}, environ={})
    origins = config.setting_origins()
    assert [key for key, where in origins.items() if {"env_file", "yaml"} <= {kind for kind, _ in where}] == []
    assert config.yaml_overrides() == []
    # ... and what each file sets really is read from it (the check above is not vacuous).
    assert [k for k, where in origins.items() if where[0][0] == "env_file"] == ["env"]
    assert {"measurement_interval", "log_level", "project_name", "output_dir"} <= {
        k for k, where in origins.items() if any(kind == "yaml" for kind, _ in where)}


def test_logrotate_sample_is_the_shipped_file() -> None:
    assert (REPO / "deploy" / "logrotate" / "tta-staging").read_text() in code_blocks(DOC)


def test_scrape_target_is_the_configured_port() -> None:
    port = yaml.safe_load((REPO / "config" / "staging.yaml").read_text())["metrics_port"]
    from src.orchestration.config import DEFAULT_METRICS_PORT

    assert port == DEFAULT_METRICS_PORT == 9880
    assert f"targets: ['127.0.0.1:{port}']" in DOC.read_text()


def test_sourcing_with_set_a_exports_and_plain_source_does_not(tmp_path: Path) -> None:
    """The fix, proven with a real shell: child processes see the variables only with set -a."""
    probe = f"{sys.executable} -c \"import os; print(os.environ.get('TTA_ENV'))\""
    env_file = REPO / "config" / "environment"

    def child_sees(prefix: str) -> str:
        return subprocess.run(["bash", "-c", f"{prefix}; {probe}"], capture_output=True, text=True,
                              env=clean_env(), check=True).stdout.strip()

    assert child_sees(f"source {env_file}") == "None"  # the seed's step, with the export-free file
    assert child_sees(f"set -a; . {env_file}; set +a") == "staging"  # ours


def test_verify_step_one_liner_still_works(tmp_path: Path) -> None:
    """The guide's 'verify component loads' line uses the two import paths runbooks rely on."""
    line = next(ln for b in code_blocks(DOC) for ln in b.splitlines()
                if "carbon_component import CarbonComponent" in ln)
    (tmp_path / "config.yaml").write_text(f"output_dir: {tmp_path}/out\nstate_dir: {tmp_path}/state\n")
    (tmp_path / "environment").write_text("")
    env = clean_env(TTA_CONFIG=str(tmp_path / "config.yaml"), TTA_ENV_FILE=str(tmp_path / "environment"))
    cmd = line.removeprefix("uv run --no-sync python ")
    assert cmd.startswith("-c ")
    code = cmd[len("-c "):].strip().strip('"')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "✅ Carbon component loaded successfully"


# ---- issue 13: code ownership, Python 3.12, release source, Alertmanager, retention -------------

ALL_DOCS = (DOC, REPO / "docs" / "operations.md")


def command_lines(*docs: Path) -> list[str]:
    return [ln.strip() for doc in docs for b in code_blocks(doc) for ln in b.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_no_step_gives_the_code_to_the_service_account() -> None:
    """Item 7: only data, log and state directories are tta-user's; code and venv stay root's."""
    for line in command_lines(*ALL_DOCS):
        if re.search(r"\bchown\b|install -d", line) and "/opt/tta" in line:
            assert "tta-user" not in line, line
        assert "safe.directory=/opt/tta/staging" not in line, line  # root's checkout needs none
    lines = command_lines(DOC)
    assert "sudo install -d -o root -g root -m 0755 /opt/tta/staging" in lines
    assert "chmod -R go-w /opt/tta/staging" in lines


def python_table() -> dict[str, str]:
    """OS -> UV_PYTHON, from the table in "Python 3.12 and uv"."""
    rows = re.findall(r"^\| (Ubuntu 24\.04|Ubuntu 22\.04|Debian 12) \|[^|]*\| `([^`]+)` \|$", DOC.read_text(), re.M)
    return dict(rows)


def block_after(heading: str) -> str:
    """The first code block after the paragraph starting with ``heading``."""
    text = DOC.read_text()
    start = text.index("\n" + heading) + 1
    return FENCE.search(text, start).group(1)


def test_each_supported_os_has_a_python_312_route_and_its_uv_python() -> None:
    """Item 8: a route per OS, an exact UV_PYTHON for each, none where the unit's sandbox hides it."""
    table = python_table()
    assert table == {"Ubuntu 24.04": "/usr/bin/python3.12", "Ubuntu 22.04": "/usr/bin/python3.12",
                     "Debian 12": "/opt/python3.12/bin/python3.12"}
    for path in table.values():
        assert not re.match(r"/(root|home|tmp|var/tmp)(/|$)", path), path
    assert "apt-get install -y python3.12" in block_after("Ubuntu 24.04:")
    deadsnakes = block_after("Ubuntu 22.04 (deadsnakes")
    assert "add-apt-repository -y ppa:deadsnakes/ppa" in deadsnakes and "apt-get install -y python3.12" in deadsnakes
    # Debian 12: what the source build installs is the table's UV_PYTHON, altinstall-style.
    build = block_after("Debian 12 (built from")
    prefix = re.search(r"^\./configure --prefix=(\S+)", build, re.M).group(1)
    assert f"{prefix}/bin/python3.12" == table["Debian 12"]
    assert re.search(r"^make altinstall$", build, re.M) and not re.search(r"^make install$", build, re.M)
    assert f"{table['Debian 12']} -c 'import ssl" in build
    # Every UV_PYTHON a command passes is one of the table's values.
    passed = re.findall(r"\bUV_PYTHON=(\S+)", "\n".join(command_lines(*ALL_DOCS)))
    assert passed and set(passed) <= set(table.values()), passed


def test_uv_is_installed_outside_root_home_and_pinned() -> None:
    block = block_after("uv, on every OS")
    assert re.search(r"pip install --quiet 'uv==[0-9.]+'", block)
    assert "/usr/local/bin/uv" in block and "/root" not in block


RELEASE_SOURCE = "/usr/local/src/tta-staging-carbon"


def test_release_source_is_one_documented_checkout_used_everywhere() -> None:
    """Item 9: where the code comes from, which release, and the same path in install, upgrade,
    rollback."""
    lines = command_lines(*ALL_DOCS)
    assert not any("github.com/theinterneti/TTA" in ln for ln in lines)
    clone = [ln for ln in command_lines(DOC) if ln.startswith("git clone") and ln.endswith(RELEASE_SOURCE)]
    assert clone == [f"git clone --quiet <repository-url> {RELEASE_SOURCE}"]
    release = block_after("As root (`sudo -i`; the checkout is root's")
    assert re.search(r"^git tag --list 'v\*'", release, re.M) and re.search(r"^git log .*origin/main", release, re.M)
    assert "git checkout --quiet --detach <release>" in release
    # Every source path in both documents is that checkout (a **Fixed:** note may name the old one).
    for doc in ALL_DOCS:
        text = "\n".join(ln for ln in doc.read_text().splitlines() if not ln.startswith(">"))
        for path in re.findall(r"/usr/local/src/[\w.-]+", text):
            assert path in (RELEASE_SOURCE, "/usr/local/src"), (doc.name, path)
    ops = (REPO / "docs" / "operations.md").read_text()
    assert f"cd {RELEASE_SOURCE}" in ops and RELEASE_SOURCE in ops.split("## Rollback")[1].split("##")[0]
    assert f"cd {RELEASE_SOURCE}" in DOC.read_text().split("## Rollback Procedure")[1]


def test_retention_timer_is_documented_with_its_period() -> None:
    """Item 11b: the shipped timer's command and the documents agree on the period."""
    service = (REPO / "deploy/systemd/tta-staging-carbon-prune.service").read_text()
    (cmd,) = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert cmd == "/opt/tta/staging/.venv/bin/tta-carbon prune --older-than 90d --apply"
    ops = (REPO / "docs" / "operations.md").read_text()
    retention = ops.split("## Retention")[1].split("\n## ")[0]
    assert "--older-than 90d --apply" in retention and "Emissions records are kept 90 days" in retention
    assert "systemctl enable --now tta-staging-carbon-prune.timer" in retention
    assert "crontab" not in ops
    assert "systemctl enable --now tta-staging-carbon tta-staging-carbon-prune.timer" in command_lines(DOC)
