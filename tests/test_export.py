"""``tsf export`` / :mod:`lightning_tsf.export`: ONNX and ``torch.export`` files of tiny models,
run with onnxruntime on the CPU and compared with torch eager (and once with HF transformers)
at two batch sizes, which also proves the batch axis dynamic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import tiny_hf_model

from lightning_tsf.cli import main as tsf
from lightning_tsf.data.transforms import normalize_video
from lightning_tsf.export import ExportError, export_model, read_metadata
from lightning_tsf.models import BLOCKS, PRESETS, TimeSformer
from lightning_tsf.train.compile import compile_timesformer, compiled_path

NET = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=2,
           num_classes=3, drop_path_rate=0.0)  # fmt: skip
CLASSES = ["walk", "run", "jump"]
TOL = 1e-4


def tiny(attention_type: str = "divided_space_time", **kw) -> TimeSformer:
    """A tiny model whose zero-initialised parts (``time_embed``, ``*_fc``) are randomised:
    at zero they would hide a temporal path that the export got wrong."""
    torch.manual_seed(0)
    model = TimeSformer(**{**NET, "attention_type": attention_type, **kw}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "time_embed" or "_fc." in name:
                p.normal_(0, 0.3)
    return model


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_diff_to_eager(sess: ort.InferenceSession, model: torch.nn.Module, batch: int) -> float:
    x = torch.randn(batch, 3, model.num_frames, model.img_size, model.img_size)
    (got,) = sess.run(["logits"], {"video": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape == (batch, model.num_classes)
    return float(np.abs(got - ref).max())


def lightning_ckpt(path: Path, model: TimeSformer, net: dict) -> Path:
    """A checkpoint as our Lightning module saves it: ``net.`` keys, net config, class names."""
    hp = {"class_names": CLASSES,
          "net": {"class_path": "lightning_tsf.models.TimeSformer", "init_args": net}}  # fmt: skip
    data_hp = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "sampling_rate": 4}
    state = {f"net.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hp,
                "datamodule_hyper_parameters": data_hp}, path)  # fmt: skip
    return path


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_onnx_matches_eager_at_two_batch_sizes(scheme: str, tmp_path: Path) -> None:
    """All five schemes export; onnxruntime's logits equal eager's at batch 1 and 3 (the
    export traced batch 2)."""
    model = tiny(scheme)
    path = export_model(model, tmp_path / f"{scheme}.onnx")
    sess = session(path)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "video" and out.name == "logits"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 4, 32, 32]
    for batch in (1, 3):
        assert max_diff_to_eager(sess, model, batch) <= TOL, (scheme, batch)


@pytest.mark.slow
def test_cli_lightning_checkpoint_metadata_runs_without_the_package(tmp_path: Path, capsys):
    """The command on a Lightning checkpoint: exit 0, the check printed; the file's metadata
    alone (read by onnxruntime) is enough to prepare uint8 frames and name the classes."""
    model = tiny()
    ckpt = lightning_ckpt(
        tmp_path / "m.ckpt", model, {**NET, "attention_type": "divided_space_time"}
    )
    out = tmp_path / "sub" / "m.onnx"
    assert tsf(["export", str(ckpt), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out} (onnx" in stdout and "3 classes (names stored)" in stdout
    assert "at batch 1 and 2: max |difference|" in stdout and "(ok)" in stdout

    sess = session(out)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == CLASSES
    assert (int(meta["num_frames"]), int(meta["img_size"])) == (4, 32)
    assert meta["attention_type"] == "divided_space_time" and meta["sampling_rate"] == "4"
    mean = np.array(json.loads(meta["mean"]), np.float32)[:, None, None, None]
    std = np.array(json.loads(meta["std"]), np.float32)[:, None, None, None]
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 32, 32), dtype=np.uint8)
    (logits,) = sess.run(None, {"video": ((frames / 255.0 - mean) / std).astype(np.float32)})
    video = normalize_video(torch.from_numpy(frames), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    with torch.no_grad():
        ref = model(video).numpy()
    assert np.abs(logits - ref).max() <= TOL
    assert read_metadata(out)["class_names"] == CLASSES


@pytest.mark.slow
def test_cli_hf_checkpoint_matches_transformers(tmp_path: Path, capsys) -> None:
    """An HF state dict with ``--preset``: the ONNX file's logits equal HF transformers' own
    model (an independent implementation) on the same clips."""
    p = PRESETS["timesformer_tiny"]
    hf = tiny_hf_model(num_labels=5)
    ckpt = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), ckpt)
    out = tmp_path / "hf.onnx"
    assert tsf(["export", str(ckpt), "--out", str(out), "--no-check",
                "--preset", "timesformer_tiny"]) == 0  # fmt: skip
    assert "5 classes (no names)" in capsys.readouterr().out
    sess = session(out)
    for batch in (1, 2):
        x = torch.randn(batch, 3, p["num_frames"], p["img_size"], p["img_size"])
        with torch.no_grad():
            ref = hf(pixel_values=x.transpose(1, 2)).logits.numpy()  # HF: (B, T, C, H, W)
        assert np.abs(sess.run(None, {"video": x.numpy()})[0] - ref).max() <= TOL


@pytest.mark.slow
def test_cli_official_pyth_with_shape_options(tmp_path: Path, capsys) -> None:
    """An official ``.pyth`` (``model.``-prefixed ``model_state``) carries no shape: --preset
    with --num-frames and --img-size build it; the file takes (B, 3, 2, 48, 48)."""
    model = tiny(**{**PRESETS["timesformer_tiny"], "num_frames": 2, "img_size": 48})
    ckpt = tmp_path / "TimeSformer_divST_2x32_48.pyth"
    torch.save({"model_state": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "official.onnx"
    args = ["export", str(ckpt), "--out", str(out), "--preset", "timesformer_tiny"]
    assert tsf(args) == 2  # the preset's 4 frames x 32 pixels do not fit the weights
    err = capsys.readouterr().err
    assert err.startswith("tsf export: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "time_embed 1x2x64 vs model 1x4x64" in err and "--num-frames" in err
    assert tsf(args + ["--num-frames", "2", "--img-size", "48"]) == 0
    assert "(ok)" in capsys.readouterr().out
    sess = session(out)
    assert sess.get_inputs()[0].shape[1:] == [3, 2, 48, 48]
    assert max_diff_to_eager(sess, model, 2) <= TOL


@pytest.mark.slow
def test_torch_export_pt2(tmp_path: Path, capsys) -> None:
    """``--format torch-export``: a ``.pt2`` that ``torch.export.load`` runs at any batch size,
    equal to eager, with the metadata in its extra file."""
    model = tiny("joint_space_time")
    ckpt = lightning_ckpt(tmp_path / "m.ckpt", model, {**NET, "attention_type": "joint_space_time"})
    out = tmp_path / "m.pt2"
    assert tsf(["export", str(ckpt), "--format", "torch-export", "--out", str(out)]) == 0
    assert f"wrote {out} (torch-export" in capsys.readouterr().out
    loaded = torch.export.load(out).module()
    for batch in (1, 3):
        x = torch.randn(batch, 3, 4, 32, 32)
        with torch.no_grad():
            assert (loaded(x) - model(x)).abs().max() <= TOL
    meta = read_metadata(out)
    assert meta["class_names"] == CLASSES and meta["mean"] == [0.5, 0.4, 0.3]

    # from Python: a compiled float64 model in training mode is exported as eager float32
    # eval, then restored
    model.double().train()
    compile_timesformer(model, backend="eager")
    program = torch.export.load(export_model(model, tmp_path / "lib.pt2", "torch-export"))
    assert model.training and model.head.weight.dtype == torch.float64
    assert compiled_path(model) == "whole"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert (program.module()(x) - model.float().eval()(x)).abs().max() <= TOL


@pytest.mark.slow
def test_unexportable_model_names_its_scheme(tmp_path: Path, capsys) -> None:
    """A real exporter failure (sparse_local_global on an odd 3x3 patch grid) is one line
    naming the scheme, from the library and from the command."""
    model = tiny("sparse_local_global", img_size=24)
    for fmt in ("onnx", "torch-export"):
        with pytest.raises(
            ExportError, match=f"'sparse_local_global' to {fmt}: ValueError: .* even"
        ):
            export_model(model, tmp_path / "x.onnx", fmt)
    net = {**NET, "attention_type": "sparse_local_global", "img_size": 24}
    ckpt = lightning_ckpt(tmp_path / "m.ckpt", model, net)
    assert tsf(["export", str(ckpt), "--format", "torch-export", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "'sparse_local_global'" in err and "even patch grid" in err


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    model = tiny()
    ckpt = lightning_ckpt(tmp_path / "m.ckpt", model, {**NET})
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    out = str(tmp_path / "m.onnx")
    cases = [
        (["export", str(tmp_path / "nope.ckpt"), "--out", out], "checkpoint not found"),
        (["export", str(ckpt), "--out", out, "--format", "tflite"], "unknown format 'tflite'"),
        (["export", str(ckpt), "--out", out, "--preset", "huge"], "unknown preset 'huge'"),
        (["export", str(plain), "--out", out], "pass --preset NAME"),
    ]
    for argv, message in cases:
        assert tsf(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("tsf export: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not Path(out).exists()
