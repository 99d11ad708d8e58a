"""What went wrong last, said once: the console gets each new problem one time, the tab and chat panel read it."""
from __future__ import annotations

import logging

log = logging.getLogger("steering")


class Problems:
    def __init__(self) -> None:
        self.last: str | None = None

    def report(self, message: str) -> None:
        """Record ``message``; log it unless it is the same as the last one (a problem repeats per reply)."""
        if message != self.last:
            log.warning("steering: %s", message)
        self.last = message

    def clear(self) -> None:
        self.last = None
