"""The webui-independent core: one model context, vectors built from prompts, applied by hooks, stored as presets."""
from .apply import MODES, PromptTooShortError, Steer, SteeringHandle, everywhere, on_thread, steer
from .build import build_actadd, build_from_pairs
from .context import ModelContext
from .layers import Layers, UnsupportedModelError, find_layers
from .methods import METHODS, Built, build_vector
from .vector import SteeringVector

__all__ = [
    "METHODS", "MODES", "Built", "Layers", "ModelContext", "PromptTooShortError", "Steer", "SteeringHandle", "SteeringVector",
    "UnsupportedModelError", "build_actadd", "build_from_pairs", "build_vector", "everywhere", "find_layers",
    "on_thread", "steer",
]
