"""What the Lightning path costs per training step: ``Trainer.fit`` against a bare loop.

    python benchmarks/bench_overhead.py                    # CPU: the demo-sized model, batch 16
    python benchmarks/bench_overhead.py --gpu --rounds 3 --steps 10 --warmup 3 --budget-s 90
                                                           # CUDA: ViT-B divided 8x224 bf16, b8
    python benchmarks/bench_overhead.py --tiny --rounds 2  # seconds (what the test runs)

The same ``VideoClassifier`` and the same in-memory uint8 batches go through two loops, in
interleaved rounds (bare, Lightning, Lightning, bare, ...):

* bare: transfer, normalise on the device, forward + cross-entropy under autocast (bf16 on
  CUDA), backward, gradient clipping (1.0, as the demo config), optimizer and scheduler step,
  ``zero_grad(set_to_none=True)``, with the optimizer and schedule ``VideoClassifier`` builds;
* Lightning: ``Trainer.fit`` of the module as ``tsf fit`` builds it: CSV logger every 10
  steps, the progress bar ``tsf fit`` uses, gradient clipping 1.0, ``bf16-mixed`` on CUDA.

Each round times ``--steps`` whole iterations after ``--warmup`` (device synchronised only at
both ends: the launch queue runs as in training). On CPU the clock is the process's CPU time
by default (``--clock cpu``: the work done, which other jobs on a shared machine do not
inflate the way they inflate wall time; ``--threads 1`` keeps it one core's), on CUDA wall
time. The table gives each loop's median ms/step
over the rounds, and the median over the rounds of the ratio bare / Lightning of the two
loops run back to back (1.0: Lightning costs nothing; pairing the rounds keeps a machine whose
load drifts from tilting the ratio). Cases
(``--cases``): eager with torch's default AdamW (``foreach``) and with the fused one; compiled
(``compile: true``), with CUDA graphs (``reduce-overhead``), with autotuned kernels
(``max-autotune-no-cudagraphs``), all with the fused AdamW on CUDA. A case that would start
after ``--budget-s`` is skipped (GPU plan: eager, compiled, CUDA graphs, eager with the
foreach AdamW, autotuning last; a compiled case costs its compilation, about a minute). Writes
``results.json`` and ``table.md`` under ``--out`` after every case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.strategies import SingleDeviceStrategy

from lightning_tsf.data.transforms import normalize_video
from lightning_tsf.models import TimeSformer
from lightning_tsf.train.callbacks import host_values_bar
from lightning_tsf.train.module import VideoClassifier
from lightning_tsf.train.optim import build_optimizer, build_scheduler
from lightning_tsf.train.quiet import quiet_libraries

# model sizes and batch: the demo's (lightning_tsf/configs/demo_synthetic.yaml), ViT-B, tiny
SIZES = {
    "demo": dict(img_size=32, patch_size=8, num_frames=4, embed_dim=64, depth=3, num_heads=4,
                 num_classes=4, batch=16),
    "vit-b": dict(img_size=224, patch_size=16, num_frames=8, embed_dim=768, depth=12,
                  num_heads=12, num_classes=400, batch=8),
    "tiny": dict(img_size=32, patch_size=8, num_frames=2, embed_dim=16, depth=1, num_heads=2,
                 num_classes=4, batch=2),
}  # fmt: skip
# case: (compile mode or None, AdamW implementation: None = build_optimizer's default, fused
# on CUDA, torch's foreach on CPU); on CUDA in this order (the budget cuts the tail)
CASES = {
    "eager": (None, None),
    "eager foreach": (None, False),
    "eager fused": (None, True),
    "compiled": ("default", None),
    "reduce-overhead": ("reduce-overhead", None),
    "max-autotune-no-cudagraphs": ("max-autotune-no-cudagraphs", None),
}
# the goal rows first, then CUDA graphs, the AdamW comparison, the autotuning (slowest to build)
GPU_CASES = ("eager", "compiled", "reduce-overhead", "eager foreach",
             "max-autotune-no-cudagraphs")  # fmt: skip
CPU_CASES = ("eager", "eager fused")
RECIPE = dict(optimizer="adamw", lr=2e-3, momentum=0.9, weight_decay=0.05,
              exclude_from_decay=True, scheduler="cosine", warmup_epochs=1.0)  # fmt: skip
LOG_EVERY, CLIP = 10, 1.0


class Batches:
    """The same batches every epoch (an iterable with a length, as Lightning wants)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_batches(size: dict, count: int, pin: bool) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    shape = (size["batch"], 3, size["num_frames"], size["img_size"], size["img_size"])
    batches = []
    for _ in range(count):
        video = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        label = torch.randint(0, size["num_classes"], (size["batch"],), generator=g)
        batch = {"video": video, "label": label}
        batches.append({k: v.pin_memory() for k, v in batch.items()} if pin else batch)
    return batches


def make_module(size: dict, mode: str | None) -> VideoClassifier:
    torch.manual_seed(0)
    net = TimeSformer(**{k: v for k, v in size.items() if k != "batch"})
    module = VideoClassifier(net, compile=mode or False, **RECIPE)
    module.configure_model()  # compiled once here; Lightning's call is then a no-op
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def bare_round(module: VideoClassifier, batches: list, device: torch.device, fused: bool | None,
               warmup: int, steps: int, clock: Callable[[], float]) -> float:  # fmt: skip
    """Seconds per step of the bare loop, ``steps`` iterations after ``warmup``."""
    module.to(device).train()
    hp = module.hparams
    optimizer = build_optimizer(module.net, hp.optimizer, lr=hp.lr, momentum=hp.momentum,
                                weight_decay=hp.weight_decay, fused=fused,
                                exclude_from_decay=hp.exclude_from_decay)  # fmt: skip
    scheduler = build_scheduler(optimizer, hp.scheduler, steps_per_epoch=len(batches), epochs=1,
                                warmup_epochs=hp.warmup_epochs)  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else None
    mean, std = hp.mean, hp.std
    start = 0.0
    for i, batch in enumerate(batches[: warmup + steps]):
        if i == warmup:
            sync(device)
            start = clock()
        video = normalize_video(batch["video"].to(device, non_blocking=True), mean, std)
        label = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(module(video), label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return (clock() - start) / steps


class StepTimer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the start of step ``warmup + steps``
    (whole iterations: the loop's work after each step included)."""

    def __init__(self, device: torch.device, warmup: int, steps: int,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.device, self.warmup, self.steps, self.clock = device, warmup, steps, clock
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx in (self.warmup, self.warmup + self.steps):
            sync(self.device)
            now = self.clock()
            self.start, self.end = (now, 0.0) if batch_idx == self.warmup else (self.start, now)


class KeepOnDevice(SingleDeviceStrategy):
    """Lightning's single-device strategy, less its move of the model to the CPU at teardown
    (outside the timed steps): the next round's compiled graphs and CUDA graphs find the
    parameters where they were, as in one long training run."""

    def teardown(self) -> None:
        self.precision_plugin.teardown()
        self.accelerator.teardown()
        self.checkpoint_io.teardown()


def lightning_round(module: VideoClassifier, batches: list, device: torch.device,
                    warmup: int, steps: int, logs: str,
                    clock: Callable[[], float]) -> float:  # fmt: skip
    """Seconds per step of ``Trainer.fit`` over the same batches."""
    timer = StepTimer(device, warmup, steps, clock)
    cuda = device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1,
        strategy=KeepOnDevice(torch.device("cuda", device.index or 0) if cuda else device),
        precision="bf16-mixed" if cuda else "32-true",
        max_steps=warmup + steps + 1, gradient_clip_val=CLIP, log_every_n_steps=LOG_EVERY,
        logger=CSVLogger(logs), callbacks=[timer, host_values_bar()],
        enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, Batches(batches[: warmup + steps + 1]))
    return (timer.end - timer.start) / steps


def with_adamw(module: VideoClassifier, fused: bool) -> None:
    """The module's ``configure_optimizers`` with its AdamW forced to ``fused`` or not (the
    cases that compare the two; the others run the module's own, unchanged)."""
    own = module.configure_optimizers

    def configure_optimizers() -> Any:
        config = own()
        groups = [{**g, "fused": fused or None, "foreach": None}
                  for g in config["optimizer"].param_groups]  # fmt: skip
        forced = torch.optim.AdamW(groups, fused=fused or None)
        schedule = config["lr_scheduler"]["scheduler"].lr_lambdas[0]
        scheduler = torch.optim.lr_scheduler.LambdaLR(forced, schedule)
        return {"optimizer": forced, "lr_scheduler": {**config["lr_scheduler"],
                                                      "scheduler": scheduler}}  # fmt: skip

    module.configure_optimizers = configure_optimizers  # type: ignore[method-assign]


def run_case(name: str, size: dict, device: torch.device, args: argparse.Namespace) -> dict:
    """Interleaved rounds of both loops for one case; medians and their ratio."""
    import torch._dynamo.utils as dynamo_utils

    mode, fused = CASES[name]
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    module = make_module(size, mode)
    if fused is not None:
        with_adamw(module, fused)
    batches = make_batches(size, args.warmup + args.steps + 1, pin=device.type == "cuda")
    bare, lit = [], []
    with tempfile.TemporaryDirectory() as logs:
        for r in range(args.rounds):
            order = ("bare", "lightning") if r % 2 == 0 else ("lightning", "bare")
            for which in order:
                if which == "bare":
                    bare.append(bare_round(module, batches, device, fused, args.warmup,
                                           args.steps, CLOCKS[args.clock]))  # fmt: skip
                else:
                    lit.append(lightning_round(module, batches, device, args.warmup,
                                               args.steps, logs, CLOCKS[args.clock]))  # fmt: skip
    bare_ms, lit_ms = 1000 * statistics.median(bare), 1000 * statistics.median(lit)
    paired = statistics.median(b / t for b, t in zip(bare, lit))
    auto = device.type == "cuda"
    return {"case": name, "compile": mode, "fused_adamw": auto if fused is None else fused,
            "graphs": dynamo_utils.counters["stats"]["unique_graphs"] - graphs,
            "bare_ms": bare_ms,
            "lightning_ms": lit_ms, "ratio": paired, "ratio_of_medians": bare_ms / lit_ms,
            "bare_rounds_ms": [1000 * t for t in bare],
            "lightning_rounds_ms": [1000 * t for t in lit]}  # fmt: skip


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    lines = [f"{result['device']}, torch {result['torch']}, {result['model']} batch "
             f"{result['batch']}, {result['precision']}; {result['rounds']} interleaved rounds "
             f"of {result['steps']} steps, {result['clock']} time; load {result['load']}", "",
             "| case | AdamW | bare ms/step | Lightning ms/step | bare / Lightning (paired) | "
             "graphs |", "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['error']} |  |  |  |  |")
        else:
            adamw = "fused" if r["fused_adamw"] else "foreach"
            lines.append(f"| {r['case']} | {adamw} | {r['bare_ms']:.2f} | "
                         f"{r['lightning_ms']:.2f} | {r['ratio']:.3f} | "
                         f"{r['graphs']} |")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="ViT-B 8x224 bf16 on CUDA")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (CPU, the test)")
    parser.add_argument("--cases", nargs="*", choices=list(CASES),
                        help="cases to run (default: eager ones on CPU, all on CUDA)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per loop")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per round")
    parser.add_argument("--budget-s", type=float, default=600,
                        help="start no case after this many seconds")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--clock", choices=tuple(CLOCKS),
                        help="what a step costs: cpu time or wall time (default: cpu on CPU, "
                        "wall on CUDA)")  # fmt: skip
    parser.add_argument("--out", default="runs/bench_overhead", help="results folder")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    quiet_libraries()  # as tsf fit: Lightning's notes off
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu: no CUDA device")
    args.clock = args.clock or ("wall" if args.gpu else "cpu")
    name = "vit-b" if args.gpu else "tiny" if args.tiny else "demo"
    size = SIZES[name]
    cases = args.cases or list(GPU_CASES if args.gpu else CPU_CASES)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if args.gpu else f"CPU ({os.cpu_count()} "
        f"cores, {torch.get_num_threads()} threads)", "torch": torch.__version__,
        "model": f"{name} ({size['embed_dim']}d x{size['depth']}, {size['num_frames']}x"
        f"{size['img_size']})", "batch": size["batch"],
        "precision": "bf16-mixed" if args.gpu else "fp32", "rounds": args.rounds,
        "steps": args.steps, "clock": args.clock,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "rows": [],
    }  # fmt: skip
    out = Path(args.out)
    for case in cases:
        if time.perf_counter() - began > args.budget_s:
            row = {"case": case, "error": "skipped: time budget"}
        else:
            try:
                row = run_case(case, size, device, args)
            except Exception as err:  # a compiler error, out of memory: a row, not the end
                row = {"case": case, "error": f"{type(err).__name__}: {err}"[:200]}
            if args.gpu:
                torch._dynamo.reset()
                torch.cuda.empty_cache()
        result["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("rounds_ms")}),
              flush=True)  # fmt: skip
        write(out, result)
    result["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    write(out, result)
    print((out / "table.md").read_text())
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
