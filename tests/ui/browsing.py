"""What the browser tests do with a page that is not about one page (not a test module)."""
from __future__ import annotations


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
