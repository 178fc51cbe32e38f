"""A compact Markdown summary for a CI job summary (``$GITHUB_STEP_SUMMARY``) or a pull-request comment.

Reads only the AuditResult and never imports torch. Every piece of text that comes from the user (paths,
class and attack names, notes) is escaped: GitHub renders inline HTML, and a ``|`` would split a table
cell.
"""

from __future__ import annotations

import re
from pathlib import Path

from robaudit.atomic import write_text_atomic
from robaudit.report.bracket import brackets
from robaudit.report.eps import eps_text
from robaudit.results import WORST_CASE, AttackRow, AuditResult, eot_summary

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~#])")
_LIST_MARKER = re.compile(r"^(\d+)([.)])|^([-+>=])")


def escape(text: object) -> str:
    """User text as inline Markdown that renders literally: one line, no HTML, no table breaks.

    HTML-special characters become entities and Markdown punctuation is backslash-escaped, so the text
    must not go inside a code span (where neither is decoded).
    """
    one_line = " ".join(str(text).splitlines())
    html_safe = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html_safe)


def _escape_block(text: object) -> str:
    """Like ``escape``, and a leading ``-``, ``>`` or ``1.`` does not start a nested block."""
    return _LIST_MARKER.sub(
        lambda m: f"{m.group(1)}\\{m.group(2)}" if m.group(1) else f"\\{m.group(3)}", escape(text)
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(interval: list[float] | None) -> str:
    if interval is None:
        return "n/a"
    low, high = interval
    return f"{100 * low:.1f}–{100 * high:.1f}%"


def _budget(norm: str, eps: float) -> str:
    """An eps on the [0, 1] scale, or for l0 a number of pixel locations."""
    if norm == "l0":
        n = int(eps)
        return f"{n} pixel{'s' if n != 1 else ''}"
    return eps_text(norm, eps)


def _threat(row: AttackRow) -> str:
    if row.norm == "l0":
        return f"l0, {_budget(row.norm, row.eps)}"
    return f"{escape(row.norm)} ε={_budget(row.norm, row.eps)}"


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _arrow(clean: float | None, adversarial: float | None) -> str:
    return f"{_pct(clean)} → {_pct(adversarial)}"


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    return lines


def _file_name(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1] or path


def _weakest_classes(result: AuditResult, worst: list[AttackRow], limit: int = 3) -> str | None:
    """The classes with the lowest robust accuracy under the strongest worst case, as one line."""
    if len(result.classes) < 2 or not worst:
        return None
    row = min(reversed(worst), key=lambda r: r.robust_accuracy)  # ties: the last (largest eps)
    per_class = [
        (acc, c)
        for c, acc in enumerate(row.per_class_robust_accuracy)
        if acc is not None and c < len(result.classes)
    ]
    if len({acc for acc, _ in per_class}) < 2:
        return None  # no class stands out
    per_class.sort(key=lambda t: (t[0], t[1]))
    parts = []
    for acc, c in per_class[:limit]:
        name = result.classes[c].name
        label = f"{c}" if name is None or name == str(c) else f"{c} ({escape(name)})"
        parts.append(f"{label}: {_pct(acc)}")
    return f"Least robust classes ({_threat(row)}, worst case): " + ", ".join(parts)


def _radius_line(result: AuditResult) -> str | None:
    if not result.radius:
        return None
    parts = []
    for r in result.radius:
        norm = escape(r.norm)
        if r.median is not None:
            bisected = ""
            if r.bisection_steps and r.bisected_median is not None:
                bisected = (
                    f" ({_budget(r.norm, r.bisected_median)} after {r.bisection_steps} bisection steps)"
                )
            parts.append(f"{norm} {_budget(r.norm, r.median)}{bisected}")
        else:
            parts.append(f"{norm} above {_budget(r.norm, max(r.eps))} (most samples survived the sweep)")
    return "Median robustness radius (smallest swept budget that fools a sample): " + "; ".join(parts)


def render_markdown(result: AuditResult) -> str:
    """The summary as GitHub-flavoured Markdown, ending in a newline."""
    worst = [r for r in result.rows if r.attack == WORST_CASE]
    per_attack = [r for r in result.rows if r.attack != WORST_CASE]
    lines = _intro(result)
    if worst:
        lines += _worst_case_tables(result, worst)
    if per_attack:
        lines += _per_attack_table(per_attack)
    lines += _bracket_table(result)
    for line in (_radius_line(result), _weakest_classes(result, worst)):
        if line:
            lines += ["", line]
    lines += _flags_and_notes(result)
    lines += ["", f"> {escape(result.caveat)}", "", _footer(result)]
    return "\n".join(lines) + "\n"


def _intro(result: AuditResult) -> list[str]:
    """The title, clean accuracy, and what was audited on what."""
    m, d = result.model, result.data
    shape = "x".join(map(str, m.sample_shape))
    headline = result.incomplete_headline()
    return [
        f"## robaudit: {escape(_file_name(m.path))}",
        "",
        *([f"> **{escape(headline)}**", ""] if headline else []),
        f"**Clean accuracy {_pct(result.clean_accuracy)}** (95% CI {_ci(result.clean_accuracy_ci)}), "
        f"n = {d.n_evaluated} ({result.n_clean_correct} correct), mean confidence {_pct(result.mean_confidence_clean)}",
        "",
        f"Model {escape(m.path)} ({escape(m.format)}, {shape} {escape(m.layout)}, {m.num_classes} classes, "
        f"{escape(m.output_kind)}); data {escape(d.description)}, evaluated {d.n_evaluated}"
        + (f" of {d.n_requested} requested" if headline and d.n_requested is not None else "")
        + f" ({escape(d.subset)})",
    ]


def _worst_case_tables(result: AuditResult, worst: list[AttackRow]) -> list[str]:
    """Robust accuracy and success per threat model, then the confidence clean -> adversarial."""
    target = str(result.settings.get("target", "none"))
    targeted = target != "none" and any(r.n_target_hits is not None for r in worst)
    header = ["threat model", "robust accuracy", "95% CI", "attack success", "95% CI"]
    align = [":--", "--:", "--:", "--:", "--:"]
    if targeted:
        header.append(f"target hits ({escape(target)})")
        align.append("--:")
    body = []
    for r in worst:
        cells = [
            _threat(r),
            f"**{_pct(r.robust_accuracy)}**",
            _ci(r.robust_accuracy_ci),
            _pct(r.attack_success_rate),
            _ci(r.attack_success_rate_ci),
        ]
        if targeted:
            cells.append("n/a" if r.n_target_hits is None else f"{r.n_target_hits}/{r.n_clean_correct}")
        body.append(cells)
    lines = ["", "### Worst case per threat model", *_table(header, align, body)]

    clean = result.confidence_clean
    body = [
        [
            _threat(r),
            _arrow(
                clean.overall if clean else result.mean_confidence_clean,
                r.confidence.overall if r.confidence else None,
            ),
            _arrow(clean.correct if clean else None, r.confidence.correct if r.confidence else None),
            _arrow(clean.errors if clean else None, r.confidence.errors if r.confidence else None),
        ]
        for r in worst
    ]
    return lines + [
        "",
        "#### Mean top-1 confidence, clean → adversarial (worst case)",
        *_table(
            ["threat model", "all samples", "correct", "misclassified"],
            [":--", "--:", "--:", "--:"],
            body,
        ),
    ]


def _per_attack_table(per_attack: list[AttackRow]) -> list[str]:
    """Each attack's own row, folded away: the worst-case table above is what most readers need."""
    onnx_checked = any(r.n_fooled_converted is not None for r in per_attack)
    header = ["attack", "threat model", "robust accuracy", "attack success", "fooled first", "seconds"]
    align = [":--", ":--", "--:", "--:", "--:", "--:"]
    if onnx_checked:
        header.append("fooled: converted → ONNX Runtime")
        align.append("--:")
    body = []
    for r in per_attack:
        cells = [
            escape(r.attack),
            _threat(r),
            _pct(r.robust_accuracy),
            _pct(r.attack_success_rate),
            "n/a" if r.n_fooled_by_attack is None else str(r.n_fooled_by_attack),
            _seconds(r.seconds),
        ]
        if onnx_checked:
            confirmed = r.n_clean_correct - r.n_robust
            cells.append("n/a" if r.n_fooled_converted is None else f"{r.n_fooled_converted} → {confirmed}")
        body.append(cells)
    return [
        "",
        "<details><summary>Per attack (cheapest first; each row also counts samples fooled by the attacks "
        "before it)</summary>",
        "",
        *_table(header, align, body),
        "",
        "</details>",
    ]


def _bracket_table(result: AuditResult) -> list[str]:
    """Per certified threat model, the bracket [certified, attacked] and a bar of it."""
    found = brackets(result)
    if not found:
        return []
    body = [
        [
            escape(b.threat),
            _pct(b.certified),
            _pct(b.attacked),
            str(b.n_unknown),
            escape(b.method),
            f"`{b.bar(30)}`",
        ]
        for b in found
    ]
    header = ["threat model", "certified", "attacked", "unknown", "method", "bar (# certified, - unknown)"]
    return ["", "### Certified bracket", *_table(header, ["---", "---:", "---:", "---:", "---", "---"], body)]


def _flags_and_notes(result: AuditResult) -> list[str]:
    lines: list[str] = []
    if result.flags:
        lines += [
            "",
            "**Reliability flags**",
            *(
                f"- :warning: `{f.code}`: {_escape_block(f.message)}; {_escape_block(f.advice)}"
                for f in result.flags
            ),
        ]
    if result.notes:
        lines += ["", "**Notes**", *(f"- {_escape_block(note)}" for note in result.notes)]
    return lines


def _footer(result: AuditResult) -> str:
    """Version, time, seed, device, run time and the model's hash, in small print."""
    s = result.settings
    seconds = result.timings.get("total_seconds")
    return (
        f"<sub>robaudit {escape(result.robaudit_version)}, {escape(result.created_utc)}, "
        f"seed {escape(s.get('seed', 'n/a'))}, device {escape(s.get('device', 'n/a'))}"
        + (f", {escape(eot)}" if (eot := eot_summary(s)) else "")
        + (f", {seconds:.1f} s" if seconds is not None else "")
        + f", model sha256 {escape(result.model.sha256[:12])}</sub>"
    )


def write_markdown(result: AuditResult, path: Path | str) -> None:
    """Write the summary through a temporary file and a rename (never half a file)."""
    write_text_atomic(path, render_markdown(result))
