"""Choosing the distillation defaults: KL recovery on held-out messages against fitting time, per setting.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tuning/distill_tuning.py [--only butler,cats] [--configs before,defaults] [--held-out 31]

For each persona of the TUNING SET below (written for this benchmark, not the held-out evaluation) and
each candidate setting, fits a vector via kl on the training messages and measures its KL recovery on
the held-out messages (engine.distill: the first 24 tokens of greedy with-S replies, teacher-forced).
One fit per setting also yields its shorter fits: the direction after every pass over the training
batches is measured too (the fit is deterministic, so a fit of fewer steps is that direction), and a
stop on a plateau of the loss is read off the recorded losses (training._plateaued). Times are the
fit's own (wall clock and this process's CPU time, at one torch thread: an idle core's time), from
the start of the fit to the step. Prints one table per setting; results/distill_tuning.json keeps
every number (merged across runs, so personas can be measured in separate processes).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common
from common import RESULTS, context, machine, markdown  # noqa: E402

from extensions.steering.engine import distill as d  # noqa: E402
from extensions.steering.engine.apply import Steer  # noqa: E402
from extensions.steering.engine.distill import training  # noqa: E402
from extensions.steering.engine.distill.evaluation import kl_divergences_many  # noqa: E402
from extensions.steering.engine.distill.recipes import distill_recipe  # noqa: E402
from extensions.steering.engine.progress import Fitting  # noqa: E402
from extensions.steering.engine.vector import SteeringVector  # noqa: E402

# -- THE TUNING SET: personas written for tuning the defaults (20-60 tokens each) -------------------------
# Not the held-out evaluation (benchmarks/untuned_set.yaml, never read here) and none of its personas.
TUNING_PERSONAS: dict[str, str] = {
    "butler": "You are a very formal English butler. Address the user as sir or madam, speak with impeccable, "
              "old-fashioned politeness, and humbly offer your service at the end of every reply.",
    "coach": "You are an energetic sports coach. Answer with great enthusiasm and lots of exclamation marks, push the "
             "user to give their best, and turn every answer into a short pep talk.",
    "terse": "Answer in as few words as possible. Never write more than one short sentence, and skip greetings, "
             "explanations and pleasantries.",
    "cats": "You are obsessed with cats. Whatever the user asks, bring the conversation back to cats, mention your cat "
            "Whiskers, and add a fun cat fact to every reply.",
    "german": "Antworte immer auf Deutsch, egal in welcher Sprache der Nutzer schreibt. Schreibe kurze, einfache Sätze "
              "und sei freundlich.",
    "poet": "You are a melancholic poet. Answer every question with sadness and longing, use images of rain, autumn "
            "leaves and lost love, and sigh often.",
    "friend": "You are a gentle and caring friend. Answer kindly, comfort the user, and encourage them warmly.",
}
# the shipped personas the first defaults were tuned on: a reference, run with --only kind,pirate
REFERENCE_PERSONAS: dict[str, str] = {
    "kind": "You are a warm, kind and encouraging assistant. You always answer gently and with compassion, praise the "
            "user's efforts, show that you care about their feelings, and stay positive and supportive in every reply.",
    "pirate": "You are a pirate. Always talk like a pirate: say 'Arr', 'ahoy', 'matey' and 'ye', call the user 'matey', "
              "and talk about your ship, the sea and treasure in every reply.",
}

# candidate settings: DistillOptions fields and layers; "steps" is the longest fit, shorter ones are read off it
# the settings before this tuning (the field defaults of DistillOptions, which old recipe files mean)
LEGACY = dict({f.name: f.default for f in fields(d.DistillOptions) if f.name not in ("system", "instead")},
              layers=["10%", "20%", "30%", "40%", "50%"])
CONFIGS: dict[str, dict] = {
    "before": LEGACY,
    "lr0.05-long": dict(LEGACY, steps=48),
    "lr0.1-long": dict(LEGACY, lr=0.1, steps=48),
    "lr0.1-msgs62": dict(LEGACY, lr=0.1, steps=48, messages=62),
    "lr0.15": dict(LEGACY, lr=0.15, steps=32),
    "lr0.3": dict(LEGACY, lr=0.3, steps=32),
    "lr0.15-batch4": dict(LEGACY, lr=0.15, steps=48, batch_size=4),
    "lr0.15-msgs62": dict(LEGACY, lr=0.15, steps=32, messages=62),
    "lr0.15-reply8": dict(LEGACY, lr=0.15, steps=32, reply_tokens=8),
    "lr0.15-3layers": dict(LEGACY, lr=0.15, steps=32, layers=["20%", "35%", "50%"]),
    "defaults": None,  # what a new recipe gets now (engine.distill.distill_recipe with nothing given)
}
PLATEAUS = (0.02, 0.05, 0.1)


class Snapshots:
    """The fitted directions after every step, the loss and the time since the start of the fit."""

    def __init__(self):
        self.params: dict[int, dict] = {}
        self.times: dict[int, tuple[float, float]] = {}
        self.losses: list[float] = []
        self.start = (time.perf_counter(), time.process_time())

    def loss(self, step: int, steps: int, value: float) -> None:
        self.losses.append(value)
        self.times[step] = (time.perf_counter() - self.start[0], time.process_time() - self.start[1])

    def directions(self, step: int, params: dict) -> None:
        self.params[step] = params


def fit(ctx, system: str, config: dict) -> tuple[SteeringVector, Snapshots, Fitting, tuple[float, float]]:
    snaps = Snapshots()
    options = dict(config)
    layers = ctx.layer_indices(options.pop("layers"))
    fitting = Fitting(loss=snaps.loss, directions=snaps.directions)
    snaps.start = (time.perf_counter(), time.process_time())
    vector = d.distill(ctx, system, layers, via=options.pop("via", "kl"), progress=fitting,
                       messages=d.training_messages(options.pop("messages")), **options)
    total = (time.perf_counter() - snaps.start[0], time.process_time() - snaps.start[1])
    return vector, snaps, fitting, total


def measure(ctx, name: str, system: str, configs: list[str], held_out: int | None) -> dict:
    messages = d.held_out_messages(held_out)
    with_prompts = [d.chat_ids(ctx, m, system) for m in messages]
    without_prompts = [d.chat_ids(ctx, m, None) for m in messages]
    replies = d.greedy_replies(ctx, with_prompts, d.EVAL_REPLY_TOKENS, batch_size=16)
    out = {"system": system, "system_tokens": len(ctx.tokens(system)), "held_out": len(messages), "configs": {}}
    for config_name in configs:
        config = CONFIGS[config_name]
        if config is None:
            recipe = distill_recipe("tuning", system)
            config = dict(asdict(recipe.options), layers=recipe.layers)
        config = {k: v for k, v in config.items() if k not in ("system", "instead")}
        vector, snaps, fitting, total = fit(ctx, system, config)
        window = -(-config["messages"] // config["batch_size"])  # batches per pass
        done = fitting.steps_done or 0
        wanted = sorted({s for s in range(window, done + 1, window)} | {done} | set(_plateau_stops(snaps.losses, window, done).values()))
        candidates = [[Steer(SteeringVector({i: p for i, p in snaps.params[s].items()}, vector.residual_norms), 1.0, "all")]
                      for s in wanted if s in snaps.params]
        kl_without, kls = kl_divergences_many(ctx, with_prompts, without_prompts, candidates, replies=replies)
        by_step = {s: d.recovery(kl_without, kl) for s, kl in zip([s for s in wanted if s in snaps.params], kls)}
        plateau = {str(p): {"step": s, "recovery": by_step[s], "wall_s": snaps.times[s][0], "cpu_s": snaps.times[s][1]}
                   for p, s in _plateau_stops(snaps.losses, window, done).items()}
        out["configs"][config_name] = {
            "options": {k: v for k, v in config.items()},
            "kl_without": sum(kl_without) / len(kl_without),
            "final": {"steps": done, "stopped": fitting.stopped, "recovery": by_step.get(done), "wall_s": total[0], "cpu_s": total[1]},
            "by_step": {str(s): {"recovery": r, "wall_s": snaps.times[s][0], "cpu_s": snaps.times[s][1], "loss": snaps.losses[s - 1]}
                        for s, r in by_step.items()},
            "plateau": plateau,
            "losses": snaps.losses,
        }
        f = out["configs"][config_name]["final"]
        print(f"{name} / {config_name}: recovery {f['recovery']:.3f} after {done} steps ({fitting.stopped or 'all steps'}), "
              f"{f['wall_s']:.0f} s wall, {f['cpu_s']:.0f} s CPU; by step "
              + ", ".join(f"{s}: {r:.2f}" for s, r in by_step.items())
              + "; plateau " + ", ".join(f"{p}: step {v['step']} {v['recovery']:.2f} {v['cpu_s']:.0f} s" for p, v in plateau.items()),
              file=sys.stderr, flush=True)
    return out


def _plateau_stops(losses: list[float], window: int, done: int) -> dict[float, int]:
    """The step a fit with ``plateau`` = p would have stopped at, for each p of PLATEAUS."""
    stops = {}
    for p in PLATEAUS:
        stops[p] = next((s for s in range(1, done) if training._plateaued(losses[:s], window, p)), done)
    return stops


def save(path: Path, persona: str, found: dict) -> None:
    """Merge one persona's numbers into ``path`` (several processes may write it: a lock around the update)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"results": {}}
        data["machine"] = machine()
        entry = data["results"].setdefault(persona, {})
        configs = {**entry.get("configs", {}), **found["configs"]}
        data["results"][persona] = {**found, "configs": configs}
        path.write_text(json.dumps(data, indent=1) + "\n")


def summary(path: Path) -> str:
    data = json.loads(path.read_text())["results"]
    configs = list(dict.fromkeys(c for r in data.values() for c in r["configs"]))
    rows = []
    for config in configs:
        for persona, r in data.items():
            c = r["configs"].get(config)
            if c:
                f = c["final"]
                rows.append([config, persona, r["system_tokens"], f"{f['recovery']:.2f}", f["steps"], f["stopped"] or "",
                             f"{f['wall_s']:.0f}", f"{f['cpu_s']:.0f}"])
    return markdown(["setting", "persona", "S tokens", "KL recovery", "steps", "stopped", "wall s", "CPU s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated personas (tuning set by default; kind, pirate: the shipped references)")
    parser.add_argument("--configs", default="before,defaults", help=f"comma-separated settings of {', '.join(CONFIGS)}")
    parser.add_argument("--held-out", type=int, default=None, help="held-out messages (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "distill_tuning.json")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if not args.table:
        personas = {**TUNING_PERSONAS, **REFERENCE_PERSONAS}
        wanted = [n for n in args.only.split(",") if n] or list(TUNING_PERSONAS)
        configs = [c for c in args.configs.split(",") if c]
        ctx = context()
        for name in wanted:
            save(args.out, name, measure(ctx, name, personas[name], configs, args.held_out))
    print(summary(args.out))


if __name__ == "__main__":
    main()
