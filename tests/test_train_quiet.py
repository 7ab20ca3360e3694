"""Quiet by default: ``tsf demo`` at a tiny size prints its own lines, progress and results and
none of the known notes a user cannot act on (the list of issue 27, independent of the
filters); each filter is scoped to the library that emits it; ``TSF_VERBOSE=1`` keeps all."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lightning_tsf.train import quiet

ROOT = Path(__file__).parents[1]
# The lines the demo and `tsf fit` printed before (issue 27), as a user saw them.
NOISE = (
    r"LightningCLI's args parameter",
    r"not recommended to provide both args and command line arguments",
    r"litlogger",
    r"The anonymous setting has no effect",
    r"LeafSpec",
    r"Loading `train_dataloader` to estimate number of stepping batches",
    r"git root .* does not exist",
    r"IterableDataset` has `__len__` defined",
)


@pytest.mark.timeout(600)
def test_demo_prints_no_known_noise(tiny_synthetic: Path, tmp_path: Path) -> None:
    """The demo command as users run it (a subprocess, in a folder outside any git repository,
    W&B offline as the demo sets it), one epoch of a tiny model."""
    net = "--model.net.init_args."
    argv = ["demo", "--root", str(tiny_synthetic), "--out", str(tmp_path / "run"),
            "--data.num_frames=4", "--data.sampling_rate=4", "--data.crop_size=32",
            "--data.train_scale=[32, 36]", "--data.batch_size=2", "--data.num_workers=0",
            f"{net}patch_size=8", f"{net}embed_dim=16", f"{net}depth=1", f"{net}num_heads=2",
            "--trainer.max_epochs=1", "--trainer.log_every_n_steps=1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TSF_"))}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="offline", WANDB_DIR=str(tmp_path))
    code = "import sys; from lightning_tsf.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    for pattern in NOISE:
        assert not re.search(pattern, text), f"noise {pattern!r} in:\n{text}"
    epoch_lines = [line for line in text.splitlines() if "] val top-1" in line]
    assert epoch_lines and all(line.startswith("[epoch  0] val top-1") for line in epoch_lines)
    assert "test top-1 (video level, 3 views)" in out.stdout  # the results are there


@pytest.fixture
def lightning_logger():
    logger = logging.getLogger(quiet.LIGHTNING_LOGGER)
    before = list(logger.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield logger
    logger.filters[:] = before


def test_filters_are_scoped_to_the_emitting_library(
    lightning_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    quiet.quiet_libraries()
    message = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit(message, UserWarning, "_pytree.py", 21,
                               module="pytorch_lightning.utilities._pytree")  # fmt: skip
        warnings.warn_explicit(message, UserWarning, "mine.py", 1, module="mypackage.mine")
    assert [w.filename for w in seen] == ["mine.py"]  # another library's warning still shows
    with caplog.at_level(logging.INFO, logger=quiet.LIGHTNING_LOGGER):
        lightning_logger.info("💡 Tip: For seamless cloud logging and experiment tracking, ...")
        lightning_logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_verbose_keeps_every_line(lightning_logger: logging.Logger,
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    filters, logger_filters = list(warnings.filters), list(lightning_logger.filters)
    quiet.quiet_libraries()
    assert warnings.filters == filters and lightning_logger.filters == logger_filters
    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")
    assert not quiet.verbose()
