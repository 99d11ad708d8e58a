"""The Presets menu and the tab's message line in a real headless browser, on gradio 4.37. Presets are
read from their files, so the page runs without a model (quick). Runs in the UI environment
(.ci/ui-setup.sh); skipped elsewhere.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the tab targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")

from test_browser import CHROMIUM, CHROMIUM_ARGS, Tab, free_port  # noqa: E402  (skips this module as it skips itself)

from extensions.steering.engine.presets import PresetStore  # noqa: E402
from extensions.steering.engine.recipe import Recipe  # noqa: E402
from extensions.steering.runtime import SteeringRuntime  # noqa: E402
from extensions.steering.ui.standalone import serve  # noqa: E402

STEERED = "all chats now steered by: happy"


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    root = tmp_path_factory.mktemp("steering-presets")
    store = PresetStore(root / "presets", shipped=None)
    for name, toward in (("happy", "Happy"), ("love", "Love")):
        store.save(Recipe(name, positive=[toward], negative=["Sad"], method="mean", layers=[3], strength=0.3, mode="all"))
    port = free_port()
    app = serve(SteeringRuntime(store, root / "state", model_source=lambda: None), "127.0.0.1", port, block=False)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            ("http://127.0.0.1", "data:", "blob:")) else route.abort())  # no network: keep the page local
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.locator("#steering-status").get_by_text("No model is loaded").wait_for(timeout=60_000)
        yield Tab(page)
        browser.close()
    app.close()


def use_happy_in_all_chats(tab: Tab) -> None:
    tab.open("Build & try")
    tab.fill("steering-save-name", "happy")
    tab.press("steering-use", STEERED, timeout=60_000)


def test_choosing_a_preset_replaces_an_earlier_actions_message(tab):
    use_happy_in_all_chats(tab)
    tab.open("Presets")
    tab.choose("steering-preset", "love")
    tab.page.locator("#steering-message").get_by_text("showing love").wait_for(timeout=30_000)
    assert STEERED not in tab.text("steering-message")
    assert "toward “Love”" in tab.text("steering-preset-plain")


def test_choosing_the_preset_the_menu_holds_clears_it(tab):
    """The same choice again is no change to the menu (gradio sends no event): the message still goes."""
    use_happy_in_all_chats(tab)
    tab.open("Presets")
    assert tab.page.locator("#steering-preset input").input_value() == "love"
    tab.choose("steering-preset", "love")
    tab.page.wait_for_function("() => !document.querySelector('#steering-message').innerText.includes('all chats now')",
                               timeout=30_000)
    assert "toward “Love”" in tab.text("steering-preset-plain")
    tab.choose("steering-preset", "happy")
    tab.page.locator("#steering-message").get_by_text("showing happy").wait_for(timeout=30_000)
