"""Per-sample outputs written from the runner's records: ``--per-sample`` JSON lines and
``--save-adversarial`` .npz. Both are written to a temporary file and renamed, never half-written."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import IO

import numpy as np

from robaudit.atomic import write_atomic
from robaudit.audit.plan import Stage
from robaudit.audit.records import EXACT, SampleRecords, Threat


def per_sample_lines(
    records: SampleRecords, stages: list[Stage], exact: Collection[Threat] = ()
) -> list[dict[str, object]]:
    """One record per sample: label, clean prediction and confidence, and per (attack, norm, eps) the
    prediction, confidence, whether it is fooled so far in that threat model's cascade, the
    perturbation's L∞, L2 and L0 (pixel locations) norms, and whether the threat model's certificate
    covers the sample (true, false, or null where no certificate ran). Threat models in ``exact`` (where
    exact verification ran) end with an ``exact`` entry: fooled there by a confirmed counterexample."""
    lines = []
    for row, index in enumerate(records.indices.tolist()):
        label = int(records.labels[row])
        line: dict[str, object] = {
            "index": int(index),
            "label": label,
            "clean_pred": int(records.clean_pred[row]),
            "clean_conf": float(records.clean_conf[row]),
        }
        if records.targets is not None:
            line["target"] = int(records.targets[row]) if records.targets[row] >= 0 else None
        attacks = []
        for st in stages:
            threat = (st.threat.norm, st.threat.eps)
            names = [a.name for a in st.attacks] + ([EXACT] if threat in exact else [])
            for name in names:
                rec = records.adversarial[(name, *threat)]
                attacks.append(
                    {
                        "attack": name,
                        "norm": st.threat.norm,
                        "eps": st.threat.eps,
                        "pred": int(rec.pred[row]),
                        "conf": float(rec.conf[row]),
                        "fooled": bool(records.clean_pred[row] == label and rec.pred[row] != label),
                        "linf": float(rec.linf[row]),
                        "l2": float(rec.l2[row]),
                        "l0": float(rec.l0[row]),
                        "certified": _certified(records, threat, row),
                    }
                )
        line["attacks"] = attacks
        lines.append(line)
    return lines


def _certified(records: SampleRecords, threat: tuple[str, float], row: int) -> bool | None:
    codes = records.certified.get(threat)
    if codes is None or codes[row] < 0:
        return None
    return bool(codes[row] == 1)


def write_per_sample(
    records: SampleRecords, stages: list[Stage], path: Path, exact: Collection[Threat] = ()
) -> None:
    def write(fh: IO[bytes]) -> None:
        for line in per_sample_lines(records, stages, exact):
            fh.write(json.dumps(line, allow_nan=False).encode("utf-8") + b"\n")

    write_atomic(path, write)


def write_adversarial(records: SampleRecords, path: Path) -> int:
    """Every adversarial example found, one entry per (sample, threat model): x_adv (N, C, H, W) float32
    on [0, 1], with the sample index, label, adversarial prediction, attack, norm and eps. Returns N."""
    images, index, label, adv_pred, attack, norm, eps = [], [], [], [], [], [], []
    for (threat_norm, threat_eps), saved in records.saved.items():
        for row, (name, x_adv) in sorted(saved.items()):
            images.append(x_adv.astype(np.float32))
            index.append(int(records.indices[row]))
            label.append(int(records.labels[row]))
            adv_pred.append(int(records.adversarial[(name, threat_norm, threat_eps)].pred[row]))
            attack.append(name)
            norm.append(threat_norm)
            eps.append(threat_eps)
    shape = next(iter(images)).shape if images else (0, 0, 0)
    arrays = {
        "x_adv": np.stack(images) if images else np.zeros((0, *shape), np.float32),
        "index": np.asarray(index, np.int64),
        "label": np.asarray(label, np.int64),
        "adv_pred": np.asarray(adv_pred, np.int64),
        "attack": np.asarray(attack, dtype=str),
        "norm": np.asarray(norm, dtype=str),
        "eps": np.asarray(eps, np.float64),
    }
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))  # type: ignore[arg-type]
    return len(images)
