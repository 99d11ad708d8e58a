"""Behaviour scores of completions: what a user would recognise a preset by, plus readability; and how the model
reads a completion after its prompt (its perplexity; the next-token distributions of a padded batch of replies).

The registry: every score a recipe, the command line, the tab or a benchmark names is registered here
once with ``register(name, score, measures, better)`` (what it measures, and which way a preset that
wants it moves it), and looked up with ``metric(name)``.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal, Sequence

import torch

from .context import ModelContext

WORD = re.compile(r"[A-Za-zÀ-ÿ']+")
# each language a reply's share is measured in (metric name: its function words); engine/languages.py names and spells them
FUNCTION_WORDS: dict[str, frozenset] = {
    "french": frozenset(
        "le la les un une des du de et est en que qui pour pas ne sur avec dans au aux ce cette il elle ils elles nous vous "
        "je tu mon ma mes son sa ses leur plus mais ou où très être avoir fait sont était c'est j'ai bonjour merci oui".split()
    ),
    "spanish": frozenset(
        "el la los las un una unos unas y es en que del al por para con se lo su sus mi mis tu muy pero como más "
        "está están son soy estoy eres hola gracias sí también yo usted qué cuando donde dónde porque hay fue era ser "
        "estar este esta esto eso hoy día bien mucho todo".split()
    ),
    # words an English text also uses are left out ("in", "was", "an" in German; "a", "come" in Italian)
    "german": frozenset(
        "der die das den dem des ein eine einen einem und ist nicht ich du sie er wir ihr es zu mit auf für von im sich "
        "auch aber wie noch bin bist sind war hallo danke ja nein sehr heute mein meine dein kann gut viel oder wenn dass".split()
    ),
    "italian": frozenset(
        "il lo la gli le un una uno di del della dei che e è non per con sono sei ho ha hai mi ti si ci questo questa "
        "molto ma anche più ciao grazie io lui lei noi voi oggi bene tutto mio mia cosa perché sì".split()
    ),
}
ENGLISH_WORDS = frozenset(
    "the a an and is are was were to of in that it for on with as this be you i he she they we not but or at by have "
    "has from your my his her their".split()
)
DISCLAIMER = re.compile(r"\bas an? (ai|artificial intelligence|language model|ai language model)\b|\bi(?:'m| am) (just )?an? (ai|language model)\b", re.I)
PIRATE_WORDS = ("arr", "arrr", "arrr!", "matey", "mateys", "ahoy", "ye", "aye", "yer", "treasure", "ship", "sea",
                "captain", "hearties", "landlubber", "landlubbers", "yo", "ho", "plunder", "sail", "sailor", "scallywag")
BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+\S", re.M)  # a line starting "-", "*", "•", "1." or "2)"
NUMBERED = re.compile(r"^\s*\d+[.)]\s", re.M)
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B50\u2B55]")
FLUFF = re.compile(r"\b(great question|i'?d be happy|i hope this helps|feel free|certainly!|sure!|of course!|let me know)\b", re.I)


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    """VADER compound score in [-1, 1]."""
    return _vader().polarity_scores(text)["compound"]


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def language_share(function_words: frozenset) -> Callable[[str], float]:
    """The share of a text's function words that are ``function_words`` rather than English (0 when there are none)."""
    def share(text: str) -> float:
        tokens = words(text)
        own = sum(t in function_words for t in tokens)
        english = sum(t in ENGLISH_WORDS for t in tokens)
        return own / (own + english) if own + english else 0.0

    return share


def capitals(text: str) -> float:
    """Share of letters written in capitals."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def mostly_capitals(text: str) -> float:
    """1.0 when at least half of the letters are capitals (a shouted reply)."""
    return 1.0 if capitals(text) >= 0.5 else 0.0


def found(pattern: re.Pattern) -> Callable[[str], float]:
    """1.0 when ``pattern`` occurs in the text."""
    return lambda text: 1.0 if pattern.search(text) else 0.0


def is_json(text: str) -> float:
    """1.0 when the reply (code fences allowed) parses as a JSON object or array."""
    body = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fenced:
        body = fenced.group(1).strip()
    start = min([i for i in (body.find("{"), body.find("[")) if i >= 0], default=-1)
    if start < 0:
        return 0.0
    try:
        json.loads(body[start:])
        return 1.0
    except json.JSONDecodeError:
        return 0.0


def starts_json(text: str) -> float:
    """1.0 when the reply opens with a JSON object or array (a lenient score for short replies)."""
    return 1.0 if text.lstrip().lstrip("`").removeprefix("json").lstrip().startswith(("{", "[")) else 0.0


def has_disclaimer(text: str) -> float:
    return 1.0 if DISCLAIMER.search(text) else 0.0


def word_count(text: str) -> float:
    return float(len(words(text)))


def fluff(text: str) -> float:
    return float(len(FLUFF.findall(text)))


def topic_share(topic_words: Sequence[str]) -> Callable[[str], float]:
    """1.0 when the text mentions any of the topic words (the ActAdd paper's on-topic rate)."""
    wanted = {w.lower() for w in topic_words}
    return lambda text: 1.0 if wanted & set(words(text)) else 0.0


def repetition(text: str, n: int = 3) -> float:
    """Share of repeated word n-grams: 0 for varied text, near 1 for loops."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def debris(text: str) -> float:
    """Share of characters that are neither letters, spaces nor common punctuation (garbage output)."""
    if not text:
        return 0.0
    odd = sum(1 for ch in text if not (ch.isalpha() or ch.isspace() or ch in ".,;:!?'\"()-—–’…"))
    return odd / len(text)


def readable(text: str) -> float:
    """1.0 when a completion reads as text: few repeated 3-grams, little debris, some words."""
    return 1.0 if repetition(text) < 0.3 and debris(text) < 0.1 and len(words(text)) >= 3 else 0.0


Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    """A behaviour score of one completion: ``score(text)``, what it ``measures``, and which way is
    ``better`` for the behaviour it names (``lower`` for scores a preset wants down: words, disclaimers)."""

    name: str
    score: Callable[[str], float]
    measures: str
    better: Better = "higher"
    requires: str | None = None  # the Python package the score needs, when not a dependency of the engine

    @property
    def arrow(self) -> str:
        return "↑" if self.better == "higher" else "↓"

    @property
    def available(self) -> bool:
        """Whether this Python can compute the score (its package is installed)."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def check_available(self) -> None:
        """Refuse, before any work, a score whose package is missing."""
        if not self.available:
            raise ValueError(f"the {self.name} metric needs the {self.requires} package (pip install {self.requires})")


METRICS: dict[str, Metric] = {}  # written only by register()


def register(name: str, score: Callable[[str], float], measures: str, better: Better = "higher",
             requires: str | None = None) -> Metric:
    """Add a score to the registry under a name not taken yet."""
    if name in METRICS:
        raise ValueError(f"a metric named {name!r} is registered already")
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be higher or lower, got {better!r}")
    METRICS[name] = found = Metric(name, score, measures, better, requires)
    return found


def metric(name: str) -> Metric:
    """The registered metric named ``name``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]


register("sentiment", sentiment, "VADER compound sentiment (−1 … 1)", requires="vaderSentiment")
for _language, _words in FUNCTION_WORDS.items():
    register(_language, language_share(_words), f"share of function words that are {_language.capitalize()} rather than English")
register("capitals", capitals, "share of letters written in capitals")
register("mostly_capitals", mostly_capitals, "1 when at least half of the reply's letters are capitals")
register("bullets", found(BULLET), "1 when the reply has a list item (a line starting -, *, •, 1. or 2))")
register("numbered", found(NUMBERED), "1 when the reply has a numbered list item (a line starting 1. or 2))")
register("emoji", found(EMOJI), "1 when the reply has an emoji")
register("exclaim", lambda text: 1.0 if text.count("!") >= 2 else 0.0, "1 when the reply has two exclamation marks or more")
register("questions", lambda text: 1.0 if "?" in text else 0.0, "1 when the reply asks a question")
register("json", is_json, "1 when the reply parses as a JSON object or array")
register("starts_json", starts_json, "1 when the reply opens with a JSON object or array")
register("disclaimer", has_disclaimer, "1 when the reply says it is an AI or a language model", "lower")
register("words", word_count, "words in the reply", "lower")
register("fluff", fluff, "stock phrases (great question, I hope this helps, ...)", "lower")
register("repetition", repetition, "share of repeated word 3-grams", "lower")
register("readable", readable, "1 when the reply reads as text (few loops, little debris)")
register("pirate", topic_share(PIRATE_WORDS), "1 when the reply uses a pirate word")


def infer_metric(system: str) -> str:
    """The behaviour score a user would recognise this system prompt by."""
    lower = system.lower()
    if "json" in lower:
        return "json"
    if "pirate" in lower:
        return "pirate"
    return "sentiment"


def mean(scores: Sequence[float]) -> float:
    return sum(scores) / len(scores) if scores else float("nan")


def perplexity(ctx, prompt_ids: Sequence[int], text: str) -> float:
    """Perplexity of ``text`` after the prompt under the model of ``ctx`` (a ModelContext) as it is now (call it unsteered):
    the fluency cost of steering, as in the ActAdd paper. Loops score low, debris high."""
    ids = ctx.tokens(text)
    if not ids:
        return float("nan")
    full = torch.tensor([list(prompt_ids) + ids], device=ctx.device)
    with torch.inference_mode():
        logits = ctx.model(input_ids=full).logits[0, len(prompt_ids) - 1 : -1].float()
    loss = torch.nn.functional.cross_entropy(logits, full[0, len(prompt_ids) :])
    return float(torch.exp(loss))


def next_token_logits(ctx: ModelContext, ids: torch.Tensor, mask: torch.Tensor, last: int) -> torch.Tensor:
    """(rows, last, vocab): the logits that predict the last ``last`` tokens of ``ids`` from the ones before each, in
    one teacher-forced pass of the model as it is now over a padded batch (``mask`` 0 on padding, on either side), each
    row's positions numbered from its first real token as generate numbers them: how replies after their prompts are
    read, for a perplexity or a KL against another reading."""
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": False}
    try:
        logits = ctx.model(**inputs, logits_to_keep=last + 1).logits
    except TypeError:  # models without logits_to_keep
        logits = ctx.model(**inputs).logits
    return logits[:, -last - 1 : -1]


def next_token_logprobs(ctx: ModelContext, ids: torch.Tensor, mask: torch.Tensor, last: int) -> torch.Tensor:
    """(rows, last, vocab): ``next_token_logits`` as log-probabilities (float32)."""
    return torch.log_softmax(next_token_logits(ctx, ids, mask, last).float(), -1)
