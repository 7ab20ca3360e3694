"""DataModule end to end: every annotation format, multi-view evaluation, broken videos,
real DataLoader workers (fork and spawn), and the non-padding distributed eval sampler."""

import json

import numpy as np
import pytest
import torch
from conftest import (
    BROKEN_KINDS,
    DECODE_TOLERANCE,
    data_module,
    frame_ids,
    video_frames,
    write_broken,
)

from lightning_tsf.data import (
    DistributedEvalSampler,
    VideoDataset,
    VideoRecord,
    ViewSpec,
    dense_indices,
    eval_summary,
    segment_indices,
)
from lightning_tsf.data.annotations import AnnotationError

SMALL = dict(crop_size=48, train_scale=(48, 56), batch_size=4, num_workers=0)


def check_eval_clip(clip: torch.Tensor, indices: np.ndarray, length: int) -> None:
    """A centre-cropped eval clip of a 48x64 pattern video equals the written frames."""
    expected = video_frames(length, 48, 64)[indices][:, :, 8:56]  # (T, H, W, C)
    assert clip.dtype == torch.uint8  # normalised on the device, not in the workers
    got = clip.permute(1, 2, 3, 0).numpy()
    assert np.abs(got.astype(np.int16) - expected).max() <= DECODE_TOLERANCE
    assert frame_ids(got) == [i % 52 for i in indices]


def test_kinetics_frames_labels_and_batch_types(kinetics_root):
    dm = data_module(
        str(kinetics_root), num_frames=4, sampling_rate=5, num_spatial_crops=1, **SMALL
    )
    assert dm.num_classes == 2 and dm.class_names == ["left", "right"]
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["video"].shape == (2, 3, 4, 48, 48) and batch["video"].dtype == torch.uint8
    for key, dtype in [("label", torch.long), ("video_index", torch.long), ("valid", torch.bool)]:
        assert batch[key].dtype == dtype
    assert batch["label"].tolist() == [0, 1] and batch["valid"].all()
    assert batch["path"][1].endswith("videos/test/v1.mp4") and batch["retries"].sum() == 0
    for i, length in enumerate([20, 25]):
        check_eval_clip(batch["video"][i], dense_indices(length, 4, 5, train=False), length)


def test_kinetics_comma_and_header_and_no_class_file(tmp_path, make_video):
    make_video("a b.mp4")  # a space in the name works with a comma separator
    (tmp_path / "train.csv").write_text("path,label\na b.mp4,2\n")
    (tmp_path / "val.csv").write_text("a b.mp4,0\n")
    dm = data_module(str(tmp_path), **SMALL)
    assert dm.num_classes == 3 and dm.class_names == ["0", "1", "2"]
    assert [r.label for r in dm.records("train")] == [2]


def test_ssv2_templates_segment_sampling_and_no_flip(ssv2_root):
    dm = data_module(str(ssv2_root), format="ssv2", num_frames=4, num_spatial_crops=1, **SMALL)
    assert dm.input_config.sampler == "segment" and dm.horizontal_flip is False
    assert dm.class_names[1] == "Putting something on a surface"
    dm.setup("fit")
    assert dm.datasets["train"].transform.horizontal_flip is False
    assert [r.label for r in dm.records("train")] == [1, 0, 1]
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].tolist() == [0, 1]
    check_eval_clip(batch["video"][0], segment_indices(24, 4, train=False), 24)
    train = next(iter(dm.train_dataloader()))
    assert train["video"].shape == (3, 3, 4, 48, 48)


def test_folder_format(tmp_path, make_video):
    for split in ("train", "val"):
        for cls in ("jump", "run", "walk"):
            make_video(f"{split}/{cls}/{cls}0.mp4", num_frames=12)
    dm = data_module(
        str(tmp_path), format="folder", num_frames=4, sampling_rate=2, num_spatial_crops=1, **SMALL
    )
    assert dm.class_names == ["jump", "run", "walk"] and dm.horizontal_flip is True
    assert [r.label for r in dm.records("val")] == [0, 1, 2]
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    check_eval_clip(batch["video"][2], dense_indices(12, 4, 2, train=False), 12)


def test_nothing_read_at_init_missing_paths_named_at_first_read(tmp_path, kinetics_root):
    """Building a DataModule reads nothing; the class names (the first read) name the
    missing path."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _ = data_module(str(tmp_path / "nowhere")).class_names
    (kinetics_root / "val.csv").unlink()
    dm = data_module(str(kinetics_root))  # no error yet: nothing is read in __init__
    with pytest.raises(FileNotFoundError, match="val.csv"):
        _ = dm.num_classes
    with pytest.raises(FileNotFoundError, match="labels.json"):
        (kinetics_root / "validation.json").write_text("[]")
        (kinetics_root / "train.json").write_text("[]")
        _ = data_module(str(kinetics_root), format="ssv2").class_names


def test_multi_view_indices(kinetics_root):
    dm = data_module(
        str(kinetics_root),
        num_frames=2,
        sampling_rate=4,
        num_spatial_crops=3,
        num_temporal_views=2,
        **{**SMALL, "batch_size": 6},
    )
    dm.setup("validate")
    ds = dm.datasets["val"]
    assert ds.num_videos == 3 and ds.num_views == 6 and len(ds) == 3  # items: whole videos
    batches = list(dm.val_dataloader())
    assert [len(b["path"]) for b in batches] == [6, 6, 6]  # batch_size 6 // 6 views: 1 video
    video_index = torch.cat([b["video_index"] for b in batches]).tolist()
    view_index = torch.cat([b["view_index"] for b in batches]).tolist()
    assert video_index == [v for v in range(3) for _ in range(6)]
    assert view_index == list(range(6)) * 3
    first = batches[0]["video"]  # video 0 (20 frames): views 0-2 clip 0, views 3-5 clip 1
    lefts = [int(first[i, 0, 0, 0, 0]) for i in range(3)]  # R channel = column gradient
    assert lefts[0] < lefts[1] < lefts[2]
    for view, temporal in [(0, 0), (3, 1)]:
        idx = dense_indices(20, 2, 4, train=False, view=temporal, num_views=2)
        assert frame_ids(first[view].permute(1, 2, 3, 0).round().byte().numpy()) == list(idx)


def add_broken(root, kinds, split):
    lines = [f"bad_{kind}.mp4 0\n" for kind in kinds]
    for kind in kinds:
        write_broken(root / f"bad_{kind}.mp4", kind)
    with open(root / f"{split}.csv", "a") as f:
        f.writelines(lines)


def test_training_skips_broken_videos_and_counts(kinetics_root, caplog):
    add_broken(kinetics_root, BROKEN_KINDS, "train")
    dm = data_module(str(kinetics_root), num_frames=2, sampling_rate=2, **SMALL)
    dm.setup("fit")
    ds = dm.datasets["train"]
    torch.manual_seed(0)
    retries, paths = 0, set()
    for _ in range(3):
        for i in range(len(ds)):
            sample = ds[i]
            retries += sample["retries"]
            paths.add(sample["path"])
    assert retries >= 3 * len(BROKEN_KINDS)  # every broken one was replaced
    assert not any("bad_" in p for p in paths)
    logged = [r.getMessage() for r in caplog.records if "cannot decode" in r.getMessage()]
    assert len(logged) == len(BROKEN_KINDS)  # each failure logged once, by path
    assert all(any(f"bad_{k}" in m for m in logged) for k in BROKEN_KINDS)


def test_training_gives_up_after_bounded_retries(tmp_path):
    for split in ("train", "val"):
        write_broken(tmp_path / "zero.mp4", "zero")
        (tmp_path / f"{split}.csv").write_text("zero.mp4 0\n")
    dm = data_module(str(tmp_path), max_decode_retries=3, **SMALL)
    dm.setup("fit")
    with pytest.raises(RuntimeError, match="max_decode_retries=3"):
        dm.datasets["train"][0]


def test_evaluation_reports_broken_videos_never_replaces(kinetics_root):
    add_broken(kinetics_root, BROKEN_KINDS, "val")
    dm = data_module(
        str(kinetics_root), num_frames=2, sampling_rate=2, num_spatial_crops=3, **SMALL
    )
    dm.setup("validate")
    ds = dm.datasets["val"]
    batches = list(dm.val_dataloader())
    valid = torch.cat([b["valid"] for b in batches])
    paths = [p for b in batches for p in b["path"]]
    assert len(valid) == ds.num_videos * ds.num_views == 8 * 3
    bad = sorted({p for p, ok in zip(paths, valid.tolist()) if not ok})
    assert len(bad) == len(BROKEN_KINDS) and all("bad_" in p for p in bad)
    videos = torch.cat([b["video"] for b in batches])
    assert videos[~valid].abs().sum() == 0 and videos[valid].abs().sum() > 0
    summary = eval_summary(ds.num_videos, bad)
    assert summary.startswith("evaluated 3/8 videos; 5 unreadable:") and bad[0] in summary


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(kinetics_root, context):
    dm = data_module(
        str(kinetics_root),
        num_frames=4,
        sampling_rate=2,
        num_spatial_crops=3,
        multiprocessing_context=context,
        persistent_workers=True,
        **{**SMALL, "num_workers": 2, "batch_size": 2},
    )
    dm.setup("fit")
    torch.manual_seed(0)
    for _ in range(2 if context == "fork" else 1):  # persistent workers serve a second epoch
        train = list(dm.train_dataloader())
        assert len(train) == 2 and all(b["video"].shape == (2, 3, 4, 48, 48) for b in train)
    if context == "spawn":
        return  # each spawned worker start costs seconds; one loader shows it works
    val = list(dm.val_dataloader())
    keys = [
        (v, w) for b in val for v, w in zip(b["video_index"].tolist(), b["view_index"].tolist())
    ]
    assert sorted(keys) == [(v, w) for v in range(3) for w in range(3)]


@pytest.mark.parametrize(
    "videos, crops, temporal, replicas",
    [(7, 3, 1, 2), (10, 1, 1, 3), (9, 3, 2, 3), (2, 3, 1, 4), (0, 3, 1, 2)],
)
def test_distributed_eval_sampler_whole_videos_once(videos, crops, temporal, replicas):
    """Every video (an evaluation item: all its views) once over all ranks, contiguous
    chunks whose sizes differ by one at most."""
    spec = ViewSpec(num_spatial_crops=crops, num_temporal_views=temporal)
    records = [VideoRecord(f"v{i}.mp4", 0) for i in range(videos)]
    dataset = VideoDataset(records, spec, train=False)
    views = crops * temporal
    seen, owner = [], {}
    for rank in range(replicas):
        sampler = DistributedEvalSampler(dataset, num_replicas=replicas, rank=rank)
        part = list(sampler)
        assert len(part) == len(sampler)
        assert all(b - a == 1 for a, b in zip(part, part[1:]))  # one contiguous chunk
        for item in part:
            assert owner.setdefault(item, rank) == rank, "a video on two ranks"
        seen += part
    assert sorted(seen) == list(range(videos)) and len(dataset) == videos
    assert dataset.num_views == views
    sizes = [sum(1 for r in owner.values() if r == rank) for rank in range(replicas)]
    assert max(sizes, default=0) - min(sizes, default=0) <= 1


def test_ssv2_unlabelled_entries_only_for_predict(ssv2_root):
    """SSv2's unlabelled test set can be predicted on, not tested (test scores labels)."""
    (ssv2_root / "test.json").write_text(json.dumps([{"id": "4"}]))
    dm = data_module(str(ssv2_root), format="ssv2", predict_split="test.json", **SMALL)
    assert [r.label for r in dm.records("predict")] == [-1]
    dm = data_module(str(ssv2_root), format="ssv2", test_split="test.json", **SMALL)
    with pytest.raises(AnnotationError, match=r"test.json: entry \[0\] \(id '4'\): no 'template'"):
        dm.records("test")


def test_spatial_crops_share_one_decode(kinetics_root, monkeypatch):
    """3 crops x 2 temporal clips of each video: one decode per temporal clip, in workers too;
    evaluation batches hold whole videos (batch_size 4 < 6 views: one video per batch)."""
    import lightning_tsf.data.clips as clips_module

    calls = []
    real = clips_module.decode_clip

    def counting(source, spec, temporal=0, **kw):
        calls.append((source.path, temporal))
        return real(source, spec, temporal, **kw)

    monkeypatch.setattr(clips_module, "decode_clip", counting)
    dm = data_module(str(kinetics_root), num_frames=2, sampling_rate=2, num_spatial_crops=3,
                     num_temporal_views=2, **SMALL)  # fmt: skip
    assert dm.eval_videos_per_batch() == 1
    batches = list(dm.test_dataloader())
    assert len(calls) == len(set(calls)) == 2 * 2  # 2 test videos x 2 temporal clips
    for batch in batches:  # every batch is one whole video: 2 clips x 3 crops, in order
        assert len(set(batch["video_index"].tolist())) == 1
        assert batch["view_index"].tolist() == list(range(6))

    worker_dm = data_module(str(kinetics_root), num_frames=2, sampling_rate=2,
                            num_spatial_crops=3, **{**SMALL, "num_workers": 2})  # fmt: skip
    for batch in worker_dm.val_dataloader():  # with 2 workers: whole videos per batch still
        assert batch["view_index"].tolist() == [0, 1, 2]


def test_official_test_short_side_and_ssv2_jitter(kinetics_root, ssv2_root):
    """Kinetics: 1 crop -> short side train_scale[0] (256 in the paper), 3 crops -> the crop
    size; SSv2: the crop size for both, and inverse-uniform training jitter."""
    base = dict(crop_size=224, train_scale=(256, 320), num_workers=0)
    one = data_module(str(kinetics_root), num_spatial_crops=1, **base)
    three = data_module(str(kinetics_root), num_spatial_crops=3, **base)
    assert one.view_spec.test_short_side == 256 and three.view_spec.test_short_side == 224
    assert not one.inverse_uniform_scale
    for crops in (1, 3):
        ssv2 = data_module(str(ssv2_root), format="ssv2", num_spatial_crops=crops, **base)
        assert ssv2.view_spec.test_short_side == 224 and ssv2.inverse_uniform_scale
    assert "short side 256" in one.protocol()["test"] and "1/U[1/320, 1/256]" in ssv2.protocol()[
        "train"
    ]


def test_one_crop_view_is_the_official_resize_and_centre_crop(kinetics_root):
    """A 48x64 video, crop 32, train_scale (40, 48), 1 crop: resize the short side to 40
    (40x53, floor), then the centre crop at ceil offsets (4, 11), on the official clip."""
    dm = data_module(str(kinetics_root), num_frames=4, sampling_rate=2, crop_size=32,
                         train_scale=(40, 48), num_spatial_crops=1, batch_size=2,
                         num_workers=0)  # fmt: skip
    batch = next(iter(dm.test_dataloader()))
    length = 20  # videos/test/v0.mp4
    index = torch.clamp(torch.linspace(0, 2 * 4 / 30 * 30 - 1, 4), 0, length - 1).long()
    frames = torch.from_numpy(video_frames(length, 48, 64)[index.numpy()]).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(frames.float(), size=(40, 53), mode="bilinear",
                                              align_corners=False)  # fmt: skip
    expected = resized[:, :, 4:36, 11:43].permute(1, 0, 2, 3)  # (C, T, H, W)
    got = batch["video"][0].float()
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= DECODE_TOLERANCE + 1
