"""What runs inside a Ray worker: the driver's inputs shipped once, opened by path or from the object store,
checked by sha256, and the audit prepared once per worker and kept.

The actor's constructor takes plain values only. The refs to the files' bytes travel with each call
instead: Ray restarts a dead actor by calling its constructor again, and constructor arguments held in
the object store may be gone by then (ray-project/ray#53727), while refs in a call are pinned by the
driver, which owns them and holds them until the run ends. Ray is imported only inside functions.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from robaudit.audit.records import RecordKey, SampleRecords
from robaudit.audit.runner import run_grid_shard
from robaudit.audit.shard import ShardSettings
from robaudit.errors import InputError
from robaudit.hashing import sha256_file

if TYPE_CHECKING:
    from robaudit.audit.preparation import Prepared
    from robaudit.config import AuditConfig

# model / data / labels -> (a folder?, ObjectRef of its bytes)
Refs = dict[str, tuple[bool, Any]]


@dataclass(frozen=True)
class Shipped:
    """What a worker needs to open the driver's inputs: the driver's paths (in the configuration) and
    digests, and refs to the files' bytes in the object store (fetched only by a worker that cannot read
    the paths). The driver keeps this object, and so the refs, alive for the whole run."""

    config_json: str
    model_sha256: str
    data_sha256: str
    refs: Refs = field(default_factory=dict)


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

    def __init__(
        self, config_json: str, model_sha: str, data_sha: str, driver_batch: int, threads: int | None
    ) -> None:
        self.config_json = config_json
        self.digests = (model_sha, data_sha)
        self.driver_batch = driver_batch
        self.threads = threads
        self.prepared: Prepared | None = None
        self.settings: ShardSettings | None = None

    def pid(self) -> int:
        return os.getpid()

    def load(self, refs: Refs) -> dict[str, Any]:
        """Prepare the audit (once): ``--batch-size auto`` is probed here, on this worker's device. Refuse
        inputs whose sha256 differs from the driver's."""
        if self.prepared is None:
            import torch

            from robaudit.audit.preparation import prepare
            from robaudit.config import AuditConfig

            if self.threads:
                torch.set_num_threads(self.threads)
            config = _localise(AuditConfig.model_validate_json(self.config_json), refs)
            _same("model", config.model_path, sha256_file(config.model_path), self.digests[0])
            prepared = prepare(config)
            _same("data", prepared.dataset.path, prepared.dataset.sha256, self.digests[1])
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

    def run(
        self, refs: Refs, positions: np.ndarray, indices: np.ndarray, failed: list[RecordKey]
    ) -> SampleRecords:
        self.load(refs)  # a restarted actor prepares again here
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


def _localise(config: AuditConfig, refs: Refs) -> AuditConfig:
    """The driver's paths where this machine has them, else the driver's bytes unpacked in a temp folder."""
    import ray

    where: Path | None = None
    paths: dict[str, Any] = {}
    for key, given in (
        ("model", config.model.path),
        ("data", config.data.path),
        ("labels", config.data.labels),
    ):
        if given is None or Path(given).exists() or key not in refs:
            continue
        where = where or Path(tempfile.mkdtemp(prefix="robaudit-worker-"))
        folder, ref = refs[key]
        blob: bytes = cast(bytes, ray.get(ref))  # typed by Ray as a list for a list of refs
        paths[key] = _unpack(blob, folder, where, Path(given).name)
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
