"""The heatmap figure: frames upscaled to >= 112 px, titles and frame indices drawn, pixels in
place; the source frame numbers of a clip checked against the decoded frames."""

from __future__ import annotations

import numpy as np
import torch
from conftest import frame_ids

from lightning_tsf.data.clips import ViewSpec, clip_frame_indices, decode_clip
from lightning_tsf.viz.heatmap import clip_title, heatmap_figure, overlay, upscale
from lightning_tsf.viz.plots import render_figure


def _clips(b: int = 2, t: int = 3, size: int = 16) -> tuple[np.ndarray, torch.Tensor]:
    """Frames of distinct flat colours per (clip, frame), maps peaking at patch (t, 1, 2)."""
    frames = np.zeros((b, t, size, size, 3), np.uint8)
    for i in range(b):
        for j in range(t):
            frames[i, j] = (40 + 60 * i, 30 + 50 * j, 200)
    maps = torch.zeros(b, t, 4, 4)
    maps[:, :, 1, 2] = 1.0
    return frames, maps


def _panel(image: np.ndarray, ax) -> np.ndarray:
    """The pixels of axes ``ax`` in the rendered ``image`` (display origin is bottom-left)."""
    x0, y0, x1, y1 = np.round(ax.get_window_extent().extents).astype(int)
    return image[image.shape[0] - y1 : image.shape[0] - y0, x0:x1]


def test_figure_upscales_frames_and_draws_titles_and_indices():
    frames, maps = _clips()
    titles = ["a.mp4 | true: run | predicted: walk (60%)", "b.mp4 | predicted: run (51%)"]
    fig = heatmap_figure(frames, maps, titles, [[0, 4, 8], None])
    texts = [t.get_text() for t in fig.texts]
    assert titles[0] in texts and titles[1] in texts
    assert [s for s in texts if s.startswith(("frame ", "t="))] == [
        "frame 0", "frame 4", "frame 8", "t=0", "t=1", "t=2"
    ]  # fmt: skip
    image = render_figure(fig, None, tight=False)
    axes = fig.axes
    assert len(axes) == 2 * 2 * 3  # clips x (frame, overlay) x frames
    for ax in axes:
        w, h = ax.get_window_extent().size
        assert round(w) == round(h) == 112  # 16 px x 7 (the smallest factor reaching 112)
    # Axes order per clip: frame j, overlay j, ... The frame panels hold the frame's colour
    # everywhere (nearest-neighbour upscaling); the overlay peaks (red) over patch (1, 2):
    # rows 28..55, columns 56..83 of the 112 px panel.
    for i in range(2):
        for j in range(3):
            top, bottom = _panel(image, axes[i * 6 + 2 * j]), _panel(image, axes[i * 6 + 2 * j + 1])
            assert top.shape == (112, 112, 3)
            inner = top[2:-2, 2:-2].reshape(-1, 3)
            assert (np.abs(inner.astype(int) - frames[i, j, 0, 0]).max(0) <= 1).all()
            red = bottom[..., 0].astype(int) - bottom[..., 2].astype(int)
            y, x = np.unravel_index(int(red.argmax()), red.shape)
            assert 28 <= y < 56 and 56 <= x < 84


def test_title_is_drawn_in_pixels():
    frames, maps = _clips(b=1)
    with_title = render_figure(heatmap_figure(frames, maps, ["TITLE"]), None, tight=False)
    without = render_figure(heatmap_figure(frames, maps, None), None, tight=False)
    band = slice(10, 36)  # the title band: padding 10 px, 26 px high
    assert with_title.shape == without.shape
    assert (without[band] == 255).all()  # blank without a title
    assert (with_title[band] < 128).any()  # dark text pixels with one


def test_upscale_and_overlay_sizes():
    frames, maps = _clips(b=1, size=32)
    big = upscale(frames[0])
    assert big.shape == (3, 128, 128, 3)  # 32 px x 4: the smallest factor reaching 112
    np.testing.assert_array_equal(big[:, ::4, ::4], frames[0])
    assert overlay(big, maps[0]).shape == big.shape
    assert upscale(np.zeros((2, 200, 150, 3), np.uint8)).shape == (2, 200, 150, 3)  # large: as is


def test_clip_title():
    names = ["walk", "run", "jump"]
    assert clip_title("v.mp4", 1, 2, 0.456, names) == "v.mp4 | true: run | predicted: jump (46%)"
    assert clip_title("v.mp4", -1, 0, None, names) == "v.mp4 | predicted: walk"
    assert clip_title(None, 4, 3, 0.5) == "true: 4 | predicted: 3 (50%)"


def test_clip_frame_indices_match_the_decoded_frames(make_video):
    # 30 frames, centred sampler, 4 frames 4 apart, temporal view 2 of 3: the span is 13
    # frames, the slack 17, the start 17·5 // 6 = 14 -> frames 14, 18, 22, 26.
    path = str(make_video("v.mp4", num_frames=30))
    spec = ViewSpec(sampler="centred", num_frames=4, sampling_rate=4, crop_size=32,
                    num_temporal_views=3, backend="pyav")  # fmt: skip
    assert clip_frame_indices(path, spec, 2) == [14, 18, 22, 26]
    assert frame_ids(decode_clip(path, spec, 2)) == [14, 18, 22, 26]
