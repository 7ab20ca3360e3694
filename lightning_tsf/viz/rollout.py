"""Attention rollout for video: how much each patch of each frame feeds the cls output.

Rollout (Abnar & Zuidema, 2020), as the TimeSformer paper used for its heatmaps: each attention
step's map is averaged over heads, the identity is added for the residual connection and rows are
renormalised, ``Â = rownorm(mean_heads(A) + I)``; the token-to-token matrices of the steps are
multiplied through the blocks, ``R = M_L ⋯ M_1``, and the cls row of ``R`` over the patch tokens
is the map. MLPs act per token and are ignored, as in the original method; so are the ``*_fc``
output layers of the extra steps (linear maps of the values, not of the routing).

Token order used here is the model's: cls, then patches ``(h w t)`` with time fastest. The maps
come from :meth:`TimeSformer.forward_with_attention` (layouts in ``models/timesformer.py``).

Every attention step of every scheme but ``space_only`` cuts the ``N·T`` patches (N per frame,
T frames) into G equal groups that attend within themselves; the group layout is the block's
own ``rearrange`` (see :func:`step_groups`). A step's matrix ``M`` over ``1 + N·T`` tokens:

- a step without cls (divided's temporal, L+G's local, axial's time and width) leaves cls alone
  and maps patch ``p`` of group ``g`` to ``Σ_q Â_g[p, q] · q`` over the patches ``q`` of ``g``;
- a step with a cls copy per group (the last step of every block: joint's single group, divided's
  frames, L+G's 8 strided sub-grids, axial's columns) maps patch ``p`` of group ``g`` to
  ``Â_g[p, cls] · cls + Σ_q Â_g[p, q] · q``; the model averages the G cls outputs, so the cls row
  is ``mean_g Â_g[cls, cls] · cls + Σ_g Σ_q Â_g[cls, q] / G · q``.

The block matrix is the product of its steps, last step on the left (divided: ``M = S · Tm``;
axial: ``M = H · W · Tm``; L+G: ``M = G · L``; joint: ``M = Â``).

``space_only`` keeps one sequence per frame: ``M`` is block diagonal over frames with ``Â`` of
the frame, and the final cls is the mean of the frames' cls tokens, so the map of frame ``t`` is
``(1/T) ·`` the cls row of that frame's rollout.

Only the cls row is needed, so it is propagated as a row vector (``v ← v · M``, from the last
block and step down to the first) and no ``(1+NT)²`` matrix is ever formed: cost
``O(L·N·T·Σ group sizes)``, e.g. ``O(L·N·T·(N+T))`` for divided attention.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from lightning_tsf.models.timesformer import BLOCKS, AttnMaps, TimeSformer

SCHEMES = tuple(BLOCKS)  # every scheme of the model has a rollout


def residual_normalise(attn: Tensor) -> Tensor:
    """``(batch, heads, L, L)`` attention -> ``rownorm(mean_heads(attn) + I)``: ``(batch, L, L)``.

    The identity stands for the residual connection around the attention step.
    """
    a = attn.float().mean(1)
    a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(-1, keepdim=True)


def step_groups(attention_type: str, t: int, h: int, w: int) -> list[tuple[str, Tensor, bool]]:
    """The attention steps of one block, in the order the block runs them.

    Each step is ``(map key, groups, with_cls)``: ``groups`` ``(G, L)`` holds the patch indices
    (``(h w t)`` order, 0-based, cls not counted) of position ``l`` of group ``g`` in that
    step's attention map ``maps[key]`` ``(B·G, heads, L', L')`` (``L' = L`` or ``1 + L`` with a
    cls copy first). The patterns are those of the blocks' ``rearrange`` calls.
    """
    ar = torch.arange(h * w * t)
    if attention_type == "joint_space_time":
        return [("attn", ar[None], True)]
    if attention_type == "divided_space_time":
        return [
            ("temporal", rearrange(ar, "(n t) -> n t", t=t), False),
            ("attn", rearrange(ar, "(n t) -> t n", t=t), True),
        ]
    if attention_type == "sparse_local_global":
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"sparse_local_global needs an even patch grid, got {t}x{h}x{w}")
        halves = {"h": h // 2, "w": w // 2}
        local = rearrange(ar, "(i h j w t) -> (i j) (t h w)", i=2, j=2, t=t, **halves)
        strided = rearrange(ar, "(h p w q t s) -> (p q s) (h w t)", p=2, q=2, s=2, **halves)
        return [("local", local, False), ("attn", strided, True)]
    if attention_type == "axial":
        return [
            ("temporal", rearrange(ar, "(h w t) -> (h w) t", h=h, w=w), False),
            ("width", rearrange(ar, "(h w t) -> (t h) w", h=h, w=w), False),
            ("attn", rearrange(ar, "(h w t) -> (t w) h", h=h, w=w), True),
        ]
    raise NotImplementedError(f"no grouped attention steps for {attention_type!r}")


def _step_back(v: Tensor, attn: Tensor, groups: Tensor, with_cls: bool) -> Tensor:
    """``v · M`` for one attention step (module docstring); ``v`` is ``(B, 1 + N·T)``."""
    b, (g, _), groups = v.shape[0], groups.shape, groups.to(v.device)
    a = residual_normalise(attn)
    a = a.view(b, g, *a.shape[1:])  # (B, G, L', L')
    cls, grouped = v[:, 0], v[:, 1:][:, groups]  # (B,), (B, G, L)
    if with_cls:
        new_cls = cls * a[:, :, 0, 0].mean(1) + (grouped * a[:, :, 1:, 0]).sum((1, 2))
        grouped = torch.einsum("bgi,bgij->bgj", grouped, a[:, :, 1:, 1:])
        grouped = grouped + cls[:, None, None] * a[:, :, 0, 1:] / g
    else:
        new_cls = cls
        grouped = torch.einsum("bgi,bgij->bgj", grouped, a)
    patches = torch.empty_like(v[:, 1:])
    patches[:, groups.reshape(-1)] = grouped.reshape(b, -1)  # groups partition the patches
    return torch.cat((new_cls[:, None], patches), dim=1)


def rollout_from_maps(maps: list[AttnMaps], attention_type: str, t: int, h: int, w: int) -> Tensor:
    """Rollout of per-block attention maps for a ``t × h × w`` patch grid -> ``(B, T, H, W)``.

    Returns the cls row of the rollout over the patch tokens (the influence of each patch on
    the cls output; the remainder of the row's unit mass is cls's own share).
    """
    if attention_type not in SCHEMES:
        raise NotImplementedError(
            f"rollout is implemented for {', '.join(SCHEMES)}, not {attention_type!r}"
        )
    if not maps:
        raise ValueError("no attention maps (depth 0?)")
    first = maps[0]["attn"]
    if attention_type == "space_only":
        v = torch.zeros(first.shape[0], 1 + h * w, dtype=torch.float32, device=first.device)
        v[:, 0] = 1.0
        for block in reversed(maps):
            v = torch.einsum("bi,bij->bj", v, residual_normalise(block["attn"]))
        return rearrange(v[:, 1:] / t, "(b t) (h w) -> b t h w", t=t, h=h)
    steps = step_groups(attention_type, t, h, w)
    b = first.shape[0] // steps[-1][1].shape[0]
    v = torch.zeros(b, 1 + h * w * t, dtype=torch.float32, device=first.device)
    v[:, 0] = 1.0
    for block in reversed(maps):
        for key, groups, with_cls in reversed(steps):
            v = _step_back(v, block[key], groups, with_cls)
    return rearrange(v[:, 1:], "b (h w t) -> b t h w", h=h, w=w, t=t)


@torch.no_grad()
def attention_rollout(model: TimeSformer, video: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``model`` on ``video`` ``(B, C, T, H, W)`` (or one ``(C, T, H, W)`` clip).

    Returns ``(maps, logits)``: ``maps`` is ``(B, T, H/P, W/P)``, the rollout of each patch's
    influence on the cls output (see the module docstring for the formula); ``logits`` the
    model's output for the same pass. The model is put in eval mode for the pass and restored.
    """
    if video.ndim == 4:
        video = video[None]
    was_training = model.training
    model.eval()
    try:
        logits, maps = model.forward_with_attention(video)
    finally:
        model.train(was_training)
    p = model.patch_size
    t, hh, ww = video.shape[2], video.shape[3] // p, video.shape[4] // p
    return rollout_from_maps(maps, model.attention_type, t, hh, ww), logits
