"""The Markdown table of every TTAConfig setting, as shown in docs/architecture.md.

``scripts/gen_settings_table.py`` writes it between :data:`BEGIN_MARKER` and :data:`END_MARKER`;
``tests/unit/test_settings_table.py`` fails when the document and the code disagree.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from src.orchestration.config import TTAConfig
from src.orchestration.sources import CLI_FLAGS, LOCATOR_FIELDS, env_name

BEGIN_MARKER = "<!-- settings-table:begin -->"
END_MARKER = "<!-- settings-table:end -->"

_HEADER = ("setting", "environment variable", "type", "default", "bounds / allowed values", "description")
# Metadata that constrains nothing an operator can write beyond what the bounds already say
# (every float setting with allow_inf_nan=False also has finite bounds).
_IGNORED_METADATA = frozenset({"allow_inf_nan"})


def render_settings_table() -> str:
    """Render every ``TTAConfig`` field as one row of a Markdown table, in declaration order.

    Columns: setting (the YAML key), environment variable, type, default ("unset" for ``None``),
    bounds or allowed values (from the field's pydantic metadata and ``Literal`` choices) and the
    field's ``description``. A note after the table names the settings that are not YAML keys.
    The result ends with a newline.

    Raises ``ValueError`` for a field without a description or with a constraint this renderer
    does not know how to show, so that such a field cannot silently lose its documentation.
    """
    rows = [_HEADER, ("---",) * len(_HEADER)]
    rows += [_row(name, info) for name, info in TTAConfig.model_fields.items()]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    locators = [name for name in TTAConfig.model_fields if name in LOCATOR_FIELDS]
    if locators:
        how = ", ".join(f"{_code(CLI_FLAGS[n])} / {_code(env_name(n))}" if n in CLI_FLAGS else _code(env_name(n))
                        for n in locators)
        lines += ["", f"{_join(_code(n) for n in locators)} locate the files, so they are not YAML keys: set them "
                      f"with {how}."]
    return "\n".join(lines) + "\n"


def extract_block(text: str) -> str:
    """The text between the markers (exclusive), starting after the begin marker's line."""
    start, end = _marker_span(text)
    return text[start:end]


def replace_block(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``; markers kept."""
    start, end = _marker_span(text)
    return text[:start] + table + text[end:]


def _marker_span(text: str) -> tuple[int, int]:
    if text.count(BEGIN_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError(f"expected exactly one {BEGIN_MARKER} and one {END_MARKER}")
    begin = text.index(BEGIN_MARKER)
    end = text.index(END_MARKER)
    if end < begin:
        raise ValueError(f"{END_MARKER} comes before {BEGIN_MARKER}")
    newline = text.find("\n", begin, end)
    if newline == -1:
        raise ValueError(f"{BEGIN_MARKER} must be on a line of its own")
    return newline + 1, end


def _row(name: str, info: FieldInfo) -> tuple[str, ...]:
    if not info.description:
        raise ValueError(f"TTAConfig.{name} has no description=; add one (wording: docs/configuration.md)")
    cells = (
        _code(name),
        _code(env_name(name)),
        _code(_type_name(info.annotation)),
        _default(info),
        _bounds(name, info),
        " ".join(info.description.split()),
    )
    return tuple(_cell(cell) for cell in cells)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:  # the choices go in the bounds column
        return " | ".join(dict.fromkeys(type(arg).__name__ for arg in args))
    if origin is Union or origin is types.UnionType:
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _choices(tp: Any) -> tuple[Any, ...]:
    if get_origin(tp) is Literal:
        return get_args(tp)
    return tuple(choice for arg in get_args(tp) for choice in _choices(arg))


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "set (secret, not shown)"
    if isinstance(value, (tuple, list, frozenset, set)):
        return ", ".join(_code(_value(v)) for v in value) if value else "(none)"
    return _code(_value(value))


def _value(value: Any) -> str:
    """A value as an operator writes it in YAML or the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounds(name: str, info: FieldInfo) -> str:
    lower: str | None = None
    upper: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    parts: list[str] = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            lower = f"{_value(item.ge)} <="
        elif isinstance(item, annotated_types.Gt):
            lower = f"{_value(item.gt)} <"
        elif isinstance(item, annotated_types.Le):
            upper = f"<= {_value(item.le)}"
        elif isinstance(item, annotated_types.Lt):
            upper = f"< {_value(item.lt)}"
        elif isinstance(item, annotated_types.MinLen):
            min_len = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            max_len = item.max_length
        elif isinstance(item, annotated_types.MultipleOf):
            parts.append(f"multiple of {_value(item.multiple_of)}")
        else:  # pydantic's general metadata: pattern, allow_inf_nan, ...
            settings = {k: v for k, v in vars(item).items() if v is not None and k not in _IGNORED_METADATA}
            pattern = settings.pop("pattern", None)
            if settings:
                raise ValueError(f"TTAConfig.{name}: settings_table cannot show {settings!r}; extend _bounds")
            if pattern is not None:
                parts.append(f"pattern {_code(str(pattern))}")
    if lower or upper:
        parts.insert(0, _code(" ".join(p for p in (lower, "x", upper) if p)))
    if min_len is not None or max_len is not None:
        if min_len is not None and max_len is not None:
            parts.insert(0, f"length {min_len} to {max_len}")
        else:
            parts.insert(0, f"length >= {min_len}" if min_len is not None else f"length <= {max_len}")
    choices = _choices(info.annotation)
    if choices:
        parts.insert(0, "one of " + ", ".join(_code(_value(c)) for c in choices))
    return "; ".join(parts)


def _code(text: str) -> str:
    """``text`` as an inline code span."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    # GitHub's tables split cells on "|" even inside code spans.
    return text.replace("\n", " ").replace("|", "\\|")


def _join(items: Iterable[str]) -> str:
    names = list(items)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
