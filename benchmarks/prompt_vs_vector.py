"""A long system prompt against the same chat without it, steered by the prompt's distilled vector.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prompt_vs_vector.py [--via kl] [--rounds 5] [--messages 30]

Prompt tokens per request and time to first token (prefill + one greedy token, median over alternating
rounds, CPU time and wall), and from engine.distill.evaluate how much of the prompt's effect the
vector keeps (KL recovery, pirate-word share of replies). The vector is built the way `distill` builds
it (the method's default layers and settings); with kl (the engine's default) that takes about a minute
on the default model; --via contrast takes seconds and keeps far less.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch
from common import alternate, load, markdown, save_json, speed_ratio

SYSTEM = (
    "You are Captain Redbeard, a pirate who has sailed the seven seas for forty years. You always speak like a "
    "pirate: you say 'arr', 'ahoy', 'matey', 'aye' and 'ye', you call the user 'matey' or 'landlubber', and you "
    "talk about your ship, the Salty Maiden, your crew of scallywags, buried treasure, the open sea, storms, rum "
    "and your old parrot. Whatever the user asks, you answer it, but always in character, with sea stories and "
    "nautical words: the front of a thing is the bow, the back is the stern, left is port and right is starboard. "
    "You never say you are an AI or a language model; you are a pirate captain and nothing else. You are proud, "
    "loud and cheerful, you laugh often ('yo ho ho!'), and you end most replies by promising to share your "
    "treasure or by inviting the user to sail with you. Keep your replies short, two or three sentences, and "
    "never break character, even if the user asks you to."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--via", default="kl", help="distillation method: kl (slow) or contrast (fast, weaker)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=None, help="held-out messages to evaluate on (default: all)")
    args = parser.parse_args()
    from extensions.steering.engine import distill
    from extensions.steering.engine.apply import Steer, steer
    from extensions.steering.engine.context import ModelContext
    from extensions.steering.engine.distill.recipes import distill_recipe
    from extensions.steering.engine.methods import build_vector

    ctx = ModelContext.of(*load())
    recipe = distill_recipe("captain", SYSTEM, via=args.via, metric="pirate")
    vector = build_vector(recipe, ctx).vector
    layers = vector.layers
    held_out = distill.held_out_messages(args.messages)
    quality = distill.evaluate(ctx, SYSTEM, vector, recipe.strength, recipe.mode, messages=held_out,
                               ttft_rounds=1, behaviour_tokens=32)

    message = held_out[0]
    with_system = torch.tensor([distill.chat_ids(ctx, message, SYSTEM)])
    without = torch.tensor([distill.chat_ids(ctx, message, None)])

    def first_token(ids, steers=()):
        def run():
            with torch.inference_mode(), steer(ctx, steers) if steers else nullcontext():
                ctx.model(input_ids=ids).logits[:, -1].argmax(-1)
        return run

    times = alternate({
        "system prompt": first_token(with_system),
        "no system prompt": first_token(without),
        "vector, no system prompt": first_token(without, [Steer(vector, recipe.strength, recipe.mode)]),
    }, args.rounds)
    rows = []
    for name, ids in (("system prompt", with_system), ("no system prompt", without), ("vector, no system prompt", without)):
        ttft = sorted(t[1] for t in times[name])[args.rounds // 2]
        behaviour = {"system prompt": "with_system", "no system prompt": "without", "vector, no system prompt": "steered"}[name]
        rows.append([
            name, ids.shape[1], f"{ttft * 1000:.0f} ms", f"{speed_ratio(times, 'system prompt', name):.2f}",
            f"{getattr(quality, 'behaviour_' + behaviour):.2f}", f"{getattr(quality, 'readable_' + behaviour):.2f}",
        ])
    print(f"\nPirate system prompt ({quality.system_tokens} tokens) vs its distilled vector ({args.via}, layers {layers}); "
          f"KL recovery {quality.kl_recovery:.2f} on {len(held_out)} held-out messages")
    print(markdown(["setting", "prompt tokens", "time to first token (CPU)", "TTFT / system prompt's", "pirate-word share", "readable"], rows))
    print(f"wrote {save_json('prompt_vs_vector', {'via': args.via, 'layers': layers, 'evaluate': quality.to_dict(), 'times': times})}")


if __name__ == "__main__":
    main()
