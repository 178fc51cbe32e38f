"""The runner: the run's samples cut into shards, each run (or loaded from a run directory), merged.

The shards lie on a fixed grid, shard k holding positions k * batch_size up to (k + 1) * batch_size - 1
of the run's sample order, so a resumed run cuts exactly the shards the interrupted one saved. A
checkpoint is the set of completed shards; ``run_shard`` and ``merge_shards`` are the whole seam, the
same for one process as for many.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from robaudit.audit.records import RecordKey, SampleRecords, merge_shards
from robaudit.audit.shard import ShardSettings, run_shard

if TYPE_CHECKING:
    from robaudit.audit.checkpoint import RunDir
    from robaudit.audit.plan import Stage
    from robaudit.data import Dataset
    from robaudit.models import ModelAdapter


class ProgressSink(Protocol):
    """Where the runner reports progress (the CLI: a Rich bar on a terminal, plain lines otherwise).

    The runner adds one task, the run's samples, and advances it as each shard finishes. A sink may also
    have ``stage(description)``, called as the clean pass or an attack starts on a shard ("pgd linf
    eps=0.1"); the runner calls it only where the sink has it, so a sink without it still works.
    """

    def add_task(self, description: str, total: int) -> int: ...

    def advance(self, task: int, n: int) -> None: ...


class NullProgress:
    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        return None

    def stage(self, description: str) -> None:
        return None


def shard_grid(n: int, batch_size: int) -> list[np.ndarray]:
    """The positions of each shard of an ``n``-sample run: consecutive runs of ``batch_size``."""
    return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def run_grid_shard(
    adapter: ModelAdapter,
    dataset: Dataset,
    stages: Sequence[Stage],
    settings: ShardSettings,
    positions: np.ndarray,
    indices: np.ndarray,
    failed: Collection[RecordKey] = (),
    on_stage: Callable[[str], None] | None = None,
) -> SampleRecords:
    """One shard of the grid, run ``settings.batch_size`` samples at a time: a shard larger than the
    batch (``--shard-size``) is its batches merged, the same records per-sample seeds give any batching."""
    pieces = [
        run_shard(adapter, dataset, stages, settings, positions[p], indices[p], failed, on_stage)
        for p in shard_grid(len(positions), settings.batch_size)
    ]
    if len(pieces) == 1:
        return pieces[0]
    layout = settings.layout(stages)
    return merge_shards(pieces, layout, settings.gallery_size)


class _Bars:
    """One task over all samples: a shard runs the clean pass and every attack on its samples, so the
    samples done are the one honest measure of the run's progress. What runs now goes to ``stage``."""

    def __init__(self, sink: ProgressSink, n: int) -> None:
        self.sink = sink
        self.samples = sink.add_task("samples", n)
        self.stage: Callable[[str], None] | None = getattr(sink, "stage", None)

    def finished(self, n: int) -> None:
        """A shard of ``n`` samples is done: only then, so a shard retried in halves is not counted twice."""
        self.sink.advance(self.samples, n)


def run_shards(
    adapter: ModelAdapter,
    dataset: Dataset,
    indices: np.ndarray,
    stages: Sequence[Stage],
    settings: ShardSettings,
    *,
    progress: ProgressSink | None = None,
    run_dir: RunDir | None = None,
    shard_size: int | None = None,
) -> SampleRecords:
    """The clean pass and every stage's cascade over the samples ``indices``, one shard at a time.

    ``shard_size``: the grid's step (default: the batch size); ``audit.distributed`` cuts the same grid.

    Shards saved in ``run_dir`` are loaded rather than run; each one run is saved there as it finishes.
    Ctrl-C ends the run: the records then cover the shards that finished, with ``interrupted`` set.
    """
    bars = _Bars(progress or NullProgress(), len(indices))
    layout = settings.layout(stages)
    done: list[SampleRecords] = []
    failed: dict[RecordKey, str] = {}  # an attack that failed on one shard is not run on the later ones
    interrupted = False
    try:
        for positions in shard_grid(len(indices), shard_size or settings.batch_size):
            idx = indices[positions]
            loaded = None
            if run_dir is not None:  # a shard done before an interruption
                blank = SampleRecords.blank(layout, positions, idx, dataset.labels[idx], settings.batch_size)
                loaded = run_dir.load(blank)
            shard = (
                loaded
                if loaded is not None
                else run_grid_shard(adapter, dataset, stages, settings, positions, idx, failed, bars.stage)
            )
            bars.finished(len(positions))
            if run_dir is not None and loaded is None:
                run_dir.save(shard)
            for key, message in shard.errors.items():
                failed.setdefault(key, message)
            done.append(shard)
    except KeyboardInterrupt:
        interrupted = True  # the caller reports the completed shards, marked incomplete
    records = merge_shards(done, layout, settings.gallery_size)
    records.batch_size_used = records.batch_size_used or settings.batch_size
    records.interrupted = interrupted
    return records


def evaluate(
    adapter: ModelAdapter,
    dataset: Dataset,
    indices: np.ndarray,
    stages: Sequence[Stage],
    *,
    batch_size: int,
    seed: int,
    data_range: tuple[float, float],
    target: str = "none",
    progress: ProgressSink | None = None,
    gallery_size: int = 4,
    keep_adversarial: bool = False,
    run_dir: RunDir | None = None,
) -> SampleRecords:
    """``run_shards`` with the shard settings given one by one."""
    settings = ShardSettings(seed, data_range, batch_size, target, gallery_size, keep_adversarial)
    return run_shards(adapter, dataset, indices, stages, settings, progress=progress, run_dir=run_dir)
