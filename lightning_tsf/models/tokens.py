"""Fewer tokens for the same answer: three switches of :class:`~lightning_tsf.models.TimeSformer`.

* ``static_drop`` (RLT, Choudhury et al., NeurIPS 2024): a patch whose pixels differ from the
  same patch of the previous frame by less than the threshold (mean absolute difference over
  its pixels and channels, in the units of the model's input) is dropped before the blocks; the
  first frame is kept whole. Joint attention drops patches; the schemes that need the frames x
  positions grid (space-only, divided) drop *tubes*: a position static in every frame.
* ``merge_r`` (ToMe, Bolya et al., ICLR 2023): in every block, between attention and MLP,
  bipartite soft matching merges ``r`` token pairs (size-weighted average; attention adds
  ``log size`` to the logits, "proportional attention"). Joint: over all tokens; space-only:
  within each frame (image ToMe); divided: ``r`` *tube* pairs, the same merge in every frame,
  matched on the keys of the whole tube.
* ``tube_drop`` (VideoMAE-style tube masking, training only): a random fraction of the spatial
  positions is dropped in every frame of a clip, drawn from torch's generator per clip.

Every switch keeps each kept token's position and time embedding (added before any dropping).
Clips of a batch that keep different counts are padded to the largest; padding has size 0,
which proportional attention turns into a ``-inf`` logit: padding is never attended to.
Sparse local-global and axial attention need the whole patch grid and refuse every switch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

SWITCHES = ("static_drop", "merge_r", "tube_drop")

# The unit each switch acts on in each scheme; None: refused (see WHY_NOT).
SUPPORT: dict[str, dict[str, str | None]] = {
    "space_only": {"static_drop": "tubes", "merge_r": "tokens of each frame", "tube_drop": "tubes"},
    "joint_space_time": {"static_drop": "patches", "merge_r": "tokens", "tube_drop": "tubes"},
    "divided_space_time": {"static_drop": "tubes", "merge_r": "tubes", "tube_drop": "tubes"},
    "sparse_local_global": dict.fromkeys(SWITCHES),
    "axial": dict.fromkeys(SWITCHES),
}
WHY_NOT = {
    "sparse_local_global": "its local windows and stride-2 global groups need the whole even "
    "T x H x W patch grid",
    "axial": "its width and height steps need whole rows and columns of patches",
}


@dataclass(frozen=True)
class TokenConfig:
    """The three switches; all off by default (the model is then exactly the unmodified one).

    Args:
        static_drop: threshold of static-patch dropping (0: off); mean absolute difference to
            the previous frame's patch, in input units (normalised pixels: with std 0.225,
            0.1 is about 6/255 of the pixel range).
        merge_r: token pairs ToMe merges in every block (0: off).
        tube_drop: fraction of spatial positions dropped in every frame, in training (0: off).
    """

    static_drop: float = 0.0
    merge_r: int = 0
    tube_drop: float = 0.0

    def __post_init__(self) -> None:
        if not float(self.static_drop) >= 0:
            raise ValueError(f"tokens.static_drop must be >= 0, got {self.static_drop}")
        if int(self.merge_r) != self.merge_r or self.merge_r < 0:
            raise ValueError(f"tokens.merge_r must be an integer >= 0, got {self.merge_r}")
        if not 0 <= float(self.tube_drop) < 1:
            raise ValueError(f"tokens.tube_drop must be in [0, 1), got {self.tube_drop}")
        object.__setattr__(self, "merge_r", int(self.merge_r))

    @property
    def on(self) -> bool:
        """Any switch set."""
        return any(getattr(self, name) for name in SWITCHES)

    def to_dict(self) -> dict[str, float]:
        """The switches that are on (``{}`` when all are off): the saved form."""
        return {k: v for k, v in asdict(self).items() if v}

    def describe(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self.to_dict().items()) or "off"

    def updated(self, **changes: Any) -> TokenConfig:
        """This config with the switches given (None keeps the current value)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def coerce(cls, value: TokenConfig | dict[str, Any] | None) -> TokenConfig:
        """A config from None, a dict (as saved) or a config; unknown keys are an error."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"tokens: unknown switch(es) {', '.join(unknown)}; valid: "
                             f"{', '.join(SWITCHES)}")  # fmt: skip
        return cls(**dict(value))


def check_support(scheme: str, config: TokenConfig) -> None:
    """One-line ``ValueError`` when a switch that is on does not apply to ``scheme``."""
    for name in SWITCHES:
        if getattr(config, name) and SUPPORT[scheme][name] is None:
            raise ValueError(f"tokens.{name} does not apply to {scheme}: {WHY_NOT[scheme]}; "
                             "switch it off (docs/model.md)")  # fmt: skip


# ------------------------------------------------------------------------ choosing tokens
def static_keep(video: Tensor, patch: int, threshold: float) -> Tensor:
    """RLT's test, ``(B, N, T)`` bool in the blocks' ``(n t)`` order: token (position n, frame
    t) is kept unless the mean absolute difference of its pixels (all channels) to the same
    patch of frame t-1 is below ``threshold``. Frame 0 is always kept."""
    diff = (video[:, :, 1:] - video[:, :, :-1]).abs().float()  # (B, C, T-1, H, W)
    change = F.avg_pool3d(diff, (1, patch, patch)).mean(1)  # (B, T-1, h, w)
    change = rearrange(change, "b t h w -> b (h w) t")
    first = torch.ones_like(change[..., :1], dtype=torch.bool)
    return torch.cat((first, change >= threshold), dim=-1)


def tube_positions(batch: int, n: int, fraction: float, device: torch.device) -> Tensor:
    """``(B, K)`` sorted positions kept by tube dropping, ``K = n - round(fraction * n)`` (at
    least 1), drawn per clip from torch's global generator (so resume replays them)."""
    k = max(1, n - round(fraction * n))
    return torch.rand(batch, n, device=device).argsort(dim=1)[:, :k].sort(dim=1).values


def _packed(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Indices ``(B, L)`` of the kept entries of ``keep`` ``(B, M)`` in order, padded to the
    largest count L (at least 1) with dropped ones, and whether each is real ``(B, L)``."""
    counts = keep.sum(1)
    length = max(int(counts.max()), 1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :length]
    valid = torch.arange(length, device=keep.device) < counts[:, None]
    return order, valid


def take_positions(x: Tensor, pos: Tensor, scheme: str, t: int) -> Tensor:
    """The tokens of spatial positions ``pos`` ``(B, K)`` in every frame (cls kept)."""
    b, k, d = pos.shape[0], pos.shape[1], x.shape[-1]
    if scheme == "space_only":  # (B*T, 1+N, D)
        xs = x.view(b, t, x.shape[1], d)
        idx = pos[:, None, :, None].expand(b, t, k, d)
        patches = xs[:, :, 1:].gather(2, idx)
        return torch.cat((xs[:, :, :1], patches), dim=2).view(b * t, 1 + k, d)
    xp = x[:, 1:].view(b, -1, t, d)  # (B, N, T, D): the (n t) order
    patches = xp.gather(1, pos[:, :, None, None].expand(b, k, t, d)).view(b, k * t, d)
    return torch.cat((x[:, :1], patches), dim=1)


# ------------------------------------------------------------------------ the blocks' state
class StepCtx(NamedTuple):
    """What one block's cls-carrying attention step gets: the bias (or None) and, when the
    block merges, a dict that receives its keys averaged over heads."""

    bias: Tensor | None
    keys: dict[str, Tensor] | None


@dataclass
class TokenState:
    """Token sizes through the blocks, in the scheme's layout: joint ``(B, 1+L)``, space-only
    ``(B*T, 1+L)`` (cls first), divided ``(B, L)`` per tube; None: every size is 1. ``r``:
    ToMe pairs merged per block."""

    scheme: str
    t: int
    size: Tensor | None
    r: int = 0

    def ctx(self) -> StepCtx:
        return StepCtx(self._bias(), {} if self.r else None)

    def _bias(self) -> Tensor | None:
        """Proportional attention: ``log size`` of every key (cls has size 1)."""
        if self.size is None:
            return None
        size = self.size
        if self.scheme == "divided_space_time":  # per frame: cls + the tubes
            size = torch.cat((torch.ones_like(size[:, :1]), size), dim=1)
            size = size.repeat_interleave(self.t, dim=0)  # (B*T, 1+L): frames as groups
        return size.log()[:, None, None, :]

    def merge(self, x: Tensor, keys: Tensor) -> tuple[Tensor, TokenState]:
        """ToMe's merge after the block's attention; ``keys`` from its last attention step.
        Padding (size 0) takes no part in a match and stays behind the real tokens, so a clip
        merges as it would alone."""
        if self.scheme != "divided_space_time":  # every token; cls protected
            size = self.size if self.size is not None else torch.ones_like(x[..., 0])
            r = min(self.r, (x.shape[1] - 1) // 2)
            if r <= 0:  # too few tokens left to merge
                return x, self
            match = bipartite_soft_matching(keys, r, True, self._valid(size))
            x, size = _padding_last(*merge_wavg(x, size, *match), self.size is not None)
            return x, replace(self, size=size)
        b, d, t = x.shape[0], x.shape[2], self.t
        tubes = x[:, 1:].reshape(b, -1, t * d)  # (B, L, T*D): (n t) order, one row per tube
        metric = rearrange(keys[:, 1:], "(b t) n c -> b n (t c)", t=t)  # the whole tube's keys
        size = self.size if self.size is not None else torch.ones_like(tubes[..., 0])
        r = min(self.r, tubes.shape[1] // 2)
        if r <= 0:
            return x, self
        match = bipartite_soft_matching(metric, r, False, self._valid(size))
        tubes, size = _padding_last(*merge_wavg(tubes, size, *match), self.size is not None)
        return torch.cat((x[:, :1], tubes.view(b, -1, d)), dim=1), replace(self, size=size)

    def _valid(self, size: Tensor) -> Tensor | None:
        return size > 0 if self.size is not None else None


def _padding_last(x: Tensor, size: Tensor, padded: bool) -> tuple[Tensor, Tensor]:
    """Tokens of size 0 moved behind the others, the order of the others kept."""
    if not padded:
        return x, size
    order = torch.argsort((size == 0).to(torch.int8), dim=1, stable=True)
    return x.gather(1, order[..., None].expand_as(x)), size.gather(1, order)


def reduce_input(
    config: TokenConfig, scheme: str, video: Tensor, x: Tensor, t: int, patch: int, training: bool
) -> tuple[Tensor, TokenState | None]:
    """Embedded tokens ``x`` (layout of ``scheme``) after tube dropping (in training) and
    static dropping, and the state the blocks carry (None: nothing to carry)."""
    b = video.shape[0]
    n = (x.shape[1] - 1) if scheme == "space_only" else (x.shape[1] - 1) // t
    keep = static_keep(video, patch, config.static_drop) if config.static_drop else None
    if config.tube_drop and training:
        pos = tube_positions(b, n, config.tube_drop, x.device)
        x = take_positions(x, pos, scheme, t)
        if keep is not None:
            keep = keep.gather(1, pos[..., None].expand(-1, -1, t))
    size = None
    if keep is not None and scheme == "joint_space_time":  # patches: (n t) order
        order, valid = _packed(keep.flatten(1))
        idx = order[..., None].expand(-1, -1, x.shape[-1])
        x = torch.cat((x[:, :1], x[:, 1:].gather(1, idx)), dim=1)
        size = torch.cat((valid.new_ones(b, 1), valid), dim=1).to(x.dtype)
    elif keep is not None:  # tubes: a position static in every frame after the first
        order, valid = _packed(keep[..., 1:].any(-1) if t > 1 else keep[..., 0])
        x = take_positions(x, order, scheme, t)
        size = valid.to(x.dtype)
        if scheme == "space_only":
            size = torch.cat((size.new_ones(b, 1), size), 1).repeat_interleave(t, dim=0)
    if size is not None and bool(size.min() > 0):
        size = None  # nothing padded: every size is 1
    if size is None and not config.merge_r:
        return x, None
    return x, TokenState(scheme, t, size, config.merge_r)


# ------------------------------------------------------------------------ ToMe
def bipartite_soft_matching(
    metric: Tensor, r: int, protect_first: bool, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """ToMe's bipartite soft matching on ``metric`` ``(B, L, C)``: tokens alternate into sets
    A (even indices) and B (odd); each A token's most similar B token (cosine) is its edge; the
    ``r`` A tokens with the most similar edges merge into their B tokens. Returns indices into
    A of the unmerged ``(B, |A|-r)`` and merged ``(B, r)`` tokens, and into B of the merged
    ones' destinations ``(B, r)``. ``protect_first``: token 0 (cls) never merges.
    ``valid`` ``(B, L)``: False marks padding, which no token merges into and which merges
    only after every real token (into anything: it weighs nothing)."""
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(-1, -2)  # (B, |A|, |B|)
        if valid is not None:  # below any cosine (>= -1), above cls's -inf
            scores = scores.masked_fill(~valid[:, None, 1::2], -1e4)
            scores = scores.masked_fill(~valid[:, ::2, None], -2e4)
        if protect_first:
            scores[:, 0, :] = -torch.inf
        node_max, node_idx = scores.max(dim=-1)
        edges = node_max.argsort(dim=-1, descending=True, stable=True)
        unmerged, src = edges[:, r:], edges[:, :r]
        dst = node_idx.gather(1, src)
        if protect_first:  # cls back in front
            unmerged = unmerged.sort(dim=1).values
    return unmerged, src, dst


def merge_wavg(
    x: Tensor, size: Tensor, unmerged: Tensor, src: Tensor, dst: Tensor
) -> tuple[Tensor, Tensor]:
    """Merge ``x`` ``(B, L, D)`` by the matching: each merged token is the size-weighted mean
    of its sources; returns ``(B, L-r, D)`` (unmerged A tokens, then the B tokens) and the
    summed sizes ``(B, L-r)``. A token of size 0 (padding) adds nothing."""

    def merge(v: Tensor) -> Tensor:
        a, b = v[:, ::2], v[:, 1::2]
        c = v.shape[-1]
        kept = a.gather(1, unmerged[..., None].expand(-1, -1, c))
        moved = a.gather(1, src[..., None].expand(-1, -1, c))
        b = b.scatter_reduce(1, dst[..., None].expand(-1, -1, c), moved, reduce="sum")
        return torch.cat((kept, b), dim=1)

    total = merge(x * size[..., None])
    size = merge(size[..., None])
    return total / size.clamp(min=1e-6), size[..., 0]
