"""`tta-carbon`: run the daemon, reload it, check its health, report totals."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.orchestration import ConfigError
from src.service.exit_codes import EX_CANTCREAT, EX_CONFIG, EX_FAILURE, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE

if TYPE_CHECKING:
    from src.orchestration import TTAConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config file (default: $TTA_CONFIG or /etc/tta/staging/config.yaml)")
    parser.add_argument("--env-file", metavar="PATH", help="environment file (default: $TTA_ENV_FILE or /etc/tta/staging/environment)")
    parser.add_argument("--local", action="store_true",
                        help="local run without root: config/local.yaml, output under ./.local-run, metrics on 127.0.0.1")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one setting (highest precedence); repeatable, e.g. --set measurement_interval=5")


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (``--local``, ``--config``, ``--env-file``, ``--set``)."""
    explicit: dict[str, Any] = {}
    if args.local:
        explicit["config_file"] = str(REPO_ROOT / "config" / "local.yaml")
        explicit["env_file"] = str(REPO_ROOT / "config" / "local.env")
    if args.config:
        explicit["config_file"] = args.config
    if args.env_file:
        explicit["env_file"] = args.env_file
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        explicit[key.strip()] = value
    return explicit


def load_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> TTAConfig:
    """The configuration, validated in this process (the short-lived commands)."""
    from src.orchestration import TTAConfig

    return TTAConfig.load(explicit_settings(args), environ)


def _config_error(exc: ConfigError) -> int:
    from src.service import logs

    # Printed before logging is configured; under systemd it still reaches the journal as an err.
    logs.console(f"tta-carbon: config error: {exc}")
    return EX_CONFIG


def _output_dir(args: argparse.Namespace) -> Path | int:
    """``--dir`` or the configured output_dir; EX_CONFIG (already reported) when the config is bad."""
    if args.dir:
        return Path(args.dir)
    try:
        return load_config(args).output_dir
    except ConfigError as exc:
        return _config_error(exc)


def cmd_run(args: argparse.Namespace) -> int:
    from src.service.config_loader import load_in_child

    # Validated in a child process: the config model never loads into the daemon (config_loader.py).
    try:
        explicit = explicit_settings(args)
        loaded = load_in_child(explicit, want_reload_environ=True)
    except ConfigError as exc:
        return _config_error(exc)
    from src.service import logs
    from src.service.daemon import Daemon

    config = loaded.values
    logs.configure(config.log_level, config.log_file, config.secrets())
    environ = loaded.reload_environ  # decided once, at start: that is when systemd read the file
    return Daemon(config, lambda: load_in_child(explicit, environ).values).run()


def cmd_reload(args: argparse.Namespace) -> int:
    import os

    from src.service.reload import run_reload, status_path

    if args.status_file:
        path = Path(args.status_file)
    elif os.environ.get("RUNTIME_DIRECTORY"):
        path = status_path(Path("."))  # under systemd: no config needed (a broken one is what we report)
    else:
        try:  # without systemd the daemon publishes in its state dir
            path = status_path(load_config(args).state_dir)
        except ConfigError as exc:
            return _config_error(exc)
    return run_reload(path, args.pid, timeout_s=args.timeout)


def cmd_check(args: argparse.Namespace) -> int:
    from src.service.healthcheck import run_check

    return run_check(lambda: load_config(args), as_json=args.json, timeout_s=args.timeout, live=not args.no_daemon)


def cmd_report(args: argparse.Namespace) -> int:
    from src.service.report import run_report

    dirs = [Path(d) for d in args.dir or []]
    fleets = [Path(f) for f in args.fleet or []]
    hosts = args.host or []
    if args.since and args.until and args.since > args.until:
        print(f"tta-carbon: error: --from {args.since} is after --to {args.until}", file=sys.stderr)
        return EX_FAILURE
    period = {"since": args.since, "until": args.until, "html": Path(args.html) if args.html else None}
    if len(dirs) == 1 and not fleets:
        return run_report(dirs[0], as_json=args.json, by=args.by, hosts=hosts, **period)
    if dirs or fleets:
        return run_report(None, as_json=args.json, by=args.by, dirs=dirs, fleets=fleets, hosts=hosts, **period)
    try:
        directory = load_config(args).output_dir
    except ConfigError as exc:
        return _config_error(exc)
    return run_report(directory, as_json=args.json, by=args.by, hosts=hosts, **period)


def cmd_prune(args: argparse.Namespace) -> int:
    from src.service.prune import run_prune

    directory = _output_dir(args)
    if isinstance(directory, int):
        return directory
    return run_prune(directory, args.older_than, apply=args.apply, archive=args.archive)


def _timeout(value: str) -> float:
    seconds = float(value)
    if not 0.1 <= seconds <= 60:
        raise argparse.ArgumentTypeError("must be between 0.1 and 60 seconds")
    return seconds


def _day(value: str) -> str:
    """A UTC day, YYYY-MM-DD (a real date: 2026-02-30 is refused), kept as text: records compare as text."""
    import datetime

    try:
        return datetime.date.fromisoformat(value).isoformat() if len(value) == 10 else _bad_day(value)
    except ValueError:
        return _bad_day(value)


def _bad_day(value: str) -> str:
    raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tta-carbon", description="TTA carbon-tracking daemon")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground",
                         description="Measure every interval, write NDJSON records, serve /metrics. "
                                     f"Exit codes: {EX_OK} stopped cleanly, {EX_UNAVAILABLE} port unavailable, "
                                     f"{EX_CANTCREAT} output dir unusable, {EX_CONFIG} bad config.")
    _config_args(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="health check (exit 0 healthy, 1 failing)",
                           description="Check config, output directory, codecarbon and the live daemon.")
    _config_args(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--timeout", type=_timeout, default=5.0, help="seconds to wait for the daemon (default 5)")
    check.add_argument("--no-daemon", action="store_true", help="skip the live daemon checks (e.g. before first start)")
    check.set_defaults(func=cmd_check)

    reload = sub.add_parser(
        "reload", help="reload the running daemon and wait for the outcome (the unit's ExecReload)",
        description="Send SIGHUP to the daemon and wait for the outcome of that reload, as the daemon publishes it "
                    "in $RUNTIME_DIRECTORY/reload-status.json (systemd's RuntimeDirectory=) or, without systemd, "
                    "in its state_dir. A process that has published no status is never signalled. "
                    f"Exit {EX_OK} applied (a note names settings that need a restart), {EX_CONFIG} rejected "
                    f"(the reason is printed; the daemon keeps its previous config), {EX_TEMPFAIL} no outcome "
                    f"within --timeout, {EX_FAILURE} no daemon to reload.")
    _config_args(reload)
    reload.add_argument("--pid", type=int, help="the daemon's pid (systemd: $MAINPID); default: the one in the status")
    reload.add_argument("--timeout", type=_timeout, default=30.0, help="seconds to wait for the outcome (default 30)")
    reload.add_argument("--status-file", metavar="PATH", help="read the outcome from this file instead")
    reload.set_defaults(func=cmd_reload)

    report = sub.add_parser("report", help="totals from the NDJSON files, of one host or a fleet",
                            description="Totals per day, per component and overall, read from emissions_*.json "
                                        "(including rotated and compressed files). Several --dir, or --fleet, "
                                        "add a row per host and a fleet total; each record (run_id, seq) counts "
                                        "once, in whichever directory it is found. The host of a record is its "
                                        "host field, else its directory's name. "
                                        f"Exit {EX_OK} done, {EX_FAILURE} a directory could not be read (the others "
                                        f"are reported), {EX_CONFIG} bad config.")
    _config_args(report)
    report.add_argument("--dir", metavar="DIR", action="append",
                        help="read this directory instead of the configured output_dir; repeatable")
    report.add_argument("--fleet", metavar="ROOT", action="append",
                        help="read every subdirectory of ROOT as one host's records (ROOT/<host>/emissions_*); "
                             "repeatable, combines with --dir")
    report.add_argument("--host", metavar="NAME", action="append",
                        help="limit the tables and totals to this host; repeatable")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument("--by", choices=["day", "component", "unit"], default="day", help="table grouping (default day)")
    report.add_argument("--by-unit", dest="by", action="store_const", const="unit",
                        help="per-systemd-unit table, same as --by unit (docs/attribution.md)")
    report.add_argument("--from", dest="since", metavar="DATE", type=_day,
                        help="only records from this UTC day on (YYYY-MM-DD, inclusive)")
    report.add_argument("--to", dest="until", metavar="DATE", type=_day,
                        help="only records up to this UTC day (YYYY-MM-DD, inclusive)")
    report.add_argument("--html", metavar="FILE",
                        help="write a self-contained HTML page (charts, totals, methods) to FILE instead of the "
                             f"tables; exit {EX_CANTCREAT} when FILE cannot be written")
    report.set_defaults(func=cmd_report)

    from src.service.prune import parse_age

    prune = sub.add_parser(
        "prune", help="delete (or archive) old NDJSON files; a dry run unless --apply",
        description="List, and with --apply delete, the emissions_* files in the output directory whose "
                    "records are all older than AGE (rotated/compressed copies: their mtime too). Never follows "
                    f"symlinks, never touches other files. Exit {EX_OK} done (or nothing to do), {EX_FAILURE} error, "
                    f"{EX_CONFIG} bad config.")
    _config_args(prune)
    prune.add_argument("--older-than", metavar="AGE", type=parse_age, required=True, help="e.g. 30d or 12w")
    prune.add_argument("--apply", action="store_true", help="really delete (default: only list)")
    prune.add_argument("--archive", metavar="PATH.tar.gz", type=Path,
                       help="with --apply: write these files to a new tar.gz first; delete only if that succeeded")
    prune.add_argument("--dir", metavar="DIR", help="prune this directory instead of the configured output_dir")
    prune.set_defaults(func=cmd_prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
