"""Checkpoint loading: official .pyth, Lightning, timm ImageNet init, weights_only, reports."""

from __future__ import annotations

import pytest
import torch

from lightning_tsf.models import CheckpointError, TimeSformer, load_checkpoint

CFG = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=4)


def model(attention_type="divided_space_time", **kw) -> TimeSformer:
    return TimeSformer(**{**CFG, "num_classes": 5, "attention_type": attention_type, **kw}).eval()


def perturbed(attention_type="divided_space_time") -> TimeSformer:
    torch.manual_seed(3)
    m = model(attention_type)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def test_official_pyth_loads_strict_with_model_prefix(tmp_path):
    src = perturbed()
    path = tmp_path / "TimeSformer_divST_8x32_224_K400.pyth"
    state = {f"model.{k}": v for k, v in src.state_dict().items()}  # official wrapper prefix
    torch.save(
        {"epoch": 15, "model_state": state, "optimizer_state": {}, "cfg": "TRAIN: ..."}, path
    )
    dst = model()
    report = load_checkpoint(dst, path)
    assert report.kind == "official" and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_lightning_checkpoint_loads(tmp_path):
    src = perturbed("joint_space_time")
    path = tmp_path / "last.ckpt"
    state = {f"net.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.0", "epoch": 3}, path)
    dst = model("joint_space_time")
    assert load_checkpoint(dst, path).kind == "lightning"
    torch.testing.assert_close(dst.pos_embed, src.pos_embed, rtol=0, atol=0)


def test_wrong_scheme_names_the_missing_keys():
    src = perturbed("joint_space_time")
    with pytest.raises(CheckpointError, match="blocks.0.temporal_attn.qkv.weight"):
        load_checkpoint(model("divided_space_time"), {"model_state": src.state_dict()})


def test_unexpected_keys_and_shapes_are_reported():
    state = perturbed().state_dict()
    state["blocks.7.attn.qkv.weight"] = torch.zeros(96, 32)
    with pytest.raises(CheckpointError, match="unknown to the model: blocks.7.attn.qkv.weight$"):
        load_checkpoint(model(), {"model_state": state})
    report = load_checkpoint(model(), {"model_state": state}, strict=False)
    assert report.unexpected == ["blocks.7.attn.qkv.weight"]
    state = perturbed().state_dict()
    state["cls_token"] = torch.zeros(1, 1, 16)
    with pytest.raises(
        CheckpointError, match="shapes differ: cls_token 1x1x16 vs model 1x1x32"
    ):
        load_checkpoint(model(), {"model_state": state})


def test_a_checkpoint_of_another_model_is_one_readable_line():
    """Another preset's file: one line, the first four mismatched keys with both shapes, then
    how many more; a file of another scheme: its keys name the scheme."""
    big = TimeSformer(img_size=32, patch_size=8, num_frames=4, embed_dim=48, depth=2,
                      num_heads=2, num_classes=5)  # fmt: skip
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model(), {"model_state": big.state_dict()})
    message = str(err.value)
    assert "\n" not in message
    shown = message.split("shapes differ: ")[1].split(" (+")[0].split(", ")
    ours = model().state_dict()
    mismatched = [k for k, v in big.state_dict().items()
                  if v.shape != ours[k].shape and not k.startswith("head.")]  # head: replaced
    assert len(shown) == 4 and "cls_token 1x1x48 vs model 1x1x32" in shown
    assert f"(+{len(mismatched) - 4} more)" in message
    with pytest.raises(CheckpointError, match="its keys say attention_type='joint_space_time'"):
        load_checkpoint(model("divided_space_time"),
                        {"model_state": perturbed("joint_space_time").state_dict()})


def test_head_of_another_class_count_is_replaced_or_refused():
    """Fine-tuning into another class count: every weight but the head loads, the head stays
    freshly initialised and the report says so; ``replace_head=False`` refuses."""
    source = perturbed()
    target = model(num_classes=9)
    head_before = target.head.weight.clone()
    report = load_checkpoint(target, {"model_state": source.state_dict()})
    assert report.head == "replaced: checkpoint 5 classes -> model 9, newly initialised"
    assert "head: replaced" in str(report)
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    with pytest.raises(CheckpointError, match="its head has 5 classes, the model 9"):
        load_checkpoint(model(num_classes=9), {"model_state": source.state_dict()},
                        replace_head=False)  # fmt: skip


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_never_executes_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pyth"
    torch.save({"model_state": model().state_dict(), "cfg": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(model(), path)
    assert not (tmp_path / "PWNED").exists()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pyth"):
        load_checkpoint(model(), tmp_path / "nope.pyth")


def timm_vit_state(img_size=48, num_classes=1000) -> dict[str, torch.Tensor]:
    """An ImageNet ViT in timm's layout: our space-only model's names, plus timm-only layers."""
    torch.manual_seed(5)
    vit = model("space_only", img_size=img_size, num_classes=num_classes)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    state = dict(vit.state_dict())
    state["pre_logits.fc.weight"] = torch.zeros(32, 32)
    return state


def test_timm_init_follows_the_paper():
    state = timm_vit_state()
    video = model("divided_space_time")
    report = load_checkpoint(video, state)
    assert report.kind == "timm"
    assert "head.weight" in report.dropped and "pre_logits.fc.weight" in report.dropped
    sd = video.state_dict()
    # blocks and patch embedding copied; temporal attention and norm copied from spatial ones
    torch.testing.assert_close(sd["blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(
        sd["blocks.1.temporal_attn.qkv.weight"], state["blocks.1.attn.qkv.weight"]
    )
    torch.testing.assert_close(sd["blocks.0.temporal_norm1.weight"], state["blocks.0.norm1.weight"])
    torch.testing.assert_close(sd["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    assert sd["time_embed"].abs().sum() == 0 and sd["blocks.0.temporal_fc.weight"].abs().sum() == 0
    # pos_embed: 6x6 grid resized to 4x4, cls position kept
    assert sd["pos_embed"].shape == (1, 17, 32)
    torch.testing.assert_close(sd["pos_embed"][:, 0], state["pos_embed"][:, 0])


def test_timm_init_on_static_video_equals_the_image_model():
    """With temporal_fc and time_embed at zero, divided attention on a clip of identical frames
    reduces to the image ViT: every frame's cls copy sees the same tokens."""
    state = timm_vit_state(img_size=32, num_classes=5)
    video, image = model("divided_space_time"), model("space_only")
    load_checkpoint(video, state, strict=True)
    load_checkpoint(image, {k: v for k, v in state.items() if not k.startswith("pre_")})
    frame = torch.randn(1, 3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            video(frame.expand(-1, -1, 4, -1, -1)), image(frame), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("attention_type", ["sparse_local_global", "axial"])
def test_timm_init_fills_every_extra_step(attention_type):
    video = model(attention_type)
    report = load_checkpoint(video, timm_vit_state(img_size=32))
    name = "local" if attention_type == "sparse_local_global" else "width"
    assert any(f"blocks.0.{name}_attn.qkv.weight" in s for s in report.initialised)


@pytest.mark.parametrize("kind", ["official", "lightning"])
def test_a_checkpoint_of_another_clip_size_loads_as_its_model_runs_it(kind):
    """Fine-tuning a checkpoint at another clip size (the shipped fine-tune file at smaller
    sizes, or 16 frames): the model built at the new size computes what the checkpoint's own
    model computes on such clips (its forward resizes ``pos_embed`` and ``time_embed`` by
    nearest neighbour, as the official code does); the report says what was resized."""
    big = perturbed()  # 4 frames, 32 px: a 4x4 patch grid
    with torch.no_grad():
        big.time_embed.normal_(0, 1.0)
        big.pos_embed.normal_(0, 1.0)
    small = model(img_size=16, num_frames=2)  # 2 frames, 16 px: a 2x2 grid
    state = big.state_dict()
    ckpt = {"model_state": state} if kind == "official" else {
        "state_dict": {f"net.{k}": v for k, v in state.items()}}  # fmt: skip
    with pytest.raises(CheckpointError, match="pos_embed 1x17x32 vs model 1x5x32"):
        load_checkpoint(small, ckpt, kind=kind)  # by default: refused (export, zoo checks)
    report = load_checkpoint(small, ckpt, kind=kind, resize_embeddings=True)
    assert "pos_embed (resized 4x4 -> 2x2, nearest)" in report.initialised
    assert "time_embed (resized 4 -> 2 frames, nearest)" in report.initialised
    x = torch.randn(2, 3, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(x), big.eval()(x), rtol=0, atol=1e-5)
    # the patch grid's nearest neighbours by hand: 4x4 -> 2x2 keeps rows/columns 0 and 2
    grid = big.pos_embed[0, 1:].view(4, 4, -1)
    torch.testing.assert_close(small.pos_embed[0, 1:].view(2, 2, -1), grid[::2, ::2])
    torch.testing.assert_close(small.time_embed[0], big.time_embed[0, ::2])
