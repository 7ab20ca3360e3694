"""TimeSformer backbone: shapes, gradients, checkpointing, SDPA vs explicit, errors, semantics."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_tsf.models import BLOCKS, TimeSformer, create_model
from lightning_tsf.models.timesformer import Grid

TINY = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=4)


def tiny(attention_type: str, **kw) -> TimeSformer:
    return TimeSformer(**{**TINY, "num_classes": 5, "attention_type": attention_type, **kw})


def randomise_zero_inits(model: TimeSformer) -> None:
    """time_embed and *_fc start at zero, which would hide a broken temporal path."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "time_embed" or "_fc." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("attention_type", list(BLOCKS))
def test_output_shapes(attention_type):
    model = tiny(attention_type).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 32)
    # other clip lengths and resolutions (embeddings resized), also non-square frames
    assert model(torch.randn(1, 3, 8, 48, 64)).shape == (1, 5)


@pytest.mark.parametrize("attention_type", list(BLOCKS))
def test_every_parameter_gets_a_gradient(attention_type):
    torch.manual_seed(0)
    model = tiny(attention_type, drop_path_rate=0.0)
    randomise_zero_inits(model)
    model(torch.randn(2, 3, 4, 32, 32)).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("attention_type", list(BLOCKS))
def test_gradient_checkpointing_changes_nothing(attention_type):
    torch.manual_seed(0)
    model = tiny(attention_type, drop_path_rate=0.0)
    randomise_zero_inits(model)
    x = torch.randn(2, 3, 4, 32, 32)
    grads = []
    outs = []
    for ckpt in (False, True):
        model.zero_grad()
        model.grad_checkpointing = ckpt
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention_type", list(BLOCKS))
def test_sdpa_equals_explicit_attention(attention_type):
    torch.manual_seed(0)
    model = tiny(attention_type).eval()
    randomise_zero_inits(model)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        fused = model(x)
        explicit, maps = model.forward_with_attention(x)
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-5)
    assert len(maps) == 2
    for step in maps[0].values():  # rows of every attention map sum to 1
        torch.testing.assert_close(step.sum(-1), torch.ones_like(step.sum(-1)))


def test_attention_map_shapes_divided():
    model = tiny("divided_space_time")
    _, maps = model.forward_with_attention(torch.randn(2, 3, 4, 32, 32))
    assert maps[0]["temporal"].shape == (2 * 16, 4, 4, 4)  # (B*N, heads, T, T)
    assert maps[0]["attn"].shape == (2 * 4, 4, 17, 17)  # (B*T, heads, 1+N, 1+N)


def test_unknown_attention_type_lists_valid_ones():
    with pytest.raises(ValueError, match="divided_space_time.*sparse_local_global.*axial"):
        tiny("space_time_divided")


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 4, 32, 32), "expected video of shape \\(B, C, T, H, W\\), got a 4-D"),
        ((1, 4, 3, 32, 32), "expected 3 channels .* got 4"),
        ((1, 3, 4, 30, 32), "frame size 30x32 is not divisible by patch_size 8"),
    ],
)
def test_bad_input_is_named(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny("divided_space_time")(torch.randn(*shape))


def test_integer_video_is_refused():
    with pytest.raises(ValueError, match="float"):
        tiny("joint_space_time")(torch.zeros(1, 3, 4, 32, 32, dtype=torch.uint8))


def test_embeddings_resize_by_nearest_neighbour():
    """Hand-computed: 2x2 patch grid -> 4x4 repeats each position in a 2x2 block; 4 frames ->
    8 repeats each time step twice; the cls position is kept."""
    model = TimeSformer(
        img_size=16, patch_size=8, num_frames=4, embed_dim=8, depth=1, num_heads=2, num_classes=2
    )
    with torch.no_grad():
        model.pos_embed.copy_(torch.arange(5.0)[None, :, None].expand(1, 5, 8))
        model.time_embed.copy_(torch.arange(4.0)[None, :, None].expand(1, 4, 8))
    pos = model._pos_embed(Grid(4, 4, 4))[0, :, 0]
    expected = [0, 1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
    assert pos.tolist() == expected
    assert model._time_embed(8)[0, :, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert model._time_embed(2)[0, :, 0].tolist() == [0, 2]


def test_presets_build_and_tiny_is_fast():
    import time

    model = create_model("timesformer_tiny", num_classes=3)
    x = torch.randn(2, 3, 4, 32, 32)
    start = time.perf_counter()
    model(x).sum().backward()
    assert time.perf_counter() - start < 1.0
    with torch.device("meta"):
        hr = create_model("timesformer_hr", attention_type="axial")
    assert (hr.num_frames, hr.img_size) == (16, 448)
    with pytest.raises(ValueError, match="timesformer_hr"):
        create_model("timesformer_xl")


# -- which tokens each attention step sees -----------------------------------------------------
# One block, with every step but one silenced (its output projection zeroed); the MLP acts per
# token. Perturbing input patch q then changes exactly the outputs that the step lets see q.

GRID = Grid(4, 4, 4)  # T, H, W in patches


def _reach(block, q: tuple[int, int, int]) -> set[tuple[int, int, int]]:
    t, h, w = GRID
    torch.manual_seed(0)
    x = torch.randn(1, 1 + t * h * w, block.norm1.normalized_shape[0])
    idx = 1 + (q[1] * w + q[2]) * t + q[0]  # layout (h w t)
    x2 = x.clone()
    x2[0, idx] += torch.randn(x.shape[-1])  # not a constant: LayerNorm would remove it
    with torch.no_grad():
        diff = (block(x2, GRID) - block(x, GRID))[0, 1:].abs().sum(-1)
    coords = list(itertools.product(range(h), range(w), range(t)))
    return {(tt, hh, ww) for (hh, ww, tt), d in zip(coords, diff.tolist()) if d > 1e-6}


def _block(attention_type: str, keep: str):
    block = BLOCKS[attention_type](16, 2).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("_fc.weight"):
                p.normal_() if name.startswith(keep) else p.zero_()
            if name in {"attn.proj.weight", "attn.proj.bias"} and keep != "attn":
                p.zero_()
    return block


ALL = set(itertools.product(range(4), range(4), range(4)))
Q = (1, 2, 3)  # t, h, w of the perturbed patch


@pytest.mark.parametrize(
    "attention_type, step, expected",
    [
        ("divided_space_time", "temporal", {p for p in ALL if p[1:] == Q[1:]}),
        ("divided_space_time", "attn", {p for p in ALL if p[0] == Q[0]}),
        ("axial", "temporal", {p for p in ALL if p[1:] == Q[1:]}),
        ("axial", "width", {p for p in ALL if (p[0], p[1]) == (Q[0], Q[1])}),
        ("axial", "attn", {p for p in ALL if (p[0], p[2]) == (Q[0], Q[2])}),
        # local: T x H/2 x W/2 windows (here rows 2-3, cols 2-3, every frame)
        ("sparse_local_global", "local", {p for p in ALL if p[1] >= 2 and p[2] >= 2}),
        # global: stride 2 along t, h, w: same parity as q
        (
            "sparse_local_global",
            "attn",
            {p for p in ALL if all(a % 2 == b % 2 for a, b in zip(p, Q))},
        ),
        ("joint_space_time", "attn", ALL),
    ],
)
def test_each_step_sees_the_documented_tokens(attention_type, step, expected):
    assert _reach(_block(attention_type, step), Q) == expected


def test_space_only_is_blind_to_frame_order():
    torch.manual_seed(0)
    model = tiny("space_only").eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.flip(2)))
    divided = tiny("divided_space_time").eval()
    randomise_zero_inits(divided)
    with torch.no_grad():
        assert (divided(x) - divided(x.flip(2))).abs().max() > 1e-4
