"""The merge methods on small crafted tensors, against results computed by hand (the same mergekit kernels and
parameters that the whole-model merge uses)."""

from __future__ import annotations

import pytest
import torch

from posttrain.merging import merge_tensors, mergekit_config

BASE = torch.tensor([1.0, -1.0, 0.5, 2.0, 0.0, 1.0])
# Task vectors with distinct magnitudes, so "top half by magnitude" is unambiguous (k = int(0.5 * 6) = 3).
D1 = torch.tensor([4.0, -1.0, 3.0, -0.5, 0.2, -6.0])  # keeps 4, 3, -6
D2 = torch.tensor([-2.0, 5.0, 1.0, 0.1, -0.3, -0.9])  # keeps -2, 5, 1
D3 = torch.tensor([-3.0, -2.0, 0.4, 0.7, 0.6, 2.5])  # keeps -3, -2, 2.5


def ties(weights: list[float], density: float = 0.5, scale: float = 1.0) -> torch.Tensor:
    return merge_tensors("ties", BASE, [BASE + D1, BASE + D2, BASE + D3], weights, density=density, scale=scale)


def test_ties_trims_elects_sign_and_takes_disjoint_mean() -> None:
    # Trimmed: d1 = [4, 0, 3, 0, 0, -6], d2 = [-2, 5, 1, 0, 0, 0], d3 = [-3, -2, 0, 0, 0, 2.5]
    # element 0: mass 4-2-3 = -1 -> "-": mean(-2, -3) = -2.5
    # element 1: mass 5-2 = 3 -> "+": 5 (the -2 disagrees and is dropped)
    # element 2: mass 3+1 = 4 -> "+": mean(3, 1) = 2
    # elements 3, 4: every value was trimmed -> 0
    # element 5: mass -6+2.5 = -3.5 -> "-": -6
    expected_delta = torch.tensor([-2.5, 5.0, 2.0, 0.0, 0.0, -6.0])
    torch.testing.assert_close(ties([1, 1, 1]), BASE + expected_delta)
    torch.testing.assert_close(ties([1, 1, 1], scale=0.5), BASE + 0.5 * expected_delta)


def test_ties_sign_election_is_by_weighted_mass_not_by_count() -> None:
    # Weights 1, 1, 3: weighted trimmed d3 = [-9, -6, 0, 0, 0, 7.5].
    # element 0: 4-2-9 < 0 -> "-": (1*-2 + 3*-3) / (1+3) = -2.75
    # element 1: 5-6 < 0 -> "-" although one "+" and one "-" voted: (3*-2)/3 = -2
    # element 2: 3+1 > 0 -> "+": (3+1)/2 = 2
    # element 5: -6+7.5 > 0 -> "+" (one vote each way; mass decides): 2.5
    expected_delta = torch.tensor([-2.75, -2.0, 2.0, 0.0, 0.0, 2.5])
    torch.testing.assert_close(ties([1, 1, 3]), BASE + expected_delta)


def test_ties_with_density_one_keeps_everything_then_elects() -> None:
    # Nothing trimmed; element 3: 0.1+0.7-0.5 > 0 -> mean(0.1, 0.7) = 0.4; element 4: 0.2-0.3+0.6 > 0 -> 0.4
    # element 0: mass -1 -> mean(-2, -3); element 1: mass 2 -> 5; element 2: mean(3, 1, 0.4); element 5: mass -4.4 ->
    # mean(-6, -0.9)
    expected_delta = torch.tensor([-2.5, 5.0, 4.4 / 3, 0.4, 0.4, -3.45])
    torch.testing.assert_close(ties([1, 1, 1], density=1.0), BASE + expected_delta)


def test_ties_keeps_at_least_one_element_and_trims_per_tensor() -> None:
    # density 0.1 of 6 elements rounds down to 0; one element (the largest) is kept, as in mergekit
    out = merge_tensors("ties", BASE, [BASE + D1], [1.0], density=0.1, scale=1.0)
    torch.testing.assert_close(out, BASE + torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -6.0]))


def test_linear_is_the_weighted_average_of_the_models() -> None:
    a, b = BASE + D1, BASE + D2
    out = merge_tensors("linear", BASE, [a, b], [1.0, 3.0])
    torch.testing.assert_close(out, (a + 3 * b) / 4)
    # weights are normalized by their sum: scaling them all changes nothing
    torch.testing.assert_close(merge_tensors("linear", BASE, [a, b], [0.5, 1.5]), out)


def test_task_arithmetic_adds_weighted_task_vectors_times_scale() -> None:
    out = merge_tensors("task_arithmetic", BASE, [BASE + D1, BASE + D2], [1.0, -0.5], scale=0.5)
    torch.testing.assert_close(out, BASE + 0.5 * (D1 - 0.5 * D2))
    # one model, weight 1, scale 1: that model back
    torch.testing.assert_close(merge_tensors("task_arithmetic", BASE, [BASE + D3], [1.0], scale=1.0), BASE + D3)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties"])
def test_mergekit_config_states_every_parameter(method: str) -> None:
    from mergekit.config import MergeConfiguration

    config = mergekit_config(method, "base", ["a", "b"], [1.0, 2.0], 0.3 if method == "ties" else None,
                             None if method == "linear" else 0.7, "bfloat16")
    parsed = MergeConfiguration.model_validate(config)
    assert parsed.merge_method == method and parsed.out_dtype == "bfloat16" and parsed.dtype == "float32"
    assert [m.parameters["weight"] for m in parsed.models] == [1.0, 2.0]
    assert (parsed.base_model is None) == (method == "linear")
    assert parsed.parameters["normalize"] is (method != "task_arithmetic")
    if method != "linear":
        assert parsed.parameters["lambda"] == 0.7
    if method == "ties":
        assert [m.parameters["density"] for m in parsed.models] == [0.3, 0.3]
