"""Steering's cost in generation speed: greedy tokens per second steered over unsteered, on the default model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overhead.py [--rounds 11] [--tokens 32] [--batches 1,8]

Contenders, each against no steering, at every batch size (batch 8: eight different prompts,
left-padded, so the padded path of the hooks runs): one vector in mode ``all``, ``actadd`` and
``generated`` at layer 8, and four vectors on layers 4, 8, 12, 16 (``all``). Reports the median over
rounds of the per-round speed ratio (CPU time; wall clock beside it). Target: >= 0.99 at batch 1.

Beside it, free of the machine's noise: the CPU time the steering hooks themselves take per decode
step (timed by calling them directly, many times), as a share of an unsteered decode step.
"""
from __future__ import annotations

import argparse
import time

import torch
from common import (
    LAYER,
    PROMPTS,
    alternate,
    context,
    greedy,
    left_padded,
    markdown,
    median_time,
    pyplot,
    random_direction,
    ratio_bars,
    round_ratios,
    save_figure,
    save_json,
    speed_ratio,
    spread,
)

from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.build import build_actadd
from extensions.steering.engine.vector import SteeringVector


def contenders(ctx) -> dict[str, list[Steer]]:
    hidden = ctx.hidden_size
    one = SteeringVector({LAYER: random_direction(hidden, 1.0)})
    four = SteeringVector({layer: random_direction(hidden, 1.0, seed=layer) for layer in (4, 8, 12, 16)})
    actadd = build_actadd(ctx, "Love", "Hate", [LAYER])
    return {
        "1 vector, all": [Steer(one, 0.3, "all")],
        "1 vector, actadd": [Steer(actadd, 3.0, "actadd")],
        "1 vector, generated": [Steer(one, 0.3, "generated")],
        "4 vectors on 4 layers, all": [Steer(four, 0.3, "all")],
    }


def hook_microseconds(ctx, ids, mask, steers, repeats: int = 2000) -> float:
    """CPU microseconds the hooks take in one decode step: the owner's pre-hook plus every block hook.

    Reaches into SteeringHandle to call its hooks directly (a prefill first sets what they know)."""
    with torch.inference_mode(), steer(ctx, steers) as handle:
        past = ctx.model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
        step = {"input_ids": ids[:, -1:], "attention_mask": torch.cat([mask, mask[:, -1:]], 1), "past_key_values": past, "use_cache": True}
        hidden = torch.zeros(ids.shape[0], 1, ctx.hidden_size)
        blocks = [(handle.layers.blocks[i], handle._block_hook(i)) for i in handle._plans]
        start = time.process_time()
        for _ in range(repeats):
            handle._on_forward(handle.layers.owner, (), step)
            for block, hook in blocks:
                hook(block, (hidden,), {})
        return (time.process_time() - start) / repeats * 1e6


def run(ctx, batch: int, tokens: int, rounds: int) -> dict:
    ids, mask = left_padded(ctx, [PROMPTS[i % len(PROMPTS)] for i in range(batch)])

    def generate(steers):
        if not steers:
            return lambda: greedy(ctx, ids, mask, tokens)

        def steered():
            with steer(ctx, steers):
                greedy(ctx, ids, mask, tokens)

        return steered

    steers = contenders(ctx)
    runs = {"unsteered": generate([])} | {name: generate(s) for name, s in steers.items()}
    times = alternate(runs, rounds)
    step_us = median_time(times, "unsteered") / tokens * 1e6
    return {
        "batch": batch, "tokens": tokens, "rounds": rounds,
        "unsteered_tokens_per_cpu_s": batch / step_us * 1e6,
        "noise": spread(times, "unsteered"),
        "ratios": {
            name: {
                "cpu": speed_ratio(times, name, "unsteered"),
                "wall": speed_ratio(times, name, "unsteered", clock=0),
                "hook_us": (us := hook_microseconds(ctx, ids, mask, steers[name])),
                "hook_share": us / step_us,
            }
            for name in steers
        },
        "times": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    ctx = context()
    results = [run(ctx, int(b), args.tokens, args.rounds) for b in args.batches.split(",")]
    rows = []
    for r in results:
        for name, ratio in r["ratios"].items():
            rows.append([
                r["batch"], name, f"{ratio['cpu']:.3f}", f"{ratio['wall']:.3f}", f"±{r['noise']:.1%}",
                f"{ratio['hook_us']:.0f} µs = {ratio['hook_share']:.2%}", f"{r['unsteered_tokens_per_cpu_s']:.1f}",
            ])
    print(f"\nGreedy generation, {args.tokens} new tokens, median of {args.rounds} alternating rounds (speed steered / unsteered)")
    headers = ["batch", "steering", "ratio (CPU time)", "ratio (wall)", "noise (unsteered IQR/2)", "hooks per decode step", "unsteered tokens per CPU-s"]
    print(markdown(headers, rows))
    plot(results)
    print(f"wrote {save_json('overhead', {'results': results})}")


def plot(results: list[dict]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 3.2))
    groups = {f"batch {r['batch']}": {name: round_ratios(r["times"], name, "unsteered") for name in r["ratios"]} for r in results}
    ratio_bars(ax, groups, target=0.99)
    ax.set_title("Greedy generation speed with steering, default model, CPU (median and IQR of alternating rounds)", fontsize=8)
    save_figure(fig, "overhead")


if __name__ == "__main__":
    main()
