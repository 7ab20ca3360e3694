"""DataLoader settings for GPU nodes: how many workers a process gets, one thread each.

A DDP process drives one device. Under ``srun`` with ``--cpus-per-task`` each process (task)
owns ``SLURM_CPUS_PER_TASK`` cores; otherwise the cores this process may run on
(``os.sched_getaffinity``) are shared by the node's processes. One core stays with the
training process; the rest decode. Each worker runs single-threaded (torch, OpenMP, the
decoders), so workers do not fight over cores.
"""

from __future__ import annotations

import os


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


def single_thread_worker(worker_id: int) -> None:
    """``worker_init_fn``: one thread for torch and OpenMP inside a DataLoader worker."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
