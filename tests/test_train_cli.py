"""LightningCLI: every experiment file runs ``fast_dev_run``; config errors fail fast with a
message naming the key or path; checkpoints load with ``weights_only``; W&B offline logs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_overrides

from lightning_tsf.commands.lightning import TSFCLI, cli_main
from lightning_tsf.configs import config_path
from lightning_tsf.models import TimeSformer, load_checkpoint, zoo

ROOT = Path(__file__).parents[1]
DEMO = config_path()  # ships inside the package
EXPERIMENTS = sorted(ROOT.glob("experiments/*.yaml")) + [DEMO]
SMOKE = ROOT / "experiments" / "smoke_cpu.yaml"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_all_paper_configurations_present() -> None:
    names = {p.stem for p in EXPERIMENTS}
    for ds in ("k400", "k600", "ssv2"):
        assert {f"{ds}_timesformer", f"{ds}_timesformer_hr", f"{ds}_timesformer_l"} <= names
    for ds in ("k400", "ssv2"):
        for attn in ("space_only", "joint_space_time", "divided_space_time", "axial"):
            assert f"{ds}_attn_{attn}" in names
        assert f"{ds}_attn_sparse_local_global" in names
    assert {"finetune_official_k400", "demo_synthetic", "smoke_cpu"} <= names


def test_generate_reproduces_committed_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Running experiments/generate.py writes exactly the committed files, no more, no less."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import generate

    written = {}
    for name, (comment, cfg) in generate.experiments().items():
        written[generate.output_path(name).resolve()] = generate.render(name, comment, cfg)
    assert set(written) == {p.resolve() for p in EXPERIMENTS}
    for path, text in written.items():
        assert path.read_text() == text, f"{path} differs from what generate.py writes"


def _shipped(config: Path) -> dict:
    return yaml.safe_load(config.read_text())


@pytest.fixture
def shipped_data(tiny_synthetic, ssv2_synthetic, folder_synthetic, tiny_shards) -> dict:
    """The data root of each shipped data format (shards: ``tsf shard``'s output)."""
    return {"kinetics": tiny_synthetic, "ssv2": ssv2_synthetic, "folder": folder_synthetic,
            "shards": tiny_shards}  # fmt: skip


# Table 1 of the paper (PAPER.md): parameters without the head, ViT-Base at 8x224, in millions
TABLE_1_PARAMS_M = {"space_only": 85.9, "joint_space_time": 85.9, "divided_space_time": 121.4,
                    "sparse_local_global": 121.4, "axial": 156.8}  # fmt: skip
# Trained for real here: a ViT-B step costs ~30 CPU-seconds (backward and SGD over 121M
# parameters, a 1 GB checkpoint), so one ViT-B file (folder data, the official-layout K400
# zoo file, its head replaced) and the two CPU-sized files; every file, the SSv2 ones on SSv2
# data included, is built, loaded and fed its own data in the meta-device test below.
FIT = {"finetune_official_k400", "smoke_cpu", "demo_synthetic"}


def _shipped_cli(config: Path, data: dict, run: Path, zoo_mirror, monkeypatch) -> TSFCLI:
    """``config`` through the CLI with ``conftest.run_overrides`` alone (ViT-B files on 2
    frames: the cost grows with the tokens, not the features), ``zoo:`` from the mirror."""
    url, cache, _ = zoo_mirror
    monkeypatch.setenv(zoo.MIRROR_ENV, url)
    monkeypatch.setenv(zoo.CACHE_ENV, str(cache))
    shipped = _shipped(config)
    kind = "shards" if config.stem.endswith("_shards") else shipped["data"]["format"]
    frames = 2 if shipped["model"]["net"]["init_args"]["patch_size"] == 16 else None
    return TSFCLI(args=["--config", str(config),
                        *run_overrides(data[kind], run, frames=frames, batches=1)],
                  run=False)  # fmt: skip


def _as_shipped(cli: TSFCLI, config: Path) -> None:
    """The network, data format, sampler, flip and classes are the file's."""
    shipped, net, data = _shipped(config), cli.model.net, cli.datamodule
    net_args = shipped["model"]["net"]["init_args"]
    built = dict(embed_dim=net.embed_dim, depth=len(net.blocks), patch_size=net.patch_size,
                 num_heads=net.blocks[0].attn.num_heads,
                 attention_type=net.attention_type)  # fmt: skip
    assert built == {k: net_args[k] for k in built}
    assert data.format == shipped["data"]["format"]
    for group, key in (("clips", "sampler"), ("augment", "horizontal_flip"),
                       ("annotations", "video_ext"), ("annotations", "video_dir")):  # fmt: skip
        if key in shipped["data"].get(group, {}):
            assert getattr(getattr(data, group), key) == shipped["data"][group][key], key
    assert net.num_classes == data.num_classes == 4
    assert cli.model.hparams.class_names == data.class_names


def _loaded_from_mirror(cli: TSFCLI, config: Path, zoo_mirror) -> str | None:
    spec = _shipped(config)["model"].get("pretrained")
    if spec:
        name = spec.removeprefix(zoo.PREFIX)
        assert cli.model.pretrained_from.path == zoo_mirror[1] / zoo.ZOO[name].file
        return name
    return None


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", [c for c in EXPERIMENTS if c.stem in FIT],
                         ids=lambda p: p.stem)  # fmt: skip
def test_experiment_trains_as_shipped(
    config: Path, shipped_data: dict, zoo_mirror, tmp_path: Path, monkeypatch
) -> None:
    """The file trains (one optimizer step of its recipe, one validation batch, its
    checkpoint callback and logger) with only its data path and sizes changed: the fine-tune
    file on a folder dataset from the official-layout K400 ``zoo:`` file, fetched from a
    loopback mirror and loaded into the real ViT-B, its 400-class head replaced."""
    import wandb

    run = tmp_path / "run"
    cli = _shipped_cli(config, shipped_data, run, zoo_mirror, monkeypatch)
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        wandb.finish()  # as `tsf fit` ends its run: a later logger must not reuse this one
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    _as_shipped(cli, config)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    name = _loaded_from_mirror(cli, config, zoo_mirror)
    if name:  # the file's weights, moved a little by one SGD step (lr 0.005 / 5e-4)
        want = zoo_mirror[2][name]["blocks.0.attn.qkv.weight"]
        torch.testing.assert_close(cli.model.net.blocks[0].attn.qkv.weight.detach(), want,
                                   atol=2e-3, rtol=0)  # fmt: skip
    shutil.rmtree(run)  # ViT-B checkpoints are ~1 GB each


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_builds_loads_and_reads_as_shipped(
    config: Path, shipped_data: dict, zoo_mirror, tmp_path: Path, monkeypatch
) -> None:
    """Every file, with only its data path and sizes changed, through the CLI with the network
    on the ``meta`` device (every shape, no memory, no compute; the trained ones above run it
    for real): its ``zoo:`` file fetched from the mirror and loaded (keys and shapes checked,
    ``pos_embed`` resized), one training and one validation batch decoded from data of its
    format by its sampler. At the file's real sizes (8x224; ``_hr`` 16x448; ``_l`` 96x224), the
    network has Table 1's parameter count and a forward pass on the meta device gives one
    score per class: the stand-in for a real forward, which takes 0.2-2.4 TMACs per clip
    (minutes of CPU for ``_hr`` and ``_l``)."""
    with torch.device("meta"):
        cli = _shipped_cli(config, shipped_data, tmp_path / "run", zoo_mirror, monkeypatch)
    _as_shipped(cli, config)
    report = cli.model.load_pretrained()
    assert (report is None) == (_loaded_from_mirror(cli, config, zoo_mirror) is None)
    data = cli.datamodule
    data.setup("fit")
    frames = cli.model.net.num_frames
    for loader in (data.train_dataloader(), data.val_dataloader()):
        batch = next(iter(loader))
        assert batch["video"].shape[1:] == (3, frames, 32, 32)  # (views of) 2 videos
        assert set(batch["label"].tolist()) <= set(range(4))
    shipped = _shipped(config)
    net_args = shipped["model"]["net"]["init_args"]
    if net_args["patch_size"] != 16:
        return  # the tiny CPU files: not a paper model
    size, frames = shipped["data"]["clips"]["crop_size"], shipped["data"]["clips"]["num_frames"]
    with torch.device("meta"):
        real = TimeSformer(**net_args, img_size=size, num_frames=frames, num_classes=400)
        scores = real(torch.empty(1, 3, frames, size, size))
    assert scores.shape == (1, 400)
    # Table 1 counts 8x224 (196 patches + cls, 8 frames); other sizes add position and time
    # embeddings, (patches - 196) x 768 and (frames - 8) x 768 where the scheme has them
    scheme = net_args["attention_type"]
    extra = ((size // 16) ** 2 - 196) * 768
    if scheme != "space_only":
        extra += (frames - 8) * 768
    params = sum(p.numel() for n, p in real.named_parameters() if not n.startswith("head."))
    paper = TABLE_1_PARAMS_M[scheme] * 1e6 + extra
    assert abs(params - paper) / paper <= 0.003, (params, paper)


def _error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    start = time.perf_counter()
    try:
        rc = cli_main(args)
    except SystemExit as exit_:  # jsonargparse errors
        rc = exit_.code
    assert rc == 2
    assert time.perf_counter() - start < 20
    return capsys.readouterr().err


def test_unknown_key_named(capsys: pytest.CaptureFixture, tiny_synthetic: Path) -> None:
    err = _error(capsys, ["fit", "--config", str(SMOKE), "--model.lrr=0.1"])
    assert "lrr" in err


def test_unknown_key_in_yaml_named(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("  lr: 0.001", "  lr: 0.001\n  learning_rat: 3"))
    err = _error(capsys, ["fit", "--config", str(bad)])
    assert "learning_rat" in err


def test_wrong_type_named(capsys: pytest.CaptureFixture) -> None:
    err = _error(capsys, ["fit", "--config", str(SMOKE), "--data.batch_size=many"])
    assert "batch_size" in err


def test_missing_data_root_named(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    err = _error(capsys, ["fit", "--config", str(SMOKE), f"--data.data_root={missing}"])
    assert "data.data_root" in err and str(missing) in err


def test_missing_annotation_file_named(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    err = _error(capsys, ["fit", "--config", str(SMOKE), f"--data.data_root={tmp_path}"])
    assert str(tmp_path / "train.csv") in err


def test_missing_pretrained_and_ckpt_named(
    capsys: pytest.CaptureFixture, tiny_synthetic: Path, tmp_path: Path
) -> None:
    base = ["fit", "--config", str(SMOKE), f"--data.data_root={tiny_synthetic}"]
    err = _error(capsys, [*base, f"--model.pretrained={tmp_path / 'vit.pth'}"])
    assert "model.pretrained" in err and "vit.pth" in err
    err = _error(capsys, [*base, f"--ckpt_path={tmp_path / 'x.ckpt'}"])
    assert "ckpt_path" in err and "x.ckpt" in err


def test_print_config_links_classes(
    capsys: pytest.CaptureFixture, tiny_synthetic: Path, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(
            ["fit", "--config", str(SMOKE), f"--data.data_root={tiny_synthetic}", "--print_config"]
        )
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "attention_type: divided_space_time" in out and "num_frames: 4" in out


def test_pretrained_timm_file_loads(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    """ImageNet init: a timm-format ViT state dict (no temporal parts) initialises the backbone."""
    vit = TimeSformer(
        img_size=32,
        patch_size=8,
        num_frames=4,
        num_classes=10,
        embed_dim=16,
        depth=1,
        num_heads=2,
        attention_type="space_only",
    )
    state = {k: v for k, v in vit.state_dict().items()}
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    args = [
        "--config",
        str(SMOKE),
        *tiny_overrides(tmp_path),
        f"--model.pretrained={path}",
        "--model.pretrained_kind=timm",
    ]
    cli = TSFCLI(args=args, run=False)
    cli.model.load_pretrained()  # `tsf fit` does this before training (setup when under DDP)
    assert torch.equal(cli.model.net.patch_embed.proj.weight, vit.patch_embed.proj.weight)


def test_fit_test_predict_wandb_offline(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    """The demo config end to end on tiny data: W&B offline run with metrics, config saved,
    ``last.ckpt`` loadable with ``weights_only`` and by ``load_checkpoint``, predictions."""
    run = tmp_path / "run"
    args = [
        "--config",
        str(DEMO),
        *tiny_overrides(run),
        "--trainer.max_epochs=2",
        "--data.clips.num_spatial_crops=3",
        "--trainer.log_every_n_steps=1",
    ]
    assert cli_main(["fit", *args]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and "RNGStateCallback" in state["callbacks"]
    assert state["hyper_parameters"]["net"]["init_args"]["num_classes"] == 4
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert not list((run / "checkpoints").glob(".*tmp"))
    net = TimeSformer(
        img_size=32, patch_size=8, num_frames=4, num_classes=4, embed_dim=16, depth=1, num_heads=2
    )
    load_checkpoint(net, ckpt)
    assert torch.equal(net.head.weight, state["state_dict"]["net.head.weight"])
    assert "num_frames: 4" in (run / "config.yaml").read_text()
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("run-*.wandb")
    data = log.read_bytes()
    for key in (b"val/acc1", b"train/loss", b"lr-AdamW", b"num_frames", b"protocol",
                b"video-level accuracy, the paper's kind", b"clip-level accuracy"):  # fmt: skip
        assert key in data, key
    # the config in the W&B run holds the values the model was built with
    assert b'"num_classes":4,' in data and b'"num_classes":400' not in data
    assert b'"move_right"' in data
    assert cli_main(["test", *args, f"--ckpt_path={ckpt}"]) == 0
    out = tmp_path / "pred.jsonl"
    predict = [
        "predict",
        *args,
        f"--ckpt_path={ckpt}",
        "--trainer.callbacks+=lightning_tsf.train.callbacks.PredictionWriter",
        f"--trainer.callbacks.output={out}",
    ]
    assert cli_main(predict) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 7
    assert os.path.getsize(out) > 0 and "move_" in lines[0]


def test_test_and_predict_files_agree_per_video(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    """``tsf test`` (dataset + Trainer) and ``tsf predict-files`` (files + inference module)
    give the same per-video probabilities for the same checkpoint, videos and 3 views."""
    from lightning_tsf.cli import main as tsf

    run = tmp_path / "run"
    args = ["--config", str(DEMO), *tiny_overrides(run), "--trainer.max_epochs=1",
            "--data.clips.num_spatial_crops=3"]  # fmt: skip
    assert cli_main(["fit", *args]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    cli = TSFCLI(args=[*args, f"--trainer.default_root_dir={tmp_path / 'test'}"], run=False)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(ckpt), verbose=False)
    res = cli.model.test_results
    records = cli.datamodule.records("test")
    tested = {records[i].path: p for i, p in zip(res["video_index"].tolist(), res["probs"])}
    assert len(tested) == 7
    assert res["protocol"].startswith("video-level accuracy, the paper's kind")
    assert "1 clip(s) x 3 left/centre/right crop(s) of 32" in res["protocol"]

    out = tmp_path / "files.json"
    rc = tsf(["predict-files", *tested, "--checkpoint", str(ckpt), "--num-spatial-crops", "3",
              "--topk", "4", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == list(tested)
    for row in rows:
        probs = torch.zeros(4)
        probs[row["indices"]] = torch.tensor(row["probs"])
        torch.testing.assert_close(probs, tested[row["path"]], atol=2e-6, rtol=0)
    # and the views are not all alike: the averaged probabilities differ between videos
    assert len({tuple(r["indices"]) + tuple(r["probs"]) for r in rows}) > 1
