"""Run directories: completed shards saved as they finish, so an interrupted audit can resume.

``--run-dir DIR`` writes the audit's configuration once (``config.json``) and, after every shard, that
shard's per-sample records (``batch-<first position>.npz``, written atomically), with the positions
and sample indices it covers. ``--resume DIR`` reloads the configuration and the saved shards and
computes only the rest. Per-sample seeds make a resumed run equal to an uninterrupted one, sample for
sample.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO

import numpy as np

from robaudit.atomic import write_atomic, write_text_atomic
from robaudit.audit.records import ATTACK_FIELDS, SampleRecords
from robaudit.errors import InputError

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

    def _shard(self, first: int) -> Path:
        return self.path / f"batch-{first:09d}.npz"

    def save(self, shard: SampleRecords) -> None:
        """A completed shard's records, with the gallery examples and errors it produced."""
        keys = list(shard.adversarial)
        arrays: dict[str, np.ndarray] = {
            "positions": shard.positions,
            "indices": shard.indices,
            "clean_pred": shard.clean_pred,
            "clean_conf": shard.clean_conf,
            "keys": np.asarray(json.dumps([list(k) for k in keys])),
            "errors": np.asarray(json.dumps([[list(k), v] for k, v in shard.errors.items()])),
        }
        if shard.targets is not None:
            arrays["targets"] = shard.targets
        for i, key in enumerate(keys):
            for name in ATTACK_FIELDS:
                arrays[f"k{i}_{name}"] = getattr(shard.adversarial[key], name)
        # Examples are stored by their position in the run, so that a file names its samples alone.
        examples = []
        for t, (threat, gallery) in enumerate(shard.examples.items()):
            for row, (attack, x, x_adv) in gallery.items():
                examples.append([t, int(shard.positions[row]), attack])
                arrays[f"ex{len(examples) - 1}_x"] = x
                arrays[f"ex{len(examples) - 1}_adv"] = x_adv
            for row, (attack, x_adv) in shard.saved[threat].items():
                pos = int(shard.positions[row])
                arrays[f"saved{t}_{pos}"] = x_adv
                examples.append([t, pos, attack, "saved"])
        arrays["examples"] = np.asarray(json.dumps(examples))
        for t, threat in enumerate(shard.certified):
            arrays[f"cert{t}"] = shard.certified[threat]
            arrays[f"cert{t}_seconds"] = np.asarray(shard.certify_seconds.get(threat, 0.0))
        arrays["onepixel_swept"] = shard.onepixel_swept

        def write(fh: IO[bytes]) -> None:
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            fh.write(buffer.getvalue())

        write_atomic(self._shard(int(shard.positions[0])), write)

    def load(self, blank: SampleRecords) -> SampleRecords | None:
        """The saved records of the shard that ``blank`` (``SampleRecords.blank``) lays out, filled into
        it; None when that shard was not saved."""
        first = int(blank.positions[0])
        path = self._shard(first)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            keys = [tuple(k) for k in json.loads(str(saved["keys"]))]
            if keys != [tuple(k) for k in blank.adversarial]:
                raise InputError(
                    f"--resume {self.path}: its saved batches come from other attacks; start a new run"
                )
            self._check_samples(saved, blank)
            blank.clean_pred[:], blank.clean_conf[:] = saved["clean_pred"], saved["clean_conf"]
            if blank.targets is not None:
                blank.targets[:] = saved["targets"]
            for i, rec in enumerate(blank.adversarial.values()):
                for name in ATTACK_FIELDS:
                    getattr(rec, name)[:] = saved[f"k{i}_{name}"]
            for key, message in json.loads(str(saved["errors"])):
                blank.errors.setdefault((key[0], key[1], float(key[2])), message)
            _load_examples(saved, blank)
            for t, threat in enumerate(blank.certified):  # absent from shards saved before certification
                if f"cert{t}" in saved.files:
                    blank.certified[threat][:] = saved[f"cert{t}"]
                    blank.certify_seconds[threat] = float(saved[f"cert{t}_seconds"])
            if "onepixel_swept" in saved.files:
                blank.onepixel_swept[:] = saved["onepixel_swept"]
        return blank

    def _check_samples(self, saved: np.lib.npyio.NpzFile, blank: SampleRecords) -> None:
        """Refuse a saved shard that covers other samples than the run would put there."""
        if "positions" in saved.files:
            same = np.array_equal(saved["positions"], blank.positions) and np.array_equal(
                saved["indices"], blank.indices
            )
        else:  # written before shards stored their samples: the file name and the length tell
            same = len(saved["clean_pred"]) == len(blank.positions)
        if not same:
            raise InputError(
                f"--resume {self.path}: its saved batches cover other samples (another --limit, --seed or "
                "--batch-size); start a new run"
            )


def _load_examples(saved: np.lib.npyio.NpzFile, blank: SampleRecords) -> None:
    threats = list(blank.examples)
    row_of = {p: row for row, p in enumerate(blank.positions.tolist())}
    for j, entry in enumerate(json.loads(str(saved["examples"]))):
        t, pos, attack = entry[0], int(entry[1]), entry[2]
        if len(entry) == 4:
            blank.saved[threats[t]][row_of[pos]] = (attack, saved[f"saved{t}_{pos}"])
        else:
            blank.examples[threats[t]][row_of[pos]] = (attack, saved[f"ex{j}_x"], saved[f"ex{j}_adv"])
