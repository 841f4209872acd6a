"""The daemon's configuration, validated in a short-lived child process.

``tta-carbon run`` never imports the config model: pydantic, pydantic-settings and PyYAML
would hold about 25 MB of RSS for the life of the daemon (src/orchestration/values.py). At
start and at each reload it runs this module as a child (the same interpreter), sends it the
explicit settings and the environment, and reads back either the validated
:class:`ConfigValues` or the one-line reason the configuration was refused. The child
exits as soon as it has answered; everything it imported goes with it.

The exchange is pickled over the child's stdin/stdout: both ends are this code base, run by
the same interpreter, and what travels holds only standard-library and library types.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.orchestration.errors import ConfigError
from src.orchestration.values import ConfigValues

_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the ``src`` package
CHILD_TIMEOUT_S = 30.0  # generous: validation takes ~0.3 s; a hang becomes one line, not a stuck start


@dataclass(frozen=True)
class LoadedConfig:
    values: ConfigValues
    reload_environ: dict[str, str] | None  # asked for at start only (see reload_environ())


def load_in_child(explicit: dict[str, Any], environ: dict[str, str] | None = None, *,
                  want_reload_environ: bool = False, timeout_s: float = CHILD_TIMEOUT_S) -> LoadedConfig:
    """Validate in a child process. Raises ConfigError (one line) when the configuration is refused
    or the child fails; ``environ`` None means this process's environment."""
    request = {"explicit": explicit, "environ": dict(os.environ) if environ is None else environ,
               "want_reload_environ": want_reload_environ}
    argv = [sys.executable, "-c", f"import sys; sys.path.insert(0, {_ROOT!r}); "
                                  "from src.service.config_loader import child_main; child_main()"]
    try:
        done = subprocess.run(argv, input=pickle.dumps(request), capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"configuration check did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise ConfigError(f"cannot run the configuration check ({sys.executable}): {exc.strerror}") from None
    try:
        answer = pickle.loads(done.stdout)
    except Exception:  # no answer: the child died (its last stderr line says why)
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"configuration check failed (exit {done.returncode}): {last[:300]}") from None
    if answer[0] == "error":
        raise ConfigError(answer[1])
    values: ConfigValues = answer[1]
    try:
        values.web_config  # noqa: B018  (its TLS context is rebuilt here, so a problem shows now, not at serve)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return LoadedConfig(values, answer[2])


def reload_environ(config: Any, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` minus what systemd copied in from the environment file at start.

    systemd's EnvironmentFile= turns the file into process variables, which outrank the
    file itself; without this, editing the file and reloading would change nothing.
    """
    from src.orchestration.sources import parse_env_file

    try:
        from_file = parse_env_file(config.env_file) if config.env_file.is_file() else {}
    except ConfigError:
        from_file = {}
    return {k: v for k, v in environ.items() if k not in from_file or from_file[k][0] != v}


def child_main() -> None:
    """The child: read the request from stdin, answer on stdout, exit."""
    request = pickle.loads(sys.stdin.buffer.read())
    from src.orchestration import TTAConfig

    try:
        config = TTAConfig.load(request["explicit"], request["environ"])
        extra = reload_environ(config, request["environ"]) if request["want_reload_environ"] else None
        answer: tuple = ("ok", ConfigValues.of(config), extra)
    except ConfigError as exc:
        answer = ("error", str(exc))
    sys.stdout.buffer.write(pickle.dumps(answer))
    sys.stdout.buffer.flush()
