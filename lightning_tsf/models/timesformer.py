"""TimeSformer (Bertasius et al., ICML 2021) with the paper's five attention schemes.

The backbone; its layers are in :mod:`lightning_tsf.models.layers`, the five block classes
(one per scheme, chosen by name from ``BLOCKS``) in :mod:`lightning_tsf.models.blocks`, the
token switches in :mod:`lightning_tsf.models.tokens`. Parameter names are those of
facebookresearch/TimeSformer, so an official ``model_state`` loads with ``strict=True``.

Token layout (official): after embedding, a clip is ``(B, 1 + N*T, D)``: the cls token, then
the patch tokens ordered ``(h w t)`` -- time fastest. ``space_only`` is the exception: it keeps
one sequence per frame, ``(B*T, 1 + N, D)``, each with its own cls copy, and averages frames
after the last block. Every block receives the grid size ``(T, H, W)`` in patches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_tsf.models.blocks import BLOCKS, Block
from lightning_tsf.models.layers import (
    Attention,
    AttnMaps,
    DropPath,
    Grid,
    Mlp,
    PatchEmbed,
)
from lightning_tsf.models.tokens import TokenConfig, TokenState, check_support, reduce_input

__all__ = ["BLOCKS", "Attention", "AttnMaps", "Block", "DropPath", "Grid", "Mlp", "PatchEmbed",
           "TimeSformer", "TokenConfig"]  # fmt: skip


class TimeSformer(nn.Module):
    """TimeSformer video classifier: ``(B, C, T, H, W)`` float video -> ``(B, num_classes)``.

    Args:
        img_size: training resolution (square); other sizes work by resizing ``pos_embed``.
        patch_size: patch side P in pixels.
        num_frames: training clip length T; other lengths resize ``time_embed``.
        num_classes: classes of the linear head (0: no head, ``forward`` returns features).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the ViT sizes.
        drop_rate: dropout after the embeddings, in the MLPs/projections and before the head.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear from 0 to this over the blocks (official 0.1).
        attention_type: one of ``BLOCKS``: the paper's five schemes.
        in_chans: input channels.
        grad_checkpointing: recompute blocks in backward to save activation memory.
        tokens: the token switches (:class:`~lightning_tsf.models.tokens.TokenConfig`, or its
            dict): static-patch dropping, ToMe merging, tube dropping; all off by default.
            A switch a scheme cannot take is refused here (a ``ValueError``, one line).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 8,
        num_classes: int = 400,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        attention_type: str = "divided_space_time",
        in_chans: int = 3,
        grad_checkpointing: bool = False,
        tokens: TokenConfig | None = None,
    ) -> None:
        super().__init__()
        if attention_type not in BLOCKS:
            raise ValueError(
                f"unknown attention_type {attention_type!r}; valid: {', '.join(BLOCKS)}"
            )
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size, self.patch_size, self.num_frames = img_size, patch_size, num_frames
        self.in_chans, self.num_classes, self.embed_dim = in_chans, num_classes, embed_dim
        self.attention_type = attention_type
        self.grad_checkpointing = grad_checkpointing
        self.set_tokens(tokens)
        num_patches = (img_size // patch_size) ** 2

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        if attention_type != "space_only":  # official: space-only has no time embedding
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, rate)
        block_cls = BLOCKS[attention_type]
        self.blocks = nn.ModuleList(
            block_cls(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                drop_path_enabled=drop_path_rate > 0,  # block 0 too (its rate is 0)
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.endswith("_fc"):  # *_fc stay zero
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_tokens(self, tokens: TokenConfig | dict | None) -> None:
        """Set the token switches; one the scheme cannot take is a ``ValueError``."""
        config = TokenConfig.coerce(tokens)
        check_support(self.attention_type, config)
        self.tokens = config

    # -- input checks and embeddings ------------------------------------------------------
    def _check_input(self, x: Tensor) -> Grid:
        if x.ndim != 5:
            raise ValueError(
                f"expected video of shape (B, C, T, H, W), got a {x.ndim}-D tensor "
                f"of shape {tuple(x.shape)}"
            )
        _, c, t, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} channels at dim 1 of (B, C, T, H, W), got {c} "
                f"(shape {tuple(x.shape)}; is the layout (B, T, C, H, W)?)"
            )
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"frame size {h}x{w} is not divisible by patch_size {p}")
        if not x.is_floating_point():
            raise ValueError(f"expected a float video tensor, got {x.dtype}; normalise it first")
        return Grid(t, h // p, w // p)

    def _pos_embed(self, grid: Grid) -> Tensor:
        """``pos_embed`` for a grid; nearest-neighbour on the 2-D patch grid if it differs."""
        pos = self.pos_embed
        if pos.shape[1] == grid.h * grid.w + 1:
            return pos
        side = math.isqrt(pos.shape[1] - 1)
        other = rearrange(pos[:, 1:], "1 (h w) d -> 1 d h w", h=side)
        other = F.interpolate(other, size=(grid.h, grid.w), mode="nearest")
        return torch.cat((pos[:, :1], rearrange(other, "1 d h w -> 1 (h w) d")), dim=1)

    def _time_embed(self, t: int) -> Tensor:
        """``time_embed`` for ``t`` frames; nearest-neighbour over time if it differs."""
        te = self.time_embed
        if te.shape[1] == t:
            return te
        return F.interpolate(te.transpose(1, 2), size=t, mode="nearest").transpose(1, 2)

    def embed(self, x: Tensor) -> tuple[Tensor, Grid]:
        """Video -> tokens in the layout the blocks expect, plus the patch grid."""
        grid = self._check_input(x)
        b = x.shape[0]
        x = self.patch_embed(x)  # (B*T, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self._pos_embed(grid)  # (B*T, 1+N, D)
        if self.attention_type != "space_only":
            cls = x[:b, :1]  # cls + its position: the same for every frame
            xp = (
                rearrange(x[:, 1:], "(b t) n d -> b n t d", b=b) + self._time_embed(grid.t)[:, None]
            )
            x = torch.cat((cls, rearrange(xp, "b n t d -> b (n t) d")), dim=1)  # (B, 1+N*T, D)
        return self.pos_drop(x), grid

    # -- forward ----------------------------------------------------------------------------
    def forward_tokens(self, x: Tensor, return_attn: bool = False) -> tuple[Tensor, list[AttnMaps]]:
        """All blocks; returns the un-normalised tokens (space-only: frames averaged) and, if
        asked, each block's attention maps ``{step: (batch, heads, L, L)}``: of every token,
        so with the token switches off (rollout needs the whole grid). Otherwise, with a token
        switch on, the tokens are those kept (see :mod:`lightning_tsf.models.tokens`)."""
        video = x
        x, grid = self.embed(x)
        state: TokenState | None = None
        if self.tokens.on and not return_attn:
            args = (self.tokens, self.attention_type, video, x, grid.t, self.patch_size)
            x, state = reduce_input(*args, self.training)
        all_maps: list[AttnMaps] = []
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.blocks:
            if return_attn:
                maps: AttnMaps = {}
                x = blk(x, grid, maps)
                all_maps.append(maps)
            elif state is not None:
                args = (x, grid, None, state)
                x, state = checkpoint(blk, *args, use_reentrant=False) if ckpt else blk(*args)
            elif ckpt:
                x = checkpoint(blk, x, grid, use_reentrant=False)
            else:
                x = blk(x, grid)
        if self.attention_type == "space_only":  # official: average the frames' tokens
            x = rearrange(x, "(b t) n d -> b t n d", t=grid.t).mean(1)  # (B, 1+N, D)
        return x, all_maps

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised cls feature ``(B, embed_dim)``: what the head sees."""
        tokens, _ = self.forward_tokens(x)
        return self.norm(tokens)[:, 0]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(self.head_drop(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[AttnMaps]]:
        """Logits and per-block attention maps (explicit softmax path, no SDPA)."""
        tokens, maps = self.forward_tokens(x, return_attn=True)
        return self.forward_head(self.norm(tokens)[:, 0]), maps

    def no_weight_decay(self) -> set[str]:
        """Parameters the optional no-decay group excludes (besides norms and biases)."""
        return {"cls_token", "pos_embed", "time_embed"}
