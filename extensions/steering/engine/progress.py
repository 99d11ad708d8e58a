"""How long-running engine work reports how far it got."""
from __future__ import annotations

from typing import Callable

Progress = Callable[[int, int], None]  # progress(done, total): steps or prompts done so far, out of all
