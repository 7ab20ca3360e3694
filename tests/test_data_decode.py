"""Decoders: frames equal what was written (lossless 4:4:4, ±DECODE_TOLERANCE), broken files."""

import pickle

import numpy as np
import pytest
from conftest import BROKEN_KINDS, DECODE_TOLERANCE, frame_ids, video_frames, write_broken

from lightning_tsf.data.decode import VideoDecodeError, make_reader, scaled_size
from lightning_tsf.data.encode import write_video

BACKENDS = ("auto", "decord", "pyav")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_decoded_frames_equal_written(tmp_path, backend, suffix):
    frames = video_frames(40, 48, 64)
    path = write_video(tmp_path / f"v{suffix}", frames, fps=30)
    reader = make_reader(str(path), backend)
    assert len(reader) == 40
    indices = [0, 7, 7, 39, 3, 20]  # any order, repeats allowed
    out = reader.get_frames(indices)
    assert out.shape == (6, 48, 64, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frames[indices].astype(int)).max()
    assert diff <= DECODE_TOLERANCE
    assert frame_ids(out) == indices


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduced_size_decode(tmp_path, backend):
    path = write_video(tmp_path / "big.mp4", video_frames(10, 96, 128))
    out = make_reader(str(path), backend, short_side=48).get_frames([0, 9])
    assert out.shape == (2, 48, 64, 3)
    assert frame_ids(out) == [0, 9]
    # A source already small is not upscaled.
    assert make_reader(str(path), backend, short_side=200).get_frames([1]).shape == (1, 96, 128, 3)


def test_scaled_size_keeps_aspect_and_even():
    assert scaled_size(340, 256, 128) == (170, 128)
    assert scaled_size(256, 340, 128) == (128, 170)
    assert scaled_size(100, 80, 128) == (100, 80)


def test_reader_is_lazy_and_picklable(tmp_path):
    path = write_video(tmp_path / "v.mp4", video_frames(5, 32, 32))
    reader = make_reader(str(path), "decord")
    assert reader._vr is None  # nothing opened at construction
    reader.get_frames([0])
    clone = pickle.loads(pickle.dumps(reader))  # the open decoder is dropped
    assert clone._vr is None and frame_ids(clone.get_frames([4])) == [4]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_videos_raise_one_error_type(tmp_path, backend, kind):
    path = write_broken(tmp_path / "bad.mp4", kind)
    with pytest.raises(VideoDecodeError) as info:
        reader = make_reader(str(path), backend)
        reader.get_frames(range(len(reader)))
    assert info.value.path == str(path)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        make_reader("x.mp4", "nope")


@pytest.mark.parametrize("width", [48, 72])
def test_decord_width_bug_falls_back_to_pyav(tmp_path, width):
    """decord 0.6.0 fails to copy out frames of some widths; the reader still returns them."""
    frames = video_frames(6, 32, width)
    path = write_video(tmp_path / "narrow.mp4", frames)
    out = make_reader(str(path), "decord").get_frames([5, 1])
    assert np.abs(out.astype(int) - frames[[5, 1]].astype(int)).max() <= DECODE_TOLERANCE
