"""What the command line, the tab and Python all do, one module per use case; the interfaces only parse
their input and format what comes back.

- ``workspace``: Workspace, what every use case works on (store, model, lock, the interface's hints).
- ``build``: Strength (a number, auto, a dose: read once), BuildRequest, build / check / save / vector_for.
- ``describe``: what a built vector is said to be (the plain line, the method's details).
- ``generate``: Request, generate (steered, read, compared) and compare.
- ``distill``: DistillRequest, distill (recipe, a free name, the fit, the preset saved).
- ``evaluate``: EvaluateRequest, presets measured as stand-ins for a system prompt.
- ``interchange``: export to / import from GGUF control vectors.
- ``presets``: names, show, listing, rename, delete.
- ``mix``: a formula of presets as (preset, strength) items.

The plain types the interfaces show or pass back, the input checks (``validation``, one wording each) and
the behaviour scores (``metrics``) are re-exported here, so the interfaces import nothing of the engine.
"""
from ..engine import effects, metrics, validation
from ..engine.apply import MODES, Steer
from ..engine.calibration import Calibration
from ..engine.context import ModelContext
from ..engine.distill import DEFAULT_LAYERS as DISTILL_LAYERS
from ..engine.distill import VIAS, DistillOptions, Evaluation
from ..engine.effects import SweepCell
from ..engine.feasibility import Feasibility
from ..engine.generation import Completion, Sampling
from ..engine.methods import METHODS, PROMPT_LAYERS, PROMPT_METHODS
from ..engine.models import load_model
from ..engine.presets import PresetStore
from ..engine.progress import Fitting, Progress
from ..engine.recipe import Recipe
from ..engine.validation import AUTO, PresetError
from ..engine.vector import SteeringVector
from ..engine.wording import MEASURED, plain_recipe, shown, strength_name
from .build import DEFAULT_METHOD, BuildRequest, Draft, Strength
from .workspace import Workspace

__all__ = [
    "AUTO", "BuildRequest", "Calibration", "Completion", "DEFAULT_METHOD", "DISTILL_LAYERS", "DistillOptions", "Draft", "Evaluation",
    "Feasibility", "Fitting", "MEASURED", "METHODS", "MODES", "ModelContext", "PROMPT_LAYERS", "PROMPT_METHODS", "PresetError", "PresetStore",
    "Progress", "Recipe", "Sampling", "Steer", "SteeringVector", "Strength", "SweepCell", "VIAS", "Workspace", "effects", "load_model", "metrics", "plain_recipe", "shown",
    "strength_name", "validation",
]
