"""Grouped data options: nested keys from YAML and the command line, linked into the model;
earlier flat keys still load from YAML, the command line and old checkpoints, one line each
naming the new key."""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.options import (
    ClipOptions,
    DecodeOptions,
    LoaderOptions,
    record_from_hparams,
)

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "experiments" / "smoke_cpu.yaml"


def _cli(args: list[str]):
    from lightning_tsf.commands.lightning import TSFCLI

    return TSFCLI(args=args, run=False)


def test_grouped_keys_from_yaml_and_command_line(tiny_overrides, tmp_path, monkeypatch) -> None:
    """The shipped YAML's groups parse; ``--data.clips.num_frames`` and friends on the command
    line win and reach the model through the links (frames, size, mean, std)."""
    monkeypatch.setattr(sys, "argv", ["tsf"])
    shipped = yaml.safe_load(SMOKE.read_text())["data"]
    assert shipped["clips"]["sampler"] == "centred" and "num_frames" not in shipped
    cli = _cli(["--config", str(SMOKE), *tiny_overrides(tmp_path), "--data.clips.num_frames=2",
                "--data.clips.mean=[0.5, 0.4, 0.3]", "--data.decode.backend=pyav",
                "--data.loader.prefetch_factor=3"])  # fmt: skip
    dm = cli.datamodule
    assert isinstance(dm.clips, ClipOptions) and dm.clips.num_frames == 2
    assert dm.clips.sampler == "centred" and dm.clips.train_scale == (32, 36)  # YAML, overrides
    assert dm.decode == DecodeOptions(backend="pyav") and dm.loader.prefetch_factor == 3
    assert dm.loader.seed == 0  # tsf fit writes seed_everything into data.loader.seed
    assert cli.model.net.num_frames == 2 and cli.model.net.img_size == 32
    assert tuple(cli.model.hparams.mean) == (0.5, 0.4, 0.3)
    assert cli.model.net.num_classes == dm.num_classes == 4
    saved = dm.hparams  # plain types: checkpoints read back with weights_only=True
    assert saved["clips"]["num_frames"] == 2 and isinstance(saved["loader"], dict)


def test_old_flat_keys_in_yaml_and_on_the_command_line(tiny_synthetic, tmp_path, capsys,
                                                       monkeypatch) -> None:  # fmt: skip
    """A config written before the groups (flat ``data.num_frames``) and flat command-line
    keys load as their grouped keys, each moved key said once on stderr."""
    monkeypatch.setattr(sys, "argv", ["tsf"])
    config = yaml.safe_load(SMOKE.read_text())
    config["data"] = {"data_root": str(tiny_synthetic), "format": "kinetics", "video_ext": ".mp4",
                      "sampler": "centred", "num_frames": 4, "sampling_rate": 4,
                      "crop_size": 32, "train_scale": [32, 36], "horizontal_flip": False,
                      "num_spatial_crops": 1, "batch_size": 4, "num_workers": 0,
                      "pin_memory": False, "max_decode_retries": 2}  # fmt: skip
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(config))
    net = "--model.net.init_args."
    run = f"--trainer.default_root_dir={tmp_path / 'run'}"
    cli = _cli(["--config", str(old), "--data.num_frames=2", "--data.backend", "pyav", run,
                f"{net}embed_dim=16"])  # fmt: skip
    err = capsys.readouterr().err
    dm = cli.datamodule
    assert dm.clips.num_frames == 2 and dm.clips.sampler == "centred"  # the command line wins
    assert dm.decode.backend == "pyav" and dm.decode.max_retries == 2
    assert dm.augment.horizontal_flip is False and dm.annotations.video_ext == ".mp4"
    assert dm.loader.pin_memory is False and cli.model.net.num_frames == 2
    lines = [line for line in err.splitlines() if " is now " in line]
    assert "tsf: --data.num_frames is now --data.clips.num_frames" in lines
    assert "tsf: --data.backend is now --data.decode.backend" in lines
    assert f"tsf: data.max_decode_retries is now data.decode.max_retries (in {old})" in lines
    assert f"tsf: data.video_ext is now data.annotations.video_ext (in {old})" in lines
    assert len(lines) == 2 + 10  # 2 on the command line, 10 flat keys in the file


def test_old_checkpoint_datamodule_hyper_parameters(tiny_synthetic, tmp_path) -> None:
    """``datamodule_hyper_parameters`` saved flat by an earlier version load as groups, one
    warning per moved key naming the new key; a new checkpoint's load without warnings."""
    flat = {"data_root": str(tiny_synthetic), "format": "kinetics", "num_frames": 4,
            "crop_size": 32, "train_scale": [32, 36], "num_spatial_crops": 1,
            "decode_short_side": 40, "storage_options": None, "seed": 7, "batch_size": 2,
            "num_workers": 0}  # fmt: skip
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "datamodule_hyper_parameters": flat}, path)
    with pytest.warns(FutureWarning) as caught:
        dm = VideoDataModule.load_from_checkpoint(path)
    said = sorted(str(w.message).split(" (")[0] for w in caught)
    assert said == sorted([
        "data.num_frames is now data.clips.num_frames",
        "data.crop_size is now data.clips.crop_size",
        "data.train_scale is now data.clips.train_scale",
        "data.num_spatial_crops is now data.clips.num_spatial_crops",
        "data.decode_short_side is now data.decode.short_side",
        "data.storage_options is now data.storage.options",
        "data.seed is now data.loader.seed",
    ])  # fmt: skip
    assert dm.clips == ClipOptions(num_frames=4, crop_size=32, train_scale=(32, 36),
                                   num_spatial_crops=1)  # fmt: skip
    assert dm.decode.short_side == 40 and dm.loader == LoaderOptions(seed=7)
    assert dm.input_config.num_spatial_crops == 1 and dm.input_config.test_short_side == 32
    new = tmp_path / "new.ckpt"
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams)}, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = VideoDataModule.load_from_checkpoint(new)
    assert again.clips == dm.clips and again.decode == dm.decode
    # a checkpoint without an input record: the DataModule's rule, from flat or grouped keys
    names = dm.class_names
    assert record_from_hparams(flat, names) == record_from_hparams(dm.hparams, names)
    assert record_from_hparams(flat, names, scheme="x") == replace(dm.input_config, scheme="x")
