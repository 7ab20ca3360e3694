"""The five attention schemes of the paper (Sec. 3), one block class each, chosen by name from
``BLOCKS``. Token layout: see :mod:`lightning_tsf.models.timesformer`.

With the token switches (:mod:`lightning_tsf.models.tokens`) a block also receives a
:class:`~lightning_tsf.models.tokens.TokenState`: its sizes bias the attention step that
carries cls (``norm1``/``attn``), and ToMe merges tokens between attention and MLP.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from lightning_tsf.models.layers import Attention, AttnMaps, DropPath, Grid, Mlp
from lightning_tsf.models.names import ATTENTION_TYPES
from lightning_tsf.models.tokens import StepCtx, TokenState


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

    def _attend(
        self, name: str, x: Tensor, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        """Run step ``name`` ("" for norm1/attn): attention of its norm, drop path applied;
        ``ctx`` (token switches): the step's attention bias, and where its keys go."""
        prefix = f"{name}_" if name else ""
        norm, attn = getattr(self, f"{prefix}norm1"), getattr(self, f"{prefix}attn")
        if ctx is None:
            out, a = attn(norm(x), return_attn=maps is not None)
        else:
            out, a = attn(norm(x), maps is not None, ctx.bias, ctx.keys)
        if maps is not None:
            maps[name or "attn"] = a
        return self.drop_path(out)

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        raise NotImplementedError

    def forward(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None = None, state: TokenState | None = None
    ) -> Tensor | tuple[Tensor, TokenState]:
        """The block; with a token ``state`` (switches on), returns ``(x, state)``: ToMe
        merges between attention and MLP, as in the paper."""
        if state is None:
            x = self.mix(x, grid, maps)
            return x + self.drop_path(self.mlp(self.norm2(x)))
        ctx = state.ctx()
        x = self.mix(x, grid, maps, ctx)
        if ctx.keys is not None:
            x, state = state.merge(x, ctx.keys["k"])
        return x + self.drop_path(self.mlp(self.norm2(x))), state


class SpaceOnlyBlock(Block):
    """Space (S): each frame attends within itself. Input ``(B*T, 1 + N, D)``, one cls per frame.

    No temporal information is exchanged anywhere; frames are averaged after the last block.
    """

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        return x + self._attend("", x, maps, ctx)  # (B*T, 1+N, D)


class JointSpaceTimeBlock(Block):
    """Joint Space-Time (ST): one attention over cls + all T*N patch tokens of the clip."""

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        return x + self._attend("", x, maps, ctx)  # (B, 1+N*T, D)


def _spatial_with_cls(
    block: Block, cls: Tensor, x: Tensor, maps: AttnMaps | None, ctx: StepCtx | None = None
) -> tuple[Tensor, Tensor]:
    """Attention of ``block.attn`` within each of the G groups of ``x`` ``(B, G, L, D)`` (a
    strided view is fine) with cls prepended to each group; returns the residuals for the
    patches ``(B, G, L, D)`` (a view) and for cls ``(B, 1, D)``, the cls outputs averaged over
    the groups (the official handling of cls in divided attention). The cls copies and the
    patches are gathered by one ``cat``: no other copy of the tokens."""
    b, g, n, d = x.shape
    tokens = torch.cat((cls[:, None].expand(b, g, 1, d), x), dim=2)  # (B, G, 1+L, D)
    res = block._attend("", tokens.view(b * g, 1 + n, d), maps, ctx).view(b, g, 1 + n, d)
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

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        t = grid.t
        b, d, n = x.shape[0], x.shape[2], (x.shape[1] - 1) // grid.t  # n: positions kept
        cls, xp = x[:, :1], x[:, 1:]  # (B, 1, D), (B, N*T, D)
        xt = xp.reshape(b * n, t, d)  # (B*N, T, D): time is fastest, a view
        res = self._attend("temporal", xt, maps)  # (B*N, T, D)
        xp = xp + self.temporal_fc(res.view(b, n * t, d))  # (B, N*T, D)

        xs = xp.view(b, n, t, d).transpose(1, 2)  # (B, T, N, D), a view: frames as groups
        res, cls_res = _spatial_with_cls(self, cls, xs, maps, ctx)  # (B,T,N,D) view, (B,1,D)
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

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        t, h, w = grid  # the token switches are refused for this scheme: ctx is None
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

    def mix(
        self, x: Tensor, grid: Grid, maps: AttnMaps | None, ctx: StepCtx | None = None
    ) -> Tensor:
        t, h, w = grid  # the token switches are refused for this scheme: ctx is None
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
