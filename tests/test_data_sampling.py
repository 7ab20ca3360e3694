"""Temporal samplers: indices for known video lengths, train and test mode, short videos."""

import numpy as np
import pytest
import torch

from lightning_tsf.data.sampling import (
    centred_indices,
    dense_indices,
    sample_indices,
    segment_indices,
)


def official_dense(video_frames: int, num_frames: int, rate: int, fps: float, start: float):
    """PySlowFast / official TimeSformer ``decoder.get_start_end_idx`` + ``temporal_sampling``,
    written out: clip_size = rate * num_frames / TARGET_FPS(30) * fps; end = start + clip_size
    - 1; torch.linspace(start, end, num_frames) (float32), clamped to the video, ``.long()``."""
    clip_size = rate * num_frames / 30 * fps
    index = torch.linspace(start, start + clip_size - 1, num_frames)
    return torch.clamp(index, 0, video_frames - 1).long().tolist()


def official_test_start(video_frames: int, num_frames: int, rate: int, fps: float, k: int,
                        num_clips: int) -> float:  # fmt: skip
    delta = max(video_frames - rate * num_frames / 30 * fps, 0)
    return delta * k / num_clips


def test_dense_test_clip_as_the_issue_states():
    """8x32 at 30 fps, 300 frames: the single test clip starts at frame 0 and spans 256."""
    idx = dense_indices(300, 8, 32, train=False, fps=30)
    assert idx.tolist() == [0, 36, 72, 109, 145, 182, 218, 255]


@pytest.mark.parametrize("fps", [25, 30, 60])
@pytest.mark.parametrize("frames, rate", [(8, 32), (16, 16), (96, 4)])
@pytest.mark.parametrize("length", [20, 150, 300, 900])
def test_dense_test_views_match_the_official_formulas(fps, frames, rate, length):
    for k, views in [(0, 1), (0, 3), (1, 3), (2, 3)]:
        start = official_test_start(length, frames, rate, fps, k, views)
        expected = official_dense(length, frames, rate, fps, start)
        got = dense_indices(length, frames, rate, train=False, view=k, num_views=views, fps=fps)
        assert got.tolist() == expected, (fps, frames, rate, length, k, views)


@pytest.mark.parametrize("fps", [25, 30, 60])
def test_dense_span_follows_the_frame_rate(fps):
    """The span is 256 source frames at 30 fps, 512 at 60 and 213.3 at 25 (8x32)."""
    idx = dense_indices(2000, 8, 32, train=False, fps=fps)
    assert idx[0] == 0 and idx[-1] == int(np.float32(256 * fps / 30 - 1))


def test_dense_train_start_uniform_in_delta():
    """Training: start ~ uniform(0, delta), the same linspace after it."""
    rng, ref = np.random.default_rng(0), np.random.default_rng(0)
    starts = []
    for _ in range(200):
        idx = dense_indices(400, 8, 32, train=True, fps=30, rng=rng)
        start = ref.uniform(0, 400 - 256)
        assert idx.tolist() == official_dense(400, 8, 32, 30, start)
        starts.append(idx[0])
    assert min(starts) <= 5 and max(starts) >= 139  # delta = 144


def test_dense_short_video_repeats_the_last_frame():
    """Shorter than the span: start 0 and the clamped linspace (the official behaviour)."""
    assert dense_indices(100, 8, 32, train=False, fps=30).tolist() == official_dense(
        100, 8, 32, 30, 0.0
    )
    assert dense_indices(5, 8, 32, train=True, fps=30).tolist() == [0, 4, 4, 4, 4, 4, 4, 4]
    np.testing.assert_array_equal(dense_indices(1, 8, 32, train=False), np.zeros(8))


def test_centred_option_keeps_the_exact_stride():
    # span 225 of 300 frames: delta 75; one view is centred, three at 1/6, 3/6, 5/6 of delta.
    np.testing.assert_array_equal(centred_indices(300, 8, 32, train=False), 37 + 32 * np.arange(8))
    starts = [centred_indices(300, 8, 32, train=False, view=v, num_views=3)[0] for v in range(3)]
    assert starts == [12, 37, 62]
    idx = centred_indices(100, 8, 32, train=False)  # short: stride (100 - 1) // 7 = 14
    assert np.all(np.diff(idx) == 14)


def official_ssv2(video_frames: int, num_frames: int) -> list[int]:
    """Official ssv2.py test indices: seg_size = (frames - 1) / num_frames; segment i from
    round(seg_size * i) to round(seg_size * (i + 1)); the middle ``(start + end) // 2``."""
    seg = float(video_frames - 1) / num_frames
    out = []
    for i in range(num_frames):
        start, end = int(np.round(seg * i)), int(np.round(seg * (i + 1)))
        out.append((start + end) // 2)
    return out


@pytest.mark.parametrize("length", [3, 17, 33, 48, 101])
def test_segment_test_matches_official(length):
    assert segment_indices(length, 8, train=False).tolist() == official_ssv2(length, 8)


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
    # K test views per segment: the centres of K equal parts of each segment (K = 1: the
    # official middle, (start + end) // 2): start + (end - start) * (2v + 1) // (2K); segment 0
    # of 33 frames in 8 spans [0, 4], so views 0 and 1 take 0 + 4 * 1 // 4 and 0 + 4 * 3 // 4
    views = [segment_indices(33, 8, train=False, view=v, num_views=2) for v in range(2)]
    starts, ends = np.round(4 * np.arange(8)), np.round(4 * np.arange(1, 9))
    for v in range(2):
        np.testing.assert_array_equal(views[v], starts + (ends - starts) * (2 * v + 1) // 4)
    assert [views[0][0], views[1][0]] == [1, 3]
    idx = segment_indices(3, 8, train=True, rng=np.random.default_rng(0))
    assert len(idx) == 8 and idx.min() >= 0 and idx.max() <= 2


def test_dispatch():
    np.testing.assert_array_equal(
        sample_indices("segment", 33, 8, 32, train=False), segment_indices(33, 8, train=False)
    )
    with pytest.raises(ValueError):
        sample_indices("nope", 33, 8, 32, train=False)
