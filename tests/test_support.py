"""MuZero's categorical support: scalar → two-hot → scalar is exact, on the support points and between them."""

from __future__ import annotations

import torch

from zerokv.model.support import h_inverse, h_transform, scalar_to_support, support_to_scalar

S = 5


def test_support_points_round_trip_exactly():
    points = torch.arange(-S, S + 1, dtype=torch.float64)  # the support, in h-space
    x = h_inverse(points)  # the scalars that land on it
    torch.testing.assert_close(h_transform(x), points, rtol=0, atol=1e-12)
    two_hot = scalar_to_support(x, S)  # (2S+1, 2S+1): one-hot rows
    torch.testing.assert_close(two_hot, torch.eye(2 * S + 1, dtype=torch.float64), rtol=0, atol=1e-9)
    back = support_to_scalar(two_hot.log(), S)  # log of a one-hot: -inf off the point, softmax gives it back
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)


def test_between_points_the_two_hot_mean_is_the_transformed_scalar():
    y = torch.tensor([-4.75, -0.5, 0.0, 0.25, 3.6], dtype=torch.float64)
    x = h_inverse(y)
    two_hot = scalar_to_support(x, S)
    assert torch.allclose(two_hot.sum(-1), torch.ones(5, dtype=torch.float64))
    assert ((two_hot > 0).sum(-1) <= 2).all()  # at most two neighbouring bins
    support = torch.arange(-S, S + 1, dtype=torch.float64)
    torch.testing.assert_close((two_hot * support).sum(-1), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(support_to_scalar(two_hot.log(), S), x, rtol=1e-9, atol=1e-9)
    # 0.25 in h-space: 3/4 on bin 0, 1/4 on bin 1.
    torch.testing.assert_close(two_hot[3, S:S + 2], torch.tensor([0.75, 0.25], dtype=torch.float64), rtol=0,
                               atol=1e-12)


def test_scalars_beyond_the_support_are_clipped_to_its_ends():
    two_hot = scalar_to_support(h_inverse(torch.tensor([-50.0, 50.0], dtype=torch.float64)), S)
    assert two_hot[0, 0] == 1 and two_hot[1, -1] == 1
