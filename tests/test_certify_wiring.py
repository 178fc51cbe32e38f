"""Certification wired into audits: the layer walker, soundness against attacks and dense sampling,
IBP at most CROWN through the scan path, the unsupported-layer note, the results JSON and the gate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from robaudit.api import run_audit
from robaudit.certify.bounds import InputSet, margin_lower_bounds
from robaudit.certify.run import note_for
from robaudit.certify.walk import forward, walk
from robaudit.cli import app
from robaudit.config import AuditConfig
from robaudit.models.base import Preprocessing
from robaudit.results import UPPER_BOUND_CAVEAT, AuditResult
from tests.conftest import HOLDOUT, SAMPLES
from tests.test_report_json import load_schema


def _mlp(seed: int, hidden: int = 12, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, hidden), act(), nn.Dropout(0.5), nn.Linear(hidden, 3)
    ).eval()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.b(torch.relu(self.a(h)) + h)


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_walker_reproduces_conv_batchnorm_pooling_and_preprocessing() -> None:
    model = _cnn()
    model[1].running_mean.uniform_(-0.5, 0.5)  # a BatchNorm that is not the identity
    model[1].running_var.uniform_(0.5, 2.0)
    pre = Preprocessing(input_range=(0.0, 255.0), mean=(100.0,), std=(50.0,), layout="nchw")
    logits = lambda z: model(pre.apply(z))  # noqa: E731 - the adapter's composition
    result = walk(logits, _x(4), 3)
    assert result.ops is not None, result.note
    x = _x(6, seed=1)
    with torch.no_grad():
        assert torch.allclose(forward(result.ops, x), model(pre.apply(x)).double(), atol=1e-4)


@pytest.mark.parametrize(
    ("model", "named"),
    [(_mlp(0, act=nn.Sigmoid), "sigmoid"), (_mlp(0, act=nn.Tanh), "tanh"), (_Residual(), "residual")],
)
def test_unsupported_layer_gives_no_certificate_and_names_it(model: nn.Module, named: str) -> None:
    result = walk(model, _x(2), 3)
    assert result.ops is None
    assert result.note is not None and named in result.note and "\n" not in result.note


def _margins_seen(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n: int = 3000
) -> torch.Tensor:
    """The smallest logit_y - max other logit over ``n`` random points of the L∞ ball ∩ box, per sample."""
    gen = torch.Generator().manual_seed(5)
    d = (torch.rand(n, *x.shape, generator=gen) * 2 - 1) * eps
    d[: n // 2] = d[: n // 2].sign() * eps  # corners, where ReLU networks reach their extremes
    with torch.no_grad():
        z = model((x + d).clamp(0, 1).reshape(-1, *x.shape[1:])).reshape(n, len(x), -1)
    true = z.gather(2, y.expand(n, -1)[..., None])[..., 0]
    other = z.scatter(2, y.expand(n, -1)[..., None], -torch.inf).amax(2)
    return (true - other).amin(0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.01, 0.03, 0.1]))
def test_certified_samples_are_never_fooled_by_dense_sampling(seed: int, eps: float) -> None:
    model = _mlp(seed)
    x = _x(16, seed)
    with torch.no_grad():
        y = model(x).argmax(1)
    ops = walk(model, x, 3).ops
    assert ops is not None
    for method in ("ibp", "crown"):
        lower, _ = margin_lower_bounds(ops, InputSet(x.double(), eps, "linf"), y, method, 3)
        certified = lower.amin(1) > 0
        seen = _margins_seen(model, x, y, eps)
        assert bool((seen[certified] > 0).all())  # no point of a certified sample's ball flips it
        assert bool((lower.amin(1) <= seen.double() + 1e-6).all())


def test_every_correct_sample_certifies_as_eps_goes_to_zero() -> None:
    model = _cnn()
    x = _x(20, 3)
    with torch.no_grad():
        y = model(x).argmax(1)
    ops = walk(model, x, 3).ops
    assert ops is not None
    lower, _ = margin_lower_bounds(ops, InputSet(x.double(), 1e-7, "linf"), y, "crown", 3)
    assert bool((lower.amin(1) > 0).all())


def test_other_norms_and_absent_exact_are_noted() -> None:
    w = walk(_mlp(1), _x(2), 3)
    assert "l1" in str(note_for("crown", "l1", w)) and "not certified" in str(note_for("crown", "l0", w))
    assert note_for("crown", "linf", w) is None


@pytest.fixture(scope="module")
def mlp_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cert") / "d.npz"
    x = _x(24, 7).numpy()
    with torch.no_grad():
        y = _mlp(3)(torch.from_numpy(x)).argmax(1).numpy()  # mostly correct, so there is something to certify
    y[:3] = (y[:3] + 1) % 3
    np.savez(path, x=x, y=y)
    return path


def _audit(data: Path, method: str, per_sample: Path) -> AuditResult:
    config = AuditConfig(
        model=Path("in-memory"), data=str(data), attacks=("fgsm", "pgd"), eps=(0.02, 0.1), certify=method,
        checks=False, per_sample_path=per_sample,
    )  # fmt: skip
    return run_audit(config, module=_mlp(3))


def test_ibp_at_most_crown_and_sound_through_the_scan_path(mlp_npz: Path, tmp_path: Path) -> None:
    ibp = _audit(mlp_npz, "ibp", tmp_path / "ibp.jsonl")
    crown = _audit(mlp_npz, "crown", tmp_path / "crown.jsonl")
    lines = {
        m: [json.loads(line) for line in (tmp_path / f"{m}.jsonl").read_text().splitlines()]
        for m in ("ibp", "crown")
    }
    for a, b in zip(lines["ibp"], lines["crown"], strict=True):
        for ea, eb in zip(a["attacks"], b["attacks"], strict=True):
            assert ea["certified"] is not None and eb["certified"] is not None
            assert not ea["certified"] or eb["certified"]  # IBP certified -> CROWN certified
            assert not (eb["certified"] and eb["fooled"])  # sound against the attacks
            if a["clean_pred"] != a["label"]:
                assert eb["certified"] is False
    for ri, rc in zip(ibp.rows, crown.rows, strict=True):
        assert ri.n_certified is not None and rc.n_certified is not None
        assert ri.n_certified <= rc.n_certified <= rc.n_robust
        assert rc.n_unknown == rc.n_robust - rc.n_certified
        assert rc.certification_method == "crown" and ri.certification_method == "ibp"
    assert any(r.n_certified for r in crown.rows)
    assert "[certified, attacked]" in crown.caveat
    jsonschema.validate(json.loads(json.dumps(crown.to_dict())), load_schema())


def test_cli_certify_crown_on_the_sample_onnx_model_with_the_gate(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = [
        "scan", SAMPLES / "mnist_cnn_adv.onnx", "--data", HOLDOUT, "--limit", "12", "--attack", "fgsm",
        "--eps", "0.01", "--certify", "crown", "--no-checks", "--json", out, "--markdown", tmp_path / "r.md",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    jsonschema.validate(payload, load_schema())
    worst = next(r for r in payload["rows"] if r["attack"] == "worst-case")
    assert worst["certification_method"] == "crown" and worst["n_certified"] >= 1
    assert worst["n_certified"] + worst["n_unknown"] == worst["n_robust"]
    assert "Certified bracket" in (tmp_path / "r.md").read_text()
    value = worst["certified_robust_accuracy"]
    gate = CliRunner().invoke(
        app,
        [str(a) for a in args] + ["--fail-over", f"certified_robust_accuracy@linf:0.01={value - 0.01:.4f}"],
    )
    assert gate.exit_code == 1, gate.output  # a gate on the certified figure that it does not meet
    assert "above the maximum" in gate.output


def test_results_written_before_certification_still_render(tmp_path: Path) -> None:
    from robaudit.report.markdown import render_markdown
    from robaudit.results import load_result
    from tests.report_fixture import fixed_result

    payload = fixed_result().to_dict()
    payload["schema_version"] = "1.1"
    for row in payload["rows"]:
        for key in ("n_certified", "certified_robust_accuracy", "certified_robust_accuracy_ci", "n_unknown"):
            del row[key]
        del row["certification_method"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(payload))
    old = load_result(path)
    assert old.rows[0].n_certified is None and old.caveat == UPPER_BOUND_CAVEAT
    assert "Certified bracket" not in render_markdown(old)


def test_exact_closes_the_gap_on_a_small_mlp(mlp_npz: Path, tmp_path: Path) -> None:
    """Runs once robaudit.certify.milp is present: exact leaves no linf sample unknown on a tiny MLP."""
    pytest.importorskip("robaudit.certify.milp")
    crown = _audit(mlp_npz, "crown", tmp_path / "crown.jsonl")
    exact = _audit(mlp_npz, "exact", tmp_path / "exact.jsonl")
    attack_rows = [r for r in exact.rows if r.attack != "exact"]  # the cascade's exact step: its own row
    for rc, re in zip(crown.rows, attack_rows, strict=True):
        assert re.certification_method == "crown+exact"
        assert rc.n_certified is not None and re.n_certified is not None
        assert rc.n_certified <= re.n_certified <= re.n_robust
        assert re.n_unknown == 0
    for worst in (r for r in exact.rows if r.attack == "worst-case"):  # closed: certified == attacked
        assert worst.n_certified == worst.n_robust and worst.n_refuted_unconfirmed == 0
