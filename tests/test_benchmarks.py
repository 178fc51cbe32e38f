"""The benchmark scripts run end to end on a tiny budget. They check that the scripts work and that
their tables say what they should, never how fast anything is: timings belong in benchmarks/RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from robaudit.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_comparison_runs_and_reports_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    table = run(
        "benchmarks/compare_attacks.py", "--tools", "robaudit,art", "--attacks", "fgsm,pgd-l2,onepixel",
        "--n", "12", "--n-onepixel", "2", "--pgd-steps", "3", "--population", "20", "--generations", "2",
        "--batch-size", "8", "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    cells = {(c["tool"], c["attack"]): c for c in report["cells"]}
    assert set(cells) == {(t, a) for t in ("robaudit", "art") for a in ("fgsm", "pgd-l2", "onepixel")}
    for cell in cells.values():
        assert cell["error"] is None
        assert not any(cell["violations"].values())  # every x_adv inside its threat model
        assert cell["images_per_second"] > 0 and cell["time_over_floor"] > 0
        assert 0 <= cell["fooled"] <= cell["n"]
    assert "| PGD-3 L2 | robaudit | 12 |" in table
    for cell in (cells["robaudit", "pgd-l2"], cells["art", "pgd-l2"]):  # PGD's second floor
        assert cell["floor_pgd_inputs_s"] > 0 and cell["time_over_pgd_inputs_floor"] > 0
    assert cells["robaudit", "fgsm"]["floor_pgd_inputs_s"] is None
    assert "PGD's second floor" in table
    assert report["environment"]["torch"] and report["settings"]["eps_l2"] == 1.5
    # every cell ran with the allocator setting of robaudit scan
    assert report["environment"]["malloc"] == {
        "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }


def test_the_memory_scaling_script_runs(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    run("benchmarks/memory_scaling.py", "--small", "64", "--large", "128", "--json", str(out))
    report = json.loads(out.read_text())
    assert [r["samples"] for r in report["runs"]] == [64, 128]
    assert all(r["peak_rss_mib"] > 50 for r in report["runs"])  # a real process with torch loaded


def test_the_resnet18_timing_model_runs(tmp_path: Path) -> None:
    """The ResNet-18-sized model the GPU benchmark calls for, on a CPU and a tiny budget."""
    out = tmp_path / "bench.json"
    run(
        "benchmarks/compare_attacks.py", "--model", "resnet18", "--tools", "robaudit", "--attacks", "pgd",
        "--n", "4", "--pgd-steps", "2", "--batch-size", "4", "--repeats", "1", "--json", str(out),
    )  # fmt: skip
    (cell,) = json.loads(out.read_text())["cells"]
    assert cell["error"] is None and cell["n"] == 4 and not any(cell["violations"].values())


def test_the_gpu_measurements_refuse_an_unknown_section_in_one_line() -> None:
    # The measurements themselves need a CUDA GPU (their numbers are in benchmarks/RESULTS.md).
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_candidates.py", "--out", "unused", "tf32", "warp-speed"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        "unknown sections ['warp-speed']; choose from env, ort, tf32, onepixel, pgd, compile" in done.stderr
    )


def test_the_floor_input_check_prints_a_ratio_for_every_way() -> None:
    table = run("benchmarks/floor_input.py", "--rounds", "1", "--steps", "2", "--batch-size", "8")
    rows = {line.split()[0]: line for line in table.splitlines() if " median " in line}
    assert list(rows) == [
        "repeated", "copied", "same-values", "pgd-values", "pgd-inputs", "reference-pgd", "robaudit-pgd",
    ]  # fmt: skip
    assert "paired, per round: robaudit-pgd over pgd-inputs" in table
    assert "median 1.000" in rows["repeated"]  # each way is timed against the repeated input
    assert all(float(row.split()[2]) > 0 for row in rows.values())
