"""Pair expansion (engine/expansion.py): which pairs are expanded, how, and what the expanded vector does."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from extensions.steering.engine import expansion
from extensions.steering.engine.apply import Steer, steer
from extensions.steering.engine.build import build_from_pairs
from extensions.steering.engine.calibration import calibrate
from extensions.steering.engine.methods import default_expand
from extensions.steering.engine.recipe import Recipe
from extensions.steering.engine.tokens import prompt_ids
from extensions.steering.engine.vector import SteeringVector

TRAINS = ("I talk about trains constantly", "I do not talk about trains constantly")  # a tuning pair (benchmarks/tuning/tuning_set.yaml)


@pytest.mark.parametrize(("positive", "negative", "version"), [
    (["Cats"], ["Dogs"], "v1"),
    (["I am optimistic"], ["I am pessimistic"], "v1"),
    ([TRAINS[0]], [TRAINS[1]], "sentence-v1"),  # seven words: a sentence, not a label
    (["Cats"], ["I never want to hear about any animal at all"], "sentence-v1"),  # one side a sentence: both framed as said
    (["Cats", "Kittens"], ["Dogs", "Puppies"], None),  # the user's own many pairs are read as written
    (["Dear diary,\nToday was lovely."], ["Dear diary,\nToday was awful."], None),  # a text of several lines is an example
    (["word " * 60], ["other " * 60], None),  # longer than a sentence
])
def test_which_pairs_are_expanded_and_by_which_version(positive, negative, version):
    assert expansion.expansion_for(positive, negative) == version
    assert default_expand("mean", positive, negative) == version
    assert default_expand("actadd", positive, negative) is None  # per-position rows are the pair as written


def test_a_recipe_names_only_known_versions():
    assert Recipe("t", positive=[TRAINS[0]], negative=[TRAINS[1]], method="mean", expand="sentence-v1").expand == "sentence-v1"
    with pytest.raises(ValueError, match="unknown expand 'v9'; choose one of v1, sentence-v1"):
        Recipe("t", positive=["Cats"], negative=["Dogs"], method="mean", expand="v9")


@pytest.mark.parametrize("version", ["v1", "sentence-v1"])
def test_both_sides_differ_only_in_the_contrast_and_share_every_read_position(default_ctx, version):
    positive, negative = ("Cats", "Dogs") if version == "v1" else TRAINS
    pairs = expansion.expanded_pairs(default_ctx, positive, negative, version)
    chosen = expansion.VERSIONS[version]
    assert len(pairs) == len(chosen.framings) * len(chosen.exchanges)
    for pair in pairs:
        pos, neg = pair.positive, pair.negative
        # read from the prompt's last token on (start): the same tokens on both sides, then the reply's exactly
        assert pos.ids[pos.start - 1:] == neg.ids[neg.start - 1:]
        assert default_ctx.tokenizer.decode(pos.ids[pos.start + 1:]) == pair.reply
        assert pos.ids[: pos.start] != neg.ids[: neg.start]
        # the side is told to the model in its system turn, in the framing
        assert pair.framing.format(positive) in pair.positive_text and pair.framing.format(negative) in pair.negative_text
        assert pair.positive_text.index("system") < pair.positive_text.index(pair.framing.format(positive)) < pair.positive_text.index(pair.user)
    if version == "sentence-v1":
        assert {p.framing for p in pairs} == {"{}"}  # the sentence is the whole system message


def test_expanded_pairs_refuse_an_empty_or_identical_side(default_ctx):
    with pytest.raises(ValueError, match="non-empty"):
        expansion.expanded_pairs(default_ctx, "  ", "Dogs")
    with pytest.raises(ValueError, match="nothing to contrast"):
        expansion.expanded_pairs(default_ctx, TRAINS[0], f" {TRAINS[0]} ", "sentence-v1")


def _topic_logprob(ctx, vector: SteeringVector | None, word: str) -> float:
    """Mean log probability of ``word`` as the next token after a few neutral openings (raw and chat)."""
    target = ctx.tokens(" " + word)[0]
    rows = [prompt_ids(ctx, p) for p in ("This morning I called my sister and", "After lunch, my colleague said")]
    rows += [prompt_ids(ctx, m, chat=True) for m in ("What did you do on Sunday?", "Any tips for a rainy day?")]
    total = 0.0
    for ids in rows:
        with steer(ctx, [Steer(vector, 1.0, "all")]) if vector is not None else nullcontext():
            logits = ctx.model(torch.tensor([ids], device=ctx.device)).logits[0, -1]
        total += float(torch.log_softmax(logits.float(), -1)[target])
    return total / len(rows)


@torch.inference_mode()
def test_a_sentence_pair_expanded_moves_its_topic_further_than_read_as_written(default_ctx):
    """At the same calibrated distribution shift, "I talk about trains constantly" told as the system
    message moves the next token toward " trains" more than the same pair read as raw text."""
    layer = [default_ctx.layer_indices(["80%"])[0]]
    said = expansion.build_expanded(default_ctx, *TRAINS, layer, "mean", "sentence-v1")
    written = build_from_pairs(default_ctx, [(TRAINS[0], TRAINS[1])], layer, "mean")
    base = _topic_logprob(default_ctx, None, "trains")
    moved = {name: _topic_logprob(default_ctx, v * calibrate(default_ctx, v).scale, "trains") - base
             for name, v in (("said", said), ("written", written))}
    assert moved["said"] > 0.5 and moved["said"] > moved["written"] + 0.3, moved
