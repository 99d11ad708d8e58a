"""A kl fit's loss and progress, its early stop on a plateau, a time limit the user asks for, what recipes store,
and that without a time limit the fit is the same on a busy machine (engine/distill/).

Real fits on the default model, kept tiny: one layer, one or two training messages, a few reply tokens.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace

import pytest
import torch

from extensions.steering import cli
from extensions.steering.engine import distill as d
from extensions.steering.engine.distill import training
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.presets import SHIPPED_DIR, PresetStore
from extensions.steering.engine.progress import Fitting
from extensions.steering.engine.recipe import read_recipe
from extensions.steering.engine.validation import PresetError
from extensions.steering.engine.vector import SteeringVector
from extensions.steering.runtime import SteeringRuntime
from extensions.steering.ui import actions as ui_actions
from extensions.steering.ui import distill_actions

SYSTEM = "You are a pirate. Always talk like a pirate: say 'Arr', 'matey' and 'ahoy' in every reply."
TINY = dict(messages=d.training_messages(2), reply_tokens=4, batch_size=1, lr=0.1)


def fit(ctx, steps: int, progress=None, **options):
    return d.distill(ctx, SYSTEM, [6], "kl", steps=steps, progress=progress, **{**TINY, **options})


def same(a, b) -> bool:
    return a.layers == b.layers and all(torch.equal(a.directions[i], b.directions[i]) for i in a.layers)


# -- loss and progress -------------------------------------------------------------------------------------
def test_a_fitting_hears_every_steps_loss_and_the_plain_progress_still_counts(default_ctx):
    counted, losses, directions = [], [], {}
    fitting = Fitting(lambda done, total: counted.append((done, total)), lambda step, steps, value: losses.append((step, steps, value)),
                      directions=directions.__setitem__)
    vector = fit(default_ctx, 4, fitting)
    assert [(s, n) for s, n, _ in losses] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert sorted(directions) == [1, 2, 3, 4] and same(SteeringVector(directions[4], vector.residual_norms), vector)
    assert same(SteeringVector(directions[2], vector.residual_norms), fit(default_ctx, 2))  # each step's copy, not the live tensor
    assert all(math.isfinite(v) and v >= 0 for _, _, v in losses)
    assert counted[-1] == (6, 6) and fitting.steps_done == 4 and fitting.stopped is None and fitting.last_loss == losses[-1][2]
    plain = []
    assert same(fit(default_ctx, 4, lambda done, total: plain.append(done)), vector)  # a plain Progress: the same vector
    assert plain == [1, 2, 3, 4, 5, 6]


# -- stopping early --------------------------------------------------------------------------------------
def test_plateau_compares_whole_passes_over_the_batches():
    assert not training._plateaued([1.0, 0.5, 0.9], 2, 0.1)  # not two passes yet
    assert training._plateaued([1.0, 1.0, 0.99, 0.98], 2, 0.05)  # 1.97 after 2.0: 1.5 % better
    assert not training._plateaued([1.0, 1.0, 0.8, 0.9], 2, 0.05)  # 15 % better
    assert training._plateaued([0.5, 0.5, 0.6, 0.6], 2, 0.05)  # worse
    assert not training._plateaued([1.0, 1.0, 1.0, 1.0], 2, 0.0)  # 0: never


def test_a_plateau_stop_is_the_fit_of_that_many_steps(default_ctx):
    fitting = Fitting()
    stopped = fit(default_ctx, 30, fitting, plateau=0.9)
    assert fitting.stopped == "plateau" and 4 <= fitting.steps_done < 30  # two passes over the two batches at least
    assert same(stopped, fit(default_ctx, fitting.steps_done))
    assert "stopped after" in d.stop_note(fitting, 30) and "loss stopped improving" in d.stop_note(fitting, 30)


def test_a_time_limit_stops_after_one_step_at_least(default_ctx):
    fitting = Fitting(time_limit=0)
    vector = fit(default_ctx, 5, fitting)
    assert fitting.stopped == "time limit" and fitting.steps_done == 1
    assert same(vector, fit(default_ctx, 1))
    assert "CUT SHORT by your time limit (0 s) after 1 of 5 steps" in d.stop_note(fitting, 5)


def test_without_a_time_limit_a_slow_machine_fits_every_step_to_the_same_bits(default_ctx, monkeypatch):
    idle = fit(default_ctx, 4, Fitting())
    clock = iter(range(0, 10**9, 1000))  # every reading of the clock 1000 s after the one before: a very busy machine
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    fitting = Fitting()
    busy = fit(default_ctx, 4, fitting)
    assert fitting.steps_done == 4 and fitting.stopped is None
    assert same(busy, idle)


# -- what recipes store --------------------------------------------------------------------------------------
def test_a_recipe_file_stores_every_option_and_one_left_out_is_the_first_releases():
    new = distill_recipe("p", SYSTEM)
    assert set(new.options.to_dict()) == {f for f in asdict(new.options) if f not in ("instead", "cut_short")}
    assert d.DistillOptions.from_dict(new.options.to_dict()) == new.options
    cut = replace(new.options, steps=3, cut_short=d.CutShort(60, 24))
    assert d.DistillOptions.from_dict(cut.to_dict()) == cut and cut.to_dict()["cut_short"] == {"time_limit": 60, "planned_steps": 24}
    with pytest.raises(PresetError, match="planned_steps"):
        d.DistillOptions.from_dict({**cut.to_dict(), "cut_short": {"time_limit": 60, "planned_steps": "many"}})
    with pytest.raises(PresetError, match="unknown distill.cut_short option"):
        d.DistillOptions.from_dict({**cut.to_dict(), "cut_short": {"time_limit": 60, "planned_steps": 24, "x": 1}})
    old = d.DistillOptions.from_dict({"system": SYSTEM, "steps": 10, "lr": None})
    assert old == d.DistillOptions(**{**d.LEGACY, "system": SYSTEM, "steps": 10})
    with pytest.raises(PresetError, match="distill.plateau"):
        d.DistillOptions(system=SYSTEM, plateau=1.5)


def test_the_shipped_distilled_presets_keep_the_options_they_were_built_with():
    shipped = {p.stem: read_recipe(p) for p in sorted(SHIPPED_DIR.glob("*-distilled.yaml"))}
    assert set(shipped) == {"kind-distilled", "kind-assistant-distilled", "pirate-distilled"}
    for name, recipe in shipped.items():
        first = {**d.LEGACY, "system": recipe.options.system, "instead": recipe.options.instead, "cut_short": None}
        assert asdict(recipe.options) == first, name
        assert recipe.layers == ["10%", "20%", "30%", "40%", "50%"], name


# -- the command line and the panel say how the fit went ----------------------------------------------------------
def test_cli_prints_the_loss_and_a_time_limit_that_cut_the_fit_short_is_recorded_and_shown(tmp_path, capsys, default_ctx):
    presets = str(tmp_path / "presets")
    assert cli.main(["distill", "p", "--system", SYSTEM, "--layer", "6", "--messages", "1", "--steps", "40",
                     "--time-limit", "0.001", "--presets", presets]) == 0
    captured = capsys.readouterr()
    assert "step 1/40  loss " in captured.err and "stopping at your time limit of 0.001 s" in captured.out
    assert "CUT SHORT by your time limit (0.001 s) after 1 of 40 steps" in captured.out
    assert "saved p" in captured.out and "cut short by a time limit of 0.001 s after 1 of 40 steps" in captured.out
    store = PresetStore(tmp_path / "presets", shipped=None)
    recipe = store.recipe("p")
    assert recipe.options.steps == 1 and recipe.options.messages == 1
    assert recipe.options.cut_short == d.CutShort(0.001, 40)
    # the record is for the user: the tensors (and their key) are those of a 1-step fit
    assert recipe.key() == replace(recipe, options=replace(recipe.options, cut_short=None)).key()
    assert cli.main(["show", "p", "--presets", presets]) == 0
    shown = capsys.readouterr().out
    assert "cut_short:" in shown and "planned_steps: 40" in shown and "# cut short by a time limit of 0.001 s after 1 of 40 steps" in shown
    assert "cut short by a time limit" in ui_actions.preset_text(store, "p")  # the tab's preset view
    assert cli.main(["distill", "q", "--system", SYSTEM, "--time-limit", "0", "--presets", presets]) == 2
    assert "--time-limit must be a positive number" in capsys.readouterr().err


def test_the_same_cli_distill_twice_saves_bit_identical_tensors_and_records_no_cut(tmp_path, capsys, default_ctx):
    vectors = []
    for run in ("a", "b"):
        presets = tmp_path / run
        assert cli.main(["distill", "p", "--system", SYSTEM, "--layer", "6", "--layer", "12", "--messages", "2", "--steps", "3",
                         "--presets", str(presets)]) == 0
        store = PresetStore(presets, shipped=None)
        recipe = store.recipe("p")
        assert recipe.options.steps == 3 and recipe.options.cut_short is None and "cut_short" not in recipe.to_yaml()
        vectors.append(store.cached_vector(recipe, default_ctx))
    assert "time limit" not in capsys.readouterr().out
    assert vectors[0] is not None and same(*vectors)


def test_the_panel_shows_the_step_and_the_loss(tmp_path, default_model, monkeypatch):
    runtime = SteeringRuntime(PresetStore(tmp_path / "presets", shipped=None), tmp_path / "state", model_source=lambda: default_model)
    monkeypatch.setattr(d, "evaluate", lambda *args, **options: None)  # the measurement is tested in test_distill.py
    monkeypatch.setattr(training, "training_messages", lambda limit=None: d.training_messages(1))  # a tiny fit
    shown = []
    done = distill_actions.distill_to_preset(runtime, "p", SYSTEM, "kl", 3, "6", 1, progress=lambda f, text: shown.append((f, text)))
    assert [text for _, text in shown if "loss" in text][-1].startswith("distilling: step 3/3, loss ")
    assert all(0 <= f <= 0.7 for f, _ in shown)
    assert done.fit.startswith("fitted in 3 steps (loss ")
    with pytest.raises(ValueError, match="time limit"):
        distill_actions.distill_to_preset(runtime, "p2", SYSTEM, "kl", 3, "6", 1, time_limit=-5)


def test_a_recipe_rebuilds_to_the_vector_its_fit_stopped_at(default_ctx):
    recipe = distill_recipe("p", SYSTEM, [6], messages=1, steps=6, reply_tokens=4, batch_size=1)
    fitting = Fitting(time_limit=0)
    stopped = build_vector(recipe, default_ctx, progress=fitting).vector
    recipe.options = d.fitted_options(recipe.options, fitting)
    assert recipe.options.steps == 1 and recipe.options.cut_short == d.CutShort(0, 6)
    assert same(build_vector(recipe, default_ctx).vector, stopped)
