"""The audit's configuration: sections declared once, validated once, then frozen (see docs/architecture.md)."""

from robaudit.config.audit import AuditConfig, AuditSections
from robaudit.config.values import (
    DEFAULT_BATCH_SIZE,
    EPS_TOLERANCE,
    Layout,
    Norm,
    OutputKind,
    check_linf_eps,
    eps_decimals,
    eps_match,
    eps_picks,
    parse_batch_size,
    parse_eps,
    parse_target,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EPS_TOLERANCE",
    "AuditConfig",
    "AuditSections",
    "Layout",
    "Norm",
    "OutputKind",
    "check_linf_eps",
    "eps_decimals",
    "eps_match",
    "eps_picks",
    "parse_batch_size",
    "parse_eps",
    "parse_target",
]
