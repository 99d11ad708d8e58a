"""Time to build a vector on the default model: from one pair (ActAdd, mean) and from 64 and 256 pairs (mean, PCA).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/build_speed.py [--rounds 3] [--sizes 64,256]

One layer (8), batches of 32 prompts; the pairs are ten-token sentences (common.pairs). Building stops
the forward pass after the last block it reads, so a deep layer costs more: one more row builds from the
largest set at the last block (29). Reports the median CPU seconds over alternating rounds (wall clock
beside it). benchmarks/peers.py times the peers on the same pairs.
"""
from __future__ import annotations

import argparse
from typing import Callable

from common import LAYER, alternate, context, markdown, median_time, pairs, save_json

from extensions.steering.engine.build import build_actadd, build_from_pairs

BATCH = 32


def ours(ctx, sizes: list[int], layer: int = LAYER) -> dict[str, Callable[[], object]]:
    """Our builders by name; peers.py times the same ones beside the peers'."""
    runs = {}
    for n in sizes:
        for method in ("mean", "pca"):
            data = pairs(n)
            runs[f"{n} pairs, {method}"] = lambda d=data, m=method: build_from_pairs(ctx, d, [layer], m, batch_size=BATCH)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="64,256")
    args = parser.parse_args()
    ctx = context()
    runs = {
        "1 pair, actadd": lambda: build_actadd(ctx, "Love", "Hate", [LAYER]),
        "1 pair, mean": lambda: build_from_pairs(ctx, [("Love", "Hate")], [LAYER], "mean"),
    } | ours(ctx, sizes := [int(n) for n in args.sizes.split(",")])
    deepest = ctx.num_layers - 1
    runs[f"{sizes[-1]} pairs, mean, layer {deepest}"] = lambda: build_from_pairs(ctx, pairs(sizes[-1]), [deepest], "mean", batch_size=BATCH)
    times = alternate(runs, args.rounds)
    rows = [[name, f"{median_time(times, name):.3f}", f"{median_time(times, name, clock=0):.3f}"] for name in runs]
    print(f"\nBuilding a vector at layer {LAYER}, median of {args.rounds} alternating rounds")
    print(markdown(["vector", "CPU s", "wall s"], rows))
    print(f"wrote {save_json('build_speed', {'layer': LAYER, 'batch_size': BATCH, 'times': times})}")


if __name__ == "__main__":
    main()
