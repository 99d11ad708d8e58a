"""The webui-independent core: find layers, build vectors, apply them, store presets."""
from .apply import MODES, PromptTooShortError, Steer, SteeringHandle, steer
from .build import METHODS, build, build_actadd, build_from_pairs
from .layers import Layers, UnsupportedModelError, find_layers
from .vector import SteeringVector
from . import distill  # registers RECIPE_BUILDERS['distill'] before any recipe is read

__all__ = [
    "METHODS", "MODES", "Layers", "PromptTooShortError", "Steer", "SteeringHandle", "SteeringVector",
    "UnsupportedModelError", "build", "build_actadd", "build_from_pairs", "find_layers", "steer",
]
