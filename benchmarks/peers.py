"""Us against repeng, steering-vectors and llama.cpp control vectors, in one process on the default model.

    OMP_NUM_THREADS=1 PEER_PYTHON benchmarks/peers.py [--rounds 7] [--build-rounds 1] [--skip overhead,build,check]

Needs the peer environment (benchmarks/requirements-peers.txt); a peer that is not installed is skipped
with a message. Three parts:

- overhead: greedy tokens per second with the same vector steered over unsteered, each tool against the
  same unsteered baseline, alternating in one process (batch 1 and 8; llama.cpp at batch 1 only: its
  Python binding generates one sequence at a time, on its own Q4_1 kernels and against its own baseline);
  and, less noisy, single decode steps alternating every five steps (batch 1, Transformers tools);
- build: time to build a vector from 64 and 256 pairs at one layer, batches of 32 (ours: mean, PCA;
  repeng: PCA of the differences; steering-vectors: mean, PCA);
- check: with the same vector, layer and positions, the steered logits of each tool against a plain
  forward hook (forward pass, 16 greedy KV-cache steps, a left-padded batch), and the change llama.cpp's
  control vector makes to the logits against the change ours makes.

Semantics that differ (see README): we add to a block's INPUT, the peers to its OUTPUT, so our layer
L + 1 is their layer L (their last block's output has no equivalent here); we leave position 0 (the
attention sink) alone unless steer_first_position=True, the peers steer it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from contextlib import contextmanager
from functools import cache

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars

import torch  # noqa: E402
from build_speed import BATCH  # noqa: E402
from build_speed import ours as our_builders  # noqa: E402
from common import (  # noqa: E402
    LAYER,
    PROMPTS,
    RESULTS,
    alternate,
    context,
    greedy,
    left_padded,
    markdown,
    median_time,
    pairs,
    pyplot,
    random_direction,
    ratio_bars,
    round_ratios,
    save_figure,
    save_json,
    speed_ratio,
    timed,
)

from extensions.steering.engine.apply import Steer, SteeringHandle  # noqa: E402
from extensions.steering.engine.models import default_gguf  # noqa: E402
from extensions.steering.engine.vector import SteeringVector  # noqa: E402

THEIRS = LAYER - 1  # the block whose output the peers steer: the input of our block LAYER
NORM = 40.0  # the test vector's norm: about a third of the residual norm there


@cache
def installed(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        print(f"[skip] {module} is not installed here (see benchmarks/requirements-peers.txt)")
        return False
    return True


def import_repeng():
    import numpy

    if not hasattr(numpy, "float_"):  # repeng 0.4.0 names np.float_ in annotations; numpy 2 removed it
        numpy.float_ = numpy.float64
    import repeng

    return repeng


# -- each tool's way of steering v at the same site, as a context manager --------------------------
@contextmanager
def ours(ctx, v, first_position=True):
    with SteeringHandle(ctx, [Steer(SteeringVector({LAYER: v}), 1.0, "all")], steer_first_position=first_position):
        yield


@contextmanager
def plain_hook(ctx, v):
    handle = ctx.layers.blocks[THEIRS].register_forward_hook(lambda module, args, output: output + v)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def repeng_control(ctx, v):
    control = import_repeng().ControlModel(ctx.model, [THEIRS])
    control.set_raw_control({THEIRS: v})
    try:
        yield
    finally:
        control.unwrap()


@contextmanager
def steering_vectors_apply(ctx, v):
    from steering_vectors import SteeringVector as Theirs

    with Theirs({THEIRS: v}, layer_type="decoder_block").apply(ctx.model):
        yield


def tools() -> dict:
    found = {"ours": ours}
    if installed("repeng"):
        found["repeng"] = repeng_control
    if installed("steering_vectors"):
        found["steering-vectors"] = steering_vectors_apply
    return found


# -- llama.cpp ---------------------------------------------------------------------------------------
class LlamaCpp:
    """The default model's GGUF in llama.cpp (llama-cpp-python), with a control vector set through its C API."""

    def __init__(self, logits_all: bool = False):
        import llama_cpp

        self.llm = llama_cpp.Llama(str(default_gguf()), n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1, logits_all=logits_all, verbose=False)
        self.n_embd = self.llm.n_embd()
        self.n_layer = llama_cpp.llama_model_n_layer(self.llm.model)

    def set_control(self, v: torch.Tensor | None) -> None:
        """v added to the output of block THEIRS (llama.cpp's direction.N), or cleared with None."""
        import llama_cpp

        if v is None:
            assert llama_cpp.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.n_embd, 1, self.n_layer) == 0
            return
        data = torch.zeros(self.n_layer - 1, self.n_embd)  # rows for blocks 1 .. n_layer-1
        data[THEIRS - 1] = v
        array = (llama_cpp.ctypes.c_float * data.numel())(*data.flatten().tolist())
        assert llama_cpp.llama_set_adapter_cvec(self.llm.ctx, array, data.numel(), self.n_embd, THEIRS, THEIRS) == 0

    def greedy(self, ids: list[int], new_tokens: int) -> None:
        self.llm.reset()  # no reuse of the cached prompt
        for i, _ in enumerate(self.llm.generate(ids, top_k=1, temp=0.0)):
            if i + 1 == new_tokens:
                break

    def logits(self, ids: list[int]) -> torch.Tensor:
        self.llm.reset()
        self.llm.eval(ids)
        return torch.tensor(self.llm.scores[: len(ids)])


# -- overhead ----------------------------------------------------------------------------------------
def overhead(ctx, rounds: int, tokens: int) -> tuple[list[list], dict]:
    """Table rows, and per batch the per-round speed ratios of each tool (for the plot)."""
    v = random_direction(ctx.hidden_size, NORM)
    rows, ratios = [], {}
    if installed("llama_cpp"):  # llama.cpp sets a control vector at load time: one instance with it, one without
        cpp, cpp_steered = LlamaCpp(), LlamaCpp()
        cpp_steered.set_control(v)
    else:
        cpp = None
    for batch in (1, 8):
        ids, mask = left_padded(ctx, PROMPTS[:batch])
        generate = lambda: greedy(ctx, ids, mask, tokens)  # noqa: E731

        def steered(apply):
            def run():
                with apply(ctx, v):
                    generate()
            return run

        runs = {"unsteered": generate} | {name: steered(apply) for name, apply in tools().items()}
        if cpp and batch == 1:
            prompt = ids[0].tolist()
            runs |= {"llama.cpp unsteered": lambda: cpp.greedy(prompt, tokens), "llama.cpp": lambda: cpp_steered.greedy(prompt, tokens)}
        times = alternate(runs, rounds)
        for name in runs:
            base = "llama.cpp unsteered" if name.startswith("llama.cpp") else "unsteered"
            if name != base:
                rows.append([batch, name, speed_ratio(times, name, base), speed_ratio(times, name, base, clock=0), batch * tokens / median_time(times, base)])
                ratios.setdefault(f"batch {batch}", {})[name] = round_ratios(times, name, base)
    return rows, ratios


def decode_steps(ctx, rotations: int, steps: int = 5) -> list[list]:
    """Speed of single-token decode steps (batch 1, KV cache) steered over unsteered: less noisy than whole
    generations, since contenders alternate every few steps. Times only the forward (hooks included)."""
    model = ctx.model
    v = random_direction(ctx.hidden_size, NORM)
    ids, mask = left_padded(ctx, PROMPTS[:1])
    with torch.inference_mode():
        cache = model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
    length = ids.shape[1]
    step = {"input_ids": ids[:, -1:], "attention_mask": torch.ones(1, length + 1, dtype=torch.long),
            "position_ids": torch.tensor([[length]]), "past_key_values": cache, "use_cache": True}

    def forward():
        for _ in range(steps):
            model(**step)
            cache.crop(length)

    contenders = {"unsteered": None} | tools()
    times = {name: [] for name in contenders}
    with torch.inference_mode():
        for r in range(rotations):
            names = list(contenders)[r % len(contenders):] + list(contenders)[: r % len(contenders)]
            for name in names:
                if contenders[name] is None:
                    times[name].append(timed(forward))
                else:
                    with contenders[name](ctx, v):
                        times[name].append(timed(forward))
    return [["1 (decode steps)", name, speed_ratio(times, name, "unsteered"), speed_ratio(times, name, "unsteered", clock=0), steps / median_time(times, "unsteered")]
            for name in contenders if name != "unsteered"]


# -- building ----------------------------------------------------------------------------------------
def builders(ctx, n: int) -> dict:
    model, tokenizer = ctx.model, ctx.tokenizer
    data = pairs(n)
    runs = {f"ours {name.split(', ')[1]}": run for name, run in our_builders(ctx, [n]).items()}
    if installed("repeng"):
        repeng = import_repeng()
        entries = [repeng.DatasetEntry(positive=p, negative=q) for p, q in data]
        runs["repeng pca_diff"] = lambda: repeng.ControlVector.train(model, tokenizer, entries, hidden_layers=[THEIRS], batch_size=BATCH)
    if installed("steering_vectors"):
        from steering_vectors import mean_aggregator, pca_aggregator, train_steering_vector

        for name, aggregator in (("mean", mean_aggregator), ("pca", pca_aggregator)):
            runs[f"steering-vectors {name}"] = lambda a=aggregator: train_steering_vector(
                model, tokenizer, data, layers=[THEIRS], aggregator=a(), batch_size=BATCH
            )
    return runs


def build(ctx, rounds: int, sizes=(64, 256)) -> list[list]:
    for run in builders(ctx, 2).values():  # warm every code path once, cheaply
        run()
    rows = []
    for n in sizes:
        runs = builders(ctx, n)
        times = alternate(runs, rounds, warmup=False)
        fastest_peer = min((median_time(times, k) for k in runs if not k.startswith("ours")), default=float("nan"))
        for name in runs:
            rows.append([n, name, median_time(times, name), median_time(times, name, clock=0), fastest_peer / median_time(times, name)])
    return rows


# -- correctness -------------------------------------------------------------------------------------
def logits_of(ctx, apply, v) -> dict[str, torch.Tensor]:
    """Logits of a forward pass, of 16 greedy KV-cache steps, and of a left-padded batch of two."""
    single = left_padded(ctx, PROMPTS[:1])
    batch = left_padded(ctx, [PROMPTS[0], "Hi"])
    out = {}
    with torch.inference_mode(), apply(ctx, v):
        out["forward"] = ctx.model(input_ids=single[0], attention_mask=single[1]).logits
        for name, (ids, mask) in (("generate (KV cache)", single), ("left-padded batch", batch)):
            result = ctx.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=ctx.pad_id,
                output_logits=True, return_dict_in_generate=True,
            )
            out[name] = torch.stack(result.logits)
    return out


def check(ctx) -> list[list]:
    v = random_direction(ctx.hidden_size, NORM)
    reference = logits_of(ctx, plain_hook, v)
    with torch.inference_mode():
        ids, mask = left_padded(ctx, PROMPTS[:1])
        unsteered = ctx.model(input_ids=ids, attention_mask=mask).logits
    rows = [["plain hook vs unsteered (the size of the effect)", "forward", float((reference["forward"] - unsteered).abs().max())]]
    contenders = tools() | {"ours, position 0 left alone (default)": lambda c, w: ours(c, w, first_position=False)}
    for name, apply in contenders.items():
        for case, logits in logits_of(ctx, apply, v).items():
            rows.append([f"{name} vs plain hook", case, float((logits - reference[case]).abs().max())])
    if installed("llama_cpp"):
        rows.append(llama_cpp_check(ctx, v))
    return rows


def llama_cpp_check(ctx, v) -> list:
    """llama.cpp runs the Q4_1 weights on its own kernels, so logits differ by up to ~2 even unsteered;
    compare the change steering makes: correlation and largest difference, over every position."""
    cpp = LlamaCpp(logits_all=True)
    ids = left_padded(ctx, PROMPTS[:1])[0]
    base_cpp = cpp.logits(ids[0].tolist())
    cpp.set_control(v)
    delta_cpp = cpp.logits(ids[0].tolist()) - base_cpp
    cpp.set_control(None)
    with torch.inference_mode():
        base = ctx.model(input_ids=ids).logits[0]
        with ours(ctx, v):
            delta = ctx.model(input_ids=ids).logits[0] - base
    corr = float(torch.corrcoef(torch.stack([delta.flatten(), delta_cpp.flatten()]))[0, 1])
    return ["llama.cpp control vector (Δlogits) vs ours (Δlogits)", f"forward, correlation {corr:.4f}", float((delta - delta_cpp).abs().max())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--step-rotations", type=int, default=60, help="rotations of the decode-step comparison (5 steps each)")
    parser.add_argument("--build-rounds", type=int, default=1)
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: overhead, build, check")
    parser.add_argument("--plot", action="store_true", help="only draw docs/peers.png from the last results (needs matplotlib, not the peers)")
    args = parser.parse_args()
    if args.plot:
        return plot(json.loads((RESULTS / "peers.json").read_text()))
    skip = set(filter(None, args.skip.split(",")))
    ctx = context()
    results = {}
    if "check" not in skip:
        results["check"] = check(ctx)
        print(f"\nLogits with the same vector (|v| = {NORM:g}) at the output of block {THEIRS} = the input of block {LAYER}, all positions")
        print(markdown(["comparison", "case", "max |Δ logit|"], results["check"]))
    if "overhead" not in skip:
        results["overhead"], results["overhead_rounds"] = overhead(ctx, args.rounds, args.tokens)
        results["overhead"] += decode_steps(ctx, args.step_rotations)
        print(f"\nGreedy generation, {args.tokens} new tokens, median of {args.rounds} alternating rounds (speed steered / unsteered)")
        print(markdown(["batch", "tool", "ratio (CPU time)", "ratio (wall)", "unsteered tokens per CPU-s"], results["overhead"]))
    if "build" not in skip:
        results["build"] = build(ctx, args.build_rounds, [int(n) for n in args.sizes.split(",")])
        print(f"\nBuilding one layer's vector, batches of {BATCH}, median of {args.build_rounds} alternating round(s)")
        print(markdown(["pairs", "tool and method", "CPU s", "wall s", "fastest peer's CPU s / this"], results["build"]))
    print(f"wrote {save_json('peers', results)}")
    plot(results)


def plot(results: dict) -> None:
    plt = pyplot()
    if plt is None or not {"overhead_rounds", "build"} <= set(results):
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    ratio_bars(left, results["overhead_rounds"], target=0.99)
    left.set_title("generation speed, same vector (median, IQR)", fontsize=9)
    sizes = sorted({row[0] for row in results["build"]})
    names = list(dict.fromkeys(row[1] for row in results["build"]))
    seconds = {(row[0], row[1]): row[2] for row in results["build"]}
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        right.bar([x + (k - (len(names) - 1) / 2) * width for x in range(len(sizes))], [seconds.get((n, name), 0) for n in sizes], width, label=name)
    right.set_xticks(range(len(sizes)), [f"{n} pairs" for n in sizes])
    right.set_ylabel("CPU seconds")
    right.set_title("building one layer's vector", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, "peers")


if __name__ == "__main__":
    main()
