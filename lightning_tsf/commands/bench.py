"""``tsf bench-data --config experiments/X.yaml``: is the data loader fast enough for the GPU?

Runs the experiment's training loader on the user's data for ``--seconds`` and prints clips/s
in total and per worker. Where a GPU is present (or ``--step-device`` names one) it also times
the configured model's training step at the configured batch and precision, and says how much
of the time the GPU would wait for data and what to try next.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.decode import keyframe_interval
from lightning_tsf.data.loader import LoaderRate, loader_throughput, usable_cpus


class BenchError(Exception):
    """A problem with the inputs, printed as ``tsf bench-data: ...`` (exit 2)."""


def _overrides(items: list[str]) -> dict[str, Any]:
    """``--data.key=value`` / ``--data.key value`` pairs; values parsed as YAML."""
    out: dict[str, Any] = {}
    it = iter(items)
    for item in it:
        if not item.startswith("--data."):
            raise BenchError(f"unknown option {item!r} (data options are --data.KEY=VALUE)")
        key, sep, value = item[len("--data.") :].partition("=")
        if not sep:
            value = next(it, None)
            if value is None:
                raise BenchError(f"{item} needs a value")
        out[key] = yaml.safe_load(value)
    return out


def _read_config(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise BenchError(f"--config: file does not exist: {path}")
    cfg = yaml.safe_load(file.read_text()) or {}
    if not isinstance(cfg.get("data"), dict):
        raise BenchError(f"{path}: no 'data' section")
    return cfg


def _build_net(cfg: dict[str, Any], dm: VideoDataModule) -> torch.nn.Module:
    """The config's backbone at the data's clip size and class count (random weights)."""
    net = cfg.get("model", {}).get("net", {})
    module, _, name = str(net.get("class_path", "lightning_tsf.models.TimeSformer")).rpartition(".")
    init = dict(net.get("init_args") or {})
    hp = dm.hparams
    init.update(num_frames=hp.num_frames, img_size=hp.crop_size, num_classes=dm.num_classes)
    return getattr(importlib.import_module(module), name)(**init)


def _precision(cfg: dict[str, Any], device: torch.device) -> str:
    """The experiment's precision; ``null`` resolved as ``tsf fit`` does for this device."""
    from lightning_tsf.commands.lightning import resolve_precision

    precision = (cfg.get("trainer") or {}).get("precision")
    if precision is not None:
        return str(precision)
    return resolve_precision({"accelerator": "cuda" if device.type == "cuda" else "cpu"})


def _is_prepared(dm: VideoDataModule) -> bool | None:
    """Whether the first training video carries the prepared format's tag (None: unknown)."""
    import av

    records = dm.records("train")
    if not records:
        return None
    try:
        with av.open(records[0].path) as container:
            return keyframe_interval(container.metadata) is not None
    except Exception:  # unreadable: the loader reports it
        return None


def advice(rate: LoaderRate, step_rate: float, dm: VideoDataModule, device: str) -> list[str]:
    """What limits the pipeline and the next things to try, best first."""
    wait = max(0.0, 1.0 - rate.clips_per_second / step_rate)
    lines = [f"the {device} would wait for data {100 * wait:.0f}% of the time"]
    if wait < 0.05:
        return lines + ["the loader keeps up: nothing to do"]
    need = step_rate / max(rate.per_worker, 1e-9)
    if rate.workers < usable_cpus() - 1:
        lines.append(
            f"more workers: about {need:.0f} at {rate.per_worker:.1f} clips/s each would keep "
            f"up (--data.num_workers, or more --cpus-per-task under SLURM)"
        )
    prepared = _is_prepared(dm)
    if prepared is False:
        lines.append(
            "tsf prepare SRC DST: re-encode for random access (about 5x faster clips per core, "
            "docs/results.md)"
        )
    elif prepared and dm.hparams.backend == "decord":
        lines.append("--data.backend=auto (or pyav): the reader that seeks in prepared files")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tsf bench-data", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to load")
    parser.add_argument("--workers", type=int, help="override data.num_workers")
    parser.add_argument("--step-device", default="auto",
                        help="where to time the training step: auto (a GPU if any), cuda, cpu, "
                        "none")  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--no-progress", action="store_true")
    args, rest = parser.parse_known_args(argv)
    try:
        cfg = _read_config(args.config)
        data = {**cfg["data"], **_overrides(rest)}
        if args.workers is not None:
            data["num_workers"] = args.workers
        try:
            dm = VideoDataModule(**data)
        except (FileNotFoundError, ValueError, TypeError) as err:
            raise BenchError(f"data: {err} (set it with --data.data_root=PATH)") from err
    except BenchError as err:
        print(f"tsf bench-data: {err}", file=sys.stderr)
        return 2
    dm.setup("fit")
    loader = dm.train_dataloader()
    hp = dm.hparams
    print(
        f"{args.config}: {len(dm.datasets['train'])} training videos under {hp.data_root}, "
        f"{hp.num_frames} frames x rate {hp.sampling_rate}, crop {hp.crop_size}, "
        f"batch {dm.batch_size}, backend {hp.backend}"
    )
    rate = loader_throughput(loader, args.seconds, progress=not args.no_progress)
    print(
        f"loader: {rate.clips_per_second:.1f} clips/s with {rate.workers} workers "
        f"({rate.per_worker:.1f} per worker; {rate.clips} clips in {rate.seconds:.1f} s after "
        f"{rate.startup_seconds:.1f} s of start-up)"
    )
    device = args.step_device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "none"
    if device == "none":
        print("no GPU: training step not timed (--step-device cpu times it on the CPU)")
        return 0
    from lightning_tsf.train.speed import time_training_step

    dev = torch.device(device)
    precision = _precision(cfg, dev)
    net = _build_net(cfg, dm)
    step = time_training_step(net, dm.batch_size, precision, dev, steps=args.steps)
    step_rate = dm.batch_size / step
    print(
        f"training step on {device} ({precision}, batch {dm.batch_size}): {1000 * step:.1f} ms "
        f"= {step_rate:.1f} clips/s"
    )
    for line in advice(rate, step_rate, dm, "GPU" if dev.type == "cuda" else device):
        print(f"-> {line}")
    return 0
