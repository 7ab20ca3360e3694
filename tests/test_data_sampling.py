"""Temporal samplers: indices for known video lengths, train and test mode, short videos."""

import numpy as np
import pytest

from lightning_tsf.data.sampling import dense_indices, sample_indices, segment_indices


def test_dense_train_random_start_within_bounds():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = dense_indices(300, 8, 32, train=True, rng=rng)
        assert np.all(np.diff(idx) == 32) and idx[0] >= 0 and idx[-1] <= 299
        starts.add(int(idx[0]))
    assert min(starts) == 0 or len(starts) > 20  # 300 - 225 + 1 = 76 possible starts
    assert max(starts) <= 300 - 225


def test_dense_test_views_evenly_spaced():
    # span 225 of 300 frames: delta 75; one view is centred, three at 1/6, 3/6, 5/6 of delta.
    assert dense_indices(300, 8, 32, train=False)[0] == 37
    starts = [dense_indices(300, 8, 32, train=False, view=v, num_views=3)[0] for v in range(3)]
    assert starts == [12, 37, 62]
    np.testing.assert_array_equal(dense_indices(300, 8, 32, train=False), 37 + 32 * np.arange(8))


def test_dense_short_video_shrinks_stride_then_repeats_last():
    # 100 frames < 225: stride becomes (100 - 1) // 7 = 14.
    idx = dense_indices(100, 8, 32, train=False)
    assert np.all(np.diff(idx) == 14) and idx[-1] <= 99
    np.testing.assert_array_equal(dense_indices(5, 8, 32, train=True), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(dense_indices(1, 8, 32, train=False), np.zeros(8))


def test_segment_test_centres_official_bounds():
    # 33 frames, 8 segments of (33 - 1) / 8 = 4: bounds [0,4], [4,8], ...; centres 2, 6, ...
    np.testing.assert_array_equal(segment_indices(33, 8, train=False), 2 + 4 * np.arange(8))


def test_segment_train_random_within_segments():
    rng = np.random.default_rng(0)
    seen = np.zeros((8, 33), bool)
    for _ in range(300):
        idx = segment_indices(33, 8, train=True, rng=rng)
        assert np.all(idx >= 4 * np.arange(8)) and np.all(idx <= 4 * np.arange(8) + 4)
        seen[np.arange(8), idx] = True
    assert seen.sum(1).min() == 5  # every position of every segment is drawn


def test_segment_views_and_short_video():
    views = [segment_indices(33, 8, train=False, view=v, num_views=2)[0] for v in range(2)]
    assert views == [1, 3]
    idx = segment_indices(3, 8, train=True, rng=np.random.default_rng(0))
    assert len(idx) == 8 and idx.min() >= 0 and idx.max() <= 2


def test_dispatch():
    np.testing.assert_array_equal(
        sample_indices("segment", 33, 8, 32, train=False), segment_indices(33, 8, train=False)
    )
    with pytest.raises(ValueError):
        sample_indices("nope", 33, 8, 32, train=False)
