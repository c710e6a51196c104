"""cnnsearch: architecture search and ablations for convolutional networks."""

from importlib import metadata

from .config import Arch, ConfigError, list_presets, load_arch, save_arch
from .costs import Cost, profile
from .model import build_model
from .space import Space, load_space

try:
    __version__ = metadata.version("cnnsearch")  # what pyproject.toml said when it was installed
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"

__all__ = [
    "Arch",
    "ConfigError",
    "Cost",
    "Space",
    "build_model",
    "list_presets",
    "load_arch",
    "load_space",
    "profile",
    "save_arch",
]
