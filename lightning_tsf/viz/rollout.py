"""Attention rollout for video: how much each patch of each frame feeds the cls output.

Rollout (Abnar & Zuidema, 2020), as the TimeSformer paper used for its heatmaps: each attention
step's map is averaged over heads, the identity is added for the residual connection and rows are
renormalised, ``Â = rownorm(mean_heads(A) + I)``; the token-to-token matrices of the steps are
multiplied through the blocks, ``R = M_L ⋯ M_1``, and the cls row of ``R`` over the patch tokens
is the map. MLPs act per token and are ignored, as in the original method.

Token order used here is the model's: cls, then patches ``(h w t)`` with time fastest. The maps
come from :meth:`TimeSformer.forward_with_attention` (layouts in ``models/timesformer.py``).

Per scheme, the block matrix ``M`` over ``1 + N·T`` tokens (N patches per frame, T frames):

- ``joint_space_time``: ``M = Â`` of the single step.
- ``divided_space_time``: ``M = S · Tm`` (temporal step first, then spatial). ``Tm`` leaves cls
  alone and maps patch ``(n, t)`` to ``Σ_t' Â_t[n][t, t'] · (n, t')``, with ``Â_t[n]`` the
  ``T×T`` temporal map at patch position ``n``. ``S`` maps patch ``(n, t)`` to
  ``Â_s[t][1+n, 0] · cls + Σ_n' Â_s[t][1+n, 1+n'] · (n', t)`` with ``Â_s[t]`` the ``(1+N)²``
  spatial map of frame ``t``; the cls row is the mean over frames of the frames' cls rows,
  ``cls ← mean_t Â_s[t][0, 0] · cls + Σ_{n',t} Â_s[t][0, 1+n'] / T · (n', t)``, because the
  model averages the per-frame cls outputs. (``temporal_fc`` is a linear map of the values,
  not of the routing, and is ignored like the value projections.)
- ``space_only``: each frame is its own sequence; ``M`` is block diagonal over frames with
  ``Â`` of the frame, and the final cls is the mean of the frames' cls tokens, so the map of
  frame ``t`` is ``(1/T) ·`` the cls row of that frame's rollout.

Only the cls row is needed, so it is propagated as a row vector (``v ← v · M``, from the last
block down to the first) and no ``(1+NT)²`` matrix is ever formed: cost ``O(L·N·T·(N+T))`` for
divided attention.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from lightning_tsf.models.timesformer import AttnMaps, TimeSformer

SCHEMES = ("divided_space_time", "joint_space_time", "space_only")


def residual_normalise(attn: Tensor) -> Tensor:
    """``(batch, heads, L, L)`` attention -> ``rownorm(mean_heads(attn) + I)``: ``(batch, L, L)``.

    The identity stands for the residual connection around the attention step.
    """
    a = attn.float().mean(1)
    a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(-1, keepdim=True)


def _divided_step_back(v: Tensor, maps: AttnMaps, t: int, n: int) -> Tensor:
    """``v · S · Tm`` for one divided block; ``v`` is ``(B, 1 + N·T)`` in ``(h w t)`` order."""
    b = v.shape[0]
    a_s = rearrange(residual_normalise(maps["attn"]), "(b t) i j -> b t i j", b=b)  # (B,T,1+N,1+N)
    a_t = rearrange(residual_normalise(maps["temporal"]), "(b n) i j -> b n i j", b=b)  # (B,N,T,T)
    cls, patches = v[:, 0], rearrange(v[:, 1:], "b (n t) -> b t n", t=t)  # (B,), (B, T, N)
    # v · S: the cls entry collects from cls (averaged over frames) and from every patch.
    new_cls = cls * a_s[:, :, 0, 0].mean(1) + (patches * a_s[:, :, 1:, 0]).sum((1, 2))
    new_patches = torch.einsum("btn,btnm->btm", patches, a_s[:, :, 1:, 1:])
    new_patches = new_patches + cls[:, None, None] * a_s[:, :, 0, 1:] / t
    # (v · S) · Tm: cls unchanged; patch (n, t) spreads over (n, t') with Â_t[n][t, t'].
    new_patches = torch.einsum("btn,bnts->bsn", new_patches, a_t)
    return torch.cat((new_cls[:, None], rearrange(new_patches, "b t n -> b (n t)")), dim=1)


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
    n = h * w
    if attention_type == "space_only":
        first = maps[0]["attn"]
        v = torch.zeros(first.shape[0], 1 + n, dtype=torch.float32, device=first.device)
        v[:, 0] = 1.0
        for block in reversed(maps):
            v = torch.einsum("bi,bij->bj", v, residual_normalise(block["attn"]))
        return rearrange(v[:, 1:] / t, "(b t) (h w) -> b t h w", t=t, h=h)
    b = maps[0]["attn"].shape[0] // (t if attention_type == "divided_space_time" else 1)
    v = torch.zeros(b, 1 + n * t, dtype=torch.float32, device=maps[0]["attn"].device)
    v[:, 0] = 1.0
    for block in reversed(maps):
        if attention_type == "joint_space_time":
            v = torch.einsum("bi,bij->bj", v, residual_normalise(block["attn"]))
        else:
            v = _divided_step_back(v, block, t, n)
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
