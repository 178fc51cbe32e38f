"""The terminal report on a fixed results object: fits 80 columns, escapes user text, says the caveat."""

from __future__ import annotations

import io

from rich.console import Console

from robaudit.report.terminal import render
from tests.report_fixture import fixed_result


def rendered(width: int = 80, terminal: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=terminal, color_system="standard" if terminal else None
    )
    render(fixed_result(), console)
    return buffer.getvalue()


def test_fits_80_columns_and_shows_the_fixed_numbers() -> None:
    text = rendered()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "95.0% (190/200, 95% CI 91.0-97.0)" in text
    assert "93.0% when right, 42.0% when wrong" in " ".join(text.split())
    # The worst case at eps 0.2 (9.0%, CI 3.0-15.0) is in the table and spelled out in the summary.
    assert "│ worst-case │ linf │ 0.2 │   9.0% │  3.0-15.0 │" in text
    flat = " ".join(text.replace("│", " ").split())
    assert "Worst case at linf eps=0.2: robust accuracy 9.0% (95% CI 3.0-15.0%)" in flat
    assert "upper bound on true robust accuracy" in flat
    assert "median robustness radius (linf, over the swept eps): 0.2; 18 of 200" in flat


def test_user_text_is_not_read_as_markup() -> None:
    text = rendered()
    assert "models/<script>alert(1)</script>.onnx" in text  # shown literally, nothing swallowed


def test_piped_output_has_no_colour_codes_but_a_terminal_gets_them() -> None:
    assert "\x1b[" not in rendered(terminal=False)
    assert "\x1b[" in rendered(terminal=True)


def test_long_art_attack_names_are_shown_whole_at_80_columns() -> None:
    import dataclasses

    result = fixed_result()
    rows = list(result.rows)
    rows[0] = dataclasses.replace(rows[0], attack="art:CarliniLInfMethod")
    rows[1] = dataclasses.replace(rows[1], attack="art:ProjectedGradientDescentPyTorch")
    buffer = io.StringIO()
    render(dataclasses.replace(result, rows=rows), Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "│ art:CarliniLInfMethod │" in text and "…" not in text
    # a name longer than the column wraps onto the next line, every letter kept
    assert "art:ProjectedGradient" in text and "DescentPyTorch" in text
