"""The configuration error: its own module so the running daemon can catch it without loading
the config model (src/orchestration/values.py explains why that matters)."""


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line an operator can act on."""
