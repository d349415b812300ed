"""What the second stage's training varies beyond our generator: crop randomisation
(``detector.discs.randomize``) and misplaced anchors (``samples.shift_anchor``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.discs.randomize import band_limited_noise, randomize
from detector.discs.samples import Variety, shift_anchor


def test_crop_randomisation_simulates_coarser_acquisitions_on_request() -> None:
    crops = torch.rand(200, 3, 48, 48, generator=torch.Generator().manual_seed(1)) + 1.0

    def fine_detail(coarsest: float) -> float:
        x = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=coarsest)
        return float((x[..., 1:] - x[..., :-1]).abs().mean() / x.abs().mean())

    default = randomize(crops.clone(), torch.Generator().manual_seed(7))
    assert torch.equal(default, randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=2.5))
    # same draws, only the coarsest resolution differs: less fine detail the coarser it may go
    assert fine_detail(4.0) < fine_detail(2.5) < fine_detail(1.0)
    assert torch.equal(default, randomize(crops.clone(), torch.Generator().manual_seed(7), acquired_noise=False))
    grouped = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=4.0, acquired_noise=True)
    assert grouped.shape == crops.shape and bool(grouped.isfinite().all())


def test_acquired_noise_is_white_at_the_acquired_pixel_not_at_the_crops() -> None:
    grain = torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1)
    z = band_limited_noise(torch.Size([3, 1, 96, 96]), grain, torch.Generator().manual_seed(3))
    sd = z.flatten(1).std(dim=1)
    torch.testing.assert_close(sd, torch.ones(3))  # the same noise power, whatever the grain
    neighbours = (z[..., 1:] * z[..., :-1]).flatten(1).mean(dim=1) / sd**2
    assert abs(float(neighbours[0])) < 0.05  # white at 0.3 mm: neighbours independent
    assert 0.5 < float(neighbours[1]) < float(neighbours[2])  # coarser scans: smoother grain


def test_anchor_shifts_stay_within_their_millimetres_on_anisotropic_pixels() -> None:
    rng = np.random.default_rng(4)
    moved = np.array([shift_anchor(rng, (100.0, 50.0), 3.0, (0.5, 0.25)) for _ in range(2000)])
    rows_mm, cols_mm = (moved[:, 0] - 100.0) * 0.5, (moved[:, 1] - 50.0) * 0.25
    assert np.abs(rows_mm).max() <= 3.0 and np.abs(cols_mm).max() <= 1.5
    assert np.abs(rows_mm).max() > 2.8 and np.abs(cols_mm).max() > 1.4  # the whole range is used
    with pytest.raises(ValueError, match="anchor_shift_mm"):
        Variety(anchor_shift_mm=-1.0)
