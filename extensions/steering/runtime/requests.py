"""A request's own steering (the webui's OpenAI-compatible API): read, checked up front, and reported.

A request body may carry ``steering`` (the presets for this reply; it replaces the character's and the
all-chats ones) and ``monitor`` (presets to read the reply against). The API adapter (../api.py) checks
both with ``check_request`` before generation starts: a bad value is the client's error (RequestError,
an HTTP 400). The request's state then holds them in normal form: STATE_STEERING a list of
[name, strength] pairs ([] = unsteered; None or no key = the request chose nothing, so the character and
all-chats settings apply) and STATE_MONITOR a list of names. What one generation applied is kept per
request id (STATE_REPORT) in a ReportBook, from which the adapter adds it to the response.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..engine.validation import PresetError
from .items import Items, parse_items
from .readings import STATE_MONITOR as STATE_READ
from .readings import STATE_REQUEST as STATE_REPORT  # the id under which a reply's report and readings are kept
from .readings import ReplyReadings

STATE_STEERING = "steering"  # the request body's field, in normal form once checked
STATE_MONITOR = "monitor"  # the request body's field; the runtime reads the names under STATE_READ
MAX_REQUEST_PRESETS = 16  # presets one request may name (steering and monitor each)
MAX_SPEC_CHARS = 2000  # a steering string longer than this is refused before it is read
MAX_REPORTS = 64  # reports kept for responses not yet sent (a client that went away leaves one)
NONE = "none"  # the string that asks for an unsteered reply


class RequestError(ValueError):
    """A request's ``steering`` or ``monitor`` cannot be served; ``param`` names the field."""

    def __init__(self, message: str, param: str = STATE_STEERING):
        super().__init__(message)
        self.param = param


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", str: "a string", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _count(value: str | dict) -> None:
    count = len(value) if isinstance(value, dict) else value.count(",") + 1
    if count > MAX_REQUEST_PRESETS:
        raise RequestError(f"steering names {count} presets; a request may name at most {MAX_REQUEST_PRESETS}")


def read_steering(value: Any, default_strength) -> Items:
    """A request's ``steering`` value as (name, strength) items: a string of ``NAME[:STRENGTH]`` specs
    separated by commas (the command line's ``--steer``), an object ``{name: strength or null}``, or
    null / "none" / {} for an unsteered reply. A missing strength is the preset's own."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise RequestError('steering is an empty string: name presets ("love:0.5, concise"), or send null or "none" for an unsteered reply')
        if len(text) > MAX_SPEC_CHARS:
            raise RequestError(f"steering is {len(text)} characters long; at most {MAX_SPEC_CHARS}")
        if text.lower() == NONE:
            return []
    elif not isinstance(value, dict):
        raise RequestError(f'steering must be a string ("love:0.5, concise"), an object ({{"love": 0.5}}) or null, got {_json_type(value)}')
    _count(value)
    try:
        return parse_items(value, default_strength, source="steering")
    except PresetError as error:
        raise RequestError(str(error)) from None


def read_monitor(value: Any) -> list[str]:
    """A request's ``monitor`` value: preset names as an array or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        if len(value) > MAX_SPEC_CHARS:
            raise RequestError(f"monitor is {len(value)} characters long; at most {MAX_SPEC_CHARS}", STATE_MONITOR)
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise RequestError(f'monitor must be an array of preset names (["love"]) or a string ("love, kind"), got {_json_type(value)}', STATE_MONITOR)
    if len(value) > MAX_REQUEST_PRESETS:
        raise RequestError(f"monitor names {len(value)} presets; a request may name at most {MAX_REQUEST_PRESETS}", STATE_MONITOR)
    if not all(isinstance(name, str) for name in value):
        raise RequestError("monitor must name presets with strings", STATE_MONITOR)
    try:
        return [name for name, _ in parse_items(list(dict.fromkeys(value)), source="monitor")]
    except PresetError as error:
        raise RequestError(str(error), STATE_MONITOR) from None


def requested_items(state: dict, default_strength) -> Items | None:
    """The request's own presets in ``state``, or None when the request chose nothing. Read again here:
    a webui generation preset's keys reach the state unchecked, so a raw value may stand there too."""
    value = state.get(STATE_STEERING)
    if value is None:
        return None
    if isinstance(value, list):
        return parse_items(value, default_strength, source="the request's steering")
    return read_steering(value, default_strength)


def check_request(runtime, given: dict) -> dict:
    """The request fields in ``given`` (only those the client sent) checked against the presets and the
    model loaded now, in normal form: {STATE_STEERING: items as lists or None, STATE_MONITOR: names}.
    Raises RequestError naming the first problem."""
    steering = read_steering(given[STATE_STEERING], runtime.preset_strength) if STATE_STEERING in given else None
    monitor = read_monitor(given.get(STATE_MONITOR))
    for names, param in (([name for name, _ in steering or []], STATE_STEERING), (monitor, STATE_MONITOR)):
        for name in names:
            if not runtime.store.exists(name):
                raise RequestError(f"unknown preset {name!r} in {param}; GET /v1/steering/presets lists the presets", param)
        if names:
            runtime.check_usable(names, reading=param == STATE_MONITOR)
    return {STATE_STEERING: None if steering is None else [[name, strength] for name, strength in steering], STATE_MONITOR: monitor}


# -- what one request got ------------------------------------------------------------------------------
@dataclass
class RequestReport:
    """What steered one reply and what did not, with the reason; JSON for the response's ``steering``."""

    chosen_by: str  # "request" or "settings" (the character's and the all-chats presets)
    presets: list[dict] = field(default_factory=list)
    reason: str | None = None  # why nothing was applied, when nothing was
    restart_seconds: float | None = None  # llama.cpp: the server was restarted for this request

    def applied(self, name: str, strength: float, calibrated: bool, layers: list[int] | None, source: str) -> None:
        self._add(name, strength, calibrated, layers, source, None)

    def skipped(self, name: str, strength: float, calibrated: bool, layers: list[int] | None, source: str, reason: str) -> None:
        self._add(name, strength, calibrated, layers, source, reason)

    def _add(self, name, strength, calibrated, layers, source, reason) -> None:
        entry = {"preset": name, ("dose" if calibrated else "strength"): float(strength),
                 "layers": list(layers) if layers is not None else None, "source": source, "applied": reason is None}
        if reason is not None:
            entry["reason"] = reason
        self.presets = [p for p in self.presets if p["preset"] != name] + [entry]

    def to_json(self) -> dict:
        out: dict[str, Any] = {"chosen_by": self.chosen_by, "presets": self.presets}
        if not any(p["applied"] for p in self.presets):
            out["reason"] = self.reason or "; ".join(f"{p['preset']}: {p['reason']}" for p in self.presets) or "nothing was chosen"
        if self.restart_seconds is not None:
            out["llama_cpp_restart_seconds"] = round(self.restart_seconds, 3)
        return out


def mark_request(state: dict, key: str) -> None:
    """Give the request of ``state`` (its body, checked) the id its report and readings are kept under,
    and hand its ``monitor`` names to the runtime's readings."""
    state[STATE_REPORT] = key
    if state.get(STATE_MONITOR):
        state[STATE_READ] = list(state[STATE_MONITOR])


def report_json(found: RequestReport | None, readings: ReplyReadings | None) -> dict:
    """The response's ``steering`` object: what steered the request's reply (``found``; None when no
    generation ran) and its ``readings``."""
    out = found.to_json() if found else {"chosen_by": None, "presets": [], "reason": "no generation ran for this request"}
    if readings is not None:
        out["monitor"] = readings.to_list()
    return out


class ReportBook:
    """Reports by request id, from generation (inside the webui's lock) to the response (another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: OrderedDict[str, RequestReport] = OrderedDict()

    def open(self, state: dict, report: RequestReport) -> RequestReport:
        """Keep ``report`` for the request of ``state`` (a later generation of the same request replaces it)."""
        key = state.get(STATE_REPORT)
        if isinstance(key, str):
            with self._lock:
                self._reports[key] = report
                self._reports.move_to_end(key)
                while len(self._reports) > MAX_REPORTS:
                    self._reports.popitem(last=False)
        return report

    def take(self, key: str) -> RequestReport | None:
        with self._lock:
            return self._reports.pop(key, None)


def preset_listing(runtime) -> list[dict]:
    """The presets a request may name: name, method, the model they are for, whether calibrated, their own
    strength or dose, and whether they can steer the model loaded now (if not, why)."""
    out = []
    for info in runtime.store.list():
        try:
            recipe = runtime.store.recipe(info.name)
        except PresetError as error:
            out.append({"name": info.name, "usable": False, "problem": str(error)})
            continue
        imported = recipe.imported
        try:
            runtime.check_usable([info.name])
            problem = None
        except RequestError as error:
            problem = str(error)
        out.append({
            "name": info.name, "method": recipe.method, "mode": recipe.mode, "calibrated": recipe.calibrated,
            ("dose" if recipe.calibrated else "strength"): recipe.strength, "layers": recipe.layers,
            "model": ({"hidden_size": imported.hidden_size, "layers": imported.layer_count or None, "model_type": imported.model_hint}
                      if imported else "any: built for the loaded model at first use"),
            "shipped": info.shipped, "description": recipe.description, "usable": problem is None, "problem": problem,
        })
    return out
