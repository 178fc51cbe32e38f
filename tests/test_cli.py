"""The command line end to end through typer's CliRunner: outputs, JSON report, exit codes, one-line errors.

No mocks: every test runs the real ``robaudit scan`` on the shipped sample models or on tiny exported
models and data written here. CliRunner's output is not a terminal, as in a CI log.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robaudit.cli import app
from tests.conftest import HOLDOUT, REPO, SAMPLES, unconvertible_model

MNIST_CNN = SAMPLES / "mnist_cnn.onnx"
BOX = "│┃║"  # Rich table/panel borders that split wrapped text across lines

runner = CliRunner()


def scan(*args: object, env: dict[str, str | None] | None = None) -> Any:
    return runner.invoke(app, ["scan", *(str(a) for a in args)], env=env)


def stderr_of(result: Any) -> str:
    try:
        return result.stderr
    except ValueError:  # older click: stderr mixed into output
        return result.output


def flat(text: str) -> str:
    """Join Rich's wrapped lines: drop box borders and collapse whitespace."""
    for ch in BOX:
        text = text.replace(ch, " ")
    return " ".join(text.split())


def assert_ok(result: Any) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"


def assert_one_error_line(result: Any, code: int) -> str:
    """Exit ``code``, one non-blank line of output in all (stdout and stderr) and it is the error line."""
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}: {result.output}"
    assert "Traceback" not in result.output
    for text in (result.output, stderr_of(result)):
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("robaudit: error: "), lines
    return [line for line in result.output.splitlines() if line.strip()][0]


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def is_number(value: object, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def row_numbers(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["rows"]]


def test_a_long_report_path_is_printed_on_one_line(tmp_path: Path) -> None:
    """The "wrote PATH" lines are not wrapped at the terminal's width: a user copies the path."""
    folder = tmp_path / ("reports-" + "x" * 90)
    folder.mkdir()
    out, md = folder / "out.json", folder / "summary.md"
    result = scan(MNIST_CNN, "--data", HOLDOUT, "--limit", 8, "--eps", "0.1", "--json", out, "--markdown", md)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert f"wrote {out}" in lines and f"wrote {md}" in lines


# --- 1. end to end on the shipped sample model ---------------------------------------------------------


def test_end_to_end_sample_model_text_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = scan(MNIST_CNN, "--data", HOLDOUT, "--limit", 300, "--eps", "0.1", "--eps", "0.2", "--json", out)
    assert_ok(result)
    text = flat(result.stdout)
    assert "clean accuracy" in text
    assert " 0.1 " in text and " 0.2 " in text
    assert "upper bound" in text
    assert f"wrote {out}" in text

    raw = out.read_text(encoding="utf-8")
    report = json.loads(raw)
    assert next(iter(report)) == "schema_version"
    assert raw.lstrip().startswith('{\n  "schema_version"')
    assert isinstance(report["schema_version"], str)

    assert is_number(report["clean_accuracy"], float) and 0.9 <= report["clean_accuracy"] <= 1.0
    assert is_number(report["n_clean_correct"], int)
    assert is_number(report["mean_confidence_clean"], float)
    assert is_number(report["data"]["n_evaluated"], int) and report["data"]["n_evaluated"] == 300
    assert report["n_clean_correct"] == round(report["clean_accuracy"] * 300)
    assert all(is_number(e, float) for e in report["settings"]["eps"])

    assert [(r["attack"], r["eps"]) for r in report["rows"]] == [
        ("fgsm", 0.1),
        ("worst-case", 0.1),
        ("fgsm", 0.2),
        ("worst-case", 0.2),
    ]
    rows = [r for r in report["rows"] if r["attack"] == "fgsm"]
    worst = {r["eps"]: r for r in report["rows"] if r["attack"] == "worst-case"}
    assert worst[0.1]["n_robust"] == rows[0]["n_robust"]  # one attack at the smallest eps
    # The worst case at 0.2 also counts what FGSM found at 0.1, so it is never above either.
    assert worst[0.2]["n_robust"] <= min(rows[1]["n_robust"], worst[0.1]["n_robust"])
    for row in rows:
        for key in (
            "eps",
            "robust_accuracy",
            "robust_error",
            "attack_success_rate",
            "mean_confidence_adversarial_errors",
            "seconds",
        ):
            assert is_number(row[key], float), (key, row[key])
        for key in ("n_samples", "n_clean_correct", "n_robust", "n_fooled_converted"):
            assert is_number(row[key], int), (key, row[key])
        assert row["n_samples"] == 300
        assert row["robust_accuracy"] <= report["clean_accuracy"]
        assert row["robust_accuracy"] == pytest.approx(row["n_robust"] / 300)
        assert row["robust_error"] == pytest.approx(1 - row["robust_accuracy"], abs=1e-12)
        assert row["n_fooled_converted"] == row["n_clean_correct"] - row["n_robust"]
    assert "every adversarial example found on the converted graph was confirmed on ONNX Runtime" in text
    by_eps = {r["eps"]: r for r in rows}
    assert by_eps[0.2]["robust_accuracy"] <= by_eps[0.1]["robust_accuracy"]
    assert by_eps[0.2]["robust_accuracy"] < report["clean_accuracy"]  # the attack fools something

    model = report["model"]
    assert model["backend"] == "onnx" and model["converter"] in {"onnx2pytorch", "onnx2torch"}
    assert is_number(model["parity_max_abs_diff"], float) and 0 <= model["parity_max_abs_diff"] < 1e-4
    assert "upper bound" in report["caveat"]


# --- 2. the sample models meet their claims on the 2,000 holdout images -------------------------------


def holdout_report(tmp_path: Path, model: Path, *extra: object) -> dict[str, Any]:
    out = tmp_path / f"{model.stem}.json"
    result = scan(model, "--data", HOLDOUT, "--eps", "0.1", "--json", out, *extra)
    assert_ok(result)
    report = load_json(out)
    assert report["data"]["n_evaluated"] == 2000 and report["data"]["subset"] == "all"
    assert [(r["attack"], r["eps"]) for r in report["rows"]] == [("fgsm", 0.1), ("worst-case", 0.1)]
    return report


def headline(report: dict[str, Any]) -> tuple[float, int, float, int]:
    row = report["rows"][0]
    return report["clean_accuracy"], report["n_clean_correct"], row["robust_accuracy"], row["n_robust"]


@pytest.fixture(scope="module")
def cnn_holdout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return holdout_report(tmp_path_factory.mktemp("cnn"), MNIST_CNN)


def test_sample_cnn_clean_accuracy(cnn_holdout: dict[str, Any]) -> None:
    assert cnn_holdout["clean_accuracy"] >= 0.97
    assert cnn_holdout["rows"][0]["robust_accuracy"] < cnn_holdout["clean_accuracy"]


def test_adversarially_trained_sample_is_more_robust(tmp_path: Path, cnn_holdout: dict[str, Any]) -> None:
    adv = holdout_report(tmp_path, SAMPLES / "mnist_cnn_adv.onnx")
    assert adv["clean_accuracy"] >= 0.97
    assert adv["rows"][0]["robust_accuracy"] > cnn_holdout["rows"][0]["robust_accuracy"]


def test_nhwc_softmax_sample_matches_cnn(tmp_path: Path, cnn_holdout: dict[str, Any]) -> None:
    report = holdout_report(tmp_path, SAMPLES / "mnist_nhwc_softmax.onnx")
    assert report["model"]["layout"] == "nhwc"
    assert report["model"]["output_kind"] == "logits"  # the final Softmax was stripped for the attack
    assert headline(report) == headline(cnn_holdout)


def test_torchscript_sample_matches_onnx(tmp_path: Path, cnn_holdout: dict[str, Any]) -> None:
    report = holdout_report(tmp_path, SAMPLES / "mnist_cnn.pt")
    assert report["model"]["backend"] == "torch"
    assert headline(report) == headline(cnn_holdout)


def test_state_dict_sample_with_arch_matches_onnx(
    tmp_path: Path, cnn_holdout: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    report = holdout_report(
        tmp_path, Path("sample_models/mnist_cnn_state.pt"), "--arch", "sample_models.lenet:LeNet"
    )
    assert report["model"]["backend"] == "torch"
    assert headline(report) == headline(cnn_holdout)


# --- 3. default data ------------------------------------------------------------------------------------


def test_no_data_uses_bundled_mnist_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = scan(MNIST_CNN, "--limit", 100, "--json", out)
    assert_ok(result)
    text = flat(result.stdout)
    assert "no --data given" in text and "bundled MNIST" in text
    report = load_json(out)
    assert report["data"]["n_total"] == 10000 and report["data"]["n_evaluated"] == 100
    assert any("bundled MNIST" in note for note in report["notes"])


def test_no_data_for_non_mnist_shape_is_a_usage_error(tmp_path: Path) -> None:
    model = unconvertible_model(tmp_path / "m.onnx")
    out = tmp_path / "out.json"
    line = assert_one_error_line(scan(model, "--json", out), 2)
    assert "--data" in line and "1x4x4" in line
    assert not out.exists()


def test_no_data_for_a_model_of_undeclared_shape_that_refuses_mnist(tmp_path: Path) -> None:
    from tests.conftest import SmallCNN, quiet_export

    torch.manual_seed(0)
    path = tmp_path / "rgb_dynamic.onnx"
    quiet_export(
        SmallCNN(channels=3).eval(), (torch.rand(1, 3, 28, 28),), str(path), dynamo=False, opset_version=13,
        input_names=["x"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}},
    )  # fmt: skip
    line = assert_one_error_line(scan(path), 2)
    assert "the model does not take MNIST's 1x28x28 images, so pass --data" in line


# --- 4. bad input: exit 3, one line naming the file, nothing written ------------------------------------


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def _small(small_npz: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(small_npz) as npz:
        return npz["x"], npz["y"]


def _bad_input_case(
    name: str, tmp_path: Path, small_npz: Path, exports: dict[str, Path]
) -> tuple[list[object], Path, list[str]]:
    """(scan arguments, the file the message must name, words it must contain)."""
    x, y = _small(small_npz)
    if name == "corrupt_model":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"\x08\xff\xfe garbage, not a protobuf \x00" * 20)
        return [model, "--data", small_npz], model, ["ONNX"]
    if name == "missing_model":
        model = tmp_path / "absent.onnx"
        return [model, "--data", small_npz], model, ["no such"]
    if name == "shape_mismatch":
        data = _npz(tmp_path / "rgb.npz", np.zeros((8, 3, 32, 32), np.uint8), np.arange(8) % 10)
        return [MNIST_CNN, "--data", data], data, ["3x32x32", "1x28x28"]
    if name == "label_outside_classes":
        y = y.copy()
        y[5] = 12
        data = _npz(tmp_path / "y12.npz", x, y)
        return [MNIST_CNN, "--data", data], data, ["12"]
    if name == "nan_pixels":
        xf = x.astype(np.float32) / 255
        xf[7, 10, 10] = np.nan
        data = _npz(tmp_path / "nan.npz", xf, y)
        return [MNIST_CNN, "--data", data], data, ["NaN"]
    if name == "pixels_outside_range":
        data = _npz(tmp_path / "f255.npz", x.astype(np.float32), y)
        return [MNIST_CNN, "--data", data], data, ["--data-range 0,255"]
    if name == "pickled_without_trust":
        return [exports["pickled"], "--data", small_npz], exports["pickled"], ["--trust-model"]
    if name == "unconvertible_fgsm_only":
        model = unconvertible_model(tmp_path / "quickgelu.onnx")
        rng = np.random.default_rng(0)
        data = _npz(tmp_path / "four.npz", rng.random((16, 1, 4, 4)).astype(np.float32), np.arange(16))
        return [model, "--data", data, "--attack", "fgsm"], model, ["could not be converted"]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "corrupt_model",
        "missing_model",
        "shape_mismatch",
        "label_outside_classes",
        "nan_pixels",
        "pixels_outside_range",
        "pickled_without_trust",
        "unconvertible_fgsm_only",
    ],
)
def test_bad_input_exits_3_with_one_line(
    name: str, tmp_path: Path, small_npz: Path, exports: dict[str, Path]
) -> None:
    args, culprit, words = _bad_input_case(name, tmp_path, small_npz, exports)
    out = tmp_path / "report" / "out.json"
    line = assert_one_error_line(scan(*args, "--json", out), 3)
    assert str(culprit) in line
    for word in words:
        assert word in line, (word, line)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no half-written temp file either


# --- 5. float64 data --------------------------------------------------------------------------------------


def test_float64_data_runs_with_a_note(tmp_path: Path, small_npz: Path) -> None:
    x, y = _small(small_npz)
    data = _npz(tmp_path / "f64.npz", x.astype(np.float64) / 255.0, y)
    out64, out8 = tmp_path / "f64.json", tmp_path / "u8.json"
    result = scan(MNIST_CNN, "--data", data, "--json", out64)
    assert_ok(result)
    text = flat(result.stdout)
    assert "float64" in text and "float32" in text
    report = load_json(out64)
    assert any("float64" in note and "float32" in note for note in report["notes"])
    assert_ok(scan(MNIST_CNN, "--data", small_npz, "--json", out8))
    assert report["clean_accuracy"] == load_json(out8)["clean_accuracy"]


def test_onepixel_and_targeted_pgd_through_the_cli(tmp_path: Path, small_npz: Path) -> None:
    out = tmp_path / "out.json"
    result = scan(
        MNIST_CNN,
        "--data",
        small_npz,
        "--attack",
        "onepixel",
        "--attack",
        "pgd",
        "--steps",
        "10",
        "--pixels",
        "2",
        "--population",
        "16",
        "--generations",
        "3",
        "--norm",
        "linf",
        "--norm",
        "l2",
        "--eps",
        "0.3",
        "--target",
        "least-likely",
        "--json",
        out,
    )
    assert_ok(result)
    text = flat(result.stdout)
    assert "onepixel l0 2" in text and "targeted (least-likely)" in text
    report = load_json(out)
    keys = [(r["attack"], r["norm"], r["eps"]) for r in report["rows"]]
    assert keys == [
        ("pgd", "linf", 0.3),
        ("worst-case", "linf", 0.3),
        ("pgd", "l2", 0.3),
        ("worst-case", "l2", 0.3),
        ("onepixel", "l0", 2.0),
        ("worst-case", "l0", 2.0),
    ]
    assert report["settings"]["threat_models"] == ["linf eps=0.3", "l2 eps=0.3", "l0 2 pixels"]
    assert report["settings"]["onepixel"]["population"] == 16
    assert report["settings"]["target"] == "least-likely"
    pgd = report["rows"][0]
    assert (
        is_number(pgd["n_target_hits"], int)
        and 0 < pgd["n_target_hits"] <= pgd["n_clean_correct"] - pgd["n_robust"]
    )
    assert report["rows"][1]["n_fooled_by_attack"] is None  # worst-case rows have no attack of their own


# --- 6. usage errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--eps", "abc"], ["--eps", "abc"]),
        (["--eps", "-0.1"], ["--eps", "'-0.1'", "eps must be >= 0"]),
        (["--eps", "-8/255"], ["--eps", "eps must be >= 0"]),
        (["--eps", "2"], ["--eps", "[0, 1]", "8/255"]),
        (["--eps", "8/0"], ["--eps", "8/0"]),
        (["--attack", "nosuch"], ["--attack", "nosuch"]),
        (["--input-range", "1,0"], ["--input-range"]),
        (["--npz-keys", "x"], ["--npz-keys"]),
        (["--norm", "l7"], ["--norm"]),
        (["--target", "someone"], ["--target", "least-likely"]),
        (["--target", "10"], ["--target 10", "10 classes"]),
        (["--attack", "art:NoSuchAttack"], ["art:NoSuchAttack", "ART has no evasion attack"]),
        (["--attack-kwargs", "art:DeepFool={oops"], ["--attack-kwargs", "JSON"]),
        (["--attack-kwargs", "art:DeepFool=[1]"], ["--attack-kwargs", "JSON object"]),
        (["--attack-kwargs", "art:DeepFool={}"], ["--attack-kwargs art:DeepFool", "no such --attack"]),
        (["--attack", "onepixel", "--population", "2"], ["--population"]),
        (["--batch-size", "lots"], ["--batch-size", "positive whole number of samples or auto", "'lots'"]),
        (["--batch-size", "0"], ["--batch-size", "positive whole number"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    args: list[str], words: list[str], tmp_path: Path, small_npz: Path
) -> None:
    out = tmp_path / "out.json"
    line = assert_one_error_line(scan(MNIST_CNN, "--data", small_npz, *args, "--json", out), 2)
    for word in words:
        assert word in line, (word, line)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_device_cuda_without_cuda_is_a_usage_error(tmp_path: Path, small_npz: Path) -> None:
    out = tmp_path / "out.json"
    line = assert_one_error_line(scan(MNIST_CNN, "--data", small_npz, "--device", "cuda", "--json", out), 2)
    assert "--device" in line and "cuda" in line
    assert not out.exists()


def test_state_dict_without_arch_is_a_usage_error(
    tmp_path: Path, small_npz: Path, exports: dict[str, Path]
) -> None:
    out = tmp_path / "out.json"
    line = assert_one_error_line(scan(exports["state_dict"], "--data", small_npz, "--json", out), 2)
    assert str(exports["state_dict"]) in line and "--arch" in line
    assert not out.exists()


# --- 7. eps as a fraction ---------------------------------------------------------------------------------


def test_eps_fraction_is_parsed(tmp_path: Path, small_npz: Path) -> None:
    out = tmp_path / "out.json"
    assert_ok(scan(MNIST_CNN, "--data", small_npz, "--eps", "8/255", "--json", out))
    report = load_json(out)
    assert report["settings"]["eps"] == [pytest.approx(8 / 255, abs=1e-15)]
    assert report["rows"][0]["eps"] == pytest.approx(0.03137254901960784, abs=1e-15)


# --- 8. piped output ----------------------------------------------------------------------------------------


def test_piped_output_has_no_ansi_codes(small_npz: Path) -> None:
    result = scan(
        MNIST_CNN,
        "--data",
        small_npz,
        env={"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None, "TERM": "xterm-256color"},
    )
    assert_ok(result)
    assert "clean accuracy" in result.output
    assert "\x1b[" not in result.output
    assert "\x1b[" not in result.stdout and "\x1b[" not in stderr_of(result)


# --- 9. --limit and --seed --------------------------------------------------------------------------------


def test_limit_is_a_stratified_subset_and_seed_repeats(tmp_path: Path) -> None:
    reports = []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        result = scan(MNIST_CNN, "--data", HOLDOUT, "--limit", 200, "--seed", 7, "--json", out)
        assert_ok(result)
        assert "stratified" in flat(result.stdout)
        reports.append(load_json(out))
    first, second = reports
    assert first["data"]["n_evaluated"] == 200 and first["data"]["n_total"] == 2000
    assert "stratified" in first["data"]["subset"] and "seed 7" in first["data"]["subset"]
    assert all(row["n_samples"] == 200 for row in first["rows"])
    assert row_numbers(first) == row_numbers(second)
    assert first["clean_accuracy"] == second["clean_accuracy"]
    assert not math.isnan(first["rows"][0]["robust_accuracy"])


# --- 10. help -------------------------------------------------------------------------------------------------


def test_root_help_lists_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert_ok(result)
    text = flat(result.output)
    assert "Exit codes" in text
    for phrase in (
        "0 passed",
        "1 gate failed",
        "2 usage",
        "3 unreadable",
        "5 out of resources",
        "70 internal error",
    ):
        assert phrase in text, phrase


def test_scan_help_explains_eps_scale() -> None:
    result = runner.invoke(app, ["scan", "--help"])
    assert_ok(result)
    text = flat(result.output)
    assert "--eps" in text and "[0, 1] scale" in text and "8/255" in text


# --- 8. per-sample outputs and re-rendering ---------------------------------------------------------------


def test_per_sample_lines_and_saved_adversarials_match_the_report(tmp_path: Path, small_npz: Path) -> None:
    out, lines, adv = tmp_path / "r.json", tmp_path / "s.jsonl", tmp_path / "adv.npz"
    result = scan(
        MNIST_CNN, "--data", small_npz, "--eps", "0.1", "--eps", "0.2", "--json", out,
        "--per-sample", lines, "--save-adversarial", adv,
    )  # fmt: skip
    assert_ok(result)
    report = load_json(out)
    records = [json.loads(line) for line in lines.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in records] == list(range(64))
    with np.load(small_npz) as npz:
        assert [r["label"] for r in records] == npz["y"].tolist()
    for row in (r for r in report["rows"] if r["attack"] == "fgsm"):
        outcomes = [a for r in records for a in r["attacks"] if a["eps"] == row["eps"]]
        assert sum(a["fooled"] for a in outcomes) == row["n_clean_correct"] - row["n_robust"]
        assert all(a["linf"] <= row["eps"] + 1e-6 for a in outcomes)
    with np.load(adv) as saved:
        fooled = {(r["index"], a["eps"]) for r in records for a in r["attacks"] if a["fooled"]}
        assert {(int(i), float(e)) for i, e in zip(saved["index"], saved["eps"], strict=True)} == fooled
        x = np.load(small_npz)["x"].astype(np.float32) / 255
        for k in range(len(saved["index"])):
            delta = np.abs(saved["x_adv"][k, 0] - x[saved["index"][k]]).max()
            assert delta <= saved["eps"][k] + 1e-6
            assert saved["adv_pred"][k] != saved["label"][k]


def test_report_command_rerenders_saved_results(tmp_path: Path, small_npz: Path) -> None:
    out = tmp_path / "r.json"
    assert_ok(scan(MNIST_CNN, "--data", small_npz, "--json", out))
    again = runner.invoke(app, ["report", str(out)])
    assert_ok(again)
    first = flat(scan(MNIST_CNN, "--data", small_npz).stdout)
    table = first[first.index("clean accuracy") : first.index("What these numbers mean")]
    assert table in flat(again.stdout)  # the same table, from the file alone


def test_report_command_rejects_a_foreign_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    line = assert_one_error_line(runner.invoke(app, ["report", str(bad)]), 3)
    assert "not a robaudit results file" in line
    line = assert_one_error_line(runner.invoke(app, ["report", str(tmp_path / "missing.json")]), 3)
    assert "no such results file" in line


def test_an_output_gets_its_missing_last_folder_but_no_deeper_ones(tmp_path: Path, small_npz: Path) -> None:
    deep = tmp_path / "nonexistent" / "dir" / "x.json"
    line = assert_one_error_line(scan(MNIST_CNN, "--data", small_npz, "--json", deep, "--no-checks"), 2)
    assert f"--json {deep}" in line and "does not exist" in line
    assert not (tmp_path / "nonexistent").exists()
    report = tmp_path / "reports" / "x.json"
    assert_ok(scan(MNIST_CNN, "--data", small_npz, "--json", report, "--no-checks"))
    assert json.loads(report.read_text(encoding="utf-8"))["complete"] is True
    # robaudit report checks its outputs the same way
    line = assert_one_error_line(runner.invoke(app, ["report", str(report), "--html", str(deep)]), 2)
    assert "--html" in line and "does not exist" in line
    assert not (tmp_path / "nonexistent").exists()


def test_unwritable_output_fails_before_the_audit(tmp_path: Path, small_npz: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    line = assert_one_error_line(scan(MNIST_CNN, "--data", small_npz, "--json", folder), 2)
    assert "--json" in line and "is a folder" in line


def test_html_and_markdown_from_scan_equal_those_rerendered_from_json(
    tmp_path: Path, small_npz: Path
) -> None:
    out, html, md = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"
    result = scan(
        MNIST_CNN, "--data", small_npz, "--eps", "0.1", "--eps", "0.2", "--radius-bisect", "3",
        "--json", out, "--html", html, "--markdown", md,
    )  # fmt: skip
    assert_ok(result)
    assert "after 3 bisection steps" in flat(result.stdout)
    html2, md2 = tmp_path / "again.html", tmp_path / "again.md"
    assert_ok(runner.invoke(app, ["report", str(out), "--html", str(html2), "--markdown", str(md2)]))
    assert html.read_bytes() == html2.read_bytes()
    assert md.read_text(encoding="utf-8") == md2.read_text(encoding="utf-8")
    report = load_json(out)
    assert report["radius"][0]["bisection_steps"] == 3
    assert "robustness radius" in md.read_text(encoding="utf-8").lower()


# --- 9. the gate, the baseline and the remaining exit codes -----------------------------------------------


def test_gate_passes_with_exit_0_and_fails_with_exit_1(tmp_path: Path, small_npz: Path) -> None:
    junit, out = tmp_path / "gate.xml", tmp_path / "r.json"
    ok = scan(MNIST_CNN, "--data", small_npz, "--fail-under", "clean_accuracy=0.5", "--junit", junit)
    assert_ok(ok)
    assert "gate passed: 1 check " in flat(ok.stdout) + " "  # not "1 checks"
    failed = scan(
        MNIST_CNN, "--data", small_npz, "--eps", "0.2", "--json", out, "--junit", junit,
        "--fail-under", "robust_accuracy@linf:0.2=0.99", "--fail-over", "attack_success_rate@fgsm:linf:0.2=0.9",
    )  # fmt: skip
    assert failed.exit_code == 1, failed.output
    text = flat(failed.stdout)
    assert "gate failed" in text and "FAIL robust_accuracy@worst-case:linf:0.2 >= 0.99" in text
    assert out.exists()  # the reports are written before the exit
    xml = junit.read_text(encoding="utf-8")
    assert xml.count("<testcase") == 2 and xml.count("<failure") >= 1


def test_baseline_regression_and_mismatch_refusal(tmp_path: Path, small_npz: Path) -> None:
    base = tmp_path / "base.json"
    assert_ok(scan(MNIST_CNN, "--data", small_npz, "--eps", "0.1", "--json", base))
    same = scan(MNIST_CNN, "--data", small_npz, "--eps", "0.1", "--baseline", base)
    assert_ok(same)
    # A weaker model (the baseline claims 0.3 more robust accuracy) fails the regression gate.
    payload = json.loads(base.read_text(encoding="utf-8"))
    for row in payload["rows"]:
        row["robust_accuracy"] = min(1.0, row["robust_accuracy"] + 0.3)
    better = tmp_path / "better.json"
    better.write_text(json.dumps(payload), encoding="utf-8")
    regressed = scan(
        MNIST_CNN, "--data", small_npz, "--eps", "0.1", "--baseline", better, "--max-drop", "0.02"
    )
    assert regressed.exit_code == 1, regressed.output
    # Another data set: refused (exit 3, one line) unless --allow-mismatch.
    other = tmp_path / "other.npz"
    with np.load(small_npz) as npz:
        np.savez(other, x=npz["x"][:40], y=npz["y"][:40])
    line = assert_one_error_line_anywhere(
        scan(MNIST_CNN, "--data", other, "--eps", "0.1", "--baseline", base), 3
    )
    assert str(base) in line and "--allow-mismatch" in line
    # With --junit, a CI test reporter still gets a file that says why the gate could not decide.
    junit = tmp_path / "gate.xml"
    refused = scan(MNIST_CNN, "--data", other, "--eps", "0.1", "--baseline", base, "--junit", junit)
    assert refused.exit_code == 3
    import xml.etree.ElementTree as ET

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    error = suite.find("testcase[@name='baseline']/error")
    assert error is not None and "not comparable" in (error.get("message") or "")
    allowed_json = tmp_path / "allowed.json"
    allowed = scan(
        MNIST_CNN,
        "--data",
        other,
        "--eps",
        "0.1",
        "--baseline",
        base,
        "--allow-mismatch",
        "--json",
        allowed_json,
    )
    # Compared anyway: the gate fails exactly when a row fell more than the default 2 points.
    base_acc = {(r["attack"], r["eps"]): r["robust_accuracy"] for r in load_json(base)["rows"]}
    rows = load_json(allowed_json)["rows"]
    drops = [base_acc[(r["attack"], r["eps"])] - r["robust_accuracy"] for r in rows]
    assert allowed.exit_code == (1 if max(drops) > 0.02 + 1e-9 else 0), (drops, allowed.output)
    text = flat(allowed.stdout)
    assert "baseline differs: dataset (data.sha256" in text, text
    assert "data.n_evaluated 64 -> 40" in text, text


def test_gate_matches_eps_as_written_and_refuses_what_cannot_match_before_the_audit(
    tmp_path: Path, small_npz: Path
) -> None:
    base = tmp_path / "base.json"
    fast = ("--data", small_npz, "--limit", "20", "--attack", "fgsm")
    # 0.0314 is 8/255 to the 4 decimals written, as the README says
    gate = ("--fail-under", "robust_accuracy@linf:0.0314=0")
    ok = scan(MNIST_CNN, *fast, "--eps", "8/255", *gate, "--json", base)
    assert_ok(ok)
    assert "pass robust_accuracy@worst-case:linf:0.0314" in flat(ok.stdout)
    out = tmp_path / "r.json"
    # a row the run will not have: refused before the model is loaded, nothing written
    gate = ("--fail-under", "robust_accuracy@pgd:linf:0.3=0.5")
    line = assert_one_error_line(scan(MNIST_CNN, *fast, "--eps", "0.1", *gate, "--json", out), 2)
    assert "no row pgd:linf:0.3" in line and "fgsm:linf:0.1, worst-case:linf:0.1" in line
    assert not out.exists()
    # a baseline of other attack settings: exit 3 before the audit, unless --allow-mismatch
    line = assert_one_error_line(scan(MNIST_CNN, *fast, "--eps", "0.1", "--baseline", base, "--json", out), 3)
    assert str(base) in line and "settings.eps" in line and "--allow-mismatch" in line
    assert not out.exists()


def assert_one_error_line_anywhere(result: Any, code: int) -> str:
    """Exit ``code`` with exactly one error line on stderr (the audit's own output may precede it)."""
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}: {result.output}"
    assert "Traceback" not in result.output
    errors = [line for line in stderr_of(result).splitlines() if line.startswith("robaudit: error: ")]
    assert len(errors) == 1, stderr_of(result)
    return errors[0]


def _misbehaving_model(tmp_path: Path, kind: str) -> Path:
    """TorchScript models that classify like a linear layer and misbehave in one chosen way."""

    # 256 TiB: more than a 48-bit address space holds, so the allocation fails even where the kernel
    # over-commits memory (16 TiB was granted on such a machine, which then killed the process).
    class Allocates(torch.nn.Module):  # asks for 256 TiB whenever it is attacked
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.requires_grad:
                x = x + torch.zeros(1 << 46, dtype=torch.float32).sum()
            return self.fc(x.flatten(1))

    class AllocatesAbove16(torch.nn.Module):  # runs out of memory only on batches above 16 samples
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.requires_grad and x.shape[0] > 16:
                x = x + torch.zeros(1 << 46, dtype=torch.float32).sum()
            return self.fc(x.flatten(1))

    class RaisesWhenAttacked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.requires_grad:
                raise ValueError("a bug in the model's gradient path")
            return self.fc(x.flatten(1))

    class RaisesOnThree(torch.nn.Module):  # a model bug that surfaces mid-run, on a batch of 3
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 3:
                raise ValueError("batches of three are not supported")
            return self.fc(x.flatten(1))

    kinds = {
        "memory": Allocates,
        "memory-above-16": AllocatesAbove16,
        "raises": RaisesWhenAttacked,
        "raises-on-3": RaisesOnThree,
    }
    path = tmp_path / f"{kind}.pt"
    torch.jit.save(torch.jit.script(kinds[kind]().eval()), str(path))
    return path


def test_out_of_memory_during_the_attack_exits_5(tmp_path: Path, small_npz: Path) -> None:
    out = tmp_path / "r.json"
    line = assert_one_error_line_anywhere(
        scan(_misbehaving_model(tmp_path, "memory"), "--data", small_npz, "--json", out), 5
    )
    assert "out of host memory even one sample at a time" in line and "--batch-size 256" in line
    assert not out.exists()


def test_out_of_memory_halves_the_batch_and_gives_the_same_results(tmp_path: Path, small_npz: Path) -> None:
    model = _misbehaving_model(tmp_path, "memory-above-16")
    # Label the images with the model's own predictions, so all 64 are attacked in one batch.
    with np.load(small_npz) as npz:
        x = npz["x"]
    with torch.no_grad():
        y = torch.jit.load(str(model))(torch.from_numpy(x.astype(np.float32) / 255).unsqueeze(1)).argmax(1)
    data = tmp_path / "own.npz"
    np.savez(data, x=x, y=y.numpy())
    halved, direct = tmp_path / "halved.json", tmp_path / "direct.json"
    common = ("--data", data, "--attack", "fgsm", "--attack", "pgd", "--steps", "3", "--no-checks")
    assert_ok(scan(model, *common, "--batch-size", "64", "--json", halved))
    assert_ok(scan(model, *common, "--batch-size", "16", "--json", direct))
    a, b = load_json(halved), load_json(direct)
    assert a["settings"]["batch_size_used"] == 16 and b["settings"]["batch_size_used"] == 16
    assert any("split down to 16" in note for note in a["notes"])
    assert row_numbers(a) == row_numbers(b)  # sample for sample the same outcome


def test_a_crashing_attack_is_reported_and_the_others_still_run(tmp_path: Path, small_npz: Path) -> None:
    model = _misbehaving_model(tmp_path, "raises")
    out = tmp_path / "r.json"
    args = (
        "--data",
        small_npz,
        "--attack",
        "fgsm",
        "--attack",
        "onepixel",
        "--population",
        "8",
        "--generations",
        "2",
    )
    result = scan(model, *args, "--json", out)
    assert_ok(result)
    report = load_json(out)
    rows = {(r["attack"], r["norm"]): r for r in report["rows"]}
    assert "a bug in the model's gradient path" in rows[("fgsm", "linf")]["error"]
    assert rows[("fgsm", "linf")]["n_robust"] == rows[("fgsm", "linf")]["n_clean_correct"]  # fooled nothing
    assert rows[("onepixel", "l0")]["error"] is None  # the gradient-free attack still ran
    codes = {f["code"] for f in report["flags"]}
    assert {"attack-failed", "gradients-unavailable"} <= codes
    assert "flag attack-failed" in flat(result.stdout)
    assert scan(model, *args, "--strict").exit_code == 4


def test_an_unexpected_failure_exits_70_with_a_pointer_to_debug(tmp_path: Path, small_npz: Path) -> None:
    model = _misbehaving_model(tmp_path, "raises-on-3")
    args = ("--data", small_npz, "--batch-size", "61")  # 64 samples: a second batch of 3
    line = assert_one_error_line_anywhere(scan(model, *args), 70)
    assert "internal error" in line and "batches of three" in line and "--debug" in line
    debug = scan(model, *args, "--debug")
    assert debug.exit_code == 70 and "Traceback" in debug.output


def test_scan_help_keeps_its_square_brackets() -> None:
    """Rich reads [..] as markup: the install hint and the threshold syntax must survive it."""
    result = runner.invoke(app, ["scan", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = flat(result.stdout)
    assert "'robaudit[art]'" in text and "METRIC@[ATTACK:]NORM:EPS" in text


def test_scan_help_fits_an_80_column_terminal() -> None:
    """Booleans that default to off are plain flags, so no --x/--no-x pair widens the option column:
    205 lines at 80 columns with the pairs, 170 without (and with --quiet)."""
    result = runner.invoke(app, ["scan", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    # 214 with the second wave's --surrogate, --certify, --certify-time-limit, --eot and --eot-evals
    assert len(lines) <= 220, len(lines)
    negatives = {word.strip("│,") for line in lines for word in line.split() if word.startswith("--no-")}
    assert negatives == {"--no-checks"}


@pytest.mark.parametrize(
    ("args", "checks", "strict"), [((), True, False), (("--no-checks", "--strict"), False, True)]
)
def test_boolean_flags_reach_the_configuration(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], checks: bool, strict: bool
) -> None:
    import robaudit.cli.run

    seen: list[Any] = []
    monkeypatch.setattr(robaudit.cli.run, "run_scan", lambda config, quiet=False: seen.append(config))
    assert_ok(scan(MNIST_CNN, *args))
    assert (seen[0].gate.reliability_checks, seen[0].gate.strict) == (checks, strict)


def test_help_and_profile_validate_import_no_heavy_library() -> None:
    """They answer in a fraction of a second because torch, ONNX, NumPy and matplotlib load only when a
    scan or a report needs them (the times themselves are in benchmarks/RESULTS.md)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from robaudit.cli import app\n"
        "for args in (['--help'], ['scan', '--help'], ['profile', 'validate', 'quick']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted({'torch', 'onnx', 'onnxruntime', 'numpy', 'matplotlib', 'PIL'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_warnings_go_to_the_stderr_of_the_current_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from robaudit.cli import log_to_stderr

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process, and restored afterwards
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log_to_stderr()
    logging.getLogger("robaudit.test").warning("first run")
    first.close()  # the first run is over (a test runner closes its captured stream)
    monkeypatch.setattr(sys, "stderr", second)
    log_to_stderr()
    logging.getLogger("robaudit.test").warning("second run")
    assert second.getvalue() == "second run\n"


def test_a_scan_where_no_sample_is_classified_correctly_finishes(tmp_path: Path) -> None:
    """Every image in a class folder one digit off: nothing is left to attack or probe, and the scan
    still reports (clean accuracy 0, flagged) instead of failing on the empty probe set."""
    import shutil

    root = tmp_path / "shifted"
    for png in sorted((REPO / "tests" / "assets").glob("mnist_*.png")):
        digit = int(png.stem.rsplit("_", 1)[1])
        (root / str((digit + 1) % 10)).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, root / str((digit + 1) % 10) / png.name)
    out = tmp_path / "r.json"
    result = scan(MNIST_CNN, "--data", root, "--attack", "fgsm", "--attack", "pgd", "--json", out)
    assert_ok(result)
    report = json.loads(out.read_text())
    assert report["n_clean_correct"] == 0 and report["complete"] is True
    assert "clean-sanity" in {flag["code"] for flag in report["flags"]}


def test_a_converted_graph_s_own_warnings_stay_out_of_the_terminal(exports: dict[str, Path]) -> None:
    """onnx2pytorch's Gather warns on every forward pass of a TorchScript-exported graph."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "robaudit",
            "scan",
            str(exports["legacy"]),
            "--data",
            str(HOLDOUT),
            "--limit",
            "20",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "Warning" not in done.stdout


def test_resize_lets_a_folder_of_larger_images_be_audited(tmp_path: Path) -> None:
    """MNIST digits saved at other sizes, as photos come: refused with the flag to pass, then audited
    with it, the setting recorded."""
    from PIL import Image

    root = tmp_path / "big"
    for k, png in enumerate(sorted((REPO / "tests" / "assets").glob("mnist_*.png"))):
        digit = png.stem.rsplit("_", 1)[1]
        (root / digit).mkdir(parents=True, exist_ok=True)
        side = (56, 84)[k % 2]
        Image.open(png).resize((side, side), Image.Resampling.BILINEAR).save(root / digit / png.name)
    line = assert_one_error_line(scan(MNIST_CNN, "--data", root), 3)
    assert "but the model takes 28x28; pass --resize 28,28" in line
    out = tmp_path / "r.json"
    assert_ok(scan(MNIST_CNN, "--data", root, "--resize", "28", "--json", out))
    report = json.loads(out.read_text())
    from tests.test_report_json import validate_result

    validate_result(report)
    assert report["settings"]["resize"] == [28, 28]
    assert report["n_clean_correct"] >= 15  # of 20: the digits survive the round trip through other sizes
    assert any("resized to 28x28" in note for note in report["notes"])
    assert_one_error_line(scan(MNIST_CNN, "--data", root, "--resize", "28x28"), 2)


def test_a_trusted_pickle_whose_class_lived_in_the_saving_script_is_an_input_error(tmp_path: Path) -> None:
    """torch.save(model) from a notebook pickles a reference to __main__.Net, which no other process has."""
    path = tmp_path / "notebook_model.pt"
    saver = (
        "import sys, torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
        "torch.save(Net(), sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", saver, str(path)], check=True)
    line = assert_one_error_line(scan(path, "--trust-model", "--limit", "10"), 3)
    assert str(path) in line and "Can't get attribute 'Net'" in line and "--arch module:ClassName" in line


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("model.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(32), "a TensorFlow Lite model"),  # TFLite's header
        (
            "weights.bin",
            b"\x1c\x00\x00\x00TFL3" + bytes(32),
            "a TensorFlow Lite model",
        ),  # misnamed: by content
        ("model.h5", b"\x89HDF\r\n\x1a\n" + bytes(32), "a Keras model"),  # HDF5's signature
        ("model.keras", b"PK\x03\x04" + bytes(32), "a Keras 3 model"),
    ],
)
def test_a_tensorflow_model_is_refused_with_the_conversion_to_run(
    tmp_path: Path, name: str, content: bytes, said: str
) -> None:
    """The headers are those of files TensorFlow 2.21 and Keras 3.15 wrote; tf2onnx's --tflite and
    --keras conversions of such files, and Keras' own export, give ONNX files robaudit reads."""
    path = tmp_path / name
    path.write_bytes(content)
    line = assert_one_error_line(scan(path, "--limit", "5"), 3)
    assert f"{path}: {said}; robaudit reads ONNX and PyTorch models: convert it to ONNX (" in line
    assert "model.onnx" in line


def test_a_tensorflow_savedmodel_folder_is_refused_with_the_conversion_to_run(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    line = assert_one_error_line(scan(folder, "--limit", "5"), 3)
    assert f"python -m tf2onnx.convert --saved-model {folder} --output model.onnx" in line


class _Takes255(torch.nn.Module):
    """A model that takes pixels on 0..255 (as Keras models with a Rescaling layer do)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x / 255.0)


def test_the_data_range_and_the_model_input_range_are_set_apart(tmp_path: Path) -> None:
    """Float 0..255 arrays for a [0, 1] model, and float [0, 1] arrays for a 0..255 model: with
    --data-range each gives the numbers of the same images stored as uint8."""
    with np.load(HOLDOUT) as held:
        x8, y = held["x"][:60], held["y"][:60]
    inner = torch.jit.load(str(SAMPLES / "mnist_cnn.pt"))
    model255 = tmp_path / "takes255.pt"
    torch.jit.save(torch.jit.script(_Takes255(inner)), str(model255))
    uint8 = _npz(tmp_path / "u8.npz", x8, y)
    f255 = _npz(tmp_path / "f255.npz", x8.astype(np.float32), y)
    f01 = _npz(tmp_path / "f01.npz", x8.astype(np.float32) / 255, y)
    cnn = SAMPLES / "mnist_cnn.pt"

    def rows(*args: object) -> list[tuple[int, int]]:
        out = tmp_path / "r.json"
        result = runner.invoke(
            app,
            ["scan", *map(str, args), "--attack", "fgsm", "--eps", "0.1", "--no-checks", "--json", str(out)],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text(encoding="utf-8"))
        return [(report["n_clean_correct"], r["n_robust"]) for r in report["rows"]]

    reference = rows(cnn, "--data", uint8)
    assert reference[0][0] > 54 and reference[0][1] < reference[0][0]  # 60 images: mostly right, some fooled
    assert rows(cnn, "--data", f255, "--data-range", "0,255") == reference
    assert rows(model255, "--data", uint8, "--input-range", "0,255") == reference
    assert rows(model255, "--data", f01, "--input-range", "0,255", "--data-range", "0,1") == reference
    # Without --data-range, float 0..255 arrays for a [0, 1] model are refused with the flag to pass.
    refused = runner.invoke(app, ["scan", str(cnn), "--data", str(f255)])
    assert refused.exit_code == 3 and "--data-range 0,255" in refused.output


def test_npz_keys_may_be_written_with_a_space(tmp_path: Path) -> None:
    with np.load(HOLDOUT) as held:
        data = tmp_path / "named.npz"
        np.savez(data, images=held["x"][:20], labels=held["y"][:20])
    out = tmp_path / "r.json"
    result = runner.invoke(
        app, ["scan", str(MNIST_CNN), "--data", str(data), "--npz-keys", "images, labels", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text(encoding="utf-8"))["data"]["n_evaluated"] == 20


def test_total_seconds_covers_every_phase(tmp_path: Path) -> None:
    """The total is the audit's wall time: loading, the attacks and the reliability probes after them."""
    out = tmp_path / "r.json"
    result = runner.invoke(
        app, ["scan", str(MNIST_CNN), "--data", str(HOLDOUT), "--limit", "40", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    timings = json.loads(out.read_text(encoding="utf-8"))["timings"]
    assert timings["checks_seconds"] > 0
    phases = timings["load_seconds"] + timings["clean_seconds"] + timings["checks_seconds"]
    assert timings["total_seconds"] >= phases
