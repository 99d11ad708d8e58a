"""Steering's cost in generation speed on a realistically sized model on a GPU: a randomly initialised
Llama of the 8B shape in bfloat16 (no weights are downloaded), batch 1 and 16.

    python3 benchmarks/gpu_overhead.py [--rounds 5] [--tokens 48] [--prompt 128] [--tiny]

Needs only torch and transformers (it loads the engine's apply, context and vector modules without the
package, whose presets module needs yaml and safetensors). Greedy generation of exactly --tokens tokens after a
--prompt-token prompt; every contender against no steering, alternating in one process, median over
rounds of the per-round speed ratio (wall clock, CUDA synchronised). Contenders: one vector in mode
all, actadd (4 rows) and generated; four vectors on four layers (all); and, for reference, a bare
forward hook adding the vector to a block's output (what repeng and steering-vectors do, with no
position handling). Prints a table; writes $OUT/gpu_overhead.json when $OUT is set. Without CUDA, or
with --tiny, it runs a tiny Llama on the CPU (a smoke test of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ENGINE = Path(__file__).resolve().parents[1] / "extensions" / "steering" / "engine"
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192)
TINY = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000, max_position_embeddings=512)


def engine():
    """The engine's apply, context and vector modules, imported from their folder without the package's __init__."""
    package = types.ModuleType("steering_engine")
    package.__path__ = [str(ENGINE)]
    sys.modules["steering_engine"] = package
    return tuple(importlib.import_module(f"steering_engine.{name}") for name in ("apply", "context", "vector"))


def make_model(tiny: bool, device: str) -> LlamaForCausalLM:
    dtype = torch.float32 if tiny else torch.bfloat16
    config = LlamaConfig(**(TINY if tiny else LLAMA_8B), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def contenders(ctx, apply, vector) -> dict:
    """name -> context manager factory steering the model of ``ctx`` (None: unsteered)."""
    model = ctx.model
    n, d = ctx.num_layers, ctx.hidden_size
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    one = vector.SteeringVector({n // 4: rand(d)})
    rows = vector.SteeringVector({n // 4: rand(4, d)})
    four = vector.SteeringVector({layer: rand(d) for layer in (n // 8, n // 4, 3 * n // 8, n // 2)})
    direction = one.directions[n // 4][0].to(model.device, model.dtype)

    class BareHook:
        def __enter__(self):
            self.handle = model.model.layers[n // 4 - 1].register_forward_hook(lambda m, a, out: out + direction)

        def __exit__(self, *exc):
            self.handle.remove()

    S = apply.Steer
    return {
        "unsteered": None,
        "1 vector, all": lambda: apply.steer(ctx, [S(one, 1.0, "all")]),
        "1 vector, actadd": lambda: apply.steer(ctx, [S(rows, 1.0, "actadd")]),
        "1 vector, generated": lambda: apply.steer(ctx, [S(one, 1.0, "generated")]),
        "4 vectors on 4 layers, all": lambda: apply.steer(ctx, [S(four, 1.0, "all")]),
        "reference: bare forward hook": BareHook,
    }


def timed_generation(model, ids, mask, tokens: int, context) -> float:
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        if context is None:
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        else:
            with context():
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    sync()
    return time.perf_counter() - start


def run(model, runs: dict, batch: int, prompt: int, tokens: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), generator=g).to(model.device)
    mask = torch.ones_like(ids)
    if batch > 1:  # ragged prompts, left-padded, as a server batches them
        for row in range(1, batch, 2):
            mask[row, : prompt // 4] = 0
    names = list(runs)
    for name in names:  # warm-up
        timed_generation(model, ids, mask, tokens, runs[name])
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(timed_generation(model, ids, mask, tokens, runs[name]))
    base = times["unsteered"]
    return {
        "batch": batch,
        "unsteered_tokens_per_s": batch * tokens / statistics.median(base),
        "ratios": {n: statistics.median(b / t for b, t in zip(base, times[n])) for n in names if n != "unsteered"},
        "times": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--tiny", action="store_true", help="a tiny Llama on the CPU: checks the script, measures nothing useful")
    args = parser.parse_args()
    tiny = args.tiny or not torch.cuda.is_available()
    if tiny and not args.tiny:
        print("no CUDA device: running the tiny shape on the CPU instead (a smoke test)")
    device = "cpu" if tiny else "cuda"
    started = time.perf_counter()
    apply, context, vector = engine()
    model = make_model(tiny, device)
    where = "CPU" if tiny else torch.cuda.get_device_name()
    shape = "tiny Llama" if tiny else "Llama 8B shape (random weights)"
    print(f"{shape}, {str(model.dtype).removeprefix('torch.')}, on {where}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"built in {time.perf_counter() - started:.0f} s", flush=True)
    runs = contenders(context.ModelContext.of(model), apply, vector)
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        results.append(run(model, runs, batch, args.prompt, args.tokens, args.rounds))
        print(f"batch {batch} done at {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\nGreedy generation, {args.prompt}-token prompts, {args.tokens} new tokens, median of {args.rounds} alternating rounds "
          "(speed steered / unsteered, wall clock)")
    print("| batch | steering | ratio | unsteered tokens/s |\n|---|---|---|---|")
    for r in results:
        for name, ratio in r["ratios"].items():
            print(f"| {r['batch']} | {name} | {ratio:.3f} | {r['unsteered_tokens_per_s']:.1f} |")
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_overhead.json"
        info = {"device": where, "shape": shape, "dtype": str(model.dtype), "torch": torch.__version__,
                "transformers": transformers.__version__, "args": vars(args), "results": results}
        path.write_text(json.dumps(info, indent=1) + "\n")
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
