"""Load weights into a :class:`TimeSformer` from every place they come from, in one function.

Formats recognised (``kind="auto"`` tells them apart):

- ``official``: a facebookresearch/TimeSformer ``.pyth``: ``{"model_state": ..., "cfg": ...}``,
  keys possibly prefixed ``model.`` by the official wrapper.
- ``hf``: a HF transformers ``TimesformerForVideoClassification``/``TimesformerModel`` state
  dict: the same tensors under other names (renamed by :func:`convert_hf_state_dict`).
- ``lightning``: our own Lightning checkpoints (``{"state_dict": ...}``), keys prefixed by the
  module attribute, e.g. ``net.``.
- ``timm``: an ImageNet ViT state dict (timm layout) used to *initialise* a video model the way
  the paper does: patch embedding and blocks copied, ``pos_embed`` resized on the 2-D patch grid
  (bicubic), each extra attention step (``temporal_*``, ``local_*``, ``width_*``) initialised
  from the block's spatial ``attn``/``norm1``, ``*_fc`` and ``time_embed`` left at zero, the
  head dropped when the class count differs.

Every file is read with ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_tsf.models.embeddings import resize_pos_embed, resize_video_embeddings
from lightning_tsf.models.timesformer import TimeSformer

KINDS = ("auto", "official", "hf", "lightning", "timm", "state_dict")

# HF name -> official name; (\d+) is the block index. Applied after "timesformer." is stripped.
_HF_RENAMES: list[tuple[str, str]] = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.time_embeddings$", "time_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.temporal_layernorm\.", r"blocks.\1.temporal_norm1."),
    (
        r"^encoder\.layer\.(\d+)\.temporal_attention\.attention\.qkv\.",
        r"blocks.\1.temporal_attn.qkv.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.temporal_attention\.output\.dense\.",
        r"blocks.\1.temporal_attn.proj.",
    ),
    (r"^encoder\.layer\.(\d+)\.temporal_dense\.", r"blocks.\1.temporal_fc."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]

# prefixes that wrappers put in front of the backbone's names
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "backbone.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message says which keys and shapes."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    kind: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # timm init: copied or resized
    dropped: list[str] = field(default_factory=list)  # present but deliberately not loaded
    head: str = ""  # what happened to the classifier head when the class counts differ

    def __str__(self) -> str:
        lines = [f"loaded {self.kind} checkpoint"]
        for name in ("missing", "unexpected", "initialised", "dropped"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:12]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 12 else ""
                )
                lines.append(f"  {name}: {shown}")
        if self.head:
            lines.append(f"  head: {self.head}")
        return "\n".join(lines)


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> Mapping:
    """``torch.load`` with ``weights_only=True`` and an error that says what went wrong.

    ``mmap``: map the tensors instead of reading them (for a caller that wants a checkpoint's
    small entries, e.g. its input record, without loading gigabytes of weights and optimizer
    state); files in torch's old non-zip format are read whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); download or copy it again")
    try:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # the legacy format cannot be mapped
                pass
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refusing to unpickle objects other than tensors and plain containers "
            f"(weights_only=True): {_first_line(err)}"
        ) from err
    except Exception as err:  # torch raises many kinds for a cut-off or foreign file
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt? "
            f"({type(err).__name__}: {_first_line(err)}); download or copy it again"
        ) from err


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def checkpoint_state(obj: Mapping) -> Mapping:
    """The state dict inside a loaded checkpoint: an official file's ``model_state``, a
    Lightning file's ``state_dict``, a timm training file's ``model``, else the dict itself."""
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return obj[key]
    return obj


def head_classes(state: Mapping[str, Tensor]) -> int | None:
    """Class count of the classifier head in a state dict (ours, official, timm or HF names)."""
    for key, value in state.items():
        if key.endswith(("head.weight", "classifier.weight")) and isinstance(value, Tensor):
            return int(value.shape[0])
    return None


def convert_hf_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """HF transformers TimeSformer names -> official names; tensors unchanged."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("timesformer.")
        for pattern, repl in _HF_RENAMES:
            new, n = re.subn(pattern, repl, name)
            if n:
                name = new
                break
        else:
            raise CheckpointError(f"unknown key in HF TimeSformer state dict: {key!r}")
        out[name] = value
    return out


def detect_scheme(state: Mapping[str, Tensor]) -> str | None:
    """The attention scheme a state dict's keys tell (official names, any wrapper prefix):
    ``local_attn`` sparse local-global, ``width_attn`` axial, ``temporal_attn`` divided,
    ``time_embed`` alone joint, neither space-only; None for a state dict with no blocks."""
    parts = [re.search(r"(?:^|\.)blocks\.\d+\.([^.]+)", k) for k in state]
    names = {m.group(1) for m in parts if m} | {"time_embed" for k in state
                                                if k.endswith("time_embed")}  # fmt: skip
    if not any(parts):
        return None
    for marker, scheme in (("local_attn", "sparse_local_global"), ("width_attn", "axial"),
                           ("temporal_attn", "divided_space_time")):  # fmt: skip
        if marker in names:
            return scheme
    return "joint_space_time" if "time_embed" in names else "space_only"


def infer_net_config(state: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """TimeSformer arguments read off an official/HF/plain state dict's tensors: scheme,
    patch size, width, depth, image size (patch grid), frames (``time_embed``), and the heads
    of the preset of those sizes. None when they match no preset (heads cannot be read)."""
    if any(k.removeprefix("timesformer.").startswith(("embeddings.", "encoder.")) for k in state):
        state = convert_hf_state_dict(state)
    state = _strip_prefixes(state, {"pos_embed", "cls_token"})
    proj, pos = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if not isinstance(proj, Tensor) or not isinstance(pos, Tensor):
        return None
    from lightning_tsf.models.presets import PRESETS

    patch, dim = int(proj.shape[-1]), int(proj.shape[0])
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    config: dict[str, Any] = {"patch_size": patch, "embed_dim": dim, "depth": depth,
                              "img_size": grid * patch,
                              "attention_type": detect_scheme(state) or "divided_space_time"}
    if isinstance(state.get("time_embed"), Tensor):
        config["num_frames"] = int(state["time_embed"].shape[1])
    for sizes in PRESETS.values():
        if (sizes["patch_size"], sizes["embed_dim"], sizes["depth"]) == (patch, dim, depth):
            return {"num_frames": sizes["num_frames"], "num_heads": sizes["num_heads"], **config}
    return None


def _dims(t: Tensor) -> str:
    """A shape as ``1x197x768``."""
    return "x".join(map(str, t.shape))


def _shown(items: list[str], most: int = 4) -> str:
    """The first ``most`` items, then how many more: one readable line."""
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _strip_prefixes(state: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Remove wrapper prefixes (``model.``, ``net.``, ``module.``, ...) where all keys have one."""
    state = dict(state)
    changed = True
    while changed and state and not (set(state) & expected):
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _detect(obj: Mapping, model: TimeSformer) -> tuple[str, Mapping[str, Tensor]]:
    state = checkpoint_state(obj)
    if state is obj.get("model_state"):
        return "official", state
    if state is obj.get("state_dict"):
        return "lightning", state
    obj = state  # a plain state dict, or a timm/DeiT training file's "model"
    keys = list(obj)
    if any(k.removeprefix("timesformer.").startswith(("embeddings.", "encoder.")) for k in keys):
        return "hf", obj
    plain = _strip_prefixes(obj, set(model.state_dict()))
    if hasattr(model, "time_embed") and "time_embed" not in plain:
        return "timm", obj
    return "state_dict", obj


def _timm_to_video(
    state: dict[str, Tensor], model: TimeSformer, report: LoadReport
) -> dict[str, Tensor]:
    """ImageNet ViT weights -> a state dict for the video model (paper's initialisation)."""
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "pos_embed" and value.shape != target["pos_embed"].shape:
            g = model.img_size // model.patch_size
            value = resize_pos_embed(value, (g, g))
            report.initialised.append("pos_embed (resized)")
        out[key] = value
    # extra attention steps start as copies of the block's spatial attention (paper, App. A)
    for key in target:
        m = re.match(r"^(blocks\.\d+)\.(temporal|local|width)_(attn\..*|norm1\..*)$", key)
        if m and key not in out:
            src = f"{m.group(1)}.{m.group(3)}"
            if src in out:
                out[key] = out[src].clone()
                report.initialised.append(f"{key} <- {src}")
    return out


def load_checkpoint(
    model: TimeSformer,
    source: str | Path | Mapping,
    *,
    kind: str = "auto",
    strict: bool = True,
    replace_head: bool = True,
    resize_embeddings: bool = False,
) -> LoadReport:
    """Load weights from a file or an in-memory checkpoint into ``model``.

    ``kind``: one of ``KINDS``; ``auto`` detects it. ``strict``: raise :class:`CheckpointError`
    on keys the model lacks or that the checkpoint lacks (beyond those a ``timm`` init is
    expected to lack: ``time_embed``, ``*_fc``, a dropped head), and on any shape mismatch.
    ``replace_head``: a checkpoint of any kind whose head has another class count than the
    model (fine-tuning K400 weights on 3 classes) keeps the model's freshly initialised head
    and says so in the report; False refuses with a :class:`CheckpointError`.
    ``resize_embeddings``: a video checkpoint of another clip size (fine-tuning) has its
    ``pos_embed``/``time_embed`` resized as the forward resizes them; False (export, the zoo's
    check) refuses the mismatch, so a file is never silently run at a size it does not have.
    Returns a :class:`LoadReport`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid: {', '.join(KINDS)}")
    obj = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a checkpoint dict, got {type(obj).__name__}")
    detected, state = _detect(obj, model)
    if kind == "auto":
        kind = detected
    elif kind in {"official", "lightning"}:
        state = obj["model_state" if kind == "official" else "state_dict"]
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if kind == "hf":
        state = convert_hf_state_dict(state)
    target = model.state_dict()
    state = _strip_prefixes(state, set(target))
    report = LoadReport(kind=kind)
    allowed_missing = _drop_other_head(state, target, report, replace_head)
    if kind == "timm":
        state = _timm_to_video(state, model, report)
        allowed_missing |= {k for k in target if k == "time_embed" or re.search(r"_fc\.", k)}
        extra = [k for k in state if k not in target]
        report.dropped += extra  # e.g. pre_logits.*, fc_norm.*: ImageNet-only layers
        state = {k: v for k, v in state.items() if k in target}
    elif resize_embeddings:
        state, notes = resize_video_embeddings(state, model)
        report.initialised += notes

    report.missing = sorted(k for k in target if k not in state)
    report.unexpected = sorted(k for k in state if k not in target)
    _check_fit(model, state, target, report, strict, allowed_missing)
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    return report


def _drop_other_head(
    state: dict[str, Tensor], target: dict[str, Tensor], report: LoadReport, replace_head: bool
) -> set[str]:
    """Remove a head of another class count from ``state`` (the model keeps its fresh one, the
    report says so) or refuse it; return the keys now allowed to be missing."""
    heads = [k for k in ("head.weight", "head.bias") if k in state and k in target]
    if not any(state[k].shape != target[k].shape for k in heads):
        return set()
    have, want = head_classes(state), head_classes(target)
    if not replace_head:
        raise CheckpointError(
            f"{report.kind} checkpoint: its head has {have} classes, the model {want}; "
            "replace_head=False refuses to replace it"
        )
    for k in heads:
        del state[k]
    report.dropped += heads
    report.head = f"replaced: checkpoint {have} classes -> model {want}, newly initialised"
    return set(heads)


def _check_fit(
    model: TimeSformer,
    state: dict[str, Tensor],
    target: dict[str, Tensor],
    report: LoadReport,
    strict: bool,
    allowed_missing: set[str],
) -> None:
    """Raise a :class:`CheckpointError` naming what does not fit: any shape mismatch, and with
    ``strict`` unexplained missing keys and keys unknown to the model."""
    kind = report.kind
    mismatched = [
        f"{k} {_dims(v)} vs model {_dims(target[k])}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    unexplained = [k for k in report.missing if k not in allowed_missing]
    if mismatched or (strict and (unexplained or report.unexpected)):
        parts = [f"shapes differ: {_shown(mismatched)}"] if mismatched else []
        if strict and unexplained:
            parts.append(f"missing from the checkpoint: {_shown(unexplained)}")
        if strict and report.unexpected:
            parts.append(f"unknown to the model: {_shown(report.unexpected)}")
        told = detect_scheme(state)
        hint = ""
        if told and told != model.attention_type:
            hint = f"; its keys say attention_type={told!r}"
        raise CheckpointError(
            f"{kind} checkpoint does not fit the model (attention_type="
            f"{model.attention_type!r}, depth {len(model.blocks)}, {model.num_frames} frames, "
            f"{model.img_size} px): " + "; ".join(parts) + hint
        )
