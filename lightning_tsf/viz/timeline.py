"""The timeline strip of a long video: the top-1 class of each window over time.

One bar per window at the window's centre, as wide as the stride (the time until the next window
starts), as high as the top-1 probability, coloured by the top-1 class; a legend names the
classes that occur. Drawn on a bare Agg figure like the other plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_tsf.viz.plots import new_figure, render_figure


def plot_timeline(
    starts: Sequence[float],
    ends: Sequence[float],
    top1: Sequence[int],
    probs: Sequence[float],
    class_names: Sequence[str],
    path: str | Path | None = None,
    *,
    stride_s: float | None = None,
    title: str = "",
) -> np.ndarray:
    """Strip of windows ``[starts[i], ends[i]]`` (seconds) with their top-1 class index and
    probability; ``class_names[k]`` names class ``k``. Returns the RGB image (PNG at ``path``)."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    top1, probs = np.asarray(top1, int), np.asarray(probs, float)
    centres = (starts + ends) / 2
    width = np.minimum(ends - starts, stride_s) if stride_s else ends - starts
    palette = colormaps["tab10" if max(top1, default=0) < 10 else "tab20"]
    fig = new_figure((10, 2.6))
    ax = fig.add_subplot()
    ax.bar(centres, probs, width=width, color=[palette(k % palette.N) for k in top1],
           edgecolor="white", linewidth=0.5)  # fmt: skip
    ax.set_xlim(float(starts.min(initial=0.0)), float(ends.max(initial=1.0)))
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("top-1 prob.")
    if title:
        ax.set_title(title, fontsize=9)
    names = [class_names[k] if k < len(class_names) else str(k) for k in range(max(top1) + 1)]
    handles = [Patch(color=palette(k % palette.N), label=names[k]) for k in sorted(set(top1))]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return render_figure(fig, path)
