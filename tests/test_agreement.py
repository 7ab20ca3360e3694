"""Same video, same checkpoint, same answer: ``tsf test`` (per video), ``tsf predict``,
``tsf predict-files`` and :class:`Predictor`, each at its defaults, give the same per-video
probabilities for a 1-crop and a 3-crop Kinetics checkpoint, an SSv2-style checkpoint and an
official-layout file.

The checkpoints are trained here by ``tsf fit`` (the input record is resolved when training
starts); every evaluation below passes only the data paths and sizes of the training command,
never a view option, so each path has to find the views in the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_broken

from lightning_tsf.cli import main as tsf
from lightning_tsf.commands.lightning import TSFCLI, cli_main, finish_wandb
from lightning_tsf.configs import DEMO, config_path
from lightning_tsf.models import TimeSformer
from lightning_tsf.predictor import Predictor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
TOL = 1e-5
NET = "--model.net.init_args."
TINY = [f"{NET}patch_size=8", f"{NET}embed_dim=64", f"{NET}depth=2", f"{NET}num_heads=4"]


def data_args(root: Path, run: Path, *extra: str) -> list[str]:
    """The demo config shrunk to a CPU-sized model on ``root`` (data paths and sizes only)."""
    return ["--config", str(config_path(DEMO)), f"--data.data_root={root}",
            "--data.clips.num_frames=4", "--data.clips.crop_size=32", "--data.batch_size=3",
            "--data.num_workers=0", "--model.pretrained=null", "--trainer.accelerator=cpu",
            "--trainer.devices=1", f"--trainer.default_root_dir={run}",
            *TINY, *extra]  # fmt: skip


def fit(args: list[str]) -> Path:
    """One short ``tsf fit``; its ``last.ckpt``."""
    run = Path(args[args.index(next(a for a in args if a.startswith("--trainer.default_root")))]
               .split("=", 1)[1])  # fmt: skip
    assert cli_main(["fit", *args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                     "--trainer.limit_val_batches=0"]) == 0  # fmt: skip
    return run / "checkpoints" / "last.ckpt"


def vector(row: dict, classes: int) -> torch.Tensor:
    """A prediction row's probabilities as a full vector (top-k covers every class here)."""
    out = torch.zeros(classes)
    out[row["indices"]] = torch.tensor(row["probs"])
    return out


def every_path(args: list[str], evaluate: list[str], tmp: Path, classes: int) -> dict:
    """Per-video probabilities of one checkpoint (or ``pretrained``) on every path, keyed by
    path name, each a dict ``video path -> (classes,)``."""
    cli = TSFCLI(args=["test", *args, *evaluate])  # tsf test, in-process to read per video
    finish_wandb(cli.trainer)
    res = cli.model.test_results
    records = cli.datamodule.records("test")
    out = {"test": {records[i].path: p for i, p in zip(res["video_index"].tolist(), res["probs"])}}
    out["protocol"] = res["protocol"]
    videos = list(out["test"])
    jsonl = tmp / "predict.jsonl"
    assert cli_main(["predict", *args, *evaluate,
                     "--trainer.callbacks+=lightning_tsf.train.callbacks.PredictionWriter",
                     f"--trainer.callbacks.output={jsonl}"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out["predict"] = {r["path"]: vector(r, classes) for r in rows}
    return out | {"videos": videos}


def files_paths(checkpoint: str, videos: list[str], tmp: Path, classes: int) -> dict:
    """``tsf predict-files`` and ``Predictor`` at their defaults."""
    js = tmp / "files.json"
    assert tsf(["predict-files", *videos, "--checkpoint", checkpoint, "--topk", str(classes),
                "--out", str(js), "--no-progress"]) == 0  # fmt: skip
    out = {"predict-files": {r["path"]: vector(r, classes) for r in json.loads(js.read_text())}}
    result = Predictor.from_checkpoint(checkpoint, "cpu", progress=False).predict(videos, classes)
    out["Predictor"] = {p.path: vector(p.to_dict(), classes) for p in result}
    return out


def assert_agree(paths: dict, classes: int) -> None:
    reference = paths["test"]
    assert len(reference) >= 2
    for name in ("predict", "predict-files", "Predictor"):
        assert set(paths[name]) == set(reference), name
        for video, probs in reference.items():
            torch.testing.assert_close(paths[name][video], probs, atol=TOL, rtol=0,
                                       msg=lambda m, n=name, v=video: f"{n} {v}: {m}")  # fmt: skip
    # not vacuous: the videos get different answers
    assert len({tuple(p.round(decimals=4).tolist()) for p in reference.values()}) > 1


@pytest.mark.parametrize("crops", [1, 3])
def test_kinetics_checkpoint_every_path_agrees(tiny_synthetic: Path, tmp_path: Path,
                                               crops: int) -> None:  # fmt: skip
    """The 1-crop checkpoint's record says short side 40 (``train_scale[0]``, the official
    1-crop test), not the crop size; the 3-crop one, 3 crops at short side 32."""
    args = data_args(tiny_synthetic, tmp_path / "run", "--data.clips.train_scale=[40, 48]")
    ckpt = fit([*args, f"--data.clips.num_spatial_crops={crops}"])
    record = torch.load(ckpt, weights_only=True)["input_config"]
    side = {1: 40, 3: 32}[crops]
    assert (record["num_spatial_crops"], record["test_short_side"]) == (crops, side)
    assert record["scheme"] == "divided_space_time" and record["sampler"] == "centred"
    paths = every_path(args, [f"--ckpt_path={ckpt}"], tmp_path, 4)
    assert f"x {crops} " in paths["protocol"] and f"short side {side}" in paths["protocol"]
    paths |= files_paths(str(ckpt), paths["videos"], tmp_path, 4)
    assert_agree(paths, 4)
    if crops == 1:  # the views matter: 3 crops (the old predict-files default was 1) differ
        other = Predictor.from_checkpoint(ckpt, "cpu", num_spatial_crops=3).predict(
            paths["videos"], 4)  # fmt: skip
        diff = max((vector(p.to_dict(), 4) - paths["test"][p.path]).abs().max() for p in other)
        assert diff > 2 * TOL  # would fail this test's tolerance


def ssv2_layout(synthetic: Path, root: Path) -> Path:
    """The synthetic videos as an SSv2 dataset: ``labels.json`` templates, ``train.json`` and
    ``validation.json`` entries, videos ``<id>.mp4`` (links to the synthetic ones)."""
    names = (synthetic / "classnames.txt").read_text().split()
    templates = [f"Moving [something] {n.split('_')[1]}" for n in names]
    labels = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(templates)}
    root.mkdir()
    (root / "labels.json").write_text(json.dumps(labels))
    for split, name in (("train", "train.json"), ("test", "validation.json")):
        entries = []
        for line in (synthetic / f"{split}.csv").read_text().splitlines():
            rel, label = line.split()
            vid = f"{split}{Path(rel).stem}"
            (root / f"{vid}.mp4").symlink_to(synthetic / rel)
            entries.append({"id": vid, "template": templates[int(label)]})
        (root / name).write_text(json.dumps(entries))
    return root


def test_ssv2_checkpoint_every_path_agrees(tiny_synthetic: Path, tmp_path: Path) -> None:
    """SSv2: segment sampling and 3 crops at short side = crop, from the record."""
    root = ssv2_layout(tiny_synthetic, tmp_path / "ssv2")
    args = data_args(root, tmp_path / "run", "--data.format=ssv2", "--data.clips.sampler=null",
                     "--data.annotations.video_ext=.mp4",
                     "--data.clips.train_scale=[40, 48]")  # fmt: skip
    ckpt = fit(args)
    record = torch.load(ckpt, weights_only=True)["input_config"]
    assert (record["sampler"], record["num_spatial_crops"], record["test_short_side"]) == (
        "segment", 3, 32)
    paths = every_path(args, [f"--ckpt_path={ckpt}"], tmp_path, 4)
    paths |= files_paths(str(ckpt), paths["videos"], tmp_path, 4)
    assert_agree(paths, 4)


def test_official_layout_file_every_path_agrees(tiny_synthetic: Path, tmp_path: Path) -> None:
    """An official ``.pyth`` (``model_state``, ``model.`` prefix, no config, no record): the
    file commands read sizes and scheme off its tensors and use the official record (dense
    clips from frame 0 at rate 256 / frames, 3 crops at short side = crop); ``tsf test`` of it
    as ``pretrained`` with a config of that protocol gives the same answers."""
    torch.manual_seed(0)
    net = TimeSformer(img_size=32, patch_size=8, num_frames=4, embed_dim=64, depth=2,
                      num_heads=4, num_classes=4, attention_type="joint_space_time")  # fmt: skip
    with torch.no_grad():
        net.time_embed.normal_(0, 0.5)
    official = tmp_path / "joint.pyth"
    torch.save({"model_state": {f"model.{k}": v for k, v in net.state_dict().items()},
                "epoch": 1}, official)  # fmt: skip
    args = data_args(tiny_synthetic, tmp_path / "run", "--data.clips.sampler=dense",
                     "--data.clips.sampling_rate=64", f"{NET}attention_type=joint_space_time")
    paths = every_path(args, [f"--model.pretrained={official}",
                              "--model.pretrained_kind=official"], tmp_path, 4)  # fmt: skip
    paths |= files_paths(str(official), paths["videos"], tmp_path, 4)
    assert_agree(paths, 4)


def test_file_commands_refuse_nothing_to_do(tmp_path: Path, capsys) -> None:
    """An empty folder, a folder named like a video, an empty annotation file: exit 2 with one
    line naming the input, before the model loads; a missing file is a decode error (exit 1)."""
    from conftest import write_tiny_checkpoint

    ckpt = str(write_tiny_checkpoint(tmp_path / "m.ckpt"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.mp4").mkdir()
    (tmp_path / "list.csv").write_text("\n")
    for given in ("empty", "x.mp4", "list.csv"):
        out = tmp_path / f"{given}.json"
        assert tsf(["predict-files", str(tmp_path / given), "--checkpoint", ckpt,
                    "--out", str(out)]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(tmp_path / given) in err, err
        assert not out.exists()
    write_broken(tmp_path / "gone.mp4", "missing")
    assert tsf(["predict-files", str(tmp_path / "gone.mp4"), "--checkpoint", ckpt]) == 1
    assert "cannot decode" in capsys.readouterr().err
