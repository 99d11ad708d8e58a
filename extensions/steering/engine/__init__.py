"""The webui-independent core: one model context, vectors built from prompts, applied by hooks, stored as presets."""
from .apply import MODES, PromptTooShortError, Steer, SteeringHandle, everywhere, on_thread, steer
from .build import build, build_actadd, build_from_pairs
from .context import ModelContext
from .layers import Layers, UnsupportedModelError, find_layers
from .methods import METHODS, build_recipe
from .vector import SteeringVector

__all__ = [
    "METHODS", "MODES", "Layers", "ModelContext", "PromptTooShortError", "Steer", "SteeringHandle", "SteeringVector",
    "UnsupportedModelError", "build", "build_actadd", "build_from_pairs", "build_recipe", "everywhere", "find_layers",
    "on_thread", "steer",
]
