"""Loader defaults for GPU nodes: workers per process from the cores it may use, one thread
per worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import data_module
from torch.utils.data import DataLoader, Dataset

from lightning_tsf.data.decode import make_reader
from lightning_tsf.data.loader import default_num_workers, usable_cpus


def test_workers_from_slurm_cpus_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")  # srun task = one process = one GPU
    assert default_num_workers(processes_per_node=8) == 9


def test_workers_share_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus() == cpus
    assert default_num_workers(1) == cpus - 1
    assert default_num_workers(cpus) == 0  # one core per process: it decodes itself


def test_affinity_is_what_counts() -> None:
    """A process pinned to one core (taskset) gets no workers, whatever the machine has."""
    code = "from lightning_tsf.data.loader import usable_cpus as u, default_num_workers as d;" \
           "print(u(), d())"  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    assert out.stdout.split() == ["1", "0"]


class _Threads(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return torch.get_num_threads()


def test_workers_run_single_threaded(kinetics_root) -> None:
    """torch runs one thread in each worker of the DataModule's loaders, and the readers open
    their decoders with one thread."""
    torch.set_num_threads(2)
    loader = data_module(str(kinetics_root), num_workers=2).train_dataloader()
    probe = DataLoader(_Threads(), num_workers=2, worker_init_fn=loader.worker_init_fn)
    assert [int(x) for x in probe] == [1, 1]
    path = str(next(kinetics_root.rglob("*.mp4")))
    reader = make_reader(path, "pyav")
    len(reader)
    assert reader._open_container().streams.video[0].codec_context.thread_count == 1
    reader.close()


def test_datamodule_defaults(kinetics_root, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    dm = data_module(str(kinetics_root), crop_size=48, train_scale=(48, 56), batch_size=2)
    assert dm.num_workers == 2  # None in the config: SLURM_CPUS_PER_TASK - 1
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.prefetch_factor == 4
    assert loader.worker_init_fn is None  # Lightning's seeding: each worker of each rank differs
    assert data_module(str(kinetics_root), num_workers=0).train_dataloader().num_workers == 0


def test_inference_workers_take_every_core(monkeypatch) -> None:
    """Inference's main process needs no core of its own: every usable core decodes (the
    SLURM task's share under srun), none on a single core."""
    from lightning_tsf.data import loader

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    assert loader.inference_workers() == 2
    monkeypatch.setattr(loader, "usable_cpus", lambda: 1)
    assert loader.inference_workers() == 0
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert loader.inference_workers() == 6
