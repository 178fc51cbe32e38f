"""Exact verification's counterexamples counted as fooled: an attack deliberately too weak (FGSM at a
large eps, Sparse-RS trying black and white only) leaves samples that exact verification proves not
robust; their counterexamples, re-checked on ONNX Runtime, close the bracket. Resume carries them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.audit.records import RecordLayout
from robaudit.config import AuditConfig
from robaudit.results import AuditResult
from tests.conftest import quiet_export
from tests.test_certify_onepixel_scan import _bump, _grid_data
from tests.test_report_json import load_schema

EPS = 0.1


def tiny_mlp() -> nn.Module:
    """16 -> 12 -> 3: small enough that every exact program finishes in well under a second."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    quiet_export(
        model, (torch.zeros(2, *shape),), str(path), dynamo=False, opset_version=13,
        input_names=["x"], dynamic_axes={"x": {0: "N"}},
    )  # fmt: skip
    return path


def mlp_files(folder: Path, n: int = 24) -> tuple[Path, Path]:
    """The tiny MLP as ONNX, and ``n`` images (N, 1, 4, 4) on [0, 1] labelled by it (all correct)."""
    model = tiny_mlp()
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    np.savez(folder / "d.npz", x=x.numpy(), y=y)
    return export_onnx(model, (1, 4, 4), folder / "mlp.onnx"), folder / "d.npz"


def _ort_pred(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x.astype(np.float32)})[0]).argmax(1)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rows(result: AuditResult) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.to_dict()["rows"]]


@pytest.fixture(scope="module")
def linf_scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, AuditResult]:
    """FGSM at L∞ 0.1 then exact, on ONNX Runtime, in shards of 8 saved to a run directory."""
    folder = tmp_path_factory.mktemp("exact_cex")
    model, data = mlp_files(folder)
    config = AuditConfig(
        model=model, data=str(data), attacks=("fgsm",), eps=(EPS,), certify="exact", checks=False,
        batch_size=8, run_dir=folder / "run", per_sample_path=folder / "s.jsonl",
        adversarial_path=folder / "adv.npz",
    )  # fmt: skip
    return model, data, folder, run_audit(config)


def test_confirmed_counterexamples_count_in_the_worst_case(linf_scan: tuple) -> None:
    _, _, folder, result = linf_scan
    fgsm, exact, worst = result.rows
    assert (fgsm.attack, exact.attack, worst.attack) == ("fgsm", "exact", "worst-case")
    n, n_cc = worst.n_samples, worst.n_clean_correct
    attack_fooled = n_cc - fgsm.n_robust
    assert exact.n_fooled_by_attack is not None and exact.n_fooled_by_attack > 0, "FGSM missed none"
    assert attack_fooled > 0, "the test wants both kinds"
    expected = n_cc - attack_fooled - exact.n_fooled_by_attack
    assert worst.n_robust == exact.n_robust == expected
    assert worst.robust_accuracy == pytest.approx(expected / n)
    lines = _lines(folder / "s.jsonl")
    entries = [{e["attack"]: e for e in line["attacks"]} for line in lines]
    newly = [e for e in entries if e["exact"]["fooled"] and not e["fgsm"]["fooled"]]
    assert len(newly) == exact.n_fooled_by_attack
    assert all(e["exact"]["certified"] is False and 0 < e["exact"]["linf"] <= EPS + 1e-6 for e in newly)
    note = next(n for n in result.notes if "exact verification proved" in n)
    assert f"{exact.n_fooled_by_attack} of its counterexamples" in note
    jsonschema.validate(json.loads(json.dumps(result.to_dict())), load_schema())


def test_counterexamples_lie_in_the_ball_and_fool_onnx_runtime(linf_scan: tuple) -> None:
    model, data, folder, result = linf_scan
    with np.load(folder / "adv.npz") as saved:
        exact = saved["attack"] == "exact"
        x_adv, index, label = saved["x_adv"][exact], saved["index"][exact], saved["label"][exact]
    assert len(x_adv) == result.rows[1].n_fooled_by_attack
    with np.load(data) as d:
        x = d["x"][index]
    assert float(np.abs(x_adv.astype(np.float64) - x).max()) <= EPS + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert bool((_ort_pred(model, x_adv) != label).all())  # a session of its own: really misclassified
    assert any(e.attack == "exact" for e in result.gallery)


def test_the_bracket_closes_where_exact_finished(linf_scan: tuple) -> None:
    worst = linf_scan[3].rows[-1]
    assert worst.certification_method == "crown+exact" and worst.n_refuted_unconfirmed == 0
    assert worst.n_unknown == 0
    assert worst.n_certified == worst.n_robust  # certified == attacked
    assert worst.certified_robust_accuracy == worst.robust_accuracy


def test_resume_recomputes_a_lost_shard_to_the_same_records(linf_scan: tuple, tmp_path: Path) -> None:
    model, data, folder, result = linf_scan
    (folder / "run" / "batch-000000008.npz").unlink()  # one shard to run again, two loaded
    config = AuditConfig(
        model=model, data=str(data), attacks=("fgsm",), eps=(EPS,), certify="exact", checks=False,
        batch_size=8, run_dir=folder / "run", per_sample_path=tmp_path / "s.jsonl",
        adversarial_path=tmp_path / "adv.npz",
    )  # fmt: skip
    resumed = run_audit(config)
    assert (tmp_path / "s.jsonl").read_bytes() == (folder / "s.jsonl").read_bytes()
    assert _rows(resumed) == _rows(result)
    assert [(e.sample_index, e.attack) for e in resumed.gallery] == [
        (e.sample_index, e.attack) for e in result.gallery
    ]
    with np.load(tmp_path / "adv.npz") as a, np.load(folder / "adv.npz") as b:
        assert np.array_equal(a["x_adv"], b["x_adv"]) and list(a["attack"]) == list(b["attack"])


def test_one_pixel_sweep_counterexample_fools_onnx_runtime(tmp_path: Path) -> None:
    """Sparse-RS tries black and white only; the sweep's grey level 128/255 flips the class, on ONNX
    Runtime too: one pixel changed, on the 8-bit grid."""
    module = _bump(0.5, 0.05)
    data = _grid_data(tmp_path / "d.npz", module, 3, first_pixel_zero=True)
    model = export_onnx(module, (1, 6, 6), tmp_path / "bump.onnx")
    config = AuditConfig(
        model=model, data=str(data), attacks=("sparse-rs",), certify="exact", checks=False, queries=300,
        adversarial_path=tmp_path / "adv.npz",
    )  # fmt: skip
    attack, exact, worst = run_audit(config).rows
    assert (attack.n_robust, exact.n_fooled_by_attack, worst.n_robust, worst.n_unknown) == (3, 3, 0, 0)
    with np.load(tmp_path / "adv.npz") as saved, np.load(data) as d:
        x_adv, label, x = saved["x_adv"], saved["label"], d["x"][saved["index"]]
    assert list(np.load(tmp_path / "adv.npz")["attack"]) == ["exact"] * 3
    changed = x_adv != x
    assert bool((changed.reshape(3, -1).sum(1) == 1).all())  # one pixel
    levels = x_adv[changed] * 255
    assert np.allclose(levels, np.round(levels), atol=1e-4)  # a level k/255
    assert bool((_ort_pred(model, x_adv) != label).all())


def test_the_gate_picks_the_exact_row_before_and_after_the_audit(linf_scan: tuple) -> None:
    from robaudit.errors import UsageError
    from robaudit.gate.parse import parse_threshold
    from robaudit.gate.precheck import precheck_gate
    from robaudit.gate.thresholds import evaluate_checks

    text = "robust_accuracy@exact:linf:0.1=0.5"
    check = parse_threshold(text, "min", "--fail-under")

    def config(certify: str) -> AuditConfig:
        return AuditConfig(
            model="m.onnx", attacks=("fgsm",), eps=(EPS,), certify=certify,
            gate_checks=[dataclasses.asdict(check)],
        )  # fmt: skip

    precheck_gate(config("exact"))
    with pytest.raises(UsageError, match="no row exact:linf:0.1"):
        precheck_gate(config("crown"))
    result = linf_scan[3]
    (outcome,) = evaluate_checks(result, [check])
    assert outcome.value == pytest.approx(result.rows[1].robust_accuracy)


def test_only_points_onnx_runtime_misclassifies_are_confirmed(tmp_path: Path) -> None:
    """``confirm`` on a real ONNX Runtime adapter: a correctly classified point (the clean image) is not
    confirmed, whatever the verifier said; a point outside the ball is projected into it first."""
    from robaudit.audit.counterexamples import confirm
    from robaudit.audit.preparation import prepare
    from robaudit.certify.milp import exact_verdicts
    from robaudit.certify.walk import walk

    model, data = mlp_files(tmp_path, n=8)
    prepared = prepare(AuditConfig(model=model, data=str(data), checks=False))
    with np.load(data) as d:
        x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"]).long()
    ops = walk(tiny_mlp(), x, 3).ops
    assert ops is not None
    verdicts, points = exact_verdicts(ops, x.double(), y, EPS, "linf", 5.0)
    refuted = [i for i, v in enumerate(verdicts) if v is False]
    assert len(refuted) >= 2
    real, fake = refuted[0], refuted[1]
    far = (points[real] - x[real].double()) * 5 + x[real].double()  # 5x the step: outside the ball
    examples = {real: far, fake: x[fake].double()}  # the clean image: classified correctly
    found = confirm(prepared.adapter, x, y, examples, np.ones(len(y), bool), ("linf", EPS), 1)
    assert found.rows.tolist() == [real]
    assert float((found.x_adv[0].double() - x[real].double()).abs().max()) <= EPS + 1e-6
    assert int(_ort_pred(model, found.x_adv.numpy())[0]) == int(found.pred[0]) != int(y[real])
    none = confirm(prepared.adapter, x, y, examples, np.zeros(len(y), bool), ("linf", EPS), 1)
    assert len(none.rows) == 0  # samples the cascade does not attack never count


def test_an_unconfirmed_refutation_is_unknown_and_noted() -> None:
    """Records where exact refuted two samples and the runtime confirmed one: the other stays robust in
    the attacked figure, is unknown in the bracket, and the note and the row count it."""
    from robaudit.attacks.fgsm import FGSM
    from robaudit.audit.certified import certified_rows, exact_note, exact_threats
    from robaudit.audit.plan import Stage, ThreatModel
    from robaudit.audit.records import SampleRecords
    from robaudit.audit.summary import attack_rows
    from robaudit.certify.run import CERTIFIED, REFUTED
    from robaudit.certify.walk import walk

    stages = [Stage(ThreatModel("linf", EPS), (FGSM(),))]
    labels = np.array([0, 1, 2, 0])
    records = SampleRecords.blank(
        RecordLayout.of(stages, targeted=False, certify="exact"), np.arange(4), np.arange(4), labels, 4
    )
    records.clean_pred[:] = labels
    for rec in records.adversarial.values():
        rec.pred[:] = labels
    records.adversarial[("exact", "linf", EPS)].pred[1] = 2  # sample 1: confirmed; sample 2: not
    records.certified[("linf", EPS)][:] = [CERTIFIED, REFUTED, REFUTED, CERTIFIED]
    w = walk(tiny_mlp(), torch.rand(2, 1, 4, 4), 3)
    exact = exact_threats(stages, "exact", w)
    rows, worst = attack_rows(records, stages, "torch", 3, exact)
    rows, _ = certified_rows(rows, records, stages, worst, "exact", w)
    fgsm, exact_row, worst_row = rows
    assert (fgsm.n_robust, exact_row.n_robust, worst_row.n_robust) == (4, 3, 3)
    assert exact_row.n_fooled_by_attack == 1
    assert worst_row.n_unknown == 1 and worst_row.n_refuted_unconfirmed == 1
    assert fgsm.n_unknown == 1  # sample 1 is known not robust, not unknown, on the attack's row too
    (note,) = exact_note(records, stages, worst)
    assert "proved 2 samples not robust" in note and "1 of its counterexamples" in note
    assert "1 did not reproduce there" in note


def test_a_one_pixel_counterexample_inside_the_l2_ball_is_flagged(tmp_path: Path) -> None:
    """The sweep's pixel (0 -> 128/255, an L2 change of 0.5) lies in the L2 ball of 0.6 that FGSM, whose
    gradient is zero off the band, leaves robust: the weaker-attack-wins flag names exact among the
    one-pixel steps."""
    module = _bump(0.5, 0.05)
    data = _grid_data(tmp_path / "d.npz", module, 3, first_pixel_zero=True)
    config = AuditConfig(
        model=Path("in-memory"), data=str(data), attacks=("fgsm", "sparse-rs"), norms=("l2",), eps=(0.6,),
        certify="exact", queries=300,
    )  # fmt: skip
    result = run_audit(config, module=module)
    l2_worst = next(r for r in result.rows if r.norm == "l2" and r.attack == "worst-case")
    assert l2_worst.n_robust == 3
    flag = next(f for f in result.flags if f.code == "weaker-attack-wins")
    assert "sparse-rs, exact" in flag.message and "fooled 3 samples" in flag.message
