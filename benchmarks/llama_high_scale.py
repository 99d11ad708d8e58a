"""Where llama-server and our hooks part at high scale: position 0, the last block's output, or something else?

A llama-cvector-generator vector (pirate vs librarian system prompts, --method mean) is served by
llama-server at several scales and imported here. llama.cpp adds ``scale × direction.N`` to the output
of block N at every position, position 0 included, for N = 1 .. n_layer - 1; an imported preset adds
the same values to the input of block N + 1 but leaves position 0 (the attention sink) alone and has
no hook for the last block's output (direction.n_layer-1, left out on import). Compared side by side,
greedy, on the shipped Q4_1 GGUF (``--f32``: an F32 copy, the weights our torch model has):

- llama-server: plain ``--control-vector-scaled FILE:S``, and with ``--control-vector-layer-range 1 N``
  (N = n_layer - 2: the directions an import keeps);
- ours: the import as the webui runs it; with position 0 steered too; and with both position 0 and
  the last block's output (a benchmark-only hook on the final norm's input): llama.cpp's arithmetic.

Printed per scale and side: pirate words per reply, readable replies, and for ours the share of
replies whose text equals llama-server's at the same settings. Needs STEERING_LLAMA_SERVER and
STEERING_CVECTOR_GENERATOR (llama-cvector-generator; the vector is made once, ~1 min on 2 cores).

    STEERING_LLAMA_SERVER=... STEERING_CVECTOR_GENERATOR=... .venv/bin/python benchmarks/llama_high_scale.py
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llama_server import PIRATE_VS_LIBRARIAN, cvector_generator_file, f32_copy, llama_server  # noqa: E402

from benchmarks.common import context, save_json  # noqa: E402
from extensions.steering.engine.apply import Steer, SteeringHandle  # noqa: E402
from extensions.steering.engine.control_vectors import fit_to_model, read_control_vector  # noqa: E402
from extensions.steering.engine.metrics import PIRATE_WORDS, readable, words  # noqa: E402
from extensions.steering.engine.models import default_gguf  # noqa: E402
from extensions.steering.engine.tokens import prompt_ids  # noqa: E402

PROMPTS = ("Tell me about your day.", "What is your favourite food?", "How do I make a cup of tea?",
           "What should I do this weekend?")
SCALES = (1.0, 2.0, 3.0, 4.0, 6.0)
NEW_TOKENS = 40


def pirate_words(text: str) -> int:
    wanted = set(PIRATE_WORDS)
    return sum(1 for word in words(text.lower()) if word in wanted)


def greedy_ours(ctx, ids: list[int], steers, first: bool, last=None) -> str:
    """Greedy completion with our hooks; ``last`` also adds that row to the final norm's input (every position)."""
    import torch

    handles = []
    if last is not None:
        norm = ctx.model.model.norm
        handles.append(norm.register_forward_pre_hook(lambda module, args: (args[0] + last,)))
    try:
        with SteeringHandle(ctx, steers, steer_first_position=first), torch.inference_mode():
            input_ids = torch.tensor([ids])
            out = ctx.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                     max_new_tokens=NEW_TOKENS, pad_token_id=ctx.pad_id)
    finally:
        for handle in handles:
            handle.remove()
    return ctx.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def summary(texts: list[str], reference: list[str] | None = None) -> dict:
    row = {"pirate_words": sum(map(pirate_words, texts)) / len(texts), "readable": sum(map(readable, texts)) / len(texts),
           "first": texts[0][:90]}
    if reference is not None:
        row["same_text"] = sum(a.strip() == b.strip() for a, b in zip(texts, reference)) / len(texts)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, default=None, help="a llama-cvector-generator file (default: make the pirate one)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--f32", action="store_true", help="serve an F32 copy of the GGUF (our weights exactly; slow on a shared CPU)")
    args = parser.parse_args()
    if not os.environ.get("STEERING_LLAMA_SERVER") or not (args.vector or os.environ.get("STEERING_CVECTOR_GENERATOR")):
        print("[skip] llama_high_scale: set STEERING_LLAMA_SERVER and STEERING_CVECTOR_GENERATOR (or pass --vector)")
        return
    folder = Path(tempfile.mkdtemp(prefix="steering-high-scale-"))
    path = args.vector or cvector_generator_file(os.environ["STEERING_CVECTOR_GENERATOR"], folder, *PIRATE_VS_LIBRARIAN)
    ctx = context()
    vector, info = read_control_vector(path)
    kept, dropped = fit_to_model(vector, ctx.hidden_size, ctx.num_layers, str(path))
    last_row = vector.directions[dropped[0]][0] if dropped else None
    kept_top = max(info.directions) - (1 if dropped else 0)
    model = f32_copy(default_gguf(), folder / "f32.gguf") if args.f32 else default_gguf()
    ids = {prompt: prompt_ids(ctx, prompt, chat=True) for prompt in PROMPTS}
    results = {"vector": str(path), "directions": [min(info.directions), max(info.directions)], "dropped_on_import": dropped,
               "prompts": list(PROMPTS), "new_tokens": NEW_TOKENS, "scales": {}}
    for scale in args.scales:
        row = results["scales"][f"{scale:g}"] = {}
        served = {}
        for name, extra in (("llama-server", []), (f"llama-server, layer range 1-{kept_top}", ["--control-vector-layer-range", "1", str(kept_top)])):
            with llama_server(["--control-vector-scaled", f"{path}:{scale:g}", *extra], folder / "server.log", model) as server:
                served[name] = [server.greedy(ids[p], NEW_TOKENS) for p in PROMPTS]
            row[name] = summary(served[name])
        full, ranged = served["llama-server"], served[f"llama-server, layer range 1-{kept_top}"]
        steers = [Steer(kept, scale)]
        row["ours (import, as the webui runs it)"] = summary([greedy_ours(ctx, ids[p], steers, False) for p in PROMPTS], ranged)
        row["ours + position 0"] = summary([greedy_ours(ctx, ids[p], steers, True) for p in PROMPTS], ranged)
        if last_row is not None:
            row["ours + position 0 + last block output"] = summary(
                [greedy_ours(ctx, ids[p], steers, True, last_row * scale) for p in PROMPTS], full)
        for name, found in row.items():
            same = f", same text as llama-server {found['same_text']:.2f}" if "same_text" in found else ""
            print(f"scale {scale:g}: {name}: pirate words/reply {found['pirate_words']:.2f}, readable {found['readable']:.2f}{same}; "
                  f"{found['first']!r}", flush=True)
    save_json("llama_high_scale", results)


if __name__ == "__main__":
    main()
