"""The audit: plan the cascade, run it shard by shard, verify every candidate, summarise the records.

Data flow, one way: ``preparation`` opens the model and the data and plans the stages (``plan``);
``runner`` cuts the samples into shards and runs each with ``shard.run_shard``, a function of the
model, the data, the settings and the shard alone, which returns per-sample ``records``; completed
shards are saved in a ``checkpoint`` run directory and put back together by ``records.merge_shards``;
``summary`` turns the records into the result's figures. Nothing here imports the checks, the gate or
the reports, which read the result.

The names below are imported on first use, so that reading a run directory's configuration does not
import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robaudit.lazy import lazy_names

if TYPE_CHECKING:
    from robaudit.audit.checkpoint import RunDir
    from robaudit.audit.plan import Stage, ThreatModel, plan_cascade
    from robaudit.audit.preparation import Prepared, prepare
    from robaudit.audit.records import (
        AttackRecords,
        RecordKey,
        RecordLayout,
        SampleRecords,
        Threat,
        merge_shards,
    )
    from robaudit.audit.runner import NullProgress, ProgressSink, evaluate, run_shards, shard_grid
    from robaudit.audit.shard import ShardSettings, attack_step, choose_targets, run_shard
    from robaudit.audit.verification import NORM_TOLERANCE, verify

_HOMES = {
    "RunDir": "robaudit.audit.checkpoint",
    "Stage": "robaudit.audit.plan",
    "ThreatModel": "robaudit.audit.plan",
    "plan_cascade": "robaudit.audit.plan",
    "Prepared": "robaudit.audit.preparation",
    "prepare": "robaudit.audit.preparation",
    "AttackRecords": "robaudit.audit.records",
    "RecordKey": "robaudit.audit.records",
    "RecordLayout": "robaudit.audit.records",
    "SampleRecords": "robaudit.audit.records",
    "Threat": "robaudit.audit.records",
    "merge_shards": "robaudit.audit.records",
    "NullProgress": "robaudit.audit.runner",
    "ProgressSink": "robaudit.audit.runner",
    "evaluate": "robaudit.audit.runner",
    "run_shards": "robaudit.audit.runner",
    "shard_grid": "robaudit.audit.runner",
    "ShardSettings": "robaudit.audit.shard",
    "attack_step": "robaudit.audit.shard",
    "choose_targets": "robaudit.audit.shard",
    "run_shard": "robaudit.audit.shard",
    "NORM_TOLERANCE": "robaudit.audit.verification",
    "verify": "robaudit.audit.verification",
}

__all__ = [
    "AttackRecords",
    "NORM_TOLERANCE",
    "NullProgress",
    "Prepared",
    "ProgressSink",
    "RecordKey",
    "RecordLayout",
    "RunDir",
    "SampleRecords",
    "ShardSettings",
    "Stage",
    "Threat",
    "ThreatModel",
    "attack_step",
    "choose_targets",
    "evaluate",
    "merge_shards",
    "plan_cascade",
    "prepare",
    "run_shard",
    "run_shards",
    "shard_grid",
    "verify",
]


__getattr__ = lazy_names(__name__, _HOMES)
