"""The contract between the UI (tab, chat panel, distill panel) and the runtime: everything the UI may call."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol

from ..engine.context import ModelContext
from ..engine.presets import PresetStore
from ..engine.vector import SteeringVector
from .choices import ChatChoice
from .gate import ReentrantLock
from .items import Items
from .views import ChatView


class SteeringService(Protocol):
    lock: ReentrantLock  # held around every generate call of the UI's own (the host's generation lock)
    default_enabled: bool

    @property
    def store(self) -> PresetStore:
        """The presets: the UI lists, builds, saves and reads them here."""

    @property
    def characters_dir(self) -> Path | None:
        """The webui's characters folder, where a character's ``steering:`` key is read and written."""

    def current_model(self) -> ModelContext:
        """The loaded model's context, or SteeringUnavailable saying why steering cannot run."""

    def vector(self, name: str) -> SteeringVector:
        """A preset's vector for the loaded model (built from its recipe at first use)."""

    @property
    def active(self) -> Items:
        """The presets active for all chats."""

    def set_active(self, items: Iterable) -> None: ...

    def attachments(self, character: str | None) -> Items: ...

    def attach(self, character: str, items: Iterable) -> None: ...

    def character_file(self, character: str) -> Path | None: ...

    def character_names(self) -> list[str]:
        """The characters presets can be attached to (the webui's, the default one, those attached before)."""

    def chat_choice(self, key: str | None) -> ChatChoice: ...

    def chat_view(self, state: dict) -> ChatView:
        """What the chat panel shows for the chat of ``state``."""

    def save_chat_view(self, state: dict, enabled: bool, strengths: dict[str, float]) -> ChatView:
        """Store a chat's switch and strengths; ValueError with a message for the page."""

    def follow_chat(self, old_state: dict, new_state: dict) -> bool:
        """A chat was renamed or branched: its choice follows it to the new id."""

    def status_line(self, session: str | None = None) -> str:
        """One line: the model, whether the next reply can be steered, the active presets, the last problem
        (multi-user: what steered ``session``'s own last reply)."""


if TYPE_CHECKING:  # mypy (.ci/run) holds the runtime to this contract
    from . import SteeringRuntime

    _runtime_keeps_the_contract: type[SteeringService] = SteeringRuntime
