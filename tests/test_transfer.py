"""Transfer: the matrices against scan's white-box figures, copies, input conventions, the CLI and the schema.

Few samples (64, FGSM) on the committed sample LeNets and in-memory copies of one LeNet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robaudit.api import run_audit
from robaudit.audit.preparation import prepare
from robaudit.cli import app
from robaudit.config import AuditConfig
from robaudit.transfer.examples import batches, make_examples, predict
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


class _Permuted(torch.nn.Module):
    """The same network with its classes relabelled: its class perm[c] is the inner network's class c."""

    def __init__(self, inner: torch.nn.Module, perm: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("order", torch.argsort(perm))  # out[:, perm[c]] = inner[:, c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[:, self.order]


def test_permuted_classes_fool_the_original_as_the_permutation_predicts() -> None:
    net = LeNet().eval()
    net.load_state_dict(torch.jit.load(str(MODELS / "mnist_cnn.pt")).state_dict())
    perm = torch.arange(10)
    perm[[3, 5, 8]] = torch.tensor([5, 8, 3])  # a 3-cycle: 3 -> 5 -> 8 -> 3, the other classes fixed
    permuted = _Permuted(net, perm).eval()
    configs = [_config("permuted.pt"), _config("original.pt")]
    result = run_transfer(configs, "source-correct", modules=[permuted, net])
    cell = result.matrices[0].cell(0, 1)  # made on the permuted model, tried on the original

    # The permuted model's examples, made as transfer makes them, predicted by both networks directly.
    prepared = prepare(configs[0], permuted)
    try:
        labels = prepared.dataset.labels[prepared.indices]
        clean_x = np.concatenate([x for _, x, _ in batches(configs[0], prepared)])
        clean_p = predict(prepared, clean_x)[0]
        adv = make_examples(configs[0], prepared, clean_p).adversarial[("fgsm", "linf", 0.25)]
    finally:
        prepared.restore()
    with torch.no_grad():
        on_permuted = permuted(torch.from_numpy(adv)).argmax(1).numpy()
        on_original = net(torch.from_numpy(adv)).argmax(1).numpy()
    assert (on_original == torch.argsort(perm).numpy()[on_permuted]).all()  # the original's class: perm^-1

    source_ok = clean_p == labels
    fooled = source_ok & (on_permuted != labels)
    # Outside the cycle the relabelling keeps right and wrong, so every such example fools the original
    # too; inside it, an example the permuted model sends to perm[y] lands on y for the original.
    lands_on_label = fooled & (torch.argsort(perm).numpy()[on_permuted] == labels)
    assert cell.counts["source-fooled"] == [int(fooled.sum()) - int(lands_on_label.sum()), int(fooled.sum())]
    assert cell.counts["source-correct"] == [
        int((source_ok & (on_original != labels)).sum()),
        int(source_ok.sum()),
    ]
    assert fooled.sum() > 20
    cycle = np.isin(labels, [3, 5, 8])
    assert source_ok[~cycle].mean() > 0.9 and source_ok[cycle].mean() < 0.2  # relabelled classes are wrong


def test_html_renders_in_chromium(two_models: tuple[list[AuditConfig], object], tmp_path: Path) -> None:
    """The transfer page in headless Chromium (the scan report's harness): no errors, no requests off the
    page, no scripts, every example image decoded and shown pixel for pixel, every cell's figure shown."""
    from tests.test_report_html import BROWSERS, Browser, visit

    binary = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip(f"no Chromium or Chrome binary on PATH (looked for {', '.join(BROWSERS)})")
    _, result = two_models
    path = tmp_path / "transfer.html"
    path.write_text(to_html(result), encoding="utf-8")  # type: ignore[arg-type]
    chrome = Browser(binary, tmp_path / "profile")
    try:
        chrome.send("Browser.getVersion", timeout=90)  # the first start can be slow
        seen = visit(chrome, path.as_uri())
    finally:
        chrome.close()
    assert seen.errors == [] and seen.dialogs == [] and seen.page["scripts"] == 0
    assert all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
    examples = result.matrices[0].examples  # type: ignore[attr-defined]
    images = seen.page["images"]
    assert examples and len(images) == 2 * len(examples)  # original and adversarial per example
    for image in images:
        assert image["complete"] and (image["naturalWidth"], image["naturalHeight"]) == (28, 28), image
        assert image["width"] >= 2 * image["naturalWidth"] and image["rendering"] == "pixelated", image
    for c in result.matrices[0].cells:  # type: ignore[attr-defined]
        assert f"{100 * c.error_rate:.2f}%" in seen.page["text"]
        assert f"{c.errors}/{c.n}" in seen.page["text"]
