"""How long-running engine work reports how far it got; a fit also reports its loss and may take a time limit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Progress = Callable[[int, int], None]  # progress(done, total): steps or prompts done so far, out of all
LossReport = Callable[[int, int, float], None]  # loss(step, steps, value) after each optimisation step
DirectionsReport = Callable[[int, dict], None]  # directions(step, {layer: tensor}) after each optimisation step


@dataclass
class Fitting:
    """A Progress that also hears a fit's loss and may bound its time; it goes wherever a Progress goes.

    Work that fits nothing only calls it as ``progress(done, total)``. A fit (distillation via kl) also
    calls ``loss(step, steps, value)`` after each optimisation step, and says how it ended in
    ``steps_done``, ``last_loss`` and ``stopped`` ("time limit", "plateau"; None when it ran every step).
    ``time_limit`` (seconds; None, the default: none) is only for a user who asks for one: the fit then
    stops once that long has passed since it began (after one step at least), so its result depends
    on the machine's load, and the caller records that (``distill.cut_short``) and tells the user.
    """

    progress: Progress | None = None
    loss: LossReport | None = None
    time_limit: float | None = None
    directions: DirectionsReport | None = None  # a copy of the directions fitted so far (a benchmark measures every step's)
    steps_done: int | None = None
    stopped: str | None = None
    last_loss: float | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def report_loss(self, step: int, steps: int, value: float) -> None:
        self.last_loss = value
        if self.loss is not None:
            self.loss(step, steps, value)

    def report_directions(self, step: int, params: dict) -> None:
        if self.directions is not None:
            self.directions(step, {layer: p.detach().clone() for layer, p in params.items()})
