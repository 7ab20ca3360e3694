"""Compiled blocks (``compile: true``): one graph for all blocks whatever their drop-path
rates, full-graph capture of forward and backward for all five schemes equal to eager, a
warning and eager blocks when compiling fails. On CPU with dynamo's counting backend and
``aot_eager`` (no code generation), so it runs in seconds."""

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


@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_full_graph_forward_backward_equal_eager(scheme: str) -> None:
    torch.manual_seed(0)
    model = TimeSformer(**SMALL, depth=2, drop_path_rate=0.0, attention_type=scheme)
    video = torch.randn(2, 3, 4, 32, 32)
    eager = model(video)
    eager.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.compile_blocks(backend="aot_eager", fullgraph=True)  # a graph break would raise
    compiled = model(video)
    compiled.sum().backward()
    assert model.compiled
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=0, msg=name)
    fresh = TimeSformer(**SMALL, depth=2, attention_type=scheme)
    assert set(model.state_dict()) == set(fresh.state_dict())  # keys unchanged


def test_failed_compilation_warns_once_and_runs_eager() -> None:
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no code generation today")

    torch.manual_seed(0)
    model = TimeSformer(**SMALL, depth=3).eval()
    video = torch.randn(1, 3, 4, 32, 32)
    eager = model(video)
    model.compile_blocks(backend=broken_backend)
    with pytest.warns(UserWarning, match="torch.compile of the blocks failed") as record:
        out = model(video)
        again = model(video)
    assert len(record) == 1 and not model.compiled
    assert "no code generation today" in str(record[0].message)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(again, eager)


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
