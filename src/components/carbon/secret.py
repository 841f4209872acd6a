"""A secret value (an API token) that never renders itself, and scrubs itself from text.

The library's own type, so that parts holding a token need neither pydantic nor the config
model: ``str()`` and ``repr()`` show asterisks, and only ``get_secret_value()`` gives the text.

A library error message may quote the value in another form than the raw text: http.client's
"Invalid header value b'tok\\r'" is the repr of its bytes. :meth:`Secret.scrub` replaces every
form a message can take (raw, repr of str and of bytes, URL-quoted, JSON-escaped).
"""

from __future__ import annotations

import json
import urllib.parse

_MASK = "**********"
SCRUBBED = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def renderings(self) -> tuple[str, ...]:
        """The forms the value takes in messages, longest first (a longer form goes before its parts)."""
        v = self._value
        forms = {v, repr(v)[1:-1], repr(v.encode("utf-8", "backslashreplace"))[2:-1],
                 urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v), json.dumps(v)[1:-1]}
        return tuple(sorted((f for f in forms if f), key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with every rendering of the value replaced by ``***``."""
        for form in self.renderings():
            text = text.replace(form, SCRUBBED)
        return text

    def __str__(self) -> str:
        return _MASK

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple:
        return (Secret, (self._value,))
