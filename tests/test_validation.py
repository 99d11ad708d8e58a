"""The value checks every entry point shares (engine/validation.py), and where the engine applies them."""
from __future__ import annotations

import pytest
from transformers import GenerationMixin

from extensions.steering.engine import validation
from extensions.steering.engine.generation import Sampling, complete, completions
from extensions.steering.engine.tokens import prompt_ids


@pytest.mark.parametrize("check, value, message", [
    (validation.seed, "18446744073709551616", "the seed must be between 0 and 4294967295, got 18446744073709551616"),
    (validation.seed, "18446744073709551617", "got 18446744073709551617"),  # said as given, not rounded through a float
    (validation.seed, -1, "the seed must be between 0 and 4294967295, got -1"),
    (validation.seed, 1.5, "the seed must be a whole number"),
    (validation.max_new_tokens, "1000000000", f"max new tokens must be between 1 and {validation.MAX_NEW_TOKENS}, got 1000000000"),
    (validation.max_new_tokens, 0, "max new tokens must be between 1 and"),
    (validation.temperature, "1e-40", "the temperature must be 0 (greedy) or at least 0.01, got 1e-40"),
    (validation.temperature, -0.5, "the temperature must be 0 (greedy) or at least 0.01, got -0.5"),
    (validation.temperature, "inf", "the temperature must be a finite number"),
    (validation.top_p, 0, "top-p must lie in (0, 1], got 0"),
    (validation.top_p, 1.5, "top-p must lie in (0, 1], got 1.5"),
])
def test_a_value_out_of_range_is_refused_with_its_name(check, value, message):
    with pytest.raises(ValueError) as refused:
        check(value)
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("check, value, expected", [
    (validation.seed, "4294967295", 4294967295), (validation.seed, 7.0, 7), (validation.max_new_tokens, "40", 40),
    (validation.temperature, 0, 0.0), (validation.temperature, "0.01", 0.01), (validation.top_p, 1, 1.0),
])
def test_the_edges_of_each_range_are_accepted(check, value, expected):
    assert check(value) == expected


def test_sampling_in_python_takes_the_same_checks():
    with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or at least 0.01"):
        Sampling(temperature=1e-40)
    with pytest.raises(ValueError, match="max new tokens must be between 1 and"):
        Sampling(max_new_tokens=10**9)
    assert Sampling(max_new_tokens=8.0).max_new_tokens == 8 and isinstance(Sampling(max_new_tokens=8.0).max_new_tokens, int)


def test_fits_context_names_the_lengths():
    validation.fits_context(8152, 40, 8192)
    validation.fits_context(10**6, 40, None)  # a model that does not say how far it reads is not refused
    with pytest.raises(ValueError) as refused:
        validation.fits_context(27693, 40, 8192)
    assert str(refused.value) == ("the prompt is 27693 tokens long and max new tokens asks for 40 more, but the model reads "
                                  "at most 8192 positions: shorten the prompt or ask for fewer tokens")


@pytest.fixture
def generate_calls(monkeypatch):
    """Counts the model's generate calls (the real one still runs)."""
    calls = []
    real = GenerationMixin.generate

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", counted)
    return calls


def test_a_prompt_longer_than_the_context_is_refused_before_generating(default_ctx, generate_calls):
    assert default_ctx.max_positions == 8192  # SmolLM2-135M-Instruct
    ids = prompt_ids(default_ctx, "word " * 9000)
    with pytest.raises(ValueError, match=rf"the prompt is {len(ids)} tokens long .* at most 8192 positions"):
        complete(default_ctx, ids, 0, Sampling(max_new_tokens=4))
    with pytest.raises(ValueError, match="at most 8192 positions"):
        next(completions(default_ctx, ids, [], [0], Sampling(max_new_tokens=4)))
    with pytest.raises(ValueError, match="the seed must be between 0 and 4294967295"):
        complete(default_ctx, prompt_ids(default_ctx, "Hello"), 2**64, Sampling(max_new_tokens=4))
    assert generate_calls == []
    complete(default_ctx, prompt_ids(default_ctx, "Hello"), 2**32 - 1, Sampling(max_new_tokens=2))  # the largest seed samples
    assert generate_calls == [1]
