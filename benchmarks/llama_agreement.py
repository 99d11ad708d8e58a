"""Does an exported preset move llama-server's completions as it moves ours? Mean sentiment shift.

The shipped `love` preset is exported as a GGUF control vector at its own strength; llama-server on the
default model's GGUF completes "I hate you because" N times with and N times without it (seeds 0..N-1,
temperature 0.7, top-p 0.9, no other sampler), and our Transformers path does the same on the same GGUF
dequantised. Printed: each side's mean VADER sentiment steered and unsteered, its shift, and the
difference of the two shifts (issue 11's target: within 0.15 at N = 16). The two samplers draw from
different random streams, so the shifts agree only within sampling noise (reported as its standard error).

    STEERING_LLAMA_SERVER=/path/to/llama-server .venv/bin/python benchmarks/llama_agreement.py [--n 16]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llama_server import LlamaServer  # noqa: E402  (the tests' llama-server process)

from benchmarks.common import context, save_json  # noqa: E402
from extensions.steering.engine.apply import Steer  # noqa: E402
from extensions.steering.engine.control_vectors import write_control_vector  # noqa: E402
from extensions.steering.engine.generation import Sampling, completions  # noqa: E402
from extensions.steering.engine.metrics import sentiment  # noqa: E402
from extensions.steering.engine.presets import PresetStore  # noqa: E402
from extensions.steering.engine.tokens import prompt_ids  # noqa: E402

PROMPT = "I hate you because"
PRESET = "love"
TARGET = 0.15


def server_texts(server: LlamaServer, n: int, sampling: Sampling) -> list[str]:
    body = {"prompt": PROMPT, "n_predict": sampling.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "cache_prompt": False}
    return [server.post("/completion", {**body, "seed": seed})["content"] for seed in range(n)]


def summary(steered: list[str], plain: list[str]) -> dict:
    s, p = [sentiment(t) for t in steered], [sentiment(t) for t in plain]
    error = math.sqrt(statistics.variance(s) / len(s) + statistics.variance(p) / len(p))
    return {"steered": statistics.mean(s), "unsteered": statistics.mean(p), "shift": statistics.mean(s) - statistics.mean(p),
            "standard_error": error, "examples": {"steered": steered[:2], "unsteered": plain[:2]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()
    if not os.environ.get("STEERING_LLAMA_SERVER"):
        print("[skip] llama_agreement: set STEERING_LLAMA_SERVER to a llama-server binary")
        return
    ctx = context()
    store = PresetStore(Path(tempfile.mkdtemp(prefix="steering-agreement-")))
    recipe = store.recipe(PRESET)
    vector = store.vector(recipe, ctx)
    sampling = Sampling(max_new_tokens=40, temperature=0.7, top_p=0.9)
    folder = Path(tempfile.mkdtemp(prefix="steering-agreement-"))
    path = write_control_vector(folder / f"{PRESET}.gguf", vector, recipe.strength, "llama", mode=recipe.mode)
    sides = {}
    for flags, key in (([], "plain"), (["--control-vector-scaled", f"{path}:1"], "steered")):
        server = LlamaServer(flags, folder / f"{key}.log")
        try:
            sides[key] = server_texts(server, args.n, sampling)
        finally:
            server.close()
    found = list(completions(ctx, prompt_ids(ctx, PROMPT), [Steer(vector, recipe.strength, recipe.mode)], range(args.n), sampling,
                             compare=True))
    ours = summary([c.text for c in found if c.steered], [c.text for c in found if not c.steered])
    theirs = summary(sides["steered"], sides["plain"])
    difference = theirs["shift"] - ours["shift"]
    for name, row in (("llama-server", theirs), ("ours (transformers)", ours)):
        print(f"{name}: sentiment {row['unsteered']:+.2f} -> {row['steered']:+.2f}, shift {row['shift']:+.2f} (± {row['standard_error']:.2f})")
    print(f"difference of the shifts: {difference:+.2f} (target within ±{TARGET}); n = {args.n} per side")
    save_json("llama_agreement", {"preset": PRESET, "strength": recipe.strength, "prompt": PROMPT, "n": args.n,
                                  "sampling": vars(sampling), "llama_server": theirs, "ours": ours, "difference": difference,
                                  "within_target": abs(difference) <= TARGET})


if __name__ == "__main__":
    main()
