"""Helpers shared by the benchmark scripts: the model, timing by alternating runs, pairs, tables, outputs.

Timing: every benchmark runs its contenders in alternating order, round after round, in one process,
and reports the median over rounds of the per-round ratio (contender / baseline), so that load from
other processes hits both sides of a ratio alike. Each run is timed twice: wall clock and the process's
CPU time. On a shared machine the CPU time is the steadier of the two (it does not count the time the
process waits for a core); with one thread (OMP_NUM_THREADS=1) it is the compute the run itself did.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: more threads are 30x slower on a shared box

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# BENCH_OUT sends the JSON results and the PNGs elsewhere (run_all.sh --quick does, to keep the committed ones)
RESULTS = Path(os.environ["BENCH_OUT"]) / "results" if os.environ.get("BENCH_OUT") else ROOT / "benchmarks" / "results"
DOCS = Path(os.environ["BENCH_OUT"]) / "docs" if os.environ.get("BENCH_OUT") else ROOT / "docs"
LAYER = 8  # the block whose input we steer (the default recipes use layers 6 and 8)


def load():
    """The default model (SmolLM2-135M-Instruct, float32, CPU) and its tokenizer."""
    from extensions.steering.engine.models import load_model

    return load_model()


def context():
    """The default model's ModelContext, which the engine's entry points take."""
    from extensions.steering.engine.context import ModelContext

    return ModelContext.of(*load())


def machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# -- timing ----------------------------------------------------------------------------------------
def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(runs: dict[str, Callable[[], object]], rounds: int, warmup: bool = True) -> dict[str, list[tuple[float, float]]]:
    """Each round runs every contender once, in an order rotated from round to round."""
    names = list(runs)
    if warmup:
        for name in names:
            runs[name]()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(timed(runs[name]))
    return times


def round_ratios(times: dict, name: str, base: str, clock: int = 1) -> list[float]:
    """Per round, base time / contender time: the contender's speed relative to the baseline
    (tokens per second steered over unsteered). ``clock`` 1 is CPU time, 0 wall clock."""
    return [b[clock] / t[clock] for b, t in zip(times[base], times[name])]


def speed_ratio(times: dict, name: str, base: str, clock: int = 1) -> float:
    """The median of the per-round speed ratios."""
    return statistics.median(round_ratios(times, name, base, clock))


def median_time(times: dict, name: str, clock: int = 1) -> float:
    return statistics.median(t[clock] for t in times[name])


def spread(times: dict, base: str, clock: int = 1) -> float:
    """Half the interquartile range of the baseline's round times relative to their median: run-to-run noise."""
    values = sorted(t[clock] for t in times[base])
    if len(values) < 4:
        return float("nan")
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / 2 / statistics.median(values)


# -- generation ------------------------------------------------------------------------------------
PROMPTS = [
    "The old lighthouse keeper looked out at the sea and",
    "Here is a short story about a robot who learns to",
    "My favourite thing about the weekend is",
    "The recipe calls for two cups of flour, and then",
    "Yesterday the city council decided to",
    "In the middle of the night, the phone rang and",
    "The best way to learn a new language is",
    "She opened the letter from her grandmother and",
]


def left_padded(ctx, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of texts, each after the BOS/sink token, left-padded as generate wants."""
    from extensions.steering.engine.tokens import encode, left_pad

    return left_pad([encode(ctx, t) for t in texts], ctx.pad_id)


def greedy(ctx, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy generation of exactly ``new_tokens`` tokens per row (end-of-text is not allowed to stop it)."""
    with torch.inference_mode():
        return ctx.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            do_sample=False, pad_token_id=ctx.pad_id,
        )


# -- data ------------------------------------------------------------------------------------------
_MOODS = [
    ("happy", "sad"), ("calm", "angry"), ("kind", "cruel"), ("hopeful", "hopeless"), ("proud", "ashamed"),
    ("relaxed", "anxious"), ("grateful", "resentful"), ("cheerful", "gloomy"), ("confident", "afraid"),
    ("loving", "hateful"), ("excited", "bored"), ("patient", "irritated"), ("content", "jealous"),
    ("generous", "selfish"), ("brave", "timid"), ("gentle", "harsh"),
]
_TOPICS = [
    "my new job", "the weekend", "our neighbours", "the weather", "this old house", "my brother",
    "the long trip", "school", "the party", "my garden", "the news", "dinner tonight", "the team",
    "the city", "my phone", "the holidays",
]


def pairs(n: int) -> list[tuple[str, str]]:
    """``n`` (positive, negative) sentence pairs of about ten tokens: moods crossed with topics."""
    if n > len(_MOODS) * len(_TOPICS):
        raise ValueError(f"at most {len(_MOODS) * len(_TOPICS)} pairs")
    out = []
    for i in range(n):
        good, bad = _MOODS[i % len(_MOODS)]
        topic = _TOPICS[(i // len(_MOODS) + i) % len(_TOPICS)]
        out.append((f"I feel so {good} about {topic} today.", f"I feel so {bad} about {topic} today."))
    return out


def random_direction(hidden: int, norm: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(hidden, generator=generator)
    return v / v.norm() * norm


# -- output ----------------------------------------------------------------------------------------
def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def save_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1, default=float) + "\n")
    return path


def pyplot():
    """matplotlib's pyplot without a display, or None when matplotlib is missing (no plot is drawn)."""
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib is not installed here: no plot)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ratio_bars(ax, groups: dict[str, dict[str, list[float]]], target: float | None = None) -> None:
    """Grouped bars of median speed ratios with their interquartile range: groups[group][contender] = per-round ratios."""
    contenders = list(dict.fromkeys(c for g in groups.values() for c in g))
    width = 0.8 / len(contenders)
    for k, name in enumerate(contenders):
        xs, medians, low, high = [], [], [], []
        for x, g in enumerate(groups.values()):
            if name in g:
                q = statistics.quantiles(g[name], n=4) if len(g[name]) > 1 else [g[name][0]] * 3
                xs.append(x + (k - (len(contenders) - 1) / 2) * width)
                medians.append(statistics.median(g[name]))
                low.append(medians[-1] - q[0])
                high.append(q[2] - medians[-1])
        ax.bar(xs, medians, width, yerr=[low, high], capsize=2, label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.axhline(1.0, color="black", linewidth=0.8)
    if target:
        ax.axhline(target, color="red", linestyle=":", linewidth=1, label=f"target {target:g}")
    values = [v for g in groups.values() for r in g.values() for v in r]
    ax.set_ylim(min(0.9, min(values) - 0.01), max(1.05, max(values) + 0.01))
    ax.set_ylabel("speed steered / unsteered")
    ax.legend(fontsize=7, loc="lower right")


def save_figure(fig, name: str) -> Path:
    """A PNG under docs/, small enough to commit (under 200 KB)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / f"{name}.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    fig.clf()
    from PIL import Image  # matplotlib's own dependency: a 256-colour palette makes the file a third as large

    Image.open(path).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return path


def add_result_flags(parser: argparse.ArgumentParser, default_json: str) -> None:
    """The flags of a benchmark whose results file is merged into and drawn: --label, --json, --before,
    --plot, --outline, --redraw (untuned.py and chat_dose.py share their files and pictures)."""
    parser.add_argument("--label", default="", help="what was measured, e.g. 'before' (shown in the picture)")
    parser.add_argument("--json", default=default_json, help="results name under $BENCH_OUT/results (merged into)")
    parser.add_argument("--before", default=None, help="an earlier results name: a column of the table and outlines in the picture")
    parser.add_argument("--plot", default=None, help="PNG name under $BENCH_OUT/docs (default: none)")
    parser.add_argument("--outline", default="before", help="the outlines' legend, e.g. 'told in words' for a told (ceiling) run")
    parser.add_argument("--redraw", action="store_true", help="only print the tables and draw from the results files")
