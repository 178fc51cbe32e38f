"""The bracket every report shows where a certificate ran: per threat model, true robust accuracy lies
between the certified figure (a lower bound) and the attacked one (an upper bound)."""

from __future__ import annotations

from dataclasses import dataclass

from robaudit.report.eps import eps_text
from robaudit.results import WORST_CASE, AuditResult


@dataclass(frozen=True)
class Bracket:
    norm: str
    eps: float
    certified: float
    attacked: float
    n_unknown: int
    method: str

    @property
    def threat(self) -> str:
        return f"{self.norm} eps={eps_text(self.norm, self.eps)}"

    def sentence(self) -> str:
        return (
            f"At {self.threat}, true robust accuracy lies in [{100 * self.certified:.1f}% (certified, "
            f"{self.method}), {100 * self.attacked:.1f}% (attacked)]; {self.n_unknown} unknown"
        )

    def bar(self, width: int = 40) -> str:
        """A text bar over [0, 100%]: '#' certified, '-' unknown (between the bounds), '.' not robust."""
        low = round(self.certified * width)
        high = max(low, round(self.attacked * width))
        return "#" * low + "-" * (high - low) + "." * (width - high)


def brackets(result: AuditResult) -> list[Bracket]:
    """One per certified threat model, from its worst-case row, in the rows' order."""
    return [
        Bracket(
            r.norm,
            r.eps,
            r.certified_robust_accuracy,
            r.robust_accuracy,
            r.n_unknown or 0,
            r.certification_method,
        )
        for r in result.rows
        if r.attack == WORST_CASE
        and r.certified_robust_accuracy is not None
        and r.certification_method is not None
    ]
