"""Finding and naming result rows by (attack, norm, eps): shared by the thresholds and the baseline."""

from __future__ import annotations

from collections.abc import Sequence

from robaudit.config import EPS_TOLERANCE
from robaudit.results import WORST_CASE, AttackRow


def eps_text(norm: str, eps: float) -> str:
    """Eps as a user would write it: a pixel count for l0, 8/255 where that is what it is."""
    if norm == "l0":
        return str(int(eps)) if float(eps).is_integer() else f"{eps:g}"
    if len(repr(float(eps))) > 8:
        grey = eps * 255
        if abs(grey - round(grey)) < 1e-9 and round(grey) > 0:
            return f"{round(grey)}/255"
    return f"{eps:.6g}"


def selector(attack: str, norm: str, eps: float) -> str:
    """``attack:norm:eps`` as on the command line."""
    return f"{attack}:{norm}:{eps_text(norm, eps)}"


def find_row(rows: Sequence[AttackRow], attack: str, norm: str, eps: float) -> AttackRow | None:
    for row in rows:
        if (
            row.attack.casefold() == attack.casefold()
            and row.norm == norm
            and abs(row.eps - eps) <= EPS_TOLERANCE
        ):
            return row
    return None


def available(rows: Sequence[AttackRow]) -> str:
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
