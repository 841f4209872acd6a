"""A validated configuration as plain values: what the long-running daemon holds.

The config model (TTAConfig) needs pydantic, pydantic-settings and PyYAML: about 25 MB of
RSS that stays for the life of a process once imported, more than the rest of the lean
daemon together. ``tta-carbon run`` therefore validates in a short-lived child process
(src/service/config_loader.py) at start and at each reload, and keeps only a
``ConfigValues``: the model's field values, with the files it parsed. It is picklable with
the standard library and the library's own types (a token travels as
:class:`~src.components.carbon.secret.Secret`; the web config's TLS context, which cannot be
pickled, is rebuilt from its file where it is used).

Attribute access mirrors TTAConfig's fields, so everything that reads a configuration
(``component_settings``, ``apply_live``, the daemon) takes either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from src.components.carbon.intensity import ProfileProvider
from src.components.carbon.secret import Secret
from src.components.carbon.sinks.web_config import WebConfig

if TYPE_CHECKING:
    from src.orchestration.config import TTAConfig


class ConfigValues:
    """TTAConfig's field values (``values.measurement_interval`` ...), its parsed intensity profile,
    and its web config (parsed again from ``metrics_web_config`` on first use after unpickling)."""

    def __init__(self, values: Mapping[str, Any], intensity_profile: ProfileProvider | None = None,
                 web_config: WebConfig | None = None) -> None:
        self._values = dict(values)
        self.intensity_profile = intensity_profile
        self._web_config = web_config

    @classmethod
    def of(cls, config: TTAConfig | ConfigValues) -> ConfigValues:
        """The values of a validated configuration; secrets become the library's Secret."""
        if isinstance(config, ConfigValues):
            return config
        from pydantic import SecretStr  # loaded already: ``config`` is a TTAConfig

        values = {k: Secret(v.get_secret_value()) if isinstance(v, SecretStr) else v
                  for k, v in config.model_dump().items()}
        return cls(values, config.intensity_profile, config.web_config)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling looks these up before __dict__ is filled
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def secrets(self) -> tuple[Secret, ...]:
        """Every secret setting's value that is set (for the log scrubber)."""
        return tuple(v for v in self._values.values() if isinstance(v, Secret))

    def model_dump(self) -> dict[str, Any]:
        """Every setting by name (TTAConfig's method of the same name, for reload diffs)."""
        return dict(self._values)

    def replaced(self, changes: Mapping[str, Any], intensity_profile: ProfileProvider | None) -> ConfigValues:
        """These values with ``changes`` applied (a reload's live settings) and the given profile."""
        return ConfigValues({**self._values, **changes}, intensity_profile, self._web_config)

    @property
    def web_config(self) -> WebConfig:
        """The parsed ``metrics_web_config``: TLS context and users (empty when unset).

        Raises ValueError (one line) if the file, checked by the child that validated it, has
        become unreadable or invalid since.
        """
        if self._web_config is None:
            from src.components.carbon.sinks.web_config import load_web_config

            path = self._values.get("metrics_web_config")
            self._web_config = load_web_config(path) if path is not None else WebConfig()
        return self._web_config

    def __getstate__(self) -> dict[str, Any]:
        # The TLS context (ssl.SSLContext) cannot be pickled: the receiver parses the file again.
        return {"values": self._values, "intensity_profile": self.intensity_profile}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._values = state["values"]
        self.intensity_profile = state["intensity_profile"]
        self._web_config = None

    def __repr__(self) -> str:
        return f"ConfigValues({len(self._values)} settings)"

