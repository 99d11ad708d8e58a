"""Dose 1 in chat (issue 21): does a new preset at its calibrated strength move greedy chat replies where the
model follows the same words when told?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chat_dose.py [--set benchmarks/tuning/tuning_set.yaml] [--prompts 3]
        [--tokens 40] [--sampled N] [--only happy,football] [--json chat_dose_tuning] [--label before]
        [--ceiling/--no-ceiling] [--budgets 0.25,0.5,0.8 | --ladder] [--mode generated] [--route told]
    .venv/bin/python benchmarks/chat_dose.py --redraw --ladder --json NAME --choose 1.3,1.5,2   # where the ladder stops
    .venv/bin/python benchmarks/chat_dose.py --redraw --json NAME --before EARLIER [--plot NAME]

Every contrast of the set (a held-out set like benchmarks/untuned_set.yaml, or the tuning set) is measured in
chat form, whatever form its own prompts have: greedy replies (--tokens new tokens) to the set's chat
prompts (``chat_prompts``; the tuning set's ``prompts``) in the model's chat template (--sampled N: N sampled replies
per prompt instead, untuned.py's sampling). The vector is built as
`build NAME --positive A --negative B` builds it (the defaults: dose 1 of the calibrated strength) and judged
as benchmarks/untuned.py judges it (its thresholds, perplexity ratio at most 2x, the unsteered replies'
perplexity under the unsteered model as the base). The ceiling (--ceiling, once per set: it does not depend
on the vector) is untuned.py's: the positive side told as the system message in each of its framings.

Results: $BENCH_OUT/results/NAME.json (the vectors) and chat_dose_told_SET[_sampled].json (the ceiling), merged
entry by entry as untuned.py merges. The table puts the told verdict, --before's vector (an earlier run, e.g. before a change of
calibration) and this one side by side; --plot draws untuned.py's picture with --before as outlines.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch
import yaml
from common import RESULTS, ROOT, add_result_flags, context, markdown
from untuned import MAX_PPL_RATIO, ceiling, judged_vector, load_set, new_recipe, plot, recalibrated, save, score_of, verdict

from extensions.steering.engine import calibration, methods
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.distill.chats import chat_ids, greedy_replies
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.effects import EffectMeter, Samples
from extensions.steering.engine.feasibility import PROMPTS, TOLD_TOKENS, behaviour_of, check_pair
from extensions.steering.engine.generation import Sampling
from extensions.steering.engine.metrics import PIRATE_WORDS, next_token_logprobs, perplexity
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.tokens import left_pad, prompt_ids
from extensions.steering.engine.vector import SteeringVector

SET = ROOT / "benchmarks" / "tuning" / "tuning_set.yaml"
# budgets above the engine's that a strength might climb while the probe's greedy chat replies stay within a fluency
# bound (--ladder, --choose; docs/chat-dose.md, third round: no bound passed more tuning contrasts, so the engine does not)
LADDER = (0.35, 0.5, 0.7, 1.0)
FLUENCY_TOKENS = 32  # the length of the greedy replies the ladder's fluency reads
LOOP = 0.5  # a steered reply more than half of whose token trigrams came earlier in it is a loop: not fluent, whatever its perplexity
# the tuning set's metrics (benchmarks/tuning/tune_expansion.py) as the held-out sets' (kind, metric, words)
TUNING_METRICS = {"sentiment": ("mood", "sentiment", None), "topic": ("topic", "words", None),
                  "pirate": ("style", "words", list(PIRATE_WORDS)), "french": ("language", "french", None),
                  "numbered": ("format", "bullets", None), "capitals": ("format", "capitals", None)}


def chat_contrasts(path: Path, prompts: int | None) -> list[dict]:
    """The set's contrasts in chat form: each with the set's chat prompts (its first ``prompts``) and chat on."""
    raw = yaml.safe_load(path.read_text())
    if "chat_prompts" in raw:  # a held-out set (benchmarks/untuned_set.yaml's format)
        chat, specs = raw["chat_prompts"], load_set(path)["contrasts"]
    else:  # the tuning set
        chat, specs = raw["prompts"], []
        for c in raw["contrasts"]:
            kind, metric, words = TUNING_METRICS[c["metric"]]
            specs.append({"name": c["name"], "kind": kind, "positive": c["positive"], "negative": c["negative"], "metric": metric,
                          "words": words or c.get("words"), "direction": "up" if c["higher"] else "down"})
    return [{**s, "chat": True, "prompts": chat[:prompts] if prompts else chat} for s in specs]


def repeats(reply: Sequence[int]) -> float:
    """The share of a reply's token trigrams that came earlier in it."""
    grams = [tuple(reply[i : i + 3]) for i in range(len(reply) - 2)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


class ChatFluency:
    """What the ladder climbs by: the median perplexity (under the unsteered model) of the greedy replies to the
    calibration probe's chat messages (a model without a chat template: its raw openings) with a vector at a scale,
    over the unsteered replies'. A steered reply in a loop (LOOP) counts as infinitely perplexing, since a loop reads
    as likely text. The unsteered replies are made at the first measurement and kept."""

    def __init__(self, ctx):
        self.ctx = ctx

    @cached_property
    def prompts(self) -> list[list[int]]:
        probe = calibration.Probe.of(self.ctx)
        return probe.prompts[: len(probe.messages)] or probe.prompts

    @cached_property
    def base(self) -> tuple[list[list[int]], list[float]]:
        """The unsteered replies and their perplexities."""
        replies = greedy_replies(self.ctx, self.prompts, FLUENCY_TOKENS)
        return replies, self.perplexities(replies)

    def __call__(self, vector: SteeringVector, scale: float, mode: str) -> float:
        base_replies, base = self.base
        replies = greedy_replies(self.ctx, self.prompts, FLUENCY_TOKENS, [Steer(vector * scale, 1.0, mode)])
        found = [math.inf if repeats(r) > max(LOOP, repeats(b)) else p
                 for r, b, p in zip(replies, base_replies, self.perplexities(replies))]
        return statistics.median(found) / statistics.median(base)

    def perplexities(self, replies: Sequence[Sequence[int]]) -> list[float]:
        """Each reply's perplexity under the unsteered model after its prompt (one batch, prompt and reply left-padded together)."""
        ctx = self.ctx
        ids, mask = left_pad([list(p) + list(r) for p, r in zip(self.prompts, replies)], ctx.pad_id)
        last = max(map(len, replies))
        with torch.inference_mode():
            logprobs = next_token_logprobs(ctx, ids.to(ctx.device), mask.to(ctx.device), last).cpu()
        read = logprobs.gather(-1, ids[:, ids.shape[1] - last :, None])[..., 0]  # log p of each reply token
        return [math.exp(-float(read[i, -len(r):].mean())) if r else math.nan for i, r in enumerate(replies)]


def told_route(ctx, spec: dict) -> tuple[Recipe, dict]:
    """--route told: the recipe that distils the check's best told framing of the pair (its ``told_as``) when the check
    calls the pair likely, at the distillation defaults (dose 1: the vector as fitted); else `build`'s recipe. With the check."""
    recipe = new_recipe(spec)
    found = check_pair(ctx, spec["positive"], spec["negative"])
    check = {"likely": found.likely, "told_as": found.told_as, "check_seconds": found.seconds, "line": found.line}
    if recipe.method == "distill" or not found.likely:  # a language name has its own route; an unlikely pair keeps the pair vector
        return recipe, check
    return distill_recipe(spec["name"], found.told_as, description=f"told route: {found.told_as!r}"), check


def vectors(ctx, spec: dict, budgets: list[float], meter: EffectMeter, fluency: ChatFluency, mode: str | None = None,
            route: str = "pair") -> dict[float, dict]:
    """The contrast's vector as `build` makes it (--route told: ``told_route``'s), judged at each KL budget: the one built
    is calibrated again to each other budget (its layer stays the one chosen at the engine's budget), so a sweep builds
    once; with several budgets each result carries the probe's fluency ratio there (``fluency``), what --choose reads."""
    recipe, check = told_route(ctx, spec) if route == "told" else (new_recipe(spec), None)
    if mode is not None and recipe.calibrated:  # another way of applying it, calibrated in that way (a language keeps its own)
        recipe = replace(recipe, mode=mode)
    start = time.perf_counter()
    made = methods.build_vector(recipe, ctx)
    seconds = time.perf_counter() - start
    if len(budgets) == 1 or made.calibration is None:  # a distilled vector (a language name, the told route): not calibrated
        judged = judged_vector(ctx, spec, meter, recipe, made.vector, made.calibration, seconds)
        return {budgets[0]: {**judged, "check": check} if check else judged}
    out = {}
    for budget in budgets:
        vector, found = recalibrated(ctx, made.vector, made.calibration, recipe.mode, budget)
        out[budget] = {**judged_vector(ctx, spec, meter, recipe, vector, found, seconds),
                       "probe_fluency": fluency(vector * (1 / found.scale), found.scale, recipe.mode)}
    return out


def check_effect(ctx, spec: dict, budgets: list[float], meter: EffectMeter, max_bound: float = float("inf")) -> dict[str, dict]:
    """--effect-ladder: the contrast's vector (as `build` makes it) at each budget, judged on the check's own chat
    messages (``feasibility.PROMPTS``, greedy, ``TOLD_TOKENS`` tokens) by the check's reading of the pair: the mean
    score, whether it clearly moved (the held-out sets' bar, ``effect_moved``) and the replies' perplexity ratio; the
    climb ends where it stops for every bound up to ``max_bound``."""
    recipe = new_recipe(spec)
    made = methods.build_vector(recipe, ctx)
    if made.calibration is None:  # a language name: distilled, not calibrated
        return {}
    behaviour = behaviour_of(spec["positive"], spec["negative"])
    prompts = [chat_ids(ctx, message, None) for message in PROMPTS]
    out = {}
    for budget in budgets:
        vector, found = recalibrated(ctx, made.vector, made.calibration, recipe.mode, budget)
        effect = meter.measure(prompts, [Steer(vector, recipe.strength, recipe.mode)])
        untold, steered = effect.scores(behaviour.score)
        out[f"{budget:g}"] = r = {"kind": behaviour.kind, "untold": untold, "steered": steered,
                                  "moved": effect_moved(behaviour, untold, steered), "perplexity_ratio": effect.perplexity_ratio,
                                  "scale": found.scale}
        if r["moved"] or r["perplexity_ratio"] > max_bound:  # where the climb stops for every bound up to max_bound
            break
    return out


def effect_moved(behaviour, untold: float, steered: float) -> bool:
    """The held-out sets' "clearly moved" (untuned.py's ``verdict``) applied to the check's replies, scored as the check
    reads the pair: sentiment +SHIFT the wanted way; a language at LANGUAGE; a share at SHARE and RISE above untold."""
    metric = {"mood": "sentiment", "language": behaviour.name.lower()}.get(behaviour.kind, "share")
    return verdict({"direction": "up" if behaviour.direction > 0 else "down", "metric": metric}, untold, steered)[2]


def opening_multiplier(step: int, boost: float, opening: int, fade: bool) -> float:
    """The --opening schedule at ``step`` (0: the prompt, k: the reply's k-th token read)."""
    if fade:
        return 1.0 + (boost - 1.0) * max(0.0, 1.0 - step / opening)
    return boost if step <= opening else 1.0


@torch.inference_mode()
def opening_reply(ctx, ids: list[int], vector, strength: float, mode: str, boost: float, opening: int, tokens: int,
                  fade: bool = False) -> str:
    """--opening: a greedy reply of ``tokens`` tokens with ``vector`` at ``boost`` x ``strength`` while the prompt and the
    reply's first ``opening`` tokens are read, then at ``strength`` (a schedule the hooks could follow: the cache keeps
    what the boosted positions saw). ``fade``: the boost falls linearly from B at the prompt to 1 at reply token
    ``opening``. ``boost`` 1 is the plain greedy reply."""
    eos = ctx.model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    past, new, out = None, torch.tensor([ids], device=ctx.device), []
    for step in range(tokens):
        with steer(ctx, [Steer(vector, strength * opening_multiplier(step, boost, opening, fade), mode)]):
            found = ctx.model(input_ids=new, past_key_values=past, use_cache=True)
        past, token = found.past_key_values, int(found.logits[0, -1].argmax())
        if token in stops:
            break
        out.append(token)
        new = torch.tensor([[token]], device=ctx.device)
    return ctx.tokenizer.decode(out, skip_special_tokens=True)


def opening_results(ctx, spec: dict, meter: EffectMeter, settings: list[tuple[int, float, bool]], tokens: int) -> dict[str, dict]:
    """--opening: the contrast's vector as `build` makes it, each (opening, boost) setting judged as untuned.py judges
    replies: the score's verdict and the median perplexity under the unsteered model against the unsteered replies'."""
    recipe = new_recipe(spec)
    made = methods.build_vector(recipe, ctx)
    if made.calibration is None:  # a language name: distilled, not calibrated, no schedule tried
        return {}
    prompts = [prompt_ids(ctx, prompt, True) for prompt in spec["prompts"]]
    unsteered = Samples()
    for ids in prompts:
        unsteered += meter.unsteered(ids)
    score = score_of(spec)
    out = {}
    for opening, boost, fade in settings:
        texts = [opening_reply(ctx, ids, made.vector, recipe.strength, recipe.mode, boost, opening, tokens, fade) for ids in prompts]
        steered = Samples(tuple(texts), tuple(perplexity(ctx, ids, text) for ids, text in zip(prompts, texts)))
        before, after = unsteered.score(score), steered.score(score)
        effect, needed, moved = verdict(spec, before, after)
        ratio = steered.perplexity / unsteered.perplexity
        out[f"{opening}:{boost:g}{':fade' if fade else ''}"] = {"unsteered": before, "steered": after, "effect": effect, "needed": needed, "moved": moved,
                                       "perplexity_ratio": ratio, "passed": moved and ratio <= MAX_PPL_RATIO, "texts": texts}
    return out


def opening_setting(text: str) -> tuple[int, float, bool]:
    """"K:B" (B over the first K reply tokens) or "K:B:fade" (B falling to 1 over them)."""
    opening, boost, *rest = text.split(":")
    if rest not in ([], ["fade"]):
        raise SystemExit(f"--opening: {text!r} is not K:B or K:B:fade")
    return int(opening), float(boost), rest == ["fade"]


def opening_choice(results: dict[str, dict]) -> str:
    """Per (opening, boost) setting: how many contrasts pass, and the largest perplexity ratio."""
    settings = sorted({key for r in results.values() for key in r}, key=lambda k: (float(k.split(":")[1]), int(k.split(":")[0])))
    rows = []
    for key in settings:
        got = {name: r[key] for name, r in results.items() if key in r}
        rows.append([key, f"{sum(r['passed'] for r in got.values())} of {len(got)}", f"{max(r['perplexity_ratio'] for r in got.values()):.2f}×",
                     ", ".join(n for n, r in got.items() if r["passed"])])
    return markdown(["opening:boost", "pass", "largest perplexity ratio", "passing"], rows)


def effect_stop(ladder: dict[str, dict], bound: float) -> float:
    """Where the effect ladder stops under ``bound``: the first budget whose check replies clearly moved, unless their
    perplexity ratio passed ``bound`` on the way (then the engine's budget); the engine's budget if none moved."""
    for budget, r in sorted(ladder.items(), key=lambda item: float(item[0])):
        if r["perplexity_ratio"] > bound:
            break
        if r["moved"]:
            return float(budget)
    return calibration.KL_BUDGET


def ladder_choice(runs: dict[float, dict], bounds: list[float]) -> str:
    """For each fluency bound: per contrast the budget the ladder stops at (the last before the probe's fluency
    ratio first exceeds the bound; the first budget at least), and how the replies judged there do."""
    budgets = sorted(runs)
    names = [n for n in runs[budgets[0]] if all(n in runs[b] for b in budgets)]
    rows, totals = [], []
    for bound in bounds:
        chosen = {}
        for name in names:
            pick = budgets[0]
            for budget in budgets[1:]:
                if runs[budget][name]["probe_fluency"] > bound:
                    break
                pick = budget
            chosen[name] = pick
        results = {n: runs[chosen[n]][n] for n in names}
        worst = max(r["perplexity_ratio"] for r in results.values())
        totals.append([f"{bound:g}", f"{sum(r['passed'] for r in results.values())} of {len(names)}", f"{worst:.2f}×",
                       ", ".join(f"{n} {chosen[n]:g}" for n in names)])
        rows += [[f"{bound:g}", n, f"{chosen[n]:g}", f"{results[n]['probe_fluency']:.2f}×", f"{results[n]['steered']:.2f}",
                  f"{results[n]['perplexity_ratio']:.2f}×", "**pass**" if results[n]["passed"] else "fail"] for n in names]
    return "\n\n".join([markdown(["bound", "contrast", "budget reached", "probe fluency there", "score", "replies' perplexity ratio", "result"], rows),
                        markdown(["bound", "pass", "largest perplexity ratio", "budgets"], totals)])


def stop_choice(effects: dict[str, dict], chats: dict[float, dict], bounds: list[float]) -> str:
    """For each bound: per contrast where the effect ladder stops and the chat replies measured at that budget."""
    rows, totals = [], []
    for bound in bounds:
        results = {}
        for name, ladder in effects.items():
            budget = effect_stop(ladder, bound) if ladder else calibration.KL_BUDGET
            r = chats.get(budget, {}).get(name)
            results[name] = r
            rows.append([f"{bound:g}", name, f"{budget:g}", "–" if r is None else f"{r['steered']:.2f}",
                         "–" if r is None else f"{r['perplexity_ratio']:.2f}×", "not measured" if r is None else "**pass**" if r["passed"] else "fail"])
        known = [r for r in results.values() if r is not None]
        totals.append([f"{bound:g}", f"{sum(r['passed'] for r in known)} of {len(known)}", f"{max((r['perplexity_ratio'] for r in known), default=0):.2f}×",
                       ", ".join(n for n, r in results.items() if r is None) or "–"])
    return "\n\n".join([markdown(["bound", "contrast", "stops at", "chat score", "chat perplexity ratio", "result"], rows),
                        markdown(["bound", "pass", "largest perplexity ratio", "not measured at that budget"], totals)])


def table(vectors: dict, told: dict, before: dict | None) -> str:
    """Per contrast: told in words, the vector --before (if given) and now: score, effect against its need, perplexity ratio, verdict."""
    def cell(r: dict | None) -> str:
        if r is None:
            return "–"
        verdict = "**pass**" if r["passed"] else ("moved, ppl > 2×" if r["moved"] else "fail")
        return f"{r['steered']:.2f} ({r['effect']:+.2f} / {r['needed']:+.2f}), {r['perplexity_ratio']:.2f}×, {verdict}"

    previous = (before or {}).get("contrasts", {})
    heads = ["contrast", "kind", "pair", "metric", "unsteered", "told in words", *(["vector, before"] if before else []), "vector"]
    rows = []
    for name, r in vectors.items():
        rows.append([name, r["kind"], f"{r['positive']} − {r['negative']}", f"{r['metric']} {'↑' if r['direction'] == 'up' else '↓'}",
                     f"{r['unsteered']:.2f}", cell(told.get(name)), *([cell(previous.get(name))] if before else []), cell(r)])
    lines = [markdown(heads, rows), "cells: score steered (effect the wanted way / effect needed), perplexity ratio, verdict"]
    followed = [n for n in vectors if told.get(n, {}).get("passed")]
    for label, results in ([("before", previous)] if before else []) + [("now", vectors)]:
        passed = [n for n in followed if results.get(n, {}).get("passed")]
        lines.append(f"{label}: the vector passes {len(passed)} of the {len(followed)} contrasts that pass told "
                     f"({sum(r['passed'] for r in results.values())} of {len(results)} in all)")
    return "\n\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=str(SET.relative_to(ROOT)), help="a held-out set (untuned_set.yaml's format) or the tuning set")
    parser.add_argument("--prompts", type=int, default=None, help="only the set's first PROMPTS chat prompts (default: all)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per reply")
    parser.add_argument("--sampled", type=int, default=0, metavar="N",
                        help="N sampled replies per prompt (temperature 0.7, top-p 0.9, seed 0) instead of one greedy reply")
    parser.add_argument("--only", default="", help="comma-separated contrast names")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the model told in words (once per set; kept in chat_dose_told_SET.json)")
    parser.add_argument("--vectors", action=argparse.BooleanOptionalAction, default=True, help="measure the vectors")
    parser.add_argument("--budgets", default=None,
                        help="comma-separated KL budgets to calibrate each vector to (default: the engine's); with several, "
                             "each budget's results go to NAME_klBUDGET")
    parser.add_argument("--mode", default=None, help="apply (and calibrate) each vector in this mode instead of the default "
                        "(e.g. generated: only the reply's tokens)")
    parser.add_argument("--ladder", action="store_true", help="--budgets: the engine's KL budget and the LADDER above it")
    parser.add_argument("--choose", default=None, metavar="BOUNDS",
                        help="comma-separated fluency bounds: where the ladder would stop for each, from the --budgets results")
    parser.add_argument("--route", choices=("pair", "told"), default="pair",
                        help="told: a pair the check calls likely is built by distilling the check's best told framing")
    parser.add_argument("--effect-ladder", action="store_true",
                        help="no chat replies: each vector at the engine's budget and the LADDER, judged on the check's messages "
                             "(results/NAME_effect.json)")
    parser.add_argument("--max-bound", type=float, default=float("inf"),
                        help="--effect-ladder: end each climb where it stops for every bound up to this one")
    parser.add_argument("--opening", default=None, metavar="K:B,...",
                        help="greedy replies with the vector at B x its strength over the prompt and the reply's first K tokens "
                             "(K:B:fade: falling linearly from B to 1 over them) "
                             "(results/NAME_opening.json); with --redraw the table of settings")
    parser.add_argument("--stop", default=None, metavar="BOUNDS",
                        help="comma-separated perplexity bounds: where the effect ladder stops for each (from NAME_effect.json), "
                             "and the chat replies there (from NAME_klBUDGET.json)")
    add_result_flags(parser, "chat_dose_tuning")
    args = parser.parse_args()
    out, told_out = RESULTS / f"{args.json}.json", RESULTS / f"chat_dose_told_{Path(args.set).stem}{'_sampled' if args.sampled else ''}.json"
    read = lambda path: json.loads(path.read_text()) if path.exists() else {}
    before = read(RESULTS / f"{args.before}.json") if args.before else None
    budgets = ([calibration.KL_BUDGET, *LADDER] if args.ladder
               else [float(b) for b in args.budgets.split(",")] if args.budgets else [calibration.KL_BUDGET])
    outs = {b: out if len(budgets) == 1 else RESULTS / f"{args.json}_kl{b:g}.json" for b in budgets}
    if args.effect_ladder and not args.redraw:
        wanted = set(filter(None, args.only.split(",")))
        ctx = context()
        meter = EffectMeter(ctx, Sampling(max_new_tokens=TOLD_TOKENS, temperature=0), 1, 0)
        for spec in chat_contrasts(ROOT / args.set, args.prompts):
            if wanted and spec["name"] not in wanted:
                continue
            start = time.perf_counter()
            found = check_effect(ctx, spec, [calibration.KL_BUDGET, *LADDER], meter, args.max_bound)
            save(RESULTS / f"{args.json}_effect.json", {"set": args.set, "contrasts": {spec["name"]: found}})
            print(spec["name"], " ".join(f"{b}:{r['steered']:.2f}{'*' if r['moved'] else ''}/{r['perplexity_ratio']:.2f}"
                                         for b, r in found.items()), f"[{time.perf_counter() - start:.0f} s]", flush=True)
        return
    if args.opening:
        path = RESULTS / f"{args.json}_opening.json"
        if not args.redraw:
            wanted = set(filter(None, args.only.split(",")))
            settings = [opening_setting(item) for item in args.opening.split(",")]
            ctx = context()
            meter = EffectMeter(ctx, Sampling(max_new_tokens=args.tokens, temperature=0), 1, 0)
            for spec in chat_contrasts(ROOT / args.set, args.prompts):
                if wanted and spec["name"] not in wanted:
                    continue
                start = time.perf_counter()
                found = opening_results(ctx, spec, meter, settings, args.tokens)
                save(path, {"set": args.set, "tokens": args.tokens, "contrasts": {spec["name"]: found}})
                print(spec["name"], " ".join(f"{k}:{r['steered']:.2f}{'P' if r['passed'] else ''}/{r['perplexity_ratio']:.2f}"
                                             for k, r in found.items()), f"[{time.perf_counter() - start:.0f} s]", flush=True)
        print(opening_choice(read(path).get("contrasts", {})))
        return
    if args.stop:
        print(stop_choice(read(RESULTS / f"{args.json}_effect.json").get("contrasts", {}),
                          {b: read(RESULTS / f"{args.json}_kl{b:g}.json").get("contrasts", {}) for b in [calibration.KL_BUDGET, *LADDER]},
                          [float(b) for b in args.stop.split(",")]))
        return
    if not args.redraw:
        wanted = set(filter(None, args.only.split(",")))
        specs = [s for s in chat_contrasts(ROOT / args.set, args.prompts) if not wanted or s["name"] in wanted]
        n = args.sampled or 1
        ctx = context()
        sampling = Sampling(max_new_tokens=args.tokens) if args.sampled else Sampling(max_new_tokens=args.tokens, temperature=0)
        settings = {"n": n, "prompts": args.prompts, "tokens": args.tokens, "greedy": not args.sampled, "chat": True, "model": ctx.name, "mode": args.mode,
                    "route": args.route, "kl_budget": calibration.KL_BUDGET, "calibration_version": calibration.VERSION}
        meter, fluency = EffectMeter(ctx, sampling, n, 0), ChatFluency(ctx)
        fresh = {"label": args.label or None, "set": args.set, "contrast_settings": settings}
        for spec in specs:
            start = time.perf_counter()
            found = {}
            if args.ceiling:
                found["told"] = ceiling(ctx, spec, meter)
                save(told_out, {**fresh, "contrasts": {spec["name"]: found["told"]}})
            if args.vectors:
                for budget, r in vectors(ctx, spec, budgets, meter, fluency, args.mode, args.route).items():
                    found[f"KL {budget:g}"] = r
                    save(outs[budget], {**fresh, "contrast_settings": {**settings, "kl_budget": budget}, "contrasts": {spec["name"]: r}})
            for what, r in found.items():
                print(f"{spec['name']} {what}: {r['metric']} {r['unsteered']:.2f} → {r['steered']:.2f} (effect {r['effect']:+.2f}, "
                      f"needs {r['needed']:+.2f}), ppl ×{r['perplexity_ratio']:.2f}, {'pass' if r['passed'] else 'fail'}  "
                      f"{r['examples'][0]['steered'][:70]!r}", flush=True)
            print(f"  [{time.perf_counter() - start:.0f} s]", flush=True)
    told = read(told_out).get("contrasts", {})
    for budget, path in outs.items():
        data = read(path)
        print(f"\nKL budget {budget:g} ({path.name}):\n" + table(data.get("contrasts", {}), told, before))
        if args.plot and data and len(outs) == 1:
            plot(data, Path(args.plot).stem, before, args.outline)
    if args.choose:
        runs = {budget: read(path).get("contrasts", {}) for budget, path in outs.items()}
        print("\n" + ladder_choice(runs, [float(b) for b in args.choose.split(",")]))


if __name__ == "__main__":
    main()
