"""Shards on Ray: the runner's grid handed to worker actors as they free up, merged by position.

The same seam as ``runner.run_shards``: the same grid (``shard_grid`` of ``--shard-size``, by default the
batch size), each shard run by ``runner.run_grid_shard`` inside a worker, the records merged by
``records.merge_shards`` and saved in the run folder as they arrive on the driver. Per-sample seeds make
a shard's records independent of where it ran, so the result is the in-process one, sample for sample,
and a run folder resumes with any number of workers, or none.

Each worker is a Ray actor (``ray_worker.ShardWorker``) that prepares the audit once (the model loaded
and kept, ``--batch-size auto`` probed on its own device) and checks the sha256 of the model and the data
against the driver's. A worker that dies is restarted by Ray; its shards run again on another worker, up
to ``RETRIES`` times each, and the run notes it. A CPU worker runs one torch thread: a convolution's float
rounding depends on the thread count, so one thread per worker keeps the records the same whatever the
number of workers (and equal to an in-process run on one thread). Ray is imported inside functions only:
it is an optional extra.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robaudit.audit.ray_worker import ShardWorker, Shipped, ship
from robaudit.audit.records import RecordKey, SampleRecords, merge_shards
from robaudit.audit.runner import ProgressSink, _Bars, shard_grid
from robaudit.errors import ResourceError, RobauditError, UsageError

if TYPE_CHECKING:
    from robaudit.audit.checkpoint import RunDir
    from robaudit.audit.preparation import Prepared
    from robaudit.audit.shard import ShardSettings
    from robaudit.config import AuditConfig
    from robaudit.config.sections import RunSettings

RETRIES = 3  # runs of one shard after the first, when its workers die under it
IN_FLIGHT = 2  # shards queued per worker: the next one is ready when the current one finishes
INSTALL = "pip install 'robaudit[ray]'"
log = logging.getLogger("robaudit")


def wanted(run: RunSettings) -> bool:
    """Whether the run's shards go to Ray workers (``--workers`` above 0 or auto, or a cluster address)."""
    return run.workers != 0 or run.ray_address is not None


def require_ray() -> Any:
    """The ray module, or a one-line UsageError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"--workers: needs Ray, which is not installed; {INSTALL}, or run in this process with --workers 0"
        ) from None
    return ray


@dataclass
class _Shard:
    positions: np.ndarray
    indices: np.ndarray
    attempts: int = 0
    failed_on: set[int] = field(default_factory=set)

    def describe(self) -> str:
        return f"positions {int(self.positions[0])}-{int(self.positions[-1])}"


@dataclass
class _Pool:
    """The worker actors, what each has in flight, and the shards that ran again after a worker died."""

    ray: Any
    actors: list[Any]
    shipped: Shipped  # held for the whole run: it keeps the refs to the inputs' bytes alive
    alive: set[int]
    load: dict[int, int]
    infos: list[dict[str, Any]] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)

    def pick(self, shard: _Shard) -> int | None:
        """The least busy live worker with room, one the shard has not failed on where there is one."""
        free = sorted((self.load[i], i) for i in self.alive if self.load[i] < IN_FLIGHT)
        fresh = [i for _, i in free if i not in shard.failed_on]
        if fresh:
            return fresh[0]
        if free and self.alive <= shard.failed_on:  # every live worker failed it once: any will do
            return free[0][1]
        return None

    def check(self, i: int) -> None:
        """After a death: wait for Ray's restart, or take the worker out of the pool if it stays dead."""
        try:
            self.ray.get(self.actors[i].pid.remote(), timeout=120)
        except Exception:  # noqa: BLE001 - a worker that cannot answer is dead, whatever the error
            self.alive.discard(i)


def _start(
    ray: Any, config: AuditConfig, workers: int, shipped: Shipped, batch: int, threads: int | None
) -> _Pool:
    gpus = _gpus(ray, config.run)
    options: dict[str, Any] = {"num_cpus": threads or 1, "max_restarts": RETRIES, "max_task_retries": 0}
    if gpus:
        options["num_gpus"] = 1
    remote = ray.remote(ShardWorker).options(**options)
    args = (shipped.config_json, shipped.model_sha256, shipped.data_sha256, batch, threads)
    actors = [remote.remote(*args) for _ in range(workers)]
    pool = _Pool(ray, actors, shipped, set(range(workers)), dict.fromkeys(range(workers), 0))
    # Load everywhere at once, before any shard: a refused input fails the run before any work.
    for ref in [actor.load.remote(shipped.refs) for actor in actors]:
        try:
            pool.infos.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - the worker's own error, as one line
            _reraise(ray, exc)
    return pool


def _reraise(ray: Any, exc: BaseException) -> None:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RobauditError):
        raise type(cause)(str(cause)) from None
    if isinstance(exc, ray.exceptions.RayTaskError):
        raise exc
    raise ResourceError(f"a Ray worker could not start: {type(exc).__name__}; see the Ray logs") from exc


def _gpus(ray: Any, run: RunSettings) -> int:
    return int(ray.cluster_resources().get("GPU", 0)) if run.device != "cpu" else 0


def _worker_count(ray: Any, run: RunSettings) -> int:
    """``--workers N``, or auto: one per GPU, or on CPUs alone one per CPU (each runs one thread)."""
    if isinstance(run.workers, int) and run.workers > 0:
        return run.workers
    return max(1, _gpus(ray, run) or int(ray.cluster_resources().get("CPU", 1)))


def _connect(ray: Any, run: RunSettings) -> bool:
    """Join the cluster, or start a local runtime; True if this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if run.ray_address is not None:
        ray.init(address=run.ray_address, **quiet)
    else:
        wanted_workers = run.workers if isinstance(run.workers, int) else 1
        cpus = max(wanted_workers, os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
    return True


def run_distributed(
    config: AuditConfig,
    prepared: Prepared,
    settings: ShardSettings,
    model_sha: str,
    *,
    progress: ProgressSink | None = None,
    run_dir: RunDir | None = None,
    threads: int | None = None,
) -> SampleRecords:
    """``runner.run_shards`` on Ray workers: the same grid, the same records, the same run folder.

    ``threads``: torch threads (and Ray CPUs) per worker; default: one on CPU workers (see the module's
    docstring), torch's own choice on GPU workers.
    """
    ray = require_ray()
    tick = time.perf_counter()
    started = _connect(ray, config.run)
    pool: _Pool | None = None
    # Ray's fixed costs apart from the shards' time: what the benchmark weighs the per-shard cost on.
    timings = prepared.timings
    try:
        timings["ray_start_seconds"] = round(time.perf_counter() - tick, 4)
        workers = _worker_count(ray, config.run)
        if threads is None and not _gpus(ray, config.run):
            threads = 1
        tick = time.perf_counter()
        shipped = ship(ray, config, model_sha, prepared.dataset.sha256)
        pool = _start(ray, config, workers, shipped, settings.batch_size, threads)
        timings["ray_workers_ready_seconds"] = round(time.perf_counter() - tick, 4)
        tick = time.perf_counter()
        records = _run_on(pool, config, prepared, settings, progress, run_dir)
        timings["ray_shards_seconds"] = round(time.perf_counter() - tick, 4)
        return records
    finally:
        if pool is not None:
            for actor in pool.actors:
                ray.kill(actor)
        if started:
            ray.shutdown()


def _run_on(
    pool: _Pool,
    config: AuditConfig,
    prepared: Prepared,
    settings: ShardSettings,
    progress: ProgressSink | None,
    run_dir: RunDir | None,
) -> SampleRecords:
    from robaudit.audit.runner import NullProgress

    indices, stages = prepared.indices, prepared.stages
    layout = settings.layout(stages)
    bars = _Bars(progress or NullProgress(), len(indices))
    grid = shard_grid(len(indices), config.run.shard_size or settings.batch_size)
    done: list[SampleRecords] = []
    todo: deque[_Shard] = deque()
    for positions in grid:
        idx = indices[positions]
        blank = SampleRecords.blank(layout, positions, idx, prepared.dataset.labels[idx], settings.batch_size)
        loaded = run_dir.load(blank) if run_dir is not None else None
        if loaded is None:
            todo.append(_Shard(positions, idx))
        else:
            done.append(loaded)
            bars.finished(len(positions))
    interrupted = False
    try:
        _schedule(pool, todo, done, _Display(bars, len(grid), len(pool.actors)), run_dir)
    except KeyboardInterrupt:
        interrupted = True
    records = merge_shards(done, layout, settings.gallery_size)
    records.batch_size_used = records.batch_size_used or settings.batch_size
    records.interrupted = interrupted
    _notes(pool, prepared.notes, config.run.batch_size == "auto")
    return records


@dataclass
class _Display:
    """The driver's one display: samples done and the run's ETA on the bar (the sink's), and beside it
    the shards done and the workers alive; in a log, a line per 5% of the shards or when a worker dies."""

    bars: _Bars
    total: int
    workers: int
    shown: tuple[int, int] = (-1, -1)

    def update(self, shards: int, alive: int) -> None:
        every = max(1, self.total // 20)
        if self.bars.stage is None or (shards % every and shards < self.total and alive == self.shown[1]):
            return
        self.shown = (shards, alive)
        self.bars.stage(f"on Ray: {shards}/{self.total} shards done, {alive}/{self.workers} workers alive")


def _schedule(
    pool: _Pool, todo: deque[_Shard], done: list[SampleRecords], display: _Display, run_dir: RunDir | None
) -> None:
    """Hand shards out as workers free up (``ray.wait``), retry those a dying worker took with it."""
    ray = pool.ray
    in_flight: dict[Any, tuple[int, _Shard]] = {}
    failed: dict[RecordKey, str] = {}
    display.update(len(done), len(pool.alive))
    while todo or in_flight:
        _submit(pool, todo, in_flight, failed)
        if not in_flight:
            raise ResourceError("every Ray worker died; see the Ray logs (ray status), then --resume the run")
        (ref,), _ = ray.wait(list(in_flight), num_returns=1)
        worker, shard = in_flight.pop(ref)
        pool.load[worker] -= 1
        try:
            records = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            _retry(pool, todo, worker, shard, exc)
            display.update(len(done), len(pool.alive))
            continue
        except ray.exceptions.RayTaskError as exc:
            _reraise(ray, exc)
        for key, message in records.errors.items():
            failed.setdefault(key, message)
        done.append(records)
        if run_dir is not None:
            run_dir.save(records)
        display.bars.finished(len(shard.positions))
        display.update(len(done), len(pool.alive))


def _submit(
    pool: _Pool, todo: deque[_Shard], in_flight: dict[Any, tuple[int, _Shard]], failed: dict[RecordKey, str]
) -> None:
    while todo:
        worker = pool.pick(todo[0])
        if worker is None:
            return
        shard = todo.popleft()
        ref = pool.actors[worker].run.remote(pool.shipped.refs, shard.positions, shard.indices, list(failed))
        in_flight[ref] = (worker, shard)
        pool.load[worker] += 1


def _retry(pool: _Pool, todo: deque[_Shard], worker: int, shard: _Shard, exc: BaseException) -> None:
    shard.attempts += 1
    shard.failed_on.add(worker)
    if shard.attempts > RETRIES:
        raise ResourceError(
            f"shard at {shard.describe()} failed on {shard.attempts} Ray workers ({type(exc).__name__}); "
            "see the Ray logs, then --resume the run"
        )
    log.warning("a Ray worker died running the shard at %s; running it again", shard.describe())
    pool.retried.append(shard.describe())
    pool.check(worker)
    todo.appendleft(shard)


def _notes(pool: _Pool, notes: list[str], auto_batch: bool) -> None:
    placed = Counter((info["device"], info["batch"]) for info in pool.infos)
    where = ", ".join(
        f"{n} on {device} at batch size {batch}" for (device, batch), n in sorted(placed.items())
    )
    auto = " (--batch-size auto worked out on each worker's device)" if auto_batch else ""
    notes.append(
        f"shards ran on {len(pool.actors)} Ray workers, {len(pool.alive)} alive at the end: {where}{auto}"
    )
    if pool.retried:
        notes.append(
            f"a Ray worker died: {len(pool.retried)} shard run(s) retried, on another worker where one was "
            f"alive ({', '.join(sorted(set(pool.retried)))}); results are the same, each shard's records depend only "
            "on its samples"
        )
