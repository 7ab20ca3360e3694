"""Reading the same shards from a local folder and from an S3-API server on loopback.

Writes ``--samples`` dict samples (``--sample-kb`` random bytes, a label, a name) once with
``litdata.optimize`` to a local folder and to ``s3://bench/shards`` on moto's S3 server (run as
a separate process on 127.0.0.1), then times whole epochs through ``StreamingDataset`` (in the
main process, no workers, so only the storage path differs), interleaved over ``--rounds``:

- local: chunks read in place;
- S3 cold: an empty cache, every chunk downloaded;
- S3 warm: the second epoch over the same cache (a bound holding every chunk).

Prints medians (s per epoch, MB/s) and the ratios to local. Loopback S3 has no network latency
or bandwidth limit: it shows litdata's overhead, not a real bucket's. Needs litdata and
moto[server]. Run: ``python benchmarks/bench_storage.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_tsf.data import storage, stream_input


def make_sample(index: int, size: int) -> dict:
    import numpy as np

    return {
        "video": np.random.default_rng(index).bytes(size),
        "label": index,
        "name": f"v{index}",
    }


class _Sample:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, index: int) -> dict:
        return make_sample(index, self.size)


def epoch_seconds(kwargs: dict) -> tuple[float, float, int]:
    """One pass over a new StreamingDataset: (seconds to open it, seconds to read it, samples).

    Opening reads index.json (for S3: a boto3 client and GETs, every time, to notice a
    re-sharded prefix); reading is the chunks."""
    import litdata

    start = time.perf_counter()
    dataset = litdata.StreamingDataset(**kwargs)
    opened = time.perf_counter()
    count = 0
    for sample in dataset:
        bytes(sample["video"])
        count += 1
    return opened - start, time.perf_counter() - opened, count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--sample-kb", type=int, default=100)
    parser.add_argument("--chunk-mb", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import boto3
    import litdata
    import requests

    work = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_ENDPOINT_URL=endpoint,
            AWS_DEFAULT_REGION="us-east-1",
            DATA_OPTIMIZER_CACHE_FOLDER=str(work / "optimizer" / "chunks"),
            DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(work / "optimizer" / "data"),
        )
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        local, remote = str(work / "local"), "s3://bench/shards"
        fn = _Sample(args.sample_kb * 1000)
        for out in (local, remote):
            with storage.keep_start_method():
                litdata.optimize(
                    fn=fn,
                    inputs=list(range(args.samples)),
                    chunk_bytes=int(args.chunk_mb * 1e6),
                    num_workers=1,
                    verbose=False,
                    **storage.output_dir(out),
                )
        options = storage.storage_options(remote)
        storage.check_remote(remote, options, index=True)
        total_mb = args.samples * args.sample_kb / 1000
        times: dict[str, list[tuple[float, float]]] = {"local": [], "S3 cold": [], "S3 warm": []}
        for round_ in range(args.rounds):
            cache = work / f"cache{round_}"
            remote_kwargs = stream_input.input_dir(remote, options, cache, max_cache_size="10GB")
            for name, kwargs in (
                ("local", stream_input.input_dir(local)),
                ("S3 cold", remote_kwargs),
                ("S3 warm", remote_kwargs),
            ):
                opening, reading, count = epoch_seconds(kwargs)
                assert count == args.samples, (name, count)
                times[name].append((opening, reading))
            shutil.rmtree(cache, ignore_errors=True)
        print(
            f"{args.samples} samples x {args.sample_kb} KB ({total_mb:.0f} MB) in "
            f"{args.chunk_mb:g} MB chunks, {args.rounds} rounds, medians:"
        )
        base = statistics.median(r for _, r in times["local"])
        for name, values in times.items():
            opening = statistics.median(o for o, _ in values)
            reading = statistics.median(r for _, r in values)
            print(
                f"  {name:8s} open {opening:6.3f} s, read {reading:7.3f} s "
                f"({total_mb / reading:7.1f} MB/s, {reading / base:6.2f}x local)"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    main()
