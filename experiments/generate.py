"""Writes the experiment YAML files of this folder from one table, so they stay consistent.

Run ``python experiments/generate.py`` after editing; the YAML files are committed and are what
``tsf fit --config`` reads. Each file is self-contained (no includes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightning_tsf.configs import DEMO, config_path
from lightning_tsf.data.options import upgrade
from lightning_tsf.models import BLOCKS, PRESETS

HERE = Path(__file__).parent
IN21K = "zoo:vit_base_in21k"  # timm ViT-B/16 ImageNet-21K weights (tsf weights list)
ATTENTION = list(BLOCKS)
# The paper's three models: (frames, crop) from the presets, sampling rate and train scale here.
RECIPES = {"timesformer": (32, [256, 320]), "timesformer_hr": (16, [448, 512]),
           "timesformer_l": (4, [256, 320])}  # fmt: skip
VARIANTS = {
    name: (PRESETS[name]["num_frames"], rate, PRESETS[name]["img_size"], scale)
    for name, (rate, scale) in RECIPES.items()
}
# SSv2: the same sizes, except TimeSformer-L, which the paper trains on 64 frames there.
SSV2_VARIANTS = {name: (64 if name == "timesformer_l" else t, crop)
                 for name, (t, _, crop, _) in VARIANTS.items()}  # fmt: skip


def trainer(name: str, epochs: int = 15, global_batch: int = 64, **extra: Any) -> dict:
    """Real-run trainer: auto devices (DDP over GPUs), auto precision, W&B offline, checkpoints."""
    callbacks = [
        {
            "class_path": "lightning_tsf.train.callbacks.AtomicModelCheckpoint",
            "init_args": {
                "dirpath": None,  # = <default_root_dir>/checkpoints
                "filename": "best-epoch{epoch:02d}",
                "auto_insert_metric_name": False,
                "monitor": "val/acc1",
                "mode": "max",
                "save_top_k": 1,
                "save_last": True,
            },
        },
        {
            "class_path": "pytorch_lightning.callbacks.LearningRateMonitor",
            "init_args": {"logging_interval": "step"},
        },
        {"class_path": "lightning_tsf.train.callbacks.RNGStateCallback"},
        {
            "class_path": "lightning_tsf.train.callbacks.GlobalBatchSize",
            "init_args": {"global_batch_size": global_batch},
        },
    ]
    return {
        "default_root_dir": f"runs/{name}",
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",  # DDP (NCCL) over all visible GPUs
        "precision": None,  # bf16-mixed on GPU, 32-true on CPU
        "max_epochs": epochs,
        "log_every_n_steps": 20,
        "logger": {
            "class_path": "pytorch_lightning.loggers.WandbLogger",
            "init_args": {"project": "lightning_tsf", "name": name, "offline": True},
        },
        "callbacks": callbacks,  # + Lightning's default progress bar
        **extra,
    }


def net(attention: str = "divided_space_time", **sizes: Any) -> dict:
    """The backbone; img_size, num_frames and num_classes are linked from ``data``."""
    sizes_b = ("patch_size", "embed_dim", "depth", "num_heads")
    vit_base = {k: PRESETS["timesformer"][k] for k in sizes_b}
    init = {
        **vit_base,
        "drop_path_rate": 0.1,
        "attention_type": attention,
        **sizes,
    }
    return {"class_path": "lightning_tsf.models.TimeSformer", "init_args": init}


def paper_model(attention: str = "divided_space_time", pretrained: str | None = IN21K) -> dict:
    """The paper's recipe: SGD 0.005, Nesterov 0.9, wd 1e-4 on all params, ÷10 at 11 and 14."""
    return {
        "net": net(attention),
        "optimizer": "sgd",
        "lr": 0.005,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "exclude_from_decay": False,
        "scheduler": "step",
        "milestones": [11, 14],
        "gamma": 0.1,
        "pretrained": pretrained,
        "pretrained_kind": "timm" if pretrained else "auto",
        "replace_head": True,  # a pretrained head of another class count starts anew
        "compile": False,
    }


def kinetics(root: str, frames: int, rate: int, crop: int, scale: list[int]) -> dict:
    return {
        "data_root": root,
        "format": "kinetics",
        "video_ext": ".mp4",
        "sampler": "dense",
        "num_frames": frames,
        "sampling_rate": rate,
        "crop_size": crop,
        "train_scale": scale,
        "horizontal_flip": True,
        # evaluation views: null = 3 crops x 1 clip when training (the paper's test), and
        # what the checkpoint's input record says when testing or predicting with one
        "num_spatial_crops": None,
        "num_temporal_views": None,
        "batch_size": 8,
        "num_workers": None,  # the process's share of the cores, less one (data/loader.py)
    }


def ssv2(frames: int, crop: int) -> dict:
    return {
        "data_root": "data/ssv2",
        "format": "ssv2",
        "video_dir": "videos",
        "video_ext": ".webm",
        "sampler": "segment",
        "inverse_uniform_scale": True,  # official SSv2: size = 1 / uniform(1/320, 1/256)
        "num_frames": frames,
        "crop_size": crop,
        "train_scale": [256, 320] if crop == 224 else [448, 512],
        "horizontal_flip": False,  # left/right is in the labels
        # evaluation views: null = 3 crops x 1 clip when training (the paper's test), and
        # what the checkpoint's input record says when testing or predicting with one
        "num_spatial_crops": None,
        "num_temporal_views": None,
        "batch_size": 8,
        "num_workers": None,  # the process's share of the cores, less one (data/loader.py)
    }


def experiments() -> dict[str, tuple[str, dict]]:
    """name -> (header comment, config)."""
    out: dict[str, tuple[str, dict]] = {}
    for ds, root in (("k400", "data/kinetics400"), ("k600", "data/kinetics600")):
        for variant, (t, rate, crop, scale) in VARIANTS.items():
            name = f"{ds}_{variant}"
            out[name] = (
                f"{ds.upper()} {variant}: {t} frames x rate {rate}, {crop}px, ImageNet-21K init, "
                "the paper's SGD recipe, 3 spatial views at test.",
                {
                    "trainer": trainer(name),
                    "model": paper_model(),
                    "data": kinetics(root, t, rate, crop, scale),
                },
            )
    for variant, (t, crop) in SSV2_VARIANTS.items():
        name = f"ssv2_{variant}"
        out[name] = (
            f"SSv2 {variant}: {t} frames, segment sampling, no flip, {crop}px, ImageNet-21K init.",
            {"trainer": trainer(name), "model": paper_model(), "data": ssv2(t, crop)},
        )
    for ds in ("k400", "ssv2"):
        for attn in ATTENTION:
            name = f"{ds}_attn_{attn}"
            data = (
                kinetics("data/kinetics400", 8, 32, 224, [256, 320])
                if ds == "k400"
                else ssv2(8, 224)
            )
            out[name] = (
                f"Table 1 ({ds.upper()}): attention scheme {attn}, TimeSformer 8x224.",
                {"trainer": trainer(name), "model": paper_model(attn), "data": data},
            )
    shards = kinetics("data/kinetics400_shards", 8, 32, 224, [256, 320])
    # a `tsf shard` output: format, class names and splits come from its shards.json
    shards.update(source="shards")
    out["k400_timesformer_shards"] = (
        "K400 timesformer streamed from LitData shards (`tsf shard data/kinetics400 "
        "data/kinetics400_shards`): the same clips as k400_timesformer, few file opens.",
        {"trainer": trainer("k400_timesformer_shards"), "model": paper_model(), "data": shards},
    )
    ft = paper_model(pretrained="zoo:timesformer_k400")
    ft.update(pretrained_kind="official", lr=0.0005, milestones=[7, 9])
    data = kinetics("data/my_videos", 8, 32, 224, [256, 320])
    data.update(format="folder", video_ext=".mp4")
    out["finetune_official_k400"] = (
        "Fine-tune the official K400 TimeSformer checkpoint on a folder dataset "
        "(data_root/<split>/<class>/*.mp4); its head is replaced for the new classes.",
        {"trainer": trainer("finetune_official_k400", epochs=10), "model": ft, "data": data},
    )
    out["demo_synthetic"] = ("The demo (`tsf demo`): see lightning_tsf/commands/demo.py.", demo())
    out["smoke_cpu"] = ("CPU smoke test: tiny model, synthetic data, one short epoch.", smoke())
    return out


def small_model(attention: str, lr: float, warmup: float) -> dict:
    """The small CPU model of the demo and the Mini Table 1 (AdamW + warm-up + cosine)."""
    return {
        "net": net(
            attention,
            patch_size=8,
            embed_dim=64,
            depth=3,
            num_heads=4,
            drop_path_rate=0.0,
        ),
        "embed_init_std": 1.0,
        "optimizer": "adamw",
        "lr": lr,
        "momentum": 0.9,
        "weight_decay": 0.05,
        "exclude_from_decay": True,
        "scheduler": "cosine",
        "warmup_epochs": warmup,
        "min_lr_ratio": 0.01,
        "compile": False,
    }


def synthetic_data(batch: int = 16, workers: int = 2) -> dict:
    return {
        "data_root": "data/synthetic",
        "format": "kinetics",
        "video_ext": ".mp4",
        "sampler": "centred",  # an exact stride: the 8 fps videos are 16 frames long
        "num_frames": 4,  # 4 frames x rate 4 span the 16-frame videos
        "sampling_rate": 4,
        "crop_size": 32,
        "train_scale": [32, 36],
        "horizontal_flip": False,  # a flip turns move_right into move_left
        # evaluation views: null = 3 crops x 1 clip when training (the paper's test), and
        # what the checkpoint's input record says when testing or predicting with one
        "num_spatial_crops": None,
        "num_temporal_views": None,
        "batch_size": batch,
        "num_workers": workers,
        "pin_memory": False,
    }


def dashboard(every_n_epochs: int) -> list[dict]:
    """The four W&B dashboard callbacks (lightning_tsf/viz/callbacks.py): rollout heatmaps,
    t-SNE, confusion matrix and a predictions table with the clips, every ``every_n_epochs``
    validation epochs and at the last one."""
    viz = "lightning_tsf.viz.callbacks."
    every = {"every_n_epochs": every_n_epochs}
    return [
        {"class_path": f"{viz}AttentionHeatmapCallback", "init_args": {"num_videos": 4, **every}},
        {"class_path": f"{viz}TSNECallback", "init_args": {**every}},
        {"class_path": f"{viz}ConfusionMatrixCallback", "init_args": {**every}},
        {"class_path": f"{viz}PredictionTableCallback", "init_args": {"num_videos": 8, **every}},
    ]


def demo() -> dict:
    t = trainer("demo", epochs=40, global_batch=16, accelerator="cpu", devices=1)
    t["callbacks"] += dashboard(every_n_epochs=10)
    t["max_time"] = "00:00:04:00"
    t["log_every_n_steps"] = 10
    t["gradient_clip_val"] = 1.0
    return {
        "trainer": t,
        "model": small_model("divided_space_time", 2e-3, 4.0),
        "data": synthetic_data(),
    }


def smoke() -> dict:
    t = trainer("smoke_cpu", epochs=1, global_batch=4, accelerator="cpu", devices=1)
    t.update(limit_train_batches=2, limit_val_batches=2, limit_test_batches=2)
    t["logger"] = {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": ".", "name": "csv"},
    }
    model = small_model("divided_space_time", 1e-3, 0.0)
    model["net"]["init_args"].update(embed_dim=32, depth=1, num_heads=2)
    data = synthetic_data(batch=4, workers=0)
    data.update(num_frames=4, sampling_rate=4, num_spatial_crops=1)
    return {"trainer": t, "model": model, "data": data}


def output_path(name: str) -> Path:
    """Where an experiment file goes: the demo's ships inside the package, the rest here."""
    return config_path(DEMO) if f"{name}.yaml" == DEMO else HERE / f"{name}.yaml"


def render(name: str, comment: str, cfg: dict) -> str:
    """The YAML text of one experiment file, with its header comment. The tables here set data
    options by name; they are written in their groups (``data.clips.num_frames``) by the
    DataModule's own rule (:func:`lightning_tsf.data.options.upgrade`)."""
    data, _ = upgrade(cfg["data"])
    cfg = {**cfg, "data": data}
    text = yaml.safe_dump({"seed_everything": 0, **cfg}, sort_keys=False, width=100)
    path = output_path(name).resolve().relative_to(HERE.resolve().parent)
    run = "tsf demo" if f"{name}.yaml" == DEMO else f"tsf fit --config {path}"
    return f"# {comment}\n# Run: {run}  (file written by experiments/generate.py)\n{text}"


def main() -> None:
    for name, (comment, cfg) in experiments().items():
        output_path(name).write_text(render(name, comment, cfg))


if __name__ == "__main__":
    main()
