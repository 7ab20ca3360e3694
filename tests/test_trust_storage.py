"""Every storage fault is one line and loses nothing (issue 25): a moto S3 server in its own
process on loopback (so it can be stopped, paused with SIGSTOP and resumed with SIGCONT),
tiny shards uploaded to it, faults injected by hand.

Before training (the DataModule's pre-flight, what ``tsf fit`` runs before the Trainer starts):
index.json truncated, a chunk deleted, a chunk truncated, the cache folder blocked by a file,
a cache bound below two chunks ("disk full" by a tiny max size), the endpoint stopped. While
streaming (faults injected after the pre-flight passed): a chunk deleted or truncated, the
endpoint stopped, the endpoint paused then resumed (retried, one warning, the batch arrives).
End to end: ``tsf fit`` exits 2 with one line, ``last.ckpt`` byte-equal, and ``--ckpt_path
latest`` continues once the object is back. Each fault's time to the error is bounded here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import data_module

pytest.importorskip("litdata")
pytest.importorskip("moto")

from s3server import REGION, S3Server, free_port  # noqa: E402

from lightning_tsf.commands.lightning import cli_main  # noqa: E402
from lightning_tsf.data.datamodule import VideoDataModule  # noqa: E402
from lightning_tsf.data.storage import StorageError, as_storage_error  # noqa: E402

pytestmark = [pytest.mark.timeout(300)]
SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


class MotoProcess(S3Server):
    """A moto server in a subprocess (``proc``): stop, pause and resume it for real."""

    proc: subprocess.Popen


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoProcess]:
    import requests

    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(endpoint, timeout=10)
            break
        except requests.RequestException:
            assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
            time.sleep(0.1)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("LIGHTNING_TSF_CACHE", str(tmp_path / "tsf-cache"))
    # bounded waits for the test: 1 s without bytes is a failure, outages retried for 4 s
    # (2 s where the endpoint is stopped for good)
    monkeypatch.setenv("LIGHTNING_TSF_STORAGE_TIMEOUT", "1")
    monkeypatch.setenv("LIGHTNING_TSF_STORAGE_RETRY", "4")
    server = MotoProcess(endpoint=endpoint, bucket="tsf-faults")
    server.proc = proc
    server.client().create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)


def upload(server: S3Server, local: Path, prefix: str) -> str:
    """Every file of a local shard folder to ``s3://bucket/prefix``."""
    client = server.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), server.bucket, f"{prefix}/{path.relative_to(local)}")
    return server.url(prefix)


def chunk_key(server: S3Server, prefix: str, split: str = "train") -> str:
    keys = [o["Key"] for o in server.client().list_objects_v2(
        Bucket=server.bucket, Prefix=f"{prefix}/{split}/")["Contents"]]  # fmt: skip
    return next(k for k in keys if k.endswith(".bin"))


def truncate(server: S3Server, key: str, keep: int = 100) -> bytes:
    client = server.client()
    body = client.get_object(Bucket=server.bucket, Key=key)["Body"].read()
    client.put_object(Bucket=server.bucket, Key=key, Body=body[:keep])
    return body


def datamodule(url: str, cache: Path, **kw) -> VideoDataModule:
    options = dict(num_frames=4, sampling_rate=4, crop_size=32, train_scale=(32, 36),
                   batch_size=2, num_workers=0, pin_memory=False, sampler="centred",
                   num_spatial_crops=1, cache_dir=str(cache), max_cache_size="10MB")  # fmt: skip
    dm = data_module(url, **{**options, **kw})
    assert dm.source  # the source is picked (and object storage checked) on first use
    return dm


def one_line_error(call: Callable[[], object], *match: str) -> tuple[str, float]:
    """``call`` raises a one-line StorageError containing each of ``match``; returns it and
    the seconds it took."""
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        call()
    took = time.monotonic() - start
    message = str(err.value)
    assert "\n" not in message, message
    for part in match:
        assert part in message, (part, message)
    print(f"\n{took:5.2f} s  {message}")
    return message, took


def first_batch(loader: object) -> object:
    return next(iter(loader))


def test_faults_before_training_are_one_line(moto: MotoProcess, tiny_shards: Path,
                                             tmp_path: Path) -> None:  # fmt: skip
    url = upload(moto, tiny_shards, "ok")
    cache = tmp_path / "cache"
    datamodule(url, cache)  # the healthy upload passes the pre-flight

    url = upload(moto, tiny_shards, "index")
    truncate(moto, "index/train/index.json", keep=40)
    one_line_error(lambda: datamodule(url, cache), f"{url}/train/index.json: unreadable",
                   "truncated", "tsf shard")  # fmt: skip

    url = upload(moto, tiny_shards, "deleted")
    key = chunk_key(moto, "deleted")
    moto.client().delete_object(Bucket=moto.bucket, Key=key)
    one_line_error(lambda: datamodule(url, cache), f"{url}/train", "missing",
                   key.rsplit("/", 1)[1])  # fmt: skip

    url = upload(moto, tiny_shards, "short")
    key = chunk_key(moto, "short")
    body = truncate(moto, key)
    _, took = one_line_error(lambda: datamodule(url, cache), "truncated",
                             f"{key.rsplit('/', 1)[1]} (100 of {len(body)} bytes)")  # fmt: skip
    assert took < 10

    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    one_line_error(lambda: datamodule(url.replace("short", "ok"), blocked / "cache"),
                   f"chunk cache {blocked / 'cache'}: unusable",
                   "data.storage.cache_dir")  # fmt: skip
    one_line_error(lambda: datamodule(url.replace("short", "ok"), cache, max_cache_size="100"),
                   "stream's two largest chunks",
                   "raise data.storage.max_cache_size")  # fmt: skip

    moto.proc.kill()
    moto.proc.wait()
    _, took = one_line_error(lambda: datamodule(url, cache), "cannot connect to the endpoint")
    assert took < 15


def test_faults_while_streaming_are_one_line_and_bounded(
    moto: MotoProcess, tiny_shards: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    times: list[str] = []
    # an object deleted after the pre-flight (the loader built): "missing", at once
    url = upload(moto, tiny_shards, "deleted")
    loader = datamodule(url, tmp_path / "c1").train_dataloader()
    moto.client().delete_object(Bucket=moto.bucket, Key=chunk_key(moto, "deleted"))
    _, took = one_line_error(lambda: first_batch(loader), "object missing (404)", url)
    assert took < 10
    times.append(f"deleted {took:.2f} s")

    # truncated after the pre-flight: reported as truncated, not after LitData's 120 s wait
    url = upload(moto, tiny_shards, "short")
    loader = datamodule(url, tmp_path / "c2").train_dataloader()
    truncate(moto, chunk_key(moto, "short"))
    _, took = one_line_error(lambda: first_batch(loader), "object truncated (100 of")
    assert took < 10
    times.append(f"truncated {took:.2f} s")

    # paused (SIGSTOP) for ~1.5 s, then resumed: retried with backoff, one warning, a batch
    url = upload(moto, tiny_shards, "paused")
    loader = datamodule(url, tmp_path / "c3").train_dataloader()
    os.environ["LIGHTNING_TSF_STORAGE_RETRY"] = "30"  # monkeypatch restores it
    capfd.readouterr()
    moto.proc.send_signal(signal.SIGSTOP)
    threading.Timer(1.5, moto.proc.send_signal, (signal.SIGCONT,)).start()
    start = time.monotonic()
    batch = first_batch(loader)
    took = time.monotonic() - start
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "tsf: warning: storage" in line]
    times.append(f"paused 1.5 s: first batch after {took:.2f} s; {warnings}")
    assert batch["video"].shape[0] == 2 and took >= 1.4
    assert len(warnings) == 1 and "retrying with backoff" in warnings[0], err
    assert "Traceback" not in err

    # stopped for good: after the retry window, one line
    os.environ["LIGHTNING_TSF_STORAGE_RETRY"] = "2"
    url = upload(moto, tiny_shards, "stopped")
    loader = datamodule(url, tmp_path / "c4").train_dataloader()
    moto.proc.kill()
    moto.proc.wait()
    _, took = one_line_error(lambda: first_batch(loader), "storage unreachable for",
                             "resume with --ckpt_path latest")  # fmt: skip
    assert 1 < took < 10
    times.append(f"stopped (2 s retry window) {took:.2f} s")
    assert "Traceback" not in capfd.readouterr().err
    with capfd.disabled():
        print("\nwhile streaming:", "; ".join(times))


def test_fit_stops_in_one_line_and_latest_continues_once_fixed(
    moto: MotoProcess, tiny_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = upload(moto, tiny_shards, "k400")
    run = tmp_path / "run"
    args = ["fit", "--config", str(SMOKE), f"--data.data_root={url}",
            f"--data.storage.cache_dir={tmp_path / 'cache'}", "--data.max_cache_size=10MB",
            "--data.num_workers=0", "--data.batch_size=2", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--model.net.init_args.embed_dim=16",
            "--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={run}"]  # fmt: skip
    assert cli_main([*args, "--trainer.max_epochs=1"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    key = chunk_key(moto, "k400", "val")
    body = truncate(moto, key)
    capsys.readouterr()
    start = time.monotonic()
    assert cli_main([*args, "--trainer.max_epochs=2", "--ckpt_path=latest"]) == 2
    took = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    with capsys.disabled():
        print(f"\nfit stopped after {took:.2f} s: {err[-1]}")
    assert err[-1].startswith("tsf: error: ") and "truncated" in err[-1] and url in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert last.read_bytes() == before  # the last checkpoint is intact
    moto.client().put_object(Bucket=moto.bucket, Key=key, Body=body)  # fixed
    assert cli_main([*args, "--trainer.max_epochs=2", "--ckpt_path=latest"]) == 0
    import torch

    assert torch.load(last, weights_only=False, map_location="cpu")["epoch"] == 1
    # a fresh run into this run's folder would put its config beside these checkpoints
    capsys.readouterr()
    assert cli_main([*args, "--trainer.max_epochs=1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"tsf: error: {run}: holds checkpoints of an earlier run (")
    assert "continue it with --ckpt_path latest" in line


def test_storage_error_mapping() -> None:
    """Errors raised in a loader worker arrive as text: the StorageError line is recovered;
    a full disk and a refused connection read as what they are."""
    text = RuntimeError("Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback"
                        " ...\nlightning_tsf.data.storage.StorageError: s3://b/x/chunk-0.bin: "
                        "object missing (404); run `tsf shard` again")  # fmt: skip
    assert str(as_storage_error(text)).startswith("s3://b/x/chunk-0.bin: object missing")
    full = as_storage_error(OSError(28, "No space left on device"), "s3://b/x")
    assert "no space left" in str(full) and "data.storage.cache_dir" in str(full)
    assert as_storage_error(ValueError("unrelated")) is None
