"""Shards on Ray: the runner's grid handed to worker actors as they free up, merged by position.

The same seam as ``runner.run_shards``: the same grid (``shard_grid`` of ``--shard-size``, by default the
batch size), each shard run by ``runner.run_grid_shard`` inside a worker, the records merged by
``records.merge_shards`` and saved in the run folder as they arrive on the driver. Per-sample seeds make
a shard's records independent of where it ran, so the result is the in-process one, sample for sample,
and a run folder resumes with any number of workers, or none.

Each worker is a Ray actor that prepares the audit once (``preparation.prepare``: the model loaded and
kept, ``--batch-size auto`` probed on its own device) and checks the sha256 of the model and the data
against the driver's. It reads them by path where the driver's path exists on its machine (a shared
file system), and otherwise from the bytes the driver put in Ray's object store once. A worker that dies
is restarted by Ray; its shards run again on another worker, up to ``RETRIES`` times each, and the run
notes it. Ray is imported here only, inside the functions: it is an optional extra.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robaudit.audit.records import RecordKey, RecordLayout, SampleRecords, merge_shards
from robaudit.audit.runner import ProgressSink, _Bars, run_grid_shard, shard_grid
from robaudit.audit.shard import ShardSettings
from robaudit.errors import InputError, ResourceError, RobauditError, UsageError
from robaudit.hashing import sha256_file

if TYPE_CHECKING:
    from robaudit.audit.checkpoint import RunDir
    from robaudit.audit.preparation import Prepared
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


@dataclass(frozen=True)
class Shipped:
    """What a worker needs to open the driver's inputs: the driver's paths and digests, and refs to the
    files' bytes in the object store (fetched only by a worker that cannot read the paths)."""

    config_json: str
    model_sha256: str
    data_sha256: str
    # model / data / labels -> (a folder?, ObjectRef of its bytes)
    refs: dict[str, tuple[bool, Any]] = field(default_factory=dict)


def _pack(path: Path) -> bytes:
    """A file's bytes, or a folder (an image folder) as an uncompressed tar."""
    if path.is_file():
        return path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


def _unpack(blob: bytes, folder: bool, where: Path, name: str) -> Path:
    if folder:
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(where, filter="data")
    else:
        (where / name).write_bytes(blob)
    return where / name


def ship(ray: Any, config: AuditConfig, model_sha: str, data_sha: str) -> Shipped:
    """Put the model, the data and the labels in the object store once, with paths made absolute."""
    paths = {"model": config.model.path, "data": config.data.path, "labels": config.data.labels}
    absolute = {k: Path(p).resolve() for k, p in paths.items() if p is not None and Path(p).exists()}
    refs = {k: (p.is_dir(), ray.put(_pack(p))) for k, p in absolute.items()}
    model = config.model.model_copy(update={"path": absolute.get("model", config.model.path)})
    data = config.data.model_copy(
        update={
            "path": str(absolute["data"]) if "data" in absolute else config.data.path,
            "labels": absolute.get("labels", config.data.labels),
        }
    )
    run = config.run.model_copy(update={"run_dir": None, "workers": 0, "ray_address": None})
    local = config.model_copy(update={"model": model, "data": data, "run": run})
    return Shipped(local.model_dump_json(), model_sha, data_sha, refs)


class ShardWorker:
    """A Ray actor's state: the prepared audit, loaded on the first call and kept."""

    def __init__(self, shipped: Shipped, driver_batch: int, threads: int | None) -> None:
        self.shipped = shipped
        self.driver_batch = driver_batch
        self.threads = threads
        self.prepared: Prepared | None = None
        self.settings: ShardSettings | None = None

    def pid(self) -> int:
        return os.getpid()

    def load(self) -> dict[str, Any]:
        """Prepare the audit (once) and refuse inputs whose sha256 differs from the driver's."""
        if self.prepared is None:
            import torch

            from robaudit.audit.preparation import prepare
            from robaudit.config import AuditConfig

            if self.threads:
                torch.set_num_threads(self.threads)
            config = _localise(AuditConfig.model_validate_json(self.shipped.config_json), self.shipped)
            digest = sha256_file(config.model_path)
            _same("model", config.model_path, digest, self.shipped.model_sha256)
            prepared = prepare(config)
            _same("data", prepared.dataset.path, prepared.dataset.sha256, self.shipped.data_sha256)
            self.prepared = prepared
            self.settings = ShardSettings.from_config(
                config, prepared.batch_size, prepared.eot.evals, prepared.eot.random_model
            )
        assert self.settings is not None
        return {
            "pid": os.getpid(),
            "device": str(self.prepared.adapter.device),
            "batch": self.settings.batch_size,
        }

    def run(self, positions: np.ndarray, indices: np.ndarray, failed: list[RecordKey]) -> SampleRecords:
        self.load()
        assert self.prepared is not None and self.settings is not None
        p = self.prepared
        records = run_grid_shard(p.adapter, p.dataset, p.stages, self.settings, positions, indices, failed)
        # The driver notes a split only where memory ran out, not where auto chose another batch here.
        if records.batch_size_used >= self.settings.batch_size:
            records.batch_size_used = self.driver_batch
        return records


def _same(what: str, path: object, digest: str, driver: str) -> None:
    if digest != driver:
        raise InputError(
            f"{path}: a Ray worker sees a different {what} file than the driver (sha256 {digest[:12]}... "
            f"against {driver[:12]}...); the shared path changed under the run: make it the same file on "
            f"every node, or give the workers no such path so that they use the driver's copy"
        )


def _localise(config: AuditConfig, shipped: Shipped) -> AuditConfig:
    """The driver's paths where this machine has them, else the driver's bytes unpacked in a temp folder."""
    import ray

    where: Path | None = None
    paths: dict[str, Any] = {}
    for key, given in (
        ("model", config.model.path),
        ("data", config.data.path),
        ("labels", config.data.labels),
    ):
        if given is None or Path(given).exists() or key not in shipped.refs:
            continue
        where = where or Path(tempfile.mkdtemp(prefix="robaudit-worker-"))
        folder, ref = shipped.refs[key]
        paths[key] = _unpack(ray.get(ref), folder, where, Path(given).name)
    if not paths:
        return config
    model = config.model.model_copy(update={"path": paths.get("model", config.model.path)})
    data = config.data.model_copy(
        update={
            "path": str(paths["data"]) if "data" in paths else config.data.path,
            "labels": paths.get("labels", config.data.labels),
        }
    )
    return config.model_copy(update={"model": model, "data": data})


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
    alive: set[int]
    load: dict[int, int]
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
    gpus = int(ray.cluster_resources().get("GPU", 0)) if config.run.device != "cpu" else 0
    cpus = threads or 1
    options: dict[str, Any] = {"num_cpus": cpus, "max_restarts": RETRIES, "max_task_retries": 0}
    if gpus:
        options["num_gpus"] = 1
    remote = ray.remote(ShardWorker).options(**options)
    actors = [remote.remote(shipped, batch, threads) for _ in range(workers)]
    pool = _Pool(ray, actors, set(range(workers)), dict.fromkeys(range(workers), 0))
    for actor in actors:  # load everywhere first: a refused input fails the run before any shard
        try:
            ray.get(actor.load.remote())
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


def _worker_count(ray: Any, run: RunSettings) -> int:
    if isinstance(run.workers, int) and run.workers > 0:
        return run.workers
    gpus = int(ray.cluster_resources().get("GPU", 0)) if run.device != "cpu" else 0
    return max(1, gpus)


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

    ``threads``: torch threads (and Ray CPUs) per worker; default: the host's CPUs shared out.
    """
    ray = require_ray()
    started = _connect(ray, config.run)
    pool: _Pool | None = None
    try:
        workers = _worker_count(ray, config.run)
        if threads is None and not ray.cluster_resources().get("GPU"):
            threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        shipped = ship(ray, config, model_sha, prepared.dataset.sha256)
        pool = _start(ray, config, workers, shipped, settings.batch_size, threads)
        return _run_on(pool, config, prepared, settings, progress, run_dir)
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
    layout = RecordLayout.of(stages, targeted=settings.target != "none")
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
        _schedule(pool, todo, done, len(grid), bars, run_dir)
    except KeyboardInterrupt:
        interrupted = True
    records = merge_shards(done, layout, settings.gallery_size)
    records.batch_size_used = records.batch_size_used or settings.batch_size
    records.interrupted = interrupted
    _notes(pool, prepared.notes, len(pool.actors))
    return records


def _schedule(
    pool: _Pool,
    todo: deque[_Shard],
    done: list[SampleRecords],
    total: int,
    bars: _Bars,
    run_dir: RunDir | None,
) -> None:
    """Hand shards out as workers free up (``ray.wait``), retry those a dying worker took with it."""
    ray = pool.ray
    in_flight: dict[Any, tuple[int, _Shard]] = {}
    failed: dict[RecordKey, str] = {}
    stage: Callable[[str], None] = bars.stage or (lambda text: None)
    every, alive = max(1, total // 20), len(pool.alive)
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
            continue
        except ray.exceptions.RayTaskError as exc:
            _reraise(ray, exc)
        for key, message in records.errors.items():
            failed.setdefault(key, message)
        done.append(records)
        if run_dir is not None:
            run_dir.save(records)
        bars.finished(len(shard.positions))
        if len(done) % every == 0 or len(pool.alive) != alive:  # a line per 5% in a log, not per shard
            alive = len(pool.alive)
            stage(f"{len(done)}/{total} shards, {alive} workers alive")


def _submit(
    pool: _Pool, todo: deque[_Shard], in_flight: dict[Any, tuple[int, _Shard]], failed: dict[RecordKey, str]
) -> None:
    while todo:
        worker = pool.pick(todo[0])
        if worker is None:
            return
        shard = todo.popleft()
        ref = pool.actors[worker].run.remote(shard.positions, shard.indices, list(failed))
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


def _notes(pool: _Pool, notes: list[str], workers: int) -> None:
    notes.append(f"shards ran on {workers} Ray workers ({len(pool.alive)} alive at the end)")
    if pool.retried:
        notes.append(
            f"a Ray worker died: {len(pool.retried)} shard run(s) retried on another worker "
            f"({', '.join(sorted(set(pool.retried)))}); results are the same, each shard's records depend only "
            "on its samples"
        )
