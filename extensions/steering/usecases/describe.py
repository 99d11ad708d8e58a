"""What a built vector is said to be: the plain line first (the tab and the command line), then the
method's details (the tab's one line under Advanced, the command line's lines after a build)."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..engine.calibration import Calibration
from ..engine.expansion import VERSIONS as EXPANSIONS
from ..engine.recipe import Recipe
from ..engine.vector import SteeringVector
from ..engine.wording import plain_summary, shown

UNSAVED = "unsaved"  # the recipe name of a vector built but not saved yet


class Draft(Protocol):
    """A vector built with the recipe that made it (build.Draft)."""

    recipe: Recipe
    vector: SteeringVector
    calibration: Calibration | None


def plain_line(built: Draft, source: str | None = None) -> str:
    """Where it steers, how strongly, at which layer, after what it is (``source``: by default the tab's words)."""
    recipe = built.recipe
    if source is None:
        source = "built, not saved yet" if recipe.name == UNSAVED else f"preset {recipe.name}"
    return f"{source}: {plain_summary(recipe, built.vector.layers, recipe.auto_layers)}"


def _norm(vector: SteeringVector, layer: int, residual: str) -> str:
    relative = vector.relative_norm(layer)
    return f"norm {vector.norm(layer):.1f}" + (f" ({relative:.2f}× {residual})" if relative else "")


def details_line(built: Draft) -> str:
    """The method's details in one line (the tab, under Advanced)."""
    r, v, found = built.recipe, built.vector, built.calibration
    source = "built, not saved" if r.name == UNSAVED else f"preset {r.name}"
    norms = "; ".join(f"layer {layer}: {_norm(v, layer, 'the residual')}" for layer in v.layers)
    rows = f"{v.positions} row(s)" if v.per_position else "one direction"
    strength = f"dose {shown(r.strength)} (calibrated)" if r.calibrated else f"strength {shown(r.strength)}"
    parts = [source, r.method, strength, f"mode {r.mode}", rows, norms]
    if r.expand:
        parts.insert(2, f"expanded {r.expand}")
    if found is not None and r.auto_layers:
        parts.append(f"layer {found.layers[0]} chosen by measurement")
    if found is not None and r.calibrated:
        parts.append(f"calibrated to {found.kl:.2f} nats/token of KL ({found.seconds:.0f} s)")
    return " · ".join(parts)


def built_lines(built: Draft, path: Path) -> list[str]:
    """What the command line prints after a build: the plain line, then the method's details, then where it was saved."""
    recipe, vector, found = built.recipe, built.vector, built.calibration
    lines = [plain_line(built, recipe.name)]
    if recipe.expand:
        lines.append(f"expanded ({recipe.expand}): {EXPANSIONS[recipe.expand].summary} (--no-expand reads it as written)")
    lines += [f"layer {layer}: {vector.positions} row(s), {_norm(vector, layer, 'the residual norm')}" for layer in vector.layers]
    if found is not None and recipe.auto_layers:
        scores = ", ".join(f"{layer}: {score:.3f}" for layer, score in found.scores.items())
        lines.append(f"layer chosen: {found.layers[0]} (effect along the contrast at the KL budget, per candidate layer: {scores})")
    if found is not None:
        lines.append(f"calibrated scale {found.scale:.4g} (mean KL {found.kl:.3f} for a budget of {found.budget:g} nats/token, "
                     f"{found.steps} passes, {found.seconds:.1f} s)" + ("" if recipe.calibrated else "; the fixed strength applies to the unscaled vector"))
    applied = f"dose {recipe.strength:g} of the calibrated strength" if recipe.calibrated else f"strength {recipe.strength:g}"
    lines.append(f"saved {recipe.name} to {path} ({applied}, mode {recipe.mode})")
    return lines
