"""VideoClassifier pieces without a Trainer: recipes, parameter groups, view de-duplication."""

from __future__ import annotations

import pytest
import torch

from lightning_tsf.data.scores import ViewAccumulator
from lightning_tsf.models import create_model
from lightning_tsf.train.module import VideoClassifier
from lightning_tsf.train.optim import LRSchedule, build_optimizer, param_groups


def test_paper_step_schedule() -> None:
    """lr ÷10 at (0-indexed) epochs 11 and 14 of 15, as the official STEPS [0, 11, 14]."""
    sched = LRSchedule("step", steps_per_epoch=10, epochs=15, milestones=(11, 14), gamma=0.1)
    lrs = [sched(epoch * 10) for epoch in range(15)]
    assert lrs[:11] == [1.0] * 11
    assert lrs[11:14] == pytest.approx([0.1] * 3)
    assert lrs[14] == pytest.approx(0.01)


def test_warmup_cosine_schedule() -> None:
    sched = LRSchedule("cosine", steps_per_epoch=10, epochs=10, warmup_epochs=1, min_lr_ratio=0)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0) and sched(55) == pytest.approx(0.5)
    assert sched(99) < 0.01


def test_sgd_recipe_and_decay_groups() -> None:
    net = create_model("timesformer_tiny", num_classes=4)
    opt = build_optimizer(net, "sgd", lr=0.005, weight_decay=1e-4)
    (group,) = opt.param_groups  # official: decay on all parameters
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    decay, no_decay = param_groups(net, 1e-4, exclude_from_decay=True)
    names = {id(p): n for n, p in net.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed", "time_embed", "norm.weight", "head.bias"} <= skipped
    assert all(p.ndim >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0


def test_view_accumulator_averages_whole_videos_across_batches_and_ranks() -> None:
    """Hand-computed: video 7 has views in two batches (one of them on another 'rank'), video
    3 one unreadable view and one good one, video 5 none readable (reported, not averaged)."""
    a, b = ViewAccumulator(), ViewAccumulator()
    a.add([7, 3, 3], [1, 0, 0], ["v7", "v3", "v3"], [True, False, True],
          ["", "cannot decode v3: x", ""], probs=torch.tensor([[0.2, 0.8], [0.6, 0.4]]))
    assert len(a.complete(num_views=2)) == 1  # video 3 is whole (2 views seen), 7 is not
    b.add([7, 5, 5], [1, 2, 2], ["v7", "v5", "v5"], [True, False, False], ["", "bad", "bad"],
          probs=torch.tensor([[0.4, 0.6]]))  # fmt: skip
    a.merge([b.state()])
    scores = a.result()
    assert scores.video_index.tolist() == [7] and scores.labels.tolist() == [1]
    torch.testing.assert_close(scores.rows["probs"], torch.tensor([[0.3, 0.7]]))
    assert scores.errors == {"v5": "bad"}


def test_checkpoint_hparams_are_plain() -> None:
    model = VideoClassifier(create_model("timesformer_tiny", num_classes=4), mixup_alpha=0.2)
    assert "net" not in model.hparams
    video = torch.randn(4, 3, 4, 32, 32)
    labels = torch.tensor([3, 1, 0, 2])
    torch.manual_seed(0)
    mixed, y_a, y_b, lam = model._mix(video, labels)
    # mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_perm(i), loss weights lam / 1 - lam
    # on the clip's own label and its partner's: the partner of clip i carries label y_b[i]
    assert 0 < lam < 1 and torch.equal(y_a, labels)
    perm = torch.tensor([int((labels == y).nonzero()) for y in y_b])  # labels are distinct
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(mixed, lam * video + (1 - lam) * video[perm])


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area() -> None:
    """CutMix (Yun et al. 2019): a box of the partner clip pasted into every frame, the label
    weight of the clip itself = 1 - box area / frame area."""
    model = VideoClassifier(create_model("timesformer_tiny", num_classes=4), cutmix_alpha=1.0)
    video = torch.randn(4, 3, 4, 32, 32)
    labels = torch.tensor([3, 1, 0, 2])
    torch.manual_seed(1)
    mixed, y_a, y_b, lam = model._mix(video, labels)
    perm = torch.tensor([int((labels == y).nonzero()) for y in y_b])
    box = (mixed != video).any(1).any(1)  # (B, H, W): pixels that came from the partner
    for i in range(4):
        if perm[i] == i:
            continue
        ys, xs = box[i].nonzero(as_tuple=True)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        assert box[i].sum() == (y1 - y0) * (x1 - x0)  # a rectangle
        assert abs(1 - float((y1 - y0) * (x1 - x0)) / (32 * 32) - lam) < 1e-6
        part = (..., slice(y0, y1), slice(x0, x1))
        torch.testing.assert_close(mixed[i][part], video[perm[i]][part])
    assert torch.equal(y_a, labels)


def test_batches_are_normalised_after_the_transfer() -> None:
    """uint8 clips from the workers become ``(x / 255 - mean) / std`` in the module's
    ``on_after_batch_transfer``, with the mean/std it was given (linked from the data)."""
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = VideoClassifier(create_model("timesformer_tiny", num_classes=4), mean=mean, std=std)
    video = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    batch = model.on_after_batch_transfer({"video": video.clone(), "label": torch.zeros(2)}, 0)
    ref = torch.stack([(video[:, c].double() / 255 - mean[c]) / std[c] for c in range(3)], 1)
    assert batch["video"].dtype == torch.float32
    torch.testing.assert_close(batch["video"].double(), ref, atol=1e-6, rtol=0)
    again = model.on_after_batch_transfer(batch, 0)  # float batches are left alone
    assert again["video"] is batch["video"]


def test_a_network_built_in_python_is_left_out_of_logged_hyperparameters(tmp_path) -> None:
    """Loggers write ``hparams_initial``: a network passed as a module must not be in it (on a
    ViT-B, CSVLogger spent minutes writing every weight as YAML text), nor warned about."""
    import warnings

    from pytorch_lightning.loggers import CSVLogger

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = VideoClassifier(create_model("timesformer_tiny", num_classes=4))
    assert "net" not in model.hparams and "net" not in model.hparams_initial
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(model.hparams_initial)
    logger.save()
    written = (tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text()
    assert "lr:" in written and len(written) < 4000
