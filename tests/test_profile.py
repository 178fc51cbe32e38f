"""YAML audit profiles: parsing, one-line errors with field paths, built-ins, commands, CLI precedence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.config import AuditConfig
from robaudit.config.merge import merge
from robaudit.config.profile import BUILTIN, load_profile, parse_profile, profile_values
from robaudit.errors import UsageError
from tests.conftest import HOLDOUT, SAMPLES

runner = CliRunner()
MODEL = SAMPLES / "mnist_cnn.onnx"


def invoke(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robaudit: error: "), lines
    assert "Traceback" not in result.output
    return lines[0]


def config(text: str) -> AuditConfig:
    """A profile's text as the configuration a scan would run (no flags on top)."""
    return AuditConfig.model_validate(merge(profile_values(parse_profile(text, "p.yaml")), {}))


# --- parsing ---------------------------------------------------------------------------------------


def test_a_full_profile_becomes_config_values() -> None:
    text = """
version: 1
model: {path: m.onnx, output: logits}
preprocessing: {input_range: [0, 255], mean: [0.5], std: [0.25]}
data: {path: d.npz, limit: 50, range: [0, 1]}
attacks:
  - name: fgsm
  - name: pgd
    steps: 7
    loss: dlr
    eps: [16/255]
  - name: onepixel
    pixels: 2
threat: {norms: [linf, l2], eps: [8/255, 0.5], target: least-likely}
device: cpu
batch_size: 32
seed: 9
gate:
  checks: [{metric: robust_accuracy, norm: linf, eps: 8/255, min: 0.5}]
  max_drop: 0.01
reports: {json: out/r.json, junit: out/g.xml, radius_bisect: 2}
"""
    values = config(text)
    assert str(values.model.path) == "m.onnx" and values.model.output == "logits"
    p = values.preprocessing
    assert p.input_range == (0.0, 255.0) and p.mean == (0.5,) and p.std == (0.25,)
    assert values.data.path == "d.npz" and values.data.limit == 50 and values.data.range == (0.0, 1.0)
    assert values.threat.eps == (8 / 255, 0.5) and values.threat.norms == ("linf", "l2")
    assert values.threat.target == "least-likely" and values.run.seed == 9 and values.run.batch_size == 32
    pgd = values.attacks[1]
    assert pgd.settings == {"steps": 7, "loss": "dlr"} and pgd.eps == (16 / 255,)
    assert values.attacks[2].settings == {"pixels": 2}
    assert values.gate.checks[0].eps == 8 / 255 and values.gate.checks[0].min == 0.5
    assert values.gate.max_drop == 0.01 and str(values.reports.json_) == "out/r.json"
    assert values.reports.radius_bisect == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\n", "version: this robaudit reads version 1"),
        ("seed: 1\n", "version: missing"),
        ("- 1\n- 2\n", "a profile is a mapping"),
        ("version: 1\nsed: 3\n", "sed: unknown key"),
        ("version: 1\nattacks:\n  - name: fgsm\n  - name: pgd\n    eps: [-0.1]\n", "attacks[1].eps"),
        ("version: 1\nattacks:\n  - name: pgd\n    steps: 0\n", "attacks[0].steps"),
        ("version: 1\nattacks:\n  - name: pgd\n    stpes: 10\n", "attacks[0].stpes: unknown key"),
        ("version: 1\nthreat:\n  eps: [abc]\n", "threat.eps"),
        ("version: 1\nthreat:\n  norms: [l3]\n", "threat.norms[0]"),
        ("version: 1\ngate:\n  checks:\n    - {metric: accuracy}\n", "gate.checks[0].metric"),
        ("version: 1\ngate:\n  checks:\n    - {metric: robust_accuracy, min: 2}\n", "gate.checks[0].min"),
        ("version: 1\nseed: 1\nseed: 2\n", "duplicate key 'seed'"),
        ("version: 1\nmodel:\n  path: a\n  path: b\n", "duplicate key 'path'"),
        ("version: 1\nmodel: [unclosed\n", "not valid YAML"),
        ("version: 1\nx: !!python/object/apply:os.system [echo]\n", "not valid YAML"),
        ("? 0:\n", "a key must be a plain value"),  # a mapping used as a key (found by fuzzing)
        ("version: 1\nbatch_size: -3\n", "batch_size: must be a positive whole number of samples or auto"),
        ("version: 1\nbatch_size: true\n", "batch_size: must be"),
    ],
)
def test_invalid_profiles_are_one_line_errors_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_profile(text, "audit.yaml")
    message = str(info.value)
    assert message.startswith("audit.yaml: ") and expected in message, message
    assert "\n" not in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.sampled_from(list("version: 1\n-[]{}&*!|>'\"#%@`,?abcdeps.0123456789 \t")), max_size=200
    )
)
def test_the_loader_never_raises_anything_but_a_usage_error(text: str) -> None:
    try:
        parse_profile(text, "fuzz.yaml")
    except UsageError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=12,
    )
)
def test_any_yaml_document_is_a_profile_or_a_usage_error(document: object) -> None:
    body = {"version": 1, "attacks": document} if isinstance(document, list) else document
    try:
        parse_profile(yaml.safe_dump(body), "fuzz.yaml")
    except UsageError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_profiles_load_and_say_what_they_run(name: str) -> None:
    profile, source = load_profile(name)
    names = [a.name for a in profile.attacks]
    expected = {
        "quick": ["fgsm", "pgd"],
        "standard": ["fgsm", "apgd", "onepixel"],
        "thorough": ["apgd", "apgd-t", "onepixel"],
        "strongest": ["apgd", "apgd-t", "square"],
    }[name]
    assert names == expected and source == name
    if name == "thorough":
        assert profile.attacks[0].loss == "ce" and profile.attacks[0].steps == 100
        assert profile.attacks[1].steps == 100 and profile.attacks[1].n_targets == 3
        assert profile.attacks[2].pixels == 3 and profile.data.limit is None
        assert profile.description and "benchmarks/profile_balance.py" in profile.description
    if name == "standard":
        assert profile.attacks[1].loss == "ce" and profile.attacks[1].steps == 50
        assert profile.data.limit == 1000 and profile.description
    if name == "quick":
        assert profile.attacks[1].steps == 10 and profile.data.limit == 500


# --- commands ------------------------------------------------------------------------------------


def test_init_writes_a_template_that_validates_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "audit.yaml"
    result = invoke("profile", "init", path)
    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    assert text.count("#") > 20  # commented
    assert invoke("profile", "validate", path).exit_code == 0
    assert "already exists" in one_error_line(invoke("profile", "init", path), 2)
    assert invoke("profile", "init", path, "--force").exit_code == 0
    printed = invoke("profile", "init")
    assert printed.exit_code == 0 and printed.stdout == text


def test_validate_reports_the_field_path_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\nattacks:\n  - name: fgsm\n  - name: pgd\n    restarts: -1\n", encoding="utf-8"
    )
    line = one_error_line(invoke("profile", "validate", path), 2)
    assert f"{path}: attacks[1].restarts:" in line
    assert "no such file" in one_error_line(invoke("profile", "validate", tmp_path / "missing.yaml"), 2)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("attacks: [{name: fgsmm}]", ["attacks[0].name: unknown attack 'fgsmm'", "fgsm, onepixel, pgd"]),
        ("attacks: [{name: fgsm}, {name: 'art:'}]", ["attacks[1].name", "art:DeepFool"]),
        ("threat: {eps: [8]}", ["threat.eps: 8 is larger than 1", "8/255"]),
        ("attacks: [{name: pgd, eps: [0.1, 16]}]", ["attacks[0].eps: 16 is larger than 1"]),
        (
            "threat: {eps: [0.1]}\ngate: {checks: [{metric: robust_accuracy, norm: linf, eps: 0.2, min: 0.5}]}",
            ["gate.checks[0]: no attack of this profile runs linf at eps 0.2 (it runs linf 0.1)"],
        ),
        (
            "attacks: [{name: onepixel}]\ngate: {checks: [{metric: robust_accuracy, norm: l0, eps: 3, min: 0.5}]}",
            ["gate.checks[0]: no attack of this profile runs l0 at eps 3 (it runs l0 1)"],
        ),
        ("threat: {target: cat}", ["threat.target: use none, random, least-likely or a class index"]),
    ],
    ids=[
        "attack-typo",
        "art-no-class",
        "linf-eps-8",
        "entry-eps-16",
        "gate-eps-not-run",
        "gate-l0",
        "target",
    ],
)
def test_validate_refuses_what_scan_would_refuse_by_field_path(
    tmp_path: Path, body: str, words: list[str]
) -> None:
    """A profile that `profile validate` passes must not be refused by `scan`: the same checks, named
    by the profile's own field path, not by the flag they map to."""
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\n{body}\n", encoding="utf-8")
    for command in (["profile", "validate", path], ["profile", "show", path], ["scan", "--profile", path]):
        line = one_error_line(invoke(*command), 2)
        assert f"{path}: " in line
        for word in words:
            assert word in line, (command, word, line)


def test_a_gate_check_on_a_threat_model_that_runs_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nattacks: [{name: fgsm}, {name: pgd, norms: [l2], eps: [0.5]}, {name: onepixel, pixels: 3}]\n"
        "threat: {eps: [8/255], target: 3}\ngate: {checks: [\n"
        "  {metric: robust_accuracy, norm: linf, eps: 0.0313725490196, min: 0.5},\n"
        "  {metric: robust_accuracy, norm: l2, eps: 0.5, min: 0.5},\n"
        "  {metric: robust_accuracy, norm: l0, eps: 3, min: 0.5}]}\n",
        encoding="utf-8",
    )
    result = invoke("profile", "validate", path)
    assert result.exit_code == 0, result.output
    assert load_profile(str(path))[0].threat.target == "3"  # YAML's int 3, as --target 3


def test_the_registry_matches_each_attack_implementation() -> None:
    """The registry declares each attack's threat models and needs without importing torch; the
    implementation it builds must agree, and take every setting with the registry's default."""
    from dataclasses import fields

    from robaudit.attacks import registry
    from robaudit.attacks.registry import REGISTRY, build_attack

    for name, info in REGISTRY.items():
        attack = build_attack("art:FastGradientMethod" if name == "art" else name)
        assert tuple(attack.norms) == info.threat_models, name
        assert attack.needs_gradients == (info.needs == "gradients"), name
        assert registry.info_of(attack) is info, name
        defaults = {f.name: f.default for f in fields(attack)}  # type: ignore[arg-type]
        for field, declared in info.settings.model_fields.items():
            assert defaults[field] == declared.default, (name, field)


def test_show_fills_in_defaults_and_its_output_is_a_valid_profile(tmp_path: Path) -> None:
    result = invoke("profile", "show", "standard")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    apgd = shown["attacks"][1]
    assert apgd["steps"] == 50 and apgd["restarts"] == 1 and apgd["loss"] == "ce" and apgd["eot"] == 0
    assert apgd["eps"] == [pytest.approx(8 / 255)]
    run = shown["run"]
    assert run["batch_size"] == 256 and run["device"] == "auto" and shown["reports"]["gallery_size"] == 4
    path = tmp_path / "shown.yaml"
    path.write_text(result.stdout, encoding="utf-8")
    assert invoke("profile", "validate", path).exit_code == 0


# --- scan with a profile -------------------------------------------------------------------------


def write_profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "audit.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_scan_runs_a_profile_and_flags_override_it(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    profile = write_profile(
        tmp_path,
        f"""version: 1
model: {{path: {MODEL}}}
data: {{path: {HOLDOUT}, limit: 60}}
attacks:
  - name: fgsm
  - name: pgd
    steps: 3
threat: {{eps: [0.2]}}
seed: 4
reports: {{json: {out}}}
""",
    )
    result = invoke("scan", "--profile", profile)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["data"]["n_evaluated"] == 60 and report["settings"]["eps"] == [0.2]
    assert report["settings"]["pgd"]["steps"] == 3 and report["settings"]["seed"] == 4

    # Flags win: eps, steps (also inside the profile's pgd entry), the limit and the seed.
    result = invoke(
        "scan", "--profile", profile, "--eps", "0.1", "--steps", "2", "--limit", "40", "--seed", "5"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["data"]["n_evaluated"] == 40 and report["settings"]["eps"] == [0.1]
    assert report["settings"]["pgd"]["steps"] == 2 and report["settings"]["seed"] == 5
    assert report["settings"]["attacks"] == ["fgsm", "pgd"]  # not given on the command line: the profile's

    result = invoke("scan", "--profile", profile, "--attack", "fgsm")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text(encoding="utf-8"))["settings"]["attacks"] == ["fgsm"]


def test_a_model_argument_overrides_the_profile_and_one_is_required(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, f"version: 1\ndata: {{path: {HOLDOUT}, limit: 20}}\n")
    assert "MODEL: missing" in one_error_line(invoke("scan", "--profile", profile), 2)
    result = invoke("scan", SAMPLES / "mnist_cnn.pt", "--profile", profile)
    assert result.exit_code == 0, result.output
    assert "mnist_cnn.pt" in result.stdout


def test_thorough_runs_apgd_then_targeted_apgd_then_onepixel(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = invoke(
        "scan", MODEL, "--profile", "thorough", "--data", HOLDOUT, "--limit", "20", "--eps", "0.1",
        "--steps", "2", "--n-targets", "1", "--generations", "1", "--population", "8", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["attack"], r["norm"]) for r in report["rows"]] == [
        ("apgd-ce", "linf"),
        ("apgd-t", "linf"),
        ("worst-case", "linf"),
        ("onepixel", "l0"),
        ("worst-case", "l0"),
    ]
    assert report["rows"][3]["eps"] == 3.0  # the profile's 3 pixels


def _linf_robust(tmp_path: Path, profile: str) -> tuple[set[int], int]:
    """The samples a built-in profile leaves robust under L∞ at its own gradient budgets (L0 cut short)."""
    out, samples = tmp_path / f"{profile}.json", tmp_path / f"{profile}.jsonl"
    result = invoke(
        "scan", MODEL, "--profile", profile, "--data", HOLDOUT, "--limit", "24", "--eps", "0.1", "--seed", "3",
        "--no-checks", "--generations", "1", "--population", "8", "--json", out,
        "--per-sample", samples,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(t) for t in samples.read_text(encoding="utf-8").splitlines()]
    correct = [d for d in lines if d["clean_pred"] == d["label"]]
    robust = {
        d["index"] for d in correct if not any(a["fooled"] for a in d["attacks"] if a["norm"] == "linf")
    }
    return robust, len(correct)


def test_thorough_is_at_least_as_strong_as_standard_at_their_own_budgets(tmp_path: Path) -> None:
    (standard, _), (thorough, correct) = (
        _linf_robust(tmp_path, "standard"),
        _linf_robust(tmp_path, "thorough"),
    )
    assert len(thorough) < correct  # the attacks ran and fooled some correctly classified samples
    assert thorough <= standard  # sample by sample: nothing standard fooled stays robust under thorough


def test_the_readme_profile_example_is_valid() -> None:
    import re

    readme = (SAMPLES.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Audit profiles") :]
    (example, *_) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    values = parse_profile(example, "README.md")
    assert values.attacks[1].eps == (0.1, 0.2) and values.gate.checks[0].use_interval is True


def test_batch_size_auto_in_a_profile_reaches_the_config() -> None:
    assert parse_profile("version: 1\nbatch_size: auto\n", "audit.yaml").run.batch_size == "auto"
    assert parse_profile("version: 1\nrun: {batch_size: auto}\n", "audit.yaml").run.batch_size == "auto"


def test_tf32_in_a_profile_reaches_the_config_and_defaults_to_full_fp32() -> None:
    assert parse_profile("version: 1\ntf32: true\n", "audit.yaml").run.tf32 is True
    assert parse_profile("version: 1\n", "audit.yaml").run.tf32 is False


def test_resize_in_a_profile_reaches_the_config() -> None:
    assert parse_profile("version: 1\ndata:\n  resize: [224, 224]\n", "audit.yaml").data.resize == (224, 224)
    assert parse_profile("version: 1\n", "audit.yaml").data.resize is None
