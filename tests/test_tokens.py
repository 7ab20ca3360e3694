"""Token switches (:mod:`lightning_tsf.models.tokens`): off is bit-identical to the model before
them, settings that drop nothing are equal within 1e-6, and hand-computed cases of which
tokens are dropped or merged; padding is never attended to; refusals are one line; the input
record names the switches a model was trained with; commands take them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_tsf.models import BLOCKS, TimeSformer
from lightning_tsf.models.flops import count_flops
from lightning_tsf.models.layers import Attention
from lightning_tsf.models.tokens import (
    SUPPORT,
    TokenConfig,
    bipartite_soft_matching,
    merge_wavg,
    static_keep,
)

TINY = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=4,
            num_classes=5)  # fmt: skip
GRID_SCHEMES = [s for s in BLOCKS if SUPPORT[s]["merge_r"]]  # space-only, joint, divided
REFUSED = [s for s in BLOCKS if s not in GRID_SCHEMES]


def tiny(scheme: str, **kw) -> TimeSformer:
    """The seeded model the reference logits were computed with (zero inits randomised)."""
    torch.manual_seed(0)
    model = TimeSformer(**TINY, attention_type=scheme, drop_path_rate=0.0, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "time_embed" or "_fc." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def video(seed: int = 2) -> torch.Tensor:
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def half_static(seed: int = 3) -> torch.Tensor:
    """Two clips: the first has its top half still after frame 0; the second its left column."""
    x = video(seed)
    x[0, :, 1:, :16] = x[0, :, :1, :16]
    x[1, :, 1:, :, :8] = x[1, :, :1, :, :8]
    return x


@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_switches_off_are_bit_identical_to_the_model_before_them(scheme: str) -> None:
    """tests/data/tokens_off_reference.pt: logits of these seeded models computed by the code
    before the token switches existed (commit 3486607)."""
    reference = torch.load(Path(__file__).parent / "data" / "tokens_off_reference.pt")
    with torch.no_grad():
        assert torch.equal(tiny(scheme)(video()), reference[scheme])
        if scheme in GRID_SCHEMES:  # tube dropping acts in training only
            tubes = tiny(scheme, tokens={"tube_drop": 0.5})
            assert torch.equal(tubes(video()), reference[scheme])


@pytest.mark.parametrize("scheme", GRID_SCHEMES)
def test_settings_that_drop_nothing_are_equal(scheme: str) -> None:
    model, x = tiny(scheme), video()
    with torch.no_grad():
        off = model(x)
        for switches in ({"static_drop": 1e-9}, {"merge_r": 0}):
            model.set_tokens(switches)
            assert (model(x) - off).abs().max() < 1e-6, switches


def test_static_keep_hand_computed() -> None:
    """One channel, 3 frames of 4x4 pixels, patch 2: positions 0 1 / 2 3. Frame 1 changes one
    pixel of patch 1 by 0.5 (patch mean 0.125) and all of patch 3 by 0.05; frame 2 equals 1."""
    x = torch.zeros(1, 1, 3, 4, 4)
    x[0, 0, 1:, 0, 3] = 0.5
    x[0, 0, 1:, 2:, 2:] = 0.05
    keep = static_keep(x, 2, 0.1)[0]  # (N, T)
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.equal(keep, expected)
    keep = static_keep(x, 2, 0.04)[0]  # patch 3's change (0.05) now counts
    expected[3, 1] = True
    assert torch.equal(keep, expected)
    assert static_keep(x, 2, 1e-9)[0].sum() == 4 + 2  # frame 0, and the two changed patches


def test_bipartite_matching_and_weighted_merge_hand_computed() -> None:
    """Tokens 0..5 (0 = cls, protected): A = {0, 2, 4}, B = {1, 3, 5}. Metrics: token 2 is
    token 5's direction, token 4 is close to token 1, cls equals token 3 (must not merge)."""
    e = torch.eye(3)
    metric = torch.stack([e[0], e[1], e[2], e[0], e[1] + 0.1 * e[0], e[2]])[None]
    unmerged, src, dst = bipartite_soft_matching(metric, 1, protect_first=True)
    # A's best edges: 2->5 (cos 1), 4->1 (cos 0.995), cls -inf; r = 1 merges token 2 into 5
    assert src.tolist() == [[1]] and dst.tolist() == [[2]] and unmerged.tolist() == [[0, 2]]
    x = torch.arange(6.0)[None, :, None].repeat(1, 1, 2)  # token i has value i
    size = torch.tensor([[1.0, 1.0, 3.0, 1.0, 1.0, 1.0]])
    merged, new_size = merge_wavg(x, size, unmerged, src, dst)
    # order: unmerged A (0, 4), then B (1, 3, 5 <- 2): 5 becomes (3*2 + 1*5) / 4 = 2.75
    assert merged[0, :, 0].tolist() == [0.0, 4.0, 1.0, 3.0, 2.75]
    assert new_size.tolist() == [[1.0, 1.0, 1.0, 1.0, 4.0]]
    _, src, dst = bipartite_soft_matching(metric, 2, protect_first=True)
    assert src.tolist() == [[1, 2]] and dst.tolist() == [[2, 0]]  # then 4 into 1


def test_proportional_attention_equals_the_duplicated_tokens() -> None:
    """ToMe's size weighting: a token of size 2 is attended to as two copies of it."""
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    c, a, b = torch.randn(3, 1, 1, 16)
    duplicated = torch.cat((c, a, a, b), 1)
    merged = torch.cat((c, a, b), 1)
    bias = torch.tensor([1.0, 2.0, 1.0]).log()[None, None, None]
    with torch.no_grad():
        want = attn(duplicated)[0][:, [0, 1, 3]]
        for explicit in (False, True):
            got = attn(merged, explicit, bias)[0]
            assert (got - want).abs().max() < 1e-6


@pytest.mark.parametrize("scheme", GRID_SCHEMES)
def test_padding_is_never_attended_to(scheme: str) -> None:
    """Clips that keep different token counts share a padded batch: each clip's logits equal
    its logits alone (no padding), with static dropping and merging."""
    x = half_static()
    for switches in ({"static_drop": 0.5}, {"static_drop": 0.5, "merge_r": 2}):
        model = tiny(scheme, tokens=switches)
        with torch.no_grad():
            together = model(x)
            alone = torch.cat([model(x[i : i + 1]) for i in range(2)])
        assert (together - alone).abs().max() < 1e-5, switches


@pytest.mark.parametrize("scheme", GRID_SCHEMES)
def test_which_tokens_static_drop_keeps(scheme: str) -> None:
    """Clip 0 is still in its top half (8 of 16 positions) after frame 0: joint keeps frame 0
    whole and the 8 moving positions in frames 1-3; the grid schemes keep the 8 moving tubes."""
    x = half_static()[:1]
    model = tiny(scheme, tokens={"static_drop": 0.5})
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    with torch.no_grad():
        model(x)
    want = {"joint_space_time": 1 + 16 + 3 * 8, "divided_space_time": 1 + 8 * 4,
            "space_only": 1 + 8}[scheme]  # fmt: skip
    assert seen == [want]


def test_divided_merges_whole_tubes() -> None:
    """r = 3 tube pairs per block: 16 -> 13 -> 10 positions, every frame alike."""
    model = tiny("divided_space_time", tokens={"merge_r": 3})
    seen = []
    for blk in model.blocks:
        blk.register_forward_hook(lambda m, a, out: seen.append(out[0].shape[1]))
    with torch.no_grad():
        model(video())
    assert seen == [1 + 13 * 4, 1 + 10 * 4]


def test_attention_maps_are_drawn_from_every_token() -> None:
    model, x = tiny("joint_space_time", tokens={"static_drop": 0.5, "merge_r": 2}), half_static()
    with torch.no_grad():
        logits, maps = model.forward_with_attention(x)
        model.set_tokens(None)
        assert (logits - model(x)).abs().max() < 1e-5 and maps[0]["attn"].shape[-1] == 65


@pytest.mark.parametrize("scheme", GRID_SCHEMES)
def test_tube_dropping_in_training_only(scheme: str) -> None:
    model = tiny(scheme, tokens={"tube_drop": 0.5})
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    x = video()
    torch.manual_seed(5)
    first = model.train()(x)
    torch.manual_seed(5)
    assert torch.equal(model(x), first)  # the draw follows torch's seed: resume replays it
    full = 1 + (16 if scheme == "space_only" else 64)
    assert seen[0] == 1 + (8 if scheme == "space_only" else 32)
    model.eval()(x)
    assert seen[-1] == full


def test_tube_dropping_keeps_the_same_positions_in_every_frame() -> None:
    """Patch tokens carry their position: with a model whose patches are their position index
    (pos_embed only), the kept tokens of every frame name the same positions."""
    model = tiny("divided_space_time", tokens={"tube_drop": 0.5}).train()
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.time_embed.zero_()
        model.pos_embed.copy_(torch.arange(17.0)[None, :, None].expand(1, 17, 32))
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0][:, 1:, 0]))
    model(video())
    positions = seen[0].view(2, 8, 4)  # (B, K, T)
    assert torch.equal(positions, positions[..., :1].expand(-1, -1, 4))
    assert all(len(set(p[:, 0].tolist())) == 8 for p in positions)


@pytest.mark.parametrize("scheme", REFUSED)
def test_refused_in_one_line(scheme: str) -> None:
    for switch, value in (("static_drop", 0.1), ("merge_r", 1), ("tube_drop", 0.5)):
        with pytest.raises(ValueError, match=f"tokens.{switch} does not apply to {scheme}") as e:
            TimeSformer(**TINY, attention_type=scheme, tokens={switch: value})
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown switch"):
        TokenConfig.coerce({"merge": 2})


def test_flops_count_the_tokens_kept() -> None:
    """Tube dropping 8 of 16 positions costs what the model costs on a 2x4-patch clip, plus
    the patch embedding of the 8 dropped patches in each of the 4 frames (2*3*8*8*32 each)."""
    with torch.device("meta"):
        dropped = TimeSformer(**TINY, tokens={"tube_drop": 0.5}).train()
        small = TimeSformer(**{**TINY, "img_size": 16}).train()
    small_flops = count_flops_on(small, 16, 32)
    assert count_flops(dropped) == small_flops + 8 * 4 * 2 * 3 * 8 * 8 * 32
    with torch.device("meta"):
        merged = TimeSformer(**TINY, attention_type="joint_space_time", tokens={"merge_r": 4})
        full = TimeSformer(**TINY, attention_type="joint_space_time")
    assert count_flops(merged.eval()) < count_flops(full.eval())


def count_flops_on(model: TimeSformer, h: int, w: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 4, h, w, device="meta"))
    return counter.get_total_flops()


def test_input_record_names_the_switches() -> None:
    from lightning_tsf.data.inputs import InputConfig

    record = InputConfig(tokens={"tube_drop": 0.5, "merge_r": 0})
    assert record.to_dict()["tokens"] == {"tube_drop": 0.5}
    assert InputConfig.from_dict(record.to_dict()) == record
    assert InputConfig.from_dict({k: v for k, v in record.to_dict().items()
                                  if k != "tokens"}).tokens == ()  # fmt: skip


def test_trained_switches_recorded_and_taken_by_every_command(
    tiny_overrides, tiny_synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The demo config with tube dropping in the YAML's model: the checkpoint's input record
    names it; ``tsf test`` with ``merge_r``, the Predictor and ``tsf predict-files`` take the
    checkpoint's switches by default and options over them; export and flops refuse in one
    line what they cannot do."""
    from lightning_tsf.cli import main as tsf
    from lightning_tsf.commands.lightning import cli_main
    from lightning_tsf.predictor import Predictor

    run = tmp_path / "run"
    demo = Path(__file__).parents[1] / "lightning_tsf" / "configs" / "demo_synthetic.yaml"
    args = ["--config", str(demo), *tiny_overrides(run), "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.logger=false", "--trainer.callbacks=[]",
            "--model.net.init_args.tokens.tube_drop=0.5"]  # fmt: skip
    assert cli_main(["fit", *args]) == 0
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    assert saved["input_config"]["tokens"] == {"tube_drop": 0.5}
    merged = [*args, "--model.net.init_args.tokens.merge_r=2", f"--ckpt_path={ckpt}"]
    assert cli_main(["test", *merged]) == 0
    predictor = Predictor.from_checkpoint(ckpt, "cpu", tokens={"merge_r": 1}, num_workers=0)
    assert predictor.model.tokens == TokenConfig(merge_r=1, tube_drop=0.5)
    assert Predictor.from_checkpoint(ckpt, "cpu").model.tokens == TokenConfig(tube_drop=0.5)
    video = str(next((tiny_synthetic / "videos" / "test").glob("*.mp4")))
    capsys.readouterr()
    rc = tsf(["predict-files", video, "--checkpoint", str(ckpt), "--static-drop", "0.05",
              "--merge-r", "1", "--num-workers", "0", "--no-progress"])  # fmt: skip
    assert rc == 0 and "move_" in capsys.readouterr().out
    assert tsf(["export", str(ckpt), "--out", str(tmp_path / "m.pt2"),
                "--format", "torch-export", "--merge-r", "1"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "cannot export with token switches on (merge_r=1)" in err and err.count("\n") == 1
    assert tsf(["flops", "--variants", "timesformer_tiny", "--schemes", "axial",
                "--tube-drop", "0.5"]) == 2  # fmt: skip
    assert "does not apply to axial" in capsys.readouterr().err


def test_compile_whole_graph_with_merging() -> None:
    """``compile: true`` with ``merge_r``: one graph (dynamo's counting backend, no code
    generation), equal to eager. (``tube_drop`` compiles alike; ``static_drop`` breaks the graph
    at its data-dependent count, docs/model.md.)"""
    from torch._dynamo.testing import CompileCounter

    from lightning_tsf.train.compile import compile_timesformer, compiled_path

    torch._dynamo.reset()
    model, x = tiny("divided_space_time", tokens={"merge_r": 2}), video()
    eager = model(x)
    counter = CompileCounter()
    compile_timesformer(model, backend=counter, fullgraph=True)
    assert torch.equal(model(x), eager)
    assert compiled_path(model) == "whole" and counter.frame_count == 1
    torch._dynamo.reset()
