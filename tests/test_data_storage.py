"""lightning_tsf.data.storage against a real S3-API server on loopback (moto, tests/s3server.py).

Shards are written with ``litdata.optimize`` to ``s3://bucket/prefix`` and read back with
``StreamingDataset`` + ``StreamingDataLoader`` in spawned workers (what litdata's optimize leaves
the process on), with a bounded cache whose size is sampled while reading.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lightning_tsf.data import storage, stream_input
from lightning_tsf.data.storage import StorageError

litdata = pytest.importorskip("litdata")
pytest.importorskip("moto")

from s3server import (  # noqa: E402
    S3Server,
    free_port,
    require_credentials,
    s3_bucket_fixture,  # noqa: F401
)

SAMPLE_BYTES = 20_000
CHUNK_BYTES = 200_000  # 9 samples (~180 KB) per chunk


def make_sample(index: int) -> dict:
    """A dict sample like a shard's: encoded bytes, a label, a name."""
    import numpy as np

    return {
        "video": np.random.default_rng(index).bytes(SAMPLE_BYTES),
        "label": index,
        "name": f"video_{index:04d}.mp4",
    }


def collate_copy(batch: list[dict]) -> list[tuple[int, str, bytes]]:
    """Copy litdata's zero-copy memoryviews inside the worker (they cannot cross the queue)."""
    return [(int(s["label"]), str(s["name"]), bytes(s["video"])) for s in batch]


@pytest.fixture(autouse=True)
def optimizer_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """litdata.optimize's staging folders under the test's tmp_path, not /tmp/chunks."""
    monkeypatch.setenv("DATA_OPTIMIZER_CACHE_FOLDER", str(tmp_path / "optimizer" / "chunks"))
    monkeypatch.setenv("DATA_OPTIMIZER_DATA_CACHE_FOLDER", str(tmp_path / "optimizer" / "data"))


@pytest.fixture
def clean_obstore_options(monkeypatch: pytest.MonkeyPatch) -> dict:
    """litdata's obstore client options as shipped (no allow_http), restored after the test."""
    from litdata.streaming import downloader

    fresh = {k: v for k, v in downloader._OBSTORE_CLIENT_OPTIONS.items() if k != "allow_http"}
    monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", fresh)
    return fresh


def optimize(url: str, count: int, options: dict | None = None) -> None:
    """Write ``count`` samples to ``url`` through storage.output_dir, keeping the start method."""
    with storage.keep_start_method():
        litdata.optimize(
            fn=make_sample,
            inputs=list(range(count)),
            chunk_bytes=CHUNK_BYTES,
            num_workers=1,
            verbose=False,
            **storage.output_dir(url, options),
        )


def tree_bytes(root: Path) -> int:
    """Bytes of all files below ``root``, tolerating files deleted while walking."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except FileNotFoundError:
                pass
    return total


class PeakSize:
    """Samples a folder's size from a background thread; ``peak`` is the largest seen."""

    def __init__(self, root: Path, every_s: float = 0.002) -> None:
        self.root, self.every_s, self.peak, self.samples = root, every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_bytes(self.root))
            self.samples += 1
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSize:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.peak = max(self.peak, tree_bytes(self.root))


def loader(url: str, cache: Path, max_cache_size: int | None, workers: int = 2, batch: int = 5):
    """StreamingDataset + StreamingDataLoader over ``url`` as the DataModule would build them."""
    options = storage.storage_options(url)
    dataset = litdata.StreamingDataset(
        **stream_input.input_dir(url, options, cache_dir=cache, max_cache_size=max_cache_size)
    )
    return litdata.StreamingDataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_copy,
        multiprocessing_context="spawn" if workers else None,
        worker_init_fn=stream_input.worker_init(options) if workers else None,
    )


# --- no server ------------------------------------------------------------------------------


def test_is_remote() -> None:
    assert storage.is_remote("s3://bucket/prefix")
    assert storage.is_remote("gs://bucket/x") and storage.is_remote("azure://c/x")
    assert not storage.is_remote("/data/shards") and not storage.is_remote(Path("rel/shards"))
    assert not storage.is_remote("file:///data/shards")


def test_storage_options_from_env_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "secret-id")
    assert storage.storage_options("s3://b/p") == {}  # keys are left to boto3's chain
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage.storage_options("s3://b/p") == {
        "endpoint_url": "http://general:9000",
        "region_name": "eu-west-1",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")  # AWS's rule: S3's wins
    assert storage.storage_options("s3://b/p")["endpoint_url"] == "http://s3-only:9000"
    given = {"endpoint_url": "https://minio.lan", "aws_access_key_id": "k"}
    assert storage.storage_options("s3://b/p", given)["endpoint_url"] == "https://minio.lan"
    assert storage.storage_options("/local/path", given) == {}
    assert storage.storage_options("gs://b/p", {"project": "x"}) == {"project": "x"}
    with pytest.raises(StorageError, match="unknown key.*endpoint.*use boto3's names"):
        storage.storage_options("s3://b/p", {"endpoint": "http://x"})


def test_allow_plain_http_is_idempotent(clean_obstore_options: dict) -> None:
    assert not storage.allow_plain_http(None)
    assert not storage.allow_plain_http("https://s3.amazonaws.com")
    assert "allow_http" not in clean_obstore_options
    assert storage.allow_plain_http("http://127.0.0.1:9000")
    assert storage.allow_plain_http("http://127.0.0.1:9000")
    assert clean_obstore_options["allow_http"] == "true"
    assert clean_obstore_options["timeout"] == "200s"  # litdata's own options kept


def test_local_dirs(tmp_path: Path) -> None:
    out = storage.output_dir(tmp_path / "shards")
    assert out == {"output_dir": str(tmp_path / "shards"), "storage_options": {}}
    with pytest.raises(StorageError, match="no index.json.*tsf shard"):
        stream_input.input_dir(tmp_path / "shards")
    optimize(str(tmp_path / "shards"), 20)
    kwargs = stream_input.input_dir(tmp_path / "shards", cache_dir=tmp_path / "unused")
    assert kwargs == {"input_dir": str(tmp_path / "shards")}
    assert sorted(s["label"] for s in litdata.StreamingDataset(**kwargs)) == list(range(20))


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTNING_TSF_CACHE", str(tmp_path))
    assert storage.default_cache_dir() == tmp_path / "streams"
    monkeypatch.delenv("LIGHTNING_TSF_CACHE")
    assert storage.default_cache_dir() == Path.home() / ".cache" / "lightning_tsf" / "streams"


def test_keep_start_method(tmp_path: Path) -> None:
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    optimize(str(tmp_path / "s"), 5)  # litdata's optimize sets "spawn" process-wide
    assert multiprocessing.get_start_method(allow_none=True) == before


# --- against the loopback S3 server ---------------------------------------------------------


@pytest.mark.slow
def test_plain_http_endpoint_fails_without_fix_and_works_with_it(
    s3_bucket: S3Server, clean_obstore_options: dict
) -> None:
    url = s3_bucket.url("without")
    with pytest.raises(Exception, match="builder error"), storage.keep_start_method():
        litdata.optimize(  # storage.output_dir left out: no allow_plain_http
            fn=make_sample,
            inputs=list(range(12)),
            chunk_bytes=CHUNK_BYTES,
            num_workers=1,
            verbose=False,
            output_dir=url,
            storage_options=storage.storage_options(url),
        )
    optimize(s3_bucket.url("with"), 12)
    listing = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket)
    keys = [o["Key"] for o in listing["Contents"]]
    assert "with/index.json" in keys and sum(k.startswith("with/chunk-") for k in keys) >= 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stream_from_s3_reads_every_sample_once_within_cache_bound(
    s3_bucket: S3Server, tmp_path: Path
) -> None:
    url = s3_bucket.url("train")
    count = 300
    optimize(url, count)
    storage.check_remote(url, storage.storage_options(url), index=True)
    chunk_sizes = [
        o["Size"]
        for o in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket, Prefix="train/chunk-")[
            "Contents"
        ]
    ]
    assert len(chunk_sizes) >= 20, chunk_sizes
    bound = 4 * max(chunk_sizes)
    cache = tmp_path / "cache"
    seen: dict[int, bytes] = {}
    with PeakSize(cache) as size:
        for batch in loader(url, cache, max_cache_size=bound):
            for label, name, data in batch:
                assert label not in seen, f"sample {label} read twice"
                assert name == f"video_{label:04d}.mp4"
                seen[label] = data
    assert sorted(seen) == list(range(count))
    assert all(seen[i] == make_sample(i)["video"] for i in (0, 7, 150, 299))
    # litdata evicts whole chunks once the cache is over max_cache_size, while its workers
    # download ahead: tolerate one chunk per worker over the bound.
    tolerance = 2 * max(chunk_sizes)
    print(
        f"\ncache peak {size.peak} B, bound {bound} B (+{tolerance} B tolerance), "
        f"{len(chunk_sizes)} chunks of <= {max(chunk_sizes)} B, {size.samples} samples"
    )
    assert size.samples > 10
    assert size.peak <= bound + tolerance, (size.peak, bound)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_state_dict_mid_epoch_resumes_to_exact_remaining_samples(
    s3_bucket: S3Server, tmp_path: Path
) -> None:
    url = s3_bucket.url("resume")
    count = 90
    optimize(url, count)
    first = loader(url, tmp_path / "cache", max_cache_size=None)
    taken: list[int] = []
    for step, batch in enumerate(first):
        taken += [label for label, _, _ in batch]
        if step == 6:
            state = first.state_dict()
            break
    del first
    # litdata's state records the cache folder (input_dir.path) and refuses another one: a
    # resumed run must use the same cache_dir (LIGHTNING_TSF_CACHE) as the interrupted one.
    second = loader(url, tmp_path / "cache", max_cache_size=None)
    second.load_state_dict(state)
    rest = [label for batch in second for label, _, _ in batch]
    assert len(taken) == 35
    assert sorted(taken + rest) == list(range(count)), (taken, rest)


def test_check_remote_missing_bucket(s3_bucket: S3Server) -> None:
    url = "s3://no-such-bucket/shards"
    with pytest.raises(StorageError) as err:
        storage.check_remote(url, storage.storage_options(url))
    message = str(err.value)
    assert "\n" not in message
    assert "s3://no-such-bucket/shards" in message and s3_bucket.endpoint in message
    assert "bucket 'no-such-bucket' does not exist; create it or fix the URL" in message


def test_check_remote_prefix_without_index(s3_bucket: S3Server) -> None:
    url = s3_bucket.url("empty")
    storage.check_remote(url, storage.storage_options(url))  # writing there is fine
    with pytest.raises(StorageError, match=r"no index.json under this prefix.*tsf shard"):
        storage.check_remote(url, storage.storage_options(url), index=True)


def test_check_remote_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    url = "s3://bucket/shards"
    with pytest.raises(StorageError, match="cannot connect to the endpoint; check AWS_ENDPOINT"):
        storage.check_remote(url, {"endpoint_url": endpoint, "region_name": "us-east-1"})


def test_check_remote_rejected_credentials(
    s3_bucket: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, secret = require_credentials(s3_bucket)
    url = s3_bucket.url("shards")
    good = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    storage.check_remote(url, storage.storage_options(url, good))
    with pytest.raises(StorageError) as err:  # the fixture's dummy keys from the environment
        storage.check_remote(url, storage.storage_options(url))
    message = str(err.value)
    assert "\n" not in message
    assert f"access to bucket '{s3_bucket.bucket}' denied (InvalidAccessKeyId)" in message
    assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in message
