"""Sentence pairs, tuned: each of the tuning set's sentence pairs read as written against expanded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_sentences.py [--variants none,sentence-v1,sentence+v1] [--n 8]

The pairs are benchmarks/tuning_set.yaml ``sentences`` (the held-out weddings pair is never read here).
Each is built as the defaults build it (``mean``, ``layers: auto``, ``strength: auto``: the measured
layer, calibrated to the KL budget), with ``expand`` set by the variant: ``none`` (read as raw text, as
before sentence-v1), an expansion version (engine/expansion.py VERSIONS), or ``sentence+v1`` (the
sentence framing and v1's three). Then --n completions per opening (raw text) and per message (chat
template), temperature 0.7, top-p 0.9, 40 new tokens, seed 0, the same seeds unsteered, are scored with
the pair's metric; the fluency cost is the steered completions' median perplexity under the unsteered
model over the unsteered ones', per prompt, averaged. Results: benchmarks/results/tune_sentences.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import yaml
from common import ROOT, context, markdown, save_json

from extensions.steering.engine import expansion, methods
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.generation import Sampling, prompt_ids, sample_batch
from extensions.steering.engine.metrics import mean, perplexity, sentiment, topic_share
from extensions.steering.engine.recipe import Recipe

SET = ROOT / "benchmarks" / "tuning_set.yaml"
COMBINED = "sentence+v1"  # a candidate only: the sentence framing with v1's three


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=f"none,{expansion.SENTENCE_EXPANSION},{COMBINED}")
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    expansion.VERSIONS[COMBINED] = expansion.Version(("{}", *expansion.V1.framings), expansion.V1.exchanges)
    spec = yaml.safe_load(SET.read_text())
    ctx = context()
    sampling = Sampling(max_new_tokens=40, temperature=0.7, top_p=0.9)
    kinds = {"raw": (False, spec["sentence_prompts"]["raw"]), "chat": (True, spec["sentence_prompts"]["chat"])}
    unsteered = {}
    for kind, (chat, prompts) in kinds.items():
        for prompt in prompts:
            ids = prompt_ids(ctx, prompt, chat)
            texts = sample_batch(ctx, ids, args.n, 0, sampling)
            unsteered[prompt] = (ids, texts, statistics.median(perplexity(ctx, ids, t) for t in texts))
    out: dict = {"settings": {"n": args.n, "seed": 0, "sampling": vars(sampling), "prompts": spec["sentence_prompts"]}, "pairs": {}}
    rows = []
    for pair in spec["sentences"]:
        score = topic_share(pair["words"]) if pair["metric"] == "topic" else sentiment
        for variant in args.variants.split(","):
            began = time.perf_counter()
            recipe = Recipe(pair["name"], positive=[pair["positive"]], negative=[pair["negative"]], method="mean",
                            expand=None if variant == "none" else variant)
            made = methods.make(recipe, ctx)
            entry = {"layers": made.vector.layers, "seconds": time.perf_counter() - began}
            for kind, (chat, prompts) in kinds.items():
                before, after, ratios = [], [], []
                for prompt in prompts:
                    ids, base, base_ppl = unsteered[prompt]
                    with steer(ctx, [Steer(made.vector, 1.0, "all")]):
                        texts = sample_batch(ctx, ids, args.n, 0, sampling)
                    before += [score(t) for t in base]
                    after += [score(t) for t in texts]
                    ratios.append(statistics.median(perplexity(ctx, ids, t) for t in texts) / base_ppl)
                entry[kind] = {"unsteered": mean(before), "steered": mean(after), "perplexity_ratio": statistics.mean(ratios),
                               "example": texts[0][:120]}
            out["pairs"].setdefault(pair["name"], {})[variant] = entry
            rows.append([pair["name"], pair["metric"], variant, entry["layers"],
                         *(f"{entry[k]['unsteered']:.2f} → {entry[k]['steered']:.2f} ({entry[k]['perplexity_ratio']:.2f}×)" for k in kinds)])
            print(" | ".join(map(str, rows[-1])), flush=True)
            save_json("tune_sentences", out)
    print(markdown(["pair", "metric", "variant", "layer", "raw openings: metric (ppl ratio)", "chat messages: metric (ppl ratio)"], rows))


if __name__ == "__main__":
    main()
