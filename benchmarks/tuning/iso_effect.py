"""Would a strength matched to telling ("iso-effect") move chat replies more than the KL budget does? (issue 21, item 2)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/iso_effect.py [--only football,trains]

For each tuning contrast measured by `chat_dose.py --ladder` (results/chat_dose_ladder_tuning_kl*.json), the vector
is built as `build` builds it, and on the calibration probe's rollouts the shift along the contrast
(E[log p+ - log p-] - the unsteered model's, per token: what the layer choice scores) is measured for the model
told the positive side and for the vector at each ladder budget's scale. V/T is the vector's shift over the
told model's: a strength that stood in for telling would stop where V/T = 1. Printed beside each budget: the
chat replies' score and perplexity ratio measured there by chat_dose.py. Writes results/iso_effect.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chat_dose import SET, chat_contrasts  # noqa: E402
from common import RESULTS, context, save_json  # noqa: E402
from untuned import new_recipe  # noqa: E402

from extensions.steering.engine import calibration, methods  # noqa: E402

BUDGETS = ("0.25", "0.35", "0.5", "0.7", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    runs = {b: json.loads((RESULTS / f"chat_dose_ladder_tuning_kl{b}.json").read_text())["contrasts"] for b in BUDGETS}
    wanted = set(filter(None, args.only.split(",")))
    ctx = context()
    probe = calibration.Probe.of(ctx)
    found = {}
    for spec in chat_contrasts(SET, None):
        name = spec["name"]
        if any(name not in runs[b] or not runs[b][name].get("calibration") for b in BUDGETS) or (wanted and name not in wanted):
            continue  # a language name is distilled, not calibrated
        recipe = new_recipe(spec)
        made = methods.build_vector(recipe, ctx)
        unit = made.vector * (1 / made.calibration.scale)  # the vector chat_dose.py scaled to each budget
        told = probe.told(recipe.positive)
        contrast = told - probe.told(recipe.negative)
        base = (probe.base.exp() * contrast).sum(-1)
        told_shift = float(((told.exp() * contrast).sum(-1) - base).mean())
        rows = {}
        for b in BUDGETS:
            judged = runs[b][name]
            point = probe.measure(unit, float(judged["calibration"]["calibration_scale"]), recipe.mode)
            shift = float(((point.logprobs.exp() * contrast).sum(-1) - base).mean())
            rows[b] = {"kl": point.kl, "vector_shift": shift, "v_over_t": shift / told_shift, "score": judged["steered"],
                       "perplexity_ratio": judged["perplexity_ratio"], "passed": judged["passed"]}
        found[name] = {"told_shift": told_shift, "budgets": rows}
        print(f"{name:10} told shift {told_shift:+.3f}  " + "  ".join(
            f"{b}: V/T {r['v_over_t']:+.2f} -> {r['score']:.2f}/{r['perplexity_ratio']:.2f}x{' pass' if r['passed'] else ''}"
            for b, r in rows.items()), flush=True)
    print(f"wrote {save_json('iso_effect', {'results': found})}")


if __name__ == "__main__":
    main()
