"""Distillation is deterministic: the same prompt and options give the same tensors on an idle and a busy machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_repeat.py [--only kind,pirate] [--busy 2] [--held-out 10] [--json distill_repeat]

For each shipped persona (a shipped preset that names its system prompt S), S is distilled at the
default options (via kl, DistillOptions' defaults, no time limit) twice: first as the machine is, then
with ``--busy`` extra processes spinning on the CPU (``yes > /dev/null``, started and ended here). Each
fit reports its steps, its wall-clock and CPU seconds (this process's, at one torch thread: the
compute the fit itself needs, which a busy machine stretches in wall time only), a SHA-256 of its
tensors and whether the two fits are bit-identical, and the KL recovery of the vector on ``--held-out``
held-out messages. The speed goal (a default fit in <= 60 s on 2 idle cores) is read off the CPU
seconds. Writes results/distill_repeat.json.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time

from common import context, machine, markdown, save_json

from extensions.steering.engine import distill as d
from extensions.steering.engine.apply import Steer
from extensions.steering.engine.distill.recipes import distill_recipe
from extensions.steering.engine.methods import build_vector
from extensions.steering.engine.presets import SHIPPED_DIR
from extensions.steering.engine.progress import Fitting
from extensions.steering.engine.recipe import read_recipe


def digest(vector) -> str:
    hashed = hashlib.sha256()
    for layer in vector.layers:
        hashed.update(str(layer).encode())
        hashed.update(vector.directions[layer].contiguous().numpy().tobytes())
    return hashed.hexdigest()[:16]


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(count)]


def fit(ctx, name: str, system: str, instead: str | None) -> dict:
    recipe = distill_recipe(name, system, instead=instead)
    fitting = Fitting()
    wall, cpu = time.perf_counter(), time.process_time()
    vector = build_vector(recipe, ctx, progress=fitting).vector
    return {"vector": vector, "steps": fitting.steps_done, "stopped": fitting.stopped, "loss": fitting.last_loss,
            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "sha256": digest(vector), "strength": recipe.strength}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated shipped presets (default: every one that names a system prompt)")
    parser.add_argument("--busy", type=int, default=2, help="CPU-spinning processes during the second fit (0: fit twice as the machine is)")
    parser.add_argument("--held-out", type=int, default=10, help="held-out messages for the KL recovery")
    parser.add_argument("--json", default="distill_repeat", help="results/NAME.json to write")
    args = parser.parse_args()
    ctx = context()
    shipped = {p.stem: read_recipe(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))}
    wanted = [n for n in args.only.split(",") if n] or [n for n, r in shipped.items() if r.target().system]
    held_out = d.held_out_messages(args.held_out)
    results, rows = {}, []
    for name in wanted:
        target = shipped[name].target()
        runs = {}
        for condition in ("as is", f"{args.busy} busy"):
            spinners = busy_processes(args.busy) if condition != "as is" else []
            try:
                runs[condition] = fit(ctx, f"{name}-repeat", target.system, target.instead)
            finally:
                for process in spinners:
                    process.terminate()
                    process.wait()
            print(f"{name} ({condition}): {runs[condition]['steps']} steps, {runs[condition]['cpu_s']:.0f} s CPU, "
                  f"{runs[condition]['wall_s']:.0f} s wall", file=sys.stderr, flush=True)
        first, second = runs.values()
        identical = first["sha256"] == second["sha256"] and all(
            (first["vector"].directions[i] == second["vector"].directions[i]).all() for i in first["vector"].layers)
        with_prompts = [d.chat_ids(ctx, m, target.system) for m in held_out]
        without_prompts = [d.chat_ids(ctx, m, target.instead) for m in held_out]
        kl_without, kl_steered = d.kl_divergences(ctx, with_prompts, without_prompts, [Steer(first["vector"], first["strength"], "all")])
        recovery = d.recovery(kl_without, kl_steered)
        results[name] = {"system_tokens": len(ctx.tokens(target.system)), "kl_recovery": recovery, "identical": bool(identical),
                         "runs": {c: {k: v for k, v in r.items() if k != "vector"} for c, r in runs.items()}}
        rows.append([name, results[name]["system_tokens"], *(f"{r['steps']} / {r['cpu_s']:.0f} / {r['wall_s']:.0f}" for r in runs.values()),
                     "yes" if identical else "**NO**", f"{recovery:.2f}"])
    print(f"\ndefault options ({d.DistillOptions(system='-').steps} steps, {d.DistillOptions(system='-').messages} training messages), "
          f"no time limit; KL recovery on {len(held_out)} held-out messages; {machine()}")
    print(markdown(["persona", "S tokens", "as is: steps / CPU s / wall s", f"{args.busy} busy: steps / CPU s / wall s",
                    "bit-identical", "KL recovery"], rows))
    print(f"wrote {save_json(args.json, {'busy': args.busy, 'held_out': len(held_out), 'machine': machine(), 'results': results})}")


if __name__ == "__main__":
    main()
