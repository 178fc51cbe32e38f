"""Rich terminal output: a progress bar per attack, the results table and the upper-bound caveat.

Reads only the AuditResult. Rich drops colour codes by itself when output is piped.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from robaudit.results import WORST_CASE, AuditResult


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


class RichProgress:
    """The runner's ProgressSink: one bar per attack and eps, with an ETA."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._started = False

    def __enter__(self) -> RichProgress:
        return self  # the display starts with the first task, so errors while loading print no bar

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            self._progress.stop()

    def add_task(self, description: str, total: int) -> int:
        if not self._started:
            self._progress.start()
            self._started = True
        return int(self._progress.add_task(description, total=total))

    def advance(self, task: int, n: int) -> None:
        self._progress.advance(task, n)  # type: ignore[arg-type]


def render(result: AuditResult, console: Console) -> None:
    m, d = result.model, result.data
    console.print(
        f"[bold]model[/] {m.path} ({m.format}, input {'x'.join(map(str, m.sample_shape))} {m.layout}, "
        f"{m.num_classes} classes, {m.output_kind})"
    )
    console.print(f"[bold]data[/]  {d.description}; evaluated {d.n_evaluated} ({d.subset})")
    console.print(f"[bold]device[/] {result.settings['device']}, seed {result.settings['seed']}")
    for note in result.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    console.print(
        f"\n[bold]clean accuracy[/] {_pct(result.clean_accuracy)} "
        f"({result.n_clean_correct}/{d.n_evaluated}), mean confidence {_pct(result.mean_confidence_clean)}"
    )

    table = Table(
        title="Robustness under attack (eps on the [0, 1] pixel scale; l0: pixels changed)",
        title_justify="left",
    )
    table.add_column("attack")
    table.add_column("norm")
    table.add_column("eps", justify="right")
    table.add_column("robust acc", justify="right")
    table.add_column("robust err", justify="right")
    table.add_column("success", justify="right")
    table.add_column("conf on adv err", justify="right")
    worst_rows = [r for r in result.rows if r.attack == WORST_CASE]
    previous = None
    for row in result.rows:
        is_worst = row.attack == WORST_CASE
        alone = sum(1 for r in result.rows if (r.norm, r.eps) == (row.norm, row.eps)) == 2
        if is_worst and alone and previous is not None and previous.n_robust == row.n_robust:
            continue  # one attack in this threat model, and its row already is the worst case
        previous = row
        style = "bold" if is_worst else None
        table.add_row(
            row.attack,
            row.norm,
            f"{row.eps:.4g}",
            _pct(row.robust_accuracy),
            _pct(row.robust_error),
            _pct(row.attack_success_rate),
            _pct(row.mean_confidence_adversarial_errors),
            style=style,
        )
    console.print(table)
    if result.settings.get("target", "none") != "none":
        for row in worst_rows:
            console.print(
                f"  targeted ({result.settings['target']}) {row.norm} eps={row.eps:g}: {row.n_target_hits} of "
                f"{row.n_clean_correct} clean-correct samples now classified as their target",
                highlight=False,
            )
    if m.backend == "onnx" and any(r.n_fooled_converted is not None for r in result.rows):
        for row in result.rows:
            if row.attack == WORST_CASE or row.norm == "l0":
                continue
            fooled = row.n_clean_correct - row.n_robust
            console.print(
                f"  {row.attack} {row.norm} eps={row.eps:g}: fooled {row.n_fooled_converted} on the converted "
                f"graph, {fooled} confirmed on ONNX Runtime",
                highlight=False,
            )
    console.print(Panel(result.caveat, title="What these numbers mean", border_style="cyan"))
