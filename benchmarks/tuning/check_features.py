"""Choosing the pre-build check's rule on the check's own tuning set (issue 21 item 3), never on the held-out sets.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/check_features.py              # collect the replies (slow)
    .venv/bin/python benchmarks/tuning/check_features.py --choose                         # score candidate rules

Collect: for each contrast of benchmarks/tuning/check_tuning_set.yaml, greedy replies (TOLD_TOKENS tokens) to
MESSAGES (the check's 4 messages, then 4 more), untold, with the positive side told in each TOLD_FRAMINGS framing,
and for a mood with the negative side told the same ways; every reply and its score (the check's behaviour_of) is written
to results/check_features.json. Choose: each candidate rule (which messages, which baseline, which threshold per
kind) predicts "likely" or "unlikely" from those replies; its agreement with the measured vector outcomes
(results/check_tuning_outcomes.json, benchmarks/untuned.py on the same set) is printed per kind.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import yaml  # noqa: E402
from common import RESULTS, ROOT, context, markdown, save_json  # noqa: E402

from extensions.steering.engine.distill.chats import chat_ids, greedy_replies  # noqa: E402
from extensions.steering.engine.feasibility import PROMPTS, RISE, SHARE, SHIFT, TOLD_FRAMINGS, TOLD_TOKENS, behaviour_of  # noqa: E402

SET = ROOT / "benchmarks" / "tuning" / "check_tuning_set.yaml"
# the check's messages, then four more that leave a mood room to fall as well as rise (none in any other set)
MESSAGES = (*PROMPTS, "Tell me what happened on your way here.", "How do you feel about Mondays?",
            "Describe the room you are in.", "What went wrong last time you cooked?")


def collect(path: Path, out: str, only: list[str]) -> None:
    """Replies for the set's contrasts (``only``: these, in this order), kept in ``out`` after each (a rerun resumes)."""
    ctx = context()
    specs = {spec["name"]: spec for spec in yaml.safe_load(path.read_text())["contrasts"]}
    saved = RESULTS / f"{out}.json"
    found = json.loads(saved.read_text())["results"] if saved.exists() else {}
    for name in only or list(specs):
        spec = specs[name]
        if name in found:
            continue
        positive, negative = str(spec["positive"]), str(spec["negative"])
        behaviour = behaviour_of(positive, negative)
        conditions = [("untold", None)] + [(f"+{f}", f.format(positive)) for f in TOLD_FRAMINGS]
        if behaviour.kind == "mood":  # the negative side told: a baseline a mood can move from either way
            conditions += [(f"-{f}", f.format(negative)) for f in TOLD_FRAMINGS]
        prompts = [chat_ids(ctx, m, system) for _, system in conditions for m in MESSAGES]
        replies = [ctx.tokenizer.decode(r, skip_special_tokens=True) for r in greedy_replies(ctx, prompts, TOLD_TOKENS, batch_size=24)]
        n = len(MESSAGES)
        found[spec["name"]] = {
            "positive": positive, "negative": negative, "kind": behaviour.kind, "direction": behaviour.direction,
            "conditions": {name: {"replies": replies[k * n:(k + 1) * n], "scores": [behaviour.score(r) for r in replies[k * n:(k + 1) * n]]}
                           for k, (name, _) in enumerate(conditions)},
        }
        print(spec["name"], behaviour.kind, {name: round(sum(c["scores"]) / n, 2) for name, c in found[spec["name"]]["conditions"].items()}, flush=True)
        save_json(out, {"set": str(path), "messages": list(MESSAGES), "results": found})


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


Rule = Callable[[dict, int], bool]


def rule(messages: int, mood: str, mood_gap: float, topic_rise: float, topic_share: float) -> Rule:
    """A candidate: the first ``messages`` messages; a mood follows when the best framing's told-positive score beats
    ``mood`` ("untold": the untold replies; "negative": the negative side told in the same framing) by ``mood_gap`` the
    wanted way; a topic or format when its share reaches ``topic_share`` and rises ``topic_rise`` over untold."""
    def likely(r: dict, _: int) -> bool:
        c = {name: _mean(v["scores"][:messages]) for name, v in r["conditions"].items()}
        sign, untold = r["direction"], c["untold"]
        framings = [f for f in TOLD_FRAMINGS]
        if r["kind"] == "mood":
            base = {f: (untold if mood == "untold" else c[f"-{f}"]) for f in framings}
            return max(sign * (c[f"+{f}"] - base[f]) for f in framings) >= mood_gap - 1e-9
        if r["kind"] == "language":
            return max(c[f"+{f}"] for f in framings) >= 0.5
        best = max(c[f"+{f}"] for f in framings)
        return best - untold >= topic_rise - 1e-9 and best >= topic_share - 1e-9
    return likely


def choose(features: str, outcomes: str) -> None:
    data = json.loads((RESULTS / f"{features}.json").read_text())["results"]
    measured = {n: r["passed"] for n, r in json.loads((RESULTS / f"{outcomes}.json").read_text())["contrasts"].items()}
    names = [n for n in data if n in measured]
    candidates = {"the check as it was (4 messages, untold, 0.2; share 0.3 and +0.25)": rule(4, "untold", SHIFT, RISE, SHARE)}
    for messages in (4, 8):
        for mood in ("untold", "negative"):
            for gap in (0.2, 0.3, 0.4, 0.5, 0.6):
                for rise, share in ((RISE, SHARE), (0.125, 0.125), (0.25, 0.25), (0.375, 0.375)):
                    candidates[f"{messages} messages; mood vs {mood} >= {gap}; share >= {share} rising {rise}"] = rule(messages, mood, gap, rise, share)
    rows = []
    for label, predict in candidates.items():
        right = {kind: [0, 0] for kind in ("mood", "topic", "format", "language")}
        for n in names:
            kind = data[n]["kind"]
            right[kind][1] += 1
            right[kind][0] += predict(data[n], 0) == measured[n]
        total = sum(a for a, _ in right.values())
        rows.append([label, f"{total} of {len(names)}", *(f"{a}/{b}" for a, b in right.values())])
    rows.sort(key=lambda r: -int(r[1].split()[0]))
    print(markdown(["rule", "agrees", "mood", "topic", "format", "language"], rows))
    print("\nper contrast (scores: untold / best told + / its told −):")
    for n in names:
        c = {name: _mean(v["scores"]) for name, v in data[n]["conditions"].items()}
        best = max(TOLD_FRAMINGS, key=lambda f: data[n]["direction"] * c[f"+{f}"])
        print(f"  {n} ({data[n]['kind']}): measured {'moved' if measured[n] else 'not'}; untold {c['untold']:.2f}, "
              f"told + {c[f'+{best}']:.2f} ({best!r})" + (f", told − {c[f'-{best}']:.2f}" if f"-{best}" in c else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=SET)
    parser.add_argument("--choose", action="store_true")
    parser.add_argument("--json", default="check_features")
    parser.add_argument("--outcomes", default="check_tuning_outcomes")
    parser.add_argument("--only", default="", help="comma-separated contrast names, collected in this order")
    args = parser.parse_args()
    if args.choose:
        choose(args.json, args.outcomes)
    else:
        collect(args.set, args.json, [n for n in args.only.split(",") if n])


if __name__ == "__main__":
    main()
