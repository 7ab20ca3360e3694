"""``tsf check-videos``, ``tsf prepare`` and the synthetic dataset generator."""

import json

import numpy as np
import pytest
from conftest import BROKEN_KINDS, data_module, frame_ids, write_broken

from lightning_tsf.cli import main as tsf
from lightning_tsf.data import make_reader
from lightning_tsf.data.synthetic import class_steps, make_synthetic_dataset, render_video


def test_check_videos_lists_unreadable(kinetics_root, capsys, tmp_path):
    assert tsf(["check-videos", str(kinetics_root), "--workers", "0"]) == 0
    for kind in BROKEN_KINDS:
        write_broken(kinetics_root / f"bad_{kind}.mp4", kind)
    with open(kinetics_root / "val.csv", "a") as f:
        f.writelines(f"bad_{kind}.mp4 1\n" for kind in BROKEN_KINDS)
    report = tmp_path / "bad.txt"
    code = tsf(["check-videos", str(kinetics_root), "--workers", "2", "--output", str(report)])
    out, err = capsys.readouterr()
    assert code == 1
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in out.splitlines()) == sorted(
        f"bad_{kind}.mp4" for kind in BROKEN_KINDS
    )
    assert "9/14 videos readable, 5 unreadable" in err
    assert len(report.read_text().splitlines()) == 5
    dm = data_module(str(kinetics_root), num_workers=0)
    assert len(dm.check_videos(("val",))) == 5


def test_check_videos_missing_annotation(tmp_path, capsys):
    assert tsf(["check-videos", str(tmp_path)]) == 2
    assert "train.csv" in capsys.readouterr().err


def test_prepare_rescales_resumes_and_reports(tmp_path, make_video, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_video("src/videos/a.mp4", num_frames=12, height=96, width=128)
    make_video("src/videos/b.webm", num_frames=10, height=128, width=96)
    write_broken(src / "videos" / "bad.mp4", "text")
    (src / "train.csv").write_text("videos/a.mp4 0\nvideos/b.webm 1\n")
    (src / "val.csv").write_text("videos/a.mp4 0\n")
    args = ["prepare", str(src), str(dst), "--short-side", "48", "--workers", "2", "--no-progress"]
    assert tsf(args) == 1  # one unreadable file, reported
    out, err = capsys.readouterr()
    assert "videos/bad.mp4" in out and "converted 2, already done 0, unreadable 1" in err
    assert not (dst / "videos" / "bad.mp4").exists()
    a = make_reader(str(dst / "videos" / "a.mp4"))
    assert len(a) == 12 and a.get_frames([0]).shape == (1, 48, 64, 3)
    b = make_reader(str(dst / "videos" / "b.webm")).get_frames([0, 9])
    assert b.shape == (2, 64, 48, 3) and frame_ids(b) == [0, 9]  # lossy, but the index survives
    mtime = (dst / "videos" / "a.mp4").stat().st_mtime_ns
    assert tsf(args) == 1  # resumed: nothing redone
    assert "converted 0, already done 2" in capsys.readouterr().err
    assert (dst / "videos" / "a.mp4").stat().st_mtime_ns == mtime
    dm = data_module(str(dst), num_workers=0)  # same annotation files, new root
    assert [r.path for r in dm.records("train")][1] == str(dst / "videos" / "b.webm")
    assert tsf(["prepare", str(src), str(src / "out")]) == 2  # never inside the source


def test_synthetic_classes_share_frame_sets_and_reverse_in_time():
    steps = class_steps(4, 16)
    assert steps == [1, -1, 3, -3]
    rng_args = [0, 0, 7]
    videos = [
        render_video(c, np.random.default_rng(rng_args), 32, 16, 4, "orbit") for c in range(4)
    ]
    # Same random draws, different class: the same set of frames, in another order.
    as_set = [sorted(v.reshape(16, -1).tolist()) for v in videos]
    assert all(s == as_set[0] for s in as_set)
    assert not np.array_equal(videos[0], videos[2])
    # Class 1 is class 0 played backwards (up to the phase, which is uniformly distributed).
    forward = [v.tobytes() for v in videos[0]]
    backward = [v.tobytes() for v in videos[1][::-1]]
    shift = forward.index(backward[0])
    assert backward == forward[shift:] + forward[:shift]
    with pytest.raises(ValueError):
        class_steps(3, 16)


def test_make_synthetic_dataset(tmp_path, capsys):
    root = tmp_path / "syn"
    args = ["make-synthetic", str(root), "--num-train", "8", "--num-val", "4", "--num-test", "4"]
    assert tsf(args + ["--workers", "2"]) == 0
    lines = (root / "train.csv").read_text().splitlines()
    assert len(lines) == 8 and sorted(int(x.split()[1]) for x in lines) == [0, 0, 1, 1, 2, 2, 3, 3]
    rel, label = lines[0].split()
    frames = make_reader(str(root / rel)).get_frames(range(16))
    expected = render_video(int(label), np.random.default_rng([0, 0, 0]), 64, 16, 4)  # translate
    assert np.abs(frames.astype(int) - expected).max() <= 2
    mtime = (root / rel).stat().st_mtime_ns
    make_synthetic_dataset(root, num_train=8, num_val=4, num_test=4)  # idempotent
    assert (root / rel).stat().st_mtime_ns == mtime
    dm = data_module(str(root), num_workers=0)
    assert dm.class_names == ["move_right", "move_left", "move_down", "move_up"]


def test_translate_pairs_are_time_reversals_with_the_same_frame_sets():
    """Same random draws: move_left is move_right backwards (so its frame set is the same, and
    an order-blind model cannot tell them apart); right and down differ in the axis only."""
    draw = [0, 1, 3]
    right, left, down, up = (
        render_video(c, np.random.default_rng(draw), 32, 16, 4) for c in range(4)
    )
    np.testing.assert_array_equal(left, right[::-1])
    np.testing.assert_array_equal(up, down[::-1])

    # the disc's centre of mass moves right (x grows) in move_right, down (y grows) in move_down
    def centre(frames, axis):
        w = frames.astype(float).sum(-1)
        w = w - w.min()
        return (
            w * np.arange(frames.shape[1 + axis]).reshape((-1, 1) if axis == 0 else (1, -1))
        ).sum((1, 2)) / w.sum((1, 2))

    assert np.all(np.diff(centre(right, 1)) > 0) and np.all(np.diff(centre(down, 0)) > 0)
    with pytest.raises(ValueError, match="2 or 4"):
        make_synthetic_dataset("unused", num_classes=6)


def test_check_videos_reports_annotation_errors(ssv2_root, capsys):
    """A malformed entry: exit 2 and one line naming file and entry, not a traceback;
    unlabelled entries only with --unlabelled."""
    args = ["check-videos", str(ssv2_root), "--format", "ssv2", "--workers", "0"]
    path = ssv2_root / "validation.json"
    path.write_text(json.dumps([{"id": "4", "template": "Putting [something] on [a surface]"},
                                {"template": "Putting [something] on [a surface]"}]))  # fmt: skip
    assert tsf(args) == 2
    assert capsys.readouterr().err == f"tsf check-videos: {path}: entry [1]: no 'id'; expected " \
        "the video's id (a string or integer)\n"  # fmt: skip
    path.write_text(json.dumps([{"id": "4"}, {"id": "5"}]))
    assert tsf(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tsf check-videos: {path}: entry [0] (id '4'): no 'template'")
    assert tsf([*args, "--unlabelled"]) == 0
    assert "5/5 videos readable" in capsys.readouterr().err
