"""The plain words the tab and the command line show first (engine/wording.py); the method's terms
(dose, calibrated, mode) are only in the details under "Advanced"."""
from __future__ import annotations

import re

from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.wording import plain_recipe, plain_summary, shown, strength_name

TERMS = re.compile(r"\b(dose|calibrat\w*|mode|actadd|pca|mean|expan\w*|nats?|KL)\b", re.IGNORECASE)


def test_a_measured_preset_before_and_after_it_is_built():
    recipe = Recipe("happy", ["Happy"], ["Sad"], method="mean", layers="auto", strength="auto")
    before = plain_recipe(recipe)
    assert before == "toward “Happy”, away from “Sad”: strength 1 (1 = measured for this model), the layer picked by measuring each model"
    after = plain_summary(recipe, [24], measured=True)
    assert after.endswith("layer 24 (picked by measuring this model)")
    assert not TERMS.search(before + after)


def test_a_fixed_preset_names_its_layers_and_strength():
    recipe = Recipe("kind", ["Kind"], ["Cruel"], method="actadd", layers=[6, 8], strength=4)
    assert plain_recipe(recipe) == "toward “Kind”, away from “Cruel”: strength 4, layers 6, 8"


def test_strength_axis_and_numbers():
    assert strength_name(True) == "strength (1 = measured for this model)" and strength_name(False) == "strength"
    assert shown(-2e-15) == "0" and shown(0.1 + 0.2) == "0.3"


def test_an_imported_preset_says_where_it_came_from():
    from extensions.steering.engine.methods.imported import ImportedVector

    recipe = Recipe("pirate", method="imported", layers=[2], strength=1.0, mode="all", options=ImportedVector("pirate.safetensors", 576, 30))
    assert plain_recipe(recipe) == "a vector imported from a control-vector file: strength 1, layer 2"
