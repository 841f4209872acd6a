"""Configuration for TTA components (the guide imports ``TTAConfig`` from here)."""

from src.orchestration.config import TTAConfig
from src.orchestration.sources import ConfigError

__all__ = ["ConfigError", "TTAConfig"]
