"""Timing one training step of a backbone at a batch size and precision (``tsf bench-data``)."""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from lightning_tsf.models import TimeSformer

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def time_training_step(
    net: TimeSformer,
    batch_size: int,
    precision: str = "32-true",
    device: str | torch.device = "cpu",
    steps: int = 5,
    warmup: int = 2,
) -> float:
    """Median seconds of forward + backward + SGD step on random clips of the net's size."""
    device = torch.device(device)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    video = torch.randn(batch_size, 3, net.num_frames, net.img_size, net.img_size, device=device)
    label = torch.randint(0, net.num_classes, (batch_size,), device=device)
    dtype = AUTOCAST.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = F.cross_entropy(net(video), label)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
