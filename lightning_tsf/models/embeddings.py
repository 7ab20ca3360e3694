"""Position and time embeddings moved between sizes: an ImageNet ViT's ``pos_embed`` onto the
video model's patch grid (bicubic, the paper's initialisation), and a video checkpoint's
``pos_embed``/``time_embed`` onto another clip size for fine-tuning (nearest neighbour, as the
model's forward and the official code resize them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lightning_tsf.models.timesformer import TimeSformer


def resize_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """(1, 1+h*w, D) -> (1, 1+grid_h*grid_w, D), bicubic on the 2-D patch grid, cls kept."""
    side = int(round((pos.shape[1] - 1) ** 0.5))
    other = rearrange(pos[:, 1:], "1 (h w) d -> 1 d h w", h=side).float()
    other = F.interpolate(other, size=grid, mode="bicubic", align_corners=False)
    return torch.cat((pos[:, :1], rearrange(other, "1 d h w -> 1 (h w) d").to(pos.dtype)), dim=1)


def resize_video_embeddings(
    state: dict[str, Tensor], model: TimeSformer
) -> tuple[dict[str, Tensor], list[str]]:
    """A video checkpoint trained at another clip size (fine-tuning the 8x224 K400 weights at
    16 frames or 112 px): ``pos_embed`` and ``time_embed`` resized the way the model's forward
    (and the official code) resizes them for such inputs, nearest neighbour on the patch grid
    and over time, so the model built at the new size computes what the checkpoint's model
    computes on those inputs. Returns the state and one note per embedding resized."""
    target, out, notes = model.state_dict(), dict(state), []
    pos, te = state.get("pos_embed"), state.get("time_embed")
    want = target.get("pos_embed")
    if pos is not None and want is not None and pos.shape[::2] == want.shape[::2] \
            and pos.shape != want.shape:  # fmt: skip
        side, g = int(round((pos.shape[1] - 1) ** 0.5)), model.img_size // model.patch_size
        if side * side == pos.shape[1] - 1 and g * g == want.shape[1] - 1:
            grid = rearrange(pos[:, 1:], "1 (h w) d -> 1 d h w", h=side)
            grid = F.interpolate(grid, size=(g, g), mode="nearest")
            out["pos_embed"] = torch.cat((pos[:, :1], rearrange(grid, "1 d h w -> 1 (h w) d")), 1)
            notes.append(f"pos_embed (resized {side}x{side} -> {g}x{g}, nearest)")
    want = target.get("time_embed")
    if te is not None and want is not None and te.shape[::2] == want.shape[::2] \
            and te.shape != want.shape:  # fmt: skip
        t = want.shape[1]
        resized = F.interpolate(te.transpose(1, 2), size=t, mode="nearest")
        out["time_embed"] = resized.transpose(1, 2)
        notes.append(f"time_embed (resized {te.shape[1]} -> {t} frames, nearest)")
    return out, notes
