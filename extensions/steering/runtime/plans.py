"""Which presets steer one request, and the report of what steered it (whichever backend steers).

A request is steered by its own ``steering`` (an API request's), else by the presets of its character and
those active for all chats, at the strengths its chat chose (a chat switched off: none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..engine.presets import PresetStore
from ..engine.validation import PresetError
from .attachments import Attachments
from .choices import ActivePresets, ChatChoice, ChatChoices, character_of, state_key
from .files import DataFiles
from .items import Items
from .problems import Problems
from .requests import STATE_STEERING, ReportBook, RequestReport, requested_items


class Plans:
    def __init__(self, store: PresetStore, files: DataFiles, problems: Problems, characters_dir: Path | None,
                 default_enabled: bool, default_character: Callable[[], str | None] | str | None):
        self.store = store
        self.choices = ChatChoices(files, default_enabled)
        self.active = ActivePresets(files, problems)
        self.attachments = Attachments(files, characters_dir, self.preset_strength, problems)
        self.reports = ReportBook()
        self._default_character = default_character

    def default_character(self) -> str | None:
        value = self._default_character
        return value() if callable(value) else value

    def preset_strength(self, name: str) -> float:
        """The preset's own strength (a dose for a calibrated preset); 1 when it cannot be read."""
        try:
            return float(self.store.recipe(name).strength)
        except PresetError:
            return 1.0

    def calibrated(self, name: str) -> bool:
        try:
            return self.store.recipe(name).calibrated
        except PresetError:  # a missing or damaged preset: said where it is used
            return False

    def for_new_model(self) -> list[str]:
        """The presets that will steer the next replies on a model just loaded: all chats' and the default character's."""
        return [name for name, _ in [*self.active.items, *self.attachments.of(self.default_character())]]

    def items_for_state(self, state: dict) -> tuple[Items, ChatChoice, str | None]:
        """(presets with strengths, the chat's choice, the character) for one request, before filtering."""
        character = character_of(state, self.default_character())
        merged: dict[str, float] = dict(self.active.items)
        merged.update(dict(self.attachments.of(character)))
        return list(merged.items()), self.choices.get(state_key(state)), character

    def plan(self, state: dict) -> Items:
        """The presets and strengths that would steer this request (strength 0 and off excluded): the
        request's own ``steering`` when it sent one, else the character's and the all-chats presets."""
        requested = requested_items(state, self.preset_strength)
        if requested is not None:
            return [(name, strength) for name, strength in requested if strength != 0]
        items, choice, _ = self.items_for_state(state)
        if not choice.enabled:
            return []
        out = [(name, float(choice.strengths.get(name, strength))) for name, strength in items]
        return [(name, strength) for name, strength in out if strength != 0]

    # -- what one request got ---------------------------------------------------------------------------
    def open_report(self, state: dict) -> RequestReport:
        """A fresh report for the request of ``state``, kept for its response when it has an id."""
        requested = state.get(STATE_STEERING) is not None
        report = RequestReport("request" if requested else "settings")
        if not self.plan(state):
            _, choice, character = self.items_for_state(state)
            report.reason = ("the request asked for no steering" if requested
                             else "steering is switched off for this chat" if not choice.enabled
                             else "no preset is active for all chats or attached to " + (f"the character {character!r}" if character else "a character"))
        return self.reports.open(state, report)

    def report(self, report: RequestReport, state: dict, name: str, strength: float, layers, reason: str | None) -> None:
        """``name`` applied to the request of ``state`` (``reason`` None), or skipped for ``reason``."""
        if state.get(STATE_STEERING) is not None:
            source = "request"
        else:
            source = "character" if name in dict(self.attachments.of(character_of(state, self.default_character()))) else "all chats"
        if reason is None:
            report.applied(name, strength, self.calibrated(name), layers, source)
        else:
            report.skipped(name, strength, self.calibrated(name), layers, source, reason)

    def report_all(self, state: dict, plan: Items, skipped: dict[str, str], restart_seconds: float | None = None) -> None:
        """The report of a request whose whole plan was applied at once but for ``skipped`` ({name: why})."""
        report = self.open_report(state)
        report.restart_seconds = restart_seconds
        for name, strength in plan:
            self.report(report, state, name, strength, None, skipped.get(name))
