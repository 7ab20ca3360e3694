"""The layers of :mod:`lightning_tsf.models.timesformer`: attention, MLP, stochastic depth,
patch embedding, and the patch grid every block receives."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

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

    def forward(
        self,
        x: Tensor,
        return_attn: bool = False,
        bias: Tensor | None = None,
        keys: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``bias``: added to the attention logits, broadcast to ``(batch, heads, L, L)`` (token
        switches: ToMe's proportional attention, ``log size``; ``-inf`` masks padding).
        ``keys``: when given, receives ``keys["k"]``, the keys averaged over heads
        ``(batch, L, c)`` (ToMe's merge metric)."""
        qkv = self.qkv(x)  # (B, L, 3*D)
        q, k, v = rearrange(qkv, "b l (three h c) -> three b h l c", three=3, h=self.num_heads)
        if keys is not None:
            keys["k"] = k.mean(1)
        attn = None
        if return_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, L, L)
            if bias is not None:
                attn = attn + bias
            attn = attn.softmax(dim=-1)
            x = F.dropout(attn, self.attn_drop, self.training) @ v  # (B, heads, L, c)
        else:
            drop = self.attn_drop if self.training else 0.0
            if bias is None:
                x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, heads, L, c)
            else:
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                                   dropout_p=drop)  # fmt: skip
        x = rearrange(x, "b h l c -> b l (h c)")
        return self.proj_drop(self.proj(x)), attn


class PatchEmbed(nn.Module):
    """Each frame cut into P x P patches, linearly embedded (a strided Conv2d, as official)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.proj(x), "bt d h w -> bt (h w) d")  # (B*T, N, D)
