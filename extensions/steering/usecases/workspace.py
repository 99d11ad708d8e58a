"""What every use case works on: the preset store, the model, the lock around the model, and how the
interface asks for an overwrite."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

from ..engine.context import ModelContext
from ..engine.presets import PresetStore
from ..engine.recipe import Recipe
from ..engine.validation import PresetError, check_name
from ..engine.vector import SteeringVector


@dataclass(frozen=True)
class Workspace:
    """``model()`` loads or returns the model (the command line loads it only once its input is checked);
    ``lock`` is held around each use of it (the webui's generation lock in the tab); ``preset_vector`` gives
    a preset's vector for that model (the runtime's cache in the tab, the store's otherwise)."""

    store: PresetStore
    model: Callable[[], ModelContext]
    lock: AbstractContextManager = field(default_factory=nullcontext)
    preset_vector: Callable[[str], SteeringVector] | None = None
    # how the interface says what to do: replace a preset ("pass --overwrite"), give a system prompt ("give one with --system")
    overwrite_hint: str = "overwrite it"
    system_hint: str = "give the system prompt it stands in for"

    def vector(self, preset: str | Recipe) -> SteeringVector:
        """A preset's vector (by name), or a recipe's, for the model."""
        if isinstance(preset, str) and self.preset_vector is not None:
            return self.preset_vector(preset)
        return self.store.vector(preset, self.model())

    def check_new_name(self, name: str, overwrite: bool) -> str:
        """``name`` checked, and free to save under (or replaced with ``overwrite``); a shipped preset never is."""
        name = check_name(name)
        shipped = self.store.is_shipped(name)
        if shipped or (self.store.exists(name) and not overwrite):
            raise PresetError(f"a preset named {name!r} exists; choose another name" + ("" if shipped else f" or {self.overwrite_hint}"))
        return name
