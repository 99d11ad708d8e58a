"""A language from one pair: `build NAME --positive X --negative English` at the defaults (which distils "Always
reply in X.", engine/languages.py), against the model told it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/language_distill.py [--languages Spanish,French,German,Italian] [--n 4]

Issue 21 item 4. For each language, the recipe is made exactly as `build` makes it from the pair (language_recipe of
the default-method recipe; every default) and built (timed: CPU and wall seconds, and the torch threads). Then --n
completions per chat prompt (untuned_set.yaml's chat prompts, measured only; the CLI's sampling, seed 0) are scored
by the language's share of function words: untold, told ("Always reply in X." as the system message) and steered by
the vector at dose 1. Fluency is the median perplexity of the completions under the model TOLD to use the language
(the unsteered model's perplexity counts the switch of language itself), as a ratio to the told completions'.
The target: >= 50 % of function words within 2x. Writes results/language_build.json.
"""
import argparse
import statistics
import time

import torch
from common import context, machine, save_json

from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.distill.options import DistillOptions
from extensions.steering.engine.generation import Sampling, sample_batch
from extensions.steering.engine.languages import language_named, language_recipe
from extensions.steering.engine.methods import DEFAULT, build_vector, default_expand
from extensions.steering.engine.metrics import perplexity
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.tokens import prompt_ids

PROMPTS = ["How was your week?", "What should I do this afternoon?", "Tell me something about yourself."]  # untuned_set.yaml's chat prompts
SHARE, RATIO = 0.5, 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", default="Spanish,French,German,Italian")
    parser.add_argument("--n", type=int, default=4, help="completions per prompt and condition")
    parser.add_argument("--json", default="language_build")
    args = parser.parse_args()
    ctx = context()
    sampling = Sampling()
    found = {}
    for name in args.languages.split(","):
        language = language_named(name)
        pair = Recipe(name.lower(), positive=[name], negative=["English"], method=DEFAULT, expand=default_expand(DEFAULT, [name], ["English"]))
        recipe = language_recipe(pair)  # as `build` makes it
        assert isinstance(recipe.options, DistillOptions) and recipe.options.system == language.instruction
        wall, cpu = time.perf_counter(), time.process_time()
        vector = build_vector(recipe, ctx).vector
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        share = language.share()
        rows = {}
        for cond in ("untold", "told", "vector x1"):
            texts, ppl = [], []
            for p in PROMPTS:
                plain = prompt_ids(ctx, p, True)
                told = prompt_ids(ctx, p, True, system=language.instruction)
                if cond == "vector x1":
                    with steer(ctx, [Steer(vector, recipe.strength, recipe.mode)]):
                        out = sample_batch(ctx, plain, args.n, 0, sampling)
                else:
                    out = sample_batch(ctx, told if cond == "told" else plain, args.n, 0, sampling)
                texts += out
                ppl += [perplexity(ctx, told, x) for x in out]  # under the model TOLD to use the language
            rows[cond] = (sum(share(x) for x in texts) / len(texts), statistics.median(ppl), texts)
        base = rows["told"][1]
        steered_share, steered_ppl = rows["vector x1"][0], rows["vector x1"][1]
        found[language.name] = {
            "system": recipe.options.system, "steps": recipe.options.steps, "build_cpu_s": cpu, "build_wall_s": wall,
            "torch_threads": torch.get_num_threads(), "passed": steered_share >= SHARE and steered_ppl / base <= RATIO,
            **{cond: {"function_words": s, "perplexity_told_model": p, "ratio": p / base, "examples": t[: 2 * args.n : args.n]}
               for cond, (s, p, t) in rows.items()},
        }
        print(f"{language.name}: built from the pair in {cpu:.0f} s CPU, {wall:.0f} s wall ({torch.get_num_threads()} thread(s)), "
              f"{recipe.options.steps} steps; {'PASS' if found[language.name]['passed'] else 'fail'}", flush=True)
        for cond, (s, p, t) in rows.items():
            print(f"  {cond:10} function words {100 * s:3.0f} %  ppl(told model) {p:6.2f}  ({p / base:.2f}x told)  e.g. {t[0][:80]!r}", flush=True)
        path = save_json(args.json, {"prompts": PROMPTS, "n": args.n, "machine": machine(), "results": found})  # after each language
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
