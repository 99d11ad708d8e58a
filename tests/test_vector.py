"""SteeringVector: shape checks and arithmetic (``love - hate``, ``0.5 * dogs``), without a model."""
from __future__ import annotations

import math

import pytest
import torch

from extensions.steering.engine import SteeringVector

D = 8


def vec(seed: int, layers=(3,), rows: int = 1, norms: dict | None = None) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(rows, D, generator=generator) for l in layers}, dict(norms or {}))


def same(a: SteeringVector, b: SteeringVector) -> bool:
    return a.layers == b.layers and all(torch.equal(a.directions[l], b.directions[l]) for l in a.layers)


# -- construction ------------------------------------------------------------------------------


def test_one_dimensional_direction_becomes_one_row():
    v = SteeringVector({5: torch.ones(D)})
    assert v.directions[5].shape == (1, D)
    assert v.layers == [5] and v.hidden_size == D and v.positions == 1 and not v.per_position


def test_per_position_rows_are_kept():
    v = SteeringVector({2: torch.ones(4, D)})
    assert v.positions == 4 and v.per_position


def test_stored_as_float32_on_cpu_sorted_by_layer():
    v = SteeringVector({"7": torch.ones(D, dtype=torch.float16), 2: torch.ones(D, dtype=torch.bfloat16)})
    assert v.layers == [2, 7]
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in v.directions.values())


def test_does_not_keep_the_graph():
    source = torch.ones(D, requires_grad=True)
    v = SteeringVector({0: source * 2})
    assert not v.directions[0].requires_grad


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_rejected(bad):
    t = torch.ones(D)
    t[3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        SteeringVector({1: t})


def test_arithmetic_that_produces_nan_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        vec(0) * float("nan")


def test_empty_and_misshapen_rejected():
    with pytest.raises(ValueError, match="at least one layer"):
        SteeringVector({})
    with pytest.raises(ValueError, match="expected shape"):
        SteeringVector({0: torch.ones(2, 3, D)})
    with pytest.raises(ValueError, match="expected shape"):
        SteeringVector({0: torch.ones(0, D)})


def test_layers_must_share_hidden_size():
    with pytest.raises(ValueError, match="hidden size"):
        SteeringVector({0: torch.ones(D), 1: torch.ones(D + 1)})


# -- arithmetic --------------------------------------------------------------------------------


def test_love_minus_hate():
    love, hate = vec(1, norms={3: 10.0}), vec(2, norms={3: 12.0})
    diff = love - hate
    assert torch.equal(diff.directions[3], love.directions[3] - hate.directions[3])
    assert diff.residual_norms == {3: 10.0}  # the left operand's norms win on shared layers
    assert same(love - love, SteeringVector({3: torch.zeros(1, D)}))


def test_addition():
    a, b = vec(1), vec(2)
    assert torch.equal((a + b).directions[3], a.directions[3] + b.directions[3])
    assert same(a + b, b + a)


def test_scaling_both_sides():
    dogs = vec(4)
    assert torch.equal((0.5 * dogs).directions[3], dogs.directions[3] * 0.5)
    assert same(0.5 * dogs, dogs * 0.5)
    assert same(2 * dogs, dogs + dogs)


def test_negation_and_division():
    a = vec(5, norms={3: 4.0})
    assert torch.equal((-a).directions[3], -a.directions[3])
    assert torch.allclose((a / 2).directions[3], a.directions[3] / 2)
    assert same(a / 2, 0.5 * a)
    assert (-a).residual_norms == {3: 4.0} and (a / 2).residual_norms == {3: 4.0}


def test_arithmetic_leaves_operands_alone():
    a, b = vec(1), vec(2, layers=(3, 4))
    before_a, before_b = {l: t.clone() for l, t in a.directions.items()}, {l: t.clone() for l, t in b.directions.items()}
    _ = a + b, a - b, -a, 3 * a, a / 4, a.normalized(), b - a
    assert all(torch.equal(a.directions[l], t) for l, t in before_a.items())
    assert all(torch.equal(b.directions[l], t) for l, t in before_b.items())
    assert a.layers == [3]


def test_non_numbers_are_not_scalars():
    a = vec(1)
    with pytest.raises(TypeError):
        a * "2"
    with pytest.raises(TypeError):
        a / a
    with pytest.raises(TypeError):
        a + 1


def test_different_layers_combine_as_a_union():
    a, b = vec(1, layers=(2,), norms={2: 1.0}), vec(2, layers=(5,), norms={5: 3.0})
    total = a + b
    assert total.layers == [2, 5]
    assert torch.equal(total.directions[2], a.directions[2])
    assert torch.equal(total.directions[5], b.directions[5])
    assert total.residual_norms == {2: 1.0, 5: 3.0}
    assert torch.equal((a - b).directions[5], -b.directions[5])


def test_partly_shared_layers():
    a, b = vec(1, layers=(2, 3)), vec(2, layers=(3, 4))
    total = a + b
    assert total.layers == [2, 3, 4]
    assert torch.equal(total.directions[3], a.directions[3] + b.directions[3])


def test_per_position_plus_direction_raises():
    per_position, direction = vec(1, rows=3), vec(2)
    with pytest.raises(ValueError, match="per-position"):
        per_position + direction
    with pytest.raises(ValueError, match="per-position"):
        direction - per_position


def test_per_position_plus_direction_at_other_layers_is_fine():
    total = vec(1, layers=(1,), rows=3) + vec(2, layers=(2,))
    assert total.directions[1].shape == (3, D) and total.directions[2].shape == (1, D)


def test_per_position_vectors_of_different_lengths_pad_with_zeros():
    short, long = vec(1, rows=2), vec(2, rows=4)
    total = short + long
    assert total.directions[3].shape == (4, D)
    assert torch.equal(total.directions[3][:2], short.directions[3] + long.directions[3][:2])
    assert torch.equal(total.directions[3][2:], long.directions[3][2:])


def test_mismatched_hidden_sizes_raise():
    a = SteeringVector({3: torch.ones(D)})
    b = SteeringVector({4: torch.ones(D * 2)})
    with pytest.raises(ValueError, match="hidden sizes differ"):
        a + b
    with pytest.raises(ValueError, match="hidden sizes differ"):
        a - b


# -- norms and similarity ----------------------------------------------------------------------


def test_normalized_gives_unit_rows():
    v = vec(1, layers=(1, 2), rows=3) * 7.0
    unit = v.normalized()
    for layer, t in unit.directions.items():
        assert torch.allclose(t.norm(dim=-1), torch.ones(3))
        # each row keeps its direction
        cos = torch.nn.functional.cosine_similarity(t, v.directions[layer], dim=-1)
        assert torch.allclose(cos, torch.ones(3))
    direction = vec(2) * 0.01
    assert direction.normalized().norm(3) == pytest.approx(1.0)
    assert direction.normalized().cosine_similarity(direction) == pytest.approx({3: 1.0})


def test_normalized_zero_vector_stays_finite():
    zero = SteeringVector({0: torch.zeros(D)}).normalized()
    assert torch.equal(zero.directions[0], torch.zeros(1, D))


def test_norm_and_relative_norm():
    v = SteeringVector({0: torch.tensor([[3.0, 4.0], [0.0, 1.0]])}, {0: 10.0})
    assert v.norm(0) == pytest.approx(5.0)  # the largest row
    assert v.relative_norm(0) == pytest.approx(0.5)
    assert SteeringVector({0: torch.ones(2)}).relative_norm(0) is None


def test_cosine_similarity():
    a = vec(1, layers=(1, 2, 3))
    b = SteeringVector({2: -3 * a.directions[2], 3: vec(9).directions[3], 7: torch.ones(D)})
    sims = a.cosine_similarity(b)
    assert set(sims) == {2, 3}  # shared layers only
    assert sims[2] == pytest.approx(-1.0)
    assert -1.0 <= sims[3] <= 1.0
    assert a.cosine_similarity(a) == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0})
    assert a.cosine_similarity(b) == pytest.approx(b.cosine_similarity(a))


def test_cosine_similarity_of_orthogonal_and_padded_rows():
    e1, e2 = torch.eye(D)[0], torch.eye(D)[1]
    assert SteeringVector({0: e1}).cosine_similarity(SteeringVector({0: e2})) == {0: 0.0}
    # per-position rows are flattened, the shorter zero-padded: only the shared first row counts
    a = SteeringVector({0: torch.stack([e1, e2])})
    b = SteeringVector({0: e1})
    assert a.cosine_similarity(b)[0] == pytest.approx(1 / math.sqrt(2))


def test_mean_direction():
    v = SteeringVector({0: torch.tensor([[1.0, 2.0], [3.0, 6.0]])}, {0: 2.0})
    mean = v.mean_direction()
    assert torch.equal(mean.directions[0], torch.tensor([[2.0, 4.0]]))
    assert not mean.per_position and mean.residual_norms == {0: 2.0}


def test_repr_shows_layers_and_shapes():
    assert repr(vec(1, layers=(2, 5), rows=3)) == "SteeringVector({2: (3, 8), 5: (3, 8)})"
