"""Issue 23's walk, click by click, in a real text-generation-webui v4.7.3 with --multi-user (optional).

The same set-up as test_real_webui_browser.py (skipped, saying so, without STEERING_WEBUI_DIR and
STEERING_WEBUI_PYTHON; the webui's Python needs its gradio fork 4.37.2+custom.20), on a laptop-sized
window (1280 × 800). A newcomer builds a vector from two words, tries it, saves it and uses it in all
chats, then chats; a second user (another browser session) chats too. Screenshots of every step go to
tests/ui/artifacts/walk/ (docs/webui-walk.md shows a few, looked at by a person).
"""
from __future__ import annotations

import pytest
from browsing import drag_slider, jargon_seen
from test_browser import ARTIFACTS, Tab
from test_real_webui_browser import GENERATING, IDLE_SECONDS, REPLY_MS, chromium, open_user, running_webui  # noqa: F401  (fixture)

SHOTS = ARTIFACTS / "walk"
VIEWPORT = (1280, 800)


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    with running_webui(tmp_path_factory.mktemp("walk-webui"), "--multi-user") as served:
        yield served


@pytest.fixture(scope="module")
def newcomer(chromium, webui):
    return open_user(chromium, webui, VIEWPORT)


def shot(page, name: str, selector: str | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(SHOTS / f"{name}.png"))


def send(user, text: str) -> None:
    """Type a message and Send it, as a user does; wait until the reply is in (under --multi-user
    nothing is saved to disk, so the page is watched: a new bot message, then generation over)."""
    user.open_chat()
    before = user.page.locator("#chat .message-body").count()
    user.page.locator("#chat-input textarea").fill(text)
    user.page.locator("#Generate").click()
    user.page.wait_for_function("(n) => document.querySelectorAll('#chat .message-body').length >= n + 2", arg=before,
                                timeout=REPLY_MS)
    user.page.wait_for_function(f"() => !({GENERATING})()", timeout=REPLY_MS)
    user.settle()


def test_the_first_screen_is_plain(newcomer):
    newcomer.tab("Steering")
    newcomer.page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
    newcomer.settle()
    shot(newcomer.page, "1-first-screen")
    assert not jargon_seen(newcomer.page), "the first screen names the method's terms"


def test_build_try_save_use_and_the_layer_follows(newcomer):
    tab = Tab(newcomer.page)
    tab.fill("steering-positives", "Happy")
    tab.fill("steering-negatives", "Sad")
    built = tab.press("steering-build", "built")
    assert "toward “Happy”, away from “Sad”" in built and not jargon_seen(newcomer.page)
    layer = int(tab.text("steering-built").split("layer ")[1].split()[0])
    # the Advanced layer slider and the Sweep's layers show the layer the vector was built at
    assert newcomer.page.locator("#steering-layer input[type=number]").input_value() == str(layer)
    assert str(layer) in [part.strip() for part in newcomer.page.locator("#steering-sweep-layers").locator("textarea, input").first.input_value().split(",")]
    tab.set_number("steering-try-tokens", "8")
    tab.press("steering-try", "tried seed 0")
    assert tab.value("steering-steered") != tab.value("steering-unsteered")
    tab.fill("steering-save-name", "happy")
    tab.press("steering-save", "saved happy")
    tab.press("steering-use", "all chats now steered by: happy × 1")
    assert not jargon_seen(newcomer.page)
    shot(newcomer.page, "2-built-tried-saved")
    newcomer.page.locator("#steering-advanced .label-wrap").click()
    newcomer.page.locator("#steering-built-details").wait_for(state="visible")
    newcomer.page.locator("#steering-advanced").scroll_into_view_if_needed()
    shot(newcomer.page, "3-advanced", "#steering-advanced")
    newcomer.page.locator("#steering-advanced .label-wrap").click()  # closed again


def test_the_chat_panel_in_the_sidebar(newcomer):
    newcomer.open_chat()
    newcomer.page.locator("#steering-chat-refresh").click()
    newcomer.wait_panel("happy ×1")
    names = [newcomer.page.locator(f"#steering-chat-strength-{index} [data-testid=block-info]").first for index in range(2)]
    happy = next(name for name in names if name.inner_text() == "happy")
    line = float(happy.evaluate("(el) => parseFloat(getComputedStyle(el).lineHeight) || parseFloat(getComputedStyle(el).fontSize) * 1.5"))
    assert happy.bounding_box()["height"] < 2 * line, "the slider's name wraps at the sidebar's width"
    panel = newcomer.page.locator("#steering-chat-panel").bounding_box()
    assert panel["y"] < VIEWPORT[1], "the panel is below the fold"
    assert not jargon_seen(newcomer.page)
    shot(newcomer.page, "4-chat-sidebar")


def test_the_slider_range_is_fixed_and_its_numbers_clean(newcomer):
    index = next(i for i in range(2) if newcomer.page.locator(f"#steering-chat-strength-{i} [data-testid=block-info]").first.inner_text() == "happy")
    track = newcomer.page.locator(f"#steering-chat-strength-{index} input[type=range]")
    assert (track.get_attribute("min"), track.get_attribute("max")) == ("-3", "3")
    drag_slider(newcomer.page, f"#steering-chat-strength-{index}", 1.0)
    newcomer.wait_panel("happy ×3")
    assert (track.get_attribute("min"), track.get_attribute("max")) == ("-3", "3"), "the range moved"
    drag_slider(newcomer.page, f"#steering-chat-strength-{index}", 0.85)
    chosen = newcomer.strength(index)
    assert abs(chosen - 2.1) <= 0.1, chosen  # 85 % of a fixed −3 … 3 track
    newcomer.wait_panel(f"happy ×{chosen:g}")
    assert "e-" not in newcomer.panel_text(), newcomer.panel_text()
    newcomer.settle()
    shot(newcomer.page, "5-slider", f"#steering-chat-strength-{index}")


def test_two_users_each_see_what_steered_their_reply(newcomer, chromium, webui):
    second = open_user(chromium, webui, VIEWPORT)
    send(newcomer, "Tell me about your day.")
    send(second, "How are you?")
    for user in (newcomer, second):
        user.tab("Steering")
        status = user.page.locator("#steering-status")
        status.get_by_text("Last reply steered by").wait_for(timeout=60_000)
        assert "happy" in status.inner_text()
    shot(second.page, "6-second-user-status", "#steering-status")
    second.page.context.close()


def test_presets_and_mixer_read_like_the_webuis_tabs(newcomer):
    tab = Tab(newcomer.page)
    tab.open("Presets")
    tab.choose("steering-preset", "happy")
    newcomer.page.locator("#steering-preset-plain").get_by_text("toward “Happy”").wait_for(timeout=30_000)
    assert not jargon_seen(newcomer.page), "the Presets view names the method's terms before Advanced"
    for elem_id in ("steering-load", "steering-delete", "steering-rename"):
        box = newcomer.page.locator(f"#{elem_id}").bounding_box()
        assert box["width"] < 200 and box["height"] < 50, (elem_id, box)
    shot(newcomer.page, "7-presets")
    tab.open("Mixer")
    assert not jargon_seen(newcomer.page), "the Mixer names the method's terms"
    newcomer.page.locator("#steering-character input").click()
    options = newcomer.page.locator("ul.options li").all_inner_texts()
    assert {"Assistant", "Example"} <= {option.strip() for option in options}, options
    shot(newcomer.page, "8-mixer-characters")
    newcomer.page.keyboard.press("Escape")
    tab.open("Sweep")
    shot(newcomer.page, "9-sweep")
    assert not jargon_seen(newcomer.page), "the Sweep names the method's terms"
    tab.open("Build & try")


def test_an_idle_page_makes_no_events(newcomer):
    newcomer.open_chat()
    newcomer.settle()
    assert newcomer.joins_during(IDLE_SECONDS) == 0
    assert "Traceback" not in newcomer.page.inner_text("body")
