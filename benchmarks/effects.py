"""Effect curves: what each shipped recipe and each of the seed's examples does against strength, at several
layers, with its fluency cost beside it. Writes docs/effects_presets.png and docs/effects_seed.png.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/effects.py [--n 8] [--tokens 32] [--layers 3,6,12] [--only love,weddings]

Per point: --n sampled completions (temperature 0.7, top-p 0.9, one seed) of each of the recipe's first
two prompts, scored with the recipe's behaviour metric (the ones benchmarks/presets.py uses; the topic
examples score the share of completions that mention the topic, as in the ActAdd paper). Fluency cost,
as in the ActAdd paper: the median perplexity of the steered completions under the unsteered model, and
the perplexity of a fixed unrelated text (about bicycles) read under steering; plus the share of
readable completions. Shipped recipes (mean directions, mode all) are swept at one layer at a time,
strength as a share of the residual norm; the seed's examples are ActAdd prompt pairs (mode actadd),
strength as the paper's coefficient.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable

import torch
from common import RESULTS, ROOT, context, markdown, pyplot, save_figure, save_json

from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.build import build_actadd, build_from_pairs
from extensions.steering.engine.effects import sample_padded
from extensions.steering.engine.generation import Sampling
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.metrics import metric, readable, topic_share
from extensions.steering.engine.presets import SHIPPED_DIR
from extensions.steering.engine.recipe import read_recipe
from extensions.steering.engine.tokens import encode, prompt_ids

UNRELATED = (
    "The bicycle was invented in the early nineteenth century. Early designs had no pedals, and riders pushed "
    "themselves along with their feet. Pedals and cranks came later, and by the end of the century the safety "
    "bicycle, with two wheels of equal size and a chain drive, looked much like the bicycles we ride today."
)
MEAN_STRENGTHS = (0.1, 0.2, 0.35, 0.5)
ACTADD_STRENGTHS = (2.0, 5.0, 10.0, 20.0)
WEDDINGS = ("I talk about weddings constantly", "I do not talk about weddings constantly")  # the ActAdd paper's pair
WEDDING_PAIRS = [
    ("We talked about the wedding all day.", "We talked about the weather all day."),
    ("The bride and groom said their vows.", "The teacher and student said their goodbyes."),
    ("I love going to weddings.", "I love going to concerts."),
    ("Their wedding ceremony was beautiful.", "Their graduation ceremony was beautiful."),
    ("She tried on her wedding dress.", "She tried on her winter coat."),
    ("They got married in June.", "They moved house in June."),
]
NEUTRAL = ["I went up to my friend and said", "Yesterday afternoon I walked into the kitchen and"]


@dataclass
class Example:
    name: str
    metric: str
    score: Callable[[str], float]
    prompts: list[list[int]]
    build: Callable[[int], object]  # layer -> SteeringVector
    mode: str
    strengths: tuple[float, ...]


def preset_examples(ctx) -> list[Example]:
    spec = importlib.util.spec_from_file_location("preset_measurement", ROOT / "benchmarks" / "presets.py")
    measurement = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measurement)
    examples = []
    for name, (metric_name, _, prompts, chat) in measurement.EVALUATIONS.items():
        recipe = read_recipe(SHIPPED_DIR / f"{name}.yaml")
        examples.append(Example(
            name, metric_name, metric(metric_name).score, [prompt_ids(ctx, p, chat) for p in prompts[:2]],
            lambda layer, r=recipe: build_vector(replace(r, layers=[layer]), ctx).vector, recipe.mode, MEAN_STRENGTHS,
        ))
    return examples


def seed_examples(ctx) -> list[Example]:
    """The seed's examples, as ActAdd prompt pairs: Love - Hate, and the paper's topic vectors (one also as a mean)."""
    def actadd(positive, negative):
        return lambda layer: build_actadd(ctx, positive, negative, [layer])

    weddings = ["wedding", "weddings", "bride", "groom", "marriage", "married", "marry", "ceremony", "vows", "honeymoon", "engaged"]
    dogs = ["dog", "dogs", "puppy", "puppies", "bark", "barking", "leash", "canine", "pup"]
    neutral = [encode(ctx, p) for p in NEUTRAL]
    return [
        Example("Love - Hate", "sentiment", metric("sentiment").score, [encode(ctx, "I hate you because")],
                actadd("Love", "Hate"), "actadd", ACTADD_STRENGTHS),
        Example("weddings", "on topic", topic_share(weddings), neutral,
                actadd(*WEDDINGS), "actadd", ACTADD_STRENGTHS),
        Example("dogs", "on topic", topic_share(dogs), neutral,
                actadd("I talk about dogs constantly", "I do not talk about dogs constantly"), "actadd", ACTADD_STRENGTHS),
        # the topic as the engine's default recipe: the mean difference of wedding sentences and matched others
        Example("weddings (mean)", "on topic", topic_share(weddings), neutral,
                lambda layer: build_from_pairs(ctx, WEDDING_PAIRS, [layer], "mean"), "all", MEAN_STRENGTHS),
    ]


@torch.inference_mode()
def unrelated_perplexity(ctx, steers) -> float:
    ids = torch.tensor([encode(ctx, UNRELATED)])
    with steer(ctx, steers) if steers else nullcontext():
        logits = ctx.model(input_ids=ids).logits[0, :-1]
    return float(torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:]).exp())


def measure(ctx, example: Example, steers, args) -> dict:
    found = sample_padded(ctx, example.prompts, steers, args.n, args.seed, Sampling(max_new_tokens=args.tokens))
    return {
        "effect": statistics.mean(example.score(t) for t in found.texts),
        "completion_ppl": statistics.median(found.perplexities),
        "unrelated_ppl": unrelated_perplexity(ctx, steers),
        "readable": statistics.mean(readable(t) for t in found.texts),
        "example": found.texts[0][:80],
    }


def curves(ctx, example: Example, layers: list[int], args) -> dict:
    base = measure(ctx, example, [], args)
    out = {"metric": example.metric, "mode": example.mode, "unsteered": base, "layers": {}}
    for layer in layers:
        vector = example.build(layer)
        out["layers"][layer] = {s: measure(ctx, example, [Steer(vector, s, example.mode)], args) for s in example.strengths}
        for s, point in out["layers"][layer].items():
            print(f"  {example.name} L{layer} x{s:g}: {example.metric} {point['effect']:.2f}, ppl {point['completion_ppl']:.1f} | "
                  f"{point['unrelated_ppl']:.1f}, readable {point['readable']:.2f}  {point['example']!r}", flush=True)
    return out


def plot(results: dict, names: list[str], file: str, title: str) -> None:
    plt = pyplot()
    if plt is None or not names:
        return
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.3 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        r = results[name]
        for layer, points in r["layers"].items():
            xs = [0.0] + [float(s) for s in points]
            line = row[0].plot(xs, [r["unsteered"]["effect"]] + [p["effect"] for p in points.values()], "o-", label=f"layer {layer}")
            colour = line[0].get_color()
            row[1].plot(xs, [r["unsteered"]["completion_ppl"]] + [p["completion_ppl"] for p in points.values()], "o-", color=colour)
            row[1].plot(xs, [r["unsteered"]["unrelated_ppl"]] + [p["unrelated_ppl"] for p in points.values()], "x--", color=colour)
        row[0].set_ylabel(f"{name}\n{r['metric']}")
        row[0].set_xlabel("strength (" + ("ActAdd coefficient" if r["mode"] == "actadd" else "share of residual norm") + ")", fontsize=8)
        row[1].set_yscale("log")
        row[1].set_ylabel("perplexity")
        row[0].legend(fontsize=7)
    axes[0][1].set_title("fluency: completions (o, unsteered model) / unrelated text (x, steered)", fontsize=8)
    axes[0][0].set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="completions per prompt and point")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", default="3,6,12")
    parser.add_argument("--only", default="", help="comma-separated example names")
    parser.add_argument("--mean-strengths", default=",".join(map(str, MEAN_STRENGTHS)))
    parser.add_argument("--actadd-strengths", default=",".join(map(str, ACTADD_STRENGTHS)))
    parser.add_argument("--tag", default="", help="suffix for the output files (explorations keep the README's)")
    parser.add_argument("--plot", action="store_true", help="only redraw the plots from the last results")
    args = parser.parse_args()
    if args.plot:
        return plot_all(json.loads((RESULTS / f"effects{args.tag}.json").read_text())["results"], args.tag)
    strengths = {"all": tuple(map(float, args.mean_strengths.split(","))), "actadd": tuple(map(float, args.actadd_strengths.split(",")))}
    ctx = context()
    layers = [int(x) for x in args.layers.split(",")]
    groups = {"presets": preset_examples(ctx), "seed": seed_examples(ctx)}
    wanted = set(filter(None, args.only.split(",")))
    results, rows = {}, []
    for group, examples in groups.items():
        for example in examples:
            if wanted and example.name not in wanted:
                continue
            print(f"{example.name}:", flush=True)
            example.strengths = strengths[example.mode]
            r = results[example.name] = curves(ctx, example, layers, args) | {"group": group}
            u = r["unsteered"]
            rows.append([example.name, "-", 0, f"{u['effect']:.2f}", f"{u['completion_ppl']:.1f}", f"{u['unrelated_ppl']:.1f}", f"{u['readable']:.2f}"])
            for layer, points in r["layers"].items():
                for s, p in points.items():
                    rows.append([example.name, layer, s, f"{p['effect']:.2f}", f"{p['completion_ppl']:.1f}", f"{p['unrelated_ppl']:.1f}", f"{p['readable']:.2f}"])
    print(f"\nEffect against strength ({args.n} samples x {args.tokens} tokens per prompt and point)")
    print(markdown(["example", "layer", "strength", "effect", "completion ppl (median)", "unrelated-text ppl", "readable"], rows))
    plot_all(results, args.tag)
    print(f"wrote {save_json('effects' + args.tag, {'n': args.n, 'tokens': args.tokens, 'seed': args.seed, 'results': results})}")


def plot_all(results: dict, tag: str = "") -> None:
    for group, title in (("presets", "shipped recipes (mean, mode all), one layer at a time"), ("seed", "the seed's examples (ActAdd pairs; one also as a mean)")):
        plot(results, [n for n, r in results.items() if r["group"] == group], f"effects_{group}{tag}", title)


if __name__ == "__main__":
    main()
