"""The chat panel and the Steering tab inside a real text-generation-webui, in headless Chromium (optional).

Set STEERING_WEBUI_DIR to a webui v4.7.3 folder (the one with server.py) and STEERING_WEBUI_PYTHON to
a Python that runs it (its requirements, with its gradio fork 4.37.2+custom.20 built from source);
otherwise this module is skipped. STEERING_WEBUI_MODEL may name a Transformers model folder (default:
the embedded SmolLM2-135M-Instruct, converted once). The webui's code is copied to a temporary
folder (nothing of yours is touched), install.py installs this checkout's extension there, and
`server.py --extensions steering --model ... --cpu` serves it on 127.0.0.1. The character Assistant
gets `love` attached; settings: chat mode, the Deterministic preset, 12 new tokens.

What a user does, and what must come of it: an idle page makes no events at all; unticking "Steering
for this chat" sticks (no TypeError in the console), the next Regenerate is unsteered, chats.json
is written and a reload shows it off; a dragged strength is stored, used by the next reply (the
Steering tab's status line names it) and still shown after a reload.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

WEBUI = os.environ.get("STEERING_WEBUI_DIR")
PYTHON = os.environ.get("STEERING_WEBUI_PYTHON")
if not (WEBUI and PYTHON):
    pytest.skip("STEERING_WEBUI_DIR and STEERING_WEBUI_PYTHON are not both set: no real webui to run",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed here (.ci/ui-setup.sh)")

from browsing import drag_slider  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from test_real_webui import copy_webui, what_is_missing  # noqa: E402
from webui_server import REPO  # noqa: E402

MODEL_NAME = "SmolLM2-135M-Instruct"
PROMPT = "Tell me about your day."
START_S = 600  # imports and loading the model on a busy 2-core CPU
REPLY_MS = 300_000
IDLE_SECONDS = 10
RESULTS = Path(__file__).parent / "artifacts" / "real_webui.json"  # numbers for people (not committed)
PANEL = "#steering-chat-status"
# The webui's chain for Send/Regenerate marks the chat's container while it generates (modules/ui_chat.py).
GENERATING = "() => document.getElementById('chat').parentNode.parentNode.parentNode.classList.contains('_generating')"


def model_folder() -> Path:
    """STEERING_WEBUI_MODEL, or the default model converted by the webui's Python: a folder converted by
    another transformers version (this env's) can be misread there (a transformers 4 tokenizer in 5)."""
    if os.environ.get("STEERING_WEBUI_MODEL"):
        return Path(os.environ["STEERING_WEBUI_MODEL"])
    code = "from extensions.steering.engine.models import resolve_model_folder; print(resolve_model_folder())"
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=START_S)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        pytest.fail(f"the webui's Python cannot convert the default model: {what_is_missing(output, PYTHON)}\n{output}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])


def start_server(root: Path, env: dict, log_path: Path, options: tuple[str, ...]):
    """(process, url) of a webui serving on a free port, or (None, None) if it died starting."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen([PYTHON, "server.py", "--extensions", "steering", "--model", MODEL_NAME, "--cpu",
                                   "--listen-port", str(port), *options], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_S
    # No request before launch() has checked the URL itself (a HEAD with a 3 s timeout that, missed on
    # a busy machine, ends the webui): wait for its line in the log and then for the check to pass.
    while server.poll() is None and time.monotonic() < deadline:
        if "Running on local URL" in log_path.read_text(encoding="utf-8", errors="replace"):
            time.sleep(30)
            if server.poll() is None:
                try:
                    urllib.request.urlopen(url, timeout=60).read(100)
                    return server, url
                except OSError:
                    pass
            break
        time.sleep(2)
    server.kill()
    server.wait()
    return None, None


@contextlib.contextmanager
def running_webui(folder: Path, *options: str):
    """A copy of the webui in ``folder`` with this checkout's extension, serving (``options``: more of
    server.py's flags, e.g. --multi-user); yields url, root, user_data and the log's path."""
    root = folder / "text-generation-webui"
    user_data = copy_webui(Path(WEBUI), root)
    (user_data / "models").mkdir()
    (user_data / "models" / MODEL_NAME).symlink_to(model_folder().resolve())
    (user_data / "settings.yaml").write_text("mode: chat\nmax_new_tokens: 12\nauto_max_new_tokens: false\npreset: Deterministic\nshow_controls: true\n")
    assistant = user_data / "characters" / "Assistant.yaml"
    assistant.write_text(assistant.read_text(encoding="utf-8").rstrip("\n") + "\nsteering:\n  love: null\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    log_path = root / "server.log"
    for attempt in range(3):  # on a busy machine gradio's own start-up check of the URL can time out
        server, url = start_server(root, env, log_path, options)
        if server is not None:
            break
    else:
        output = log_path.read_text(encoding="utf-8", errors="replace")  # stdout and stderr, both
        pytest.fail(f"the webui did not start: {what_is_missing(output, PYTHON)}\n--- its whole output ---\n{output}",
                    pytrace=False)
    try:
        yield {"url": url, "root": root, "user_data": user_data, "log": log_path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    with running_webui(tmp_path_factory.mktemp("real-webui")) as served:
        yield served


def saved_chats(folder: Path) -> dict:
    """The webui's saved chat histories (user_data/logs/chat/<character>/<id>.json) and their contents."""
    return {str(path): path.read_bytes() for path in sorted(folder.rglob("*.json"))} if folder.exists() else {}


class User:
    def __init__(self, page, logs: Path):
        self.page, self.logs = page, logs
        self.joins: list[float] = []
        page.on("request", lambda request: self.joins.append(time.monotonic()) if "/queue/join" in request.url else None)

    def joins_during(self, seconds: float) -> int:
        before = len(self.joins)
        self.page.wait_for_timeout(seconds * 1000)
        return len(self.joins) - before

    def settle(self, quiet_ms: int = 2000, timeout_s: float = 60) -> None:
        """Wait until no event started for ``quiet_ms``; a page that never settles fails here, with its rate."""
        start, first = time.monotonic(), len(self.joins)
        while time.monotonic() - start < timeout_s:
            if self.joins_during(quiet_ms / 1000) == 0:
                return
        rate = (len(self.joins) - first) / (time.monotonic() - start)
        raise AssertionError(f"the page never idles: {rate:.1f} events per second")

    def tab(self, title: str) -> None:
        self.page.get_by_role("tab", name=title, exact=True).click()

    def panel_text(self) -> str:
        return self.page.locator(PANEL).text_content()

    def wait_panel(self, text: str, timeout: int = 60_000) -> None:
        """Wait until the panel says ``text`` (shown or not: the controls are a sidebar)."""
        try:
            self.page.wait_for_function("([sel, text]) => document.querySelector(sel)?.textContent.includes(text)",
                                        arg=[PANEL, text], timeout=timeout)
        except Exception:
            raise AssertionError(f"the panel never said {text!r}; it says {self.panel_text()!r}") from None

    def switch(self):
        return self.page.locator("#steering-chat-enabled input[type=checkbox]")

    def show_controls(self) -> None:
        """The chat controls (where the panel is) are a sidebar; open it if it is closed."""
        if not self.switch().is_visible():
            self.page.keyboard.press("Control+s")  # the webui's shortcut for "Show controls"
        self.switch().wait_for(state="visible", timeout=30_000)
        if self.page.locator("#chat-controls").bounding_box()["width"] < 100:  # a window under 1470 px folds it away
            self.page.locator("#chat-controls-toggle").click()
            self.page.wait_for_function("() => document.querySelector('#chat-controls').getBoundingClientRect().width > 100")

    def open_chat(self) -> None:
        self.tab("Chat")
        self.show_controls()

    def generate(self, button: str) -> None:
        """Send (the prompt) or Regenerate, and wait until the webui has saved the chat with the reply."""
        self.open_chat()
        before = saved_chats(self.logs)
        if button == "Generate":
            self.page.locator("#chat-input textarea").fill(PROMPT)
            self.page.locator("#Generate").click()
        else:
            self.page.evaluate("() => document.getElementById('Regenerate').click()")  # a hover-menu item
        deadline = time.monotonic() + REPLY_MS / 1000
        while saved_chats(self.logs) == before or self.page.evaluate(GENERATING):
            assert time.monotonic() < deadline, "no reply was saved"
            self.page.wait_for_timeout(500)
        self.settle()
        assert not self.page.evaluate(GENERATING)

    def steering_status(self) -> str:
        """The Steering tab's status line, read again by opening the tab."""
        self.tab("Steering")
        status = self.page.locator("#steering-status")
        status.get_by_text("Active for all chats").wait_for(timeout=60_000)
        self.settle()
        text = status.inner_text()
        self.open_chat()
        return text

    def drag(self, index: int, fraction: float) -> None:
        drag_slider(self.page, f"#steering-chat-strength-{index}", fraction)

    def strength(self, index: int = 0) -> float:
        return float(self.page.locator(f"#steering-chat-strength-{index} input[type=number]").input_value())


def open_user(browser, webui, viewport=(1920, 1200)) -> User:
    """A user's own browser session (its own cookies: under --multi-user, its own session) on the webui."""
    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        ("http://127.0.0.1", "data:", "blob:")) else route.abort())  # no network: keep the page local
    page.goto(webui["url"], wait_until="domcontentloaded")
    user = User(page, webui["user_data"] / "logs" / "chat")
    user.wait_panel("love", timeout=120_000)
    return user


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def user(chromium, webui):
    return open_user(chromium, webui)


@pytest.fixture(scope="module")
def results():
    found = {}
    yield found
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(found, indent=2))


def chats(webui) -> dict:
    path = webui["user_data"] / "steering" / "chats.json"
    return json.loads(path.read_text(encoding="utf-8"))["chats"] if path.exists() else {}  # format 2: {"format": 2, "chats": {...}}


def console_problems(webui) -> list[str]:
    text = webui["log"].read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if "Traceback" in line or "TypeError" in line or "steering" in line.lower()
            and "error" in line.lower()]


def test_an_idle_page_makes_no_events(user, results):
    user.open_chat()
    user.tab("Steering")  # the tab opened once, then back to the chat with the panel showing
    user.page.locator("#steering-status").get_by_text("steering can run").wait_for(timeout=60_000)
    user.open_chat()
    try:
        user.settle()
    finally:
        results["idle_joins_per_10s"] = user.joins_during(IDLE_SECONDS)
    assert results["idle_joins_per_10s"] == 0


def test_the_switch_unsteers_the_next_regenerate(user, webui, results):
    user.generate("Generate")
    assert "Last reply steered by: love" in user.steering_status()
    assert user.switch().is_checked()
    user.switch().click()
    user.wait_panel("switched off")
    user.page.wait_for_timeout(3000)
    assert not user.switch().is_checked(), "the switch snapped back"
    saved = {key: value for key, value in chats(webui).items() if key.startswith("chat/Assistant/")}
    results["chats_json_after_untick"] = saved
    assert len(saved) == 1 and next(iter(saved.values()))["enabled"] is False
    user.generate("Regenerate")
    results["status_after_unsteered_regenerate"] = status = user.steering_status()
    assert "Last reply steered by" not in status
    assert not console_problems(webui), console_problems(webui)


def test_a_dragged_strength_is_stored_and_used(user, webui, results):
    user.switch().click()  # on again
    user.wait_panel("Steering this chat")
    user.drag(0, 0.8)
    chosen = user.strength(0)
    assert chosen > 0.35
    user.wait_panel(f"love ×{chosen:g}")
    user.page.wait_for_timeout(3000)
    assert user.strength(0) == chosen, "the slider snapped back"
    saved = {key: value for key, value in chats(webui).items() if key.startswith("chat/Assistant/")}
    results["chats_json_after_drag"] = saved
    assert next(iter(saved.values())) == {"enabled": True, "strengths": {"love": chosen}}
    user.generate("Regenerate")
    results["status_after_dragged_regenerate"] = status = user.steering_status()
    assert f"Last reply steered by: love ×{chosen:g}" in status
    user.switch().click()  # off, for the reload below
    user.wait_panel("switched off")
    user.page.wait_for_timeout(1000)


def test_a_reload_shows_the_stored_choice_and_the_page_idles(user, webui, results):
    chosen = next(iter(chats(webui).values()))["strengths"]["love"]
    user.page.reload(wait_until="domcontentloaded")
    user.wait_panel("switched off", timeout=120_000)
    user.open_chat()
    assert not user.switch().is_checked()
    user.page.wait_for_function("([sel, v]) => Number(document.querySelector(sel).value) === v",
                                arg=["#steering-chat-strength-0 input[type=number]", chosen], timeout=60_000)
    user.settle()
    results["idle_joins_per_10s_after_reload"] = user.joins_during(IDLE_SECONDS)
    assert results["idle_joins_per_10s_after_reload"] == 0
    assert not console_problems(webui), console_problems(webui)
    assert "Traceback" not in user.page.inner_text("body")
