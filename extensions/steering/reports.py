"""Evaluation results as tables: the command line's Markdown and the distill panel's rows."""
from __future__ import annotations

from typing import Sequence

from .engine.distill import Evaluation

TABLE_COLUMNS = (
    ("preset", None), ("held-out", "held_out"), ("KL recovery", "kl_recovery"), ("KL without S", "kl_without"),
    ("KL steered", "kl_steered"), ("metric", "metric"), ("with S", "behaviour_with_system"), ("without S", "behaviour_without"),
    ("steered", "behaviour_steered"), ("readable steered", "readable_steered"), ("S tokens", "system_tokens"),
    ("tokens saved", "tokens_saved"), ("TTFT with S ms", "ttft_with_system_ms"), ("TTFT steered ms", "ttft_steered_ms"),
    ("TTFT ratio", "ttft_ratio"),
)


def cell(value) -> str:
    """A number as it reads best in a table: three significant digits, whole numbers from 10 on."""
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def table_rows(results: Sequence[tuple[str, Evaluation]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the evaluation table, one row per (name, result)."""
    header = [title for title, _ in TABLE_COLUMNS]
    rows = [[name] + [cell(getattr(result, key)) for _, key in TABLE_COLUMNS[1:]] for name, result in results]
    return header, rows


def markdown_table(results: Sequence[tuple[str, Evaluation]]) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
