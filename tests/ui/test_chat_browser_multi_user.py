"""The per-chat panel under --multi-user: two browser sessions on one page model (tests/ui/chat_page.py).

A session's switch and strengths are its own (kept in memory, never in chats.json), and a reply is
steered by the choice of the session that asked for it. Runs in the UI environment; skipped elsewhere.
"""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio = pytest.importorskip("gradio", reason="gradio is not installed here (the UI environment has it: .ci/ui-setup.sh)")
if not gradio.__version__.startswith("4."):
    pytest.skip(f"the panel targets the webui's gradio 4.37 API; this is gradio {gradio.__version__}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")

import chat_page  # noqa: E402
from chat_page import shared  # noqa: E402
from test_chat_browser import browser, new_user, one_thread, unsteered_reply  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="module")
def webui(tmp_path_factory, default_model):
    with chat_page.served(tmp_path_factory.mktemp("webui-mu") / "user_data", default_model, multi_user=True) as page:
        yield page


def steering_status(user) -> str:
    """The Steering tab's status line as this session reads it (opening the tab reads it again)."""
    user.tab("Steering")
    status = user.page.locator("#steering-status")
    status.get_by_text("Active for all chats").wait_for(timeout=60_000)
    user.settle()
    text = status.inner_text()
    user.tab("Chat")
    return text


def test_two_sessions_do_not_share_their_choices(browser, webui):
    plain = unsteered_reply(webui)
    alice, bob = new_user(browser, webui).open(), new_user(browser, webui).open()
    assert alice.switch() and bob.switch()
    alice.click_switch()
    alice.wait_status("switched off")
    bob.page.locator("#steering-chat-refresh").click()  # bob reads his panel again: still on
    bob.wait_status("Steering this chat")
    assert bob.switch() and not alice.switch()
    assert alice.reply("Generate") == plain
    steered = bob.reply("Generate")
    assert steered != plain, "bob's reply was not steered"
    # each session's status line names what steered its own last reply, and only that
    assert "Last reply steered by: love ×0.35" in steering_status(bob)
    assert "Last reply steered by" not in steering_status(alice)
    bob.drag(0, 0.5)  # bob's strength 0 does not reach alice, whose switch is off anyway
    bob.wait_status("strength 0")
    alice.page.reload(wait_until="domcontentloaded")  # a reload is a new session: the default again
    alice.wait_status("Steering this chat")
    assert alice.switch() and alice.strength(0) == 0.35
    assert alice.reply("Generate") == steered
    assert bob.reply("Regenerate") == plain
    assert not (shared.user_data_dir / "steering" / "chats.json").exists()
    for user in (alice, bob):
        assert "Traceback" not in user.page.inner_text("body")
        user.page.context.close()
