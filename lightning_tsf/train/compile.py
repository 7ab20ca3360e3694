"""``compile: true``: ``torch.compile`` a TimeSformer, falling back whole model -> blocks -> eager.

The policy lives here, in the training layer; the model stays a plain ``nn.Module``. Compiling
uses ``nn.Module.compile``, which keeps the module (and so the state-dict keys) as it is and only
sets the call torch runs instead of ``forward``; pickling and ``copy.deepcopy`` drop it, so a
copy runs eager. Dynamo traces and the backend compiles at the first call, so a compiler error
surfaces there, not at :func:`compile_timesformer` (the backward graph too: it is compiled with
the forward, not at the first ``backward()``): each compiled call is wrapped to catch
compiler errors (:func:`is_compiler_error`) and take the next way down, with a warning, and to
let everything else -- an out of memory, an error in our code -- propagate.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, get_args

import torch
import torch._functorch.config
from torch import nn

from lightning_tsf.models import TimeSformer

log = logging.getLogger(__name__)

# torch.compile's modes (``compile: <mode>``): CUDA graphs ("reduce-overhead"), autotuned
# kernels ("max-autotune-no-cudagraphs"), both ("max-autotune").
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES = get_args(CompileMode)
# Inductor settings for the whole-model graph (see compile_timesformer).
INDUCTOR_OPTIONS = {"triton.coalesce_tiling_analysis": False}


def _error_types(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes ``module.Class`` this torch has (names move between versions)."""
    found = []
    for name in names:
        module, _, cls = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), cls))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


# What the compiler raises: dynamo's errors (tracing, unsupported code with fullgraph, a backend
# that failed) and inductor's; the subclasses are listed too in case a torch moves them.
COMPILER_ERRORS = _error_types(
    "torch._dynamo.exc.TorchDynamoException",
    "torch._dynamo.exc.BackendCompilerFailed",
    "torch._inductor.exc.InductorError",
)
# Dynamo errors that are the traced code's, not the compiler's: an op failed on fake tensors
# (a shape bug of ours), which eager would raise as well.
TRACED_CODE_ERRORS = _error_types("torch._dynamo.exc.TorchRuntimeError")


def is_compiler_error(err: BaseException) -> bool:
    """Whether ``err`` is the compiler failing (fall back) rather than the run (propagate):
    an out of memory or an error of the traced code is not, even wrapped in a compiler error."""
    if not isinstance(err, COMPILER_ERRORS) or isinstance(err, TRACED_CODE_ERRORS):
        return False
    chain: list[BaseException] = [err]
    while len(chain) < 20:  # the wrapped errors: BackendCompilerFailed keeps its inner one
        inner = getattr(chain[-1], "inner_exception", None) or chain[-1].__cause__
        if inner is None:
            break
        chain.append(inner)
    return not any(isinstance(e, torch.OutOfMemoryError) for e in chain)


def _warn_compile_failed(what: str, err: BaseException, then: str) -> None:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()][:2]
    warnings.warn(
        f"torch.compile of {what} failed ({type(err).__name__}: {' '.join(lines)}); {then}",
        stacklevel=4,
    )


def _backward_compiled_with_forward() -> AbstractContextManager:
    """AOTAutograd compiles the backward graph lazily, at the first ``backward()``, where no
    fallback can catch its errors; this has it compiled with the forward (if this torch can)."""
    config = torch._functorch.config
    if hasattr(config, "force_non_lazy_backward_lowering"):
        return config.patch(force_non_lazy_backward_lowering=True)
    return nullcontext()


class _FallbackCall:
    """A module's compiled call that, on a compiler error, asks ``fallback`` for the next way
    down and calls it with the same arguments; any other error propagates."""

    def __init__(self, compiled: Callable, fallback: Callable[[BaseException], Callable]) -> None:
        self.compiled, self.fallback = compiled, fallback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with _backward_compiled_with_forward():
                return self.compiled(*args, **kwargs)
        except COMPILER_ERRORS as err:
            if not is_compiler_error(err):
                raise
            return self.fallback(err)(*args, **kwargs)


def _compile(module: nn.Module, fallback: Callable[[BaseException], Callable], **kwargs) -> None:
    """``module.compile(**kwargs)`` with its compiled call guarded by ``fallback``."""
    module.compile(**kwargs)
    module._compiled_call_impl = _FallbackCall(module._compiled_call_impl, fallback)


def compiled_path(net: TimeSformer) -> str:
    """How ``net`` runs: ``"whole"`` (one graph), ``"blocks"`` (each block) or ``"eager"``."""
    if net._compiled_call_impl is not None:
        return "whole"
    if any(block._compiled_call_impl is not None for block in net.blocks):
        return "blocks"
    return "eager"


def compile_blocks(net: TimeSformer, **compile_kwargs) -> None:
    """``torch.compile`` each block on its own; the embedding and the head stay eager.

    All blocks of a model share one block class and, with the drop-path rate held as a tensor,
    one graph: compiled once, reused by every block. If compiling fails with a compiler error,
    a warning names it and the blocks run eager.
    """

    def to_eager(block: nn.Module) -> Callable[[BaseException], Callable]:
        def fallback(err: BaseException) -> Callable:
            _warn_compile_failed("the blocks", err, "running them eager")
            for b in net.blocks:
                b._compiled_call_impl = None
            log.info("compile: running the blocks eager")
            return block

        return fallback

    for block in net.blocks:
        _compile(block, to_eager(block), **compile_kwargs)
    log.info("compile: the blocks, each on its own (eager if that fails)")


def compile_timesformer(net: TimeSformer, **compile_kwargs) -> None:
    """``torch.compile`` the whole model (embedding, blocks, head) as one graph; a no-op when
    ``net`` already runs compiled. ``compile_kwargs`` go to ``torch.compile`` (a ``mode`` of
    :data:`COMPILE_MODES` as inductor's options for it).

    On torch 2.11 inductor's GPU code generation crashed on this graph: its coalescing tiling
    analysis raises ``CantSplit`` without the arguments the class requires, a ``TypeError``
    instead of the signal it catches (torch 2.13 raises it correctly). The kernel lies outside
    the blocks (the blocks and the embedding compile on their own), so the analysis is switched
    off for this graph (:data:`INDUCTOR_OPTIONS`); on an H200 the whole model then trains as
    fast as compiled blocks in less memory. If compiling fails anyway (a compiler error at the
    first call), a warning names the error and :func:`compile_blocks` takes over.
    """
    if compiled_path(net) != "eager":
        return
    whole = dict(compile_kwargs)
    if whole.get("backend", "inductor") == "inductor":
        # torch.compile takes a mode or options, not both: the mode becomes its options
        mode = whole.pop("mode", None) or "default"
        from torch._inductor import list_mode_options

        whole["options"] = {**list_mode_options(mode), **INDUCTOR_OPTIONS,
                            **whole.get("options", {})}  # fmt: skip

    def to_blocks(err: BaseException) -> Callable:
        _warn_compile_failed("the whole model", err, "compiling the blocks instead")
        net._compiled_call_impl = None
        compile_blocks(net, **compile_kwargs)
        return net

    _compile(net, to_blocks, **whole)
    log.info("compile: the whole model as one graph (the blocks, then eager, if that fails)")
