"""What the chat panel and the status line show (view models and wording; the UI renders them without logic)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.wording import shown
from .backend import BackendStatus
from .choices import MAX_SESSIONS
from .items import Items, describe

SHARED_PROBLEM = "Last problem for every user"  # --multi-user: one met outside every session's requests


@dataclass(frozen=True)
class ChatRow:
    name: str
    default: float  # the strength from the character or the global list
    strength: float  # the strength this chat uses
    source: str  # "character" or "all chats"
    preparing: str | None = None  # "preparing", "ready" or why it failed, while its vector is built in the background
    calibrated: bool = False  # the strengths are doses: multiples of the preset's calibrated strength


@dataclass(frozen=True)
class ChatView:
    key: str | None  # None: the chat has no id (nothing can be remembered)
    enabled: bool
    rows: list[ChatRow]
    character: str | None
    problem: str | None  # why steering cannot run on the loaded model, if it cannot
    last_problem: str | None = None  # what kept this user's last reply from being steered as chosen
    notice: str | None = None  # what steering did for this user's last reply that they would want to know (a llama.cpp restart)
    shared_problem: str | None = None  # --multi-user: the last problem met outside every request, told to every user
    dropped: bool = False  # this session's choice was not kept (too many sessions): steering reads as off
    readings: str | None = None  # the last reply's reading along each preset it applied or read: "love +1.8σ"

    def text(self) -> str:
        """A short Markdown summary for the chat tab."""
        lines = []
        if self.problem:
            lines.append(f"⚠ {self.problem}")
        if not self.rows:
            lines.append("No steering presets for this chat: activate some in the Steering tab or attach them to the character.")
        elif self.dropped:
            lines.append(f"⚠ This server keeps the steering choices of {MAX_SESSIONS} browser sessions at most and no longer has "
                         "this one's: steering is off for this chat until you switch it on again.")
        elif not self.enabled:
            lines.append("Steering is switched off for this chat.")
        elif not self.problem:
            used = [f"{row.name} ×{shown(row.strength)}" for row in self.rows if row.strength != 0]
            lines.append(f"Steering this chat: {', '.join(used)}." if used else "Every preset is at strength 0 in this chat.")
            for row in self.rows:
                if row.preparing == "preparing":
                    lines.append(f"⏳ Preparing {row.name}… (built once for this model; a reply waits for it)")
                elif row.preparing not in (None, "ready"):
                    lines.append(f"⚠ {row.name} could not be prepared: {row.preparing}")
        if self.readings:
            lines.append(f"Last reply: {self.readings}")
        if self.notice and not self.problem:
            lines.append(f"ℹ {self.notice}")
        if self.last_problem and not self.problem:
            lines.append(f"⚠ Last problem: {self.last_problem}")
        if self.shared_problem and not self.problem:
            lines.append(f"⚠ {SHARED_PROBLEM}: {self.shared_problem}")
        if self.key is None:
            lines.append("(This chat has no id yet, so a change here is not remembered.)")
        return "  \n".join(lines)


@dataclass(frozen=True)
class Told:
    """What one user is told of steering's last doings: the last reply's (one user), or their own (--multi-user)."""

    steered: Items = field(default_factory=list)  # what steered their last reply
    notice: str | None = None  # what steering did for it that they would want to know (a llama.cpp restart)
    problem: str | None = None  # what kept their last reply from being steered as chosen
    shared_problem: str | None = None  # --multi-user: the last problem met outside every request (every user's)


def status_line(model: BackendStatus, active: Items, told: Told) -> str:
    """One line: the model, whether the next reply can be steered, the presets active for all chats, what
    steered the user's last reply, the last problem."""
    if model.problem:
        head = model.problem
    elif model.control_vectors:
        head = (f"Model: {model.model} ({model.loader} loader): steering by control vectors; "
                "a reply that needs another set of presets restarts llama-server.")
        if told.notice:
            head += f" Last: {told.notice}."
    else:
        head = (f"Model: {model.model} ({model.layers} layers, hidden size {model.hidden_size}"
                f"{', ' + model.loader + ' loader' if model.loader else ''}): ")
        if model.broken:
            head += "⚠ " + "; ".join(f"{name} cannot steer: {problem}" for name, problem in model.broken) + "."
        else:
            head += "steering can run."
    parts = [head, f"Active for all chats: {describe(active)}."]
    if told.steered:
        parts.append(f"Last reply steered by: {describe(told.steered)}.")
    if told.problem:
        parts.append(f"Last problem: {told.problem}")
    if told.shared_problem:
        parts.append(f"{SHARED_PROBLEM}: {told.shared_problem}")
    return " ".join(parts)
