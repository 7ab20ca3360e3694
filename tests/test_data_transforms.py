"""Spatial transforms: shapes, crop positions, flip, normalisation, scale jitter."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_tsf.data.clips import ViewSpec
from lightning_tsf.data.transforms import (
    TrainTransform,
    normalize_video,
    resize_short_side,
    spatial_crop,
    spatial_crop_offsets,
)


def coord_frames(t: int, h: int, w: int) -> np.ndarray:
    """Frames whose R channel is the column and G the row, so crops reveal their position."""
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([x, y, np.full_like(x, 7)], -1).astype(np.uint8)
    return np.repeat(frame[None], t, 0)


def test_normalize_video_matches_the_formula():
    """On-device normalisation equals ``(x / 255 - mean) / std`` per channel, written out here
    (the float transform the workers applied before clips stayed uint8)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 4, 5, 6), dtype=torch.uint8, generator=g)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = normalize_video(x, mean, std)
    ref = torch.stack([(x[:, c].double() / 255 - mean[c]) / std[c] for c in range(3)], 1)
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-6, rtol=0)
    full = normalize_video(torch.full((3, 2, 4, 5), 255, dtype=torch.uint8), (0.45,) * 3,
                           (0.225,) * 3)  # fmt: skip
    torch.testing.assert_close(full, torch.full_like(full, (1 - 0.45) / 0.225))


@pytest.mark.parametrize(
    "h, w, expected",
    [(48, 64, [(0, 0), (0, 8), (0, 16)]), (64, 48, [(0, 0), (8, 0), (16, 0)])],
)
def test_three_crops_left_centre_right_or_top_centre_bottom(h, w, expected):
    assert [spatial_crop_offsets(h, w, 48, i, 3) for i in range(3)] == expected
    assert spatial_crop_offsets(h, w, 48, 0, 1) == expected[1]


def test_eval_crops_exact_positions():
    frames = coord_frames(4, 32, 40)  # short side already 32 = crop: no resize
    resized = resize_short_side(frames, 32)
    lefts = []
    for i in range(3):
        out = spatial_crop(resized, 32, i, 3)  # (T, C, H, W) uint8
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
        lefts.append(int(out[0, 0, 0, 0]))
        assert int(out[0, 1, 0, 0]) == 0 and int(out[0, 2, 5, 5]) == 7
    assert lefts == [0, 4, 8]


def test_eval_resizes_short_side_to_crop():
    frames = coord_frames(3, 64, 96)
    out = spatial_crop(resize_short_side(frames, 32), 32, 0, 1)
    assert out.shape == (3, 3, 32, 32)
    # Equivalent to resizing 64x96 -> 32x48 and taking the centre columns 8..39.
    ref = F.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(32, 48), mode="bilinear"
    )[:, :, :, 8:40]
    assert (out.float() - ref).abs().max() <= 1.0


def test_train_transform_shape_and_scale_range():
    frames = coord_frames(8, 64, 96)
    transform = TrainTransform(32, scale=(32, 48), horizontal_flip=False)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = transform(frames, rng)
        assert out.shape == (3, 8, 32, 32) and out.dtype == torch.uint8 and out.is_contiguous()
        # Column step per output pixel = 64 / short side, i.e. in [64/48, 64/32] = [1.33, 2].
        step = (float(out[0, 0, 0, -1]) - float(out[0, 0, 0, 0])) / 31
        assert 1.2 <= step <= 2.1
        assert torch.equal(out[:, 0], out[:, -1])  # identical frames stay identical


def test_train_transform_flip():
    frames = coord_frames(2, 32, 32)
    rng = np.random.default_rng(1)
    flipped = [
        TrainTransform(32, (32, 32), True)(frames, rng)[0, 0, 0, 0] > 0
        for _ in range(40)
    ]
    assert 5 < sum(flipped) < 35  # p = 0.5
    no_flip = TrainTransform(32, (32, 32), False)
    assert all(no_flip(frames, rng)[0, 0, 0, 0] == 0 for _ in range(20))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="num_spatial_crops"):
        ViewSpec(crop_size=32, num_spatial_crops=2)
    with pytest.raises(ValueError, match="uint8"):
        resize_short_side(np.zeros((2, 32, 32, 3), np.float32), 32)


def official_uniform_crop(height: int, width: int, size: int, spatial_idx: int):
    """The official ``transform.uniform_crop`` offsets, written out (spatial_idx 0/1/2)."""
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y_offset = 0
        elif spatial_idx == 2:
            y_offset = height - size
    else:
        if spatial_idx == 0:
            x_offset = 0
        elif spatial_idx == 2:
            x_offset = width - size
    return y_offset, x_offset


@pytest.mark.parametrize("h, w", [(256, 341), (341, 256), (227, 227), (224, 398), (256, 455)])
def test_crop_offsets_match_the_official_ones(h, w):
    for i in range(3):
        assert spatial_crop_offsets(h, w, 224, i, 3) == official_uniform_crop(h, w, 224, i)
    assert spatial_crop_offsets(h, w, 224, 0, 1) == official_uniform_crop(h, w, 224, 1)


@pytest.mark.parametrize("inverse", [False, True])
def test_scale_jitter_draws(inverse):
    """SSv2: short side = round(1 / uniform(1/320, 1/256)) as the official code (written out
    here); Kinetics: an integer uniform in 256..320."""
    transform = TrainTransform(224, (256, 320), inverse_uniform=inverse)
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    sizes = [transform.short_side(rng) for _ in range(2000)]
    if inverse:
        expected = [int(round(1.0 / ref.uniform(1 / 320, 1 / 256))) for _ in range(2000)]
    else:
        expected = [int(ref.integers(256, 321)) for _ in range(2000)]
    assert sizes == expected and min(sizes) == 256 and max(sizes) == 320
    # inverse-uniform puts more mass on small sizes (mean 286.1 against 288)
    assert (np.mean(sizes) < 287) == inverse
