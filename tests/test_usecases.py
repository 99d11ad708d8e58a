"""The use cases (extensions/steering/usecases/) on their own: the strength read once for the command line and
the tab, every check that needs no model said before the model loads, and the Python path end to end on a
tiny random model (the command line and the tab run the same path on the default model: test_cli.py,
test_ui_actions.py)."""
from __future__ import annotations

import math

import pytest

from extensions.steering.cli_arguments import make_parser
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.validation import PresetError
from extensions.steering.ui import actions
from extensions.steering.usecases import Fitting, Strength, Workspace, build, distill, evaluate, generate, interchange, presets
from extensions.steering.usecases.mix import describe_items, mix_items, parse_mix
from tests.test_presets import _byte_tokenizer, tiny_llama


@pytest.fixture
def store(tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "Shipped.yaml").write_text(Recipe("Shipped", ["Calm"], ["Angry"], method="mean", layers=[1]).to_yaml())
    return PresetStore(tmp_path / "presets", shipped=shipped)


def no_model():
    raise AssertionError("the model was loaded before the input was checked")


@pytest.fixture
def unloaded(store):
    """A workspace whose model must not be asked for."""
    return Workspace(store, no_model, overwrite_hint="pass --overwrite", system_hint="give one with --system")


# -- the strength, read once -------------------------------------------------------------------------
@pytest.mark.parametrize("value, dose, expected", [
    (None, None, (None, None)),  # the method's default, decided by the recipe
    ("auto", None, (1.0, True)),
    ("auto", 2, (2.0, True)),
    (None, 1.5, (1.5, True)),  # a dose alone asks for calibration
    (0.3, None, (0.3, False)),
])
def test_a_strength_resolves_to_a_value_and_whether_it_is_calibrated(value, dose, expected):
    assert Strength(value, dose).resolve() == expected


@pytest.mark.parametrize("value, dose, message", [
    (0.3, 2, "the dose is relative to a calibrated strength"),
    ("auto", 0, "the dose must be above 0"),
    (math.nan, None, "finite"),
])
def test_a_strength_that_does_not_read_is_refused(value, dose, message):
    with pytest.raises(ValueError, match=message):
        Strength(value, dose).resolve()


@pytest.mark.parametrize("text, dose, method, expected", [
    ("", 2, "mean", (2.0, True)),  # empty: mean's default is calibrated, at the form's dose
    ("", 2, "actadd", (None, None)),  # actadd's default is a fixed number: the dose field does not count
    (" AUTO ", 0.5, "actadd", (0.5, True)),
    ("0.3", 2, "mean", (0.3, False)),  # a number is fixed; the always-filled dose field is not an error here
    ("", 0, "actadd", (None, None)),
])
def test_the_tabs_form_is_read_with_the_same_rules(text, dose, method, expected):
    assert Strength.from_form(text, dose, method).resolve() == expected


@pytest.mark.parametrize("flags, form", [
    ([], ("", 1.0, True)),
    (["--strength", "auto", "--dose", "2"], ("auto", 2, True)),
    (["--dose", "1.5"], ("auto", 1.5, True)),
    (["--strength", "0.3", "--layer", "6"], ("0.3", 1.0, False)),
    (["--method", "actadd", "--layer", "6"], ("", 1.0, False)),
])
def test_the_command_line_and_the_tab_make_the_same_recipe(flags, form):
    args = make_parser().parse_args(["build", "x", "--positive", "Love", "--negative", "Hate", *flags])
    from_cli = build.BuildRequest(args.name, args.positive, args.negative, args.method, args.layer, Strength(args.strength, args.dose),
                                  args.mode, args.reading, not args.no_expand).recipe()
    strength, dose, auto = form
    from_tab = actions.make_recipe("Love", "Hate", args.method, 6, strength, "auto", auto, dose, name="x")
    assert from_cli.to_dict() == from_tab.to_dict()


# -- checks said before the model loads ----------------------------------------------------------------
def test_a_name_taken_is_refused_with_the_interfaces_words(unloaded, store):
    store.save(Recipe("Mine", ["a"], ["b"], method="mean", layers=[1], strength=0.3))
    with pytest.raises(PresetError, match="'Mine' exists; choose another name or pass --overwrite"):
        unloaded.check_new_name("Mine", False)
    assert unloaded.check_new_name("Mine", True) == "Mine"
    with pytest.raises(PresetError, match="'Shipped' exists; choose another name$"):
        unloaded.check_new_name("Shipped", True)  # a shipped preset is never replaced
    with pytest.raises(PresetError, match="invalid preset name"):
        unloaded.check_new_name("../x", True)


def test_export_import_evaluate_and_distill_refuse_bad_input_before_the_model_loads(unloaded, store, tmp_path):
    with pytest.raises(PresetError, match="no preset named 'nope'"):
        interchange.export(unloaded, "nope", tmp_path / "out.gguf")
    with pytest.raises(PresetError, match="ends in .gguf"):
        interchange.export(unloaded, "Shipped", tmp_path / "out.txt")
    with pytest.raises(PresetError, match="no such file"):
        interchange.import_file(unloaded, tmp_path / "missing.gguf", "new")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ValueError):
        interchange.import_file(unloaded, tmp_path / "bad.gguf", "new")
    with pytest.raises(PresetError, match="or pass --overwrite"):
        store.save(Recipe("Taken", ["a"], ["b"], method="mean", layers=[1], strength=0.3))
        interchange.import_file(unloaded, tmp_path / "bad.gguf", "Taken")
    plain = evaluate.Candidate("plain", store.recipe("Shipped"))
    with pytest.raises(ValueError, match="plain: the recipe names no system prompt it stands in for .*; give one with --system"):
        evaluate.evaluate(unloaded, evaluate.EvaluateRequest([plain]))
    with pytest.raises(PresetError, match="exists"):
        distill.distill(unloaded, distill.DistillRequest("Shipped", "Be kind."), Fitting())


def test_a_generate_request_is_checked_as_the_tab_gives_it():
    request = generate.Request.check("Hi", 7, 5, 1)
    assert (request.seed, request.sampling.max_new_tokens, request.chat, request.seeds) == (7, 5, True, range(7, 8))
    for fields, message in ((("  ", 0, 5, False), "the prompt is empty"), (("Hi", -1, 5, False), "seed"),
                            (("Hi", 0, 0, False), "max new tokens")):
        with pytest.raises(ValueError, match=message):
            generate.Request.check(*fields)


# -- presets ---------------------------------------------------------------------------------------
def test_listing_says_a_damaged_file_and_strangers_text_in_one_line(store):
    store.save(Recipe("Mine", ["a"], ["b"], method="mean", layers=[1], strength="auto", description="two\nlines"))
    (store.folder / "Broken.yaml").write_text("positive: [unclosed\n")
    listed = {entry.name: entry for entry in presets.listing(store)}
    assert listed["Shipped"].shipped and not listed["Mine"].shipped
    assert listed["Mine"].summary == "mean, layers [1], strength auto × 1, mode all" and "\n" not in listed["Mine"].description
    assert listed["Broken"].summary.startswith("damaged: ")
    assert presets.names(store) == [entry.name for entry in presets.listing(store)]


def test_show_rename_delete(store):
    store.save(Recipe("Mine", ["a"], ["b"], method="mean", layers=[1], strength=0.3))
    shown = presets.show(store, "Mine")
    assert not shown.shipped and shown.path.name == "Mine.yaml" and "strength: 0.3" in shown.yaml and shown.cached == []
    assert presets.show(store, "Shipped").shipped
    assert presets.rename(store, "Mine", "Yours").name == "Yours.yaml"
    presets.delete(store, "Yours")
    for attempt in (lambda: presets.show(store, "../x"), lambda: presets.rename(store, "Shipped", "x"), lambda: presets.delete(store, "Yours")):
        with pytest.raises(PresetError):
            attempt()


# -- the mix ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "formula, expected",
    [
        ("", []),
        ("Love", [("Love", 1.0)]),
        ("Love - Hate + 0.5 × dogs", [("Love", 1.0), ("Hate", -1.0), ("dogs", 0.5)]),
        ('"Love" − "Hate"', [("Love", 1.0), ("Hate", -1.0)]),
        ("-2*calm + well-being", [("calm", -2.0), ("well-being", 1.0)]),
        ("'2024 mood' - 1e-1 × x", [("2024 mood", 1.0), ("x", -0.1)]),
        ("Love - 0.5 × Love", [("Love", 1.0), ("Love", -0.5)]),
    ],
)
def test_parse_mix(formula, expected):
    assert parse_mix(formula) == expected


@pytest.mark.parametrize("formula, message", [
    ("nan × Love", "finite"), ("inf*Love", "finite"), ("Love + ../evil", "invalid preset name"), ("Love + ", "cannot read the term"),
])
def test_parse_mix_refuses_bad_terms(formula, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(formula)


def test_a_mix_is_weights_times_saved_strengths(store):
    store.save(Recipe("Love", ["a"], ["b"], method="mean", layers=[1], strength=0.4))
    items = mix_items(store, "Love - 0.5 × Shipped + Love")
    assert items == [("Love", 0.8), ("Shipped", -0.5)]  # Shipped: a calibrated preset, dose 1
    assert describe_items(items) == "Love × 0.8, Shipped × -0.5" and describe_items([]) == "nothing"


# -- the Python path end to end, on a tiny random model ----------------------------------------------
def test_build_save_show_generate_and_compare_from_python(store):
    ctx = ModelContext.of(tiny_llama(), _byte_tokenizer())
    ws = Workspace(store, lambda: ctx)
    request = build.BuildRequest("tiny", ["Love"], ["Hate"], method="actadd", layers=[1], strength=Strength(2.0))
    built = build.build(ws, request)
    assert built.recipe.strength == 2.0 and not built.recipe.calibrated and built.vector.layers == [1]
    assert built.plain().startswith("preset tiny: toward “Love”, away from “Hate”") and "actadd" in built.summary()
    path = build.save(ws, built)
    shown = presets.show(store, "tiny")
    assert shown.path == path and len(shown.cached) == 1 and shown.cached[0].startswith("cached for model ")
    texts = generate.generate(ws, generate.Request("Hello there", seed=3, sampling=generate.Sampling(4, 0.7, 0.9), n=2),
                              [(store.recipe("tiny"), None)], compare=True)
    rows = [(c.steered, c.seed) for c in texts]
    assert rows == [(True, 3), (False, 3), (True, 4), (False, 4)]
    compared = generate.compare(ws, [built.steer()], generate.Request("Hello there", seed=3, sampling=generate.Sampling(4, 0.7, 0.9)))
    again = generate.compare(ws, [generate.steer_for(ws, "tiny")], generate.Request("Hello there", seed=3, sampling=generate.Sampling(4, 0.7, 0.9)))
    assert compared == again  # the saved preset steers as the vector built
    with pytest.raises(PresetError, match="exists"):
        build.save(ws, built)
