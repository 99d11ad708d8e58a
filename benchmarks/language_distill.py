"""A language from one instruction: "Always reply in X." distilled at the defaults, against the model told it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/language_distill.py

Issue 21 item 4 (research). For Spanish and French, the instruction is distilled (`distill NAME --system
"Always reply in X."`, every default) and 4 completions per chat prompt (the held-out set's chat prompts,
measured only; the CLI's sampling, seed 0) are scored by the language's share of function words, untold,
told, and steered by the vector at dose 1 and 1.5. Fluency is the median perplexity of the completions under
the model TOLD to use the language (the unsteered model's perplexity counts the switch of language itself),
as a ratio to the told completions'. Writes results/language_distill.json.
"""
import statistics
import time

from common import context, save_json

from extensions.steering.engine import distill as d
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.generation import Sampling, prompt_ids, sample_batch
from extensions.steering.engine.methods import build_recipe
from extensions.steering.engine.metrics import french_share, perplexity, spanish_share

PROMPTS = ["How was your week?", "What should I do this afternoon?", "Tell me something about yourself."]  # untuned_set.yaml's chat prompts
N = 4


def main() -> None:
    ctx = context()
    sampling = Sampling()
    found = {}
    for lang, share in (("Spanish", spanish_share), ("French", french_share)):
        system = f"Always reply in {lang}."
        t = time.process_time()
        recipe = d.distill_recipe(lang, system)
        vector = build_recipe(recipe, ctx)
        fit = time.process_time() - t
        rows = {}
        for cond, dose in (("untold", None), ("told", None), ("vector x1", 1.0), ("vector x1.5", 1.5)):
            texts, ppl = [], []
            for p in PROMPTS:
                plain = prompt_ids(ctx, p, True)
                told = prompt_ids(ctx, p, True, system=system)
                ids = told if cond == "told" else plain
                if dose:
                    with steer(ctx, [Steer(vector, dose, recipe.mode)]):
                        out = sample_batch(ctx, ids, N, 0, sampling)
                else:
                    out = sample_batch(ctx, ids, N, 0, sampling)
                texts += out
                ppl += [perplexity(ctx, told, x) for x in out]  # under the model TOLD to use the language
            rows[cond] = (sum(share(x) for x in texts) / len(texts), statistics.median(ppl), texts[0][:90])
        found[lang] = {"fit_cpu_s": fit, "steps": recipe.distill.steps,
                       **{cond: {"function_words": v[0], "perplexity_told_model": v[1], "ratio": v[1] / rows["told"][1], "example": v[2]}
                          for cond, v in rows.items()}}
        base = rows["told"][1]
        print(f"{lang}: fit {fit:.0f} s CPU, steps {recipe.distill.steps}", flush=True)
        for cond, (s, p, ex) in rows.items():
            print(f"  {cond:12} function words {100*s:3.0f} %  ppl(told model) {p:6.2f}  ({p/base:.2f}x told)  e.g. {ex!r}", flush=True)
    print(f"wrote {save_json('language_distill', {'prompts': PROMPTS, 'n': N, 'results': found})}")


if __name__ == "__main__":
    main()
