"""Per-video aggregation of view scores: the one rule (softmax rows averaged per video) used by
``tsf test``/``predict``, the dashboard callbacks and the Predictor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


def average_views(video_index: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Average the rows of ``scores`` ``(N, K)`` that belong to the same video.

    ``video_index`` ``(N,)`` names each row's video. Returns ``(videos, mean)``: the distinct
    video indices in ascending order ``(V,)`` and their mean scores ``(V, K)`` (float32).
    """
    videos, inverse = torch.unique(video_index.long().cpu(), return_inverse=True)
    x = scores.detach().float().cpu()
    total = torch.zeros(len(videos), x.shape[1]).index_add_(0, inverse, x)
    count = torch.bincount(inverse, minlength=len(videos)).clamp_min(1).unsqueeze(1)
    return videos, total / count


@dataclass
class VideoScores:
    """Per-video results averaged from their views: ``video_index`` ``(V,)`` ascending,
    ``labels`` ``(V,)``, ``paths``, ``rows`` (name → ``(V, K)`` mean over the video's valid
    views) and ``errors`` (path → one-line reason) of the videos no view of which decoded."""

    video_index: Tensor
    labels: Tensor
    paths: list[str]
    rows: dict[str, Tensor]
    errors: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.video_index)


class ViewAccumulator:
    """The one per-video accumulator: view rows come in batch by batch (``tsf test``,
    ``tsf predict``, the dashboard callbacks, :class:`~lightning_tsf.predictor.Predictor`),
    whole videos go out averaged with :func:`average_views`.

    :meth:`complete` hands out the videos whose views are all in (streaming: predict, the
    Predictor); :meth:`result` all of them (test). Under DDP, :meth:`state` of every rank is
    gathered and :meth:`merge`-d first.
    """

    def __init__(self) -> None:
        self._videos: dict[int, dict[str, Any]] = {}

    def add(
        self,
        video_index: Sequence[int] | Tensor,
        label: Sequence[int] | Tensor,
        path: Sequence[str],
        valid: Sequence[bool] | Tensor | None = None,
        errors: Sequence[str] | None = None,
        **rows: Tensor,
    ) -> None:
        """One batch of views: per view its video, label, path, whether it decoded (and why
        not, in ``errors``); ``rows`` hold one row per *valid* view, in batch order."""
        vids = torch.as_tensor(video_index).tolist()
        labels = torch.as_tensor(label).tolist()
        ok = [True] * len(vids) if valid is None else torch.as_tensor(valid).bool().tolist()
        if len(ok) == 1 and len(vids) > 1:
            ok = ok * len(vids)
        row = 0
        for i, v in enumerate(vids):
            entry = self._videos.setdefault(
                int(v), {"label": int(labels[i]), "path": str(path[i]), "seen": 0, "rows": {},
                         "error": ""},
            )  # fmt: skip
            entry["seen"] += 1
            if not ok[i]:
                reason = errors[i] if errors is not None and errors[i] else "cannot decode"
                entry["error"] = entry["error"] or reason
                continue
            for name, values in rows.items():
                entry["rows"].setdefault(name, []).append(values[row].detach().float().cpu())
            row += 1

    def __len__(self) -> int:
        return len(self._videos)

    def state(self) -> dict[int, dict[str, Any]]:
        """What this accumulator holds, for ``all_gather_object`` under DDP."""
        return self._videos

    def merge(self, states: Sequence[dict[int, dict[str, Any]]]) -> None:
        """Add the :meth:`state` of other accumulators (other ranks' videos)."""
        for state in states:
            for v, entry in state.items():
                mine = self._videos.get(v)
                if mine is None or mine is entry:
                    self._videos[v] = entry
                    continue
                mine["seen"] += entry["seen"]
                mine["error"] = mine["error"] or entry["error"]
                for name, values in entry["rows"].items():
                    mine["rows"].setdefault(name, []).extend(values)

    def complete(self, num_views: int) -> VideoScores:
        """Pop and average the videos of which ``num_views`` views are in."""
        return self.pop([v for v, e in self._videos.items() if e["seen"] >= num_views])

    def result(self) -> VideoScores:
        """Pop and average every video."""
        return self.pop(list(self._videos))

    def pop(self, vids: Sequence[int]) -> VideoScores:
        """Pop and average the videos ``vids`` (in ascending order)."""
        entries = [(v, self._videos.pop(v)) for v in sorted(vids)]
        errors = {e["path"]: e["error"] for _, e in entries if not e["rows"]}
        good = [(v, e) for v, e in entries if e["rows"]]
        names = sorted({n for _, e in good for n in e["rows"]})
        rows: dict[str, Tensor] = {}
        index = torch.tensor([v for v, e in good for _ in e["rows"][names[0]]] if good else [],
                             dtype=torch.long)  # fmt: skip
        for name in names:
            stacked = torch.stack([x for _, e in good for x in e["rows"][name]])
            rows[name] = average_views(index, stacked)[1]
        return VideoScores(
            video_index=torch.tensor([v for v, _ in good], dtype=torch.long),
            labels=torch.tensor([e["label"] for _, e in good], dtype=torch.long),
            paths=[e["path"] for _, e in good],
            rows=rows,
            errors=errors,
        )
