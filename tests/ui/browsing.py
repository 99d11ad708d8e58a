"""What the browser tests do with a page that is not about one page (not a test module)."""
from __future__ import annotations

import re

# The method's terms: fine under "Advanced", never on the way to a first steered chat.
JARGON = re.compile(r"\b(nats?|KL|actadd|pca|mean|calibrat\w*|expan\w*|residual|norm|mode|dose|v1|framings?)\b", re.IGNORECASE)
# innerText of a hidden element is all its text: only the rendered ones (then innerText skips folded parts)
SEEN = """() => [...document.querySelectorAll('.extension-tab, #steering-chat-panel')]
  .filter(el => el.checkVisibility()).map(el => el.innerText).join('\\n')"""


def drag_slider(page, selector: str, fraction: float) -> None:
    """Drag a gradio slider's thumb (from where it is) to ``fraction`` of its track, and let go:
    gradio's "release" event comes from that pointerup, as from a user's."""
    track = page.locator(f"{selector} input[type=range]")
    track.scroll_into_view_if_needed()
    box = track.bounding_box()
    low, high = float(track.get_attribute("min")), float(track.get_attribute("max"))
    start = (float(track.input_value()) - low) / (high - low)
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 8 + (box["width"] - 16) * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + 8 + (box["width"] - 16) * fraction, y, steps=8)
    page.mouse.up()


def jargon_seen(page) -> list[str]:
    """The method's terms in what the user sees of the extension now (the tab shown, the chat panel)."""
    return sorted({match.group(0) for match in JARGON.finditer(page.evaluate(SEEN))})
