"""Shards against prepared files: training clips/s per core, time to the first batch over a
100k-video index, data-file opens per epoch, and shards streamed from a loopback S3 server.

1. The training loader (``VideoDataModule(...).train_dataloader()``: one process,
   ``num_workers=0``, one torch thread) over the same prepared videos as ``tsf prepare``
   files (``data_root=<prepared folder>``), as ``tsf shard`` chunks (``data_root=<shard
   folder>``) and as those chunks on moto's S3 server on 127.0.0.1 (``data_root=s3://...``,
   after a first, discarded, cold epoch). Each DataModule and loader is built once (as in
   ``tsf fit``; their setup time is printed) and whole epochs are timed. K400-like settings:
   8 frames, dense rate 32, scale jitter 256-320, crop 224, flip, from ``--videos``
   camera-like 320x256 clips of ``--seconds`` s at 30 fps (``bench_data.content_frames``).
   Epochs interleaved round-robin over ``--rounds``, medians. Files and shards draw the same
   clips (the same per-video seeds).
2. Time to the first batch over a 100k-video training split (``--index-videos``; one tiny
   video's bytes in every sample or file, so opening and listing are what is measured): a
   fresh process (imports done before the clock starts) builds ``VideoDataModule``, its train
   loader and takes one batch of 8; for shards (chunks written with LitData's ``BinaryWriter``,
   the schema ``tsf shard`` writes), for the same files listed by a Kinetics CSV, and for the
   same files found by listing a ``format="folder"`` tree (100 class folders). Warm page cache.
3. Opens of data files during one training epoch of part 1's data: the epoch (DataModule
   construction included) runs in a child process under ``strace -f -e trace=openat,fadvise64``;
   counted are successful opens of paths under the data folder (chunk ``.bin`` files, videos),
   set against the number of chunks and videos; opens whose descriptor only goes to
   ``posix_fadvise`` (LitData's read-ahead hints, no data read through them) are shown apart.

Part 4 of issue 20 (raw chunk bytes, local vs loopback S3) is ``bench_storage.py``.
Needs litdata, moto[server], strace (part 3 is skipped without it).
Run: ``python benchmarks/bench_shards.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import content_frames, cpu_name, write  # noqa: E402

from lightning_tsf.data.encode import VideoWriter  # noqa: E402
from lightning_tsf.data.prepare import Encoding, prepare_dataset  # noqa: E402

TRAIN = dict(num_frames=8, sampling_rate=32, crop_size=224, train_scale=(256, 320))
TINY = dict(num_frames=4, sampling_rate=1, crop_size=32, train_scale=(32, 36))


def module(root: str, settings: dict, **kwargs):
    """A DataModule with options by name, put in their groups by the DataModule's table."""
    from lightning_tsf.data.datamodule import VideoDataModule
    from lightning_tsf.data.options import upgrade

    grouped, _ = upgrade({"data_root": root, "batch_size": kwargs.pop("batch_size", 4),
                          "num_workers": 0, "pin_memory": False, "seed": 0, **settings,
                          **kwargs})  # fmt: skip
    return VideoDataModule(**grouped)


def run_epoch(dm) -> int:
    clips = 0
    for batch in dm.train_dataloader():
        clips += int(batch["video"].shape[0])
    return clips


# ---------------------------------------------------------------------------- data


def make_real(root: Path, videos: int, seconds: int) -> tuple[Path, Path]:
    """``videos`` 320x256 clips (x264 crf 23), prepared at short side 256, and shards of them."""
    from lightning_tsf.data.shards import write_shards

    src = root / "src"
    lines = []
    for i in range(videos):
        rel = f"videos/{i:03d}.mp4"
        write(src / rel, content_frames(seconds, 30, 320, 256, seed=i), 320, 256)
        lines.append(f"{rel} {i % 4}\n")
    (src / "train.csv").write_text("".join(lines))
    (src / "val.csv").write_text("".join(lines[:4]))
    (src / "classnames.txt").write_text("".join(f"c{k}\n" for k in range(4)))
    prepared = root / "prepared"
    report = prepare_dataset(src, prepared, 256, num_workers=2, progress=False)
    assert not report.failed, report.failed
    shards = root / "shards"
    write_shards(prepared, shards, short_side=256, chunk_bytes="4MB", num_workers=2,
                 progress=False, only={"train"})  # fmt: skip
    return prepared, shards


def tiny_video(path: Path) -> bytes:
    """8 frames of 32x32 in the prepared encoding (a moving gradient: about 1 KB)."""
    enc = Encoding()
    yy, xx = np.mgrid[0:32, 0:32]
    with VideoWriter(path, 32, 32, 8, options=enc.options(), metadata=enc.metadata()) as w:
        for t in range(8):
            img = np.stack([(xx * 8 + t * 4) % 256, yy * 8, (xx + yy) * 4 % 256], -1)
            w.write(img.astype(np.uint8))
    return path.read_bytes()


def make_index(root: Path, count: int) -> tuple[Path, Path]:
    """``count`` copies of one tiny video: files in ``files/train/c??/`` (a Kinetics CSV lists
    them; the tree also reads as ``format="folder"``) and samples in LitData chunks."""
    from litdata.streaming.writer import BinaryWriter

    from lightning_tsf.data.shards import SHARD_VERSION

    data = tiny_video(root / "tiny.mp4")
    files, shards = root / "files", root / "shards"
    classes = [f"c{k:02d}" for k in range(100)]
    rows = {"train": [], "val": []}
    for split, n in (("train", count), ("val", 100)):
        for c in classes:
            (files / split / c).mkdir(parents=True)
        for i in range(n):
            rel = f"{split}/{classes[i % 100]}/{i:06d}.mp4"
            (files / rel).write_bytes(data)
            rows[split].append((i, rel, i % 100))
        (files / f"{split}.csv").write_text("".join(f"{r} {label}\n"
                                                    for _, r, label in rows[split]))  # fmt: skip
    (files / "classnames.txt").write_text("".join(c + "\n" for c in classes))
    splits = {}
    for split, items in rows.items():
        writer = BinaryWriter(str(shards / split), chunk_bytes="64MB")
        for i, rel, label in items:
            writer[i] = {"index": i, "id": rel, "label": label, "fps": 8.0, "frames": 8,
                         "video": data}  # fmt: skip
        writer.done()
        writer.merge()
        splits[split] = {"videos": len(items), "records": len(items), "failed": 0}
    meta = {"version": SHARD_VERSION, "format": "kinetics", "class_names": classes,
            "splits": splits, "short_side": 32, "keyint": Encoding().keyint}  # fmt: skip
    (shards / "shards.json").write_text(json.dumps(meta))
    return files, shards


# ---------------------------------------------------------------------------- children


def child_first_batch(kind: str, root: str) -> None:
    """Print seconds from DataModule construction to the first batch (imports excluded)."""
    import litdata  # noqa: F401

    import lightning_tsf.data.datamodule  # noqa: F401
    import lightning_tsf.data.streaming  # noqa: F401

    torch.set_num_threads(1)
    extra = {"format": "folder"} if kind == "folder" else {}
    start = time.perf_counter()
    dm = module(root, TINY, batch_size=8, backend="pyav", **extra)
    batch = next(iter(dm.train_dataloader()))
    seconds = time.perf_counter() - start
    assert batch["video"].shape[0] == 8 and bool(batch["valid"].all()), batch["error"]
    print(json.dumps({"seconds": seconds, "videos": dm.num_videos("train")}))


def child_epoch(root: str) -> None:
    torch.set_num_threads(1)
    print(json.dumps({"clips": run_epoch(module(root, TRAIN))}))


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def strace_opens(root: Path) -> dict | None:
    """Successful opens of files under ``root`` while one training epoch over it runs; opens
    whose descriptor is only given to ``posix_fadvise`` (LitData's read-ahead hints) apart."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".strace") as log:
        cmd = ["strace", "-f", "-qq", "-e", "trace=openat,fadvise64", "-o", log.name,
               sys.executable, __file__, "--child", "epoch", str(root)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        lines = Path(log.name).read_text().splitlines()
    prefix = str(root.resolve())
    opened: dict[tuple[str, int], str] = {}  # (pid, fd) -> path, until a hint is seen
    paths: list[str] = []
    hints = 0
    for line in lines:
        pid = line.split()[0]
        m = re.search(r'openat\([^,]+, "([^"]+)".*\)\s+=\s+(-?\d+)', line)
        if m and int(m.group(2)) >= 0:
            real = os.path.realpath(m.group(1))
            if real.startswith(prefix):
                paths.append(os.path.relpath(real, prefix))
                opened[(pid, int(m.group(2)))] = paths[-1]
            continue
        m = re.search(r"fadvise64\((\d+),", line)
        if m and opened.pop((pid, int(m.group(1))), None):
            hints += 1
    return {"clips": json.loads(out.strip().splitlines()[-1])["clips"],
            "bin": sum(p.endswith(".bin") for p in paths), "hints": hints,
            "video": sum(p.endswith(".mp4") for p in paths),
            "other": sorted({p for p in paths if not p.endswith((".bin", ".mp4"))})}  # fmt: skip


# ---------------------------------------------------------------------------- S3


class LoopbackS3:
    """moto's S3 server on 127.0.0.1 with bucket ``bench`` (``with LoopbackS3() as s3``)."""

    def __enter__(self) -> LoopbackS3:
        import boto3
        import requests

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                        "-p", str(port)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(100):
            try:
                requests.get(self.endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
        self.client = boto3.client("s3", endpoint_url=self.endpoint)
        self.client.create_bucket(Bucket="bench")
        return self

    def upload(self, folder: Path, prefix: str) -> str:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = f"{prefix}/{path.relative_to(folder)}"
                self.client.upload_file(str(path), "bench", key)
        return f"s3://bench/{prefix}"

    def __exit__(self, *exc) -> None:
        self.server.terminate()
        self.server.wait(timeout=10)


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--index-videos", type=int, default=100_000)
    parser.add_argument("--index-rounds", type=int, default=3)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        child_epoch(*rest) if kind == "epoch" else child_first_batch(kind, *rest)
        return
    torch.set_num_threads(1)
    import lightning_tsf.data.datamodule  # noqa: F401  (imports are not timed)
    import lightning_tsf.data.streaming  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    try:
        start = time.perf_counter()
        prepared, shards = make_real(work / "real", args.videos, args.seconds)
        made = time.perf_counter() - start
        chunks = len(list((shards / "train").glob("*.bin")))
        size = sum(p.stat().st_size for p in (prepared / "videos").glob("*.mp4"))

        # 1. training clips/s per core: each DataModule and loader built once (as Lightning
        # does), whole epochs interleaved round-robin (round -1: warm-up, the S3 cold epoch)
        with LoopbackS3() as s3:
            url = s3.upload(shards, "shards")
            remote = {"storage_options": {"endpoint_url": s3.endpoint},
                      "cache_dir": str(work / "s3cache"), "max_cache_size": "10GB"}  # fmt: skip
            methods = {"prepared files": (str(prepared), {}), "shards, local": (str(shards), {}),
                       "shards, loopback S3": (url, remote)}  # fmt: skip
            loaders, setup = {}, {}
            for name, (root, extra) in methods.items():
                t0 = time.perf_counter()
                loaders[name] = module(root, TRAIN, **extra).train_dataloader()
                setup[name] = time.perf_counter() - t0
            rates: dict[str, list[float]] = {name: [] for name in methods}
            cold = 0.0
            for r in range(-1, args.rounds):
                order = list(methods) if r % 2 else list(reversed(methods))
                for name in order:
                    t0 = time.perf_counter()
                    clips = sum(int(batch["video"].shape[0]) for batch in loaders[name])
                    seconds = time.perf_counter() - t0
                    if r >= 0:
                        rates[name].append(clips / seconds)
                    elif name == "shards, loopback S3":
                        cold = clips / seconds
            del loaders
        per_core = {name: statistics.median(v) for name, v in rates.items()}

        # 3. data-file opens per epoch (before part 2 fills the page cache with 100k files)
        opens = {"prepared files": strace_opens(prepared), "shards, local": strace_opens(shards)}

        # 2. time to the first batch over a 100k-video index
        files, index = make_index(work / "index", args.index_videos)
        index_chunks = len(list((index / "train").glob("*.bin")))
        first: dict[str, list[float]] = {"shards (index)": [], "files, Kinetics CSV": [],
                                         "files, folder listing": []}  # fmt: skip
        roots = {"shards (index)": ("shards", index), "files, Kinetics CSV": ("csv", files),
                 "files, folder listing": ("folder", files)}  # fmt: skip
        for _ in range(args.index_rounds):
            for name, (kind, root) in roots.items():
                result = child(kind, str(root))
                assert result["videos"] == args.index_videos, result
                first[name].append(result["seconds"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {load[0]:.2f} / "
          f"{load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the end, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")  # fmt: skip
    print(f"data: {args.videos} videos of {args.seconds} s at 30 fps, 320x256, prepared "
          f"(short side 256, keyint 5): {size / 2**20:.1f} MB; shards: {chunks} chunks of <= 4 MB "
          f"(made in {made:.0f} s)\n")  # fmt: skip
    base = per_core["prepared files"]
    print(
        f"1. training loader, one process, no workers, 1 torch thread, 8x32 dense, crop 224; "
        f"{args.rounds} rounds of whole epochs ({args.videos} clips), medians"
    )
    print("| source | clips / s / core | vs prepared files | DataModule + loader setup, s |")
    print("|---|---:|---:|---:|")
    for name, rate in per_core.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.3f}x | {setup[name]:.2f} |")
    print(f"(loopback S3, first epoch, cold cache: {cold:.2f} clips/s)")
    print(
        f"\n2. time to the first batch (8 clips), {args.index_videos} videos, fresh process, "
        f"imports excluded, {args.index_rounds} rounds, medians; shards: {index_chunks} chunks"
    )
    print("| source | s to first batch |\n|---|---:|")
    for name, values in first.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    print("\n3. data-file opens in one training epoch (strace -f -e trace=openat,fadvise64)")
    print(
        "| source | clips | chunks / videos | chunk .bin opens (of them fadvise hints) | "
        "video opens | other data-folder files |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, o in opens.items():
        if o is None:
            print(f"| {name} | (strace not found) |")
            continue
        count = f"{chunks} chunks" if "shards" in name else f"{args.videos} videos"
        print(f"| {name} | {o['clips']} | {count} | {o['bin']} ({o['hints']}) | {o['video']} | "
              f"{', '.join(o['other']) or '-'} |")  # fmt: skip
    s3 = per_core["shards, loopback S3"] / per_core["shards, local"]
    print(f"\ngoals: shards >= 0.95x prepared files: "
          f"{per_core['shards, local'] / base:.3f}x; first batch of the index <= 2 s: "
          f"{statistics.median(first['shards (index)']):.2f} s; loopback S3 >= 0.9x local "
          f"shards after the first epoch: {s3:.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
