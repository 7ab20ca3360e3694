"""``tsf demo``: synthetic temporal dataset -> CPU training -> multi-view test -> summary.

The README's main command. Generates ``data/synthetic`` if absent, trains the small divided
space-time TimeSformer of the packaged ``lightning_tsf/configs/demo_synthetic.yaml`` with the
Lightning Trainer (W&B offline, a ``max_time`` guard), tests it with 3 spatial views per video
and prints test top-1 and where the checkpoint, config and W&B run are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_tsf.commands.help import command_parser
from lightning_tsf.configs import config_path

if TYPE_CHECKING:
    from pytorch_lightning import LightningModule


def ensure_synthetic(root: str | Path) -> None:
    """The synthetic dataset at ``root``: generated if absent; an existing set is used as it is
    (whatever its parameters: tests and earlier runs share it)."""
    from lightning_tsf.data.synthetic import make_synthetic_dataset

    if not (Path(root) / "synthetic.json").exists():
        make_synthetic_dataset(root)


def time_guard(minutes: float) -> str:
    """The ``--trainer.max_time`` override that stops a run after ``minutes``."""
    m, s = divmod(round(minutes * 60), 60)
    h, m = divmod(m, 60)
    return f"--trainer.max_time={h // 24:02d}:{h % 24:02d}:{m:02d}:{s:02d}"


def run_experiment(
    config: str | Path,
    root: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    pictures: bool = False,
    dashboard: bool = True,
) -> dict[str, Any]:
    """Fit ``config`` on ``root`` into run folder ``out``, then multi-view test the final model.

    Returns the test results of :class:`~lightning_tsf.train.module.VideoClassifier` plus
    ``fit_seconds``, ``checkpoint``, ``config`` and ``wandb_dir``. ``dashboard=False`` drops the
    config's W&B dashboard callbacks (``lightning_tsf.viz``), for runs that only need numbers
    (the ablation).
    """
    from lightning_tsf.commands.lightning import TSFCLI, finish_wandb
    from lightning_tsf.train.callbacks import EpochPrinter

    args = ["--config", str(config), "--data.data_root", str(root)]
    args += ["--trainer.default_root_dir", str(out), *(overrides or [])]
    cli = TSFCLI(args=args, run=False)
    if not dashboard:
        viz = "lightning_tsf.viz.callbacks"
        cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if type(c).__module__ != viz]
    cli.trainer.callbacks.append(EpochPrinter())
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    val = cli.trainer.callback_metrics.get("val/acc1")  # the last validation; test resets these
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    run_dir = Path(cli.trainer.log_dir or out)
    drawn = save_pictures(cli.model, cli.datamodule, run_dir) if pictures else {}
    logger = cli.trainer.logger
    wandb_dir = getattr(getattr(logger, "experiment", None), "dir", None)
    finish_wandb(cli.trainer)
    ckpt = cli.trainer.checkpoint_callback
    return {
        **cli.model.test_results,
        "num_views": cli.datamodule.input_config.num_views,
        "val_acc1": float(val) if val is not None else float("nan"),
        "fit_seconds": fit_seconds,
        "epochs": cli.trainer.current_epoch,
        "checkpoint": str(Path(ckpt.dirpath) / "last.ckpt") if ckpt else None,
        "config": str(Path(cli.trainer.log_dir or out) / "config.yaml"),
        "wandb_dir": str(Path(wandb_dir).parent) if wandb_dir else None,
        **drawn,
    }


def first_per_class(batches: Any, view: int) -> list[dict[str, Any]]:
    """View ``view`` of the first decodable video of each class, in class order, taken from
    evaluation batches as a loader hands them over (files or shard streams alike)."""
    firsts: dict[int, dict[str, Any]] = {}
    for batch in batches:
        for i, (label, v) in enumerate(zip(batch["label"].tolist(), batch["view_index"].tolist())):
            if v == view and bool(batch["valid"][i]) and label not in firsts:
                firsts[label] = {"video": batch["video"][i], "label": label,
                                 "path": batch["path"][i]}  # fmt: skip
    return [firsts[label] for label in sorted(firsts)]


def save_pictures(model: LightningModule, datamodule: Any, out: Path) -> dict[str, str]:
    """The paper's two pictures for the test set: attention-rollout heatmaps of one video per
    class (frames left to right, one row per video) and a t-SNE of the video features."""
    import torch

    from lightning_tsf.data.transforms import normalize_video
    from lightning_tsf.viz.callbacks import source_frame_indices
    from lightning_tsf.viz.heatmap import save_heatmap_grid
    from lightning_tsf.viz.plots import save_tsne

    net = model.net.eval()
    tsne = out / "tsne.png"
    save_tsne(net, datamodule.test_dataloader(), tsne, datamodule.class_names,
              mean=datamodule.input_config.mean, std=datamodule.input_config.std)  # fmt: skip
    spec = datamodule.view_spec
    middle = spec.num_views // 2  # the middle view of each
    items = first_per_class(datamodule.test_dataloader(), middle)
    clips = torch.stack([it["video"] for it in items])  # uint8
    videos = normalize_video(clips, datamodule.input_config.mean, datamodule.input_config.std)
    frames = clips.permute(0, 2, 3, 4, 1).numpy()  # (B, T, H, W, 3)
    temporal = spec.split(middle)[0]
    indices = [source_frame_indices(it["path"], spec, temporal) for it in items]
    heatmaps = save_heatmap_grid(
        net, videos, frames, out / "heatmaps.png", names=[Path(it["path"]).name for it in items],
        labels=[it["label"] for it in items], class_names=datamodule.class_names,
        frame_indices=indices,
    )  # fmt: skip
    torch.save(heatmaps, out / "heatmaps.pt")
    return {"heatmaps": str(out / "heatmaps.png"), "tsne": str(tsne)}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tsf demo``."""
    parser = command_parser("demo", __doc__)
    parser.add_argument("--root", default="data/synthetic",
                        help="synthetic dataset folder (or its `tsf shard` output)")  # fmt: skip
    parser.add_argument("--out", default="runs/demo", help="run folder")
    parser.add_argument("--config", default=str(config_path()), help="experiment YAML")
    parser.add_argument("--max-minutes", type=float, default=4.0, help="training time guard")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the loader workers get the rest)"
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show every note of Lightning and W&B (also: TSF_VERBOSE=1)")
    args, overrides = parser.parse_known_args(argv)  # the rest: LightningCLI --a.b=c overrides
    if args.verbose:
        overrides.append("--verbose")
    start = time.perf_counter()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import torch

    torch.set_num_threads(args.threads)

    from lightning_tsf.data.shard_format import is_shard_folder

    if is_shard_folder(args.root):  # a `tsf shard` output (local or s3://): trained on as is
        print(f"[demo] shards in {args.root}")
    else:
        print(f"[demo] synthetic dataset in {args.root} (generated if absent)")
        ensure_synthetic(args.root)
    guard = time_guard(args.max_minutes)
    res = run_experiment(args.config, args.root, args.out, [guard, *overrides], pictures=True)
    total = time.perf_counter() - start
    lines = [
        "",
        "=" * 72,
        f"test top-1 (video level, {res['num_views']} views) {100 * res['acc1']:.1f}%, "
        f"top-5 {100 * res['acc5']:.1f}%",
        f"{res['summary']}; trained {res['epochs']} epochs in {res['fit_seconds']:.0f}s, "
        f"total {total:.0f}s",
        f"checkpoint: {res['checkpoint']}",
        f"config:     {res['config']}",
        f"W&B run:    {res['wandb_dir']}  (upload: wandb sync {res['wandb_dir']})",
        f"pictures:   {res['heatmaps']} (attention rollout), {res['tsne']} (t-SNE)",
        "=" * 72,
    ]
    print("\n".join(lines))
    return 0
