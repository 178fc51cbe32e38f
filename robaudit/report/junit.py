"""The gate's checks as JUnit XML, for CI systems that show test results (Jenkins, GitLab, Azure).

One ``<testsuite>`` inside ``<testsuites>``, one ``<testcase classname="robaudit.gate">`` per check; a
failed check gets a ``<failure type="threshold">`` with its message, a passed one its message as
``<system-out>``. A check that could not be made at all (a baseline that is not like for like) is a
testcase with an ``<error>``. Reads only the check outcomes and never imports torch. ElementTree escapes the
markup characters; characters that XML 1.0 cannot hold at all are replaced.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from robaudit.atomic import write_text_atomic

if TYPE_CHECKING:
    # Only for annotations: the gate writes JUnit files, so importing it here would be a circle.
    from robaudit.gate.thresholds import CheckOutcome

CLASSNAME = "robaudit.gate"
FAILURE_TYPE = "threshold"
ERROR_TYPE = "not-comparable"

# Characters outside XML 1.0's Char production (control characters, lone surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def render_junit(
    outcomes: Sequence[CheckOutcome],
    *,
    suite_name: str = "robaudit gate",
    timestamp: str | None = None,
    errors: Sequence[tuple[str, str]] = (),
) -> str:
    """The outcomes, and (name, message) for each check that could not be made, as a JUnit XML
    document (UTF-8 text with an XML declaration)."""
    tests = len(outcomes) + len(errors)
    failures = sum(1 for outcome in outcomes if not outcome.passed)
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(len(errors))}
    root = ET.Element("testsuites", {"name": _xml_text(suite_name), **counts, "time": "0"})
    suite_attrs = {"name": _xml_text(suite_name), **counts, "skipped": "0", "time": "0"}
    if timestamp is not None:
        suite_attrs["timestamp"] = _xml_text(timestamp)
    suite = ET.SubElement(root, "testsuite", suite_attrs)
    for outcome in outcomes:
        case = ET.SubElement(
            suite, "testcase", {"classname": CLASSNAME, "name": _xml_text(outcome.name), "time": "0"}
        )
        message = _xml_text(outcome.message)
        if outcome.passed:
            ET.SubElement(case, "system-out").text = message
        else:
            failure = ET.SubElement(case, "failure", {"message": message, "type": FAILURE_TYPE})
            failure.text = message
    for name, text in errors:
        case = ET.SubElement(
            suite, "testcase", {"classname": CLASSNAME, "name": _xml_text(name), "time": "0"}
        )
        error = ET.SubElement(case, "error", {"message": _xml_text(text), "type": ERROR_TYPE})
        error.text = _xml_text(text)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def write_junit(
    outcomes: Sequence[CheckOutcome],
    path: Path | str,
    *,
    suite_name: str = "robaudit gate",
    timestamp: str | None = None,
    errors: Sequence[tuple[str, str]] = (),
) -> None:
    """Render and write atomically: a crash never leaves a half-written report for CI to read."""
    write_text_atomic(path, render_junit(outcomes, suite_name=suite_name, timestamp=timestamp, errors=errors))
