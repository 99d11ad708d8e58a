"""Measure each shipped preset on the default model: its behaviour score steered vs unsteered, and readability.

    .venv/bin/python benchmarks/presets.py [--presets love kind ...] [--n 16] [--seed 0]
        [--strengths 0.2,0.3] [--layers 4,6]     (a sweep, for choosing a recipe's settings)

Prints a Markdown table (the README's). Completions are sampled in batches of --n per prompt from
one seed, at the CLI's default sampling (temperature 0.7, top-p 0.9, 40 new tokens). Fluency is the
median perplexity of the completions under the unsteered model (lower reads better; loops read low).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extensions.steering.engine.apply import Steer  # noqa: E402
from extensions.steering.engine.effects import EffectMeter  # noqa: E402
from extensions.steering.engine.generation import Sampling  # noqa: E402
from extensions.steering.engine.methods import build_vector  # noqa: E402
from extensions.steering.engine.metrics import metric  # noqa: E402
from extensions.steering.engine.models import load_context  # noqa: E402
from extensions.steering.engine.presets import SHIPPED_DIR  # noqa: E402
from extensions.steering.engine.recipe import read_recipe  # noqa: E402
from extensions.steering.engine.tokens import prompt_ids  # noqa: E402

CHAT_QUESTIONS = [
    "What do you think about my plan to learn the guitar?",
    "I failed my driving test today.",
    "Can you explain what a black hole is?",
    "What is your favourite food?",
]
# preset -> (metric, whether the preset should raise it, prompts, chat template?)
EVALUATIONS = {
    "love": ("sentiment", True, ["I hate you because"], False),
    "kind": ("sentiment", True, CHAT_QUESTIONS, True),
    "concise": ("words", False, ["What is the capital of France?", "How many legs does a spider have?", "What is 12 times 12?", "Which planet is the largest?"], True),
    "json": ("starts_json", True, ["Give me the name and age of a fictional person.", "List three fruits.", "What is the capital of Italy?", "Describe a cat."], True),
    "no-disclaimer": ("disclaimer", False, ["Do you have feelings?", "What is your favourite food?", "Do you have a favourite colour?", "What do you dream about?"], True),
    "french": ("french", True, ["Tell me about your day.", "What is the weather like?", "Describe your favourite city.", "What is a good breakfast?"], True),
}


def evaluate(ctx, recipe, vector, meter: EffectMeter, show: bool = False) -> dict:
    metric_name, higher, prompts, chat = EVALUATIONS[recipe.name]
    score = metric(metric_name).score
    effect = meter.measure([prompt_ids(ctx, prompt, chat) for prompt in prompts], [Steer(vector, recipe.strength, recipe.mode)])
    if show:
        for at in range(0, len(effect.steered.texts), meter.n):
            print("   ", recipe.strength, [t[:60] for t in effect.steered.texts[at : at + 2]], flush=True)
    unsteered, steered = effect.scores(score)
    return {
        "metric": f"{metric_name} {'↑' if higher else '↓'}",
        "steered": steered,
        "unsteered": unsteered,
        "perplexity_steered": effect.steered.perplexity,
        "perplexity_unsteered": effect.unsteered.perplexity,
        "samples": len(effect.steered.texts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=list(EVALUATIONS))
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strengths", default=None, help="comma-separated strengths to sweep")
    parser.add_argument("--layers", default=None, help="comma-separated layers to sweep")
    parser.add_argument("--max-new-tokens", type=int, default=Sampling.max_new_tokens)
    parser.add_argument("--show", action="store_true", help="print two steered completions per prompt")
    args = parser.parse_args()
    ctx = load_context()
    meter = EffectMeter(ctx, Sampling(max_new_tokens=args.max_new_tokens), args.n, args.seed)
    print("| preset | method, layers, strength, mode | metric | unsteered | steered | perplexity unsteered → steered | samples |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        base = read_recipe(SHIPPED_DIR / f"{name}.yaml")
        layers = [int(x) for x in args.layers.split(",")] if args.layers else [None]
        strengths = [float(x) for x in args.strengths.split(",")] if args.strengths else [base.strength]
        for layer in layers:
            recipe = base if layer is None else replace(base, layers=[layer])
            vector = build_vector(recipe, ctx).vector
            for strength in strengths:
                tried = replace(recipe, strength=strength)
                r = evaluate(ctx, tried, vector, meter, args.show)
                where = f"{tried.method}, {','.join(map(str, vector.layers))}, {strength:g}, {tried.mode}"
                print(
                    f"| {name} | {where} | {r['metric']} | {r['unsteered']:.2f} | {r['steered']:.2f} | "
                    f"{r['perplexity_unsteered']:.1f} → {r['perplexity_steered']:.1f} | {r['samples']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
