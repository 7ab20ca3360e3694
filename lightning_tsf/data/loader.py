"""DataLoader settings for GPU nodes: how many workers a process gets, one thread each.

A DDP process drives one device. Under ``srun`` with ``--cpus-per-task`` each process (task)
owns ``SLURM_CPUS_PER_TASK`` cores; otherwise the cores this process may run on
(``os.sched_getaffinity``) are shared by the node's processes. One core stays with the
training process; the rest decode. Each worker runs single-threaded, so workers do not fight
over cores: PyTorch sets one torch/OpenMP thread in every DataLoader worker, and the readers
open decord with one thread and PyAV with one decoder thread. No ``worker_init_fn`` is set, so
Lightning's (``seed_everything(workers=True)``) seeds each worker of each rank differently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass


def usable_cpus() -> int:
    """Cores this process may use: the CPU affinity mask, else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_num_workers(processes_per_node: int = 1) -> int:
    """DataLoader workers for one process: its share of the cores, less one for itself."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_task.isdigit() and int(per_task) > 0:
        cpus = int(per_task)  # SLURM already gives each task (process) its own cores
    else:
        cpus = usable_cpus() // max(1, processes_per_node)
    return max(0, cpus - 1)


def inference_workers() -> int:
    """Decoding workers for inference (the Predictor): every core this process may use (under
    SLURM its ``--cpus-per-task``), none on one core. Unlike training, the main process only
    batches decoded views and runs a forward, mostly waiting for the workers (or the GPU):
    on 2 cores one worker is no faster than decoding in the main process and two are about
    twice as fast (``benchmarks/bench_predict.py``, docs/results.md)."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = int(per_task) if per_task.isdigit() and int(per_task) > 0 else usable_cpus()
    return cpus if cpus > 1 else 0


@dataclass
class LoaderRate:
    """What :func:`loader_throughput` measured (after the first batch: worker start-up is out)."""

    clips: int
    seconds: float
    workers: int
    startup_seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.clips / max(self.seconds, 1e-9)

    @property
    def per_worker(self) -> float:
        """Clips per second per decoding process (the main process when there are no workers)."""
        return self.clips_per_second / max(1, self.workers)


def loader_throughput(loader: Iterable, seconds: float, progress: bool = True) -> LoaderRate:
    """Draw batches from ``loader`` for about ``seconds`` (cycling through epochs if short)."""
    from tqdm import tqdm

    workers = getattr(loader, "num_workers", 0)
    start = time.perf_counter()
    clips, first, bar = 0, None, None
    try:
        while True:
            for batch in loader:
                now = time.perf_counter()
                if first is None:  # worker start-up and the first batch: not counted
                    first = now
                    bar = tqdm(total=round(seconds), desc="loading", unit="s", disable=not progress)
                    continue
                clips += len(batch["video"])
                bar.n = min(round(seconds), round(now - first))
                bar.set_postfix(clips_per_s=f"{clips / max(now - first, 1e-9):.1f}")
                if now - first >= seconds:
                    return LoaderRate(clips, now - first, workers, first - start)
            if first is None:
                raise ValueError("the loader yielded no batch")
    finally:
        if bar is not None:
            bar.close()
