"""Attention rollout: hand-computed cases, an explicit-matrix reference, and rigged models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange

from lightning_tsf.models import BLOCKS, TimeSformer
from lightning_tsf.viz.heatmap import heatmap_grid, render_heatmaps, save_heatmap_grid
from lightning_tsf.viz.rollout import attention_rollout, residual_normalise, rollout_from_maps


def _one_hot_attn(batch: int, heads: int, length: int, target: int) -> torch.Tensor:
    """Every query attends only to key ``target``."""
    a = torch.zeros(batch, heads, length, length)
    a[..., target] = 1.0
    return a


def _uniform_attn(batch: int, heads: int, length: int) -> torch.Tensor:
    return torch.full((batch, heads, length, length), 1.0 / length)


def test_joint_one_block_by_hand():
    # 1 block, every token attends to patch token k: Â = (A + I) / 2, cls row = ½ e0 + ½ e_k.
    t, h, w = 2, 2, 2
    length = 1 + t * h * w
    k = 1 + 5  # token 5 in (h w t) order: n = 2 (row 1, col 0), t = 1
    maps = [{"attn": _one_hot_attn(1, 3, length, k)}]
    r = rollout_from_maps(maps, "joint_space_time", t, h, w)
    expected = torch.zeros(t, h, w)
    expected[1, 1, 0] = 0.5
    torch.testing.assert_close(r[0], expected)


def test_joint_two_blocks_by_hand():
    # Block 1 uniform, block 2 one-hot on token k: cls row of M2·M1 = (½e0 + ½e_k)·M1.
    t, h, w = 2, 1, 2
    length = 1 + t * h * w  # 5
    k = 3
    maps = [{"attn": _uniform_attn(1, 2, length)}, {"attn": _one_hot_attn(1, 2, length, k)}]
    r = rollout_from_maps(maps, "joint_space_time", t, h, w)
    m1 = (torch.full((length, length), 1 / length) + torch.eye(length)) / 2
    row = torch.zeros(length)
    row[0] = row[k] = 0.5
    expected = rearrange((row @ m1)[1:], "(h w t) -> t h w", h=h, w=w, t=t)
    torch.testing.assert_close(r[0], expected)
    # by hand: (row @ m1)[k] = ½·(1/10) from cls + ½·(1/10 + ½) from token k itself
    assert abs(float(r.max()) - (0.5 * 0.1 + 0.5 * 0.6)) < 1e-6


def _divided_matrix(maps: dict, t: int, n: int) -> torch.Tensor:
    """Reference: the full (1+NT)² block matrix S·Tm of one divided block, built explicitly."""
    a_s, a_t = residual_normalise(maps["attn"]), residual_normalise(maps["temporal"])
    size = 1 + n * t

    def idx(p: int, f: int) -> int:
        return 1 + p * t + f

    s = torch.zeros(size, size)
    tm = torch.zeros(size, size)
    tm[0, 0] = 1.0
    for f in range(t):
        s[0, 0] += a_s[f, 0, 0] / t
        for p in range(n):
            s[0, idx(p, f)] = a_s[f, 0, 1 + p] / t
            s[idx(p, f), 0] = a_s[f, 1 + p, 0]
            for q in range(n):
                s[idx(p, f), idx(q, f)] = a_s[f, 1 + p, 1 + q]
            for g in range(t):
                tm[idx(p, f), idx(p, g)] = a_t[p, f, g]
    return s @ tm


def test_divided_matches_explicit_matrices():
    torch.manual_seed(0)
    t, h, w, heads, depth = 3, 2, 2, 2, 3
    n = h * w
    maps = [
        {
            "temporal": torch.rand(n, heads, t, t).softmax(-1),
            "attn": torch.rand(t, heads, 1 + n, 1 + n).softmax(-1),
        }
        for _ in range(depth)
    ]
    r = rollout_from_maps(maps, "divided_space_time", t, h, w)
    total = torch.eye(1 + n * t)
    for block in maps:
        total = _divided_matrix(block, t, n) @ total
    expected = rearrange(total[0, 1:], "(h w t) -> t h w", h=h, w=w, t=t)
    torch.testing.assert_close(r[0], expected)
    assert abs(float(total[0].sum()) - 1.0) < 1e-5  # rows stay stochastic


def test_divided_one_hot_by_hand():
    # Temporal: every frame attends to frame 1; spatial: every token attends to patch 0.
    t, h, w = 2, 1, 2
    n = h * w
    maps = [
        {
            "temporal": _one_hot_attn(n, 1, t, 1),
            "attn": _one_hot_attn(t, 1, 1 + n, 1),
        }
    ]
    r = rollout_from_maps(maps, "divided_space_time", t, h, w)[0]
    # v·S: cls ½; patch (0, f) gets ½/T = ¼ for each frame f. Then ·Tm at position 0:
    # frame 0 row = ½e0 + ½e1, frame 1 row = e1 -> (0,0): ¼·½ = ⅛, (0,1): ¼·½ + ¼ = ⅜.
    expected = torch.tensor([[[0.125, 0.0]], [[0.375, 0.0]]])
    torch.testing.assert_close(r, expected)


def _grouped_matrix(a: torch.Tensor, groups: list[list[int]], with_cls: bool) -> torch.Tensor:
    """Reference: the full step matrix over cls + patches, built entry by entry. ``a`` is the
    residual-normalised map ``(G, L', L')``, ``groups[g]`` the token indices (cls = 0) of the
    patches at positions 0.. of group g."""
    size = 1 + sum(len(g) for g in groups)
    m = torch.zeros(size, size)
    if not with_cls:
        m[0, 0] = 1.0
    c = 1 if with_cls else 0  # offset of the patches in the map
    for g, toks in enumerate(groups):
        if with_cls:
            m[0, 0] += a[g, 0, 0] / len(groups)
        for i, p in enumerate(toks):
            if with_cls:
                m[0, p] += a[g, 0, c + i] / len(groups)
                m[p, 0] = a[g, c + i, 0]
            for j, q in enumerate(toks):
                m[p, q] = a[g, c + i, c + j]
    return m


def _loop_groups(scheme: str, t: int, h: int, w: int) -> list[tuple[str, list[list[int]], bool]]:
    """The steps of an axial / L+G block as loops over (frame, row, column), from the paper's
    description (not from the model's rearrange patterns)."""

    def tok(f: int, r: int, c: int) -> int:  # cls, then patches (h w t)
        return 1 + (r * w + c) * t + f

    if scheme == "axial":
        time = [[tok(f, r, c) for f in range(t)] for r in range(h) for c in range(w)]
        width = [[tok(f, r, c) for c in range(w)] for f in range(t) for r in range(h)]
        height = [[tok(f, r, c) for r in range(h)] for f in range(t) for c in range(w)]
        return [("temporal", time, False), ("width", width, False), ("attn", height, True)]
    h2, w2, t2 = h // 2, w // 2, t // 2
    local = [
        [tok(f, i * h2 + r, j * w2 + c) for f in range(t) for r in range(h2) for c in range(w2)]
        for i in range(2)
        for j in range(2)
    ]
    strided = [
        [
            tok(2 * f + s, 2 * r + p, 2 * c + q)
            for r in range(h2)
            for c in range(w2)
            for f in range(t2)
        ]
        for p in range(2)
        for q in range(2)
        for s in range(2)
    ]
    return [("local", local, False), ("attn", strided, True)]


@pytest.mark.parametrize("scheme", ["axial", "sparse_local_global"])
def test_axial_and_local_global_match_explicit_matrices(scheme):
    torch.manual_seed(0)
    t, h, w, heads, depth = 4, 2, 4, 2, 2
    steps = _loop_groups(scheme, t, h, w)
    maps = [
        {
            key: torch.rand(len(g), heads, len(g[0]) + cls, len(g[0]) + cls).softmax(-1)
            for key, g, cls in steps
        }
        for _ in range(depth)
    ]
    r = rollout_from_maps(maps, scheme, t, h, w)
    total = torch.eye(1 + t * h * w)
    for block in maps:
        for key, groups, cls in steps:  # later steps multiply from the left
            total = _grouped_matrix(residual_normalise(block[key]), groups, cls) @ total
    expected = rearrange(total[0, 1:], "(h w t) -> t h w", h=h, w=w, t=t)
    torch.testing.assert_close(r[0], expected)
    assert abs(float(total[0].sum()) - 1.0) < 1e-5  # rows stay stochastic


def test_axial_one_hot_by_hand():
    # T=2, 2x2 patches. Time: every patch attends to frame 1; width: to column 0; height (with
    # cls): every query to the row-0 patch. Backwards from cls: height gives cls ½ and ½/4 = ⅛
    # to each row-0 patch (4 groups: frame x column); width: column 0 keeps ⅛ and gets ½·⅛
    # from column 1 (3/16), column 1 keeps ½·⅛ (1/16); time: frame 0 keeps ½·x, frame 1 gets
    # x + ½·x. Row 1 never receives anything.
    t, h, w = 2, 2, 2
    maps = [
        {
            "temporal": _one_hot_attn(h * w, 1, t, 1),
            "width": _one_hot_attn(t * h, 1, w, 0),
            "attn": _one_hot_attn(t * w, 1, 1 + h, 1),
        }
    ]
    r = rollout_from_maps(maps, "axial", t, h, w)[0]
    expected = torch.tensor([[[3, 1], [0, 0]], [[9, 3], [0, 0]]]) / 32
    torch.testing.assert_close(r, expected)


def test_local_global_one_hot_by_hand():
    # T=2, 2x2 patches: the local windows are the 2 frames at one patch position, the 8 strided
    # sub-grids hold one patch each. Global: every query attends to cls, except cls in the
    # sub-grid (row 1, col 0, frame 1) [group (p q s) = (1 0 1) = 5], which attends to its
    # patch: cls keeps (7·1 + ½)/8 = 15/16, the patch gets ½/8 = 1/16. Local, window (row 1,
    # col 0) [(i j) = 2]: every frame attends to frame 0, so frame 1's 1/16 splits ½/½ over
    # frames 0 and 1 -> 1/32 each. Other windows attend to frame 1 (irrelevant: zero mass).
    t, h, w = 2, 2, 2
    global_ = _one_hot_attn(8, 2, 2, 0)
    global_[5, :, 0] = torch.tensor([0.0, 1.0])
    local = _one_hot_attn(4, 2, 2, 1)
    local[2] = _one_hot_attn(1, 2, 2, 0)[0]
    r = rollout_from_maps([{"local": local, "attn": global_}], "sparse_local_global", t, h, w)
    expected = torch.zeros(t, h, w)
    expected[0, 1, 0] = expected[1, 1, 0] = 1 / 32
    torch.testing.assert_close(r[0], expected)


def _rigged_model(
    scheme: str, target: tuple[int, int, int], t: int = 3
) -> tuple[TimeSformer, torch.Tensor]:
    """A depth-1 model and a clip in which every query attends to one patch (frame, row, col).

    The clip is zero except for the target patch, and all embeddings/biases are zero, so every
    other token is the zero vector (LayerNorm keeps it zero). Queries are a constant vector
    ``q = b_q`` and keys ``k = W_k·x``: only the target's key is non-zero, and ``b_q`` is set
    along it, so the target gets a large score from every query and the others score zero.
    """
    torch.manual_seed(0)
    p, size = 4, 16
    model = TimeSformer(
        img_size=size,
        patch_size=p,
        num_frames=t,
        num_classes=2,
        embed_dim=16,
        depth=1,
        num_heads=2,
        attention_type=scheme,
        drop_path_rate=0.0,
    ).eval()
    f, row, col = target
    video = torch.zeros(1, 3, t, size, size)
    video[0, :, f, row * p : (row + 1) * p, col * p : (col + 1) * p] = torch.randn(3, p, p)
    with torch.no_grad():
        model.pos_embed.zero_()
        model.cls_token.zero_()
        if hasattr(model, "time_embed"):
            model.time_embed.zero_()
        model.patch_embed.proj.bias.zero_()
        tokens, _ = model.embed(video)
        blk = model.blocks[0]
        d = model.embed_dim
        z = blk.norm1(tokens.reshape(-1, d)).abs().sum(-1).argmax()  # the target token
        z = blk.norm1(tokens.reshape(-1, d)[z])
        for attn in [m for name, m in blk.named_modules() if name.endswith("attn")]:
            attn.qkv.weight.zero_()
            attn.qkv.bias.zero_()
            attn.qkv.weight[d : 2 * d] = torch.eye(d) * 10  # k = 10·x
            attn.qkv.bias[:d] = z * 10  # q = 10·z for every token
    return model, video


@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_rigged_model_peaks_at_target(scheme):
    t = 2 if scheme == "sparse_local_global" else 3  # L+G needs an even grid
    target = (t - 1, 1, 3)  # last frame, patch row 1, column 3
    model, video = _rigged_model(scheme, target, t)
    maps, logits = attention_rollout(model, video)
    assert maps.shape == (1, t, 4, 4) and logits.shape == (1, 2)
    m = maps[0]
    assert tuple(np.unravel_index(int(m.argmax()), m.shape)) == target
    others = m.clone()
    others[target] = 0
    assert float(m[target]) > 3 * float(others.max())
    with torch.no_grad():
        _, attn = model.forward_with_attention(video)
    step = {"divided_space_time": "temporal", "axial": "temporal", "sparse_local_global": "local"}
    assert float(attn[0][step.get(scheme, "attn")].max()) > 0.99  # the rig: one-hot attention


def test_heatmap_grid_pixels_peak_at_target():
    # heatmap_grid is the pixel-exact building block of the figure: frames over overlays.
    target = (1, 0, 2)
    model, video = _rigged_model("divided_space_time", target)
    frames = np.full((3, 16, 16, 3), 128, np.uint8)
    maps, _ = attention_rollout(model, video)
    img = heatmap_grid(frames, maps[0])
    assert img.shape == (2 * 16, 3 * 16, 3)  # frames row + overlay row, 3 frames wide
    over = img[16:].astype(int)
    assert over.std() > 5  # not blank
    redness = (over[..., 0] - over[..., 2]).reshape(16, 3, 16)  # (y, frame, x)
    y, f, x = np.unravel_index(int(redness.argmax()), redness.shape)
    assert f == target[0] and y // 4 == target[1] and x // 4 == target[2]
    np.testing.assert_array_equal(img[:16], np.concatenate(list(frames), axis=1))


def test_save_heatmap_grid_png_upscaled(tmp_path):
    model, video = _rigged_model("axial", (1, 0, 2))
    path = tmp_path / "grid.png"
    maps = save_heatmap_grid(model, video, None, path, names=["clip.mp4"])
    from PIL import Image

    width, height = Image.open(path).size
    assert maps.shape == (1, 3, 4, 4)
    assert width >= 3 * 112 and height >= 2 * 112  # 16 px frames drawn at 112 px or more


def test_render_heatmaps_batch_denormalises():
    model = TimeSformer(
        img_size=16, patch_size=8, num_frames=2, num_classes=3, embed_dim=16, depth=2, num_heads=2
    )
    # known uint8 frames, normalised as the data pipeline does: (x / 255 - mean) / std
    frames = np.random.default_rng(0).integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)
    mean, std = 0.45, 0.225
    video = (torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float() / 255 - mean) / std
    image, maps = render_heatmaps(model, video)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert image.shape[0] >= 2 * 2 * 112 and image.shape[1] >= 2 * 112  # 2 clips, 2 frames
    assert maps.shape == (2, 2, 2, 2) and bool((maps > 0).all())
    # de-normalised, the figure shows exactly the frames the clips were made of
    shown, _ = render_heatmaps(model, video, frames)
    np.testing.assert_array_equal(image, shown)
    # and not what another normalisation would give (the check can fail)
    other, _ = render_heatmaps(model, video, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert np.abs(other.astype(int) - shown).max() > 20
