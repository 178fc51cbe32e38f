"""The HTML report: its numbers and escaping on a fixed results object, and a real browser rendering it.

The browser tests drive headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
so they need no driver and no extra Python package; they skip when no Chromium binary is installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from robaudit.report.html import render_html, write_html
from robaudit.results import WORST_CASE, AuditResult, Flag, Radius
from tests.conftest import HOLDOUT, SAMPLES
from tests.report_fixture import fixed_result

SECTIONS = (
    "caveat",
    "summary",
    "curves",
    "results",
    "confidence",
    "perturbation",
    "per-class",
    "radius",
    "gallery",
    "notes",
    "metadata",
    "caveat-end",
)
SCRIPT = "<script>alert(1)</script>"


# --- a small DOM built with the standard library's parser --------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclasses.dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = dataclasses.field(default_factory=list)

    def iter(self, tag: str | None = None) -> Iterator[Node]:
        if tag is None or self.tag == tag:
            yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter(tag)

    def text(self) -> str:
        if self.tag == "style":
            return ""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"expected one element with id {ident!r}, found {len(found)}"
        return found[0]

    def rows(self) -> list[list[str]]:
        """The cell texts of each body row of the first table under this node."""
        body = next(next(self.iter("table")).iter("tbody"))
        return [[cell.text() for cell in tr.children if isinstance(cell, Node)] for tr in body.iter("tr")]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@pytest.fixture(scope="module")
def fixture_html() -> str:
    return render_html(fixed_result())


@pytest.fixture(scope="module")
def page(fixture_html: str) -> Node:
    return parse(fixture_html)


# --- the page on the fixed result ---------------------------------------------------------------------


def test_every_section_is_there_with_a_heading(page: Node) -> None:
    for ident in SECTIONS:
        section = page.by_id(ident)
        assert section.tag == "section"
        assert list(section.iter("h2")), f"section {ident} has no heading"
    ids = [n.attrs["id"] for n in page.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids)), (
        "duplicate ids (the inline SVGs must not clash with each other or the page)"
    )


def test_summary_states_clean_and_worst_case_accuracy_with_intervals(page: Node) -> None:
    result = fixed_result()
    summary = page.by_id("summary").text()
    assert pct(result.n_clean_correct / result.data.n_evaluated) in summary
    assert "95.0%" in summary and "91.0–97.0%" in summary
    findings = [li.text() for li in page.by_id("summary").iter("li")]
    worst = [r for r in result.rows if r.attack == WORST_CASE]
    assert len(findings) == len(worst) == 2
    for line, row in zip(findings, worst, strict=True):
        assert f"eps {row.eps:g}" in line
        assert pct(row.n_robust / row.n_samples) in line
        assert row.robust_accuracy_ci is not None
        lo, hi = row.robust_accuracy_ci
        assert f"{100 * lo:.1f}–{100 * hi:.1f}%" in line
        assert f"fooled {row.n_clean_correct - row.n_robust} of the {row.n_clean_correct}" in line
    assert "9.0%" in findings[1] and "3.0–15.0%" in findings[1]
    # Only the worst case is summarised: fgsm (30.0%) and pgd (10.0%) at eps 0.2 are not.
    assert "30.0%" not in summary and "10.0%" not in summary


def test_results_table_has_every_row_and_its_counts(page: Node) -> None:
    result = fixed_result()
    rows = page.by_id("results").rows()
    assert len(rows) == len(result.rows)
    for cells, row in zip(rows, result.rows, strict=True):
        assert cells[0] == row.attack and cells[1] == row.norm and cells[2] == f"{row.eps:g}"
        assert str(row.n_robust) in cells
        assert pct(row.n_robust / row.n_samples) in cells
        assert pct((row.n_clean_correct - row.n_robust) / row.n_clean_correct) in cells  # success rate
        expected = "—" if row.n_fooled_by_attack is None else str(row.n_fooled_by_attack)
        assert cells[9] == expected
        assert row.n_fooled_converted is not None and str(row.n_fooled_converted) in cells[13:]
    worst_rows = [tr for tr in page.by_id("results").iter("tr") if tr.attrs.get("class") == "worst"]
    assert len(worst_rows) == 2


def test_confidence_table_compares_clean_and_adversarial(page: Node) -> None:
    rows = page.by_id("confidence").rows()
    assert rows[0][0] == "clean" and rows[0][3:] == ["90.0%", "93.0%", "42.0%"]
    assert len(rows) == 1 + len(fixed_result().rows)
    assert all(r[3:] == ["70.0%", "66.0%", "81.0%"] for r in rows[1:])


def test_perturbation_sizes(page: Node) -> None:
    result = fixed_result()
    rows = page.by_id("perturbation").rows()
    for cells, row in zip(rows, result.rows, strict=True):
        assert row.perturbation is not None
        assert cells[3] == str(row.n_clean_correct - row.n_robust)
        assert [float(c) for c in cells[4:]] == [row.eps, row.eps, 2.5, 2.4, 480.0, 470.0]


def test_per_class_table_escapes_names_and_shows_missing_values_as_dashes(
    page: Node, fixture_html: str
) -> None:
    rows = page.by_id("per-class").rows()
    assert rows == [
        ["0", "cat & dog", "100", "97.0%", "90.0%", "90.0%"],
        ["1", "<b>bold</b>", "90", "93.0%", "50.0%", "50.0%"],
        ["2", "—", "0", "—", "—", "—"],
    ]
    assert "cat &amp; dog" in fixture_html and "&lt;b&gt;bold&lt;/b&gt;" in fixture_html
    assert not list(page.iter("b"))


def test_radius_counts_and_median(page: Node) -> None:
    section = page.by_id("radius")
    rows = section.rows()
    counts = [int(r[1]) for r in rows]
    assert counts == [10, 70, 102, 18] and sum(counts) == fixed_result().data.n_evaluated
    assert "Median radius" in section.text() and section.text().count("0.2") >= 2


def test_missing_numbers_show_as_dashes_not_errors() -> None:
    base = fixed_result()
    rows = [
        dataclasses.replace(
            r, robust_accuracy_ci=None, attack_success_rate=None, confidence=None, perturbation=None
        )
        for r in base.rows
    ]
    result = dataclasses.replace(
        base,
        rows=rows,
        clean_accuracy_ci=None,
        confidence_clean=None,
        radius=[
            Radius(
                norm="linf", eps=[0.1, 0.2], fooled_at=[5, 5], wrong_on_clean=10, not_fooled=180, median=None
            )
        ],
        gallery=[],
        notes=[],
    )
    doc = parse(render_html(result))
    assert "95% CI —" in doc.by_id("summary").text()
    assert all("no sample fooled" in " ".join(r) for r in doc.by_id("perturbation").rows())
    assert "above the largest eps (0.2)" in doc.by_id("radius").text()
    assert "No adversarial examples" in doc.by_id("gallery").text()
    assert not list(doc.iter("img"))


def test_gallery_images_are_data_uris_and_labels_use_class_names(page: Node) -> None:
    gallery = page.by_id("gallery")
    images = list(gallery.iter("img"))
    example = fixed_result().gallery[0]
    assert [i.attrs["src"] for i in images] == [
        example.original_png,
        example.perturbation_png,
        example.adversarial_png,
    ]
    assert all(i.attrs["src"].startswith("data:image/png;base64,") for i in page.iter("img"))
    text = gallery.text()
    assert "#17" in text and "pgd" in text
    assert "1 (<b>bold</b>) at 97.0%" in text  # clean prediction, named
    assert "0 (cat & dog) at 64.0%" in text  # adversarial prediction, named


def test_notes_and_the_honest_flags_line(page: Node) -> None:
    text = page.by_id("notes").text()
    assert "data/holdout.npz: x is memory-mapped" in text
    assert "No reliability flags were raised" in text and "does not prove" in text


def test_flags_are_listed_with_their_advice() -> None:
    result = dataclasses.replace(
        fixed_result(),
        flags=[Flag(code="eps-monotonicity", message="fgsm <linf> rises", advice="use more --steps")],
    )
    html = render_html(result)
    assert "<strong>eps-monotonicity</strong>: fgsm &lt;linf&gt; rises." in html
    assert "use more --steps." in html and "No reliability flags were raised" not in html


def test_run_metadata(page: Node) -> None:
    text = page.by_id("metadata").text()
    for expected in ("ab" * 32, "cd" * 32, "2.14.1", "3.11.7", "onnx2pytorch", "CPUExecutionProvider"):
        assert expected in text
    settings = dict(_kv(page.by_id("settings")))
    assert settings["seed"] == "7" and settings["device"] == "cpu"
    assert settings["pgd"] == "steps=40, rel_step_size=2.5, restarts=1, loss=ce"
    timings = _kv(page.by_id("timings"))
    assert [float(v.split()[0]) for _, v in timings] == [1.5, 0.2, 12.0]


def test_settings_show_an_attacks_own_settings_not_its_internal_knobs() -> None:
    """The JSON keeps every field PGD ran with; the page shows the ones a user sets (--steps, ...)."""
    result = fixed_result()
    ran_with = {**result.settings["pgd"], "lagged": None, "early_stop": True, "min_margin": 0.0}
    html = render_html(dataclasses.replace(result, settings={**result.settings, "pgd": ran_with}))
    settings = dict(_kv(parse(html).by_id("settings")))
    assert settings["pgd"] == "steps=40, rel_step_size=2.5, restarts=1, loss=ce"
    assert settings["seed"] == "7"  # the run's own settings are all there


def _kv(table: Node) -> list[tuple[str, str]]:
    """The (header, value) pairs of a two-column table."""
    pairs = []
    for tr in table.iter("tr"):
        key, value = (c.text() for c in tr.children if isinstance(c, Node))
        pairs.append((key, value))
    return pairs


def test_caveat_near_the_top_and_again_at_the_end(page: Node) -> None:
    caveat = fixed_result().caveat
    order = [n.attrs.get("id") for n in page.iter("section")]
    assert order[0] == "caveat" and order[-1] == "caveat-end"
    assert caveat in page.by_id("caveat").text() and caveat in page.by_id("caveat-end").text()


def test_user_text_is_escaped(fixture_html: str, page: Node) -> None:
    assert SCRIPT not in fixture_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fixture_html
    assert not list(page.iter("script"))
    assert f"models/{SCRIPT}.onnx" in page.by_id("metadata").text()  # shown literally


def test_attack_names_and_notes_are_escaped_in_tables_and_plots() -> None:
    evil = '"><img src=x onerror=alert(1)>'
    base = fixed_result()
    rows = [dataclasses.replace(r, attack=evil) if r.attack == "pgd" else r for r in base.rows]
    html = render_html(dataclasses.replace(base, rows=rows, notes=[SCRIPT]))
    doc = parse(html)
    assert SCRIPT not in html and "<img src=x" not in html
    assert all(i.attrs["src"].startswith("data:") for i in doc.iter("img"))
    assert not any("onerror" in n.attrs for n in doc.iter())
    assert evil in doc.by_id("results").text()
    assert SCRIPT in doc.by_id("notes").text()


def test_self_contained_no_network_references(fixture_html: str, page: Node) -> None:
    for node in page.iter():
        for name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            value = node.attrs.get(name)
            if value is not None:
                assert value.startswith(("#", "data:")), f"<{node.tag} {name}={value[:60]!r}> leaves the file"
    assert not [n for n in page.iter() if n.tag in ("script", "link", "iframe", "object", "embed")]
    styles = " ".join("".join(c for c in n.children if isinstance(c, str)) for n in page.iter("style"))
    assert "image-rendering" in styles  # the CSS was found
    assert "@import" not in styles
    assert not re.search(r"url\(\s*['\"]?(?!#|data:)", fixture_html)


def test_one_plot_per_norm_l0_separate() -> None:
    base = fixed_result()
    l0 = [
        dataclasses.replace(r, norm="l0", eps=eps, attack=name, n_robust=n, robust_accuracy=n / 200)
        for name, eps, n in (
            ("onepixel", 1.0, 150),
            (WORST_CASE, 1.0, 150),
            ("onepixel", 3.0, 100),
            (WORST_CASE, 3.0, 100),
        )
        for r in base.rows[:1]
    ]
    doc = parse(render_html(dataclasses.replace(base, rows=[*base.rows, *l0])))
    figures = [f for f in doc.by_id("curves").iter("figure")]
    assert [f.attrs["id"] for f in figures] == ["curve-linf", "curve-l0"]
    assert all(len(list(f.iter("svg"))) == 1 for f in figures)
    assert "75.0%" in figures[1].text() and "50.0%" in figures[1].text()
    assert "1 pixel" in doc.by_id("results").text() and "3 pixels" in doc.by_id("results").text()
    ids = [n.attrs["id"] for n in doc.iter() if "id" in n.attrs]
    assert len(ids) == len(set(ids))


def test_rendering_is_deterministic_and_survives_the_json_round_trip(fixture_html: str) -> None:
    again = AuditResult.from_dict(json.loads(json.dumps(fixed_result().to_dict())))
    assert render_html(again) == fixture_html


def test_importing_the_reporter_loads_neither_torch_nor_matplotlib() -> None:
    code = "import sys, robaudit.report.html; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_write_html_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")
    write_html(fixed_result(), target)
    assert target.read_text(encoding="utf-8") == render_html(fixed_result())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    new = tmp_path / "sub" / "new.html"
    write_html(fixed_result(), new)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask  # like open(), not mkstemp's private 0600


def test_write_html_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report", encoding="utf-8")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_html(fixed_result(), target)
    assert target.read_text(encoding="utf-8") == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


# --- a real browser -----------------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT = 30.0


# Puts the pipe ends on fds 3 and 4, where Chromium looks for them, then becomes Chromium.
_TRAMPOLINE = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
    "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])"
)


class Browser:
    """Headless Chromium driven over the DevTools protocol on fds 3 and 4 (``--remote-debugging-pipe``)."""

    def __init__(self, binary: str, profile: Path) -> None:
        import fcntl

        cmd_r, self._out = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._in, res_w = os.pipe()  # Chromium writes replies on fd 4
        # Above 10, so moving them to 3 and 4 cannot overwrite one with the other.
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(res_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(cmd_r)
        os.close(res_w)
        self._log = profile.parent / "chromium.log"
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1280,1000",
            "about:blank",
        ]
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(child_in), str(child_out), binary, *flags],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its own process group, so teardown reaches every helper process
            )
        os.close(child_in)
        os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer in time; its log ends: {self.log_tail()}")
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe; its log ends: {self.log_tail()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data) :]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, session: str, start: int, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for event in self.events[seen:]:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            seen = len(self.events)
            reply = self._read(deadline)
            if "method" in reply:
                self.events.append(reply)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for fd in (self._in, self._out):
            os.close(fd)


@dataclasses.dataclass
class Visit:
    page: dict[str, Any]  # what the inspection script returned
    errors: list[str]  # console errors, uncaught exceptions and failed loads (Selenium's SEVERE)
    requests: list[str]  # every URL the page asked for
    dialogs: list[str]


INSPECT = """
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  const box = e => { const r = e.getBoundingClientRect(); return {width: r.width, height: r.height}; };
  const visible = e => {
    if (!e) return false;
    const s = getComputedStyle(e), r = e.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0;
  };
  return {
    title: document.title,
    sections: Object.fromEntries(IDS.map(id => [id, visible(document.getElementById(id))])),
    images: images.map(i => ({
      complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
      ...box(i), rendering: getComputedStyle(i).imageRendering,
    })),
    svgs: Array.from(document.querySelectorAll('#curves svg')).map(box),
    scripts: document.scripts.length,
    text: document.body.innerText,
  };
})()
"""


def visit(browser: Browser, url: str) -> Visit:
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        start = len(browser.events)
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        navigated = browser.send("Page.navigate", {"url": url}, session=session)
        assert "errorText" not in navigated, navigated
        browser.wait_for("Page.loadEventFired", session, start)
        script = INSPECT.replace("IDS", json.dumps(SECTIONS))
        answer = browser.send(
            "Runtime.evaluate",
            {"expression": script, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        mine = [e for e in browser.events[start:] if e.get("sessionId") == session]
        errors = []
        for event in mine:
            method, params = event["method"], event["params"]
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(str(params["exceptionDetails"].get("text")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return Visit(
            page=answer["result"]["value"],
            errors=errors,
            requests=[
                e["params"]["request"]["url"] for e in mine if e["method"] == "Network.requestWillBeSent"
            ],
            dialogs=[e["params"]["message"] for e in mine if e["method"] == "Page.javascriptDialogOpening"],
        )
    finally:
        browser.send("Target.closeTarget", {"targetId": target})


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if os.name != "posix":
        pytest.skip("the DevTools pipe to Chromium needs POSIX file descriptors")
    binary = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if binary is None:
        pytest.skip(f"no Chromium or Chrome binary on PATH (looked for {', '.join(BROWSERS)})")
    folder = tmp_path_factory.mktemp("chromium")
    chrome = Browser(binary, folder / "profile")
    try:
        version = chrome.send("Browser.getVersion", timeout=90)  # the first start can be slow
        assert version["product"]
        yield chrome
    finally:
        chrome.close()


def check_rendered(seen: Visit, n_images: int) -> None:
    assert seen.errors == [], f"console errors: {seen.errors}"
    assert seen.dialogs == []
    assert all(url.startswith(("file:", "data:")) for url in seen.requests), seen.requests
    assert seen.page["scripts"] == 0
    hidden = [ident for ident, shown in seen.page["sections"].items() if not shown]
    assert hidden == [], f"sections not rendered: {hidden}"
    images = seen.page["images"]
    assert len(images) == n_images
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
        assert image["width"] > 0 and image["height"] > 0, image
        assert image["width"] >= 2 * image["naturalWidth"], image  # scaled up ...
        assert image["rendering"] == "pixelated", image  # ... pixel for pixel
    assert seen.page["svgs"], "no plot"
    assert all(svg["width"] > 100 and svg["height"] > 50 for svg in seen.page["svgs"]), seen.page["svgs"]


def test_harness_sees_console_errors_and_broken_images(browser: Browser, tmp_path: Path) -> None:
    """The checks below would be empty if the harness missed errors; make it see some first."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><title>bad</title><section id='summary'>x</section>"
        "<img src='data:image/png;base64,AAAA'><script>console.error('deliberate')</script>",
        encoding="utf-8",
    )
    seen = visit(browser, bad.as_uri())
    assert any("deliberate" in e for e in seen.errors), seen.errors
    assert seen.page["images"][0]["naturalWidth"] == 0
    assert seen.page["sections"]["summary"] and not seen.page["sections"]["results"]


def test_browser_renders_the_fixed_report(browser: Browser, tmp_path: Path) -> None:
    result = fixed_result()
    path = tmp_path / "report.html"
    write_html(result, path)
    seen = visit(browser, path.as_uri())
    check_rendered(seen, n_images=3 * len(result.gallery))
    assert SCRIPT in seen.page["title"]  # shown as text, not run
    assert seen.page["text"].count(result.caveat) == 2
    assert len(seen.page["svgs"]) == 1


@pytest.fixture(scope="module")
def real_result() -> AuditResult:
    from robaudit.api import run_audit
    from robaudit.config import AuditConfig

    config = AuditConfig(
        model=SAMPLES / "mnist_cnn.pt", data=str(HOLDOUT), limit=100, eps=(0.1, 0.2), attacks=("fgsm",)
    )
    return run_audit(config)


def test_report_of_a_real_run(real_result: AuditResult, browser: Browser, tmp_path: Path) -> None:
    assert real_result.gallery, "the run recorded no adversarial examples to show"
    path = tmp_path / "real.html"
    write_html(real_result, path)
    doc = parse(path.read_text(encoding="utf-8"))
    rows = doc.by_id("results").rows()
    assert len(rows) == len(real_result.rows)
    clean = pct(real_result.n_clean_correct / real_result.data.n_evaluated)
    assert clean in doc.by_id("summary").text()

    seen = visit(browser, path.as_uri())
    check_rendered(seen, n_images=3 * len(real_result.gallery))
    height, width = real_result.model.sample_shape[-2:]
    assert all(i["naturalWidth"] == width and i["naturalHeight"] == height for i in seen.page["images"])
    for row in (r for r in real_result.rows if r.attack == WORST_CASE):
        assert pct(row.robust_accuracy) in seen.page["text"]


def test_report_of_a_real_run_needs_no_browser(real_result: AuditResult) -> None:
    html = render_html(real_result)
    doc = parse(html)
    assert len(list(doc.by_id("gallery").iter("img"))) == 3 * len(real_result.gallery)
    assert len(doc.by_id("per-class").rows()) == real_result.model.num_classes
