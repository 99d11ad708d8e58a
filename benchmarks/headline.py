"""The README's first table: the README's command run as a user runs it, its completions scored by VADER sentiment.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/headline.py [--n 16] [--seed 0]

Runs `python -m extensions.steering generate --prompt "I hate you because" --steer love --n N --seed S --compare
--json` in this process (the same seeds steered and unsteered, the CLI's sampling: temperature 0.7, top-p 0.9,
40 new tokens) and prints the mean sentiment of each side with the first seed's completion; writes
results/headline.json.
"""
from __future__ import annotations

import argparse
import io
import json
from contextlib import redirect_stdout

from common import markdown, save_json

from extensions.steering import cli
from extensions.steering.engine.metrics import mean, metric

PROMPT = "I hate you because"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    command = ["generate", "--prompt", PROMPT, "--steer", "love", "--n", str(args.n), "--seed", str(args.seed), "--compare", "--json"]
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = cli.main(command)
    if status:
        raise SystemExit(f"the command failed ({status}): python -m extensions.steering {' '.join(command)}")
    rows = [json.loads(line) for line in printed.getvalue().splitlines() if line.strip()]
    sentiment = metric("sentiment").score
    sides = {}
    for steered, label in ((False, "unsteered"), (True, "steered by `love`")):
        mine = [r for r in rows if r["steered"] is steered]
        sides[label] = {"mean_sentiment": mean([sentiment(r["text"]) for r in mine]), "completions": len(mine),
                        "sample": next(r["text"] for r in mine if r["seed"] == args.seed)}
    print(markdown(["", "mean sentiment", f"sample (seed {args.seed})"],
                   [[label, f"**{s['mean_sentiment']:.2f}**", f"*{' '.join(s['sample'].split())}*"] for label, s in sides.items()]))
    print(f"wrote {save_json('headline', {'command': 'python -m extensions.steering ' + ' '.join(command), 'sides': sides})}")


if __name__ == "__main__":
    main()
