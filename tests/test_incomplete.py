"""An interrupted run: every figure and every report's headline counts the samples that finished."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.report.html import render_html
from robaudit.report.markdown import render_markdown
from robaudit.report.terminal import render
from robaudit.results import AuditResult
from tests.conftest import HOLDOUT, SAMPLES
from tests.test_report_html import parse
from tests.test_report_json import validate_result


class StopAfterFirstBatch:
    """A ProgressSink that stops the run (as Ctrl-C would) when the second batch reports in."""

    def __init__(self) -> None:
        self.tasks = 0
        self.batches = 0

    def add_task(self, description: str, total: int) -> int:
        self.tasks += 1
        return self.tasks - 1

    def advance(self, task: int, n: int) -> None:
        if task == 0:  # the first task counts samples: it advances once per finished batch
            self.batches += 1
            if self.batches == 2:
                raise KeyboardInterrupt


def interrupted_config() -> AuditConfig:
    return AuditConfig(
        model=SAMPLES / "mnist_cnn.pt",
        data=str(HOLDOUT),
        limit=60,
        batch_size=20,
        eps=(0.3,),
        attacks=("fgsm",),
        checks=False,
    )


@pytest.fixture(scope="module")
def partial() -> AuditResult:
    return run_audit(interrupted_config(), progress=StopAfterFirstBatch())


def test_every_figure_of_an_interrupted_run_counts_the_finished_samples(partial: AuditResult) -> None:
    assert partial.complete is False
    assert partial.data.n_evaluated == 20 and partial.data.n_requested == 60
    assert all(row.n_samples == 20 for row in partial.rows)
    assert partial.clean_accuracy == partial.n_clean_correct / 20
    radius = partial.radius[0]
    assert sum(radius.fooled_at) + radius.wrong_on_clean + radius.not_fooled == 20
    payload = json.loads(json.dumps(partial.to_dict()))
    validate_result(payload)
    assert payload["data"]["n_evaluated"] == 20 and payload["data"]["n_requested"] == 60
    assert AuditResult.from_dict(payload) == partial


def test_the_terminal_leads_with_incomplete_and_uses_the_finished_count(partial: AuditResult) -> None:
    out = io.StringIO()
    render(partial, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert text.splitlines()[0].startswith("INCOMPLETE: 20 of 60 samples evaluated")
    assert "evaluated 20 of 60 requested" in text
    assert f"({partial.n_clean_correct}/20," in text
    assert f"{partial.radius[0].not_fooled} of 20 samples withstood every eps" in text
    assert "/60" not in text and "of 60 samples withstood" not in text
    summary = text[text.index("What these numbers mean") :]
    assert "INCOMPLETE: 20 of 60 samples evaluated" in summary


def test_html_and_markdown_lead_with_incomplete(partial: AuditResult) -> None:
    doc = parse(render_html(partial))
    assert doc.by_id("incomplete").text().startswith("INCOMPLETE: 20 of 60 samples evaluated")
    header = next(doc.iter("header")).text()
    assert "20 of " in header and "60 requested" in header
    stat = doc.by_id("stat-clean").text()
    assert f"{partial.n_clean_correct} of 20;" in stat
    lines = render_markdown(partial).splitlines()
    assert lines[2] == "> **INCOMPLETE: 20 of 60 samples evaluated; every figure covers only those**"
    assert "n = 20 (" in lines[4] and "evaluated 20 of 60 requested" in lines[6]


def test_a_complete_run_has_no_incomplete_headline() -> None:
    config = AuditConfig(
        model=SAMPLES / "mnist_cnn.pt", data=str(HOLDOUT), limit=20, attacks=("fgsm",), checks=False
    )
    result = run_audit(config)
    assert result.complete and result.data.n_evaluated == result.data.n_requested == 20
    assert result.incomplete_headline() is None
    assert "INCOMPLETE" not in render_markdown(result) and 'id="incomplete"' not in render_html(result)


def test_an_interrupted_run_gated_against_its_baseline_exits_interrupted(partial: AuditResult) -> None:
    """The baseline was asked for the same samples; that this run finished fewer is the interruption's
    exit code (130), not a baseline that does not match."""
    from robaudit.gate import EXIT_INTERRUPTED, gate_result

    full = run_audit(interrupted_config())
    assert full.complete and full.data.n_evaluated == 60
    assert gate_result(partial, [], baseline=full).exit_code == EXIT_INTERRUPTED
