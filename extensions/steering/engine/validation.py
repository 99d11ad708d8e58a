"""Checking input, in one place and with one wording each: numbers, strengths, layers, preset names.

Every check raises a ValueError whose message names the thing that is wrong, phrased for whoever
gave it (the page, the command line and Python all show it as it is); none mentions a flag.
"""
from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Any, Iterable

from .untrusted import OneLineError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
# |strength| above this is never useful: mean/pca strengths are shares of the residual norm (about
# 0.3), ActAdd's are raw (about 5), imported control vectors' are llama.cpp scales (about 1-8).
MAX_STRENGTH = 100.0
AUTO = "auto"  # a strength or a layer chosen by measurement (engine/calibration.py)
MAX_SEED = 2**32 - 1  # the seeds every random generator we seed takes (numpy's range; torch's is wider)
# Below this a temperature divides float32 logits into overflow (1e-40 gives inf, then NaN
# probabilities); from 0.01 down a sample is the greedy reply anyway, which 0 asks for plainly.
MIN_TEMPERATURE = 0.01
MAX_NEW_TOKENS = 4096  # a completion of ours is a steering test, not a book; the model's context bounds it further


class PresetError(OneLineError):
    """A preset name, file or recipe is unusable; the message names the file and the problem."""


def finite(value: Any, what: str) -> float:
    """``value`` as a finite float; empty, non-numeric, NaN and ±inf are refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{what} is empty: enter a number")
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return number


def whole(value: Any, what: str, low: int, high: int | None = None) -> int:
    """``value`` as an int within [low, high]."""
    number = _exact_int(value)
    if number is None:
        number = finite(value, what)
        if not number.is_integer():
            raise ValueError(f"{what} must be a whole number, got {value}")
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{what} must be {bounds}, got {int(number)}")
    return int(number)


def _exact_int(value: Any) -> int | None:
    """An int or integer text as it is (a float would round 18446744073709551617); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,100}\s*", value):
        return int(value)
    return None


def seed(value: Any, what: str = "the seed") -> int:
    return whole(value, what, 0, MAX_SEED)


def max_new_tokens(value: Any, what: str = "max new tokens") -> int:
    return whole(value, what, 1, MAX_NEW_TOKENS)


def temperature(value: Any, what: str = "the temperature") -> float:
    """0 (greedy) or a temperature that samples: at least MIN_TEMPERATURE."""
    number = finite(value, what)
    if number != 0 and not number >= MIN_TEMPERATURE:
        raise ValueError(f"{what} must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {number:g}")
    return number


def top_p(value: Any, what: str = "top-p") -> float:
    number = finite(value, what)
    if not 0 < number <= 1:
        raise ValueError(f"{what} must lie in (0, 1], got {number:g}")
    return number


def fits_context(prompt_tokens: int, new_tokens: int, positions: int | None) -> None:
    """A prompt and the tokens asked of it fit the positions a model reads (None: unknown, not checked)."""
    if positions is not None and prompt_tokens + new_tokens > positions:
        raise ValueError(f"the prompt is {prompt_tokens} tokens long and max new tokens asks for {new_tokens} more, "
                         f"but the model reads at most {positions} positions: shorten the prompt or ask for fewer tokens")


def strength(value: Any, what: str = "strength") -> float:
    """A finite strength no larger than ±MAX_STRENGTH."""
    number = finite(value, what)
    if abs(number) > MAX_STRENGTH:
        raise ValueError(f"{what} {number:g} is out of range: use a value between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g}")
    return number


def dose(value: Any, what: str = "the dose") -> float:
    """A recipe's dose: a positive multiple of its calibrated strength (see ``strength``)."""
    number = strength(value, what)
    if number <= 0:
        raise ValueError(f"{what} must be above 0 (1 = the calibrated strength); for the opposite direction swap the prompts")
    return number


def split_spec(spec: str, what: str = "the strength after ':'") -> tuple[str, float | None]:
    """'NAME' or 'NAME:STRENGTH' (the command line's ``--steer``): the name and the strength, None when not
    given. A preset name holds neither ':' nor ',' (engine/validation.py NAME_PATTERN)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        return head.strip(), strength(tail, what)
    return spec.strip(), None


def strength_spec(value: Any) -> float | str:
    """A strength as a user writes it: 'auto' (calibrated) or a number (see ``strength``)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return strength(value)


def layer_spec(value: Any) -> int | str:
    """A layer as written in a recipe: an index (negative counts from the end), a share such as '20%',
    or 'auto' (chosen per model by measurement)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().endswith("%"):
        share = value.strip()[:-1]
        try:
            number = float(share)
        except ValueError:
            raise ValueError(f"invalid layer {value!r}: write an index such as 6, a share such as '20%' or auto") from None
        if not 0 <= number <= 100:
            raise ValueError(f"invalid layer {value!r}: a share must lie between 0% and 100%")
        return value.strip()
    if isinstance(value, bool):
        raise ValueError(f"invalid layer {value!r}: write an index such as 6 or a share such as '20%'")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"invalid layer {value!r}: a layer index is a whole number")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid layer {value!r}: write an index such as 6, a share such as '20%' or auto") from None


def resolve_layer(value: Any, num_layers: int) -> int:
    """The block index a layer spec means on a model with ``num_layers`` blocks."""
    spec = layer_spec(value)
    if spec == AUTO:
        raise ValueError("layer auto is chosen when the vector is built for a model, not a fixed index")
    if isinstance(spec, str):
        return min(num_layers - 1, round(float(spec[:-1]) / 100 * num_layers))
    return block_in_range(spec + num_layers if spec < 0 else spec, num_layers, value)


def layer_problem(index: int, num_layers: int, given: Any = None) -> str | None:
    """Why block ``index`` (``given``: as the user wrote it) is not on a model of ``num_layers`` blocks, or None."""
    if 0 <= index < num_layers:
        return None
    return f"layer {index if given is None else given} is out of range: the model has {num_layers} layers (0-{num_layers - 1})"


def block_in_range(index: int, num_layers: int, given: Any = None) -> int:
    problem = layer_problem(index, num_layers, given)
    if problem:
        raise ValueError(problem)
    return index


def hidden_size_problem(vector_size: int, model_size: int | None) -> str | None:
    """Why a vector of ``vector_size`` cannot steer hidden states of ``model_size`` (None: it can, or the size is unknown)."""
    if model_size is not None and vector_size != model_size:
        return f"its hidden size is {vector_size}, the model's {model_size}"
    return None


def layer_indices(values: Iterable[Any], num_layers: int) -> list[int]:
    """Sorted distinct block indices of several layer specs; at least one."""
    indices = sorted({resolve_layer(value, num_layers) for value in values})
    if not indices:
        raise ValueError("choose at least one layer")
    return indices


def block_indices(values: Iterable[int], num_layers: int) -> list[int]:
    """Sorted distinct block indices (0 … num_layers - 1, no counting from the end); at least one."""
    indices = sorted({int(value) for value in values})
    if not indices:
        raise ValueError("choose at least one layer")
    for index in indices:
        block_in_range(index, num_layers)
    return indices


def check_name(name: Any) -> str:
    """Refuse names that could escape the folder or hide: '..', '/', absolute paths, leading dots, control characters."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name or name.strip() != name:
        raise PresetError(
            f"invalid preset name {name!r}: use 1-64 letters, digits, spaces, '_', '-' or '.', "
            "starting with a letter or digit, without '..'"
        )
    return name


def mapping_to(cls: type, data: Any, what: str, required: tuple[str, ...] = ()):
    """A dataclass ``cls`` from a YAML mapping (null values take the defaults); every wrong field,
    unknown or missing, is named under ``what`` (e.g. 'distill')."""
    if not isinstance(data, dict):
        raise PresetError(f"{what}: expected a mapping, got {type(data).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = set(data) - set(known)
    if unknown:
        raise PresetError(f"unknown {what} option(s) {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    missing = [f"{what}.{key}" for key in required if data.get(key) is None]
    if missing:
        raise PresetError(f"{', '.join(missing)} is missing")
    try:
        return cls(**{key: value for key, value in data.items() if value is not None})
    except TypeError as error:
        raise PresetError(f"{what}: {error}") from None


def text(value: Any, what: str) -> str:
    """Non-empty text."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty: write some text")
    return value
