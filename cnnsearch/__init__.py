"""cnnsearch: architecture search and ablations for convolutional networks."""

from .config import Arch, ConfigError, list_presets, load_arch, save_arch
from .costs import Cost, profile
from .model import build_model
from .space import Space, load_space

__version__ = "0.1.0"

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
