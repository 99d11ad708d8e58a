"""The generic chat messages a system prompt is distilled on and measured on.

They come from ``data/distill_messages.txt`` (one a line, ``#`` comments): message i is held out
when i % 3 == 2. Building only ever reads the training messages; evaluation reads the held-out ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

MESSAGES_FILE = Path(__file__).resolve().parents[2] / "data" / "distill_messages.txt"
HELD_OUT_EVERY = 3  # message i is held out when i % 3 == 2


def load_messages(path: Path = MESSAGES_FILE) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def split_messages(messages: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training, held-out): message i is held out when i % 3 == 2 (deterministic, order-based)."""
    train = [m for i, m in enumerate(messages) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [m for i, m in enumerate(messages) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return train, held


def training_messages(limit: int | None = None) -> list[str]:
    train = split_messages(load_messages())[0]
    return train[:limit] if limit else train


def held_out_messages(limit: int | None = None) -> list[str]:
    held = split_messages(load_messages())[1]
    return held[:limit] if limit else held
