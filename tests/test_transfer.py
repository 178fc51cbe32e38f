"""Transfer: the matrices against scan's white-box figures, copies, input conventions, the CLI and the schema.

Few samples (64, FGSM) on the committed sample LeNets and in-memory copies of one LeNet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from robaudit.api import run_audit
from robaudit.cli import app
from robaudit.config import AuditConfig
from robaudit.transfer.html import to_html
from robaudit.transfer.result import schema_path
from robaudit.transfer.run import run_transfer
from sample_models.lenet import LeNet

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "sample_models"
HOLDOUT = str(MODELS / "mnist_holdout.npz")
runner = CliRunner()


def _config(model: Path | str, **kw: object) -> AuditConfig:
    return AuditConfig(model=model, data=HOLDOUT, limit=64, eps=(0.25,), checks=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def two_models() -> tuple[list[AuditConfig], object]:
    configs = [_config(MODELS / "mnist_cnn.pt"), _config(MODELS / "mnist_cnn_adv.pt")]
    return configs, run_transfer(configs, "all")


def test_diagonal_equals_scan(two_models: tuple[list[AuditConfig], object]) -> None:
    configs, result = two_models
    matrix = result.matrices[0]  # type: ignore[attr-defined]
    for i, config in enumerate(configs):
        row = next(r for r in run_audit(config).rows if r.attack == "fgsm")
        diag = matrix.cell(i, i)
        assert diag.error_rate == pytest.approx(row.robust_error)  # denominator all: scan's robust error
        errors, n = diag.counts["source-correct"]
        assert (errors, n) == (row.n_clean_correct - row.n_robust, row.n_clean_correct)
        assert diag.confidence_on_errors == pytest.approx(row.mean_confidence_adversarial_errors)


def test_json_validates_and_html_renders(two_models: tuple[list[AuditConfig], object]) -> None:
    _, result = two_models
    doc = json.loads(json.dumps(result.to_dict()))  # type: ignore[attr-defined]
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    broken = {**doc, "denominator": "some"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(schema_path().read_text()))
    page = to_html(result)  # type: ignore[arg-type]
    assert page.count("background:rgb(") == 2 * 4  # two 2x2 heatmaps
    assert "data:image/png;base64," in page


def test_copy_of_the_same_model_transfers_fully(tmp_path: Path) -> None:
    copy = tmp_path / "copy.pt"
    shutil.copy(MODELS / "mnist_cnn.pt", copy)
    result = run_transfer([_config(MODELS / "mnist_cnn.pt"), _config(copy)], "source-correct")
    m = result.matrices[0]
    assert m.cell(0, 1).errors == m.cell(0, 0).errors > 0
    errors, n = m.cell(0, 1).counts["source-fooled"]
    assert errors == n > 0  # every example that fools the source fools its copy


class _NHWCNormalised(torch.nn.Module):
    """The same network taking NHWC input normalised with mean 0.5, std 0.25."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner((z * 0.25 + 0.5).permute(0, 3, 1, 2))


def test_input_conventions_give_the_same_cell() -> None:
    torch.manual_seed(0)
    net = LeNet().eval()
    state = torch.jit.load(str(MODELS / "mnist_cnn.pt")).state_dict()
    net.load_state_dict(state)
    other = LeNet().eval()
    other.load_state_dict(torch.jit.load(str(MODELS / "mnist_cnn_adv.pt")).state_dict())
    nhwc = _NHWCNormalised(net).eval()
    configs = [
        _config("adv.pt"),
        _config("nchw.pt"),
        _config("nhwc.pt", layout="nhwc", mean=(0.5,), std=(0.25,)),
    ]
    result = run_transfer(configs, "both-correct", modules=[other, net, nhwc])
    m = result.matrices[0]
    assert result.models[2].layout == "nhwc"
    assert m.cell(0, 1).counts == m.cell(0, 2).counts  # the adversarial model's examples, on both exports
    assert m.cell(1, 0).counts == m.cell(2, 0).counts  # each export's examples, on the adversarial model
    assert m.cell(1, 2).counts["source-fooled"][0] == m.cell(1, 1).counts["source-fooled"][0] > 0


def test_cli_one_model_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    one = runner.invoke(app, ["transfer", str(MODELS / "mnist_cnn.pt")])
    assert one.exit_code == 2 and "at least two models" in one.output
    missing = runner.invoke(app, ["transfer", str(MODELS / "mnist_cnn.pt"), str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 3 and "nope.onnx: no such model file" in missing.output
    assert "Traceback" not in missing.output


def test_cli_writes_a_valid_document(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    args = [
        str(MODELS / "mnist_cnn.pt"),
        str(MODELS / "mnist_cnn_adv.pt"),
        "--data",
        HOLDOUT,
        "--limit",
        "32",
    ]
    res = runner.invoke(
        app, ["transfer", *args, "--eps", "0.25", "--json", str(out), "--markdown", str(tmp_path / "t.md")]
    )
    assert res.exit_code == 0, res.output
    assert "denominator (both-correct)" in res.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    assert doc["denominator"] == "both-correct" and len(doc["matrices"][0]["cells"]) == 4
    assert "| made on \\ tried on |" in (tmp_path / "t.md").read_text()
