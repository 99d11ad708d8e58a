"""The per-chat panel in a real headless browser, as a user drives it, on gradio 4.37.

The page is a model of the webui's (tests/ui/chat_page.py): the extension is loaded the webui's way
and its ui() builds the Steering tab and the panel in the chat controls; Send and Regenerate run the
host's chat path on the embedded model, greedy, so a reply shows whether and how it was steered.
The characters Alice and Bob have `love` and `kind` attached. Runs in the UI environment
(.ci/ui-setup.sh); skipped elsewhere. Tests run in file order on one page (a user's session).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the panel targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")

import chat_page  # noqa: E402
from browsing import drag_slider  # noqa: E402
from chat_page import CHAT_ID, PROMPT, host, shared  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (skips this module as it skips itself)

ARTIFACTS = Path(__file__).parent / "artifacts"
REPLY_MS = 300_000  # generating on a busy 2-core CPU can be slow
IDLE_SECONDS = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy two-core machine two threads spin and run 5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def webui(tmp_path_factory, default_model):
    """The page of a webui started without a model (one is loaded later from the Model tab)."""
    with chat_page.served(tmp_path_factory.mktemp("webui") / "user_data", default_model, loaded=False) as page:
        yield page


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def runtime():
    return host.state["steering"][2].RUNTIME


def unsteered_reply(page, character="Alice", mode="chat"):
    """The reply the webui gives without the extension (same prompt, greedy)."""
    saved = dict(host.state)
    host.unload_extensions()
    try:
        state = chat_page.chat_state(mode, character, CHAT_ID, {"internal": [], "visible": [], "metadata": {}})
        for history in host.generate_chat_reply(PROMPT, state):
            pass
        return history["internal"][-1][1]
    finally:
        host.state.update(saved)


class User:
    """One browser tab on the page, driven like a user (clicks, drags, reloads)."""

    def __init__(self, page, webui):
        self.page, self.webui = page, webui
        self.joins: list[str] = []
        page.on("request", lambda request: self.joins.append(request.url) if "/queue/join" in request.url else None)

    def open(self):
        self.page.goto(f"http://127.0.0.1:{self.webui.port}/", wait_until="domcontentloaded")
        self.page.wait_for_function("() => document.querySelector('#steering-chat-status')?.innerText.trim()", timeout=60_000)
        self.settle()
        return self

    def settle(self, quiet_ms: int = 1500, timeout_s: float = 60):
        """Wait until no event has started for ``quiet_ms`` (what a page does by itself on load)."""
        deadline = time.monotonic() + timeout_s
        seen = len(self.joins)
        while time.monotonic() < deadline:
            self.page.wait_for_timeout(quiet_ms)
            if len(self.joins) == seen:
                return
            seen = len(self.joins)
        raise AssertionError(f"the page never settled: {len(self.joins)} events")

    def tab(self, title: str):
        self.page.get_by_role("tab", name=title).click()

    def switch(self) -> bool:
        return self.page.locator("#steering-chat-enabled input[type=checkbox]").is_checked()

    def click_switch(self):
        self.page.locator("#steering-chat-enabled input[type=checkbox]").click()

    def status(self) -> str:
        return self.page.locator("#steering-chat-status").inner_text()

    def wait_status(self, text: str, timeout: int = 60_000):
        self.page.locator("#steering-chat-status").get_by_text(text, exact=False).first.wait_for(timeout=timeout)

    def slider_label(self, index: int = 0) -> str:
        return self.page.locator(f"#steering-chat-strength-{index} label").first.inner_text()

    def strength(self, index: int = 0) -> float:
        return float(self.page.locator(f"#steering-chat-strength-{index} input[type=number]").input_value())

    def drag(self, index: int, fraction: float):
        drag_slider(self.page, f"#steering-chat-strength-{index}", fraction)

    def reply(self, button: str) -> str:
        """Click Send or Regenerate and wait for the reply box to show the new reply."""
        number = len(self.webui.replies) + 1
        self.tab("Chat")
        self.page.locator(f"#{button}").click()
        box = self.page.locator("#reply textarea")
        self.page.wait_for_function("([el, n]) => el.value.startsWith(`#${n}:`)", arg=[box.element_handle(), number],
                                    timeout=REPLY_MS)
        return box.input_value().split(": ", 1)[1]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def new_user(browser, webui) -> User:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        ("http://127.0.0.1", "data:", "blob:")) else route.abort())  # no network: keep the page local
    return User(page, webui)


@pytest.fixture(scope="module")
def user(browser, webui):
    return new_user(browser, webui).open()


def chats_json(webui) -> dict:
    path = shared.user_data_dir / "steering" / "chats.json"
    return json.loads(path.read_text(encoding="utf-8"))["chats"] if path.exists() else {}  # format 2: {"format": 2, "chats": {...}}


# -- a model loaded after the page opened -------------------------------------------------------------
def test_tab_and_panel_follow_a_model_loaded_later(user):
    assert "No model is loaded" in user.status()
    user.tab("Steering")
    user.page.locator("#steering-status").get_by_text("No model is loaded").wait_for(timeout=30_000)
    user.tab("Model")
    user.page.locator("#load-model").click()
    user.page.locator("#model-status").get_by_text("Successfully loaded").wait_for(timeout=60_000)
    user.tab("Steering")  # opening the tab reads the model again
    user.page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
    assert user.page.locator("#steering-layer input[type=range]").get_attribute("max") == "29"
    user.tab("Chat")  # and so does opening the chat tab for the panel
    user.page.wait_for_function("() => !document.querySelector('#steering-chat-status').innerText.includes('No model')",
                                timeout=60_000)
    assert user.switch() and user.slider_label().startswith("love")
    user.settle()


# -- where the panel is and how it reads -------------------------------------------------------------
def test_the_panel_is_near_the_top_of_the_sidebar_and_its_labels_fit(user):
    """Right after 'Start reply with', above the long list of tools and the mode; a slider's name is the
    preset's alone, its source, default and fixed range under it, each on one line at the sidebar's 260 px
    beside the number box (in a 1280-wide window)."""
    panel = user.page.locator("#steering-chat-panel").bounding_box()
    for below in ("#tools-group", "#chat-mode"):
        assert panel["y"] < user.page.locator(below).bounding_box()["y"], f"the panel is below {below}"
    name = user.page.locator("#steering-chat-strength-0 [data-testid=block-info]").first
    assert name.inner_text() == "love"
    line = float(name.evaluate("(el) => parseFloat(getComputedStyle(el).lineHeight) || parseFloat(getComputedStyle(el).fontSize) * 1.5"))
    assert name.bounding_box()["height"] < 2 * line, "the slider's name wraps"
    assert "character: 0.35 · ±1.2" in user.slider_label()
    info = user.page.locator("#steering-chat-strength-0 label").get_by_text("character: 0.35 · ±1.2")
    line = float(info.evaluate("(el) => parseFloat(getComputedStyle(el).lineHeight)"))
    assert info.bounding_box()["height"] < 2 * line, "the slider's info line wraps"
    user.page.locator("#steering-chat-panel").screenshot(path=str(artifact("chat-panel.png")))


def test_the_slider_range_is_fixed_and_numbers_are_round(user, webui):
    """Dragged to the end the slider stays -1.2 … 1.2 (it once widened to ±9 there); its centre is 0
    exactly, and the status says strength 0 (it once said ×-2e-15)."""
    track = user.page.locator("#steering-chat-strength-0 input[type=range]")
    bounds = track.get_attribute("min"), track.get_attribute("max"), track.get_attribute("step")
    assert bounds == ("-1.2", "1.2", "0.01")
    user.drag(0, 1.0)
    user.wait_status("love ×1.2")
    user.page.wait_for_timeout(1000)
    assert (track.get_attribute("min"), track.get_attribute("max"), track.get_attribute("step")) == bounds
    assert user.strength(0) == 1.2 and chats_json(webui)[f"chat/Alice/{CHAT_ID}"]["strengths"] == {"love": 1.2}
    user.drag(0, 0.5)
    user.wait_status("at strength 0")
    assert user.strength(0) == 0 and "e-" not in user.status()
    user.drag(0, 0.85)  # 85 % of the track: 0.85 × 2.4 − 1.2 = 0.84, give or take a step of the mouse
    chosen = user.strength(0)
    assert abs(chosen - 0.84) <= 0.03 and f"{chosen:g}" == f"{round(chosen, 2):g}"  # on a step, no float tail
    user.wait_status(f"love ×{chosen:g}")
    user.settle()


# -- the switch: untick, regenerate, reload --------------------------------------------------------
def test_unticking_the_switch_unsteers_the_next_reply_and_survives_a_reload(user, webui):
    plain = unsteered_reply(webui)
    steered = user.reply("Generate")
    assert steered != plain, "the attached preset did not steer the first reply"
    assert user.switch()
    user.click_switch()
    user.wait_status("switched off")
    assert not user.switch()  # it stays off (nothing reloads the panel behind the user's back)
    assert chats_json(webui)[f"chat/Alice/{CHAT_ID}"]["enabled"] is False
    assert user.reply("Regenerate") == plain
    user.page.reload(wait_until="domcontentloaded")
    user.wait_status("switched off")
    assert not user.switch()
    user.click_switch()  # on again
    user.wait_status("Steering this chat")
    assert user.switch() and chats_json(webui).get(f"chat/Alice/{CHAT_ID}", {}).get("enabled", True) is True
    assert user.reply("Regenerate") == steered


# -- a strength slider: drag, regenerate, reload ---------------------------------------------------
def test_a_dragged_strength_sticks_and_is_used_by_the_next_reply(user, webui):
    plain = unsteered_reply(webui)
    user.drag(0, 0.5)  # the middle of -limit..limit
    user.wait_status("strength 0")
    assert user.strength(0) == 0
    assert chats_json(webui)[f"chat/Alice/{CHAT_ID}"]["strengths"] == {"love": 0.0}
    assert user.reply("Regenerate") == plain  # strength 0: exactly the unsteered reply
    user.drag(0, 0.8)
    chosen = user.strength(0)
    assert chosen > 0.35
    user.page.wait_for_function(
        "(v) => document.querySelector('#steering-chat-status').innerText.includes(`love ×${v}`)", arg=f"{chosen:g}",
        timeout=60_000)
    stored = chats_json(webui)[f"chat/Alice/{CHAT_ID}"]["strengths"]["love"]
    assert abs(stored - chosen) < 1e-9
    assert user.reply("Regenerate") != plain
    user.page.reload(wait_until="domcontentloaded")
    user.page.locator("#steering-chat-strength-0").wait_for(timeout=60_000)
    user.page.wait_for_function(
        "(v) => Number(document.querySelector('#steering-chat-strength-0 input[type=number]').value) === v",
        arg=chosen, timeout=60_000)


# -- another character: its own presets ------------------------------------------------------------
def test_switching_characters_shows_that_characters_presets(user):
    user.tab("Character")
    user.page.locator("#character-menu input").click()
    user.page.locator("ul.options li", has_text="Bob").first.click()
    user.tab("Chat")
    user.page.wait_for_function(
        "() => (document.querySelector('#steering-chat-strength-0 label') || {}).innerText?.startsWith('kind')",
        timeout=60_000)
    assert user.switch()  # Bob's chat was never switched off
    assert "kind" in user.status() and "love" not in user.status()
    user.tab("Character")
    user.page.locator("#character-menu input").click()
    user.page.locator("ul.options li", has_text="Alice").first.click()
    user.tab("Chat")
    user.page.wait_for_function(
        "() => (document.querySelector('#steering-chat-strength-0 label') || {}).innerText?.startsWith('love')",
        timeout=60_000)


# -- an idle page ----------------------------------------------------------------------------------
def test_an_idle_page_makes_no_extension_events(browser, webui):
    """With the Steering tab opened once and the chat panel showing, nothing is clicked for 10 s: the
    server sees no event at all (before the fix, model_status.change re-fired ~33 times a second)."""
    rt = runtime()
    calls = []
    for name in ("chat_view", "status_line"):
        original = getattr(type(rt), name)
        setattr(rt, name, lambda *args, _name=name, _original=original, **kwargs: (calls.append(_name), _original(rt, *args, **kwargs))[1])
    try:
        idle = new_user(browser, webui).open()
        idle.tab("Steering")
        idle.page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
        idle.tab("Chat")
        idle.settle()
        joins, handled = len(idle.joins), len(calls)
        idle.page.wait_for_timeout(IDLE_SECONDS * 1000)
        assert len(idle.joins) - joins == 0, f"{len(idle.joins) - joins} events in {IDLE_SECONDS} s of idling"
        assert len(calls) - handled == 0, calls[handled:][:10]
        spinners = idle.page.locator("#steering-chat-status .wrap:not(.hide), #steering-status .wrap:not(.hide)")
        assert spinners.count() == 0 or not any(s.is_visible() for s in spinners.all())
        idle.page.context.close()
    finally:
        for name in ("chat_view", "status_line"):
            delattr(rt, name)


def test_no_traceback_reached_the_page(user):
    assert "Traceback" not in user.page.inner_text("body")


# -- last: it leaves the page on the branched chat ------------------------------------------------
def test_a_branched_chat_keeps_the_choice(user, webui):
    from chat_page import BRANCH_ID

    if not user.switch():
        user.click_switch()
        user.wait_status("Steering this chat")
    user.click_switch()
    user.wait_status("switched off")
    user.page.locator("#Branch").click()
    user.page.locator("#past-chats input[type=radio][value='%s']" % BRANCH_ID).wait_for(state="attached", timeout=30_000)
    user.wait_status("switched off")
    assert not user.switch()
    deadline = time.monotonic() + 30
    while f"chat/Alice/{BRANCH_ID}" not in chats_json(webui) and time.monotonic() < deadline:
        # Waiting through Playwright, never time.sleep: the in-process gradio queue's tasks run on the
        # event loop Playwright's sync API pumps only during its calls (a sleep froze the follow event).
        user.page.wait_for_timeout(200)
    assert chats_json(webui)[f"chat/Alice/{BRANCH_ID}"]["enabled"] is False
    assert chats_json(webui)[f"chat/Alice/{CHAT_ID}"]["enabled"] is False  # the original keeps it too
