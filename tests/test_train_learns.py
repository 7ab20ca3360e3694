"""Training that learns: the demo's recipe on the synthetic motion task reaches a validation
top-1 far above chance with divided attention, while order-blind space-only attention stays at
the task's 50% ceiling (Mini Table 1, docs/results.md); and one optimizer step moves exactly the
parameters it should (frozen ones never, weight decay only where the recipe puts it).

Cheap version of Mini Table 1 (CI budget, a few seconds of CPU per run): the clips are rendered
by the synthetic generator in memory (``render_video``, 4 frames at 32 px, no video files; the
readers have their own barcode tests), the network is the demo's (dim 64, depth 3, 4 heads,
patch 8), the recipe the demo's (AdamW, warm-up + cosine, weight decay with exclusions,
``embed_init_std``, gradient clipping), trained for fewer epochs on fewer videos. With 4
rendered frames the frame *sets* of ``move_right`` / ``move_left`` (and down / up) share one
distribution exactly, so space-only is capped at 50% (axis known, direction not), not merely
near it. Each run would fail if the optimizer never stepped, if the learning rate stayed at
zero or if labels were paired with the wrong clips: the accuracy would stay at chance (25%).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from lightning_tsf.configs import config_path
from lightning_tsf.data.synthetic import class_names, render_video
from lightning_tsf.models import TimeSformer
from lightning_tsf.train.module import VideoClassifier

SIZE, FRAMES, CLASSES = 32, 2, 4  # the demo's crop; 2 frames (demo 4); 4 classes: chance 25%
NUM_TRAIN, NUM_VAL, EPOCHS, BATCH = 512, 128, 6, 16  # the demo: 512 videos, 40 epochs, 16
NET = dict(depth=2, num_heads=2)  # the demo: depth 3, 4 heads
LR = 2e-3


class Clips(Dataset):
    """uint8 clips ``(C, T, H, W)`` of the synthetic generator with their labels, balanced."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.permutation(np.arange(count) % CLASSES)
        frames = [render_video(int(k), rng, SIZE, FRAMES, CLASSES) for k in self.labels]
        self.video = torch.from_numpy(np.stack(frames)).permute(0, 4, 1, 2, 3).contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video": self.video[i], "label": int(self.labels[i])}


@pytest.fixture(scope="module")
def clips() -> tuple[Clips, Clips]:
    return Clips(NUM_TRAIN, seed=0), Clips(NUM_VAL, seed=1)


def demo_recipe() -> tuple[dict, dict, dict]:
    """(net init_args, model options without the net, trainer options) of the demo's file."""
    cfg = yaml.safe_load(config_path().read_text())
    model = {k: v for k, v in cfg["model"].items() if k != "net"}
    return dict(cfg["model"]["net"]["init_args"]), model, cfg["trainer"]


def classifier(scheme: str, **model_changes: Any) -> VideoClassifier:
    net_args, model, shipped = demo_recipe()
    net_args.update(
        NET, attention_type=scheme, img_size=SIZE, num_frames=FRAMES, num_classes=CLASSES
    )
    # the warm-up keeps its share of the run (the demo: 4 of 40 epochs)
    recipe = dict(lr=LR, warmup_epochs=model["warmup_epochs"] * EPOCHS / shipped["max_epochs"])
    torch.manual_seed(0)
    return VideoClassifier(TimeSformer(**net_args), **{**model, **recipe, **model_changes},
                           class_names=class_names(CLASSES))  # fmt: skip


def fit(module: VideoClassifier, train: Dataset, epochs: int = EPOCHS, **trainer: Any) -> None:
    _, _, shipped = demo_recipe()
    pl.seed_everything(0, verbose=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's setting (2 cores); also steadier timing under load
    try:
        pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   gradient_clip_val=shipped["gradient_clip_val"], **trainer).fit(
            module, DataLoader(train, batch_size=BATCH, shuffle=True))  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def predict(module: VideoClassifier, data: Clips) -> np.ndarray:
    """Predicted classes of the validation clips, normalised as the module's batches are."""
    module.eval()
    with torch.no_grad():
        batch = module.on_after_batch_transfer({"video": data.video.clone(), "label": None}, 0)
        return module(batch["video"]).argmax(1).numpy()


@pytest.mark.timeout(600)
def test_divided_learns_the_direction_of_time_space_only_cannot(clips) -> None:
    train, val = clips
    accuracy, axis = {}, {}
    for scheme in ("divided_space_time", "space_only"):
        module = classifier(scheme)
        fit(module, train)
        predicted = predict(module, val)
        accuracy[scheme] = float((predicted == val.labels).mean())
        # classes 2k and 2k+1 are one axis played both ways (move_right/left, down/up)
        axis[scheme] = float((predicted // 2 == val.labels // 2).mean())
    # chance is 25%; divided uses frame order: near 100% (Mini Table 1: 100.0 ± 0.0%)
    assert accuracy["divided_space_time"] >= 0.85, (accuracy, axis)
    # space-only learns the axis (50% of a correct axis pick is chance) but never the
    # direction: top-1 capped at 50% (Mini Table 1: 51.8 ± 2.4%; here 0.6 is the cap plus
    # 2.3 standard deviations of 128 coin flips)
    assert axis["space_only"] >= 0.7, (accuracy, axis)
    assert accuracy["space_only"] <= 0.6, (accuracy, axis)


def test_one_step_moves_what_the_recipe_says_and_nothing_else() -> None:
    """One optimizer step of the demo's recipe (AdamW, weight decay 0.05 with norms, biases and
    embeddings excluded, warm-up, gradient clipping), with the patch embedding and the first
    block frozen: every parameter moves by AdamW's first step written out here, frozen ones not
    at all. AdamW (Loshchilov & Hutter; torch.optim.AdamW) at step 1 with betas (b1, b2):
    m = (1-b1) g, v = (1-b2) g^2, bias-corrected m/(1-b1) = g and v/(1-b2) = g^2, so
    ``p <- p (1 - lr wd) - lr g / (|g| + eps)``; the lr of step 0 of a linear warm-up over W
    steps is ``lr / W``."""
    module = classifier("divided_space_time")
    frozen = {n for n, _ in module.net.named_parameters()
              if n.startswith(("patch_embed.", "blocks.0."))}  # fmt: skip
    for name, p in module.net.named_parameters():
        p.requires_grad_(name not in frozen)
    before = {n: p.detach().clone() for n, p in module.net.named_parameters()}
    fit(module, Clips(BATCH, seed=2), epochs=1)  # 1 step per epoch, 1 epoch
    hp = module.hparams
    warmup = round(hp.warmup_epochs * 1)  # warm-up epochs x steps per epoch
    lr = hp.lr * (1 / warmup if warmup else 1.0)
    assert lr > 0 and hp.optimizer == "adamw" and hp.exclude_from_decay
    no_decay = {"cls_token", "pos_embed", "time_embed"}  # timm's convention, plus < 2 dims
    moved = 0
    for name, p in module.net.named_parameters():
        p0 = before[name]
        if name in frozen:
            assert torch.equal(p.detach(), p0), f"frozen {name} changed"
            continue
        g = p.grad
        assert g is not None, name
        wd = 0.0 if (p.ndim < 2 or name in no_decay) else hp.weight_decay
        expected = p0 * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6, msg=name)
        moved += int(not torch.equal(p.detach(), p0))
    assert moved >= len(before) - len(frozen) - 12  # all but a few zero-gradient parameters
