"""A newcomer's path through the Steering tab and the chat panel, in a real browser on the webui's page
model (tests/ui/chat_page.py): build a vector from two words, try it, save it, use it in all chats, send
a chat message. Nothing on the way names a term of the method (nats, KL, actadd, calibration, …) before
the user opens "Advanced". Runs in the UI environment; skipped elsewhere.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the tab targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")

import chat_page  # noqa: E402
from browsing import jargon_seen  # noqa: E402
from test_browser import Tab  # noqa: E402  (skips this module as it skips itself)
from test_chat_browser import artifact, browser, new_user, one_thread  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="module")
def webui(tmp_path_factory, default_model):
    with chat_page.served(tmp_path_factory.mktemp("webui-newcomer") / "user_data", default_model) as page:
        yield page


def no_jargon(user, step: str) -> None:
    """What the user sees of the extension now (the tab shown, the chat panel) names no term of the method."""
    found = jargon_seen(user.page)
    assert not found, f"{step}: the page shows {found} before Advanced"


def test_build_try_save_and_use_in_a_chat_without_jargon(browser, webui):
    user = new_user(browser, webui).open()
    tab = Tab(user.page)
    user.tab("Steering")
    user.page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
    no_jargon(user, "the first screen")
    tab.fill("steering-positives", "Happy")
    tab.fill("steering-negatives", "Sad")
    message = tab.press("steering-build", "built")
    assert "toward “Happy”, away from “Sad”" in message and "picked by measuring this model" in message
    no_jargon(user, "after Build")
    tab.set_number("steering-try-tokens", "6")
    tab.press("steering-try", "tried seed 0")
    assert tab.value("steering-steered") != tab.value("steering-unsteered")
    no_jargon(user, "after Try")
    tab.fill("steering-save-name", "happy")
    tab.press("steering-save", "saved happy")
    tab.press("steering-use", "all chats now steered by: happy × 1")
    no_jargon(user, "after Save and Use")
    user.page.screenshot(path=str(artifact("newcomer-tab.png")), full_page=True)
    user.tab("Chat")
    user.page.locator("#steering-chat-refresh").click()
    user.wait_status("happy ×1")
    assert "happy" in [user.page.locator(f"#steering-chat-strength-{index} [data-testid=block-info]").first.inner_text()
                       for index in range(2)]
    user.reply("Generate")
    no_jargon(user, "in the chat")
    user.page.locator("#chat-controls").screenshot(path=str(artifact("newcomer-chat-panel.png")))
    user.tab("Steering")
    user.page.locator("#steering-status").get_by_text("Last reply steered by").wait_for(timeout=60_000)
    assert "happy ×1" in tab.text("steering-status")
    # the method's details are one click away
    user.page.locator("#steering-advanced .label-wrap").click()
    details = user.page.locator("#steering-built-details")
    details.wait_for(state="visible")
    assert "nats/token of KL" in details.inner_text() and "mean" in details.inner_text()
    assert "Traceback" not in user.page.inner_text("body")
    user.page.context.close()
