"""Held-out check of the defaults a new user gets (issue 12): new contrasts and personas, never used for tuning.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/untuned.py [--n 8] [--only joy,cats,grumpy] [--no-personas]
        [--held-out 8] [--json untuned_before] [--plot untuned_before] [--before untuned_before]
        [--set benchmarks/untuned_set_2.yaml]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/untuned.py --ceiling [--set ...] [--json untuned_ceiling]
    .venv/bin/python benchmarks/untuned.py --redraw --json untuned_before --plot untuned_before

The set is benchmarks/untuned_set.yaml (written before any tuning; read its header). Each contrast is built
exactly as `python -m extensions.steering build NAME --positive A --negative B` builds it: one pair, the
engine's default method, layers, strength and mode (a language name alone: its distilled instruction). Per prompt, --n completions are sampled steered and
unsteered from the same seed (the CLI's sampling: temperature 0.7, top-p 0.9, 40 new tokens) and scored
with the contrast's metric; fluency is the median perplexity of the completions under the unsteered model,
steered ÷ unsteered (a language: under the model told "Always reply in X.", steered ÷ that told model's own
completions, since the unsteered model's perplexity counts the switch of language itself). A contrast passes when it moved clearly (the issue's thresholds, see the YAML) at a
perplexity ratio of at most 2. Each persona is distilled as `distill NAME --system S` does (the defaults)
and measured by KL recovery on the held-out chat messages (target 0.5), its behaviour scored beside it.

Results are merged into $BENCH_OUT/results/NAME.json (default benchmarks/results/untuned.json): a run with
--only replaces those entries and keeps the rest. --plot draws the effect per contrast against its threshold
and the perplexity ratio (and the personas' KL recovery) to $BENCH_OUT/docs/NAME.png; --before adds an
earlier JSON's numbers as outlines, for a before/after picture (or a --ceiling run's, with --outline 'told in words').

--ceiling measures no vector: each contrast's positive side told to the model in words, in each CEILING_FRAMINGS
framing (a chat contrast: as the system message; a raw one: as a line before the prompt), scored and
judged as a vector is. It is what the model does when asked outright, the bar a vector standing in for the
words is measured against: a behaviour the model does not produce when told is not one a vector of its
own activations can be expected to produce. It chooses nothing, so it may be run on a held-out set.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml
from common import RESULTS, ROOT, add_result_flags, context, markdown, pyplot, save_figure, save_json

from extensions.steering.engine import calibration, methods
from extensions.steering.engine import distill as d
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.effects import EffectMeter
from extensions.steering.engine.feasibility import LANGUAGE, RISE, SHARE, SHIFT, TOLD_FRAMINGS
from extensions.steering.engine.generation import Sampling
from extensions.steering.engine.languages import LANGUAGES, language_recipe
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.metrics import METRICS, Metric, metric, perplexity, topic_share
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.tokens import prompt_ids

SET = ROOT / "benchmarks" / "untuned_set.yaml"
KINDS = ("mood", "topic", "style", "language", "format")
MAX_PPL_RATIO = 2.0  # SHIFT, SHARE, RISE, LANGUAGE: the "moved clearly", shared with the engine's check
KL_TARGET = 0.5
CEILING_FRAMINGS = TOLD_FRAMINGS  # v1's framings and a plain instruction, as the engine's check tells the model


# -- the set ---------------------------------------------------------------------------------------
def load_set(path: Path = SET) -> dict:
    """The set, checked: every entry has a known metric (and its words), a direction, prompts."""
    data = yaml.safe_load(path.read_text())
    for group in ("contrasts", "reference", "personas"):
        for spec in data.get(group, []):
            where = f"{group}/{spec.get('name')}"
            if spec.get("metric") != "words" and spec.get("metric") not in METRICS:
                raise ValueError(f"{where}: unknown metric {spec.get('metric')!r}; choose words (with its word list) or one of {', '.join(METRICS)}")
            if spec["metric"] == "words" and not spec.get("words"):
                raise ValueError(f"{where}: metric words needs its word list")
            if spec.get("direction") not in ("up", "down"):
                raise ValueError(f"{where}: direction must be up or down")
            if group == "personas":
                if not str(spec.get("system", "")).strip():
                    raise ValueError(f"{where}: a persona needs its system prompt")
                continue
            if spec.get("kind") not in KINDS or not spec.get("prompts") or not spec.get("positive") or not spec.get("negative"):
                raise ValueError(f"{where}: a contrast needs a kind ({', '.join(KINDS)}), prompts, a positive and a negative")
    return data


def score_of(spec: dict) -> Callable[[str], float]:
    """The entry's score: its topic words' share for ``words``, else the registered metric of that name."""
    return topic_share(spec["words"]) if spec["metric"] == "words" else metric(spec["metric"]).score


def verdict(spec: dict, unsteered: float, steered: float) -> tuple[float, float, bool]:
    """(effect the wanted way, the effect needed, moved clearly) by the issue's thresholds."""
    sign = 1 if spec["direction"] == "up" else -1
    effect = sign * (steered - unsteered)
    if spec["metric"] == "sentiment":
        needed = SHIFT
    elif spec["metric"] in {language.metric for language in LANGUAGES}:
        needed = LANGUAGE - unsteered
    else:
        needed = max(RISE, spec.get("threshold", SHARE) - unsteered)
    return effect, needed, effect >= needed - 1e-9


# -- measuring -------------------------------------------------------------------------------------
def _judged(ctx, spec: dict, meter: EffectMeter, given: Callable[[str], list[int]], steers: list[Steer]) -> dict:
    """Completions of each prompt, unsteered and as ``given(prompt)`` ids under ``steers`` (same seeds), scored
    and judged; perplexity always under the unsteered model after the plain prompt."""
    effect = meter.measure([prompt_ids(ctx, prompt, spec["chat"]) for prompt in spec["prompts"]], steers,
                           [given(prompt) for prompt in spec["prompts"]])
    unsteered, steered_score = effect.scores(score_of(spec))
    moved_by, needed, moved = verdict(spec, unsteered, steered_score)
    ratio = effect.perplexity_ratio
    fluency = "the unsteered model"
    language = next((language for language in LANGUAGES if language.metric == spec["metric"]), None)
    if language is not None:  # the unsteered model's perplexity counts the switch of language itself (issue 21)
        ratio = told_fluency(ctx, spec, meter, language, effect.steered.texts)
        fluency = f"the model told {language.instruction!r}, against its own completions"
    texts = {False: effect.unsteered.texts, True: effect.steered.texts}
    return {
        "kind": spec["kind"], "positive": spec["positive"], "negative": spec["negative"],
        "metric": spec["metric"], "direction": spec["direction"], "chat": spec["chat"], "prompts": spec["prompts"],
        "samples": len(texts[True]), "unsteered": unsteered, "steered": steered_score, "effect": moved_by, "needed": needed,
        "moved": moved, "perplexity_unsteered": effect.unsteered.perplexity, "perplexity_steered": effect.steered.perplexity,
        "perplexity_ratio": ratio, "fluency_under": fluency, "passed": moved and ratio <= MAX_PPL_RATIO,
        "examples": [{"prompt": spec["prompts"][0], "unsteered": texts[False][i], "steered": texts[True][i]} for i in range(min(2, meter.n))],
    }


def told_fluency(ctx, spec: dict, meter: EffectMeter, language, texts: tuple[str, ...]) -> float:
    """A language contrast's fluency: the median perplexity of ``texts`` (n per prompt, in prompt order) under the model
    told ``language.instruction``, over that of the told model's own completions (the same seeds)."""
    told = [prompt_ids(ctx, prompt, True, system=language.instruction) if spec["chat"]
            else prompt_ids(ctx, f"{language.instruction}\n\n{prompt}") for prompt in spec["prompts"]]
    own = [p for ids in told for p in meter.unsteered(ids).perplexities]
    steered = [perplexity(ctx, told[i // meter.n], text) for i, text in enumerate(texts)]
    return statistics.median(steered) / statistics.median(own)


def new_recipe(spec: dict) -> Recipe:
    """The recipe `build NAME --positive A --negative B` makes of the contrast's pair."""
    positive, negative = [spec["positive"]], [spec["negative"]]
    return language_recipe(Recipe(spec["name"], positive=positive, negative=negative, method=methods.DEFAULT,
                                  expand=methods.default_expand(methods.DEFAULT, positive, negative)))


def contrast(ctx, spec: dict, meter: EffectMeter, budget: float | None = None) -> dict:
    """A contrast at the defaults of `build NAME --positive A --negative B`: steered and unsteered completions, same seeds
    (``budget``: its vector calibrated to this KL budget instead of the engine's)."""
    recipe = new_recipe(spec)
    start = time.perf_counter()
    made = build_vector(recipe, ctx)
    vector, found = made.vector, made.calibration
    if budget is not None and found is not None:
        vector, found = recalibrated(ctx, vector, found, recipe.mode, budget)
    return judged_vector(ctx, spec, meter, recipe, vector, found, time.perf_counter() - start)


def recalibrated(ctx, vector, found: calibration.Calibration, mode: str, budget: float) -> tuple:
    """``vector`` (calibrated as ``found`` says) calibrated again to ``budget``: (the vector at that strength, its calibration).
    Its layer stays the one chosen at the engine's budget (the layer score does not depend on the budget)."""
    if budget == found.budget:
        return vector, found
    unit = vector * (1 / found.scale)
    found = calibration.calibrate(ctx, unit, mode, budget)
    return unit * found.scale, found


def judged_vector(ctx, spec: dict, meter: EffectMeter, recipe: Recipe, vector, found, build_seconds: float) -> dict:
    """``vector`` (made for ``recipe``, with its calibration ``found``) applied as the recipe says, judged against unsteered completions."""
    judged = _judged(ctx, spec, meter, lambda prompt: prompt_ids(ctx, prompt, spec["chat"]),
                     [Steer(vector, recipe.strength, recipe.mode)])
    return {**judged, "method": recipe.method, "layers": vector.layers, "strength": recipe.strength, "mode": recipe.mode,
            "calibrated": recipe.calibrated, "expand": recipe.expand, "build_seconds": build_seconds,
            "calibration": found.metadata() if found is not None else None}


def ceiling(ctx, spec: dict, meter: EffectMeter) -> dict:
    """No vector: the positive side told in words in each CEILING_FRAMINGS framing; the best framing's result, with every framing's."""
    told = spec["positive"].strip()
    framings = {}
    for framing in CEILING_FRAMINGS:
        words_ = framing.format(told)
        given = ((lambda prompt: prompt_ids(ctx, prompt, True, system=words_)) if spec["chat"]
                 else (lambda prompt: prompt_ids(ctx, f"{words_}\n\n{prompt}")))
        framings[framing] = _judged(ctx, spec, meter, given, [])
    best = max(framings, key=lambda f: (framings[f]["passed"], framings[f]["effect"] - framings[f]["needed"]))
    return {**framings[best], "told": best.format(told),
            "framings": {f: {k: r[k] for k in ("steered", "effect", "moved", "perplexity_ratio", "passed")} for f, r in framings.items()}}


def persona(ctx, spec: dict, messages: list[str], ttft_rounds: int) -> dict:
    """`distill NAME --system S` with its defaults, measured on the held-out messages."""
    scored = Metric(f"untuned-{spec['name']}", score_of(spec), f"the set's {spec['metric']} score", "higher" if spec["direction"] == "up" else "lower")
    recipe = distill_recipe(spec["name"], spec["system"])
    start = time.perf_counter()
    vector = build_vector(recipe, ctx).vector
    seconds = time.perf_counter() - start
    r = d.evaluate(ctx, spec["system"], vector, recipe.strength, recipe.mode, messages=messages, metric=scored, ttft_rounds=ttft_rounds)
    return {
        **r.to_dict(), "system": spec["system"], "metric": spec["metric"], "direction": spec["direction"], "via": recipe.options.via,
        "layers": vector.layers, "build_seconds": seconds, "held_out": len(messages), "passed": r.kl_recovery >= KL_TARGET,
    }


# -- output ----------------------------------------------------------------------------------------
def contrast_rows(results: dict) -> list[list]:
    rows = []
    for name, r in results.items():
        arrow = "↑" if r["direction"] == "up" else "↓"
        rows.append([name, r["kind"], f"{r['positive']} − {r['negative']}", f"{r['metric']} {arrow}", f"{r['unsteered']:.2f}",
                     f"{r['steered']:.2f}", f"{r['effect']:+.2f} (needs {r['needed']:+.2f})", "yes" if r["moved"] else "no",
                     f"{r['perplexity_unsteered']:.1f} → {r['perplexity_steered']:.1f} ({r['perplexity_ratio']:.2f}×)",
                     "**pass**" if r["passed"] else "fail"])
    return rows


def persona_rows(results: dict) -> list[list]:
    return [[name, r["system_tokens"], f"{r['metric']} {'↑' if r['direction'] == 'up' else '↓'}", f"{r['behaviour_with_system']:.2f}",
             f"{r['behaviour_without']:.2f}", f"{r['behaviour_steered']:.2f}", f"{r['kl_recovery']:.2f}", r["held_out"],
             "**pass**" if r["passed"] else "fail"] for name, r in results.items()]


def report(data: dict) -> str:
    out = []
    for group in ("contrasts", "reference"):
        if data.get(group):
            out.append(markdown(["contrast", "kind", "pair", "metric", "unsteered", "steered", "effect", "moved clearly",
                                 "perplexity unsteered → steered", "result"], contrast_rows(data[group])))
    twelve = data.get("contrasts", {})
    if twelve:
        out.append(f"passed: {sum(r['passed'] for r in twelve.values())} of {len(twelve)} contrasts "
                   f"(moved clearly: {sum(r['moved'] for r in twelve.values())})")
    if data.get("personas"):
        out.append(markdown(["persona", "S tokens", "metric", "with S", "without S", "distilled", "KL recovery", "held-out", "result"],
                            persona_rows(data["personas"])))
        out.append(f"personas at KL recovery >= {KL_TARGET}: {sum(r['passed'] for r in data['personas'].values())} of {len(data['personas'])}")
    return "\n\n".join(out)


def plot(data: dict, name: str, before: dict | None = None, outline: str = "before") -> Path | None:
    """Effect the wanted way against the effect needed per contrast, the perplexity ratio, and the personas' KL recovery."""
    plt = pyplot()
    if plt is None:
        return None
    entries = {**data.get("contrasts", {}), **data.get("reference", {})}
    personas = data.get("personas", {})
    panels = 2 + bool(personas)
    fig, axes = plt.subplots(1, panels, figsize=(4.0 * panels, 0.6 + 0.32 * max(len(entries), len(personas), 1)), squeeze=False)
    axes = axes[0]
    names = list(entries)
    ys = range(len(names))
    old = {**(before or {}).get("contrasts", {}), **(before or {}).get("reference", {})}
    colours = ["tab:green" if entries[k]["passed"] else ("tab:orange" if entries[k]["moved"] else "tab:red") for k in names]
    axes[0].barh(ys, [entries[k]["effect"] for k in names], color=colours, height=0.7)
    axes[0].scatter([entries[k]["needed"] for k in names], ys, marker="|", s=160, color="black", label="needed (the issue's threshold)", zorder=3)
    axes[1].barh(ys, [entries[k]["perplexity_ratio"] for k in names], color=colours, height=0.7)
    if old:
        hollow = dict(fill=False, edgecolor="black", linewidth=0.8, height=0.7)
        axes[0].barh([y for y, k in zip(ys, names) if k in old], [old[k]["effect"] for k in names if k in old], label=outline, **hollow)
        axes[1].barh([y for y, k in zip(ys, names) if k in old], [old[k]["perplexity_ratio"] for k in names if k in old], **hollow)
    labels = [f"{k} ({entries[k]['metric']}{'↑' if entries[k]['direction'] == 'up' else '↓'})" for k in names]
    for ax in axes[:2]:
        ax.set_yticks(list(ys), labels if ax is axes[0] else [""] * len(names), fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.axvline(0, color="black", linewidth=0.6)
    axes[0].set_xlabel("effect the wanted way (steered − unsteered)\ngreen pass, orange moved but ppl > 2×, red no", fontsize=7)
    axes[0].legend(fontsize=6, loc="upper right")
    axes[1].axvline(MAX_PPL_RATIO, color="red", linestyle=":", linewidth=1)
    ratios = [e["perplexity_ratio"] for e in [*entries.values(), *old.values()]]
    if max(ratios) > 10:  # thousands before calibration: a log scale; within 10x a plain one reads better
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(lambda value, _: "")
    axes[1].xaxis.set_major_formatter(lambda value, _: f"{value:g}×")
    axes[1].set_xlabel("completion perplexity steered ÷ unsteered (limit 2×)", fontsize=7)
    if personas:
        pn = list(personas)
        axes[2].barh(range(len(pn)), [personas[k]["kl_recovery"] for k in pn], height=0.7,
                     color=["tab:green" if personas[k]["passed"] else "tab:red" for k in pn])
        previous = (before or {}).get("personas", {})
        if previous:
            axes[2].barh([i for i, k in enumerate(pn) if k in previous], [previous[k]["kl_recovery"] for k in pn if k in previous],
                         fill=False, edgecolor="black", linewidth=0.8, height=0.7)
        axes[2].set_yticks(range(len(pn)), [f"{k} ({personas[k]['metric']}, {personas[k]['system_tokens']} tok)" for k in pn], fontsize=7)
        axes[2].set_ylim(max(len(names), len(pn)) - 0.5, -0.5)  # bars as thick as the contrasts', top down
        axes[2].axvline(KL_TARGET, color="red", linestyle=":", linewidth=1)
        axes[2].axvline(0, color="black", linewidth=0.6)
        axes[2].set_xlabel("persona KL recovery, distill defaults (target 0.5)", fontsize=7)
    settings = data.get("contrast_settings", {})
    fig.suptitle(f"{data.get('set', 'benchmarks/untuned_set.yaml')} at the defaults: {data.get('label') or name}; "
                 f"{settings.get('n')} completions per prompt", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, name)


def merged(path: Path, fresh: dict) -> dict:
    """The JSON at ``path`` with this run's entries put in (a run with --only keeps the others)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.pop("machine", None)
    for key, value in fresh.items():
        if isinstance(value, dict) and key in ("contrasts", "reference", "personas"):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def save(path: Path, fresh: dict) -> dict:
    """Merge ``fresh`` into the results file after every entry (a long run cut short keeps what it measured);
    a lock lets a contrasts run and a personas run share one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"steering-{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = merged(path, fresh)
        save_json(path.stem, data)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="completions per prompt, steered and unsteered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=None, help="use only each contrast's first PROMPTS prompts (default: all)")
    parser.add_argument("--only", default="", help="comma-separated contrast/persona names")
    parser.add_argument("--contrasts", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--personas", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--held-out", type=int, default=None, help="held-out messages per persona (default: all 30)")
    parser.add_argument("--ttft-rounds", type=int, default=1)
    add_result_flags(parser, "untuned")
    parser.add_argument("--set", default=str(SET.relative_to(ROOT)), help="the held-out set (a YAML like untuned_set.yaml)")
    parser.add_argument("--ceiling", action="store_true", help="no vectors: each contrast's positive side told in words (implies --no-personas)")
    parser.add_argument("--budget", type=float, default=None, help="calibrate each contrast's vector to this KL budget instead of the engine's")
    args = parser.parse_args()
    out = RESULTS / f"{Path(args.json).stem}.json"
    before = json.loads((RESULTS / f"{Path(args.before).stem}.json").read_text()) if args.before else None
    if args.redraw:
        data = json.loads(out.read_text())
        print(report(data))
        if args.plot:
            plot(data, Path(args.plot).stem, before, args.outline)
        return
    path = ROOT / args.set
    spec = load_set(path)
    wanted = set(filter(None, args.only.split(",")))
    chosen = lambda group: [s | ({"prompts": s["prompts"][: args.prompts]} if args.prompts and "prompts" in s else {})
                            for s in spec.get(group, []) if not wanted or s["name"] in wanted]
    if args.ceiling:
        args.personas = False
    ctx = context()
    sampling = Sampling()
    fresh: dict = {"label": args.label or ("told in words (no vector)" if args.ceiling else None), "set": str(path.relative_to(ROOT))}
    if args.contrasts:
        fresh["contrast_settings"] = {"n": args.n, "prompts": args.prompts, "seed": args.seed, "sampling": vars(sampling), "model": ctx.name,
                                      **({"kl_budget": args.budget} if args.budget is not None else {})}
    if args.personas:
        fresh["persona_settings"] = {"held_out": args.held_out or len(d.held_out_messages()), "ttft_rounds": args.ttft_rounds, "model": ctx.name}
    meter = EffectMeter(ctx, sampling, args.n, args.seed)
    for group in ("contrasts", "reference") if args.contrasts else ():
        for s in chosen(group):
            start = time.perf_counter()
            r = fresh.setdefault(group, {})[s["name"]] = ceiling(ctx, s, meter) if args.ceiling else contrast(ctx, s, meter, args.budget)
            save(out, {**fresh, group: {s["name"]: r}})
            print(f"{s['name']}: {r['metric']} {r['unsteered']:.2f} → {r['steered']:.2f} (effect {r['effect']:+.2f}, needs {r['needed']:+.2f}), "
                  f"ppl ×{r['perplexity_ratio']:.2f}, {'pass' if r['passed'] else 'fail'} [{time.perf_counter() - start:.0f} s]  "
                  f"{r['examples'][0]['steered'][:70]!r}", flush=True)
    if args.personas:
        messages = d.held_out_messages(args.held_out)
        for s in chosen("personas"):
            start = time.perf_counter()
            r = fresh.setdefault("personas", {})[s["name"]] = persona(ctx, s, messages, args.ttft_rounds)
            save(out, {**fresh, "personas": {s["name"]: r}})
            print(f"{s['name']}: KL recovery {r['kl_recovery']:.2f}, {r['metric']} with S {r['behaviour_with_system']:.2f} / without "
                  f"{r['behaviour_without']:.2f} / distilled {r['behaviour_steered']:.2f} [{time.perf_counter() - start:.0f} s]", flush=True)
    data = save(out, fresh)
    print("\n" + report(data))
    print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        plot(data, Path(args.plot).stem, before, args.outline)


if __name__ == "__main__":
    main()
