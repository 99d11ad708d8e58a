"""The webui's OpenAI-compatible API with a ``steering`` and a ``monitor`` field in each request.

server.py runs the extensions' setup() before it imports modules.api.script, whose routes read their
request models from modules.api.typing when it is imported, drop unknown body fields (pydantic) and hand
the model's ``__dict__`` on as the generation state. So ``install`` (called by setup()), without changing
any of the webui's files:

- replaces CompletionRequest and ChatCompletionRequest in modules.api.typing by subclasses with the two
  fields, checked while the body is read, before generation starts: a bad value raises the API's own
  InvalidRequestError, which its exception handler turns into HTTP 400 with a JSON error, for streams
  too; a good one is put into normal form (runtime/requests.py);
- wraps the four entry points of modules.api.completions (looked up by the routes at each call) so that
  each response, and a stream's finishing chunk, carries a ``steering`` object: what was applied;
- adds ``GET /v1/steering/presets`` to the API's app: the presets a request may name.
"""
from __future__ import annotations

import importlib
import logging
import sys
import uuid
from typing import Any, Callable, ClassVar

log = logging.getLogger("steering")
FIELDS = ("steering", "monitor")
PRESETS_ROUTE = "/v1/steering/presets"
REQUEST_MODELS = ("CompletionRequest", "ChatCompletionRequest")
ENTRY_POINTS = ("completions", "stream_completions", "chat_completions", "stream_chat_completions")
STEERING_DOC = ('Presets for this reply, replacing the character\'s and the all-chats ones: "love:0.5, concise" '
                '(NAME[:STRENGTH], a dose for a calibrated preset), {"love": 0.5, "concise": null}, or null / "none" / {} '
                'for an unsteered reply. Absent: the character\'s and the all-chats presets.')
MONITOR_DOC = 'Presets to read the reply against (["love"]): how strongly it carries each direction.'


def install(runtime, package: str) -> str | None:
    """Arrange the request fields, the responses and the presets route; returns why not, or None."""
    if "modules.api.script" in sys.modules:  # the routes hold the webui's own models already
        return ("the API was started before the extension (enabled later from the Session tab?): requests cannot "
                "carry steering until the webui is restarted with --extensions steering")
    requests = importlib.import_module(f"{package}.runtime.requests")
    typing_module = importlib.import_module("modules.api.typing")
    errors = importlib.import_module("modules.api.errors")
    for name in REQUEST_MODELS:
        base = getattr(typing_module, name)
        if not getattr(base, "_steering_fields", False):
            setattr(typing_module, name, steered_model(base, lambda given: _checked(runtime, requests, errors, given)))
    completions = importlib.import_module("modules.api.completions")
    for name in ENTRY_POINTS:
        function = getattr(completions, name)
        if not getattr(function, "_steering_report", False):
            setattr(completions, name, reporting(function, runtime, requests, stream=name.startswith("stream_")))
    from modules import shared

    if shared.args.api or getattr(shared.args, "public_api", False):
        script = importlib.import_module("modules.api.script")  # after the models above: its routes take ours
        add_presets_route(script.app, runtime, requests, script.check_key)
    return None


def steered_model(base: type, check: Callable[[dict], dict]) -> type:
    """A subclass of the webui's request model ``base`` with ``steering`` and ``monitor``: ``check`` gets
    the fields the client sent (absent and null differ) and returns their normal form."""
    from pydantic import Field, model_validator

    class Steered(base):
        steering: Any = Field(default=None, description=STEERING_DOC)
        monitor: Any = Field(default=None, description=MONITOR_DOC)
        _steering_fields: ClassVar[bool] = True  # marks our subclass (a class variable, not a pydantic field)

        @model_validator(mode="after")
        def _steering_checked(self):
            given = {name: getattr(self, name) for name in FIELDS if name in self.model_fields_set}
            for name, value in check(given).items():
                setattr(self, name, value)
            return self

    Steered.__name__ = Steered.__qualname__ = base.__name__  # the API's schema keeps the webui's names
    Steered.__module__ = base.__module__
    return Steered


def _checked(runtime, requests, errors, given: dict) -> dict:
    """The request's fields checked against the presets and the model now, or the API's 400 error."""
    try:
        return requests.check_request(runtime, given)
    except requests.RequestError as error:
        raise errors.InvalidRequestError(message=str(error), param=error.param) from None


def reporting(function: Callable, runtime, requests, stream: bool) -> Callable:
    """``function`` (a modules.api.completions entry point) with the ``steering`` report added to its
    response, or to the stream's finishing chunk (the one with a finish_reason)."""

    def keyed(body: dict) -> str:
        key = uuid.uuid4().hex
        requests.mark_request(body, key)
        return key

    def report(key: str) -> dict:
        return runtime.take_report(key)

    if stream:
        def entry(body: dict, *args, **kwargs):
            key = keyed(body)
            for chunk in function(body, *args, **kwargs):
                if isinstance(chunk, dict) and any(isinstance(c, dict) and c.get("finish_reason") for c in _choices(chunk)):
                    chunk["steering"] = report(key)
                yield chunk
    else:
        def entry(body: dict, *args, **kwargs):
            key = keyed(body)
            response = function(body, *args, **kwargs)
            if isinstance(response, dict):
                response["steering"] = report(key)
            return response

    entry.__name__ = entry.__qualname__ = function.__name__
    entry.__doc__ = function.__doc__
    entry._steering_report = True
    return entry


def _choices(chunk: dict) -> list:
    value = chunk.get("choices", chunk.get("data"))  # "data" on the legacy /generate paths
    return value if isinstance(value, list) else []


def add_presets_route(app, runtime, requests, dependencies) -> None:
    from fastapi.responses import JSONResponse

    def list_presets():
        return JSONResponse(content={"object": "list", "data": requests.preset_listing(runtime)})

    app.add_api_route(PRESETS_ROUTE, list_presets, methods=["GET"], dependencies=dependencies)
