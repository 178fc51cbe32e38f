"""Run directories: completed batches saved as they finish, so an interrupted audit can resume.

``--run-dir DIR`` writes the audit's configuration once (``config.json``) and, after every batch, that
batch's per-sample records (``batch-<first>.npz``, written atomically). ``--resume DIR`` reloads the
configuration and the saved batches and computes only the rest. Per-sample seeds make a resumed run
equal to an uninterrupted one, sample for sample.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO

import numpy as np

from robaudit.atomic import write_atomic, write_text_atomic
from robaudit.errors import InputError
from robaudit.runner import AttackRecords, SampleRecords

_FIELDS = ("pred", "conf", "fooled_converted", "target_hit", "linf", "l2", "l0")
CONFIG_NAME = "config.json"
INPUTS_NAME = "inputs.json"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    def write_config(self, config_json: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config_path, config_json)

    def read_config(self) -> str:
        try:
            return self.config_path.read_text(encoding="utf-8")
        except OSError:
            raise InputError(
                f"--resume {self.path}: no {CONFIG_NAME} there; give the folder a run was started with --run-dir"
            ) from None

    def check_inputs(self, digests: dict[str, str]) -> None:
        """Record the sha256 of the model and the data the run began with; on a later run in the same
        folder, refuse if either changed, since its saved batches would then describe other inputs."""
        path = self.path / INPUTS_NAME
        if path.is_file():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                before = None
            if not isinstance(before, dict):
                raise InputError(f"--resume {self.path}: its {INPUTS_NAME} is unreadable; start a new run")
            for what, digest in digests.items():
                if before.get(what, digest) != digest:
                    raise InputError(
                        f"{self.path}: the {what.removesuffix('_sha256')} changed since the run in this folder began "
                        f"(sha256 {str(before[what])[:12]}... then, {digest[:12]}... now); its saved batches "
                        f"describe the old one: restore it, or start a new run with another --run-dir"
                    )
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(digests, indent=2))

    def _batch(self, first: int) -> Path:
        return self.path / f"batch-{first:09d}.npz"

    def has(self, first: int) -> bool:
        return self._batch(first).is_file()

    def save(self, records: SampleRecords, first: int, n: int) -> None:
        """The records of samples first..first+n, with the gallery examples and errors they produced."""
        b = slice(first, first + n)
        keys = list(records.adversarial)
        arrays: dict[str, np.ndarray] = {
            "clean_pred": records.clean_pred[b],
            "clean_conf": records.clean_conf[b],
            "keys": np.asarray(json.dumps([list(k) for k in keys])),
            "errors": np.asarray(json.dumps([[list(k), v] for k, v in records.errors.items()])),
        }
        if records.targets is not None:
            arrays["targets"] = records.targets[b]
        for i, key in enumerate(keys):
            for name in _FIELDS:
                arrays[f"k{i}_{name}"] = getattr(records.adversarial[key], name)[b]
        examples = []
        for t, (threat, gallery) in enumerate(records.examples.items()):
            for pos, (attack, x, x_adv) in gallery.items():
                if first <= pos < first + n:
                    examples.append([t, pos, attack])
                    arrays[f"ex{len(examples) - 1}_x"] = x
                    arrays[f"ex{len(examples) - 1}_adv"] = x_adv
            for pos, (attack, x_adv) in records.saved[threat].items():
                if first <= pos < first + n:
                    arrays[f"saved{t}_{pos}"] = x_adv
                    examples.append([t, pos, attack, "saved"])
        arrays["examples"] = np.asarray(json.dumps(examples))

        def write(fh: IO[bytes]) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            fh.write(buffer.getvalue())

        write_atomic(self._batch(first), write)

    def load(self, records: SampleRecords, first: int, n: int) -> None:
        b = slice(first, first + n)
        with np.load(self._batch(first), allow_pickle=False) as saved:
            keys = [tuple(k) for k in json.loads(str(saved["keys"]))]
            if keys != [tuple(k) for k in records.adversarial]:
                raise InputError(
                    f"--resume {self.path}: its saved batches come from other attacks; start a new run"
                )
            records.clean_pred[b], records.clean_conf[b] = saved["clean_pred"], saved["clean_conf"]
            if records.targets is not None:
                records.targets[b] = saved["targets"]
            for i, key in enumerate(records.adversarial):
                rec: AttackRecords = records.adversarial[key]
                for name in _FIELDS:
                    getattr(rec, name)[b] = saved[f"k{i}_{name}"]
            for key, message in json.loads(str(saved["errors"])):
                records.errors.setdefault((key[0], key[1], float(key[2])), message)
            threats = list(records.examples)
            for j, entry in enumerate(json.loads(str(saved["examples"]))):
                t, pos, attack = entry[0], int(entry[1]), entry[2]
                if len(entry) == 4:
                    records.saved[threats[t]][pos] = (attack, saved[f"saved{t}_{pos}"])
                else:
                    records.examples[threats[t]][pos] = (attack, saved[f"ex{j}_x"], saved[f"ex{j}_adv"])
