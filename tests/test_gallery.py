"""The gallery keeps examples of every attack of a threat model, not only of the cheapest one, and the
same ones however the run was cut into batches, interrupted or resumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.report.html import render_html
from robaudit.results import WORST_CASE, AuditResult
from tests.conftest import HOLDOUT, SAMPLES
from tests.test_incomplete import StopAfterFirstBatch
from tests.test_report_html import parse

GALLERY = 3


def shown(result: AuditResult) -> list[tuple[object, ...]]:
    """Which samples the gallery shows, under which attack and with which predictions. (A PGD point can
    differ in the last float bits with the batch's size, see conftest.assert_same_points.)"""
    return [(e.sample_index, e.attack, e.norm, e.eps, e.label, e.adv_pred) for e in result.gallery]


def config(batch_size: int = 40, run_dir: Path | None = None) -> AuditConfig:
    return AuditConfig(
        model=SAMPLES / "mnist_cnn.pt",
        data=str(HOLDOUT),
        limit=40,
        batch_size=batch_size,
        eps=(0.1,),
        attacks=("fgsm", "pgd"),
        steps=10,
        checks=False,
        reports={"gallery_size": GALLERY},
        run_dir=run_dir,
    )


@pytest.fixture(scope="module")
def result() -> AuditResult:
    return run_audit(config())


def test_every_attack_that_fooled_a_sample_has_its_own_examples(result: AuditResult) -> None:
    fooled = {r.attack: r.n_fooled_by_attack for r in result.rows if r.attack != WORST_CASE}
    # FGSM fools more than the gallery holds, so a gallery of the first successes would be FGSM alone.
    assert fooled["fgsm"] > GALLERY and fooled["pgd"] > 0, fooled
    kept = {a: sum(1 for ex in result.gallery if ex.attack == a) for a in fooled}
    assert kept == {a: min(GALLERY, n or 0) for a, n in fooled.items()}
    assert result.settings["gallery_size"] == GALLERY


def test_the_gallery_does_not_depend_on_batching_interruption_or_resumption(
    result: AuditResult, tmp_path: Path
) -> None:
    assert shown(run_audit(config(batch_size=7))) == shown(result)
    run_dir = tmp_path / "run"
    first = run_audit(config(batch_size=10, run_dir=run_dir), progress=StopAfterFirstBatch())
    assert not first.complete and len(list(run_dir.glob("batch-*.npz"))) == 1
    resumed = run_audit(config(batch_size=10, run_dir=run_dir))
    assert resumed.complete and shown(resumed) == shown(result)
    again = run_audit(config(batch_size=10))  # the same batches: the saved shard's images come back
    assert resumed.gallery == again.gallery


def test_the_html_gallery_shows_the_worst_case_then_each_attack(result: AuditResult) -> None:
    gallery = parse(render_html(result)).by_id("gallery")
    titles = [h.text() for h in gallery.iter("h4")]
    assert titles[0] == f"worst case: the first {GALLERY} samples fooled, by any attack"
    assert [t.split(":")[0] for t in titles[1:]] == ["fgsm", "pgd"][-len(titles) + 1 :]
    assert any(t.startswith("pgd: ") for t in titles)
    assert len(list(gallery.iter("img"))) == 3 * len(result.gallery)  # every example once
