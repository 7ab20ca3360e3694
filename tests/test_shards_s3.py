"""Shards in object storage, for real: an S3-API server on loopback (moto), ``tsf shard`` into
a bucket, ``tsf fit`` and ``tsf test`` streaming from ``s3://`` with a bounded chunk cache, the
same answers as the local shards, and one-line errors for a missing bucket."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("litdata")
pytest.importorskip("moto")

from s3server import S3Server, s3_bucket_fixture  # noqa: E402, F401

from lightning_tsf.cli import main as tsf  # noqa: E402
from lightning_tsf.commands.lightning import TSFCLI, cli_main, finish_wandb  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SMOKE = Path(__file__).parents[1] / "experiments" / "smoke_cpu.yaml"


def stream_cache_bytes(root: Path) -> int:
    """The largest chunk cache of one stream (LitData keeps a folder per URL below ``root``;
    ``max_cache_size`` bounds each): bytes of its chunk files."""
    sizes = [0]
    for folder in (root.iterdir() if root.exists() else []):
        try:
            sizes.append(sum(p.stat().st_size for p in folder.rglob("*.bin")))
        except FileNotFoundError:  # a chunk evicted while we looked
            continue
    return max(sizes)


def test_shard_to_s3_then_fit_and_test_from_it(
    s3_bucket: S3Server, tiny_synthetic: Path, tiny_shards: Path,
    tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, capsys, monkeypatch,
) -> None:  # fmt: skip
    url = s3_bucket.url("k400/shards")
    staging = tmp_path / "staging"
    args = ["shard", str(tiny_synthetic), url, "--short-side", "32", "--workers", "1",
            "--no-progress", "--chunk-bytes", "12KB", "--staging", str(staging)]  # fmt: skip
    assert tsf(args) == 0
    keys = [o["Key"] for o in s3_bucket.client().list_objects_v2(
        Bucket=s3_bucket.bucket, Prefix="k400/shards/")["Contents"]]  # fmt: skip
    assert "k400/shards/shards.json" in keys and "k400/shards/train/index.json" in keys
    chunks = [k for k in keys if k.startswith("k400/shards/train/") and k.endswith(".bin")]
    assert len(chunks) >= 3, chunks  # several chunks, so the cache bound can bite
    capsys.readouterr()
    assert tsf(args) == 0  # a rerun into the finished prefix writes nothing and says so
    assert "already complete" in capsys.readouterr().err

    cache = tmp_path / "cache"
    every_chunk = [k for k in keys if k.endswith(".bin")]  # the bound holds for every split
    chunk_size = max(s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key=k)
                     ["ContentLength"] for k in every_chunk)  # fmt: skip
    bound = 2 * chunk_size
    run = tmp_path / "run"
    fit_args = ["--config", str(SMOKE), *tiny_overrides(run), f"--data.data_root={url}",
                f"--data.storage.cache_dir={cache}", f"--data.storage.max_cache_size={bound}",
                "--data.num_workers=0", "--trainer.max_epochs=2",
                "--data.clips.num_spatial_crops=3", "--trainer.limit_test_batches=1.0"]  # fmt: skip
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], stream_cache_bytes(cache))
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert cli_main(["fit", *fit_args]) == 0
        cli = TSFCLI(args=["test", *fit_args, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
        finish_wandb(cli.trainer)
    finally:
        stop.set()
        watcher.join()
    remote = cli.model.test_results
    # litdata evicts whole chunks only once over the bound, while its downloader fetches the
    # next one: each stream's measured peak stays within the bound plus two chunks (train,
    # val and test streams read the 16 + 8 + 7 videos through it), never the whole split
    print(f"cache peak {peak[0]} B, bound {bound} B, chunk {chunk_size} B")
    assert 0 < peak[0] <= bound + 2 * chunk_size, (peak[0], bound, chunk_size)
    assert remote["videos"] == remote["total_videos"] == 7

    # the same checkpoint on the local shards of the same videos: the same per-video answers
    local_args = [a for a in fit_args if not a.startswith(("--data.data_root",
                                                          "--data.storage.cache_dir",
                                                          "--data.storage.max_cache"))]  # fmt: skip
    local = TSFCLI(args=["test", *local_args, f"--data.data_root={tiny_shards}",
                         f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])  # fmt: skip
    finish_wandb(local.trainer)
    assert local.model.test_results["video_index"].tolist() == remote["video_index"].tolist()
    assert (local.model.test_results["probs"] - remote["probs"]).abs().max() < 1e-5


def test_missing_bucket_stops_before_training(
    s3_bucket: S3Server, tiny_overrides: Callable[[Path], list[str]], tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    rc = cli_main(["fit", "--config", str(SMOKE), *tiny_overrides(run),
                   "--data.data_root=s3://no-such-bucket/shards"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-bucket" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    assert not (run / "checkpoints").exists()
    assert tsf(["shard", str(tmp_path), "s3://no-such-bucket/x", "--no-progress"]) == 2
    assert "no-such-bucket" in capsys.readouterr().err
