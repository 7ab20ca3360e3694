"""Training metrics that stay on the device between updates."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class TopKAccuracy(Metric):
    """Fraction of clips whose label is among the ``k`` highest logits (micro top-k accuracy,
    as torchmetrics' ``MulticlassAccuracy(top_k=k, average="micro")``): two counters on the
    device, summed over ranks when computed. Its update is one ``topk`` and a comparison,
    without ``MulticlassAccuracy``'s input checks (which read values back to the host) and
    one-hot formatting (several milliseconds a step on CPU, ``benchmarks/bench_overhead.py``)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.add_state("hits", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, label: Tensor) -> None:
        top = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices  # (B, k)
        self.hits += (top == label.unsqueeze(-1)).any(-1).sum()
        self.total += label.numel()

    def compute(self) -> Tensor:
        return self.hits.float() / self.total.clamp(min=1)
