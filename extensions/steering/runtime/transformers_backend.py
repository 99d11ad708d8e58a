"""Steering a PyTorch model (the Transformers loader's) by hooks, armed for the one generate call of a request.

The vectors are built for the loaded model (model_watch.py), ahead of the first reply when they can be
(preparer.py); each request's steering and reading are armed at the webui's tokenizer_modifier (gate.py).
Every other loader that runs the model outside PyTorch falls to this backend too: it says why it cannot steer.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import torch

from ..engine.apply import Steer
from ..engine.context import ModelContext
from ..engine.methods.imported import ImportedVector
from ..engine.presets import PresetStore
from ..engine.validation import PresetError
from .backend import BackendStatus, LastSteered
from .choices import state_session
from .gate import GenerationGate, ReentrantLock
from .items import Items
from .model_watch import ModelWatch, SteeringUnavailable
from .plans import Plans
from .preparer import Preparer
from .problems import Problems
from .readings import Readings
from .requests import STATE_STEERING, RequestError, RequestReport


def loaded_name(ctx: ModelContext) -> str:
    """The model as the user named it when loading it (its folder: SmolLM2-135M-Instruct; a converted GGUF's
    cache folder without its key), else its class."""
    folder = str(getattr(getattr(ctx.model, "config", None), "name_or_path", "") or "")
    return re.sub(r"-[0-9a-f]{12}$", "", Path(folder).name) or ctx.name


class TransformersBackend:
    def __init__(self, store: PresetStore, models: ModelWatch, gate: GenerationGate, lock: ReentrantLock, readings: Readings,
                 problems: Problems, plans: Plans, last: LastSteered):
        self.store = store
        self.models = models
        self.gate = gate
        self.readings = readings
        self.problems = problems
        self.plans = plans
        self.last = last
        self.preparer = Preparer(models, lock, problems)
        models.on_change = self._model_loaded

    def _model_loaded(self) -> None:
        """A model was loaded: build what will steer the next replies."""
        self.preparer.prepare(self.plans.for_new_model())

    # -- the protocol ------------------------------------------------------------------------------------
    def serves(self, model: Any) -> bool:
        return True  # any other model: steered here, or told here why it cannot be

    def notice(self, model: Any) -> None:
        pass  # the model watch notices a model when it is asked for one

    def prepare(self, names: Iterable[str]) -> None:
        self.preparer.prepare(names)

    def preparing(self, name: str) -> str | None:
        return self.preparer.status(name)

    def status(self, presets: Iterable[str] = ()) -> BackendStatus:
        try:
            ctx = self.models.current()
        except SteeringUnavailable as error:
            return BackendStatus(problem=str(error))
        broken = [(name, self.preset_problem(name, ctx)) for name in presets]
        return BackendStatus(loaded_name(ctx), loader=self.models.loader_name(), layers=ctx.num_layers, hidden_size=ctx.hidden_size,
                             broken=tuple((name, problem) for name, problem in broken if problem))

    def check_usable(self, names: list[str], reading: bool = False) -> None:
        param = "monitor" if reading else STATE_STEERING
        try:
            ctx = self.models.current()
        except SteeringUnavailable as error:
            raise RequestError(str(error), param) from None
        for name in names:
            problem = self.preset_problem(name, ctx)
            if problem:
                raise RequestError(f"preset {name!r} cannot {'be read on' if reading else 'steer'} {ctx.name}: {problem}", param)

    def begin_generation(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        with self.problems.serving(state_session(state)):
            return self._arm(state, input_ids)

    def _arm(self, state: dict, input_ids: torch.Tensor | None) -> Items:
        self.last.record(state, [])
        self.gate.drop(input_ids)
        report = self.plans.open_report(state)
        steers = self.named_steers(state, report)
        try:
            wanted, unread = self.readings.wanted(state), False
        except ValueError as error:  # a bad list never costs the reply its steering
            self.problems.report(f"nothing more read: {error}")
            wanted, unread = [], True
        if not steers and not wanted:
            return []
        try:
            ctx = self.models.current()
        except SteeringUnavailable as error:  # only a reading was asked for (steering said it already)
            self.problems.report(f"{', '.join(wanted)} cannot be read: {error}")
            return []
        length = int(input_ids.shape[-1]) if isinstance(input_ids, torch.Tensor) else None
        kept = []
        for name, steer in steers:
            rows = steer.vector.positions if steer.mode == "actadd" else 0
            problem = None
            if length is not None and rows and length < rows + 1:
                problem = f"an actadd preset needs a prompt of at least {rows + 1} tokens, this one has {length}; skipped"
                self.problems.report(problem)
            else:
                kept.append(steer)
            self.plans.report(report, state, name, steer.strength, steer.vector.layers, problem)
        applied = self.plans.plan(state) if kept else []
        if kept and len(kept) == len(steers) and len(steers) == len(applied) and not unread:
            self.problems.clear()
        read = [name for name, _ in applied] + wanted if self.readings.kept(state) else []  # nobody to show it to: not read
        monitor = self.readings.monitor(ctx, read) if read else None
        if not kept and monitor is None:
            return []
        self.gate.arm(ctx, kept, input_ids, monitor, self.readings.on_reply(state) if monitor is not None else None)
        self.last.record(state, applied)
        return applied

    # -- the vectors -------------------------------------------------------------------------------------
    def named_steers(self, state: dict, report: RequestReport) -> list[tuple[str, Steer]]:
        """(preset name, steer) for one request on the current model; nothing that cannot apply.

        Problems (no torch model, unknown preset, a vector that does not fit) are reported once and in
        ``report``, and that preset is skipped: generation itself is never blocked.
        """
        plan = self.plans.plan(state)
        if not plan:
            return []
        try:
            self.models.current()
        except SteeringUnavailable as error:
            self.problems.report(f"{error} (wanted: {', '.join(n for n, _ in plan)})")
            report.reason = str(error)
            for name, strength in plan:
                self.plans.report(report, state, name, strength, None, str(error))
            return []
        steers = []
        for name, strength in plan:
            try:
                steers.append((name, Steer(self.models.vector(name), strength, self.store.recipe(name).mode)))
            except (PresetError, SteeringUnavailable, ValueError, OSError) as error:
                self.problems.report(f"preset {name!r} not applied: {error}")
                self.plans.report(report, state, name, strength, None, str(error))
        return steers

    def preset_problem(self, name: str, ctx: ModelContext) -> str | None:
        """Why ``name`` would not steer the next reply on ``ctx``'s model (None: it would, as far as
        can be told without building it)."""
        try:
            recipe = self.store.recipe(name)
            imported = recipe.options if isinstance(recipe.options, ImportedVector) else None
            if imported is not None and imported.hidden_size != ctx.hidden_size:
                return f"it was imported for hidden size {imported.hidden_size}, {ctx.name} has {ctx.hidden_size}"
            recipe.layer_indices(ctx.num_layers)
            cached = self.store.cached_vector(recipe, ctx)
            if cached is not None:
                self.models.check_fits(cached, ctx, name)
        except (PresetError, ValueError, OSError) as error:
            return str(error)
        return None
