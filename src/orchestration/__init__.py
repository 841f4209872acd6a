"""Configuration for TTA components (the guide imports ``TTAConfig`` from here).

``TTAConfig`` is imported on first use, not with the package: the running daemon imports
``src.orchestration`` for ``ConfigError`` and the settings builders, and must not load
pydantic (src/orchestration/values.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.orchestration.errors import ConfigError

if TYPE_CHECKING:
    from src.orchestration.config import TTAConfig

__all__ = ["ConfigError", "TTAConfig"]


def __getattr__(name: str) -> Any:
    if name == "TTAConfig":
        from src.orchestration.config import TTAConfig

        return TTAConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
