"""The transfer document on a terminal (Rich tables) and as Markdown; reads only the document."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from robaudit.report.eps import eps_text
from robaudit.transfer.result import TransferMatrix, TransferResult


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _title(m: TransferMatrix) -> str:
    return f"{m.attack} {m.norm} eps={eps_text(m.norm, m.eps)}"


def _rate_text(m: TransferMatrix, s: int, t: int) -> str:
    c = m.cell(s, t)
    ci = f" [{_pct(c.error_rate_ci[0])}, {_pct(c.error_rate_ci[1])}]" if c.error_rate_ci else ""
    return f"{_pct(c.error_rate)}{ci} ({c.errors}/{c.n})"


def render_transfer(result: TransferResult, console: Console) -> None:
    names = [m.name for m in result.models]
    console.print(
        f"[bold]transfer[/] {len(names)} models on {result.data['n_samples']} samples of {result.data['path']}"
    )
    for model in result.models:
        console.print(
            f"  {model.name}: clean accuracy {100 * model.clean_accuracy:.2f}% ({model.backend}, {model.layout})"
        )
    console.print(f"denominator ({result.denominator}): {result.denominator_text}", highlight=False)
    for m in result.matrices:
        if m.error is not None:
            console.print(f"[red]{_title(m)}: failed[/] ({m.error})", highlight=False)
            continue
        for what, text in (
            ("error rate % [95% Wilson] (errors/n)", _rate_text),
            ("confidence on errors %", lambda m, s, t: _pct(m.cell(s, t).confidence_on_errors)),
        ):
            table = Table(title=f"{_title(m)}: {what}; rows: made on, columns: tried on")
            table.add_column("made on \\ tried on")
            for name in names:
                table.add_column(name, justify="right")
            for s, name in enumerate(names):
                table.add_row(name, *(text(m, s, t) for t in range(len(names))))
            console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def to_markdown(result: TransferResult) -> str:
    names = [m.name for m in result.models]
    lines = [
        "# robaudit transfer",
        "",
        f"{len(names)} models on {result.data['n_samples']} samples of `{result.data['path']}`.",
        "",
        f"**Denominator ({result.denominator}):** {result.denominator_text}.",
        "",
        "| model | clean accuracy | backend | layout |",
        "|---|---|---|---|",
        *(f"| {m.name} | {100 * m.clean_accuracy:.2f}% | {m.backend} | {m.layout} |" for m in result.models),
    ]
    header = ["| made on \\ tried on | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in result.matrices:
        lines += ["", f"## {_title(m)}", ""]
        if m.error is not None:
            lines.append(f"failed: {m.error}")
            continue
        lines += ["Error rate % [95% Wilson interval] (errors/n):", "", *header]
        lines += [
            f"| {n} | " + " | ".join(_rate_text(m, s, t) for t in range(len(names))) + " |"
            for s, n in enumerate(names)
        ]
        lines += ["", "Confidence on errors %:", "", *header]
        lines += [
            f"| {n} | "
            + " | ".join(_pct(m.cell(s, t).confidence_on_errors) for t in range(len(names)))
            + " |"
            for s, n in enumerate(names)
        ]
    return "\n".join(lines) + "\n"
