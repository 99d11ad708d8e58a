"""The Steering tab in a real headless browser (Chromium through Playwright), on gradio 4.37.

Runs in the UI environment (.ci/ui-setup.sh makes it: gradio 4.37, Playwright, Debian's Chromium);
elsewhere it is skipped with the reason. The app is the standalone page on the default model, bound
to 127.0.0.1 on a free port. Screenshots go to tests/ui/artifacts/ (not committed).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the tab targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")
CHROMIUM = os.environ.get("STEERING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set STEERING_CHROMIUM)", allow_module_level=True)

from extensions.steering.engine.presets import PresetStore  # noqa: E402
from extensions.steering.engine.recipe import Recipe  # noqa: E402
from extensions.steering.runtime import SteeringRuntime  # noqa: E402
from extensions.steering.ui import actions, sweep  # noqa: E402
from extensions.steering.ui.standalone import serve  # noqa: E402
from extensions.steering.ui.steering_tab import WORKING  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MODEL_WORK_MS = 300_000  # generating on a busy 2-core CPU can be slow
TOKENS = "6"
S = Recipe("x", ["a"], ["b"], method=actions.DEFAULT_METHOD).strength  # the form's default: calibrated, dose 1
# Every text the message line shows from now on, so that a result equal to the previous one is still seen.
WATCH_MESSAGE = """() => {
  const line = document.querySelector('#steering-message');
  window.steeringSeen = [];
  if (window.steeringWatch) window.steeringWatch.disconnect();
  window.steeringWatch = new MutationObserver(() => window.steeringSeen.push(line.innerText));
  window.steeringWatch.observe(line, {subtree: true, childList: true, characterData: true});
}"""
MESSAGE_DONE = """(working) => window.steeringSeen.some(t => t.includes(working))
  && !document.querySelector('#steering-message').innerText.includes(working)"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("steering-ui")
    return root / "presets", root / "state"


@pytest.fixture(scope="module")
def app_url(default_model, folders):
    presets, state = folders
    runtime = SteeringRuntime(PresetStore(presets, shipped=None), state, model_source=lambda: default_model,
                              loader_name=lambda: "Transformers")
    port = free_port()
    app = serve(runtime, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


# Open every closed accordion ("Advanced", "GGUF ...") around an element, as a user would to reach it.
REVEAL = """(selector) => {
  for (let node = document.querySelector(selector); node; node = node.parentElement) {
    const toggle = node.previousElementSibling;
    if (node.style?.display === 'none' && toggle?.classList.contains('label-wrap')) toggle.click();
  }
}"""


class Tab:
    """The Steering page, driven by element ids."""

    def __init__(self, page):
        self.page = page

    def reveal(self, elem_id: str) -> None:
        self.page.evaluate(REVEAL, f"#{elem_id}")

    def text(self, elem_id: str) -> str:
        found = self.page.locator(f"#{elem_id}")
        return (found.inner_text() if found.is_visible() else found.text_content()).strip()  # or under a closed accordion

    def recipe(self) -> str:
        """The chosen preset's file (under its Advanced fold, opened: the editor draws only what is shown)."""
        self.reveal("steering-recipe")
        return self.page.locator("#steering-recipe").inner_text().strip()

    def fill(self, elem_id: str, value: str) -> None:
        self.reveal(elem_id)
        self.page.locator(f"#{elem_id} textarea, #{elem_id} input:not([type=range])").first.fill(value)

    def set_number(self, elem_id: str, value: str) -> None:
        self.reveal(elem_id)
        box = self.page.locator(f"#{elem_id} input[type=number]")
        box.fill(value)
        box.press("Enter")
        box.blur()  # a slider clamps its number box to its bounds on blur

    def check(self, elem_id: str, on: bool) -> None:
        self.reveal(elem_id)
        self.page.locator(f"#{elem_id} input[type=checkbox]").set_checked(on)

    def choose(self, elem_id: str, option: str) -> None:
        self.reveal(elem_id)
        self.page.locator(f"#{elem_id} input").click()
        self.page.locator("ul.options li", has_text=option).first.click()

    def radio(self, elem_id: str, option: str) -> None:
        self.page.locator(f"#{elem_id} label", has_text=option).click()

    def open(self, title: str) -> None:
        self.page.get_by_role("tab", name=title).click()

    def press(self, elem_id: str, expect: str, timeout: int = MODEL_WORK_MS) -> str:
        self.reveal(elem_id)
        return self.after(self.page.locator(f"#{elem_id}").click, expect, timeout)

    def after(self, do, expect: str, timeout: int = MODEL_WORK_MS) -> str:
        """Do something and wait for the action's message (after its "working" line); it must contain ``expect``."""
        self.page.evaluate(WATCH_MESSAGE)
        do()
        self.page.wait_for_function(MESSAGE_DONE, arg=WORKING, timeout=timeout)
        message = self.text("steering-message")
        assert expect in message
        return message

    def value(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id} textarea").input_value()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def tab(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            ("http://127.0.0.1", "data:", "blob:")) else route.abort())  # no network: keep the page local
        page.goto(app_url, wait_until="domcontentloaded")
        page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
        yield Tab(page)
        browser.close()


# -- what works ----------------------------------------------------------------------------------
def test_status_and_layer_bounds(tab):
    assert "Model: SmolLM2-135M-Instruct.Q4_1 (30 layers" in tab.text("steering-status")  # the folder loaded, not its class
    slider = tab.page.locator("#steering-layer input[type=range]")
    assert slider.get_attribute("max") == "29" and slider.input_value() == str(actions.default_layer(30))


def test_the_layer_is_given_with_auto_off_and_the_strength_always(tab):
    layer = tab.page.locator("#steering-layer input[type=number]")
    assert layer.is_disabled() and not tab.page.locator("#steering-strength textarea").is_disabled()
    tab.check("steering-auto", False)
    layer.wait_for(state="visible")
    tab.page.wait_for_function("() => !document.querySelector('#steering-layer input[type=number]').disabled")
    assert not tab.page.locator("#steering-strength textarea").is_disabled()


def test_layer_slider_stops_at_the_last_layer(tab):
    """The slider cannot leave the model's layers (out-of-range layers through the API: see below)."""
    tab.set_number("steering-layer", "99")
    assert tab.page.locator("#steering-layer input[type=number]").input_value() == "29"
    tab.set_number("steering-layer", "-3")
    assert tab.page.locator("#steering-layer input[type=number]").input_value() == "0"
    tab.set_number("steering-layer", str(actions.default_layer(30)))
    tab.check("steering-auto", True)  # the form's default again, for the tests below


def test_build_and_try(tab):
    message = tab.press("steering-build", "built")
    assert "toward “Love”, away from “Hate”" in message and "built, not saved" in tab.text("steering-built")
    assert actions.DEFAULT_METHOD in tab.text("steering-built-details")
    tab.fill("steering-try-prompt", "I hate you because")
    tab.set_number("steering-try-tokens", TOKENS)
    tab.press("steering-try", "tried seed 0")
    steered, unsteered = tab.value("steering-steered"), tab.value("steering-unsteered")
    assert steered and unsteered and steered != unsteered
    advanced = tab.page.locator("#steering-advanced .label-wrap")
    if "open" in (advanced.get_attribute("class") or ""):
        advanced.click()  # the first screen as a newcomer sees it (docs/tab_build.png)
    tab.shot("build-and-try")


def test_the_layer_shown_is_the_layer_built(tab):
    """After Auto picked a layer, the Layer slider shows it and the Sweep offers it and its neighbours
    (they showed the form's default, 6, and a sweep then swept a layer the vector was not built for)."""
    measured = int(re.search(r"layer (\d+) chosen by measurement", tab.text("steering-built-details"))[1])
    assert f"layer {measured} (picked by measuring this model)" in tab.text("steering-built")
    assert tab.page.locator("#steering-layer input[type=number]").input_value() == str(measured)
    tab.open("Sweep")
    assert tab.page.locator("#steering-sweep-layers textarea").input_value() == actions.sweep_layers_around(measured, 30)
    assert str(measured) in actions.sweep_layers_around(measured, 30).split(", ")
    tab.open("Build & try")


def test_placeholders_fit_and_buttons_are_small(tab):
    """No placeholder is cut off; the buttons beside a field are sized as the webui's, not boxes the
    width of the row."""
    fits = """(el) => {
      const style = getComputedStyle(el), pen = document.createElement('canvas').getContext('2d');
      pen.font = style.font;
      return pen.measureText(el.placeholder).width <= el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    }"""
    for title, elem_id in (("Sweep", "steering-sweep-strengths"), ("Sweep", "steering-topic"), ("Build & try", "steering-strength"),
                           ("Build & try", "steering-save-name"), ("Mixer", "steering-mix")):
        tab.open(title)
        tab.reveal(elem_id)
        assert tab.page.locator(f"#{elem_id} textarea").evaluate(fits), f"{elem_id}'s placeholder is cut off"
    tab.open("Presets")
    for elem_id in ("steering-load", "steering-delete", "steering-rename"):
        box = tab.page.locator(f"#{elem_id}").bounding_box()
        assert box["width"] < 200 and box["height"] < 50, (elem_id, box)
    tab.shot("presets-layout")
    tab.open("Build & try")


def test_tiny_sweep(tab):
    tab.open("Sweep")
    tab.fill("steering-sweep-strengths", "0, 2")  # multiples of the measured strength: the form built a calibrated vector
    tab.fill("steering-sweep-layers", "6")
    tab.set_number("steering-sweep-tokens", TOKENS)
    tab.press("steering-sweep", "swept 2 cell(s)")
    tab.page.locator("#steering-plot img").wait_for(timeout=30_000)
    grid = tab.page.locator("#steering-grid")
    grid.get_by_text("layer 6").first.wait_for()
    assert "strength" in grid.inner_text() and "dose" not in grid.inner_text()  # plain words: no "dose" outside Advanced
    for strength in ("0", "2"):  # a row per strength: its label, then "[effect] completion"
        assert re.search(rf"\n{strength}\n\t\n\[[+-]\d\.\d\d\] \S", grid.inner_text())
    tab.shot("sweep")


def test_save_rename_delete(tab, folders):
    presets, _ = folders
    tab.open("Build & try")  # a newcomer saves where they built
    tab.fill("steering-save-name", "Love")
    tab.press("steering-save", "saved Love")
    assert (presets / "Love.yaml").is_file() and list((presets / "tensors" / "Love").glob("*.safetensors"))
    tab.open("Presets")
    recipe = tab.recipe()  # the form's defaults: layer and strength measured for the model
    assert "positive:" in recipe and "strength: auto" in recipe and "layers: auto" in recipe and "expand: v1" in recipe
    tab.shot("presets")
    tab.fill("steering-rename-to", "Kind")
    tab.press("steering-rename", "renamed Love to Kind")
    assert (presets / "Kind.yaml").is_file() and not (presets / "Love.yaml").exists()
    tab.press("steering-load", "loaded Kind into Build")
    assert "preset Kind" in tab.text("steering-built") and "dose 1 (calibrated)" in tab.text("steering-built-details")
    assert tab.page.locator("#steering-auto input[type=checkbox]").is_checked()
    tab.press("steering-delete", "deleted Kind")
    assert not (presets / "Kind.yaml").exists() and files_under(presets) == {}


def test_a_loaded_preset_builds_and_saves_as_written(tab, folders):
    """A measured layer with a fixed strength (the command line's `build --strength 0.4`) loads into Build
    as Auto layer and 0.4, and building and saving it from the form writes that recipe again."""
    presets, _ = folders
    PresetStore(presets).save(Recipe("measured", positive=["Love"], negative=["Hate"], method="mean", layers=["auto"], strength=0.4, mode="all"))
    tab.open("Presets")
    tab.page.locator("#steering-refresh").click()
    tab.choose("steering-preset", "measured")
    tab.press("steering-load", "loaded measured into Build")
    tab.open("Build & try")
    assert tab.page.locator("#steering-auto input[type=checkbox]").is_checked() and tab.value("steering-strength") == "0.4"
    tab.press("steering-build", "built")
    assert "strength 0.4" in tab.text("steering-built") and "chosen by measurement" in tab.text("steering-built-details")
    tab.open("Build & try")  # a newcomer saves where they built
    tab.fill("steering-save-name", "measured-again")
    tab.press("steering-save", "saved measured-again")
    saved = (presets / "measured-again.yaml").read_text()
    assert "layers: auto" in saved and "strength: 0.4" in saved
    for name in ("measured", "measured-again"):
        PresetStore(presets).delete(name)
    tab.open("Build & try")
    tab.fill("steering-strength", "")  # the form's default and its draft again, for the tests below
    tab.press("steering-build", "built")


def test_export_and_import_a_gguf_control_vector(tab, folders):
    presets, _ = folders
    PresetStore(presets).save(Recipe("warm", positive=["Love"], negative=["Hate"], method="mean", layers=[6], strength=0.3, mode="all"))
    tab.open("Presets")
    tab.page.locator("#steering-refresh").click()
    tab.choose("steering-preset", "warm")
    tab.fill("steering-export-strength", "0.3")
    message = tab.press("steering-export", "wrote ")
    assert "warm at strength 0.3" in message and "--control-vector-scaled" in message
    link = tab.page.locator("#steering-exported a").first
    link.wait_for(timeout=30_000)
    written = Path(message.split("wrote ", 1)[1].split(":", 1)[0])
    assert written.is_file() and written.name == "warm.gguf"
    tab.page.locator("#steering-import-file input[type=file]").set_input_files(str(written))
    tab.page.wait_for_timeout(1000)  # the upload lands before the button is pressed
    tab.fill("steering-import-name", "love-gguf")
    tab.press("steering-import", "imported warm.gguf as love-gguf")
    assert (presets / "love-gguf.yaml").is_file() and (presets / "vectors" / "love-gguf.safetensors").is_file()
    assert "method: imported" in tab.recipe()
    tab.press("steering-import", "exists")  # the same name again: refused, visibly
    tab.press("steering-delete", "deleted love-gguf")
    assert not (presets / "vectors" / "love-gguf.safetensors").exists()
    PresetStore(presets).delete("warm")


def test_mixer_try_use_attach(tab, folders):
    presets, state = folders
    tab.open("Build & try")  # a newcomer saves where they built
    tab.fill("steering-save-name", "Love")
    tab.press("steering-save", "saved Love")
    tab.open("Mixer")
    tab.page.locator("#steering-refresh").click()
    tab.choose("steering-mix-preset", "Love")
    tab.fill("steering-mix-weight", "2")
    tab.press("steering-mix-add", "added Love")
    assert tab.value("steering-mix") == "2 × Love"
    tab.set_number("steering-mix-tokens", TOKENS)
    tab.press("steering-mix-try", "tried the mix")
    assert tab.value("steering-mix-steered") != tab.value("steering-mix-unsteered")
    tab.press("steering-mix-use", f"all chats now steered by: Love × {S * 2:g}")
    assert f"Active for all chats: Love ×{S * 2:g}" in tab.text("steering-status")
    tab.choose("steering-character", "Assistant")
    tab.press("steering-attach", "attached to Assistant")
    tab.shot("mixer")
    tab.press("steering-mix-off", "steering off")
    assert "Active for all chats: none" in tab.text("steering-status")


def test_the_dose_slider_sets_the_dose_built(tab):
    tab.open("Build & try")
    tab.set_number("steering-dose", "2")
    tab.press("steering-build", "built")
    assert "dose 2 (calibrated)" in tab.text("steering-built-details")
    tab.set_number("steering-dose", "1")


def test_a_sentence_pair_is_built_expanded_as_the_line_says(tab):
    tab.open("Build & try")
    assert "one sentence a side" in tab.text("steering-expand-why")  # the one line on expansion is on the page
    tab.fill("steering-positives", "I talk about weddings constantly")
    tab.fill("steering-negatives", "I do not talk about weddings constantly")
    tab.press("steering-build", "built")
    assert "expanded sentence-v1" in tab.text("steering-built-details") and "picked by measuring" in tab.text("steering-built")
    tab.fill("steering-positives", "Love")
    tab.fill("steering-negatives", "Hate")


# -- bad input: a visible message, nothing written ---------------------------------------------------
def build_input(field, value):
    def act(tab):
        tab.open("Build & try")
        defaults = {"steering-positives": "Love", "steering-negatives": "Hate"}
        for elem_id, text in defaults.items():
            tab.fill(elem_id, text)
        tab.fill("steering-strength", "")
        tab.fill(field, value)
        return "steering-build"
    return act


def try_input(field, value):
    def act(tab):
        tab.open("Build & try")
        tab.fill("steering-try-prompt", "I hate you because")
        tab.set_number("steering-try-tokens", TOKENS)
        tab.set_number("steering-try-seed", "0")
        (tab.set_number if field != "steering-try-prompt" else tab.fill)(field, value)
        return "steering-try"
    return act


def sweep_input(field, value, metric=None):
    def act(tab):
        tab.open("Sweep")
        tab.fill("steering-sweep-strengths", "0, 2")  # multiples of the measured strength: the form built a calibrated vector
        tab.fill("steering-sweep-layers", "6")
        tab.set_number("steering-sweep-samples", "1")
        tab.fill("steering-topic", "")
        tab.radio("steering-metric", metric or sweep.METRIC_SENTIMENT)
        (tab.set_number if field == "steering-sweep-samples" else tab.fill)(field, value)
        return "steering-sweep"
    return act


def presets_input(field, value, chosen=None):
    def act(tab):
        tab.open("Build & try" if field == "steering-save-name" else "Presets")
        tab.page.locator("#steering-refresh").click()
        if chosen:
            tab.choose("steering-preset", chosen)
        tab.fill(field, value)
        return {"steering-save-name": "steering-save", "steering-rename-to": "steering-rename"}[field]
    return act


def chosen_preset(name, button):
    def act(tab):
        tab.open("Presets")
        tab.page.locator("#steering-refresh").click()
        tab.choose("steering-preset", name)
        return button
    return act


def mixer_input(formula, weight=None):
    def act(tab):
        tab.open("Mixer")
        tab.fill("steering-mix", formula)
        if weight is not None:
            tab.page.locator("#steering-refresh").click()
            tab.choose("steering-mix-preset", "Love")
            tab.fill("steering-mix-weight", weight)
            return "steering-mix-add"
        return "steering-mix-use"
    return act


BAD_INPUTS = [
    ("empty positive prompts", build_input("steering-positives", ""), "at least one positive prompt"),
    ("empty negative prompts", build_input("steering-negatives", "  "), "at least one negative prompt"),
    ("a strength of NaN", build_input("steering-strength", "NaN"), "strength must be a finite number"),
    ("a strength that is not a number", build_input("steering-strength", "strong"), "strength must be a number"),
    ("empty try prompt", try_input("steering-try-prompt", ""), "the prompt is empty"),
    ("prompt too short for actadd", try_input("steering-try-prompt", "Hi"), "longer prompt"),
    ("seed left empty", try_input("steering-try-seed", ""), "seed is empty"),
    ("no new tokens", try_input("steering-try-tokens", "0"), "max new tokens must be between"),
    ("a strength of NaN in a sweep", sweep_input("steering-sweep-strengths", "0, NaN"), "finite"),
    ("sweep layer out of range", sweep_input("steering-sweep-layers", "99"), "between 0 and 29"),
    ("sweep layers not numbers", sweep_input("steering-sweep-layers", "six"), "must be a number"),
    ("topic metric without words", sweep_input("steering-topic", "", sweep.METRIC_TOPIC), "needs some words"),
    ("zero samples", sweep_input("steering-sweep-samples", "0"), "samples must be between"),
    ("save as ../evil", presets_input("steering-save-name", "../evil"), "invalid preset name"),
    ("save without a name", presets_input("steering-save-name", ""), "choose a name"),
    ("save over an existing preset", presets_input("steering-save-name", "Love"), "exists"),
    ("rename to ../evil", presets_input("steering-rename-to", "../evil", chosen="Love"), "invalid preset name"),
    ("damaged preset: load", chosen_preset("Broken", "steering-load"), "damaged YAML"),
    ("damaged preset: rename", presets_input("steering-rename-to", "Fixed", chosen="Broken"), "damaged YAML"),
    ("a weight of NaN in the mix", mixer_input("nan × Love"), "finite"),
    ("a preset name with ../ in the mix", mixer_input("Love + ../evil"), "invalid preset name"),
    ("an unknown preset in the mix", mixer_input("Nobody"), "no preset named"),
    ("mixer weight left empty", mixer_input("Love", weight=""), "weight is empty"),
    ("a mixer weight of NaN", mixer_input("Love", weight="nan"), "weight must be a finite number"),
]


@pytest.fixture(scope="module")
def with_presets(tab, folders):
    """A saved 'Love', a damaged 'Broken' and an actadd vector built in the tab."""
    presets, _ = folders
    tab.open("Build & try")
    tab.choose("steering-method", "actadd")
    tab.choose("steering-mode", "auto")
    tab.press("steering-build", "built, not saved yet")
    assert "actadd" in tab.text("steering-built-details")
    if not (presets / "Love.yaml").exists():
        tab.open("Build & try")
        tab.fill("steering-save-name", "Love")
        tab.press("steering-save", "saved Love")
    (presets / "Broken.yaml").write_text("positive: [unclosed\n", encoding="utf-8")
    return folders


@pytest.mark.parametrize("act, expect", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_visibly(tab, with_presets, act, expect):
    before = [files_under(folder) for folder in with_presets]
    button = act(tab)
    message = tab.press(button, expect)
    assert message.startswith("⚠")
    assert [files_under(folder) for folder in with_presets] == before
    assert not list(with_presets[0].parent.rglob("evil*"))


def test_damaged_preset_is_shown_as_a_warning(tab, with_presets):
    tab.open("Presets")
    tab.page.locator("#steering-refresh").click()

    def show(name: str, expect: str) -> None:  # choosing shows at once (an event only if the choice changes)
        tab.choose("steering-preset", name)
        tab.page.locator("#steering-message").get_by_text(expect).wait_for(timeout=60_000)

    if tab.page.locator("#steering-preset input").input_value() == "Love":
        show("Broken", "damaged YAML")
    show("Love", "showing Love")
    assert "positive:" in tab.recipe()
    show("Broken", "damaged YAML")
    assert tab.text("steering-message").startswith("⚠")
    assert "positive:" not in tab.recipe()  # no stale recipe
    tab.page.locator(".toast-body", has_text="damaged").first.wait_for()
    tab.shot("damaged-preset")
    assert "Traceback" not in tab.page.inner_text("body")


def test_nan_and_out_of_range_through_the_api(app_url, with_presets):
    """A browser's number boxes cannot hold NaN and its slider stops at the last layer; the HTTP API
    can send both, and is refused the same way."""
    from gradio_client import Client

    before = [files_under(folder) for folder in with_presets]
    client = Client(app_url, verbose=False)
    message, *_ = client.predict("Love", "Hate", "mean", 99, "", "auto", False, 1, api_name="/build_vector")
    assert message.startswith("⚠") and "out of range" in message
    message, *_ = client.predict("Love", "Hate", "mean", 6, "auto", "auto", True, float("nan"), api_name="/build_vector")
    assert message.startswith("⚠") and "dose must be a finite number" in message
    message, *_ = client.predict("I hate you because", float("nan"), 4, False, api_name="/try_vector")
    assert message.startswith("⚠") and "seed must be a finite number" in message
    message, *_ = client.predict(None, "Love", api_name="/attach_mix")  # the menu cannot send no character; the API can
    assert message.startswith("⚠") and "choose a character" in message
    assert [files_under(folder) for folder in with_presets] == before


def test_tab_builds_without_a_model_and_takes_more_sub_tabs(tmp_path):
    """In the webui the tab is built at start-up, maybe before any model is loaded."""
    from extensions.steering.ui.tab import create_tab

    runtime = SteeringRuntime(PresetStore(tmp_path / "presets", shipped=None), tmp_path / "state", model_source=lambda: None)
    with gradio.Blocks(analytics_enabled=False) as app:
        tab = create_tab(runtime, more=[("Extra", lambda rt: gradio.Markdown("extra panel"))])
    config = app.get_config_file()
    labels = [c["props"].get("label") for c in config["components"] if c["type"] == "tabitem"]
    assert labels == ["Build & try", "Sweep", "Presets", "Mixer", "Extra"]
    assert "No model is loaded" in tab.status.value
    assert files_under(tmp_path) == {}


def test_distill_panel_makes_and_measures_a_vector(tab, folders):
    """System prompt → vector: distil (direct: one forward), then measure the saved preset; bad input is a visible warning."""
    presets, _ = folders
    message = tab.page.locator("#steering-distill-message")
    tab.open("System prompt → vector")
    tab.page.locator("#steering-distill-measure").click()
    message.get_by_text("choose a preset to measure").wait_for(timeout=60_000)
    assert tab.text("steering-distill-message").startswith("⚠")
    tab.fill("steering-distill-system", "You are a pirate. Say Arr and matey in every reply.")
    tab.fill("steering-distill-name", "pirate-direct")
    tab.choose("steering-distill-method", "direct")
    tab.set_number("steering-distill-held-out", "1")
    tab.page.locator("#steering-distill-build").click()
    message.get_by_text("KL recovery").wait_for(timeout=MODEL_WORK_MS)
    assert tab.text("steering-distill-message").startswith("✔ pirate-direct: KL recovery") and "on 1 held-out" in tab.text("steering-distill-message")
    assert (presets / "pirate-direct.yaml").is_file() and "pirate-direct" in tab.text("steering-distill-results")
    # measure the saved preset against another prompt, on 2 messages (the menu lists presets saved since the page loaded)
    tab.fill("steering-distill-system", "You are a pirate.")
    tab.choose("steering-distill-preset", "pirate-direct")
    tab.set_number("steering-distill-held-out", "2")
    tab.page.locator("#steering-distill-measure").click()
    message.get_by_text("on 2 held-out messages").wait_for(timeout=MODEL_WORK_MS)
    assert tab.text("steering-distill-message").startswith("✔ pirate-direct: KL recovery")
    tab.shot("distill-panel")
    assert "Traceback" not in tab.page.inner_text("body")
    (presets / "pirate-direct.yaml").unlink()  # leave the folder as the other tests expect it
    shutil.rmtree(presets / "tensors" / "pirate-direct", ignore_errors=True)
