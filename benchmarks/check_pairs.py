"""The pre-build check (engine/feasibility.py) against measured vector outcomes: does its verdict agree?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_pairs.py --set benchmarks/tuning/tuning_set.yaml     # choose here
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_pairs.py --set benchmarks/untuned_set.yaml \\
        --outcomes untuned_after --ceiling untuned_ceiling                                             # then measure once
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_pairs.py --set benchmarks/untuned_set_2.yaml \\
        --outcomes untuned_set_2 --ceiling untuned_set_2_ceiling

For each contrast of the set, runs ``check_pair(positive, negative)`` (timed, wall and CPU) and sets its
verdict (likely / unlikely to move) beside the measured outcome of the vector built at the defaults:
for the held-out sets the ``passed`` of benchmarks/untuned.py's results (``--outcomes``; ``--ceiling``
adds whether the model told in words passed), for the tuning set ``moved`` at a perplexity ratio <= 2
of benchmarks/results/tune_expansion.json (tag ``--tag``, and ``sentences`` for the sentence pairs). Prints the rows and
the confusion table; writes results/check_NAME.json (NAME: the set file's stem).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from common import ROOT, context, machine, markdown, save_json

from extensions.steering.engine.feasibility import RISE, SHARE, SHIFT, Feasibility, check_pair

TUNING_SET = ROOT / "benchmarks" / "tuning" / "tuning_set.yaml"
MEASURED = ROOT / "benchmarks" / "results"  # the committed outcomes, read even when BENCH_OUT sends this run's results elsewhere
TUNING_TAG = "budget 0.25, v1, auto, n 8 x 3"


def tuning_outcomes(tag: str) -> dict[str, bool]:
    """Measured vector outcomes on the tuning set: moved at a perplexity ratio <= 2, at dose 1."""
    found = {}
    for name, r in json.loads((MEASURED / "tune_expansion.json").read_text())[tag]["contrasts"].items():
        found[name] = bool(r["v1 @ 1"]["moved"] and r["v1 @ 1"]["perplexity_ratio"] <= 2)
    metrics = {c["name"]: c["metric"] for c in yaml.safe_load(TUNING_SET.read_text()).get("sentences", [])}
    for name, r in json.loads((MEASURED / "tune_expansion.json").read_text())["sentences"]["pairs"].items():
        chat = r["sentence-v1"]["chat"]  # the chat replies, as the check reads: judged as the held-out sets judge
        rise = chat["steered"] - chat["unsteered"]
        moved = rise >= SHIFT if metrics.get(name) == "sentiment" else rise >= max(RISE, SHARE - chat["unsteered"])
        found[f"{name} (sentence)"] = bool(moved and chat["perplexity_ratio"] <= 2)
    return found


def contrasts(path: Path) -> list[tuple[str, str, str]]:
    data = yaml.safe_load(path.read_text())
    out = [(c["name"], str(c["positive"]), str(c["negative"])) for c in data.get("contrasts", [])]
    for group, entries in data.items():
        if group not in ("contrasts", "prompts", "raw_prompts", "chat_prompts", "reference", "personas") and isinstance(entries, list):
            out += [(f"{c['name']} (sentence)", str(c["positive"]), str(c["negative"])) for c in entries if isinstance(c, dict) and "positive" in c]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=TUNING_SET)
    parser.add_argument("--outcomes", default=None, help="results JSON (stems, comma-separated, later ones replacing earlier entries) of "
                        "benchmarks/untuned.py for the set; default: the tuning set's")
    parser.add_argument("--rejoin", action="store_true", help="no model: the verdicts of the last run (results/check_SET.json) against --outcomes")
    parser.add_argument("--ceiling", default=None, help="results JSON (stem) of untuned.py --ceiling for the set")
    parser.add_argument("--tag", default=TUNING_TAG, help="tune_expansion.json tag of the tuning set's outcomes")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    if args.outcomes:  # several: a later file's entries replace an earlier's (a contrast measured again)
        outcomes = {n: r["passed"] for stem in args.outcomes.split(",")
                    for n, r in json.loads((MEASURED / f"{stem}.json").read_text())["contrasts"].items()}
    else:
        outcomes = tuning_outcomes(args.tag)
    told = ({n: r["passed"] for n, r in json.loads((MEASURED / f"{args.ceiling}.json").read_text())["contrasts"].items()}
            if args.ceiling else {})
    last = json.loads((MEASURED / f"check_{args.set.stem}.json").read_text()) if args.rejoin else {}
    earlier = last.get("results", {})
    ctx = None if args.rejoin else context()
    if ctx is not None:
        check_pair(ctx, "Cats", "Dogs")  # warm-up: the first generate call pays one-off costs
    rows, results = [], {}
    wanted = [n for n in args.only.split(",") if n]
    for name, positive, negative in contrasts(args.set):
        if wanted and name not in wanted:
            continue
        if ctx is None:
            found, cpu = Feasibility(**{k: v for k, v in earlier[name].items() if k in Feasibility.__dataclass_fields__}), earlier[name]["cpu_s"]
        else:
            cpu = time.process_time()
            found = check_pair(ctx, positive, negative)
            cpu = time.process_time() - cpu
        outcome = outcomes.get(name)
        results[name] = {**{k: v for k, v in found.__dict__.items()}, "cpu_s": cpu, "outcome": outcome, "told_passed": told.get(name)}
        rows.append([name, f"{positive} − {negative}", found.kind, f"{found.untold:.2f} → {found.told:.2f} (needs {found.needed:+.2f})",
                     "yes" if found.follows else "no", f"{found.consistency:.2f}", "likely" if found.likely else "unlikely",
                     "—" if outcome is None else ("moved" if outcome else "not"), "" if told.get(name) is None else ("yes" if told[name] else "no"),
                     "" if outcome is None else ("✓" if found.likely == outcome else "✗"), f"{found.seconds:.1f} / {cpu:.1f}"])
        print(f"{name}: {found.line} [{found.details()}]", flush=True)
    print(markdown(["contrast", "pair", "kind", "score untold → told", "follows told", "consistency", "check", "vector measured",
                    "told measured", "agrees", "s wall / CPU"], rows))
    judged = [r for r in results.values() if r["outcome"] is not None]
    table = {f"{'likely' if p else 'unlikely'} / {'moved' if o else 'not'}": sum(r["likely"] == p and r["outcome"] == o for r in judged)
             for p in (True, False) for o in (True, False)}
    agree = sum(r["likely"] == r["outcome"] for r in judged)
    print(f"\nagrees on {agree} of {len(judged)}; confusion (check / measured): {table}; {machine() if ctx else 'rejoined, no model'}")
    print(f"wrote {save_json(f'check_{args.set.stem}', {'set': str(args.set), 'agree': agree, 'of': len(judged), 'confusion': table, 'results': results, 'outcomes': args.outcomes, **({'machine': last['machine']} if args.rejoin else {})})}")


if __name__ == "__main__":
    main()
