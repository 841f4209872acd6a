"""Where TTAConfig values come from, each value remembering its origin.

Origins matter because every rejected value must be reported on one line that
names the key, the bad value and *where it came from* (env var, file and line).
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.components.carbon.files import NotARegularFile, read_small_file
from src.orchestration.env_file import parse_env_text
from src.orchestration.errors import ConfigError

ENV_FILE_DEFAULT = Path("/etc/tta/staging/environment")
CONFIG_FILE_DEFAULT = Path("/etc/tta/staging/config.yaml")

# Settings whose environment name does not follow CARBON_<FIELD>.
SPECIAL_ENV_NAMES = {"env": "TTA_ENV", "config_file": "TTA_CONFIG", "env_file": "TTA_ENV_FILE"}
# Settings that only make sense outside the YAML file (they locate the files).
LOCATOR_FIELDS = frozenset({"config_file", "env_file"})
CLI_FLAGS = {"config_file": "--config", "env_file": "--env-file"}
# Names that probably hold a secret: their values never appear in an error, even misspelt.
_SECRET_NAME = re.compile(r"token|secret|passw|api_?key|credential", re.IGNORECASE)
_REPR = reprlib.Repr(maxlevel=2, maxlist=4, maxtuple=4, maxdict=4, maxset=4, maxstring=160, maxlong=40, maxother=80)

def show(text: Any) -> str:
    """A path or name as written (quoted with escapes if it holds a newline or other control character), bounded."""
    text = str(text)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= 200 else text[:197] + "..."


def short_repr(value: Any) -> str:
    """A bounded, one-line repr: never walks a huge (or alias-bombed) YAML structure."""
    text = _REPR.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def looks_secret(text: str) -> bool:
    return bool(_SECRET_NAME.search(text))


# Layer kinds, highest precedence first.
ARGUMENTS, ENVIRONMENT, ENV_FILE, YAML_FILE = "arguments", "environment", "env_file", "yaml"


@dataclass
class Layer:
    """Values from one source, plus a human description of where each came from."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    kind: str = ""  # ARGUMENTS, ENVIRONMENT, ENV_FILE or YAML_FILE


def env_name(field_name: str) -> str:
    return SPECIAL_ENV_NAMES.get(field_name, f"CARBON_{field_name.upper()}")


def field_for_env(key: str, fields: set[str]) -> str | None:
    """Map an environment name to a field; None for names that are not ours at all."""
    for name, special in SPECIAL_ENV_NAMES.items():
        if key == special:
            return name
    if key.startswith("CARBON_"):
        candidate = key[len("CARBON_") :].lower()
        # An unknown CARBON_* name is a typo until proven otherwise: keep it so it is rejected.
        return candidate if candidate in fields and candidate not in SPECIAL_ENV_NAMES else f"?{key}"
    return None


def _env_layer(name: str, pairs: dict[str, tuple[str, str]], fields: set[str], kind: str) -> Layer:
    layer = Layer(name, kind=kind)
    for key, (value, origin) in pairs.items():
        target = field_for_env(key, fields)
        if target is None:
            continue
        if target.startswith("?"):
            shown = "***" if looks_secret(key) else short_repr(value)
            raise ConfigError(
                f"unknown setting {show(key)}={shown} ({show(origin)}); see docs/configuration.md for valid names"
            )
        layer.values[target] = value
        layer.origins[target] = origin
    return layer


def environment_layer(
    environ: dict[str, str], fields: set[str], env_file: dict[str, tuple[str, str]] | None = None
) -> Layer:
    """The process environment; ``env_file`` is the environment file as parsed (``parse_env_file``).

    Under systemd, EnvironmentFile= hands the file to the process as variables, which outrank
    the file: a variable holding the file's own value for its name is named with the file's
    line too ("environment variable X, from <file> line N"), so an error points at what to edit.
    """
    env_file = env_file or {}
    pairs = {}
    for k, v in environ.items():
        origin = f"environment variable {k}"
        if k in env_file and env_file[k][0] == v:
            origin += f", from {env_file[k][1]}"
        pairs[k] = (v, origin)
    return _env_layer("environment", pairs, fields, ENVIRONMENT)


MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few hundred bytes; far more means the wrong file


def _read_text(path: Path, kind: str, universal_newlines: bool = True) -> str:
    what = f"{kind} {show(path)}"
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)  # regular files only: a FIFO would hang the start
    except ValueError as exc:  # too large: /dev/zero, or a log file named by mistake
        raise ConfigError(f"{what}: {exc}") from None
    except NotARegularFile as exc:
        raise ConfigError(f"{what}: {exc.strerror}") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not universal_newlines:  # the environment file's grammar sees \r itself (inside quotes it is kept)
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as read_text() did


def parse_env_file(path: Path) -> dict[str, tuple[str, str]]:
    """The file's assignments as systemd's EnvironmentFile= reads them (env_file.py), plus the
    old guide's ``export KEY=value``: ``{KEY: (value, "<file> line N")}``."""
    text = _read_text(path, "environment file", universal_newlines=False)

    def describe(line: str) -> str:
        return "a line that looks like it holds a secret (not shown)" if looks_secret(line) else short_repr(line)

    return parse_env_text(text, show(path), describe)


def env_file_layer(path: Path, fields: set[str], pairs: dict[str, tuple[str, str]] | None = None) -> Layer:
    """The environment file's settings (``pairs``: the file already parsed, else it is read here)."""
    pairs = parse_env_file(path) if pairs is None else pairs
    return _env_layer(f"environment file {show(path)}", pairs, fields, ENV_FILE)


def yaml_layer(path: Path, fields: set[str]) -> Layer:
    name = show(path)
    layer = Layer(f"config file {name}", kind=YAML_FILE)
    text = _read_text(path, "config file")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = _yaml_where(exc, text)
        raise ConfigError(f"config file {name}{where}: YAML syntax error: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"config file {name}: YAML nesting too deep") from None
    if data is None:
        return layer
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"config file {name}: top level must be a mapping of settings, got {type(data).__name__}")
    lines = _key_lines(node, text, name)
    for key, value in data.items():
        origin = f"{name} line {lines[key]}" if key in lines else name
        if not isinstance(key, str) or key not in fields or key in LOCATOR_FIELDS:
            raise ConfigError(f"unknown setting {short_repr(key)} ({origin}); see docs/configuration.md for valid keys")
        layer.values[key] = value
        layer.origins[key] = origin
    return layer


def _key_lines(node: yaml.MappingNode, text: str, name: str) -> dict[Any, int]:
    """Line of each top-level key, keyed by the key as loaded (so ``1:`` and ``true:`` are found too).

    A key given twice is refused: PyYAML keeps the last silently, so an operator who appended a new
    ``measurement_interval:`` below an old one would run on a value they cannot see by reading top-down.
    """
    constructor = yaml.SafeLoader("")
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        try:
            key = constructor.construct_object(key_node, deep=True)
            line = _line_of(text, key_node.start_mark.index)
            if key in lines:
                raise ConfigError(f"config file {name} line {line}: setting {short_repr(key)} given twice "
                                  f"(first on line {lines[key]}); keep one")
            lines[key] = line
        except (yaml.YAMLError, TypeError):  # merge keys, unhashable keys: no line to report
            continue
    return lines


def _yaml_where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        column = mark.index - (text.rfind("\n", 0, mark.index) + 1) + 1
        return f" line {_line_of(text, mark.index)} column {column}"
    position = getattr(exc, "position", None)  # ReaderError (control characters): a character offset
    if isinstance(position, int):
        return f" line {_line_of(text, position)}"
    return ""


def _line_of(text: str, index: int) -> int:
    """1-based line of a character offset, counting "\n" only (PyYAML's own count also breaks at \x85, \u2028...)."""
    return text.count("\n", 0, index) + 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    return " ".join(str(problem).splitlines()[:1]) or type(exc).__name__


def locate(
    explicit: Any, env_key: str, environ: dict[str, str], layers: list[Layer], field_name: str, default: Path
) -> tuple[Path, str | None]:
    """Find a file path from args, then env, then earlier layers; say where it was asked for (None: default)."""
    if explicit not in (None, ""):
        return Path(explicit), f"{CLI_FLAGS.get(field_name, field_name)} argument"
    if environ.get(env_key):
        return Path(environ[env_key]), f"environment variable {env_key}"
    for layer in layers:
        if layer.values.get(field_name):
            return Path(layer.values[field_name]), layer.origins.get(field_name, layer.name)
    return default, None


def file_exists(path: Path, what: str, origin: str | None) -> bool:
    """Whether to read ``path``: a file that was asked for (origin set) must exist; the default may be absent."""
    try:
        path.stat()
    except FileNotFoundError:
        if origin is None:
            return False
        raise ConfigError(f"{what} {show(path)} does not exist (set by {show(origin)})") from None
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, EACCES on a parent, ENOTDIR, NUL byte...
        reason = getattr(exc, "strerror", None) or str(exc)
        set_by = f" (set by {show(origin)})" if origin else ""
        raise ConfigError(f"{what} {show(path)}{set_by}: cannot access: {reason}") from None
    return True
