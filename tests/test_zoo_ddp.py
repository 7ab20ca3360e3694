"""``zoo:NAME`` on an empty cache under real DDP (2 CPU processes, gloo, ``ddp_spawn``) against
a loopback server that counts requests: one download, by local rank zero in ``prepare_data``,
and both ranks load the same verified file in ``setup``. A checkpoint is tested, and resumed,
after its init file was removed: no request, no error."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_zoo import Server, official_file

from lightning_tsf.commands.lightning import TSFCLI, cli_main
from lightning_tsf.models import zoo
from lightning_tsf.train.module import VideoClassifier

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"
NET = "--model.net.init_args."
TINY_PRESET = [f"{NET}embed_dim=64", f"{NET}depth=2", f"{NET}num_heads=4"]  # timesformer_tiny


class ZooProbe(pl.Callback):
    """Carries test zoo entries into ddp_spawn's processes (registered again when unpickled
    there) and writes, per rank, the file ``pretrained`` was loaded from."""

    def __init__(self, entries: list[zoo.ZooEntry], out: Path) -> None:
        self.entries, self.out = entries, out
        self._register()

    def _register(self) -> None:
        for item in self.entries:
            zoo.ZOO[item.name] = item

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._register()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        got = pl_module.pretrained_from
        weight = pl_module.net.patch_embed.proj.weight
        record = {"path": str(got.path), "kind": got.kind, "sum": float(weight.sum())}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.fixture
def server() -> Server:
    s = Server()
    yield s
    s.httpd.shutdown()


@pytest.mark.slow
def test_ddp_one_download_then_test_without_the_init_file(
    server: Server, tiny_overrides: Callable[[Path], list[str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))  # empty; inherited by the ranks
    monkeypatch.delenv(zoo.MIRROR_ENV, raising=False)
    server.files["tiny.pyth"] = data = official_file()
    item = zoo.ZooEntry("tiny", "tiny.pyth", f"{server.url}/tiny.pyth", "test",
                        "timesformer_tiny", 4, 5, "official")  # fmt: skip
    probe = ZooProbe([item], tmp_path)
    monkeypatch.setitem(zoo.ZOO, "tiny", item)
    args = ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"), *TINY_PRESET,
            "--model.pretrained=zoo:tiny", "--trainer.enable_progress_bar=false",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=1"]  # fmt: skip
    cli = TSFCLI(args=[*args, "--trainer.devices=2", "--trainer.strategy=ddp_spawn"], run=False)
    assert cli.model.pretrained_from is None  # nothing read at init
    assert server.requests == [] and not (tmp_path / "cache").exists()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert server.requests == [("tiny.pyth", None)]  # one download for both ranks
    path = tmp_path / "cache" / "tiny.pyth"
    assert path.read_bytes() == data
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    expected = torch.load(path, weights_only=True)["model_state"]["model.patch_embed.proj.weight"]
    for rank in ranks:  # each rank loaded the verified file itself
        assert rank["path"] == str(path) and rank["kind"] == "official"
        assert rank["sum"] == pytest.approx(float(expected.sum()), abs=1e-4)
    record = json.loads((tmp_path / "cache" / zoo.LOCK_JSON).read_text())["files"]["tiny.pyth"]
    assert record["source"] == f"release {item.url}"

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.unlink()  # the init file is gone
    assert cli_main(["test", *args, f"--ckpt_path={last}"]) == 0
    assert cli_main(["fit", *args, f"--ckpt_path={last}", "--trainer.max_epochs=2"]) == 0
    assert len(server.requests) == 1 and not path.exists()  # nothing asked, nothing fetched


@pytest.mark.slow
def test_test_and_resume_after_a_local_init_file_moved(
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    """The k400 case: initialised from a local file, tested after that file was moved, even
    with ``--model.pretrained=zoo:...`` (LightningCLI puts the checkpoint's saved path back)."""
    monkeypatch.setattr(sys, "argv", ["tsf"])
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    init = tmp_path / "vit_init.pth"
    init.write_bytes(official_file())
    args = ["--config", str(SMOKE), *tiny_overrides(tmp_path / "run"), *TINY_PRESET,
            "--trainer.enable_progress_bar=false", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]  # fmt: skip
    assert cli_main(["fit", *args, f"--model.pretrained={init}"]) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["hyper_parameters"]["pretrained"] == str(init)
    init.rename(tmp_path / "moved.pth")
    for extra in ([], ["--model.pretrained=zoo:vit_base_in21k"]):
        assert cli_main(["test", *args, *extra, f"--ckpt_path={last}"]) == 0
    assert cli_main(["fit", *args, f"--ckpt_path={last}", "--trainer.max_epochs=2"]) == 0
    assert "model.pretrained" not in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # no zoo download either
    assert not VideoClassifier.load_from_checkpoint(last).pretrained_due()  # fine-tune it further

    err = cli_main(["fit", *args, f"--model.pretrained={init}"])  # from scratch: named
    assert err == 2 and f"model.pretrained: file does not exist: {init}" in capsys.readouterr().err
