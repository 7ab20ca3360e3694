"""``tsf export CHECKPOINT --format onnx --out model.onnx``: a trained model for deployment.

The work is done by :mod:`lightning_tsf.export`. After an ONNX export the file is run with
onnxruntime on random batches of 1 and 2 clips and compared with the PyTorch model; the largest
difference is printed (``--no-check`` skips it). Bad inputs (a missing or unreadable file, an
unknown preset or format, a model the exporter cannot take) print one ``tsf export: ...`` line
and exit 2.
"""

from __future__ import annotations

import sys

from lightning_tsf.commands.help import command_parser
from lightning_tsf.commands.options import add_model_source, model_source
from lightning_tsf.models.names import EXPORT_FORMATS

HINT = " (give --preset, --attention-type, --num-frames and --img-size that fit the checkpoint)"
TOLERANCE = 1e-4  # max |onnxruntime - torch| of the logits accepted by the check


def main(argv: list[str]) -> int:
    parser = command_parser("export", __doc__)
    parser.add_argument("checkpoint", help="Lightning .ckpt, official .pyth or HF checkpoint")
    parser.add_argument("--format", default="onnx", help=f"{' or '.join(EXPORT_FORMATS)} (.pt2)")
    parser.add_argument("--out", required=True, help="file to write (.onnx / .pt2)")
    add_model_source(parser)
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    args = parser.parse_args(argv)
    from lightning_tsf.export import (
        export_checkpoint,
        export_metadata,
        metadata_summary,
        one_line,
        onnx_max_difference,
    )
    from lightning_tsf.models import CheckpointError

    try:
        source = model_source(args)
        path, model, record = export_checkpoint(
            args.checkpoint, args.out, args.format, source["preset"], source["num_frames"],
            source["img_size"], args.opset, source["model_config"], source["attention_type"],
        )  # fmt: skip
        diff = None
        if args.format == "onnx" and not args.no_check:
            diff = onnx_max_difference(path, model)
    except (FileNotFoundError, ValueError) as err:  # ExportError, CheckpointError, presets
        hint = HINT if isinstance(err, CheckpointError) and "shapes differ" in str(err) else ""
        print(f"tsf export: {one_line(err)}{hint}", file=sys.stderr)
        return 2
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({args.format}, {size:.1f} MiB, {model.attention_type}): "
          f"{metadata_summary(export_metadata(model, record))}")  # fmt: skip
    if diff is not None:
        verdict = "ok" if diff <= TOLERANCE else f"MORE than {TOLERANCE:g}"
        print(f"onnxruntime vs torch at batch 1 and 2: max |difference| {diff:.2g} ({verdict})")
        return 0 if diff <= TOLERANCE else 1
    return 0
