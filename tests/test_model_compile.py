"""Compilation (``compile: true``): the whole model and, as its fallback, the blocks. One graph
for all blocks whatever their drop-path rates; full-graph capture of forward and backward, of
the blocks and of the whole model, for all five schemes, equal to eager; a warning and the next
way down (whole model -> blocks -> eager) when compiling fails. On CPU with dynamo's counting
backend and ``aot_eager`` (no code generation), so it runs in seconds."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from lightning_tsf.models import BLOCKS, TimeSformer
from lightning_tsf.models.timesformer import DropPath

SMALL = dict(img_size=32, patch_size=8, num_frames=4, num_classes=5, embed_dim=32, num_heads=2)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_one_graph_for_all_blocks(scheme: str) -> None:
    """Depth 12, drop path 0.1 (a different rate in every block), training: compiled once."""
    depth = 12 if scheme == "divided_space_time" else 4
    model = TimeSformer(**SMALL, depth=depth, drop_path_rate=0.1, attention_type=scheme).train()
    counter = CompileCounter()
    model.compile_blocks(backend=counter)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert model.compiled and counter.frame_count == 1


@pytest.mark.parametrize("whole", [False, True], ids=["blocks", "whole"])
@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_full_graph_forward_backward_equal_eager(scheme: str, whole: bool) -> None:
    torch.manual_seed(0)
    model = TimeSformer(**SMALL, depth=2, drop_path_rate=0.0, attention_type=scheme)
    video = torch.randn(2, 3, 4, 32, 32)
    eager = model(video)
    eager.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compile_fn = model.compile_model if whole else model.compile_blocks
    compile_fn(backend="aot_eager", fullgraph=True)  # a graph break would raise
    compiled = model(video)
    compiled.sum().backward()
    assert model.compiled
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=0, msg=name)
    fresh = TimeSformer(**SMALL, depth=2, attention_type=scheme)
    assert set(model.state_dict()) == set(fresh.state_dict())  # keys unchanged


def broken_backend(gm, example_inputs):
    raise RuntimeError("no code generation today")


@pytest.mark.parametrize("whole", [False, True], ids=["blocks", "whole"])
def test_failed_compilation_warns_and_goes_one_way_down(whole: bool) -> None:
    """Blocks fail -> one warning, eager. Whole model fails -> a warning, then the blocks
    (same backend, so they fail too) -> a second warning, eager."""
    torch.manual_seed(0)
    model = TimeSformer(**SMALL, depth=3).eval()
    video = torch.randn(1, 3, 4, 32, 32)
    eager = model(video)
    (model.compile_model if whole else model.compile_blocks)(backend=broken_backend)
    with pytest.warns(UserWarning) as record:
        out = model(video)
        again = model(video)
    messages = [str(r.message) for r in record]
    if whole:
        assert "torch.compile of the whole model failed" in messages.pop(0)
    assert len(messages) == 1 and "torch.compile of the blocks failed" in messages[0]
    assert "no code generation today" in messages[0] and not model.compiled
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(again, eager)


def test_wrong_input_is_an_input_error_not_a_compile_failure() -> None:
    model = TimeSformer(**SMALL, depth=1)
    model.compile_model(backend=broken_backend)
    with pytest.raises(ValueError, match="channels"):  # checked eagerly, before compiling
        model(torch.randn(1, 4, 3, 32, 32))
    assert model.compiled


def test_whole_model_compile_uses_the_inductor_workaround() -> None:
    """With inductor, the coalescing tiling analysis that crashed torch 2.11 is off."""
    from lightning_tsf.models.timesformer import INDUCTOR_OPTIONS

    assert INDUCTOR_OPTIONS == {"triton.coalesce_tiling_analysis": False}
    import torch._inductor.config as inductor_config

    assert hasattr(inductor_config.triton, "coalesce_tiling_analysis")  # a real setting
    model = TimeSformer(**SMALL, depth=1)
    model.compile_model()
    assert model.compiled
    import copy
    import pickle

    assert not pickle.loads(pickle.dumps(model)).compiled  # compiled wrappers stay behind
    assert not copy.deepcopy(model).compiled


def test_drop_path_statistics() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    x = torch.ones(20000, 3, 2)
    y = drop(x)
    kept = y[:, 0, 0] != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(DropPath(0.0, enabled=True).train()(x), x)  # block 0 of a model
    assert "p" not in drop.state_dict()  # a buffer, but not in checkpoints
