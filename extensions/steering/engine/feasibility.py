"""Will a pair move this model? A fast check before building (a few seconds on CPU for a small model).

A steering vector made from a pair stands in for telling the model the positive side: a behaviour the
model does not produce even when told is not one a vector of its own activations can be expected to
produce (benchmarks/untuned.py --ceiling measured it slowly: 10 of 24 held-out contrasts do not move
when told, and no vector moved them). The check measures that quickly and deterministically:

1. What the pair asks for, read off its positive side (``behaviour_of``): a format (emoji, lists,
   capitals, exclamations, questions), a language (a name the check has function words for), a mood
   (the two sides' VADER sentiment differs by MOOD_GAP or more) or else a topic (the positive side's
   content words). Each comes with a score of a reply and what counts as "clearly moved" (the
   held-out sets' thresholds: sentiment +0.2; a share >= 30 % and 25 points above; a language >= 50 %).
2. Told: greedy replies (TOLD_TOKENS tokens) to the PROMPTS chat messages with the positive side told as
   the system message in each TOLD_FRAMINGS framing (a sentence pair: the sentence itself), against
   the same messages untold. The model follows when the best framing moves the score clearly.
3. Consistency: the expanded pair's differences (engine/expansion.py: the framings over generic
   replies, CONSISTENCY_EXCHANGES of them) at CONSISTENCY_DEPTH of the model's depth; the mean cosine of each difference with their
   mean. Near 1: the pair's differences point one way; near 0: they disagree (a number shown, not
   part of the verdict: it did not separate the tuning set's outcomes, see docs/check.md).

The verdict: a vector is likely to move the model when the model follows the positive side when told.
A language is read off a pair only when the positive side is its name alone: ``build`` then distils
"Always reply in X." (engine/languages.py), since a vector read from the pair reaches 21 % of French
function words where the told model writes 69 % (benchmarks/results/tune_expansion.json); a language
inside a longer text is "unlikely as written". Chosen on benchmarks/tuning_set.yaml only; measured once
on the held-out sets (docs/check.md).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .build import token_differences
from .context import ModelContext
from .distill.chats import chat_ids, greedy_replies
from .expansion import SENTENCE_EXPANSION, V1, expanded_pairs, expansion_for
from .languages import UNMEASURED, language_in, language_named
from .metrics import metric, sentiment, words
from .validation import layer_indices

# how the check tells the model the positive side: v1's framings and a plain instruction
TOLD_FRAMINGS: tuple[str, ...] = (*V1.framings, "Always reply in {}.")
# open chat messages that leave room for a mood, a topic, a language or a format (none in any tuning or held-out set)
PROMPTS: tuple[str, ...] = ("What are you up to today?", "Write a few lines for a postcard.", "Give me a tip for the week ahead.",
                            "What's a good way to spend a quiet evening?")
TOLD_TOKENS = 32
CONSISTENCY_EXCHANGES = 4  # the expansion's first exchanges in each framing: enough to see whether the differences agree
CONSISTENCY_DEPTH = "50%"
MOOD_GAP = 0.3  # sides whose VADER sentiment differs this much are a mood pair
SHIFT, SHARE, RISE, LANGUAGE = 0.2, 0.3, 0.25, 0.5  # "clearly moved", as the held-out sets judge it
# chosen on benchmarks/tuning/check_tuning_set.yaml (benchmarks/tuning/check_features.py --choose, docs/check.md):
# a mood follows when its side told moves sentiment this much beyond the negative side told in the same framing (the
# vector's own "clearly moved"), and a topic when told it is mentioned in 1 of the 4 replies (the 25 % steps of 4 replies)
MOOD_TOLD_GAP = SHIFT
TOPIC_SHARE = 0.25

# a format: (keywords in the positive side, what a reader would call it, the metric scoring one reply: 1 when it shows it)
FORMATS: tuple[tuple[re.Pattern, str, str], ...] = (
    (re.compile(r"emoji|emoticon|smiley|smilie"), "emoji", "emoji"),
    (re.compile(r"bullet|\blists?\b|numbered|\bpoints\b"), "lists", "bullets"),
    (re.compile(r"capital|upper ?case|all caps|shout"), "capital letters", "mostly_capitals"),
    (re.compile(r"exclamation|exclaim"), "exclamation marks", "exclaim"),
    (re.compile(r"\bquestions?\b"), "questions", "questions"),
)
# words that say how or how much, not what about: left out of a topic's words
NOT_TOPIC = frozenset(
    "i i'm im me my you your we our a an the and or of to in on at for with about is am are be do does not no never "
    "always constantly talk talks talking speak speaks think thinks thinking love loves obsessed all day every time "
    "free spend can't cannot stop lot lots very much really so it its this that have has".split()
)


def _topic_score(stems: tuple[str, ...]) -> Callable[[str], float]:
    return lambda text: 1.0 if any(w.startswith(stems) for w in words(text)) else 0.0


@dataclass(frozen=True)
class Behaviour:
    """What a pair asks for: ``kind`` (format, language, mood, topic), a name a reader knows, and a reply's score."""

    kind: str
    name: str
    score: Callable[[str], float] | None = field(repr=False)  # None: a language the check has no function words for
    direction: int = 1  # which way the positive side should move the score

    def needed(self, untold: float) -> float:
        """The effect (the wanted way) that counts as clearly moved from ``untold``."""
        if self.kind == "mood":
            return MOOD_TOLD_GAP
        if self.kind == "language":
            return LANGUAGE - untold
        return max(RISE, (TOPIC_SHARE if self.kind == "topic" else SHARE) - untold)


def behaviour_of(positive: str, negative: str) -> Behaviour:
    """What the pair asks for, read off its text (see the module's description)."""
    lower = positive.lower()
    for pattern, name, measure in FORMATS:
        if pattern.search(lower):
            return Behaviour("format", name, metric(measure).score)
    language = language_in(lower)
    if language is not None:
        return Behaviour("language", language.name, language.share())
    for token in words(lower):
        if token in UNMEASURED:
            return Behaviour("language", token.capitalize(), None)
    gap = sentiment(positive) - sentiment(negative)
    if abs(gap) >= MOOD_GAP:
        return Behaviour("mood", "a more positive mood" if gap > 0 else "a more negative mood", sentiment, 1 if gap > 0 else -1)
    stems = tuple(dict.fromkeys(w.rstrip("s") if len(w) > 3 else w for w in words(lower) if w not in NOT_TOPIC)) or (lower.strip(),)
    return Behaviour("topic", " / ".join(stems), _topic_score(stems))


@dataclass(frozen=True)
class Feasibility:
    """The check's numbers and verdict for one pair on one model."""

    positive: str
    negative: str
    kind: str
    behaviour: str
    untold: float  # mean score of the untold replies
    told: float  # mean score of the told replies, best framing
    told_as: str  # that framing's system message
    told_negative: float | None  # a mood: the mean score with the negative side told in that framing, the baseline it is judged against
    effect: float  # (told - untold; a mood: told - told_negative) the wanted way
    needed: float
    follows: bool
    consistency: float
    replies: int  # replies per condition
    likely: bool
    line: str
    seconds: float

    def details(self) -> str:
        negative = "" if self.told_negative is None else f", the negative side told {self.told_negative:.2f}"
        return (f"kind {self.kind} ({self.behaviour}); {self.replies} greedy replies of {TOLD_TOKENS} tokens each: "
                f"untold {self.untold:.2f}, told {self.told:.2f} (as {self.told_as!r}){negative}, effect {self.effect:+.2f} "
                f"(clearly moved at {self.needed:+.2f}); consistency of the pair's differences {self.consistency:.2f}; "
                f"{self.seconds:.1f} s")


def _percent(x: float) -> str:
    return f"{100 * x:.0f} %"


def _line(b: Behaviour, positive: str, negative: str, follows: bool, told: float, against: float, untold: float,
          replies: int) -> tuple[bool, str]:
    """(likely, one line a newcomer understands)."""
    if b.kind == "language":
        one_pair = "a vector read from a pair has not reached a language on this model (French on our tuning set: 21 % of function words)"
        if b.score is None:
            return False, f"unlikely from one pair: {one_pair}; tell it {b.name} in the system prompt instead"
        if not follows:
            return False, (f"unlikely to work: this model does not write {b.name} even when asked ({_percent(told)} of function words): "
                           "a vector is unlikely to help; try a larger model")
        instruction = f"Always reply in {b.name}."
        if language_named(positive) is not None:
            return True, (f"likely to work: told, this model writes {b.name} ({_percent(told)} of function words); for a language name "
                          f"build distils the instruction {instruction!r} instead of reading the pair (about a minute or more)")
        return False, (f"unlikely as written: told, this model writes {b.name} ({_percent(told)} of function words), but "
                       f"{one_pair}; give the language name alone as the positive side (build then distils {instruction!r}), "
                       "or tell it in the system prompt")
    if b.kind == "format":
        count = round(told * replies)
        if follows:
            return True, f"likely to work: told, this model writes {b.name} in {count} of {replies} replies ({round(untold * replies)} untold)"
        return False, (f"unlikely to work: this model does not write {b.name} even when asked ({count} of {replies} replies): "
                       "a vector is unlikely to help; try a larger model")
    if b.kind == "mood":
        change = f"sentiment {told:+.2f} told {positive!r}, {against:+.2f} told {negative!r}"
        if follows:
            return True, f"likely to work: told {positive!r} rather than {negative!r}, this model's replies turn to {b.name} ({change})"
        return False, (f"unlikely to work: told {positive!r} rather than {negative!r}, this model's replies do not clearly turn to "
                       f"{b.name} ({change}; clearly is {MOOD_TOLD_GAP:g} the wanted way): a vector is unlikely to do more; "
                       "try a larger model or a stronger pair")
    on_topic, before = round(told * replies), round(untold * replies)
    if follows:
        return True, f"likely to work: told {positive!r}, this model mentions it in {on_topic} of {replies} replies ({before} untold)"
    return False, (f"unlikely to work: told {positive!r}, this model mentions it in only {on_topic} of {replies} replies "
                   f"({before} untold): a vector is unlikely to do more; try a larger model or a more concrete pair")


def _consistency(ctx: ModelContext, positive: str, negative: str) -> float:
    version = expansion_for([positive], [negative]) or SENTENCE_EXPANSION
    pairs = [p for p in expanded_pairs(ctx, positive, negative, version)
             if p.user in {e.user for e in V1.exchanges[:CONSISTENCY_EXCHANGES]}]
    layer = layer_indices([CONSISTENCY_DEPTH], ctx.num_layers)
    diffs, _ = token_differences(ctx, [(p.positive, p.negative) for p in pairs], layer)
    d = diffs[layer[0]].float()
    return float(torch.nn.functional.cosine_similarity(d, d.mean(0, keepdim=True)).mean())


@torch.inference_mode()
def check_pair(ctx: ModelContext, positive: str, negative: str) -> Feasibility:
    """Whether a vector from this pair is likely to move this model (see the module's description)."""
    started = time.perf_counter()
    positive, negative = (positive or "").strip(), (negative or "").strip()
    if not positive or not negative:
        raise ValueError("give both sides of the pair: a positive and a negative text")
    if positive == negative:
        raise ValueError("the positive and negative texts are the same: nothing to contrast")
    behaviour = behaviour_of(positive, negative)
    messages = PROMPTS
    framings = TOLD_FRAMINGS if expansion_for([positive], [negative]) != SENTENCE_EXPANSION else ("{}",)
    if behaviour.score is None:  # nothing to score the told replies by
        framings = ()
    sides = (positive, negative) if behaviour.kind == "mood" else (positive,)  # a mood is judged against its negative side told
    prompts = [chat_ids(ctx, m, None) for m in messages]
    prompts += [chat_ids(ctx, m, framing.format(side)) for side in sides for framing in framings for m in messages]
    replies = [ctx.tokenizer.decode(r, skip_special_tokens=True)
               for r in greedy_replies(ctx, prompts, TOLD_TOKENS, batch_size=len(prompts))] if framings else []
    scores = [behaviour.score(r) for r in replies] if framings else [0.0] * len(messages)
    n = len(messages)

    def mean_of(block: int) -> float:
        return sum(scores[n * block: n * (block + 1)]) / n

    untold = mean_of(0)
    told_by = {framing: mean_of(1 + k) for k, framing in enumerate(framings)} or {"{}": untold}
    against = {framing: mean_of(1 + len(framings) + k) if len(sides) > 1 else untold for k, framing in enumerate(framings)} or {"{}": untold}
    best = max(told_by, key=lambda f: behaviour.direction * (told_by[f] - against[f]))
    effect = behaviour.direction * (told_by[best] - against[best])
    needed = behaviour.needed(against[best])
    follows = effect >= needed - 1e-9
    consistency = _consistency(ctx, positive, negative)
    likely, line = _line(behaviour, positive, negative, follows, told_by[best], against[best], untold, n)
    return Feasibility(positive, negative, behaviour.kind, behaviour.name, untold, told_by[best], best.format(positive),
                       against[best] if len(sides) > 1 else None, effect, needed, follows, consistency, n, likely, line,
                       time.perf_counter() - started)
