"""Work over many videos in worker processes, with a progress bar (check, prepare, synthetic)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    func: Callable[[T], R], items: Sequence[T], num_workers: int, desc: str, progress: bool = True
) -> Iterator[R]:
    """``map`` over worker processes (in order) with a tqdm progress bar; in-process if 0."""
    from tqdm import tqdm

    bar = partial(tqdm, total=len(items), desc=desc, disable=not progress, unit="video")
    if num_workers <= 0:
        yield from bar(map(func, items))
        return
    with ProcessPoolExecutor(num_workers) as pool:
        chunk = max(1, min(16, len(items) // (4 * num_workers)))
        yield from bar(pool.map(func, items, chunksize=chunk))
