"""The Markdown summary: the fixture's numbers on the page, hostile names escaped, tables intact."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import robaudit.atomic as atomic
from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.report import markdown
from robaudit.report.markdown import escape, render_markdown, write_markdown
from robaudit.results import UPPER_BOUND_CAVEAT, AuditResult, ClassInfo
from tests.conftest import HOLDOUT, REPO, SAMPLES
from tests.report_fixture import fixed_result


def _unescaped_pipes(line: str) -> int:
    """Pipes that split a GitHub table row: a backslash escapes the character after it."""
    return sum(1 for token in re.findall(r"\\.|\|", line) if token == "|")


def _tables(text: str) -> list[list[str]]:
    tables: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _assert_tables_intact(text: str) -> None:
    tables = _tables(text)
    assert tables
    for table in tables:
        assert re.fullmatch(r"\|(:?-+:?\|)+", table[1]), table[1]
        widths = {_unescaped_pipes(line) for line in table}
        assert len(widths) == 1, table
        assert all(line.endswith("|") and not line.endswith("\\|") for line in table)


def _hostile(result: AuditResult) -> AuditResult:
    """The fixture with pipes, newlines and HTML in every user-provided name that reaches a table."""
    rows = [
        dataclasses.replace(r, attack="art:A|B\n<img src=x onerror=alert(1)>") if r.attack == "pgd" else r
        for r in result.rows
    ]
    classes = [dataclasses.replace(c, name=f"{c.name}|x\\|y") for c in result.classes if c.name is not None]
    classes.append(ClassInfo(index=2, name=None, n=0, clean_accuracy=None))
    return dataclasses.replace(
        result,
        rows=rows,
        classes=classes,
        notes=[*result.notes, "1. a | note\nwith a newline and <script>x</script>", "- <!-- comment"],
        settings={**result.settings, "device": "cuda:0 | <i>"},
    )


# The fixed result


@pytest.fixture(scope="module")
def text() -> str:
    return render_markdown(fixed_result())


def test_title_and_clean_accuracy(text: str) -> None:
    lines = text.splitlines()
    assert lines[0].startswith("## robaudit: ") and lines[0].endswith(".onnx")
    clean = next(line for line in lines if "Clean accuracy" in line)
    assert "95.0%" in clean and "91.0–97.0%" in clean and "n = 200" in clean and "190 correct" in clean
    assert "holdout.npz (200 images, 1x8x8)" in text


def test_worst_case_table(text: str) -> None:
    table = next(t for t in _tables(text) if "attack success" in t[0] and "attack |" not in t[0])
    assert len(table) == 2 + 2, "one row per threat model"
    eps_01, eps_02 = table[2], table[3]
    # 120 of 200 robust (60.0%, CI 54.0-66.0%); success (190 - 120) / 190 = 36.8%, CI 36.8 +- 7 points.
    for value in ("ε=0.1", "**60.0%**", "54.0–66.0%", "36.8%", "29.8–43.8%"):
        assert value in eps_01, value
    # 18 of 200 robust (9.0%, CI 3.0-15.0%); success 172 / 190 = 90.5%.
    for value in ("ε=0.2", "**9.0%**", "3.0–15.0%", "90.5%"):
        assert value in eps_02, value


def test_confidence_clean_vs_adversarial(text: str) -> None:
    table = next(t for t in _tables(text) if "misclassified" in t[0])
    assert len(table) == 2 + 2
    for row in table[2:]:
        # clean 0.9 / 0.93 / 0.42 (confidence_clean), adversarial 0.7 / 0.66 / 0.81 (the rows').
        assert "90.0% → 70.0%" in row and "93.0% → 66.0%" in row and "42.0% → 81.0%" in row


def test_per_attack_rows(text: str) -> None:
    table = next(t for t in _tables(text) if t[0].startswith("| attack |"))
    assert len(table) == 2 + 4, "fgsm and pgd at two eps; no worst-case rows"
    assert not any("worst-case" in line for line in table)
    fgsm_01 = table[2]
    # 150 of 200 robust, success 40 / 190 = 21.1%, 40 fooled first, 0.5 s; ONNX: 40 converted, 40 confirmed.
    for value in ("fgsm", "75.0%", "21.1%", "| 40 |", "0.5", "40 → 40"):
        assert value in fgsm_01, value
    assert "10.0%" in table[5] and "89.5%" in table[5] and "170 → 170" in table[5]


def test_radius_classes_notes_and_caveat(text: str) -> None:
    assert "Median robustness radius" in text and "linf 0.2" in text
    # Least robust at eps 0.2: class 1 at 50%, then class 0 at 90%; class 2 has no samples.
    classes = next(line for line in text.splitlines() if line.startswith("Least robust classes"))
    assert classes.index("50.0%") < classes.index("90.0%")
    assert "- data/holdout.npz: x is memory-mapped" in text
    assert f"> {UPPER_BOUND_CAVEAT}" in text


def test_user_text_is_escaped(text: str) -> None:
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "cat &amp; dog" in text
    # The only raw HTML is the summary's own.
    assert set(re.findall(r"</?([a-zA-Z]+)", text)) <= {"details", "summary", "sub"}


def test_tables_keep_their_columns(text: str) -> None:
    _assert_tables_intact(text)


def test_compact(text: str) -> None:
    assert len(text.splitlines()) <= 45
    assert "data:image/png" not in text, "no gallery images in a job summary"


def test_hostile_names_do_not_break_tables_or_inject_html() -> None:
    text = render_markdown(_hostile(fixed_result()))
    _assert_tables_intact(text)
    per_attack = next(t for t in _tables(text) if t[0].startswith("| attack |"))
    assert any(r"art:A\|B &lt;img src=x onerror=alert(1)&gt;" in line for line in per_attack)
    assert "<img" not in text and "<script>" not in text and "<i>" not in text and "<!--" not in text
    assert r"cat &amp; dog\|x\\\|y" in text
    lines = text.splitlines()
    assert r"- 1\. a \| note with a newline and &lt;script&gt;x&lt;/script&gt;" in lines
    assert r"- \- &lt;!-- comment" in lines
    assert all("\r" not in line for line in lines)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a|b", r"a\|b"),
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),
        ("two\nlines\r\nthree", "two lines three"),
        ("__init__ *x* `y` [z](u) ~~s~~ #1", r"\_\_init\_\_ \*x\* \`y\` \[z\](u) \~\~s\~\~ \#1"),
        ("C:\\models\\m.onnx", r"C:\\models\\m.onnx"),
    ],
)
def test_escape(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_targeted_column() -> None:
    result = fixed_result()
    rows = [dataclasses.replace(r, n_target_hits=7) for r in result.rows]
    settings = {**result.settings, "target": "random"}
    text = render_markdown(dataclasses.replace(result, rows=rows, settings=settings))
    worst = next(t for t in _tables(text) if "target hits (random)" in t[0])
    assert all("7/190" in line for line in worst[2:])
    _assert_tables_intact(text)
    assert "target hits" not in render_markdown(result)


def test_missing_values_render_as_na() -> None:
    result = fixed_result()
    rows = [
        dataclasses.replace(
            r, attack_success_rate=None, attack_success_rate_ci=None, confidence=None, n_fooled_converted=None
        )
        for r in result.rows
    ]
    text = render_markdown(
        dataclasses.replace(
            result, rows=rows, clean_accuracy_ci=None, confidence_clean=None, notes=[], radius=[]
        )
    )
    assert "n/a" in text and "None" not in text
    assert "**Notes**" not in text and "Median robustness radius" not in text
    assert "converted" not in text
    _assert_tables_intact(text)


# Writing


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = fixed_result()
    path = tmp_path / "sub" / "summary.md"
    write_markdown(result, path)
    assert path.read_text(encoding="utf-8") == render_markdown(result)
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.md"], "no temporary file left"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not mkstemp's 0600

    # A failure while writing keeps the previous summary whole and leaves no temporary file behind.
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    write_markdown(dataclasses.replace(result, notes=["second"]), path)
    assert len(renames) == 1
    src, dst = renames[0]
    assert Path(src).parent == path.parent and Path(dst) == path, "renamed from the same folder"
    assert "- second" in path.read_text(encoding="utf-8")

    def broken(_: AuditResult) -> str:
        raise RuntimeError("disk full")

    before = path.read_text(encoding="utf-8")
    monkeypatch.setattr(markdown, "render_markdown", broken)
    with pytest.raises(RuntimeError):
        write_markdown(result, path)
    assert path.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.md"]


def test_markdown_does_not_import_torch() -> None:
    code = (
        "import sys; import robaudit.report.markdown, robaudit.results; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# A real run


def test_real_run_renders(tmp_path: Path) -> None:
    result = run_audit(
        AuditConfig(
            model=SAMPLES / "mnist_cnn.pt",
            data=str(HOLDOUT),
            limit=100,
            eps=(0.1, 0.2),
            attacks=("fgsm", "pgd"),
            steps=5,
        )
    )
    path = tmp_path / "summary.md"
    write_markdown(result, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("## robaudit: mnist\\_cnn.pt\n"), "underscores escaped, rendered as typed"
    assert f"**Clean accuracy {100 * result.clean_accuracy:.1f}%**" in text
    worst = [r for r in result.rows if r.attack == "worst-case"]
    assert len(worst) == 2
    for row in worst:
        assert f"**{100 * row.robust_accuracy:.1f}%**" in text
    _assert_tables_intact(text)
    assert len(text.splitlines()) <= 45
    assert result.caveat in text
    assert "None" not in text and "nan" not in text


def test_renders_as_intended_by_a_commonmark_parser() -> None:
    """Through a real parser (CommonMark with GFM tables, raw HTML allowed as on GitHub): every row has
    its header's cell count, and the hostile names come out as text, not tags."""
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough")
    html = parser.render(render_markdown(_hostile(fixed_result())))
    tables = re.findall(r"<table>.*?</table>", html, re.S)
    assert len(tables) == 3
    for table in tables:
        cells = [len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
        assert len(set(cells)) == 1, cells
    assert set(re.findall(r"<([a-z]+)[ >]", html)) <= {
        "h2", "h3", "p", "strong", "table", "thead", "tbody", "tr", "th", "td",
        "details", "summary", "ul", "li", "blockquote", "sub",
    }  # fmt: skip
    assert "art:A|B &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<li>1. a | note with a newline and &lt;script&gt;x&lt;/script&gt;</li>" in html
    assert "cat &amp; dog|x\\|y" in html
