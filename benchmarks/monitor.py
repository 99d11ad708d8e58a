"""The reading of each reply (engine/monitor.py): does it mean something, and what does it cost?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/monitor.py [--n 64] [--rounds 11] [--plot]

(a) Meaning: --n sampled completions of "I hate you because" (temperature 0.7, top-p 0.9, 40 new tokens:
the README's setting of `love`; sampled as one batch per strength from seed 0, which costs a fraction of
n one-seed generations on a shared CPU) unsteered and steered by `love` at 0.5x, 1x and 2x its
strength (`love` has a fixed strength, 0.35: a dose applies to calibrated presets only, so the doses
here are multiples of that strength). Each completion's `love` reading is recorded while it is
generated (the runtime's path); reported: the Spearman correlation between the reading and the
completion's VADER sentiment (target >= 0.5), beside the plain projection on the unit direction
(no metric) recorded in the same generate calls, and the mean reading per dose.

(b) Cost: greedy tokens per second steered by `love`, with the reading on over off, on the same
requests (--requests benchmark prompts, one at a time, 40 tokens each), alternating round by round; the median
of the per-round ratios (CPU time; wall clock beside it). Target: within 3 %. Beside it, free of the
machine's noise: the CPU time the reading's hook itself takes per decode step, as a share of a step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack

import torch
from common import (
    PROMPTS,
    RESULTS,
    alternate,
    context,
    greedy,
    markdown,
    median_time,
    pyplot,
    round_ratios,
    save_figure,
    save_json,
    speed_ratio,
    spread,
)

from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.generation import Sampling
from extensions.steering.engine.metrics import sentiment
from extensions.steering.engine.monitor import Baseline, Monitor
from extensions.steering.engine.presets import PresetStore
from extensions.steering.engine.tokens import prompt_ids

PROMPT = "I hate you because"
DOSES = (0.0, 0.5, 1.0, 2.0)  # multiples of love's fixed strength


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    def ranks(values: list[float]) -> torch.Tensor:
        x = torch.tensor(values, dtype=torch.float64)
        order = x.argsort()
        out = torch.empty_like(x)
        out[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():
            tied = x == value
            out[tied] = out[tied].mean()
        return out - out.mean()

    ra, rb = ranks(a), ranks(b)
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def meaning(ctx, love, n: int) -> dict:
    """n completions per strength, sampled in one batch per strength from seed 0 (the same seed for each
    strength), each read while generated; a row that ends early is read up to its end only."""
    monitor = Monitor.of(ctx, {"love": love})
    gauge = monitor.gauges[0]
    plain = Monitor(ctx, [gauge], [Baseline(gauge.direction, 0.0, 1.0, 0)])  # the projection without the metric
    ids = torch.tensor([prompt_ids(ctx, PROMPT)] * n, device=ctx.device)
    sampling = Sampling()
    ends = ctx.model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, list) else [ends])
    strength = float(love_recipe_strength())
    rows = []
    for dose in DOSES:
        torch.manual_seed(0)
        with ExitStack() as stack, torch.inference_mode():
            if dose:
                stack.enter_context(steer(ctx, [Steer(love, dose * strength, "all")]))
            reading = stack.enter_context(monitor.record())
            projection = stack.enter_context(plain.record())
            out = ctx.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=sampling.temperature,
                                     top_p=sampling.top_p, top_k=0, max_new_tokens=sampling.max_new_tokens, pad_token_id=ctx.pad_id)
        for row, tokens in enumerate(out[:, ids.shape[1]:].tolist()):
            end = next((i for i, token in enumerate(tokens) if token in ends), None)
            fed = len(tokens) - 1 if end is None else end  # the tokens read back: all but the last, or up to the end
            text = ctx.tokenizer.decode(tokens[: None if end is None else end + 1], skip_special_tokens=True)
            found = reading.readings(row, fed)[0]
            rows.append({"dose": dose, "row": row, "text": text, "sentiment": sentiment(text), "reading": found.z,
                         "plain_projection": projection.readings(row, fed)[0].projection, "tokens": found.tokens})
        print(f"love x{dose:g}: mean reading {statistics.mean(r['reading'] for r in rows if r['dose'] == dose):+.2f}σ", flush=True)
    return {"rows": rows, "baseline": {"mean": monitor.baselines[0].mean, "std": monitor.baselines[0].std, "tokens": monitor.baselines[0].tokens},
            "layer": gauge.layer, "strength": strength}


def love_recipe_strength() -> float:
    from extensions.steering.engine.presets import SHIPPED_DIR
    from extensions.steering.engine.recipe import read_recipe

    return read_recipe(SHIPPED_DIR / "love.yaml").strength


def cost(ctx, love, rounds: int, tokens: int, count: int) -> dict:
    monitor = Monitor.of(ctx, {"love": love})
    requests = [prompt_ids(ctx, p) for p in PROMPTS[:count]]
    steers = [Steer(love, love_recipe_strength(), "all")]

    def run(read: bool):
        def go():
            for ids in requests:
                row = torch.tensor([ids])
                with steer(ctx, steers), (monitor.record() if read else ExitStack()):
                    greedy(ctx, row, torch.ones_like(row), tokens)
        return go

    times = alternate({"reading off": run(False), "reading on": run(True)}, rounds)
    step_us = median_time(times, "reading off") / (len(requests) * tokens) * 1e6
    hook_us = hook_microseconds(monitor, ctx.hidden_size)
    return {"ratio_cpu": speed_ratio(times, "reading on", "reading off"), "ratio_wall": speed_ratio(times, "reading on", "reading off", clock=0),
            "per_round_cpu": round_ratios(times, "reading on", "reading off"), "noise_cpu": spread(times, "reading off"),
            "rounds": rounds, "requests": len(requests), "tokens": tokens, "hook_us": hook_us, "step_us": step_us, "hook_share": hook_us / step_us}


def hook_microseconds(monitor: Monitor, hidden: int, repeats: int = 2000) -> float:
    """CPU microseconds the reading's hook takes in one decode step (called directly, free of the machine's
    noise; a prompt forward first, as in a generate call)."""
    recording = monitor.record()
    try:
        hooks = [(monitor.ctx.layers.blocks[layer], recording._hook(layer)) for layer in monitor.layers]
        for block, hook in hooks:
            hook(block, (torch.zeros(1, 8, hidden),), {})
        step = torch.zeros(1, 1, hidden)
        start = time.process_time()
        with torch.inference_mode():
            for _ in range(repeats):
                for block, hook in hooks:
                    hook(block, (step,), {})
        return (time.process_time() - start) / repeats * 1e6
    finally:
        recording.remove()


def report(results: dict) -> None:
    rows = results["meaning"]["rows"]
    readings, sentiments = [r["reading"] for r in rows], [r["sentiment"] for r in rows]
    rho = spearman(readings, sentiments)
    rho_plain = spearman([r["plain_projection"] for r in rows], sentiments)
    results["spearman"], results["spearman_plain_projection"] = rho, rho_plain
    table = []
    for dose in DOSES:
        mine = [r for r in rows if r["dose"] == dose]
        table.append([f"{dose:g}x ({dose * results['meaning']['strength']:g})", len(mine), statistics.mean(r["reading"] for r in mine),
                      statistics.mean(r["sentiment"] for r in mine), spearman([r["reading"] for r in mine], [r["sentiment"] for r in mine])])
    print(markdown(["love strength", "completions", "mean reading (σ)", "mean sentiment", "Spearman within"], table))
    print(f"Spearman(reading, sentiment) over all {len(rows)}: {rho:.3f} (target >= 0.5); plain projection, no metric: {rho_plain:.3f}")
    c = results["cost"]
    print(f"speed with the reading on / off (steered by love, {c['requests']} requests x {c['tokens']} tokens, {c['rounds']} rounds): "
          f"{c['ratio_cpu']:.4f} CPU, {c['ratio_wall']:.4f} wall (noise ±{c['noise_cpu']:.3f}; target >= 0.97)")
    print(f"the reading's hook: {c['hook_us']:.1f} µs CPU per decode step, {100 * c['hook_share']:.2f} % of a "
          f"steered decode step ({c['step_us'] / 1000:.1f} ms)")


def plot(results: dict) -> None:
    plt = pyplot()
    if plt is None:
        return
    rows = results["meaning"]["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for dose, color in zip(DOSES, ("tab:gray", "tab:blue", "tab:orange", "tab:red")):
        mine = [r for r in rows if r["dose"] == dose]
        ax.scatter([r["reading"] for r in mine], [r["sentiment"] for r in mine], s=12, alpha=0.7, color=color,
                   label="unsteered" if not dose else f"love ×{dose:g}")
    ax.set_xlabel("love reading (σ of unsteered tokens)")
    ax.set_ylabel("VADER sentiment of the completion")
    ax.set_title(f'"{PROMPT}…": Spearman {results["spearman"]:.2f} (plain projection {results["spearman_plain_projection"]:.2f})', fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, "monitor_vs_sentiment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="completions per dose")
    parser.add_argument("--rounds", type=int, default=11, help="timing rounds of the cost")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per timed request")
    parser.add_argument("--requests", type=int, default=4, help="timed requests per round (benchmark prompts)")
    parser.add_argument("--plot", action="store_true", help="only redraw the plot from the last results")
    args = parser.parse_args()
    if args.plot:
        results = json.loads((RESULTS / "monitor.json").read_text())
    else:
        ctx = context()
        love = PresetStore(tempfile.mkdtemp()).vector("love", ctx)
        results = {"meaning": meaning(ctx, love, args.n), "cost": cost(ctx, love, args.rounds, args.tokens, args.requests)}
    report(results)
    if not args.plot:
        print(f"wrote {save_json('monitor', results)}")
    plot(results)


if __name__ == "__main__":
    main()
