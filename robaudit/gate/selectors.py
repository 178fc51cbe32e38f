"""Finding and naming result rows by (attack, norm, eps): shared by the thresholds and the baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from robaudit.config import EPS_TOLERANCE, eps_picks
from robaudit.report.eps import eps_text
from robaudit.results import WORST_CASE, AttackRow


class RowKey(Protocol):
    """What a row is found by: a result's AttackRow, or a row an audit's plan will make."""

    @property
    def attack(self) -> str: ...
    @property
    def norm(self) -> str: ...
    @property
    def eps(self) -> float: ...


R = TypeVar("R", bound=RowKey)


def selector(attack: str, norm: str, eps: float) -> str:
    """``attack:norm:eps`` as on the command line."""
    return f"{attack}:{norm}:{eps_text(norm, eps)}"


def find_rows(rows: Sequence[R], attack: str, norm: str, eps: float, decimals: int | None) -> list[R]:
    """The rows a selector picks, its eps matched at the precision it was written with (``decimals``,
    see ``config.eps_picks``): none, one, or for an ambiguous eps several."""
    same = [r for r in rows if r.attack.casefold() == attack.casefold() and r.norm == norm]
    picked = eps_picks(eps, decimals, (r.eps for r in same))
    return [r for r in same if r.eps in picked]


def ambiguous(found: Sequence[RowKey], written: str) -> str:
    """The one-line reason a selector that picks several rows is refused."""
    rows = " and ".join(selector(r.attack, r.norm, r.eps) for r in found)
    return (
        f"eps {written} matches {len(found)} rows, {rows}, at the precision it is written with; write "
        f"the eps exactly as the row shows it"
    )


def find_row(rows: Sequence[AttackRow], attack: str, norm: str, eps: float) -> AttackRow | None:
    """The row at exactly ``eps`` (within EPS_TOLERANCE): how two results' rows are paired."""
    for row in rows:
        if (
            row.attack.casefold() == attack.casefold()
            and row.norm == norm
            and abs(row.eps - eps) <= EPS_TOLERANCE
        ):
            return row
    return None


def available(rows: Sequence[RowKey]) -> str:
    """The selectors the rows answer, for a message about a selector that matched none."""
    selectors = list(dict.fromkeys(selector(r.attack, r.norm, r.eps) for r in rows))
    return ", ".join(selectors) if selectors else "none (the results have no attack rows)"


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def where(attack: str, norm: str, eps: float) -> str:
    """``at linf eps=0.1 (worst case)``: the row a message is about, in words."""
    budget = f"l0 {eps_text(norm, eps)} pixel{'s' if eps != 1 else ''}"
    if norm != "l0":
        budget = f"{norm} eps={eps_text(norm, eps)}"
    who = "worst case" if attack == WORST_CASE else f"attack {attack}"
    return f"at {budget} ({who})"
