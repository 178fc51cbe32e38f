"""The results JSON against its published schema (robaudit/schema/results.schema.json), on the hand-built
fixture and on real runs, plus what a schema cannot say: round trips, key order, plain JSON number types
and the arithmetic that ties the counts together."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.results import SCHEMA_VERSION, WORST_CASE, AuditResult, write_json_atomic
from tests.conftest import HOLDOUT, SAMPLES
from tests.report_fixture import fixed_result


def load_schema() -> dict[str, Any]:
    """The results schema as shipped inside the package."""
    resource = importlib.resources.files("robaudit") / "schema" / "results.schema.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def validate_result(payload: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``payload`` is not a valid results JSON."""
    jsonschema.Draft202012Validator(load_schema()).validate(payload)


REAL_RUNS: dict[str, dict[str, Any]] = {
    "fgsm-pgd": {"limit": 100, "eps": (0.1, 0.2), "attacks": ("fgsm", "pgd"), "steps": 5},
    "onepixel": {"limit": 20, "attacks": ("onepixel",), "population": 10, "generations": 2},
    "targeted": {"limit": 100, "eps": (0.1, 0.2), "attacks": ("fgsm", "pgd"), "steps": 5, "target": "random"},
    "onnx": {"limit": 50, "eps": (0.1,), "attacks": ("fgsm",), "model": SAMPLES / "mnist_cnn.onnx"},
}


@pytest.fixture(scope="module", params=sorted(REAL_RUNS))
def real_run(request: pytest.FixtureRequest) -> tuple[str, AuditResult]:
    settings = {"model": SAMPLES / "mnist_cnn.pt", "data": str(HOLDOUT), **REAL_RUNS[request.param]}
    return request.param, run_audit(AuditConfig(**settings))


def dumped(result: AuditResult) -> dict[str, Any]:
    """What a reader of the file gets: the dict through JSON text and back."""
    payload: dict[str, Any] = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    return payload


# The schema itself


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert schema["required"] == [f.name for f in dataclasses.fields(AuditResult)], "every field is required"


def test_schema_names_every_dataclass_field() -> None:
    """A field added to a dataclass without the schema would fail every real run; say which one."""
    from robaudit import results

    defs = load_schema()["$defs"]
    for name, cls in [
        ("model", results.ModelInfo),
        ("data", results.DataInfo),
        ("row", results.AttackRow),
        ("confidence", results.Confidence),
        ("perturbation", results.Perturbation),
        ("class", results.ClassInfo),
        ("radius", results.Radius),
        ("example", results.Example),
    ]:
        fields = [f.name for f in dataclasses.fields(cls)]
        assert list(defs[name]["properties"]) == fields, name
        assert defs[name]["required"] == fields, name
        assert defs[name]["additionalProperties"] is False, name


# Valid documents


def test_fixed_result_validates() -> None:
    validate_result(dumped(fixed_result()))


def test_real_run_validates(real_run: tuple[str, AuditResult]) -> None:
    name, result = real_run
    validate_result(dumped(result))
    validate_result(result.to_dict())  # before JSON too: tuples or numpy scalars would show up here
    if name in ("fgsm-pgd", "targeted"):
        assert result.gallery, "the PNG data URI pattern is checked on real images"


def test_l0_budget_may_exceed_one_but_an_eps_ball_may_not() -> None:
    payload = dumped(fixed_result())
    payload["rows"][0].update(norm="l0", eps=3.0)
    validate_result(payload)
    payload["rows"][0].update(norm="linf", eps=3.0)
    with pytest.raises(jsonschema.ValidationError):
        validate_result(payload)


# Invalid documents


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        target: Any = payload
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        target: Any = payload
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "accuracy as a string": _set("clean_accuracy", value="0.95"),
    "count as a string": _set("rows", 0, "n_robust", value="120"),
    "eps as a string": _set("rows", 2, "eps", value="0.1"),
    "count as a fraction": _set("rows", 0, "n_robust", value=120.5),
    "count as a boolean": _set("n_clean_correct", value=True),
    "missing top-level key": _delete("rows"),
    "missing caveat": _delete("caveat"),
    "missing key in a row": _delete("rows", 0, "robust_accuracy_ci"),
    "missing key in the model": _delete("model", "sha256"),
    "unknown key in a row": _set("rows", 0, "robust_accuracy_pct", value=60.0),
    "unknown top-level key": _set("extra", value=1),
    "unknown key in confidence": _set("rows", 0, "confidence", "median", value=0.5),
    "confidence of 1.5": _set("rows", 0, "confidence", "overall", value=1.5),
    "clean confidence of 1.5": _set("confidence_clean", "errors", value=1.5),
    "negative count": _set("rows", 0, "n_robust", value=-1),
    "negative total": _set("data", "n_total", value=-1),
    "negative seconds": _set("timings", "total_seconds", value=-0.1),
    "accuracy above 1": _set("clean_accuracy", value=95.0),
    "interval of three": _set("clean_accuracy_ci", value=[0.9, 0.95, 0.97]),
    "interval outside [0, 1]": _set("rows", 0, "robust_accuracy_ci", value=[-0.1, 0.5]),
    "interval as a string": _set("rows", 0, "attack_success_rate_ci", value="[0.2, 0.4]"),
    "unknown norm": _set("rows", 0, "norm", value="l3"),
    "per-class accuracy above 1": _set("rows", 0, "per_class_robust_accuracy", 0, value=2.0),
    "gallery image not a PNG data URI": _set("gallery", 0, "original_png", value="https://example.com/x.png"),
    "gallery image as JPEG": _set("gallery", 0, "adversarial_png", value="data:image/jpeg;base64,AAAA"),
    "short sha256": _set("model", "sha256", value="abc"),
    "schema version 1.0": _set("schema_version", value="1.0"),
    "schema version as a number": _set("schema_version", value=1.1),
    "environment value as a number": _set("environment", "python", value=3.11),
    "timing as a string": _set("timings", "load_seconds", value="1.5"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_invalid_document_fails(name: str) -> None:
    payload = dumped(fixed_result())
    validate_result(payload)
    MUTATIONS[name](payload)
    with pytest.raises(jsonschema.ValidationError):
        validate_result(payload)


def test_nulls_only_where_the_dataclass_allows_them() -> None:
    payload = dumped(fixed_result())
    for key in ("clean_accuracy_ci", "confidence_clean"):
        validate_result({**payload, key: None})
    for key in ("clean_accuracy", "n_clean_correct", "model", "rows"):
        with pytest.raises(jsonschema.ValidationError):
            validate_result({**payload, key: None})


# Round trip and key order


def test_fixed_result_round_trips() -> None:
    result = fixed_result()
    assert AuditResult.from_dict(dumped(result)) == result


def test_real_run_round_trips(real_run: tuple[str, AuditResult], tmp_path: Path) -> None:
    _, result = real_run
    assert AuditResult.from_dict(dumped(result)) == result
    path = tmp_path / "results.json"
    write_json_atomic(path, result.to_dict())
    text = path.read_text(encoding="utf-8")
    pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    assert pairs[0] == ("schema_version", SCHEMA_VERSION), "schema_version is the first key"
    assert json.dumps(result.to_dict()).startswith('{"schema_version": "1.3"')
    assert AuditResult.from_dict(json.loads(text)) == result


# Numbers stay numbers

# Fields whose values are counts: an int in Python, not a float that happens to be whole (JSON Schema's
# "integer" accepts 3.0, so this is checked here).
COUNT_KEYS = {
    "n_clean_correct",
    "n_total",
    "n_evaluated",
    "n_requested",
    "n_samples",
    "n_robust",
    "n_fooled_by_attack",
    "n_target_hits",
    "n_fooled_converted",
    "n",
    "index",
    "wrong_on_clean",
    "not_fooled",
    "sample_index",
    "label",
    "clean_pred",
    "adv_pred",
    "num_classes",
    "sample_shape",
    "fooled_at",
    "seed",
    "batch_size",
    "steps",
    "restarts",
    "population",
    "generations",
    "pixels",
}
# Text that may legitimately read as a number: versions ("1.1"), class names ("7"), --target 3.
FREE_TEXT_KEYS = {
    "schema_version",
    "robaudit_version",
    "sha256",
    "name",
    "target",
    "notes",
    "path",
    "source",
    "description",
    "environment",
}


def _walk(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, (*path, i))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_real_run_numbers_stay_numbers(real_run: tuple[str, AuditResult]) -> None:
    _, result = real_run
    payload = result.to_dict()
    for path, value in _walk(payload):
        where = "/".join(map(str, path))
        # Plain JSON types only: numpy scalars (np.float64 subclasses float) must not leak into the dict.
        assert type(value) in (dict, list, str, int, float, bool, type(None)), f"{where}: {type(value)}"
        key = next((k for k in reversed(path) if isinstance(k, str)), "")
        free_text = key in FREE_TEXT_KEYS or path[:1] == ("environment",)
        if isinstance(value, str) and not free_text:
            assert not _looks_numeric(value), f"{where}: the number {value!r} is stored as a string"
        if key in COUNT_KEYS and not isinstance(value, (dict, list)) and value is not None:
            assert type(value) is int, f"{where}: a count stored as {type(value).__name__}"
        if isinstance(value, float):
            assert math.isfinite(value), where
    for row in payload["rows"]:
        for key in ("eps", "robust_accuracy", "robust_error", "seconds"):
            assert type(row[key]) in (int, float), key
    assert all(type(v) is float for v in payload["timings"].values())


def test_real_run_invariants(real_run: tuple[str, AuditResult]) -> None:
    """The arithmetic between fields, which a JSON Schema cannot state."""
    name, result = real_run
    n = result.data.n_evaluated
    assert 0 < n <= result.data.n_total
    assert result.clean_accuracy == pytest.approx(result.n_clean_correct / n)
    assert result.clean_accuracy_ci is not None
    low, high = result.clean_accuracy_ci
    assert low - 1e-12 <= result.clean_accuracy <= high + 1e-12
    assert sum(c.n for c in result.classes) == n
    assert len(result.classes) == result.model.num_classes
    threats = list(dict.fromkeys((r.norm, r.eps) for r in result.rows))
    for norm, eps in threats:
        rows = [r for r in result.rows if (r.norm, r.eps) == (norm, eps)]
        assert rows[-1].attack == WORST_CASE, "each threat model ends with its worst-case row"
        assert [r.attack for r in rows].count(WORST_CASE) == 1
        assert rows[-1].n_robust <= min(r.n_robust for r in rows)
        assert sum(r.n_fooled_by_attack or 0 for r in rows[:-1]) == result.n_clean_correct - rows[-2].n_robust
    for row in result.rows:
        assert row.n_samples == n and row.n_clean_correct == result.n_clean_correct
        assert 0 <= row.n_robust <= row.n_clean_correct <= row.n_samples
        assert row.robust_accuracy + row.robust_error == pytest.approx(1.0)
        assert row.robust_accuracy_ci is not None
        assert row.robust_accuracy_ci[0] - 1e-12 <= row.robust_accuracy <= row.robust_accuracy_ci[1] + 1e-12
        assert len(row.per_class_robust_accuracy) == result.model.num_classes
        assert (row.n_fooled_by_attack is None) == (row.attack == WORST_CASE)
        assert (row.n_target_hits is not None) == (name == "targeted")
        assert (row.n_fooled_converted is not None) == (result.model.backend == "onnx")
        fooled = row.n_clean_correct - row.n_robust
        assert (row.perturbation.n if row.perturbation else 0) == fooled
    for radius in result.radius:
        assert len(radius.fooled_at) == len(radius.eps)
        assert sum(radius.fooled_at) + radius.wrong_on_clean + radius.not_fooled == n
    for example in result.gallery:
        assert (example.norm, example.eps) in threats
        assert example.label == example.clean_pred != example.adv_pred


def test_the_atomic_writer_creates_a_missing_last_folder_only(tmp_path: Path) -> None:
    payload = fixed_result().to_dict()
    with pytest.raises(FileNotFoundError, match="only a missing last folder"):
        write_json_atomic(tmp_path / "a" / "b" / "r.json", payload)
    assert not (tmp_path / "a").exists()
    write_json_atomic(tmp_path / "a" / "r.json", payload)
    assert json.loads((tmp_path / "a" / "r.json").read_text(encoding="utf-8")) == payload
