"""The environment file, read exactly as systemd's ``EnvironmentFile=`` reads it.

systemd hands the file to the daemon as process variables, and the daemon also reads
the file itself (to name a bad value's file and line, and to tell at reload which
variables came from the file). The two readings must agree on every value, or a
reload would keep a stale value and an error would blame the wrong text. So this is
systemd 252's grammar (``parse_env_file_internal`` in src/basic/env-file.c):

- ``#`` or ``;`` first on a line (after blanks) starts a comment; a comment ending in a
  backslash continues on the next line;
- blanks around the key and before the value are dropped, trailing blanks of an unquoted
  value too;
- unquoted, a backslash takes the next character literally, and backslash-newline joins
  the next line;
- ``'...'`` is literal and may span lines; ``"..."`` may span lines, unescapes ``\\"``,
  ``\\\\``, ``\\``` and ``\\$``, drops backslash-newline and keeps any other backslash;
- quoted and unquoted parts run together (``A="x"y`` is ``xy``); a quote after the
  first unquoted character is an ordinary character;
- ``\\r`` ends a line as ``\\n`` does.

Where systemd silently drops or guesses, we refuse with the file and line instead, since
a setting that silently does nothing is worse than a refusal: a line without ``=``, a
key that is not a variable name, an unterminated quote (systemd runs it to the end of
the file), a NUL byte (systemd stops reading there). The one extension is ``export
KEY=value``, from the old deployment guide: systemd drops such a line, so it only reaches
the daemon through this reader; docs/configuration.md says to write the plain form.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from src.orchestration.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPORTED = re.compile(r"export[ \t]+([A-Za-z_][A-Za-z0-9_]*)")
_NEWLINE = "\n\r"
_BLANK = " \t\n\r"
_COMMENT = "#;"
_DOUBLE_QUOTE_ESCAPES = '"\\`$'

# The parser's states, named as in systemd's env-file.c.
(PRE_KEY, KEY, PRE_VALUE, VALUE, VALUE_ESCAPE, SINGLE_QUOTE, DOUBLE_QUOTE, DOUBLE_QUOTE_ESCAPE,
 COMMENT, COMMENT_ESCAPE) = range(10)


def parse_env_text(text: str, name: str, describe: Callable[[str], str]) -> dict[str, tuple[str, str]]:
    """``{KEY: (value, "<name> line N")}``, the last assignment of a key winning (as in systemd).

    ``describe`` renders a refused line for the error (it hides a line that may hold a secret).
    """
    pairs: dict[str, tuple[str, str]] = {}
    line = 1  # the line the character being read is on
    key_line = 1  # the line the current assignment started on
    key: list[str] = []
    value: list[str] = []
    key_blank_at: int | None = None  # where trailing blanks of the key begin
    value_blank_at: int | None = None  # where trailing blanks of an unquoted value begin
    quote_line = 0
    state = PRE_KEY

    def fail(what: str, at: int) -> ConfigError:
        return ConfigError(f"environment file {name} line {at}: {what}")

    def push() -> None:
        raw = "".join(key[:key_blank_at] if key_blank_at is not None else key)
        found = raw if _NAME.fullmatch(raw) else None
        if found is None and (m := _EXPORTED.fullmatch(raw)):
            found = m.group(1)
        if found is None:
            raise fail(f"expected KEY=value, got {describe(_line_text(text, key_line))}", key_line)
        pairs[found] = ("".join(value), f"{name} line {key_line}")

    previous = ""
    for c in text:
        if c == "\0":
            raise fail("holds a NUL byte (systemd stops reading the file there)", line)
        if state == PRE_KEY:
            if c in _COMMENT:
                state = COMMENT
            elif c not in _BLANK:
                state, key, value, key_blank_at, value_blank_at = KEY, [c], [], None, None
                key_line = line
        elif state == KEY:
            if c in _NEWLINE:
                raise fail(f"expected KEY=value, got {describe(_line_text(text, key_line))}", key_line)
            if c == "=":
                state = PRE_VALUE
            else:
                key_blank_at = _trailing_blanks(c, key_blank_at, len(key))
                key.append(c)
        elif state == PRE_VALUE:
            if c in _NEWLINE:
                push()
                state = PRE_KEY
            elif c == "'":
                state, quote_line = SINGLE_QUOTE, line
            elif c == '"':
                state, quote_line = DOUBLE_QUOTE, line
            elif c == "\\":
                state = VALUE_ESCAPE
            elif c not in _BLANK:
                state = VALUE
                value.append(c)
        elif state == VALUE:
            if c in _NEWLINE:
                if value_blank_at is not None:
                    del value[value_blank_at:]
                push()
                state = PRE_KEY
            elif c == "\\":
                state, value_blank_at = VALUE_ESCAPE, None
            else:
                value_blank_at = _trailing_blanks(c, value_blank_at, len(value))
                value.append(c)
        elif state == VALUE_ESCAPE:
            state = VALUE
            if c not in _NEWLINE:  # backslash-newline joins the lines
                value.append(c)
        elif state == SINGLE_QUOTE:
            if c == "'":
                state = PRE_VALUE
            else:
                value.append(c)
        elif state == DOUBLE_QUOTE:
            if c == '"':
                state = PRE_VALUE
            elif c == "\\":
                state = DOUBLE_QUOTE_ESCAPE
            else:
                value.append(c)
        elif state == DOUBLE_QUOTE_ESCAPE:
            state = DOUBLE_QUOTE
            if c in _DOUBLE_QUOTE_ESCAPES:
                value.append(c)
            elif c != "\n":
                value += ("\\", c)
        elif state == COMMENT:
            if c == "\\":
                state = COMMENT_ESCAPE
            elif c in _NEWLINE:
                state = PRE_KEY
        elif state == COMMENT_ESCAPE:
            state = COMMENT  # systemd 252: the escaped character, a newline too, stays in the comment
        # Count lines as an editor does: \n, \r\n and a lone \r each end one.
        if c == "\r" or (c == "\n" and previous != "\r"):
            line += 1
        previous = c

    if state in (SINGLE_QUOTE, DOUBLE_QUOTE, DOUBLE_QUOTE_ESCAPE):
        raise fail(f"unterminated quote in {''.join(key).strip()} (it would run to the end of the file)",
                   quote_line)
    if state == KEY:
        raise fail(f"expected KEY=value, got {describe(_line_text(text, key_line))}", key_line)
    if state in (PRE_VALUE, VALUE, VALUE_ESCAPE):
        if state == VALUE and value_blank_at is not None:
            del value[value_blank_at:]
        push()
    return pairs


def _trailing_blanks(c: str, start: int | None, length: int) -> int | None:
    """Where the run of blanks at the end begins, once ``c`` is appended at ``length`` (None: no run)."""
    if c not in _BLANK:
        return None
    return length if start is None else start


def _line_text(text: str, lineno: int) -> str:
    """Line ``lineno`` of ``text`` (lines end at \\n, \\r\\n or \\r), without its blanks."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
