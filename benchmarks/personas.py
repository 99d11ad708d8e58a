"""Every shipped persona against the system prompt it stands in for, on held-out messages.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/personas.py [--only kind,json] [--held-out 30] [--via kl,contrast,direct]

For each shipped preset that names a system prompt S (``stands_in_for.system``, or a distill recipe's own;
``instead``: the system message the steered chat sends in its place, default none),
the preset as shipped and S distilled by each method (``kl``, ``contrast``, ``direct``, the engine's
default layers and settings) are measured with ``engine.distill.evaluate_many``: KL recovery, the
behaviour score with S / without S / steered, prompt tokens saved, and time to first token steered
÷ with S, all in one run per prompt. Prints a markdown table, writes results/personas.json and
docs/personas.png (KL recovery per persona and method). About 20 minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import RESULTS, load, markdown, pyplot, save_figure, save_json

from extensions.steering.engine import distill as d
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.context import ModelContext
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.metrics import metric as registered
from extensions.steering.engine.presets import SHIPPED_DIR
from extensions.steering.engine.recipe import read_recipe

# the shipped preset whose system prompt a persona's row compares against, and hand-written presets
# that also stand in for another persona's prompt (kind's sentence pairs against the long kind persona)
ALSO_AGAINST = {"kind-distilled": ["kind"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated preset names (default: every shipped preset with a system prompt)")
    parser.add_argument("--via", default="kl,contrast,direct", help="distillation methods to compare with the shipped preset")
    parser.add_argument("--held-out", type=int, default=None, help="held-out messages (default: all)")
    parser.add_argument("--ttft-rounds", type=int, default=2)
    parser.add_argument("--behaviour-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps of kl (default: the engine's)")
    parser.add_argument("--plot", action="store_true", help="only print the summary and draw docs/personas.png again from results/personas.json")
    args = parser.parse_args()
    if args.plot:
        results = json.loads((RESULTS / "personas.json").read_text())["results"]
        print(summary_table(results))
        plot(results)
        return
    methods = [m for m in args.via.split(",") if m]
    ctx = ModelContext.of(*load())
    shipped = {p.stem: read_recipe(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))}
    wanted = [n for n in args.only.split(",") if n] or [n for n, r in shipped.items() if r.target().system]
    messages = d.held_out_messages(args.held_out)
    results, rows = {}, []
    for name in wanted:
        recipe = shipped[name]
        target = recipe.target()
        system, metric, instead = target.system, target.metric, target.instead  # instead: the system message the steered chat keeps
        candidates, builds = [], {}
        for shown, preset in [(name, recipe)] + [(other, shipped[other]) for other in ALSO_AGAINST.get(name, [])]:
            candidates.append((f"{shown} (as shipped)", [Steer(build_vector(preset, ctx).vector, preset.strength, preset.mode)]))
        own_via = recipe.options.via if recipe.method == "distill" else None
        for via in methods:
            if via == own_via:
                continue  # the shipped preset is this method
            options = {"steps": args.steps} if via == "kl" and args.steps else {}
            distilled = distill_recipe(f"{name}-{via}", system, via=via, metric=metric, instead=instead, **options)
            start = time.perf_counter()
            vector = build_vector(distilled, ctx).vector
            builds[via] = time.perf_counter() - start
            candidates.append((f"distilled via {via}", [Steer(vector, distilled.strength, distilled.mode)]))
        print(f"{name}: {len(candidates)} stand-ins for {system!r} (builds: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in builds.items()) + ")", file=sys.stderr, flush=True)
        measured = d.evaluate_many(ctx, system, candidates, messages, metric,
                                   behaviour_tokens=args.behaviour_tokens, ttft_rounds=args.ttft_rounds, instead=instead)
        results[name] = {"system": system, "instead": instead, "metric": metric, "shipped_via": own_via, "build_seconds": builds,
                         "candidates": {shown: r.to_dict() for shown, r in measured}}
        for shown, r in measured:
            rows.append([name, r.system_tokens, shown, f"{r.kl_recovery:.2f}", r.metric,
                         f"{r.behaviour_with_system:.2f}", f"{r.behaviour_without:.2f}", f"{r.behaviour_steered:.2f}",
                         f"{r.readable_steered:.2f}", f"{r.tokens_saved:.0f}", f"{r.ttft_ratio:.2f}"])
    print(f"\n{len(messages)} held-out messages; KL over the first {d.EVAL_REPLY_TOKENS} tokens of greedy with-S replies; "
          f"behaviour on {args.behaviour_tokens}-token greedy replies")
    print(markdown(["persona", "S tokens", "stand-in", "KL recovery", "metric", "with S", "without S", "steered",
                    "readable steered", "tokens saved", "TTFT steered ÷ with S"], rows))
    print("\n" + summary_table(results))
    print(f"wrote {save_json('personas', {'held_out': len(messages), 'results': results})}")
    plot(results)


def summary_table(results: dict) -> str:
    """One row per persona (the README's table): scores with/without S, each stand-in's KL recovery."""
    def score(x: float, metric: str) -> str:
        return f"{x:.0f}" if metric == "words" else f"{x:.2f}"

    rows = []
    for persona, r in results.items():
        found, metric = r["candidates"], r["metric"]
        first = next(iter(found.values()))
        shipped = found[f"{persona} (as shipped)"]
        kl = found.get("distilled via kl") or (shipped if r["shipped_via"] == "kl" else None)
        hand = None if r["shipped_via"] else shipped
        system = r["system"] if len(r["system"]) <= 70 else r["system"][:68] + "…"
        rows.append([
            f"`{persona}`" + (f" (shipped, {r['shipped_via']})" if r["shipped_via"] else "") + f": *{system}*"
            + (f" (without S: *{r['instead']}*)" if r.get("instead") else ""), first["system_tokens"],
            f"{metric} {registered(metric).arrow}", score(first["behaviour_with_system"], metric),
            score(first["behaviour_without"], metric),
            f"{hand['kl_recovery']:.2f} / {score(hand['behaviour_steered'], metric)}" if hand else "—",
            f"**{kl['kl_recovery']:.2f}** / {score(kl['behaviour_steered'], metric)}" if kl else "—",
            *(f"{found[f'distilled via {via}']['kl_recovery']:.2f}" if f"distilled via {via}" in found else "—" for via in ("contrast", "direct")),
            f"{first['tokens_saved']:.0f}", f"{(kl or shipped)['ttft_ratio']:.2f}",
        ])
        for other in ALSO_AGAINST.get(persona, []):
            o = found[f"{other} (as shipped)"]
            rows.append([f"↳ the same S against the hand-written `{other}`", "", "", "", "",
                         f"{o['kl_recovery']:.2f} / {score(o['behaviour_steered'], metric)}", "", "", "", "", ""])
    return markdown(["persona: system prompt S", "S tokens", "score", "with S", "without S", "hand-written pairs (shipped): KL rec. / score",
                     "**distilled via kl**: KL rec. / score", "via contrast: KL rec.", "via direct: KL rec.", "tokens saved per request",
                     "TTFT steered ÷ with S"], rows)


HAND_WRITTEN = "hand-written pairs (shipped)"
CLIP = -1.0  # KL recovery far below 0 (a vector that moves the model elsewhere) is drawn at the edge, its value written


def category(persona: str, shown: str, shipped_via: str | None) -> str:
    if shown.startswith("distilled via "):
        return shown
    if shipped_via and shown == f"{persona} (as shipped)":
        return f"distilled via {shipped_via}"
    return HAND_WRITTEN


def plot(results: dict) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    personas = list(results)
    bars = {p: {category(p, shown, r.get("shipped_via")): m["kl_recovery"] for shown, m in r["candidates"].items()} for p, r in results.items()}
    kinds = [HAND_WRITTEN] + sorted({k for b in bars.values() for k in b} - {HAND_WRITTEN})
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.75 * len(personas)))
    height = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        ys, xs = [], []
        for y, persona in enumerate(personas):
            if kind in bars[persona]:
                ys.append(y + (k - (len(kinds) - 1) / 2) * height)
                xs.append(bars[persona][kind])
        ax.barh(ys, [max(x, CLIP) for x in xs], height, label=kind)
        for y, x in zip(ys, xs):
            if x < CLIP:
                ax.text(CLIP + 0.02, y, f"{x:.1f}", va="center", fontsize=6)
    tokens = {p: next(iter(r["candidates"].values()))["system_tokens"] for p, r in results.items()}
    ax.set_yticks(range(len(personas)), [f"{p}\n(S: {tokens[p]} tokens)" for p in personas], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.axvline(0.5, color="red", linestyle=":", linewidth=1, label="0.5 (the target for kind)")
    ax.set_xlim(CLIP, 1.0)
    ax.set_xlabel("KL recovery on held-out messages (1 = the system prompt's full effect, 0 = none, < 0 = further off than no prompt)")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    ax.set_title("How much of a system prompt a steering vector recovers (SmolLM2-135M-Instruct, CPU)", fontsize=9)
    return save_figure(fig, "personas")


if __name__ == "__main__":
    main()
