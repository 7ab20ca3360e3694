"""Named sizes: the paper's variants (any attention scheme) and tiny/small ones for tests.

``create_model("timesformer_hr", attention_type="joint_space_time", num_classes=600)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a model is built: the names are read without torch
    from lightning_tsf.models.timesformer import TimeSformer

_VIT_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's variants (Sec. 4.4): ViT-Base with 8x224, 16x448, 96x224 clips
    "timesformer": dict(img_size=224, num_frames=8, **_VIT_BASE),
    "timesformer_hr": dict(img_size=448, num_frames=16, **_VIT_BASE),
    "timesformer_l": dict(img_size=224, num_frames=96, **_VIT_BASE),
    # ViT-Small-like, for CPU experiments and benchmarks
    "timesformer_small": dict(
        img_size=112, patch_size=16, num_frames=8, embed_dim=384, depth=4, num_heads=6
    ),
    # runs a CPU forward/backward in milliseconds, for tests
    "timesformer_tiny": dict(
        img_size=32, patch_size=8, num_frames=4, embed_dim=64, depth=2, num_heads=4
    ),
}


def create_model(name: str, **overrides: Any) -> TimeSformer:
    """Build preset ``name``; keyword ``overrides`` replace any of its constructor arguments."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    from lightning_tsf.models.timesformer import TimeSformer

    return TimeSformer(**{**PRESETS[name], **overrides})


def preset_of(model: TimeSformer) -> str | None:
    """The name of the preset whose sizes ``model`` has (frames and scheme aside), or None."""
    have = {"img_size": model.img_size, "patch_size": model.patch_size,
            "embed_dim": model.embed_dim, "depth": len(model.blocks),
            "num_heads": model.blocks[0].attn.num_heads}  # fmt: skip
    for name, sizes in PRESETS.items():
        if all(sizes[k] == v for k, v in have.items()) and sizes["num_frames"] == model.num_frames:
            return name
    for name, sizes in PRESETS.items():
        if all(sizes[k] == v for k, v in have.items()):
            return name
    return None
