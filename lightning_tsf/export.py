"""A trained TimeSformer as a file that runs without this package: ONNX or ``torch.export``.

The exported graph takes one normalised float video batch ``video`` ``(batch, 3, T, S, S)``
and returns ``logits`` ``(batch, num_classes)``; the batch axis is dynamic, T and S are fixed
at export. What a user needs to prepare the input (frames, size, mean, std) and read the
output (class names) is written into the file: ONNX ``metadata_props``, or the
``metadata.json`` extra file of a ``.pt2``. The ONNX file is made by the dynamo-based exporter
(``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``); onnx, onnxscript and
onnxruntime come with the ``export`` extra and are imported only here, when used.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_tsf.data.inputs import InputConfig
from lightning_tsf.inference import load_model
from lightning_tsf.models import TimeSformer
from lightning_tsf.models.names import EXPORT_FORMATS


@contextmanager
def uncompiled(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with its and its submodules' compilation off for the duration (exporters and
    tracers need the eager code); the compiled calls are restored afterwards."""
    saved = {m: m._compiled_call_impl for m in module.modules()}
    saved = {m: call for m, call in saved.items() if call is not None}
    for m in saved:
        m._compiled_call_impl = None
    try:
        yield module
    finally:
        for m, call in saved.items():
            m._compiled_call_impl = call


FORMATS = EXPORT_FORMATS
INPUT_NAME, OUTPUT_NAME = "video", "logits"
MAX_BATCH = 4096  # upper bound of the dynamic batch axis (torch.export needs a finite one)
_EXTRA = "pip install 'lightning-tsf[export]'"


class ExportError(ValueError):
    """An export that cannot be done; the message is one line saying why."""


def check_format(format: str) -> None:
    """Raise :class:`ExportError` for a format not in :data:`FORMATS`."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; valid: {', '.join(FORMATS)}")


def export_metadata(model: TimeSformer, record: InputConfig | None = None) -> dict[str, str]:
    """Everything needed to run the exported file, as strings (lists and tuples in JSON):
    the model's input record (:class:`~lightning_tsf.data.inputs.InputConfig`, in full under
    ``input_config``) and the sizes and classes the graph was exported with."""
    record = record or InputConfig(num_frames=model.num_frames, crop_size=model.img_size,
                                   test_short_side=model.img_size)  # fmt: skip
    return {
        "input": f"{INPUT_NAME}: float32 (batch, 3, num_frames, img_size, img_size), RGB "
        "frames scaled to [0, 1] then (x - mean) / std per channel",
        "output": f"{OUTPUT_NAME}: float32 (batch, num_classes), softmax for probabilities",
        "num_frames": str(model.num_frames),
        "img_size": str(model.img_size),
        "mean": json.dumps(list(record.mean)),
        "std": json.dumps(list(record.std)),
        "class_names": json.dumps(list(record.class_names)),
        "num_classes": str(model.num_classes),
        "attention_type": model.attention_type,
        "sampler": record.sampler,
        "sampling_rate": str(record.sampling_rate),
        "input_config": json.dumps(record.to_dict()),
    }


def example_input(model: TimeSformer, batch: int = 2) -> Tensor:
    """A random video batch of the model's shape: what the export traces with."""
    s = model.img_size
    return torch.randn(batch, model.in_chans, model.num_frames, s, s)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings about optional packages (torchvision) and deprecations."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def _cpu_eval_eager(model: TimeSformer) -> Iterator[TimeSformer]:
    """``model`` as the exporters need it (float32, CPU, eval, not compiled) for the duration;
    its device, dtype, mode and compilation are restored afterwards."""
    param = next(model.parameters())
    device, dtype, training = param.device, param.dtype, model.training
    with uncompiled(model):
        try:
            yield model.float().cpu().eval()
        finally:
            model.to(device, dtype).train(training)


def _batch_dim() -> dict[str, dict[int, Any]]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def _root_cause(err: BaseException) -> str:
    """The innermost error of a chain on one line (the exporters wrap the real reason)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {one_line(err)}"


def one_line(err: BaseException) -> str:
    """An error message on one line: its lines joined with ``; ``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] + " " + "; ".join(lines[1:]) if len(lines) > 1 else "".join(lines)


def export_model(
    model: TimeSformer,
    out: str | Path,
    format: str = "onnx",
    record: InputConfig | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``model`` (exported in eval mode, float32, on the CPU, then restored) to ``out``.

    ``onnx``: an ONNX file (opset ``opset``, default the exporter's) with named input/output,
    a dynamic batch axis and :func:`export_metadata` in ``metadata_props``. ``torch-export``:
    a ``torch.export`` program saved with ``torch.export.save`` (load it with
    ``torch.export.load(path).module()``), the metadata in its ``metadata.json`` extra file.
    Raises :class:`ExportError` naming the attention scheme when the graph cannot be exported.
    """
    check_format(format)
    if format == "onnx":
        try:
            import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        except ImportError as err:
            raise ExportError(f"ONNX export needs onnx and onnxscript: {_EXTRA}") from err
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(model, record)
    x = example_input(model)
    try:
        with _quiet(), torch.no_grad(), _cpu_eval_eager(model):
            if format == "onnx":
                program = torch.onnx.export(
                    model, (x,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=_batch_dim(), opset_version=opset, dynamo=True,
                    verbose=False,
                )  # fmt: skip
                program.model.metadata_props.update(meta)
                program.save(out)
            else:
                program = torch.export.export(model, (x,), dynamic_shapes=_batch_dim())
                torch.export.save(program, out, extra_files={"metadata.json": json.dumps(meta)})
    except Exception as err:  # any exporter failure: say which model could not be exported
        raise ExportError(
            f"cannot export attention_type {model.attention_type!r} to {format}: {_root_cause(err)}"
        ) from err
    return out


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    format: str = "onnx",
    preset: str | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
    opset: int | None = None,
    model_config: str | None = None,
    attention_type: str | None = None,
) -> tuple[Path, TimeSformer, InputConfig]:
    """Load a Lightning ``.ckpt``, official ``.pyth`` or HF checkpoint with
    :func:`~lightning_tsf.inference.load_model` and :func:`export_model` it.

    ``preset``, ``num_frames`` and ``img_size`` give the model's shape where the checkpoint
    does not carry it (official and HF files); they also override a Lightning checkpoint's
    stored config. ``model_config``: a YAML of TimeSformer arguments, instead of ``preset``;
    ``attention_type``: the scheme, where the checkpoint's keys do not tell it.
    Returns the written path, the model and its input record.
    """
    check_format(format)  # before the (slow) load
    overrides = {"num_frames": num_frames, "img_size": img_size, "attention_type": attention_type}
    model, record = load_model(str(checkpoint), preset, model_config, overrides)
    return export_model(model, out, format, record, opset), model, record


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported file (ONNX or ``.pt2``), JSON values decoded."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        raw = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
    else:
        extra = {"metadata.json": ""}
        torch.export.load(path, extra_files=extra)
        raw = json.loads(extra["metadata.json"])
    return {k: _decode(v) for k, v in raw.items()}


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def onnx_max_difference(
    path: str | Path, model: TimeSformer, batch_sizes: Sequence[int] = (1, 2), seed: int = 0
) -> float:
    """Largest ``|onnxruntime - torch eager|`` of the logits over random batches of each size
    (``model`` on the CPU in eval mode, as :func:`export_checkpoint` returns it).

    Run by ``tsf export`` after writing a file, so a user sees that the file computes what the
    model does (and that the batch axis is dynamic) before shipping it.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ExportError(f"checking the ONNX file needs onnxruntime: {_EXTRA}") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = example_input(model, b).normal_(generator=generator)
        with torch.no_grad():
            ref = model(x)
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        worst = max(worst, float((torch.from_numpy(got) - ref).abs().max()))
    return worst


def metadata_summary(meta: Mapping[str, str]) -> str:
    """One line for the command's output: the input the file expects and its classes."""
    names = json.loads(meta["class_names"])
    return (
        f"input {INPUT_NAME} (batch, 3, {meta['num_frames']}, {meta['img_size']}, "
        f"{meta['img_size']}), mean {meta['mean']}, std {meta['std']}; "
        f"{meta['num_classes']} classes" + (" (names stored)" if names else " (no names)")
    )
