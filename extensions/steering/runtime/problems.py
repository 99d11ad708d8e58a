"""What went wrong last, said once: the console gets each new problem one time, the tab and chat panel read it.

One user is told the last problem, whatever it was. With --multi-user, a problem met while serving a
browser session's request is that session's own: no other session is told it (it may name what steered
that reply). A problem met outside every request (a shared file, a preset prepared for a new model)
concerns every session, and each is told it as such. One met serving a request of no session (the API)
is told to no session: its response carries it.

A reply steered as chosen clears what went wrong before it, never a problem met while serving that same
request (an unreadable chats.json read for its plan): that one has not been shown yet.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass
from typing import Iterator

from .kept import Kept

log = logging.getLogger("steering")
NO_SESSION = ""  # serving a request that has no browser session


@dataclass
class _Request:
    """The request this thread serves now."""

    session: str  # its browser session (a key), or NO_SESSION
    met_problem: bool = False  # a problem was reported while serving it


# The request this thread serves now, or None outside every request.
_SERVING: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("steering_serving", default=None)


class Problems:
    def __init__(self, sessions: int = 0):
        """``sessions``: how many browser sessions' own problems are kept (--multi-user); 0: one user."""
        self.multi_user = sessions > 0
        self.last: str | None = None  # the last problem met anywhere
        self._shared: str | None = None  # the last problem met outside every request
        self._sessions: Kept[str | None] = Kept(sessions)

    @contextlib.contextmanager
    def serving(self, session: str | None) -> Iterator[None]:
        """Problems reported inside are the request's of browser session ``session`` (a key; None: no session)."""
        token = _SERVING.set(_Request(session or NO_SESSION))
        try:
            yield
        finally:
            _SERVING.reset(token)

    def report(self, message: str) -> None:
        """Record ``message``; log it unless it is the same as the last one (a problem repeats per reply)."""
        if message != self.last:
            log.warning("steering: %s", message)
        self.last = message
        request = _SERVING.get()
        if request is None:
            self._shared = message
            return
        request.met_problem = True
        if request.session:
            self._sessions.put(request.session, message)

    def clear(self) -> None:
        """A reply was steered as chosen: the last problem is past, and so are its session's own and the one met
        outside every request (as for one user: a problem that persists is met and said again). Nothing is
        cleared when this request met a problem of its own: it is still to be said."""
        request = _SERVING.get()
        if request is not None and request.met_problem:
            return
        self.last = self._shared = None
        if request is not None and request.session:
            self._sessions.put(request.session, None)

    def told(self, session: str | None) -> tuple[str | None, str | None]:
        """(the last problem of browser session ``session``'s own requests, the last one met outside every
        request) with --multi-user; (the last problem, None) for one user."""
        if not self.multi_user:
            return self.last, None
        return (self._sessions.get(session) if session else None), self._shared
