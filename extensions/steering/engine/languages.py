"""Languages a pair can name, and how a language is built from one pair.

On the default model a vector read from the pair "Spanish" / "English" reaches 12 % of Spanish function
words, while distilling the instruction "Always reply in Spanish." reaches about 90 % at the perplexity
of the model told it (docs/languages.md, benchmarks/language_distill.py). So a new recipe whose one
positive side is just a language name, asked for at the defaults, is built by distilling that instruction
(``language_recipe``); its recipe says so. The list is small and bounded: the languages with a
function-word list to measure them by (engine/metrics.py), plus names the check recognises but cannot
measure (``UNMEASURED``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .distill.recipes import distill_recipe
from .methods import DEFAULT
from .metrics import FUNCTION_WORDS, METRICS, words
from .recipe import Recipe


@dataclass(frozen=True)
class Language:
    """A language: its English name and how a user may write it; the metric of the same name measures it."""

    name: str
    spellings: tuple[str, ...]  # lower case

    @property
    def metric(self) -> str:
        return self.name.lower()

    @property
    def function_words(self) -> frozenset:
        return FUNCTION_WORDS[self.metric]

    @property
    def instruction(self) -> str:
        """The system prompt a language preset is distilled from."""
        return f"Always reply in {self.name}."

    def share(self) -> Callable[[str], float]:
        """A reply's share of function words in this language rather than English (its registered metric)."""
        return METRICS[self.metric].score


LANGUAGES: tuple[Language, ...] = (
    Language("Spanish", ("spanish", "español", "espanol", "castellano")),
    Language("French", ("french", "français", "francais")),
    Language("German", ("german", "deutsch")),
    Language("Italian", ("italian", "italiano")),
)
# the negative side of a language name given alone: every language's share is measured against English
DEFAULT_NEGATIVE = "English"
# language names without a function-word list: recognised as a language, not measured, built as written
UNMEASURED = frozenset("portuguese português dutch russian chinese japanese korean arabic hindi turkish polish swedish greek latin".split())
# words around a language name that still ask for the language alone: "In Spanish", "the French language"
FILLER = frozenset("in the language speak speaking spoken reply replies answer answers write writing only always".split())


def language_in(text: str) -> Language | None:
    """The first measured language named anywhere in ``text`` (the check's reading of a pair's positive side)."""
    for token in words(text):
        for language in LANGUAGES:
            if token in language.spellings:
                return language
    return None


def language_named(text: str) -> Language | None:
    """The language ``text`` asks for when it is just a language name ("Spanish", "Español", "in French"), else None."""
    named = [w for w in words(text) if w not in FILLER]
    return language_in(named[0]) if len(named) == 1 else None


def language_recipe(recipe: Recipe) -> Recipe:
    """``recipe``, or when it is one pair whose positive side is a language name asked for at the defaults (the
    default method and mode, expanded, layer measured, a dose), the recipe of that language's distilled instruction at
    that dose. A method, mode, layer, fixed strength or --no-expand chosen by the user keeps the pair as written."""
    at_defaults = recipe.method == DEFAULT and recipe.expand and recipe.auto_layers and recipe.calibrated and recipe.mode == "all"
    if not at_defaults or len(recipe.positive) != 1 or len(recipe.negative) != 1:
        return recipe
    language = language_named(recipe.positive[0])
    if language is None:
        return recipe
    pair = f"“{recipe.positive[0]}” − “{recipe.negative[0]}”"
    description = (f"{language.name}, asked for as the pair {pair}: distilled from the instruction “{language.instruction}”, "
                   "because a vector read from a language pair does not reach the language on a small model (docs/languages.md)")
    if recipe.description:
        description = f"{recipe.description} ({description})"
    return distill_recipe(recipe.name, language.instruction, description=description, strength=recipe.strength,
                          metric=language.metric)
