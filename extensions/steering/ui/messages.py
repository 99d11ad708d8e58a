"""What the page says after an action: one wording for done and for a problem, in every panel."""
from __future__ import annotations

import logging
import re

from ..runtime import SteeringUnavailable

log = logging.getLogger("steering")
EXPECTED_ERRORS = (ValueError, SteeringUnavailable)  # PresetError and PromptTooShortError are ValueErrors


def markdown_text(text: str) -> str:
    """Plain text shown in Markdown as written (paths and names keep their underscores and stars)."""
    return re.sub(r"([\\`*_{}\[\]<>()#+|~!])", r"\\\1", str(text))


def done_message(text: str) -> str:
    return f"✔ {markdown_text(text)}"


def problem_message(text: str) -> str:
    return f"⚠ **{markdown_text(text)}**"


def problem_text(error: Exception, what: str) -> str:
    """What the page says of ``error``: its message when it is about the input; otherwise (a bug) a short
    line, and the traceback goes to the log, never to the page."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    log.error("steering: %s failed", what, exc_info=error)
    return f"unexpected {type(error).__name__}: {error} (details in the console log)"


def browser_session() -> str | None:
    """The gradio session of the request being handled (gradio sets it for the handler's thread), or None."""
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    request = LocalContext.request.get()
    return getattr(request, "session_hash", None) if request is not None else None
