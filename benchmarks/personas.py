"""Every shipped persona against the system prompt it stands in for, on held-out messages.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/personas.py [--only kind,json] [--held-out 30] [--via kl,contrast,direct]

For each shipped preset that names a system prompt S (``extra.system``, or a distill recipe's own),
the preset as shipped and S distilled by each method (``kl``, ``contrast``, ``direct``, the engine's
default layers and settings) are measured with ``engine.distill.evaluate_many``: KL recovery, the
behaviour score with S / without S / steered, prompt tokens saved, and time to first token steered
÷ with S, all in one run per prompt. Prints a markdown table, writes results/personas.json and
docs/personas.png (KL recovery per persona and method). About 20 minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import DOCS, load, markdown, pyplot, save_figure, save_json

from extensions.steering.engine import distill as d
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.presets import SHIPPED_DIR, build_recipe, read_recipe

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
    args = parser.parse_args()
    methods = [m for m in args.via.split(",") if m]
    model, tokenizer = load()
    shipped = {p.stem: read_recipe(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))}
    wanted = [n for n in args.only.split(",") if n] or [n for n, r in shipped.items() if d.stands_in_for(r)[0]]
    messages = d.held_out_messages(args.held_out)
    results, rows = {}, []
    for name in wanted:
        recipe = shipped[name]
        system, metric = d.stands_in_for(recipe)
        candidates, builds = [], {}
        for shown, preset in [(name, recipe)] + [(other, shipped[other]) for other in ALSO_AGAINST.get(name, [])]:
            candidates.append((f"{shown} (as shipped)", [Steer(build_recipe(preset, model, tokenizer), preset.strength, preset.mode)]))
        own_via = d.recipe_options(recipe)["via"] if recipe.method == "distill" else None
        for via in methods:
            if via == own_via:
                continue  # the shipped preset is this method
            options = {"steps": args.steps} if via == "kl" and args.steps else {}
            distilled = d.distill_recipe(f"{name}-{via}", system, via=via, metric=metric, **options)
            start = time.perf_counter()
            vector = build_recipe(distilled, model, tokenizer)
            builds[via] = time.perf_counter() - start
            candidates.append((f"distilled via {via}", [Steer(vector, distilled.strength, distilled.mode)]))
        print(f"{name}: {len(candidates)} stand-ins for {system!r} (builds: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in builds.items()) + ")", file=sys.stderr, flush=True)
        measured = d.evaluate_many(model, tokenizer, system, candidates, messages, metric,
                                   behaviour_tokens=args.behaviour_tokens, ttft_rounds=args.ttft_rounds)
        results[name] = {"system": system, "metric": metric, "build_seconds": builds, "candidates": dict(measured)}
        for shown, r in measured:
            rows.append([name, r["system_tokens"], shown, f"{r['kl_recovery']:.2f}", r["metric"],
                         f"{r['behaviour_with_system']:.2f}", f"{r['behaviour_without']:.2f}", f"{r['behaviour_steered']:.2f}",
                         f"{r['readable_steered']:.2f}", f"{r['tokens_saved']:.0f}", f"{r['ttft_ratio']:.2f}"])
    print(f"\n{len(messages)} held-out messages; KL over the first {d.EVAL_REPLY_TOKENS} tokens of greedy with-S replies; "
          f"behaviour on {args.behaviour_tokens}-token greedy replies")
    print(markdown(["persona", "S tokens", "stand-in", "KL recovery", "metric", "with S", "without S", "steered",
                    "readable steered", "tokens saved", "TTFT steered ÷ with S"], rows))
    print(f"wrote {save_json('personas', {'held_out': len(messages), 'results': results})}")
    plot(results)


def plot(results: dict) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    personas = list(results)
    kinds = list(dict.fromkeys(k if "shipped" not in k else "as shipped" for r in results.values() for k in r["candidates"]))
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.55 * len(personas)))
    height = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        ys, xs = [], []
        for y, persona in enumerate(personas):
            for shown, r in results[persona]["candidates"].items():
                if (kind == "as shipped" and shown == f"{persona} (as shipped)") or shown == kind:
                    ys.append(y + (k - (len(kinds) - 1) / 2) * height)
                    xs.append(r["kl_recovery"])
        ax.barh(ys, xs, height, label=kind)
    ax.set_yticks(range(len(personas)), [f"{p} ({results[p]['candidates'][next(iter(results[p]['candidates']))]['system_tokens']} tok)" for p in personas])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.axvline(0.5, color="red", linestyle=":", linewidth=1, label="target 0.5 (kind)")
    ax.set_xlabel("KL recovery on held-out messages (1 = the system prompt's full effect, 0 = none)")
    ax.set_xlim(min(-0.2, min(r["kl_recovery"] for v in results.values() for r in v["candidates"].values()) - 0.05), 1.0)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("How much of a system prompt a steering vector recovers (SmolLM2-135M-Instruct, CPU)", fontsize=9)
    return save_figure(fig, "personas")


if __name__ == "__main__":
    main()
