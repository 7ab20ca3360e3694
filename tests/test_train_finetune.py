"""``experiments/finetune_official_k400.yaml`` as documented: an official-layout K400
checkpoint (``model_state``, ``model.``-prefixed keys, 400-class head; built here from the key
table of the official code, not saved from our model) fine-tuned on a 3-class folder dataset."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from lightning_tsf.commands.lightning import TSFCLI, cli_main

CONFIG = Path(__file__).parents[1] / "experiments" / "finetune_official_k400.yaml"
D, DEPTH, P, T, S = 16, 2, 8, 4, 32  # shrunk sizes: dim, blocks, patch, frames, crop


def official_state(num_classes: int = 400) -> dict[str, torch.Tensor]:
    """Divided space-time TimeSformer keys and shapes as the official ``vit.py`` names them."""
    g = torch.Generator().manual_seed(0)
    n = (S // P) ** 2

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    state = {"cls_token": t(1, 1, D), "pos_embed": t(1, n + 1, D), "time_embed": t(1, T, D),
             "patch_embed.proj.weight": t(D, 3, P, P), "patch_embed.proj.bias": t(D)}  # fmt: skip
    for i in range(DEPTH):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2", "temporal_norm1"):
            state[b + norm + ".weight"], state[b + norm + ".bias"] = 1 + t(D), t(D)
        for attn in ("attn", "temporal_attn"):
            state[b + attn + ".qkv.weight"], state[b + attn + ".qkv.bias"] = t(3 * D, D), t(3 * D)
            state[b + attn + ".proj.weight"], state[b + attn + ".proj.bias"] = t(D, D), t(D)
        state[b + "temporal_fc.weight"], state[b + "temporal_fc.bias"] = t(D, D), t(D)
        state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"] = t(4 * D, D), t(4 * D)
        state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"] = t(D, 4 * D), t(D)
    state["norm.weight"], state["norm.bias"] = 1 + t(D), t(D)
    state["head.weight"], state["head.bias"] = t(num_classes, D), t(num_classes)
    return state


@pytest.fixture
def folder_dataset(tmp_path: Path, make_video) -> Path:
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for cls in ("cut", "pour", "stir"):
            for i in range(n):
                make_video(f"my_videos/{split}/{cls}/{i}.mp4", num_frames=24)
    return tmp_path / "my_videos"


def test_finetune_official_checkpoint(folder_dataset: Path, tmp_path: Path, monkeypatch,
                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    state = official_state()
    ckpt = tmp_path / "TimeSformer_divST_8x32_224_K400.pyth"
    torch.save({"model_state": {f"model.{k}": v for k, v in state.items()}, "epoch": 15,
                "optimizer_state": {}, "cfg": "TRAIN: ..."}, ckpt)  # fmt: skip
    net = "--model.net.init_args."
    args = ["--config", str(CONFIG), f"--data.data_root={folder_dataset}",
            f"--model.pretrained={ckpt}", f"{net}embed_dim={D}", f"{net}depth={DEPTH}",
            f"{net}num_heads=2", f"{net}patch_size={P}", f"--data.clips.num_frames={T}",
            f"--data.clips.crop_size={S}", f"--data.clips.train_scale=[{S}, {S + 4}]",
            "--data.batch_size=2",
            "--data.num_workers=0", "--trainer.accelerator=cpu", "--trainer.devices=1",
            f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false"]  # fmt: skip

    with caplog.at_level(logging.WARNING):
        cli = TSFCLI(args=args, run=False)
        cli.model.load_pretrained()  # `tsf fit` does this before training
    assert "head: replaced: checkpoint 400 classes -> model 3, newly initialised" in caplog.text
    loaded = cli.model.net.state_dict()
    for key, value in state.items():
        if not key.startswith("head."):
            assert torch.equal(loaded[key], value), key
    assert cli.model.net.head.weight.shape == (3, D)

    assert cli_main(["fit", *args]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert cli_main(["test", *args, f"--ckpt_path={last}"]) == 0
    refuse = [*args, "--model.replace_head=false"]
    assert cli_main(["fit", *refuse]) == 2  # the option that refuses instead
