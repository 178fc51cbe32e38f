"""Rich terminal output: the results table and the upper-bound caveat (the progress bar: ``progress.py``).

Reads only the AuditResult. Rich drops colour codes by itself when output is piped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from robaudit.report.bracket import brackets
from robaudit.report.eps import eps_text
from robaudit.results import WORST_CASE, AuditResult, eot_summary

if TYPE_CHECKING:
    from robaudit.gate.thresholds import CheckOutcome


def plural(n: int, word: str) -> str:
    """``1 check``, ``2 checks``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f}"


def _threat(norm: str, eps: float) -> str:
    return f"l0 {eps:g} px" if norm == "l0" else f"{norm} eps={eps_text(norm, eps)}"


def render(result: AuditResult, console: Console) -> None:
    """The results for a reader at a terminal (80 columns or more; plain text when piped)."""
    _render_header(result, console)
    console.print(_rows_table(result))
    _render_brackets(result, console)
    _render_row_notes(result, console)
    for flag in result.flags:
        console.print(
            f"[bold yellow]flag[/] {escape(flag.code)}: {escape(flag.message)}; {escape(flag.advice)}",
            highlight=False,
        )
    _render_summary(result, console)


def _render_header(result: AuditResult, console: Console) -> None:
    """Model, data, device, the notes, then clean accuracy and confidence."""
    m, d = result.model, result.data
    headline = result.incomplete_headline()
    if headline:
        console.print(f"[bold red]{escape(headline)}[/]", highlight=False)
    console.print(
        f"[bold]model[/] {escape(m.path)} ({escape(m.format)}, input {'x'.join(map(str, m.sample_shape))} "
        f"{m.layout}, {m.num_classes} classes, {m.output_kind})"
    )
    requested = f" of {d.n_requested} requested" if headline and d.n_requested is not None else ""
    console.print(
        f"[bold]data[/]  {escape(d.description)}; evaluated {d.n_evaluated}{requested} ({escape(d.subset)})"
    )
    console.print(f"[bold]device[/] {escape(str(result.settings['device']))}, seed {result.settings['seed']}")
    eot = eot_summary(result.settings)
    if eot:
        console.print(f"[bold]eot[/]   {escape(eot)}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note[/] {escape(note)}", highlight=False)
    cc = result.confidence_clean
    console.print(
        f"\n[bold]clean accuracy[/] {_pct(result.clean_accuracy)} ({result.n_clean_correct}/{d.n_evaluated}, "
        f"95% CI {_ci(result.clean_accuracy_ci)}), mean confidence {_pct(result.mean_confidence_clean)}"
        + (f" ({_pct(cc.correct)} when right, {_pct(cc.errors)} when wrong)" if cc else ""),
        highlight=False,
    )


def _rows_table(result: AuditResult) -> Table:
    """One line per attack row; the worst case in bold."""
    table = Table(
        title="Robustness under attack (eps on the [0, 1] pixel scale; l0: pixels changed)",
        title_justify="left",
    )
    # ART names run long (art:CarliniLInfMethod): the figures' headers take two lines to leave the
    # attack column room, and a name that still does not fit wraps rather than being cut short.
    table.add_column("attack", overflow="fold")
    table.add_column("norm", no_wrap=True)
    table.add_column("eps", justify="right", no_wrap=True)
    table.add_column("robust\nacc", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    table.add_column("success", justify="right", no_wrap=True)
    table.add_column("conf adv\nerr", justify="right", no_wrap=True)
    previous = None
    for row in result.rows:
        is_worst = row.attack == WORST_CASE
        alone = sum(1 for r in result.rows if (r.norm, r.eps) == (row.norm, row.eps)) == 2
        if is_worst and alone and previous is not None and previous.n_robust == row.n_robust:
            continue  # one attack in this threat model, and its row already is the worst case
        previous = row
        table.add_row(
            escape(row.attack),
            row.norm,
            eps_text(row.norm, row.eps),
            _pct(row.robust_accuracy),
            _ci(row.robust_accuracy_ci),
            _pct(row.attack_success_rate),
            _pct(row.mean_confidence_adversarial_errors),
            style="bold" if is_worst else None,
        )
    return table


def _render_row_notes(result: AuditResult, console: Console) -> None:
    """Below the table: target hits, the ONNX Runtime confirmation and the robustness radius."""
    if result.settings.get("target", "none") != "none":
        for row in (r for r in result.rows if r.attack == WORST_CASE):
            console.print(
                f"  targeted ({result.settings['target']}) {_threat(row.norm, row.eps)}: {row.n_target_hits} of "
                f"{row.n_clean_correct} clean-correct samples now classified as their target",
                highlight=False,
            )
    checked = [r for r in result.rows if r.n_fooled_converted is not None and r.attack != WORST_CASE]
    if result.model.backend == "onnx" and checked:
        differ = [r for r in checked if r.n_fooled_converted != r.n_clean_correct - r.n_robust]
        if not differ:
            console.print(
                "  every adversarial example found on the converted graph was confirmed on ONNX Runtime",
                highlight=False,
            )
        for row in differ:
            console.print(
                f"  {escape(row.attack)} {_threat(row.norm, row.eps)}: fooled {row.n_fooled_converted} on the "
                f"converted graph, {row.n_clean_correct - row.n_robust} confirmed on ONNX Runtime",
                highlight=False,
            )
    for radius in result.radius:
        largest = max(radius.eps)
        median = (
            eps_text(radius.norm, radius.median)
            if radius.median is not None
            else f"above {eps_text(radius.norm, largest)}"
        )
        if radius.bisection_steps and radius.bisected_median is not None:
            median += f" ({radius.bisected_median:.4g} after {radius.bisection_steps} bisection steps)"
        console.print(
            f"  median robustness radius ({radius.norm}, over the swept eps): {median}; "
            f"{radius.not_fooled} of {result.data.n_evaluated} samples withstood every eps",
            highlight=False,
        )


def _render_brackets(result: AuditResult, console: Console) -> None:
    """Per certified threat model: certified (#) to attacked, the unknown gap (-) between them."""
    found = brackets(result)
    if not found:
        return
    console.print("[bold]certified .. attacked[/] (# certified, - unknown, . not robust)")
    for b in found:
        console.print(f"  {escape(b.threat):<16} |{escape(b.bar())}| {escape(b.sentence())}", highlight=False)


def _render_summary(result: AuditResult, console: Console) -> None:
    """The worst case per threat model in words, and the upper-bound caveat."""
    summary = [
        f"Worst case at {_threat(r.norm, r.eps)}: robust accuracy {_pct(r.robust_accuracy)} "
        f"(95% CI {_ci(r.robust_accuracy_ci)}%), {_pct(r.attack_success_rate)} of correctly classified "
        "samples fooled."
        for r in result.rows
        if r.attack == WORST_CASE
    ]
    headline = result.incomplete_headline()
    lead = [f"[bold red]{escape(headline)}[/]", ""] if headline else []
    console.print(
        Panel(
            "\n".join(
                [
                    *lead,
                    *summary,
                    *(escape(b.sentence()) for b in brackets(result)),
                    "",
                    escape(result.caveat),
                ]
            ),
            title="What these numbers mean",
            border_style="red" if headline else "cyan",
        )
    )


def render_gate(outcomes: Sequence[CheckOutcome], console: Console) -> None:
    """One line per gate check, then the verdict."""
    failed = [o for o in outcomes if not o.passed]
    for o in outcomes:
        mark = "[green]pass[/]" if o.passed else "[red]FAIL[/]"
        console.print(f"{mark} {escape(o.name)}: {escape(o.message)}", highlight=False)
    verdict = (
        f"[bold red]gate failed[/]: {len(failed)} of {plural(len(outcomes), 'check')}"
        if failed
        else f"[bold green]gate passed[/]: {plural(len(outcomes), 'check')}"
    )
    console.print(verdict, highlight=False)
