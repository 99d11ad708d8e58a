"""Calibrated strength: the KL budget chosen by measurement, the layer chosen by measurement, and what both cost.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py [--budgets 0.25,0.5,1] [--n 6] [--prompts 2] [--only love kind ...]
        [--layers BUDGET]      (also: auto layer against the fixed layers at that budget)
        [--cost-rounds 3]      (the cost of calibrating one vector, as a ratio to building it)

Sweep: every shipped preset built from prompts, at its own layers, and seven contrasts of our own written as
a new user would (one word, a short phrase or a sentence a side, method mean, layers 20 %+27 %), are calibrated to each
budget (engine/calibration.py) and sampled (temperature 0.7, top-p 0.9, 32 new tokens, --n completions for
each of its first --prompts prompts, from seed 0, the same seeds unsteered). Per budget: the ratio of the median completion perplexity
under the unsteered model, steered over unsteered, and the item's own behaviour metric. The chosen budget
is the largest of the sweep at which every item's perplexity ratio is at most MAX_PERPLEXITY_RATIO.
Cost: per item, the CPU seconds to calibrate the vector (probe made once per model, then cached) and to
choose its layer, over the seconds to build it; the median over items. Results: results/calibration.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

from common import RESULTS, context, markdown, save_json

from extensions.steering.engine import calibration as cal
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.effects import EffectMeter
from extensions.steering.engine.expansion import expansion_for
from extensions.steering.engine.generation import Sampling
from extensions.steering.engine.methods import METHODS, build_vector
from extensions.steering.engine.metrics import language_share, metric, topic_share
from extensions.steering.engine.presets import SHIPPED_DIR
from extensions.steering.engine.recipe import Recipe, read_recipe
from extensions.steering.engine.tokens import prompt_ids
from presets import CHAT_QUESTIONS, EVALUATIONS

MAX_PERPLEXITY_RATIO = 2.0
FIXED_LAYERS = ["20%", "27%"]  # mean/pca's layers before layers: auto
# this sweep's own German words (the registry's languages came later: its numbers were measured with these)
german_share = language_share(frozenset("der die das und ist ich nicht ein eine zu mit sie es wir auf für den dem von sich auch auf wie".split()))
COOKING = ("cook", "cooking", "recipe", "recipes", "food", "kitchen", "bake", "baking", "dish", "meal", "ingredients",
           "flour", "sauce", "oven", "delicious", "taste", "chef", "soup", "bread")
TRAINS = ("train", "trains", "railway", "rail", "station", "locomotive", "carriage", "platform", "track", "tracks")
RAIN = ("rain", "raining", "rainy", "storm", "storms", "thunder", "umbrella", "wet", "clouds", "cloudy", "drizzle", "downpour", "puddles")
# Our own contrasts (none of them in the held-out set): name -> (positive, negative, metric, higher, prompts, chat)
OWN = {
    "kindness": ("Kindness", "Cruelty", ("sentiment", metric("sentiment").score), True, CHAT_QUESTIONS[:3], True),
    "polite": ("Polite and respectful", "Rude and dismissive", ("sentiment", metric("sentiment").score), True, CHAT_QUESTIONS[1:4], True),
    "cooking": ("Cooking", "Taxes", ("on topic", topic_share(COOKING)), True, CHAT_QUESTIONS[:3], True),
    "rain": ("Rain and storms", "Dry weather", ("on topic", topic_share(RAIN)), True, CHAT_QUESTIONS[:3], True),
    "german": ("Deutsch", "English", ("German share", german_share), True, CHAT_QUESTIONS[:3], True),
    "capitals": ("SHOUTING IN CAPITAL LETTERS", "speaking in small letters", ("capitals", metric("capitals").score), True, CHAT_QUESTIONS[:3], True),
    # a sentence pair (expanded by sentence-v1), the tuning set's; results/calibration.json has its cost, not yet its sweep
    "trains-sentence": ("I talk about trains constantly", "I do not talk about trains constantly",
                        ("on topic", topic_share(TRAINS)), True, CHAT_QUESTIONS[:3], True),
}


def items(only: list[str] | None, prompts_each: int) -> dict[str, tuple[Recipe, tuple, bool, list[str], bool]]:
    """name -> (recipe at fixed layers and strength auto, (metric name, function), higher, its first prompts, chat)."""
    found = {}
    for name, (metric_name, higher, prompts, chat) in EVALUATIONS.items():
        recipe = read_recipe(SHIPPED_DIR / f"{name}.yaml")
        found[name] = (replace(recipe, strength=1.0, calibrated=True), (metric_name, metric(metric_name).score), higher, prompts[:prompts_each], chat)
    for name, (positive, negative, scored, higher, prompts, chat) in OWN.items():
        found[name] = (Recipe(name, [positive], [negative], method="mean", layers=FIXED_LAYERS, strength="auto"), scored, higher, list(prompts[:prompts_each]), chat)
    return {k: v for k, v in found.items() if not only or k in only}


def measure(meter: EffectMeter, prompts: list[str], chat: bool, steers, score) -> tuple[dict, dict]:
    """Unsteered (sampled once per prompt) and steered completions from the same seeds: each side's score and
    median perplexity under the unsteered model, the steered side with the ratio of the two."""
    effect = meter.measure([prompt_ids(meter.ctx, prompt, chat) for prompt in prompts], steers)

    def side(found) -> dict:
        return {"metric": found.score(score), "perplexity": found.perplexity, "samples": len(found.texts), "example": found.texts[0][:100]}

    return side(effect.unsteered), side(effect.steered) | {"perplexity_ratio": effect.perplexity_ratio}


def sweep(ctx, chosen: dict, budgets: list[float], meter: EffectMeter, out: dict) -> None:
    probe = cal.Probe.of(ctx)
    for name, (recipe, (metric_name, score), higher, prompts, chat) in chosen.items():
        vector = METHODS[recipe.method].build(recipe, ctx, recipe.layer_indices(ctx.num_layers), None)
        row = {"metric": f"{metric_name} {'↑' if higher else '↓'}", "budgets": {}}
        if recipe.name in EVALUATIONS:
            shipped = read_recipe(SHIPPED_DIR / f"{recipe.name}.yaml")
            row["shipped_strength"] = shipped.strength
            row["shipped_kl"] = probe.measure(vector, shipped.strength, recipe.mode).kl
        for budget in budgets:
            found = cal.calibrate(ctx, vector, recipe.mode, budget, probe)
            base, steered = measure(meter, prompts, chat, [Steer(vector * found.scale, 1.0, recipe.mode)], score)
            row["unsteered"] = base
            row["budgets"][f"{budget:g}"] = steered | {"scale": found.scale, "kl": found.kl}
            print(f"{name:>14} budget {budget:<5g} scale {found.scale:.3f} kl {found.kl:.3f} | {metric_name} {base['metric']:.2f} -> "
                  f"{steered['metric']:.2f} | perplexity x{steered['perplexity_ratio']:.2f} | {steered['example'][:60]!r}", flush=True)
        out.setdefault("sweep", {})[name] = row
        save_json("calibration", out)


def layers(ctx, chosen: dict, budget: float, meter: EffectMeter, out: dict) -> None:
    """At ``budget``: the auto layer against the fixed layers (both calibrated)."""
    for name, (recipe, (metric_name, score), higher, prompts, chat) in chosen.items():
        row = {}
        for label, layers_ in (("fixed 20%+27%" if recipe.name not in EVALUATIONS else "recipe's layers", recipe.layers), ("auto", ["auto"])):
            made = build_vector(replace(recipe, layers=layers_), ctx, budget=budget)
            vector, found = made.vector, made.calibration
            base, steered = measure(meter, prompts, chat, [Steer(vector, 1.0, recipe.mode)], score)
            row["unsteered"] = base
            row[label] = steered | {"layers": found.layers, "kl": found.kl, "scores": found.scores}
            print(f"{name:>14} {label:>15} layers {found.layers} | {metric_name} {base['metric']:.2f} -> {steered['metric']:.2f} | "
                  f"perplexity x{steered['perplexity_ratio']:.2f}", flush=True)
        out.setdefault("layers", {"budget": budget, "items": {}})["items"][name] = row
        save_json("calibration", out)


def cost(ctx, chosen: dict, rounds: int, out: dict) -> None:
    """CPU seconds: the build (and, for one pair of words or sentences, the expanded build new presets get); calibrating that
    vector (the probe made fresh, then cached); building at the candidate layers and choosing one, calibrated."""
    rows = {}
    for name, (recipe, *_rest) in chosen.items():
        variants = {"build": recipe}
        version = expansion_for(recipe.positive, recipe.negative)
        if version:
            variants["build (expanded)"] = replace(recipe, expand=version)
        times: dict[str, list[float]] = {k: [] for k in [*variants, "calibrate (first, with probe)", "calibrate", "auto layer + calibrate"]}
        for _ in range(rounds):
            for label, variant in variants.items():
                clock = time.process_time()
                vector = METHODS[variant.method].build(variant, ctx, variant.layer_indices(ctx.num_layers), None)
                times[label].append(time.process_time() - clock)
            cal._PROBES.clear()
            clock = time.process_time()
            cal.calibrate(ctx, vector, recipe.mode)
            times["calibrate (first, with probe)"].append(time.process_time() - clock)
            clock = time.process_time()
            cal.calibrate(ctx, vector, recipe.mode)
            times["calibrate"].append(time.process_time() - clock)
            clock = time.process_time()
            build_vector(replace(variant, layers=["auto"]), ctx)
            times["auto layer + calibrate"].append(time.process_time() - clock)
        rows[name] = {k: statistics.median(v) for k, v in times.items()}
        print(name, {k: round(v, 2) for k, v in rows[name].items()}, flush=True)
    ratios = {}
    for base in ("build", "build (expanded)"):
        over = [r for r in rows.values() if base in r]
        for k in ("calibrate (first, with probe)", "calibrate", "auto layer + calibrate"):
            if over:
                ratios[f"{k} / {base}"] = statistics.median(r[k] / r[base] for r in over)
    out["cost"] = {"cpu_seconds": rows, "median_ratio": ratios, "rounds": rounds}
    print(markdown(["ratio (median over items)", "value"], [[k, v] for k, v in ratios.items()]))
    save_json("calibration", out)


def choose(out: dict) -> float | None:
    """The largest budget at which every item's perplexity ratio is at most MAX_PERPLEXITY_RATIO."""
    budgets = sorted({float(b) for row in out.get("sweep", {}).values() for b in row["budgets"]})
    ok = [b for b in budgets if all(row["budgets"].get(f"{b:g}", {}).get("perplexity_ratio", float("inf")) <= MAX_PERPLEXITY_RATIO
                                    for row in out["sweep"].values())]
    return max(ok) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.25,0.5,1")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per item (its first ones)")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--layers", type=float, default=None, metavar="BUDGET")
    parser.add_argument("--cost-rounds", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    path = RESULTS / "calibration.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out.pop("machine", None)
    ctx = context()
    chosen = items(args.only, args.prompts)
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    meter = EffectMeter(ctx, sampling, args.n, seed=0)
    out["settings"] = {"n": args.n, "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "seed": 0, "rollout_tokens": cal.ROLLOUT_TOKENS,
                       "max_perplexity_ratio": MAX_PERPLEXITY_RATIO, "module_budget": cal.KL_BUDGET}
    if not args.no_sweep:
        sweep(ctx, chosen, [float(b) for b in args.budgets.split(",")], meter, out)
        out["chosen_budget"] = choose(out)
        print(f"largest budget with every perplexity ratio <= {MAX_PERPLEXITY_RATIO:g}: {out['chosen_budget']}")
        save_json("calibration", out)
    if args.layers is not None:
        layers(ctx, chosen, args.layers, meter, out)
    if args.cost_rounds:
        cost(ctx, chosen, args.cost_rounds, out)


if __name__ == "__main__":
    main()
