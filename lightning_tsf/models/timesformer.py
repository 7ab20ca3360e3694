"""TimeSformer (Bertasius et al., ICML 2021) with the paper's five attention schemes.

Read top to bottom: attention, the five block classes (one per scheme, chosen by name from
``BLOCKS``), the backbone. Parameter names are those of facebookresearch/TimeSformer, so an
official ``model_state`` loads with ``strict=True``.

Token layout (official): after embedding, a clip is ``(B, 1 + N*T, D)``: the cls token, then
the patch tokens ordered ``(h w t)`` -- time fastest. ``space_only`` is the exception: it keeps
one sequence per frame, ``(B*T, 1 + N, D)``, each with its own cls copy, and averages frames
after the last block. Every block receives the grid size ``(T, H, W)`` in patches.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lightning_tsf.models.names import ATTENTION_TYPES

AttnMaps = dict[str, Tensor]


class Grid(NamedTuple):
    """Patch grid of a clip: frames, patch rows, patch columns."""

    t: int
    h: int
    w: int


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p``.

    ``p`` is a (non-persistent) tensor, not a Python number, so that blocks with different rates
    share one compiled graph; ``enabled`` (one value for the whole model) switches it off
    without a branch on ``p``. With ``p = 0`` the mask is all ones and the output equals ``x``.
    """

    def __init__(self, p: float = 0.0, enabled: bool | None = None) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)
        self.enabled = p > 0 if enabled is None else enabled

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled or not self.training:
            return x
        keep = (1.0 - self.p).to(x.dtype)
        mask = torch.bernoulli(keep.expand((x.shape[0],) + (1,) * (x.ndim - 1)))
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over the second axis of ``(batch, tokens, dim)``.

    Uses ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU). With
    ``return_attn=True`` it computes softmax(QK^T) explicitly and also returns the maps
    ``(batch, heads, tokens, tokens)``, for visualisation and as the reference path.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        qkv = self.qkv(x)  # (B, L, 3*D)
        q, k, v = rearrange(qkv, "b l (three h c) -> three b h l c", three=3, h=self.num_heads)
        attn = None
        if return_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, L, L)
            attn = attn.softmax(dim=-1)
            x = F.dropout(attn, self.attn_drop, self.training) @ v  # (B, heads, L, c)
        else:
            drop = self.attn_drop if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, heads, L, c)
        x = rearrange(x, "b h l c -> b l (h c)")
        return self.proj_drop(self.proj(x)), attn


class Block(nn.Module):
    """What every scheme shares: the last attention step (``norm1``/``attn``) and the MLP.

    Subclasses add their extra attention steps and define ``mix``, the token mixing of one
    block; ``forward`` adds the MLP. ``maps`` collects attention maps when asked for.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        drop_path_enabled: bool | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path, drop_path_enabled)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def _extra_step(self, name: str) -> None:
        """Add an attention step with its own norm, qkv/proj and zero-initialised output fc."""
        dim, heads = self.norm1.normalized_shape[0], self.attn.num_heads
        setattr(self, f"{name}_norm1", nn.LayerNorm(dim, eps=1e-6))
        setattr(
            self,
            f"{name}_attn",
            Attention(
                dim,
                heads,
                self.attn.qkv.bias is not None,
                self.attn.attn_drop,
                self.attn.proj_drop.p,
            ),
        )
        fc = nn.Linear(dim, dim)
        nn.init.zeros_(fc.weight)
        nn.init.zeros_(fc.bias)
        setattr(self, f"{name}_fc", fc)

    def _attend(self, name: str, x: Tensor, maps: AttnMaps | None) -> Tensor:
        """Run step ``name`` ("" for norm1/attn): attention of its norm, drop path applied."""
        prefix = f"{name}_" if name else ""
        norm, attn = getattr(self, f"{prefix}norm1"), getattr(self, f"{prefix}attn")
        out, a = attn(norm(x), return_attn=maps is not None)
        if maps is not None:
            maps[name or "attn"] = a
        return self.drop_path(out)

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, grid: Grid, maps: AttnMaps | None = None) -> Tensor:
        x = self.mix(x, grid, maps)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SpaceOnlyBlock(Block):
    """Space (S): each frame attends within itself. Input ``(B*T, 1 + N, D)``, one cls per frame.

    No temporal information is exchanged anywhere; frames are averaged after the last block.
    """

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        return x + self._attend("", x, maps)  # (B*T, 1+N, D)


class JointSpaceTimeBlock(Block):
    """Joint Space-Time (ST): one attention over cls + all T*N patch tokens of the clip."""

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        return x + self._attend("", x, maps)  # (B, 1+N*T, D)


def _spatial_with_cls(
    block: Block, cls: Tensor, x: Tensor, maps: AttnMaps | None
) -> tuple[Tensor, Tensor]:
    """Attention of ``block.attn`` within each of the G groups of ``x`` ``(B, G, L, D)`` (a
    strided view is fine) with cls prepended to each group; returns the residuals for the
    patches ``(B, G, L, D)`` (a view) and for cls ``(B, 1, D)``, the cls outputs averaged over
    the groups (the official handling of cls in divided attention). The cls copies and the
    patches are gathered by one ``cat``: no other copy of the tokens."""
    b, g, n, d = x.shape
    tokens = torch.cat((cls[:, None].expand(b, g, 1, d), x), dim=2)  # (B, G, 1+L, D)
    res = block._attend("", tokens.view(b * g, 1 + n, d), maps).view(b, g, 1 + n, d)
    return res[:, :, 1:], res[:, :, 0].mean(1, keepdim=True)


class DividedSpaceTimeBlock(Block):
    """Divided Space-Time (T+S), the paper's main model, with the official semantics.

    1. Temporal: each patch attends to the patches at its spatial position in all T frames
       (cls excluded), via ``temporal_norm1``/``temporal_attn``; the residual goes through
       ``temporal_fc`` (zero-initialised, so the block starts as an image ViT block).
    2. Spatial: each frame's N patches plus a copy of cls attend via ``norm1``/``attn``; the T
       cls outputs are averaged into one cls residual.
    3. MLP.
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self._extra_step("temporal")

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        t, h, w = grid
        b, d, n = x.shape[0], x.shape[2], h * w
        cls, xp = x[:, :1], x[:, 1:]  # (B, 1, D), (B, N*T, D)
        xt = xp.reshape(b * n, t, d)  # (B*N, T, D): time is fastest, a view
        res = self._attend("temporal", xt, maps)  # (B*N, T, D)
        xp = xp + self.temporal_fc(res.view(b, n * t, d))  # (B, N*T, D)

        xs = xp.view(b, n, t, d).transpose(1, 2)  # (B, T, N, D), a view: frames as groups
        res, cls_res = _spatial_with_cls(self, cls, xs, maps)  # (B, T, N, D) view, (B, 1, D)
        xp = (xp.view(b, n, t, d) + res.transpose(1, 2)).view(b, n * t, d)  # (B, N*T, D)
        return torch.cat((cls + cls_res, xp), dim=1)  # (B, 1+N*T, D)


class SparseLocalGlobalBlock(Block):
    """Sparse Local Global (L+G), as we read the paper (Sec. 3; no public implementation).

    The T x H x W patch grid (H, W in patches) must have even T, H, W.
    1. Local: the grid is cut into four non-overlapping windows of T x H/2 x W/2 patches (all
       frames, one spatial quadrant); each patch attends to the patches of its window. cls is
       excluded, like the temporal step of divided attention. Own ``local_norm1``/``local_attn``,
       residual through zero-initialised ``local_fc``.
    2. Global, sparse: stride 2 along time, rows and columns. The clip is split into the 8
       interleaved sub-grids of equal parity ``(t%2, h%2, w%2)``; each covers the whole clip with
       stride 2, and its patches attend among themselves plus a copy of cls (``norm1``/``attn``).
       The 8 cls outputs are averaged, as divided attention averages its per-frame copies.
    3. MLP. Two attention steps with distinct qkv: same size as divided (121.4M at ViT-Base).
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self._extra_step("local")

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        t, h, w = grid
        if t % 2 or h % 2 or w % 2:
            raise ValueError(
                f"sparse_local_global needs an even patch grid, got T={t}, H={h}, W={w} patches"
            )
        cls, xp = x[:, :1], x[:, 1:]
        xl = rearrange(
            xp, "b (i h j w t) d -> (b i j) (t h w) d", i=2, h=h // 2, j=2, w=w // 2, t=t
        )  # (B*4, T*H/2*W/2, D)
        res = self._attend("local", xl, maps)
        res = rearrange(res, "(b i j) (t h w) d -> b (i h j w t) d", i=2, j=2, h=h // 2, w=w // 2)
        xp = xp + self.local_fc(res)

        xg = rearrange(
            xp, "b (h p w q t s) d -> b (p q s) (h w t) d", p=2, q=2, s=2, h=h // 2, w=w // 2
        )  # (B, 8, N*T/8, D)
        res, cls_res = _spatial_with_cls(self, cls, xg, maps)
        res = rearrange(
            res, "b (p q s) (h w t) d -> b (h p w q t s) d", p=2, q=2, s=2, h=h // 2, w=w // 2
        )
        return torch.cat((cls + cls_res, xp + res), dim=1)


class AxialBlock(Block):
    """Axial (T+W+H), as we read the paper (Sec. 3; no public implementation).

    Three attention steps with distinct qkv, each residual:
    1. Time: each patch over the T patches at its (h, w) position (cls excluded); own
       ``temporal_norm1``/``temporal_attn``, residual through zero-initialised ``temporal_fc``.
    2. Width: each patch over the W patches of its row in its frame (cls excluded); own
       ``width_norm1``/``width_attn``, residual through zero-initialised ``width_fc``.
    3. Height: each patch over the H patches of its column in its frame, plus a copy of cls
       (``norm1``/``attn``); the T*W cls outputs are averaged, as in divided attention.
    4. MLP. Three steps: 156.8M parameters at ViT-Base.
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self._extra_step("temporal")
        self._extra_step("width")

    def mix(self, x: Tensor, grid: Grid, maps: AttnMaps | None) -> Tensor:
        t, h, w = grid
        cls, xp = x[:, :1], x[:, 1:]
        xt = rearrange(xp, "b (h w t) d -> (b h w) t d", h=h, w=w)
        res = self._attend("temporal", xt, maps)  # (B*H*W, T, D)
        xp = xp + self.temporal_fc(rearrange(res, "(b h w) t d -> b (h w t) d", h=h, w=w))

        xw = rearrange(xp, "b (h w t) d -> (b t h) w d", h=h, w=w)
        res = self._attend("width", xw, maps)  # (B*T*H, W, D)
        xp = xp + self.width_fc(rearrange(res, "(b t h) w d -> b (h w t) d", t=t, h=h))

        xh = rearrange(xp, "b (h w t) d -> b (t w) h d", h=h, w=w)  # (B, T*W, H, D)
        res, cls_res = _spatial_with_cls(self, cls, xh, maps)
        res = rearrange(res, "b (t w) h d -> b (h w t) d", t=t, w=w)
        return torch.cat((cls + cls_res, xp + res), dim=1)


BLOCKS: dict[str, type[Block]] = dict(
    zip(ATTENTION_TYPES, (SpaceOnlyBlock, JointSpaceTimeBlock, DividedSpaceTimeBlock,
                          SparseLocalGlobalBlock, AxialBlock), strict=True)
)  # fmt: skip


class PatchEmbed(nn.Module):
    """Each frame cut into P x P patches, linearly embedded (a strided Conv2d, as official)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.proj(x), "bt d h w -> bt (h w) d")  # (B*T, N, D)


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
        asked, each block's attention maps ``{step: (batch, heads, L, L)}``."""
        x, grid = self.embed(x)
        all_maps: list[AttnMaps] = []
        for blk in self.blocks:
            if return_attn:
                maps: AttnMaps = {}
                x = blk(x, grid, maps)
                all_maps.append(maps)
            elif self.grad_checkpointing and self.training and torch.is_grad_enabled():
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
