"""The engine's guarantees, proved on the real default model (SmolLM2-135M-Instruct, 30 layers, d=576).

Everything is greedy and float32 on the CPU, so "identical" means torch.equal. Block inputs are read
with record_block_inputs: a recorder entered before ``steer`` sees a block's input before the
steering hook, one entered after sees it after, so their difference is exactly what was added.
"""
from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from extensions.steering.engine import (
    PromptTooShortError,
    Steer,
    SteeringVector,
    build_actadd,
    build_from_pairs,
    everywhere,
    find_layers,
    steer,
)
from extensions.steering.engine.build import pair_differences, space_token_id
from extensions.steering.engine.record import record_block_inputs
from extensions.steering.engine.tokens import encode

LAYER = 6
PROMPT = "I hate you because"
OTHER_PROMPT = "The weather today is really quite"
PAIRS = [
    ("I love this", "I hate this"),
    ("What a wonderful day", "What an awful day"),
    ("You are so kind", "You are so cruel"),
    ("Great job", "Terrible job"),
]
NEW = 8  # tokens per generation


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(default_model):
    return default_model[0]


@pytest.fixture(scope="module")
def tok(default_model):
    return default_model[1]


@pytest.fixture(scope="module")
def ctx(default_ctx):
    return default_ctx


@pytest.fixture(scope="module")
def actadd(ctx, model, tok):
    """ActAdd "Love" - "Hate" at layer 6: two per-position rows (for prompt positions 1 and 2)."""
    return build_actadd(ctx, "Love", "Hate", [LAYER])


@pytest.fixture(scope="module")
def mean(ctx, model, tok):
    """Mean difference of a few sentiment pairs at layers 6, 10 and 14."""
    return build_from_pairs(ctx, PAIRS, [LAYER, 10, 14], "mean")


@pytest.fixture(scope="module")
def direction(mean):
    """One direction at layer 6; at strength 1 it adds about the residual norm there (visibly steers)."""
    return SteeringVector({LAYER: mean.directions[LAYER]}, mean.residual_norms)


def ids_of(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text)["input_ids"]])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def generate(model, tok, ids, mask=None, new=NEW, **options):
    """Greedy generation; returns (new token ids, per-step logits)."""
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids) if mask is None else mask,
            max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=tok.pad_token_id,
            output_logits=True, return_dict_in_generate=True, **options,
        )
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, 1)


def assert_no_hooks(model) -> None:
    layers = find_layers(model)
    for module in (layers.owner, *layers.blocks):
        assert not module._forward_pre_hooks, f"{type(module).__name__} still has pre-hooks"
        assert not module._forward_hooks, f"{type(module).__name__} still has forward hooks"


@contextmanager
def measured(ctx, steers, indices, **options):
    """Steer, and yield (before, after): each block's input before and after the steering hook."""
    with record_block_inputs(ctx, indices) as before:
        with steer(ctx, steers, **options) as handle:
            with record_block_inputs(ctx, indices) as after:
                yield before, after, handle


def added(before, after, index) -> torch.Tensor:
    return after[index] - before[index]




@pytest.fixture(params=["actadd", "all", "generated"])
def mode_steer(request, actadd, direction):
    """(mode, a Steer of that mode at strength 2 / 3)."""
    mode = request.param
    vector = actadd if mode == "actadd" else direction
    return mode, Steer(vector, 3.0 if mode == "actadd" else 1.0, mode)


# -- strength 0 and leaving no trace -----------------------------------------------------------


def test_strength_zero_is_identical(ctx, model, tok, mode_steer):
    mode, active = mode_steer
    ids = ids_of(tok, PROMPT)
    plain_logits = logits(model, ids)
    plain_tokens, plain_steps = generate(model, tok, ids)
    with steer(ctx, [Steer(active.vector, 0.0, mode)]):
        assert torch.equal(logits(model, ids), plain_logits)
        tokens, steps = generate(model, tok, ids)
    assert torch.equal(tokens, plain_tokens)
    assert torch.equal(steps, plain_steps)


def test_steering_changes_output_then_leaves_no_trace(ctx, model, tok, mode_steer):
    mode, active = mode_steer
    ids = ids_of(tok, PROMPT)
    plain_logits = logits(model, ids)
    plain_tokens, _ = generate(model, tok, ids)
    with steer(ctx, [active]) as handle:
        assert handle.active
        tokens, _ = generate(model, tok, ids)
    assert not handle.active
    assert not torch.equal(tokens, plain_tokens), f"{mode} did not change the greedy output"
    assert_no_hooks(model)
    assert torch.equal(logits(model, ids), plain_logits)
    handle.remove()  # removing twice is harmless


class RaiseAtStep(StoppingCriteria):
    def __init__(self, step: int):
        self.step, self.calls = step, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        if self.calls == self.step:
            raise RuntimeError("stopped by the test")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_exception_from_stopping_criteria_leaves_no_trace(ctx, model, tok, direction):
    ids = ids_of(tok, PROMPT)
    plain = logits(model, ids)
    criteria = RaiseAtStep(3)
    with pytest.raises(RuntimeError, match="stopped by the test"):
        with steer(ctx, [(direction, 1.0, "all")]):
            generate(model, tok, ids, stopping_criteria=StoppingCriteriaList([criteria]))
    assert criteria.calls == 3  # it really stopped mid-generation
    assert_no_hooks(model)
    assert torch.equal(logits(model, ids), plain)


def test_exception_from_a_block_mid_generation_leaves_no_trace(ctx, model, tok, actadd, direction):
    ids = ids_of(tok, PROMPT)
    plain = logits(model, ids)
    block = find_layers(model).blocks[20]
    calls = []

    def explode(module, args, output):
        calls.append(1)
        if len(calls) == 3:  # the second generated token's forward
            raise RuntimeError("block failed")

    failing = block.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="block failed"):
            with steer(ctx, [(actadd, 3.0, "actadd"), (direction, 1.0, "generated")]):
                generate(model, tok, ids)
    finally:
        failing.remove()
    assert len(calls) == 3
    assert_no_hooks(model)
    assert torch.equal(logits(model, ids), plain)


def test_a_kept_handle_survives_an_aborted_generation(ctx, model, tok, direction):
    ids, other = ids_of(tok, PROMPT), ids_of(tok, OTHER_PROMPT)
    with steer(ctx, [(direction, 1.0, "generated")]):
        expected, _ = generate(model, tok, other)
    handle = steer(ctx, [(direction, 1.0, "generated")])
    try:
        with pytest.raises(RuntimeError):
            generate(model, tok, ids, stopping_criteria=StoppingCriteriaList([RaiseAtStep(2)]))
        tokens, _ = generate(model, tok, other)
    finally:
        handle.remove()
    assert torch.equal(tokens, expected)
    assert_no_hooks(model)


def test_a_kept_handle_treats_a_longer_follow_up_prompt_as_a_new_prompt(ctx, model, tok, direction):
    """A chat turn re-sends the last prompt plus the reply plus more: that is a new prompt, not steered."""
    ids = ids_of(tok, PROMPT)
    with steer(ctx, [(direction, 1.0, "generated")]) as handle:
        reply, _ = generate(model, tok, ids)
        follow_up = torch.cat([ids, reply, torch.tensor([tok(" Anyway, how")["input_ids"]])], 1)
        steered_prompt = logits(model, follow_up)
        _, steps = generate(model, tok, follow_up, new=2)
    handle.remove()
    plain_prompt = logits(model, follow_up)
    _, plain_steps = generate(model, tok, follow_up, new=2)
    assert torch.equal(steered_prompt, plain_prompt)
    assert torch.equal(steps[:, 0], plain_steps[:, 0])
    assert not torch.equal(steps[:, 1], plain_steps[:, 1])


# -- KV cache ----------------------------------------------------------------------------------


def test_same_greedy_output_with_and_without_cache(ctx, model, tok, mode_steer):
    mode, active = mode_steer
    ids = ids_of(tok, PROMPT)
    plain, _ = generate(model, tok, ids)
    with steer(ctx, [active]):
        cached, _ = generate(model, tok, ids)
        uncached, _ = generate(model, tok, ids, use_cache=False)
    assert not torch.equal(cached, plain)
    assert cached.tolist() == uncached.tolist(), (tok.decode(cached[0]), tok.decode(uncached[0]))


# -- 'generated' and 'actadd' positions ---------------------------------------------------------


def test_generated_mode_leaves_the_prompt_alone(ctx, model, tok, direction):
    ids = ids_of(tok, PROMPT)
    plain_logits = logits(model, ids)
    plain_tokens, plain_steps = generate(model, tok, ids)
    with steer(ctx, [(direction, 1.0, "generated")]):
        assert torch.equal(logits(model, ids), plain_logits)
        tokens, steps = generate(model, tok, ids)
    assert torch.equal(steps[:, 0], plain_steps[:, 0])  # the first token comes from the prompt
    assert tokens[0, 0] == plain_tokens[0, 0]
    assert not torch.equal(steps[:, 1], plain_steps[:, 1])  # later ones from steered positions
    assert not torch.equal(tokens, plain_tokens)


def test_actadd_changes_only_the_first_k_positions_after_the_sink(ctx, model, tok, actadd):
    ids = ids_of(tok, PROMPT)
    k = actadd.positions
    assert k == 2 and ids.shape[1] > k + 1
    with measured(ctx, [(actadd, 3.0, "actadd")], [LAYER]) as (before, after, _):
        with torch.no_grad():
            model(input_ids=ids)
    delta = added(before, after, LAYER)[0]
    assert torch.equal(delta[0], torch.zeros(576))  # the sink
    torch.testing.assert_close(delta[1 : k + 1], 3.0 * actadd.directions[LAYER], rtol=1e-4, atol=1e-3)
    assert torch.equal(after[LAYER][0, k + 1 :], before[LAYER][0, k + 1 :])  # later positions untouched
    # the block's input before steering is the unsteered one: nothing upstream changed
    with torch.no_grad(), record_block_inputs(ctx, [LAYER]) as plain:
        model(input_ids=ids)
    assert torch.equal(plain[LAYER], before[LAYER])


def test_actadd_does_not_touch_generated_tokens(ctx, model, tok, actadd):
    ids = ids_of(tok, PROMPT)
    with measured(ctx, [(actadd, 3.0, "actadd")], [LAYER]) as (before, after, _):
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            step = out.logits[:, -1:].argmax(-1)
            model(input_ids=step, past_key_values=out.past_key_values, attention_mask=torch.ones(1, ids.shape[1] + 1, dtype=torch.long))
    assert after[LAYER].shape[1] == 1
    assert torch.equal(after[LAYER], before[LAYER])


@pytest.mark.parametrize("length", [1, 2])
def test_prompt_shorter_than_actadd_vector_raises(ctx, model, tok, actadd, length):
    """Rows go to positions 1..k, so a k-row vector needs k + 1 tokens; fewer is an error, never a silent no-op."""
    assert actadd.positions == 2
    ids = ids_of(tok, PROMPT)[:, :length]
    with pytest.raises(PromptTooShortError, match="only"):
        with steer(ctx, [(actadd, 3.0, "actadd")]):
            generate(model, tok, ids, new=2)
    assert_no_hooks(model)


def test_prompt_exactly_long_enough_for_actadd(ctx, model, tok, actadd):
    ids = ids_of(tok, PROMPT)[:, : actadd.positions + 1]
    plain = logits(model, ids)
    with steer(ctx, [(actadd, 3.0, "actadd")]):
        steered = logits(model, ids)
    assert not torch.equal(steered, plain)


# -- batches with left padding -----------------------------------------------------------------


@pytest.fixture
def left_padded(tok):
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        batch = tok([PROMPT, OTHER_PROMPT], return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    assert not bool(batch["attention_mask"].all())  # one row really is padded
    return batch


def test_left_padding_is_never_steered(ctx, model, tok, left_padded, mode_steer):
    mode, active = mode_steer
    ids, mask = left_padded["input_ids"], left_padded["attention_mask"]
    pads = int((mask[0] == 0).sum())
    with measured(ctx, [active], [LAYER]) as (before, after, _):
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    delta = added(before, after, LAYER)
    zero = torch.zeros(576)
    # padded row: padding and its first real token (the sink) unchanged
    assert torch.equal(delta[0, : pads + 1], torch.zeros(pads + 1, 576))
    if mode == "all":
        torch.testing.assert_close(delta[0, pads + 1 :], direction_rows(active).expand(ids.shape[1] - pads - 1, -1), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(delta[1, 1:], direction_rows(active).expand(ids.shape[1] - 1, -1), rtol=1e-4, atol=1e-3)
        assert torch.equal(delta[1, 0], zero)
    elif mode == "actadd":
        k = active.vector.positions
        rows = 3.0 * active.vector.directions[LAYER]
        torch.testing.assert_close(delta[0, pads + 1 : pads + 1 + k], rows, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(delta[1, 1 : 1 + k], rows, rtol=1e-4, atol=1e-3)
        assert torch.equal(delta[0, pads + 1 + k :], torch.zeros(ids.shape[1] - pads - 1 - k, 576))
    else:  # generated: nothing in a prompt
        assert torch.equal(delta, torch.zeros_like(delta))


def direction_rows(active: Steer) -> torch.Tensor:
    return active.vector.directions[LAYER]


def test_left_padded_batch_matches_each_row_alone(ctx, model, tok, left_padded, mode_steer):
    """Same tokens, and logits within float32 noise: unsteered rows already differ by ~3e-5 between a
    padded batch and alone, and steering amplifies that to ~1e-3 at worst; in float64 both are exactly 0."""
    mode, active = mode_steer
    ids, mask = left_padded["input_ids"], left_padded["attention_mask"]
    with steer(ctx, [active]):
        tokens, steps = generate(model, tok, ids, mask, new=5)
        for row in range(2):
            alone = ids[row : row + 1, mask[row].bool()]
            row_tokens, row_steps = generate(model, tok, alone, new=5)
            assert tokens[row].tolist() == row_tokens[0].tolist(), f"{mode}, row {row}"
            torch.testing.assert_close(steps[row], row_steps[0], rtol=1e-4, atol=2e-3)
    plain, _ = generate(model, tok, ids, mask, new=5)
    assert not torch.equal(plain, tokens)


# -- several vectors at once -------------------------------------------------------------------


def test_several_vectors_each_apply(ctx, model, tok, actadd, mean):
    ids = ids_of(tok, PROMPT)
    d10, d14 = mean.directions[10], mean.directions[14]
    steers = [
        Steer(actadd, 3.0, "actadd"),
        Steer(SteeringVector({10: d10}), 2.0, "all"),
        Steer(SteeringVector({10: d10 * 0 + 1.0, 14: d14}), 1.5, "generated"),
    ]
    with measured(ctx, steers, [LAYER, 10, 14]) as (before, after, _):
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            prompt = {i: added(before, after, i)[0] for i in (LAYER, 10, 14)}
            step = out.logits[:, -1:].argmax(-1)
            model(input_ids=step, past_key_values=out.past_key_values, attention_mask=torch.ones(1, ids.shape[1] + 1, dtype=torch.long))
            decode = {i: added(before, after, i)[0, 0] for i in (LAYER, 10, 14)}
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    # prompt: actadd rows at 6, the 'all' direction at 10 (not at the sink), nothing at 14
    close(prompt[LAYER][1:3], 3.0 * actadd.directions[LAYER])
    assert not prompt[LAYER][0].any() and not prompt[LAYER][3:].any()
    assert not prompt[10][0].any()
    close(prompt[10][1:], (2.0 * d10).expand(ids.shape[1] - 1, -1))
    assert not prompt[14].any()
    # the generated token: no actadd, 'all' plus 'generated' summed at 10, 'generated' at 14
    assert not decode[LAYER].any()
    close(decode[10], 2.0 * d10[0] + 1.5)
    close(decode[14], 1.5 * d14[0])


def test_steer_first_position_option(ctx, model, tok, direction):
    ids = ids_of(tok, PROMPT)
    with measured(ctx, [(direction, 1.0, "all")], [LAYER], steer_first_position=True) as (before, after, _):
        with torch.no_grad():
            model(input_ids=ids)
    torch.testing.assert_close(added(before, after, LAYER)[0, 0], direction.directions[LAYER][0], rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize(
    "steers, message",
    [
        (lambda a, d: [(a, 1.0, "all")], "per-position"),
        (lambda a, d: [(d, 1.0, "sideways")], "unknown mode"),
        (lambda a, d: [(d, float("nan"), "all")], "finite"),
        (lambda a, d: [(SteeringVector({30: d.directions[LAYER]}), 1.0, "all")], "out of range"),
        (lambda a, d: [(SteeringVector({LAYER: torch.ones(64)}), 1.0, "all")], "hidden size"),
        (lambda a, d: [], "at least one"),
    ],
)
def test_bad_requests_raise_before_hooking(ctx, model, actadd, direction, steers, message):
    with pytest.raises(ValueError, match=message):
        steer(ctx, steers(actadd, direction))
    assert_no_hooks(model)


# -- threads -----------------------------------------------------------------------------------


class StepTimes(StoppingCriteria):
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.monotonic())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def _overlapping(jobs):
    """Run ``jobs`` (name -> (model, stopping list, gate-less callable)) at the same time; their outputs."""
    barrier, results, timings, errors = threading.Barrier(len(jobs)), {}, {}, []

    def run(name, call):
        try:
            timings[name] = StepTimes()
            barrier.wait(timeout=30)
            results[name] = call(StoppingCriteriaList([timings[name]]))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name, call)) for name, call in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results, timings


def test_background_thread_is_steered_when_gated_to_it_and_another_instance_is_not(ctx, model, tok, direction):
    ids = ids_of(tok, PROMPT)
    twin = copy.deepcopy(model)
    plain, _ = generate(twin, tok, ids)
    with steer(ctx, [(direction, 1.0, "all")]):
        expected, _ = generate(model, tok, ids)
    assert not torch.equal(plain, expected)

    with steer(ctx, [(direction, 1.0, "all")], gate=everywhere):
        results, timings = _overlapping({
            "steered": lambda stop: generate(model, tok, ids, stopping_criteria=stop)[0],
            "twin": lambda stop: generate(twin, tok, ids, stopping_criteria=stop)[0],
        })
    assert torch.equal(results["steered"], expected)
    assert torch.equal(results["twin"], plain)
    # the two generations really overlapped in time
    steered, other = timings["steered"].times, timings["twin"].times
    assert steered[0] < other[-1] and other[0] < steered[-1]
    assert_no_hooks(model)
    assert_no_hooks(twin)


def test_a_handle_steers_only_its_own_thread_by_default(ctx, model, tok, direction):
    """Another thread generating on the same model at the same time is not steered (nor broken: a padded batch)."""
    ids = ids_of(tok, PROMPT)
    plain, _ = generate(model, tok, ids)
    with steer(ctx, [(direction, 1.0, "all")]):
        expected, _ = generate(model, tok, ids)
    padded = torch.cat([torch.full((1, 3), ctx.pad_id), ids], dim=1).repeat(2, 1)
    padded_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], dim=1).repeat(2, 1)
    plain_padded, _ = generate(model, tok, padded, mask=padded_mask)

    gate_ready, handle = threading.Event(), {}

    def steered_thread(stop):
        handle["h"] = steer(ctx, [(direction, 1.0, "all")])  # made here: steers this thread only
        gate_ready.set()
        try:
            return generate(model, tok, ids, stopping_criteria=stop)[0]
        finally:
            handle["h"].remove()

    def other_thread(stop):
        gate_ready.wait(timeout=30)
        return generate(model, tok, padded, mask=padded_mask, stopping_criteria=stop)[0]

    results, _ = _overlapping({"steered": steered_thread, "other": other_thread})
    assert torch.equal(results["steered"], expected) and not torch.equal(expected, plain)
    assert torch.equal(results["other"], plain_padded)
    assert_no_hooks(model)


def test_on_thread_gates_a_handle_to_another_thread(ctx, model, tok, direction):
    ids = ids_of(tok, PROMPT)
    plain, _ = generate(model, tok, ids)
    with steer(ctx, [(direction, 1.0, "all")]):
        expected, _ = generate(model, tok, ids)
    out = {}
    worker = threading.Thread(target=lambda: out.update(ids=generate(model, tok, ids)[0]))
    with steer(ctx, [(direction, 1.0, "all")], gate=lambda: threading.current_thread() is worker):
        here, _ = generate(model, tok, ids)
        worker.start()
        worker.join(timeout=120)
    assert torch.equal(here, plain) and torch.equal(out["ids"], expected)


# -- building vectors --------------------------------------------------------------------------


def block_input(ctx, ids: list[int], layer: int) -> torch.Tensor:
    with torch.no_grad(), record_block_inputs(ctx, [layer]) as recorded:
        ctx.model(input_ids=torch.tensor([ids]))
    return recorded[layer][0]


def test_actadd_pads_the_shorter_prompt_with_spaces(ctx, model, tok):
    vector = build_actadd(ctx, "Love", "I hate you", [LAYER])
    pos, neg = encode(ctx, "Love"), encode(ctx, "I hate you")
    assert len(pos) < len(neg)
    width = len(neg)
    pos = pos + [space_token_id(ctx)] * (width - len(pos))
    # rows = the longer prompt's length, not counting the shared sink at position 0
    assert vector.directions[LAYER].shape == (width - 1, 576)
    expected = block_input(ctx, pos, LAYER)[1:] - block_input(ctx, neg, LAYER)[1:]
    torch.testing.assert_close(vector.directions[LAYER], expected, rtol=1e-4, atol=1e-3)
    # swapping the sides negates it
    swapped = build_actadd(ctx, "I hate you", "Love", [LAYER])
    torch.testing.assert_close(swapped.directions[LAYER], -vector.directions[LAYER], rtol=1e-4, atol=1e-3)


def test_actadd_shares_the_sink_and_leaves_it_out(ctx, tok, actadd):
    pos, neg = encode(ctx, "Love"), encode(ctx, "Hate")
    assert pos[0] == neg[0] == (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    assert pos[1] != pos[0] and neg[1] != neg[0]  # the text itself starts after the sink
    assert actadd.positions == max(len(pos), len(neg)) - 1


def summaries(ctx, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, d) mean over non-sink positions of each positive and each negative prompt, one at a time."""
    read = lambda text: block_input(ctx, encode(ctx, text), layer)[1:].mean(0)
    return torch.stack([read(p) for p, _ in PAIRS]), torch.stack([read(n) for _, n in PAIRS])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_mean_from_pairs(ctx, model, tok, mean):
    assert mean.layers == [LAYER, 10, 14]
    assert all(t.shape == (1, 576) for t in mean.directions.values())
    positives, negatives = summaries(ctx, 10)
    assert cosine(mean.directions[10], (positives - negatives).mean(0)) > 0.99999
    assert set(mean.residual_norms) == {LAYER, 10, 14}
    assert all(norm > 0 for norm in mean.residual_norms.values())
    # scaled to the typical residual norm, so strength reads as a share of it
    for layer in mean.layers:
        assert mean.relative_norm(layer) == pytest.approx(1.0, rel=1e-4)


def test_pca_from_pairs_points_from_negatives_to_positives(ctx, model, tok):
    pca = build_from_pairs(ctx, PAIRS, [LAYER, 10], "pca")
    assert all(t.shape == (1, 576) for t in pca.directions.values())
    for layer in (LAYER, 10):
        positives, negatives = summaries(ctx, layer)
        unit = pca.directions[layer][0] / pca.norm(layer)
        # on average (one pair may disagree: the component is fitted, not the mean)
        assert float((positives @ unit).mean()) > float((negatives @ unit).mean())
    # built from the swapped pairs it flips
    flipped = build_from_pairs(ctx, [(n, p) for p, n in PAIRS], [LAYER], "pca")
    assert flipped.cosine_similarity(pca)[LAYER] == pytest.approx(-1.0, abs=1e-4)


def test_batching_does_not_change_pair_differences(ctx, model, tok):
    """Pairs are read right-padded in batches; padding must not leak into the readings."""
    together, _ = pair_differences(ctx, PAIRS, [LAYER, 10], batch_size=32)
    in_twos, _ = pair_differences(ctx, PAIRS, [LAYER, 10], batch_size=2)
    for layer in (LAYER, 10):
        assert together[layer].shape == (len(PAIRS), 576)
        torch.testing.assert_close(in_twos[layer], together[layer], rtol=1e-4, atol=1e-3)


def test_batching_does_not_change_vector_directions(ctx, model, tok, mean):
    in_twos = build_from_pairs(ctx, PAIRS, [LAYER, 10, 14], "mean", batch_size=2)
    for layer in mean.layers:
        assert cosine(in_twos.directions[layer], mean.directions[layer]) > 0.99999


def test_batching_does_not_change_residual_norms(ctx, model, tok):
    _, together = pair_differences(ctx, PAIRS, [LAYER], batch_size=32)
    _, in_twos = pair_differences(ctx, PAIRS, [LAYER], batch_size=2)
    assert in_twos[LAYER] == pytest.approx(together[LAYER], rel=1e-4)


def test_last_position_reading(ctx, model, tok):
    vector = build_from_pairs(ctx, PAIRS[:2], [10], "mean", reading="last")
    expected = torch.stack([
        block_input(ctx, encode(ctx, p), 10)[-1] - block_input(ctx, encode(ctx, n), 10)[-1] for p, n in PAIRS[:2]
    ]).mean(0)
    assert cosine(vector.directions[10], expected) > 0.99999


def test_building_needs_no_gradients_and_gives_float32(ctx, model, tok):
    assert torch.is_grad_enabled()
    vectors = [
        build_actadd(ctx, "Love", "Hate", [LAYER]),
        build_from_pairs(ctx, PAIRS[:2], [LAYER], "mean"),
        build_from_pairs(ctx, PAIRS[:2], [LAYER], "pca"),
    ]
    assert torch.is_grad_enabled()
    assert all(p.grad is None for p in model.parameters())
    for vector in vectors:
        for t in vector.directions.values():
            assert t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad
            assert torch.isfinite(t).all()
    assert_no_hooks(model)


def test_built_vector_steers_toward_the_positive(ctx, model, tok, actadd):
    """The seed's demonstration: Love - Hate at layer 6 turns "I hate you because" warmer."""
    ids = ids_of(tok, PROMPT)
    plain, _ = generate(model, tok, ids, new=10)
    with steer(ctx, [(actadd, 5.0, "actadd")]):
        steered, _ = generate(model, tok, ids, new=10)
    assert not torch.equal(plain, steered)
