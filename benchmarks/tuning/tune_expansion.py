"""Pair expansion, tuned: each contrast of the tuning set built with and without expansion, compared at equal KL.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/tune_expansion.py [--variants none,v1] [--only happy trains ...]
        [--layers 20%,27% | auto [--candidates 20%,...]] [--doses 1] [--n 8] [--prompts 3] [--budget 0.25] [--tag NAME]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/tune_expansion.py --sentences [--variants none,sentence-v1,sentence+v1] [--n 8]

The contrasts are benchmarks/tuning/tuning_set.yaml (the tuning set; the held-out set is never read here). For
each contrast and variant the vector is built at --layers (a comma list, or ``auto``: the layer chosen by
engine/calibration.choose_layer), calibrated with engine/calibration.py (iso-KL: the multiplier at which
the steered model spends the KL budget on the calibration probe), and applied at each dose (1 = that
multiplier), so every variant spends the same distribution shift and only what it moves differs. Then
--n completions of each of the first --prompts prompts (chat template, temperature 0.7, top-p 0.9, 40 new
tokens, seed 0; the same seeds unsteered) are scored with the contrast's metric, and the fluency cost is
the perplexity ratio: the median perplexity of the steered completions under the unsteered model over
that of the unsteered completions.

Variants: ``none`` (the pair read as raw text, engine/build.py's mean, as before expansion); ``actadd`` (the
pair's per-position rows added at the prompt's first positions, mode actadd; not with ``auto``); ``v1`` (the
expansion named so); and candidates built from v1's pairs: ``last`` (only the prompt's last token read),
``all`` (every position after the sink, the contrast's words included), ``frame0``/``frame1``/...
(one framing alone). Results go to benchmarks/results/tune_expansion.json under --tag (default: the
layers), one entry per contrast and variant, saved after each.

--sentences: the tuning set's sentence pairs (``sentences``; the held-out weddings pair is never read here)
instead, each built as the defaults build it (``mean``, ``layers: auto``, ``strength: auto``: the measured
layer, calibrated to the KL budget), with ``expand`` set by the variant: ``none`` (read as raw text, as
before sentence-v1), an expansion version (engine/expansion.py VERSIONS), or ``sentence+v1`` (the sentence
framing and v1's three). Then --n completions per opening (raw text) and per message (chat template) of
the set's ``sentence_prompts``, sampled as above, the same seeds unsteered, are scored with the pair's
metric; the fluency cost is the steered completions' median perplexity under the unsteered model over the
unsteered ones', per prompt, averaged. Results under --tag (default: sentences).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common
from common import RESULTS, context, markdown, save_json  # noqa: E402

from extensions.steering.engine import calibration as cal  # noqa: E402
from extensions.steering.engine import expansion, methods  # noqa: E402
from extensions.steering.engine.apply import Steer  # noqa: E402
from extensions.steering.engine.build import Tokens, build_actadd, build_from_pairs, from_differences, token_differences  # noqa: E402
from extensions.steering.engine.distill.recipes import distill_recipe  # noqa: E402
from extensions.steering.engine.effects import EffectMeter, Samples  # noqa: E402
from extensions.steering.engine.generation import Sampling  # noqa: E402
from extensions.steering.engine.methods import build_vector  # noqa: E402
from extensions.steering.engine.metrics import metric, topic_share  # noqa: E402
from extensions.steering.engine.recipe import Recipe  # noqa: E402
from extensions.steering.engine.tokens import prompt_ids  # noqa: E402

SET = Path(__file__).resolve().parent / "tuning_set.yaml"
SAMPLING = Sampling(max_new_tokens=40, temperature=0.7, top_p=0.9)
COMBINED = "sentence+v1"  # a --sentences candidate only: the sentence framing with v1's three
DISTILL_FRAMING = "Whatever the user says, talk about {}."  # variants prompt and distill: expansion v1's topic framing


def metric_of(contrast: dict):
    return topic_share(contrast["words"]) if contrast["metric"] == "topic" else metric(contrast["metric"]).score


def clearly_moved(contrast: dict, before: float, after: float) -> bool:
    """The issue's bar: sentiment shifted by >= 0.2 the right way; a topic on >= 30 % of completions from
    below 5 %; a language >= 50 % of function words; a format or style on >= 30 % more of them."""
    sign = 1 if contrast["higher"] else -1
    if contrast["metric"] == "sentiment":
        return sign * (after - before) >= 0.2
    if contrast["metric"] in ("topic", "pirate"):
        return before < 0.05 and after >= 0.3
    if contrast["metric"] == "french":
        return after >= 0.5
    return after - before >= 0.3


def vector_of(ctx, variant: str, positive: str, negative: str, layers: list[int]):
    if variant == "actadd":  # the seed's method: the pair's rows added at the prompt's first positions
        return build_actadd(ctx, positive, negative, layers)
    if variant == "none":
        return build_from_pairs(ctx, [(positive, negative)], layers, "mean", "mean")
    if variant in expansion.VERSIONS:
        return expansion.build_expanded(ctx, positive, negative, layers, "mean", variant)
    pairs = expansion.expanded_pairs(ctx, positive, negative)
    reading = "mean"
    if variant == "last":  # the prompt's last token: the one that predicts the reply
        sides = [tuple(Tokens(s.ids[: s.start + 1], s.start) for s in (p.positive, p.negative)) for p in pairs]
        reading = "last"
    elif variant == "all":  # every position after the sink, the contrast's own tokens included
        sides = [tuple(Tokens(s.ids, 1) for s in (p.positive, p.negative)) for p in pairs]
    elif variant.startswith("frame"):
        framing = expansion.VERSIONS[expansion.EXPANSION].framings[int(variant[5:])]
        sides = [(p.positive, p.negative) for p in pairs if p.framing == framing]
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return from_differences(*token_differences(ctx, sides, layers, reading), "mean")


def mode_of(variant: str) -> str:
    return "actadd" if variant == "actadd" else "all"


def made_sentence(ctx, pair: dict, variant: str, budget: float | None) -> methods.Made:
    """The pair as the defaults build it (mean, layers auto, strength auto), with ``expand`` set by the variant;
    COMBINED is no version of the engine's: its vector is built here and chosen and calibrated as make does."""
    recipe = Recipe(pair["name"], positive=[pair["positive"]], negative=[pair["negative"]], method="mean",
                    expand=None if variant in ("none", COMBINED) else variant)
    if variant != COMBINED:
        return methods.build_vector(recipe, ctx, budget=budget)
    combined = expansion.Version(("{}", *expansion.V1.framings), expansion.V1.exchanges)  # the sentence framing with v1's three
    vector = expansion.build_expanded(ctx, pair["positive"], pair["negative"], recipe.layer_indices(ctx.num_layers), "mean", combined)
    return methods.build_vector(recipe, ctx, budget=budget, vector=vector)


def load_results() -> dict:
    path = RESULTS / "tune_expansion.json"
    return json.loads(path.read_text()) if path.exists() else {}


def tune_sentences(args, spec: dict) -> None:
    """--sentences: each sentence pair at the defaults, read as written against expanded."""
    ctx = context()
    kinds = {"raw": (False, spec["sentence_prompts"]["raw"]), "chat": (True, spec["sentence_prompts"]["chat"])}
    meter = EffectMeter(ctx, SAMPLING, args.n, seed=0)
    out = load_results()
    run = out[args.tag or "sentences"] = {"settings": {"n": args.n, "seed": 0, "sampling": vars(SAMPLING), "prompts": spec["sentence_prompts"]},
                                        "pairs": {}}
    rows = []
    for pair in spec["sentences"]:
        if args.only and pair["name"] not in args.only:
            continue
        score = topic_share(pair["words"]) if pair["metric"] == "topic" else metric("sentiment").score
        for variant in args.variants.split(","):
            began = time.perf_counter()
            made = made_sentence(ctx, pair, variant, args.budget)
            entry = {"layers": made.vector.layers, "seconds": time.perf_counter() - began}
            for kind, (chat, prompts) in kinds.items():
                effects = [meter.measure([prompt_ids(ctx, prompt, chat)], [Steer(made.vector, 1.0, "all")]) for prompt in prompts]
                before = sum((e.unsteered for e in effects), Samples())
                after = sum((e.steered for e in effects), Samples())
                entry[kind] = {"unsteered": before.score(score), "steered": after.score(score),
                               "perplexity_ratio": statistics.mean(e.perplexity_ratio for e in effects), "example": effects[-1].steered.texts[0][:120]}
            run["pairs"].setdefault(pair["name"], {})[variant] = entry
            rows.append([pair["name"], pair["metric"], variant, entry["layers"],
                         *(f"{entry[k]['unsteered']:.2f} → {entry[k]['steered']:.2f} ({entry[k]['perplexity_ratio']:.2f}×)" for k in kinds)])
            print(" | ".join(map(str, rows[-1])), flush=True)
            save_json("tune_expansion", out)
    print(markdown(["pair", "metric", "variant", "layer", "raw openings: metric (ppl ratio)", "chat messages: metric (ppl ratio)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", action="store_true", help="the tuning set's sentence pairs, each built at the defaults, read as written against expanded")
    parser.add_argument("--variants", default=None, help=f"default: none,v1 (with --sentences: none,{expansion.SENTENCE_EXPANSION},{COMBINED})")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--layers", default="20%,27%")
    parser.add_argument("--doses", default="1")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--candidates", default=",".join(cal.CANDIDATE_DEPTHS), help="with --layers auto: the depths it chooses from")
    parser.add_argument("--budget", type=float, default=None, help="the KL budget of calibration and layer choice (default: the engine's)")
    parser.add_argument("--framing", default=DISTILL_FRAMING, help="the system prompt of variants prompt and distill ({} is the positive side)")
    args = parser.parse_args()
    budget = cal.KL_BUDGET if args.budget is None else args.budget  # every calibration and layer choice below spends it
    spec = yaml.safe_load(SET.read_text())
    if args.sentences:
        args.variants = args.variants or f"none,{expansion.SENTENCE_EXPANSION},{COMBINED}"
        return tune_sentences(args, spec)
    args.variants = args.variants or "none,v1"
    contrasts = [c for c in spec["contrasts"] if not args.only or c["name"] in args.only]
    prompts = spec["prompts"][: args.prompts]
    ctx = context()
    probe = cal.Probe.of(ctx)
    auto = args.layers == "auto"
    layers = ctx.layer_indices(args.candidates.split(",") if auto else args.layers.split(","))
    tag = args.tag or f"layers {args.layers}"
    out = load_results()
    run = out.setdefault(tag, {})
    run["settings"] = {"layers": args.layers, "candidates": args.candidates if auto else None, "n": args.n, "prompts": prompts, "max_new_tokens": 40, "temperature": 0.7, "top_p": 0.9,
                       "seed": 0, "kl_budget": budget, "calibration_version": cal.VERSION, "expansion": expansion.EXPANSION}
    meter = EffectMeter(ctx, SAMPLING, args.n, seed=0)
    ids = [prompt_ids(ctx, prompt, chat=True) for prompt in prompts]
    base = sum((meter.unsteered(i) for i in ids), Samples())
    rows = []
    for contrast in contrasts:
        score = metric_of(contrast)
        before = base.score(score)
        entry = run.setdefault("contrasts", {}).setdefault(contrast["name"], {})
        entry["unsteered"] = {"metric": before, "perplexity": base.perplexity}
        for variant in args.variants.split(","):
            if variant == "prompt":  # no vector: the model told in its system turn, what a vector stands in for at best
                told = [prompt_ids(ctx, prompt, chat=True, system=args.framing.format(contrast["positive"].strip())) for prompt in prompts]
                effect = meter.measure(ids, [], told)
                texts = effect.steered.texts
                after, ratio = effect.steered.score(score), effect.perplexity_ratio
                entry["prompt"] = {"metric": after, "perplexity_ratio": ratio, "moved": clearly_moved(contrast, before, after),
                                   "system": args.framing.format(contrast["positive"].strip()), "examples": [t[:120] for t in texts[:: args.n][:3]]}
                rows.append([contrast["name"], contrast["metric"], variant, "-", "-", f"{before:.2f}", f"{after:.2f}", f"{ratio:.2f}",
                             "yes" if entry["prompt"]["moved"] and ratio <= 2 else "no"])
                print(" | ".join(str(x) for x in rows[-1]), flush=True)
                continue
            if variant == "distill":  # the positive side as a system prompt, fitted into a vector, at its own strength
                recipe = distill_recipe(contrast["name"], args.framing.format(contrast["positive"].strip()))
                vector = build_vector(recipe, ctx).vector
                found = cal.Calibration(1.0, probe.measure(vector, 1.0, "all").kl, budget, 1, 0.0, tuple(vector.layers))
            elif auto:
                vector = vector_of(ctx, variant, contrast["positive"], contrast["negative"], layers)
                vector, found = cal.choose_layer(ctx, vector, [contrast["positive"]], [contrast["negative"]], "all", budget, probe)
            else:
                vector = vector_of(ctx, variant, contrast["positive"], contrast["negative"], layers)
                found = cal.calibrate(ctx, vector, mode_of(variant), budget, probe)
            for dose in (float(d) for d in args.doses.split(",")):
                effect = meter.measure(ids, [Steer(vector * found.scale, dose, mode_of(variant))])
                texts = effect.steered.texts
                after, ratio = effect.steered.score(score), effect.perplexity_ratio
                moved = clearly_moved(contrast, before, after)
                entry[f"{variant} @ {dose:g}"] = {"metric": after, "perplexity_ratio": ratio, "moved": moved, "scale": found.scale, "kl": found.kl, "layers": list(found.layers),
                                                  "examples": [t[:120] for t in texts[:: args.n][:3]]}
                rows.append([contrast["name"], contrast["metric"], variant, f"{dose:g}", list(found.layers), f"{before:.2f}", f"{after:.2f}",
                             f"{ratio:.2f}", "yes" if moved and ratio <= 2 else "no"])
                print(" | ".join(str(x) for x in rows[-1]), "|", repr(texts[0][:80]), flush=True)
            save_json("tune_expansion", out)
    print(markdown(["contrast", "metric", "variant", "dose", "layers", "unsteered", "steered", "perplexity ratio", "moved, ratio <= 2"], rows))
    summary = {}
    for variant in args.variants.split(","):
        for dose in args.doses.split(","):
            key = f"{variant} @ {float(dose):g}"
            got = [e[key] for e in run["contrasts"].values() if key in e]
            summary[key] = {"moved_with_ratio_le_2": sum(g["moved"] and g["perplexity_ratio"] <= 2 for g in got), "of": len(got),
                            "median_perplexity_ratio": statistics.median(g["perplexity_ratio"] for g in got) if got else None}
    run["summary"] = summary
    print(json.dumps(summary, indent=1))
    save_json("tune_expansion", out)


if __name__ == "__main__":
    main()
