"""Pair expansion: a short pair ("Cats" / "Dogs") turned into a contrastive set, so its vector carries the
behaviour the words ask for rather than their spelling.

Read as raw text, one pair of words gives a vector that is mostly the difference of two token strings:
topics, styles, languages and formats do not move. Expansion places the contrast in several framings
(a system message of our own writing: persona, topic, style), renders each with the model's OWN chat
template (a plain "Question/Answer" text when it has none), and continues every one with the same
generic assistant replies of our own writing. The two sides of a pair are token for token the same but
for the contrast's tokens inside the framing. Only the reply is read: every position from the last
prompt token (the one that predicts the reply's first token) to the reply's end. Because the model is
causal, the position k tokens into the reply sees exactly the reply truncated at k tokens, so reading
all reply positions of one pass is repeng's "reply truncated at many lengths" at the cost of one pass.
Those positions never contain the contrast's tokens: what differs there is what the model makes of
the instruction, the behaviour it is about to produce.

One pair of sentences ("I talk about weddings constantly" / "I do not talk about weddings constantly",
the ActAdd post's pair) says more than a label, but read as raw text it is read as words: the negation
barely counts, and the topic does not move (0 % on topic). Told to the model, the same sentence is
followed (weddings in 69-94 % of completions with it before the prompt: benchmarks/untuned.py --ceiling).
So a sentence pair is expanded too, with each sentence as the whole system message (SENTENCE_EXPANSION).

Versioned: each version names the exact framings, exchanges and reading. A recipe records its version
(``expand: v1``) and rebuilds identically on any model; a change to any of them is a new version, never an
edit of an old one. See benchmarks/tuning/tune_expansion.py for how v1 was chosen (results in
benchmarks/results/tune_expansion.json) and its --sentences for sentence-v1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .build import PairMethod, Tokens, from_differences, token_differences
from .context import ModelContext
from .progress import Progress
from .vector import SteeringVector

MAX_WORDS = 6  # a side of at most this many words is a label ("Cats", "I am optimistic"), not an example
MAX_CHARS = 60
MAX_SENTENCE_CHARS = 200  # a longer side is an example of its own, read as written


@dataclass(frozen=True)
class Exchange:
    """A neutral user message and the generic start of an assistant reply to it (the part that is read)."""

    user: str
    reply: str


@dataclass(frozen=True)
class Version:
    """Everything an expansion is made of: the framings ("{}" stands for one side of the pair), the
    exchanges each framing is continued with, and how they are laid out and read."""

    framings: tuple[str, ...]
    exchanges: tuple[Exchange, ...]
    summary: str = ""  # one line for the user: what the pair was turned into


# v1: three framings, one per kind of contrast a user writes (who the assistant is, what it talks about,
# how it writes), worded so that a mood, a topic, a style, a language or a format each reads naturally
# in at least one of them; and twelve neutral exchanges whose replies open in several ways (agreeing,
# hedging, telling, listing, asking back) without a topic, mood or format of their own.
V1 = Version(
    framings=(
        "You are {}.",
        "Whatever the user says, talk about {}.",
        "Write every reply with {}.",
    ),
    exchanges=(
        Exchange("Tell me something.", "Sure. Here is something I have been thinking about lately, and I would like to share it with you."),
        Exchange("How was your day?", "My day was quite something. Let me tell you how it went from the start."),
        Exchange("What should I do this weekend?", "Well, that depends on what you enjoy, but here is what I would suggest."),
        Exchange("Can you help me write a short note?", "Of course. Here is a short note you could use, and you can change it as you like."),
        Exchange("What do you think about it?", "Honestly, I think there is a lot to say about it. First of all,"),
        Exchange("Describe a place you like.", "There is one place I always come back to. When you arrive there, the first thing you notice is"),
        Exchange("Give me some advice.", "Here is my advice, in a few words. Start small, and"),
        Exchange("Explain something to me.", "Let me explain it simply. The main idea is this:"),
        Exchange("Write a few sentences.", "Here are a few sentences for you. The morning was"),
        Exchange("Tell me a story.", "Once upon a time, there was someone who"),
        Exchange("What is on your mind?", "A few things are on my mind today. The first one is"),
        Exchange("Say hello to my friend.", "Hello! It is very nice to meet you. Your friend told me that"),
    ),
    summary="the short pair read in three framings of the chat template (persona, topic, style) over generic replies",
)
# sentence-v1: the sentence is the whole system message, over v1's exchanges. Chosen on four sentence pairs
# of our own (benchmarks/tuning/tune_expansion.py --sentences, results/tune_expansion.json "sentences"): their topic on 12-31 % of completions
# against 0-12 % read as written, at the same calibrated KL; adding v1's three framings moved them no further.
SENTENCE_V1 = Version(framings=("{}",), exchanges=V1.exchanges,
                      summary="each sentence told as the chat template's system message, over generic replies")
VERSIONS: dict[str, Version] = {"v1": V1, "sentence-v1": SENTENCE_V1}
EXPANSION = "v1"  # the version a new recipe of one pair of labels gets
SENTENCE_EXPANSION = "sentence-v1"  # the version a new recipe of one pair of sentences gets


@dataclass(frozen=True)
class ExpandedPair:
    """One framing of the contrast with one exchange: both sides as text and tokens, and the first
    position read (the reply, from the prompt's last token on). The tokens from ``start - 1`` on are
    the same on both sides."""

    framing: str
    user: str
    reply: str
    positive_text: str
    negative_text: str
    positive: Tokens
    negative: Tokens


def needs_expansion(positive: Sequence[str], negative: Sequence[str]) -> bool:
    """One pair of short labels (each side at most MAX_WORDS words and MAX_CHARS characters, one line):
    such a pair names a behaviour and says too little to be read as an example of it."""
    if len(positive) != 1 or len(negative) != 1:
        return False
    return all(0 < len(text.split()) <= MAX_WORDS and len(text) <= MAX_CHARS and "\n" not in text
               for text in (positive[0], negative[0]))


def expansion_for(positive: Sequence[str], negative: Sequence[str]) -> str | None:
    """The version one pair is expanded by: labels by EXPANSION, one-line sentences (at most
    MAX_SENTENCE_CHARS each) by SENTENCE_EXPANSION; None for many pairs or a longer text (read as written)."""
    if needs_expansion(positive, negative):
        return EXPANSION
    if len(positive) == 1 and len(negative) == 1 and all(
            text.strip() and len(text) <= MAX_SENTENCE_CHARS and "\n" not in text.strip() for text in (positive[0], negative[0])):
        return SENTENCE_EXPANSION
    return None


def known_version(name: str | Version) -> Version:
    """The expansion called ``name`` (a Version is itself: a candidate being tuned); ValueError naming the known ones otherwise."""
    if isinstance(name, Version):
        return name
    if name not in VERSIONS:
        raise ValueError(f"unknown expansion {name!r}; choose one of {', '.join(VERSIONS)}")
    return VERSIONS[name]


def _prompt_text(ctx: ModelContext, system: str, user: str) -> str:
    """The prompt of a chat with ``system`` and ``user``, ready for the reply, in the model's own format."""
    template = getattr(ctx.tokenizer, "chat_template", None)
    if not template:
        return f"{system}\n\nQuestion: {user}\nAnswer:"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        return ctx.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - templates without a system role raise their own errors (jinja's, ValueError)
        merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return ctx.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


def _side(ctx: ModelContext, prompt: str, reply: list[int], chat: bool) -> Tokens:
    # A chat is read as the template renders it (as chats are run); plain text after the shared sink
    # token, as every raw prompt of ours is read.
    ids = ctx.tokens(prompt) if chat else [ctx.sink_id, *ctx.tokens(prompt)]
    return Tokens(ids + reply, len(ids) - 1)


def expanded_pairs(ctx: ModelContext, positive: str, negative: str, version: str | Version = EXPANSION) -> list[ExpandedPair]:
    """The contrastive set of a short pair: every framing of each side, with every exchange."""
    chosen = known_version(version)
    for text in (positive, negative):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("both sides of an expanded pair must be non-empty text")
    if positive.strip() == negative.strip():
        raise ValueError("the positive and negative texts are the same: nothing to contrast")
    chat = bool(getattr(ctx.tokenizer, "chat_template", None))
    pairs = []
    for framing in chosen.framings:
        for exchange in chosen.exchanges:
            # The reply is tokenised on its own, so both sides get the very same reply tokens whatever
            # the template does around the contrast.
            reply = ctx.tokens(exchange.reply if chat else " " + exchange.reply)
            texts = [_prompt_text(ctx, framing.format(side.strip()), exchange.user) for side in (positive, negative)]
            pos, neg = (_side(ctx, text, reply, chat) for text in texts)
            pairs.append(ExpandedPair(framing, exchange.user, exchange.reply, texts[0], texts[1], pos, neg))
    return pairs


def build_expanded(
    ctx: ModelContext,
    positive: str,
    negative: str,
    layers: list[int],
    method: PairMethod = "mean",
    version: str | Version = EXPANSION,
    progress: Progress | None = None,
) -> SteeringVector:
    """The vector of a short pair by expansion: the mean difference (or first principal component) of the
    reply positions over every framing and exchange, as a unit direction times the residual norm."""
    pairs = expanded_pairs(ctx, positive, negative, version)
    diffs, norms = token_differences(ctx, [(p.positive, p.negative) for p in pairs], layers, "mean", progress=progress)
    return from_differences(diffs, norms, method)
