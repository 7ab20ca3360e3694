"""Compilation (``compile: true``, :mod:`lightning_tsf.train.compile`): the whole model and, as
its fallback, the blocks. One graph for all blocks whatever their drop-path rates; full-graph
capture of forward and backward, of the blocks and of the whole model, for all five schemes,
equal to eager; on a compiler error a warning and the next way down (whole model -> blocks ->
eager); any other error (ours, an out of memory) propagates. On CPU with dynamo's counting
backend and ``aot_eager`` (no code generation), so it runs in seconds."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounter

from lightning_tsf.export import uncompiled
from lightning_tsf.models import BLOCKS, TimeSformer
from lightning_tsf.models.timesformer import DropPath
from lightning_tsf.train.compile import (
    INDUCTOR_OPTIONS,
    compile_blocks,
    compile_timesformer,
    compiled_path,
    is_compiler_error,
)

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
    compile_blocks(model, backend=counter)
    model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert compiled_path(model) == "blocks" and counter.frame_count == 1


@pytest.mark.parametrize("whole", [False, True], ids=["blocks", "whole"])
@pytest.mark.parametrize("scheme", list(BLOCKS))
def test_full_graph_forward_backward_equal_eager(scheme: str, whole: bool) -> None:
    torch.manual_seed(0)
    model = TimeSformer(**SMALL, depth=2, drop_path_rate=0.0, attention_type=scheme)
    keys = list(model.state_dict())
    video = torch.randn(2, 3, 4, 32, 32)
    eager = model(video)
    eager.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compile_fn = compile_timesformer if whole else compile_blocks
    compile_fn(model, backend="aot_eager", fullgraph=True)  # a graph break would raise
    compiled = model(video)
    compiled.sum().backward()
    assert compiled_path(model) == ("whole" if whole else "blocks")
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=0, msg=name)
    assert list(model.state_dict()) == keys  # keys unchanged: checkpoints load as they are


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
    (compile_timesformer if whole else compile_blocks)(model, backend=broken_backend)
    assert compiled_path(model) == ("whole" if whole else "blocks")
    with pytest.warns(UserWarning) as record:
        out = model(video)
        again = model(video)
    messages = [str(r.message) for r in record if "torch.compile of" in str(r.message)]
    if whole:
        assert "torch.compile of the whole model failed" in messages.pop(0)
    assert len(messages) == 1 and "torch.compile of the blocks failed" in messages[0]
    assert "no code generation today" in messages[0] and compiled_path(model) == "eager"
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(again, eager)


def test_failed_backward_compilation_falls_back_at_the_forward() -> None:
    """AOTAutograd compiles the backward lazily; we have it compiled with the forward, so its
    failure is caught there too: a training step runs, eager, after two warnings."""
    if not hasattr(torch._functorch.config, "force_non_lazy_backward_lowering"):
        pytest.skip("this torch compiles the backward lazily only")

    def broken_backward(gm, example_inputs):
        raise RuntimeError("no backward today")

    backend = aot_autograd(fw_compiler=lambda gm, example_inputs: gm, bw_compiler=broken_backward)
    model = TimeSformer(**SMALL, depth=2).train()
    compile_timesformer(model, backend=backend)
    with pytest.warns(UserWarning, match="no backward today"):
        model(torch.randn(2, 3, 4, 32, 32)).sum().backward()
    assert compiled_path(model) == "eager" and model.head.weight.grad is not None


def test_wrong_input_is_an_input_error_not_a_compile_failure() -> None:
    model = TimeSformer(**SMALL, depth=1)
    compile_timesformer(model, backend=broken_backend)
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 4, 3, 32, 32))
    assert compiled_path(model) == "whole"


class _Buggy(nn.Module):
    """A bug of ours in a block: an op on wrong shapes (dynamo meets it on fake tensors), or an
    exception raised in forward."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "raise":
            raise RuntimeError("a bug of ours")
        return x @ torch.ones(3, 2)


@pytest.mark.parametrize("kind", ["shape", "raise"])
@pytest.mark.parametrize("whole", [False, True], ids=["blocks", "whole"])
def test_an_error_of_ours_propagates(whole: bool, kind: str) -> None:
    """A bug in our code is not a compiler error: it propagates, nothing falls back."""
    model = TimeSformer(**SMALL, depth=2).eval()
    model.blocks[1].mlp = _Buggy(kind)
    (compile_timesformer if whole else compile_blocks)(model, backend="aot_eager")
    match = "a bug of ours" if kind == "raise" else "same reduction dim"
    with pytest.raises(RuntimeError, match=match) as info:
        model(torch.randn(1, 3, 4, 32, 32))
    assert not is_compiler_error(info.value)
    assert compiled_path(model) == ("whole" if whole else "blocks")  # no fallback happened


def test_out_of_memory_propagates() -> None:
    """An out of memory, raised by the compiled code or while compiling, is no compiler error."""

    def oom_at_run(gm, example_inputs):
        def run(*args):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        return run

    model = TimeSformer(**SMALL, depth=1).eval()
    compile_timesformer(model, backend=oom_at_run)
    with pytest.raises(torch.OutOfMemoryError):
        model(torch.randn(1, 3, 4, 32, 32))
    assert compiled_path(model) == "whole"

    def oom_at_compile(gm, example_inputs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    torch._dynamo.reset()
    model = TimeSformer(**SMALL, depth=1).eval()
    compile_timesformer(model, backend=oom_at_compile)
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(1, 3, 4, 32, 32))
    assert not is_compiler_error(info.value) and compiled_path(model) == "whole"


def test_whole_model_compile_uses_the_inductor_workaround(monkeypatch) -> None:
    """With inductor, the coalescing tiling analysis that crashed torch 2.11 is off; the option
    is a real inductor setting (``patch`` rejects unknown ones); other backends get no options."""
    with inductor_config.patch(INDUCTOR_OPTIONS):
        for key, value in INDUCTOR_OPTIONS.items():
            group, name = key.split(".")
            assert getattr(getattr(inductor_config, group), name) == value
    calls: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    compile_timesformer(TimeSformer(**SMALL, depth=1))
    compile_timesformer(TimeSformer(**SMALL, depth=1), backend="aot_eager")
    assert calls[0]["options"]["triton.coalesce_tiling_analysis"] is False
    assert "options" not in calls[1]


def test_compiled_state_stays_behind_in_copies_and_uncompiled() -> None:
    """Pickles and deep copies of a compiled model run eager; ``uncompiled`` (the exporters)
    switches compilation off for its duration and restores it."""
    model = TimeSformer(**SMALL, depth=2)
    compile_timesformer(model, backend="eager")
    assert compiled_path(pickle.loads(pickle.dumps(model))) == "eager"
    assert compiled_path(copy.deepcopy(model)) == "eager"
    with uncompiled(model):
        assert compiled_path(model) == "eager"
    assert compiled_path(model) == "whole"
    compile_timesformer(model, backend="eager")  # a no-op: already compiled
    assert compiled_path(model) == "whole"


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
