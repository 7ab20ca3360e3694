"""``tsf bench-data --config experiments/X.yaml [any tsf fit option]``: is the data loader fast
enough for the model?

The configuration is built by the same LightningCLI parser as ``tsf fit`` (``--config``, any
``--model.*``, ``--data.*``, ``--trainer.*``), so a fit command line can be reused as it is.
Runs the training loader on the user's data for ``--seconds`` and prints clips/s in total and
per worker; times the configured model's training step (the user's overrides, the planned
per-device batch, the precision) on the GPU, or on the CPU where there is none; probes a few
training videos (size, codec, keyframe interval, the prepared tag) and prints advice with
numbers: the decode share of the step, the workers to use, what ``tsf prepare`` would change.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_tsf.commands.help import command_parser
from lightning_tsf.data.loader import LoaderRate, loader_throughput, usable_cpus

if TYPE_CHECKING:  # torch, the data module and PyAV are imported when the command runs
    import torch

    from lightning_tsf.data.datamodule import VideoDataModule

PREPARED_SHORT_SIDE = 256  # tsf prepare's default --short-side
OWN = {"--seconds": True, "--workers": True, "--step-device": True, "--steps": True,
       "--no-progress": False}  # fmt: skip (bench-data's own options: takes a value?)


class BenchError(Exception):
    """A problem with the inputs, printed as ``tsf bench-data: ...`` (exit 2)."""


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """bench-data's own options, and the rest (``tsf fit``'s, for the LightningCLI parser)."""
    own, rest = [], []
    it = iter(argv)
    for item in it:
        name = item.split("=", 1)[0]
        if name in OWN:
            own.append(item)
            if OWN[name] and "=" not in item:
                own.append(next(it, ""))
        else:
            rest.append(item)
    return own, rest


def configure(fit_args: list[str]) -> tuple[VideoDataModule, Any, Any]:
    """DataModule, LightningModule and config of a ``tsf fit`` command line, through
    :class:`~lightning_tsf.commands.lightning.TSFCLI` (links, checks, batch plan, precision)
    without building a Trainer, its loggers or callbacks."""
    from lightning_tsf.commands.lightning import TSFCLI, ConfigError
    from lightning_tsf.data.annotations import AnnotationError
    from lightning_tsf.models import CheckpointError, zoo
    from lightning_tsf.train.callbacks import BatchSplitError

    class _BenchCLI(TSFCLI):
        def instantiate_classes(self) -> None:
            self.config.trainer.logger = False
            self.config.trainer.callbacks = None
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule, self.model = self.config_init.data, self.config_init.model

    try:
        with warnings.catch_warnings():  # "args and command line arguments": ours are split off
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            cli = _BenchCLI(args=fit_args, run=False)
    except (ConfigError, BatchSplitError, AnnotationError, zoo.ZooError, CheckpointError) as err:
        hint = " (set it with --data.data_root=PATH)" if "data_root" in str(err) else ""
        raise BenchError(f"{err}{hint}") from err
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise BenchError(f"{str(err).splitlines()[0]} (set it with --data.data_root=PATH)"
                         if "data_root" in str(err) else str(err).splitlines()[0]) from err
    return cli.datamodule, cli.model, cli.config


# ---------------------------------------------------------------------------- the sources
@dataclass
class Probe:
    """What one training video is: its size, codec, rate and keyframe interval."""

    path: str
    width: int
    height: int
    codec: str
    fps: float
    frames: int
    keyint: float | None  # frames between keyframes (mean over the first packets)
    prepared: bool


def probe_video(path: str, packets: int = 300, data: bytes | None = None) -> Probe | None:
    """Header and the first ``packets`` packets (demuxed, not decoded); None if unreadable.
    ``data``: the video's bytes (a shard sample; ``path`` is then its id)."""
    import io

    import av

    from lightning_tsf.data.decode import keyframe_interval

    try:
        with av.open(io.BytesIO(data) if data is not None else path) as container:
            stream = container.streams.video[0]
            tagged = keyframe_interval(container.metadata)
            keys = seen = 0
            if tagged is None:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    seen += 1
                    keys += bool(packet.is_keyframe)
                    if seen >= packets:
                        break
            keyint = float(tagged) if tagged else (seen / keys if keys else None)
            return Probe(path, stream.codec_context.width, stream.codec_context.height,
                         stream.codec_context.name, float(stream.average_rate or 0),
                         int(stream.frames or 0), keyint, tagged is not None)  # fmt: skip
    except Exception:  # unreadable: the loader reports it
        return None


def probe_sources(dm: VideoDataModule, count: int = 5) -> list[Probe | None]:
    """:func:`probe_video` of the first ``count`` training videos: files by their path,
    shards (local or object storage) from their stream's bytes."""
    source = dm.source
    if source.kind == "shards":
        from lightning_tsf.data.shard_check import first_samples

        storage = source.storage
        samples = first_samples(source.url, source.splits["train"], count, storage.options,
                                storage.cache_dir)  # fmt: skip
        return [probe_video(str(s["id"]), data=bytes(s["video"])) for s in samples]
    return [probe_video(r.path) for r in dm.records("train")[:count]]


def decoded_frames(span: float, num_frames: int, keyint: float, prepared: bool) -> float:
    """Frames a reader decodes for one clip of ``num_frames`` over ``span`` frames: from the
    keyframe before the first, on through the span (plain files); on a prepared file each
    sampled frame further than one interval on is reached by a seek (half an interval
    decoded on average) instead."""
    gap = span / max(num_frames, 1)
    if prepared and gap > keyint:
        return num_frames * (keyint + 1) / 2
    return span + keyint / 2


def prepare_advice(probes: list[Probe], dm: VideoDataModule) -> list[str]:
    """What the sampled sources are, and what ``tsf prepare`` would change for them."""
    from lightning_tsf.data.prepare import Encoding

    if not probes:
        return []
    hp = dm.view_spec  # frames, rate, sampler and backend as the loader reads them
    sizes = sorted({f"{p.width}x{p.height} {p.codec}" for p in probes})
    keyints = [p.keyint or 1.0 for p in probes]
    lines = [f"sampled {len(probes)} training videos: {', '.join(sizes)}; keyframe every "
             f"{min(keyints):.0f}-{max(keyints):.0f} frames; "
             f"{sum(p.prepared for p in probes)} prepared"]  # fmt: skip
    plain = [p for p in probes if not p.prepared]
    if not plain:
        return lines + ["sources already prepared (tsf prepare): nothing to gain there"]
    key = Encoding.keyint
    ratios = []
    for p in plain:
        span = hp.num_frames * hp.sampling_rate
        if hp.sampler not in ("dense", "centred"):
            span = p.frames or span  # segment sampling spreads the clip over the video
        short = min(p.width, p.height)
        scale = min(1.0, PREPARED_SHORT_SIDE / max(short, 1)) ** 2
        before = p.width * p.height * decoded_frames(span, hp.num_frames, p.keyint or 1, False)
        after = p.width * p.height * scale * decoded_frames(span, hp.num_frames, key, True)
        ratios.append(before / max(after, 1.0))
    lines.append(
        f"tsf prepare SRC DST (short side {PREPARED_SHORT_SIDE}, keyframe every {key}, no "
        f"B-frames) would decode about {min(ratios):.1f}-{max(ratios):.1f}x fewer pixels per "
        f"clip for these {len(plain)} plain file(s) ({hp.num_frames} frames x rate "
        f"{hp.sampling_rate}; docs/results.md measures ~5x on K400)"
    )
    if hp.backend == "decord":
        lines.append("--data.decode.backend=auto (or pyav): the reader that seeks in prepared "
                     "files")
    return lines


def advice(rate: LoaderRate, step_s: float, batch: int, device: str,
           prepared: bool = False) -> list[str]:  # fmt: skip
    """The decode share of the step, whether the loader keeps up, and the workers to use: a
    count is recommended only as measured (``rate.workers``); another one is an estimate from
    the per-worker rate, with the command line that measures it. ``prepared``: the sampled
    sources are prepared already (then ``tsf prepare`` is no remedy)."""
    batch_decode_s = batch / max(rate.per_worker, 1e-9)  # one process decoding one batch
    share = batch_decode_s / max(step_s, 1e-9)
    need = max(1, math.ceil(share))  # workers that keep up at the measured per-worker rate
    usable = usable_cpus()
    cores = max(1, usable - 1)  # one core runs the training process
    if rate.workers:  # workers decode while the step runs
        wait = max(0.0, 1.0 - rate.clips_per_second * step_s / batch)
    else:  # the training process decodes between steps
        wait = batch_decode_s / (batch_decode_s + step_s)
    lines = [
        f"decoding a batch of {batch} takes {1000 * batch_decode_s:.0f} ms of one core, the "
        f"step {1000 * step_s:.0f} ms: decode is {100 * share:.0f}% of the step per worker",
        f"with {rate.workers} worker(s) the {device} would wait for data {100 * wait:.0f}% "
        "of the time",
    ]
    free = f"{cores} of the {usable} cores here are free for workers"
    cheaper = ("a smaller clip (--data.crop_size, --data.num_frames)" if prepared
               else "cheaper decoding (tsf prepare)")  # fmt: skip
    if rate.workers >= need and wait < 0.05:
        lines.append(f"workers to use: {rate.workers}, as measured "
                     f"(--data.num_workers={rate.workers})"
                     + (f"; by the per-worker rate {need} would keep up too (measure it: "
                        f"--workers {need})" if need < rate.workers else ""))  # fmt: skip
    elif need <= cores:
        lines.append(f"the {rate.workers} worker(s) measured are too few; by the per-worker "
                     f"rate {need} would keep up ({free}): measure it with --workers {need}")
    else:
        lines.append(f"by the per-worker rate {need} workers would keep up, more than {free}: "
                     f"more cores (--cpus-per-task), or {cheaper}")  # fmt: skip
    return lines


def _step_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def _step_advice(device: str, net: torch.nn.Module, dm: VideoDataModule, precision: str,
                 steps: int, rate: LoaderRate, prepared: bool) -> list[str]:  # fmt: skip
    """Time the training step on ``device``, print it, and the advice that compares it with
    the loader's rate (``prepared``: every probed source is prepared already)."""
    import torch

    from lightning_tsf.train.speed import time_training_step

    dev = torch.device(device)
    if dev.type == "cpu" and precision in ("16-mixed", "16"):
        precision = "32-true"
    step = time_training_step(net, dm.batch_size, precision, dev, steps=steps)
    note = "" if dev.type == "cuda" else " (no GPU timed: a GPU step is shorter)"
    print(f"training step on {device} ({precision}, batch {dm.batch_size}): "
          f"{1000 * step:.1f} ms = {dm.batch_size / step:.1f} clips/s{note}")  # fmt: skip
    return advice(rate, step, dm.batch_size, "GPU" if dev.type == "cuda" else device, prepared)


def main(argv: list[str]) -> int:
    parser = command_parser(
        "bench-data", __doc__,
        epilog="Every other option goes to the tsf fit parser: --config X.yaml, --model.*, "
        "--data.*, --trainer.*.",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to load")
    parser.add_argument("--workers", type=int,
                        help="override data.num_workers (default: the config's)")  # fmt: skip
    parser.add_argument("--step-device", default="auto",
                        help="where to time the training step: auto (a GPU if any, else the "
                        "CPU), cuda, cpu, none")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if {"-h", "--help"} & set(argv):
        parser.print_help()
        return 0
    own, fit_args = split_args(argv)
    args = parser.parse_args(own)
    if args.workers is not None:
        fit_args.append(f"--data.num_workers={args.workers}")
    try:
        dm, module, cfg = configure(fit_args)
    except BenchError as err:
        print(f"tsf bench-data: {err}", file=sys.stderr)
        return 2
    except SystemExit as err:  # the fit parser's own message is printed above
        return 2 if err.code not in (0, None) else 0
    dm.setup("fit")
    loader = dm.train_dataloader()
    hp = dm.view_spec
    net = module.net
    params = sum(p.numel() for p in net.parameters())
    print(
        f"{dm.num_videos('train')} training videos under {dm.data_root}, "
        f"{hp.num_frames} frames x rate {hp.sampling_rate}, crop {hp.crop_size}, "
        f"batch {dm.batch_size}, backend {hp.backend}; model {type(net).__name__} "
        f"{params / 1e6:.2f} M parameters"
    )
    rate = loader_throughput(loader, args.seconds, progress=not args.no_progress)
    print(
        f"loader: {rate.clips_per_second:.1f} clips/s with {rate.workers} workers "
        f"({rate.per_worker:.1f} per worker; {rate.clips} clips in {rate.seconds:.1f} s after "
        f"{rate.startup_seconds:.1f} s of start-up)"
    )
    probes = [p for p in probe_sources(dm) if p is not None]
    lines = prepare_advice(probes, dm)
    device = _step_device(args.step_device)
    if device != "none":
        prepared = bool(probes) and all(p.prepared for p in probes)
        lines = _step_advice(device, module.net, dm, str(cfg.trainer.precision), args.steps,
                             rate, prepared) + lines  # fmt: skip
    else:
        print("training step not timed (--step-device none)")
    for line in lines:
        print(f"-> {line}")
    return 0
