"""Reliability checks: signs that an evaluation overstates robustness, as typed flags.

``flags`` reads only the result (and the runner's records) and costs nothing; ``probes`` queries the
model again on a few samples. Both come after the audit in the data flow: they import from
``robaudit.audit``, never the other way round.

The names below are imported on first use, so that the result-only checks do not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robaudit.lazy import lazy_names

if TYPE_CHECKING:
    from robaudit.checks.flags import (
        CHECKS,
        attack_failed,
        clean_sanity,
        eps_monotonicity,
        pixel_attack_inside_ball,
        reliability_flags,
        runtime_transfer,
        transfer_beats_white_box,
    )
    from robaudit.checks.probes import PROBE_SAMPLES, probe_flags, probe_samples

_HOMES = {
    "CHECKS": "robaudit.checks.flags",
    "attack_failed": "robaudit.checks.flags",
    "clean_sanity": "robaudit.checks.flags",
    "eps_monotonicity": "robaudit.checks.flags",
    "pixel_attack_inside_ball": "robaudit.checks.flags",
    "reliability_flags": "robaudit.checks.flags",
    "runtime_transfer": "robaudit.checks.flags",
    "transfer_beats_white_box": "robaudit.checks.flags",
    "PROBE_SAMPLES": "robaudit.checks.probes",
    "probe_flags": "robaudit.checks.probes",
    "probe_samples": "robaudit.checks.probes",
}

__all__ = [
    "CHECKS",
    "PROBE_SAMPLES",
    "attack_failed",
    "clean_sanity",
    "eps_monotonicity",
    "pixel_attack_inside_ball",
    "probe_flags",
    "probe_samples",
    "reliability_flags",
    "runtime_transfer",
    "transfer_beats_white_box",
]


__getattr__ = lazy_names(__name__, _HOMES)
