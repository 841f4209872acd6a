"""The health check behind `tta-carbon check` and scripts/health_check_carbon.py.

Static checks (config, output dir, codecarbon) keep the deployment guide's
lines; live checks ask the running daemon's /healthz for the same snapshot
that feeds /metrics.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from src.components.carbon import ndjson_files
from src.components.carbon.directories import Account, OutputDirUnwritable, probe_writable_as
from src.components.carbon.health import STALE_AFTER_INTERVALS, stale_after_s
from src.components.carbon.record import format_methods
from src.orchestration import ConfigError, TTAConfig
from src.orchestration.config import Override
from src.orchestration.sources import short_repr, show
from src.service.exit_codes import EX_FAILURE, EX_OK

OK, WARN, FAIL = "ok", "warn", "fail"
# The unit's User= (deploy/systemd/tta-staging-carbon.service): whom the directories must be
# writable for. The runbook runs the check as root, who can write anywhere.
SERVICE_USER = "tta-user"
_ICON = {OK: "✅", WARN: "⚠️ ", FAIL: "❌"}


@dataclass
class Check:
    name: str
    status: str
    line: str  # the human line, without the icon


def service_account(as_user: str | None = None) -> Account | str | None:
    """Whom to prove the directories writable for: None for ourselves, or a reason it cannot be done.

    ``as_user`` None: as root, the service user (``SERVICE_USER``) when it exists on this host
    (no such user, e.g. a development machine: ourselves); not root, ourselves (only root can
    act as another user, and the service user runs the check as itself). ``as_user`` "" is
    ourselves; a name is that user (a reason string when there is no such user).
    """
    if as_user == "":
        return None
    account = Account.lookup(as_user or SERVICE_USER)
    if as_user is None:
        return account if os.geteuid() == 0 else None
    return account if account is not None else f"no such user {show(as_user)}"


def _directory_check(name: str, what: str, directory: Path, account: Account | None) -> Check | None:
    """None when ``directory`` is writable (for ``account``); else the failing check."""
    try:
        probe_writable_as(directory, account)
    except OutputDirUnwritable as exc:
        return Check(name, FAIL, f"Cannot write to {what}: {exc}")
    except OSError as exc:  # the probe as the service user could not run at all
        who = f" as {account.name}" if account is not None else ""
        return Check(name, FAIL, f"Cannot check {what}{who}: {exc}")
    return None


def static_checks(load: Callable[[], TTAConfig], as_user: str | None = None) -> tuple[list[Check], TTAConfig | None]:
    """Config, directories and codecarbon. ``as_user``: whose write access to prove (``service_account``)."""
    from src.components.carbon_component import CarbonComponent

    checks: list[Check] = []
    try:
        config = load()
        carbon = CarbonComponent(config)
    except ConfigError as exc:
        return [Check("configuration", FAIL, f"Configuration: invalid: {exc}")], None
    account = service_account(as_user)
    output_dir = Path(carbon.output_dir)
    if not output_dir.exists():
        checks.append(Check("output_dir", FAIL, f"Output directory does not exist: {output_dir}"))
    elif not output_dir.is_dir():
        checks.append(Check("output_dir", FAIL, f"Output path is not a directory: {output_dir}"))
    elif isinstance(account, str):
        checks.append(Check("output_dir", FAIL, f"Cannot check output directory: {account}"))
    else:
        failed = _directory_check("output_dir", "output directory", output_dir, account)
        checks.append(failed or Check("output_dir", OK, f"Output directory writable: {output_dir}"))
    # The state directory (systemd's StateDirectory=, mode 0750) only gets a line when it exists and the
    # daemon could not save its totals there; before the first start systemd has not created it yet.
    state_dir = Path(carbon.settings.state_dir)
    if state_dir.is_dir() and not isinstance(account, str):
        failed = _directory_check("state_dir", "state directory", state_dir, account)
        if failed is not None:
            checks.append(failed)
    try:
        import codecarbon  # noqa: F401

        checks.append(Check("codecarbon", OK, "codecarbon library: Available"))
    except Exception as exc:
        checks.append(Check("codecarbon", WARN,
                            f"codecarbon library: Not available (graceful degradation): {type(exc).__name__}: {exc}"))
    checks.append(Check("configuration", OK, "Configuration: Valid"))
    checks.extend(Check("config_override", WARN, f"Configuration: {override_line(o)}") for o in config.yaml_overrides())
    return checks, config


def override_line(o: Override) -> str:
    """One setting given in the YAML file and again in the environment (which wins), both places named."""
    value, yaml_value = ("***", "***") if o.secret else (show(o.value), _yaml_shown(o.yaml_value))
    where = f"{o.name}={value} in {o.origin}" if o.in_env_file else f"environment variable {o.name}={value}"
    return (f"{where} overrides {o.setting}: {yaml_value} in {o.yaml_origin} "
            "(the YAML value is ignored; set it in one place)")


def _yaml_shown(value: object) -> str:
    """A YAML value roughly as written: true/false/null, numbers and strings bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return show(value)
    return short_repr(value)


def live_checks(config: TTAConfig, timeout_s: float, now: float | None = None) -> list[Check]:
    host = f"[{config.metrics_address}]" if ":" in config.metrics_address else config.metrics_address
    scheme, context = "http", None
    if config.web_config.tls:
        # Probing our own daemon at its configured address: the certificate names the
        # host Prometheus scrapes, not this address, so the chain is not checked here.
        scheme, context = "https", ssl._create_unverified_context()  # noqa: S323
    base = f"{scheme}://{host}:{config.metrics_port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout_s, context=context) as resp:  # noqa: S310
            health = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 still carries the snapshot
        health = json.loads(exc.read() or b"{}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        return [Check("daemon", FAIL, f"Daemon: not reachable at {base}/metrics ({reason})")]
    # Ages are measured from when the snapshot arrived: taken before the request, a measurement
    # finishing meanwhile showed as "-0s ago".
    now = time.time() if now is None else now
    checks = [Check("daemon", OK, f"Daemon: /metrics reachable at {base}/metrics")]
    interval = float(health.get("interval_s") or config.measurement_interval)
    stale_after = stale_after_s(interval)
    last = float(health.get("last_success_at") or 0)
    age = now - last
    if last <= 0:
        started_ago = now - float(health.get("started_at") or now)
        status = FAIL if started_ago > stale_after else WARN
        checks.append(Check("measurement", status, f"Last measurement: none yet (daemon up {started_ago:.0f}s, "
                                                   f"interval {interval:g}s)"))
    elif age > stale_after:
        checks.append(Check("measurement", FAIL, f"Last measurement: stale, {age:.0f}s ago "
                                                 f"(more than {STALE_AFTER_INTERVALS} intervals of {interval:g}s)"))
    else:
        checks.append(Check("measurement", OK, f"Last measurement: {age:.0f}s ago (interval {interval:g}s)"))
    if not health.get("tracker_available", False):
        checks.append(Check("tracker", FAIL, f"Energy source: unavailable: {health.get('tracker_error', '')}"))
    elif health.get("energy_source_degraded"):
        # The guide's words: the daemon measures on, with our own readers, and says so.
        checks.append(Check("tracker", WARN, "codecarbon library: Not available in the daemon (graceful degradation): "
                                             f"{health['energy_source_degraded']}"))
    if health.get("platform_meter"):
        meter, device = health["platform_meter"], health.get("platform_meter_device", "")
        if health.get("platform_meter_error"):
            checks.append(Check("platform", WARN, f"Platform meter: {meter} ({device}) failing, components only "
                                                  f"while it does: {health['platform_meter_error']}"))
        else:
            watts = health.get("platform_power_w")
            shown = f", {watts:.1f} W" if isinstance(watts, (int, float)) else ""
            checks.append(Check("platform", OK, f"Platform meter: {meter} ({device}){shown}"))
    today = config.output_dir / ndjson_files.file_name_at(now)
    try:
        mtime = today.stat().st_mtime
        fresh = now - mtime <= stale_after
        checks.append(Check("records", OK if fresh else FAIL,
                            f"Today's records: {today.name} {'updated' if fresh else 'last updated'} "
                            f"{now - mtime:.0f}s ago"))
    except OSError:
        # Before the first interval there is nothing to append yet.
        checks.append(Check("records", WARN if last <= 0 else FAIL, f"Today's records: {today} missing"))
    write_errors = int(health.get("write_errors", 0))
    pending = int(health.get("records_pending", 0))
    failing_now = health.get("last_write_error") or ""
    if failing_now or pending:
        checks.append(Check("write_errors", FAIL, f"Write errors: {write_errors}, {pending} record(s) waiting "
                                                  f"(last: {failing_now or 'n/a'})"))
    elif write_errors:
        # The disk refused writes earlier but took every record since: worth a look, not a page.
        checks.append(Check("write_errors", WARN, f"Write errors: {write_errors} earlier, none pending now"))
    else:
        checks.append(Check("write_errors", OK, "Write errors: 0"))
    if health.get("intensity_error"):
        # The chain has already fallen back (cached value, then the country mix): numbers keep flowing.
        checks.append(Check("intensity", WARN, f"Carbon intensity: online source failing "
                                               f"({health['intensity_error']}); using {health.get('intensity_source')}"))
    methods = health.get("energy_method") or {}
    shown = format_methods(methods, sep=", ", empty="unknown")
    if health.get("estimated", True):
        checks.append(Check("energy_method", WARN, f"Energy method: estimated, not measured ({shown})"))
    else:
        checks.append(Check("energy_method", OK, f"Energy method: measured ({shown})"))
    return checks


def run_check(load: Callable[[], TTAConfig], *, as_json: bool, timeout_s: float, live: bool,
              as_user: str | None = None) -> int:
    checks, config = static_checks(load, as_user)
    if config is not None:
        if live:
            checks.extend(live_checks(config, timeout_s))
        # The guide's summary line: it must not say OK while a live check below fails.
        failed = any(c.status == FAIL for c in checks)
        summary = "Carbon component: " + ("FAILING" if failed else "OK")
        checks.insert(0, Check("component", FAIL if failed else OK, summary))
    healthy = not any(c.status == FAIL for c in checks)
    if as_json:
        print(json.dumps({"healthy": healthy, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{_ICON[c.status]} {c.line}")
    sys.stdout.flush()
    return EX_OK if healthy else EX_FAILURE
