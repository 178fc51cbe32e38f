"""The transfer document as one self-contained HTML page: each matrix a heatmap with its numbers in the
cells, and examples that transfer as inline PNG data URIs (the document carries them)."""

from __future__ import annotations

from html import escape

from robaudit.report.eps import eps_text
from robaudit.transfer.result import TransferMatrix, TransferResult

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.4em .7em;text-align:right}th{background:#f4f4f4}"
    "img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ccc}"
)


def _heat(value: float | None) -> str:
    """White at 0, red at 1: the larger the error, the hotter the cell."""
    if value is None:
        return "#eee"
    v = max(0.0, min(1.0, value))
    other = round(255 * (1 - 0.75 * v))
    return f"rgb(255,{other},{other})"


def _heatmap(m: TransferMatrix, names: list[str], confidence: bool) -> str:
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for s, name in enumerate(names):
        tds = []
        for t in range(len(names)):
            c = m.cell(s, t)
            value = c.confidence_on_errors if confidence else c.error_rate
            text = "-" if value is None else f"{100 * value:.2f}%"
            if not confidence and c.error_rate_ci:
                text += f"<br><small>[{100 * c.error_rate_ci[0]:.1f}, {100 * c.error_rate_ci[1]:.1f}] {c.errors}/{c.n}</small>"
            tds.append(f'<td style="background:{_heat(value)}">{text}</td>')
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(tds)}</tr>")
    return f"<table><tr><th>made on \\ tried on</th>{head}</tr>{''.join(rows)}</table>"


def _examples(m: TransferMatrix, names: list[str]) -> str:
    if not m.examples:
        return ""
    items = "".join(
        f"<tr><td>{escape(names[e.source])} &rarr; {escape(names[e.target])}</td><td>#{e.sample_index} label {e.label}</td>"
        f'<td><img alt="original" src="{e.original_png}"></td><td><img alt="adversarial" src="{e.adversarial_png}"></td>'
        f"<td>source says {e.source_pred}, target says {e.target_pred} ({100 * e.target_conf:.1f}%)</td></tr>"
        for e in m.examples
    )
    return f"<h3>Examples that transfer</h3><table>{items}</table>"


def to_html(result: TransferResult) -> str:
    names = [m.name for m in result.models]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>robaudit transfer</title><style>{_STYLE}</style></head><body>",
        f"<h1>robaudit transfer</h1><p>{len(names)} models on {result.data['n_samples']} samples of "
        f"<code>{escape(str(result.data['path']))}</code>. Rows: the model the examples were made on; columns: the "
        "model they were tried on, on its own reference runtime.</p>",
        f"<p><b>Denominator ({escape(result.denominator)}):</b> {escape(result.denominator_text)}.</p>",
    ]
    for m in result.matrices:
        title = f"{m.attack} {m.norm} eps={eps_text(m.norm, m.eps)}"
        parts.append(f"<h2>{escape(title)}</h2>")
        if m.error is not None:
            parts.append(f"<p>failed: {escape(m.error)}</p>")
            continue
        parts += ["<h3>Error rate</h3>", _heatmap(m, names, False)]
        parts += ["<h3>Confidence on errors</h3>", _heatmap(m, names, True), _examples(m, names)]
    parts.append("</body></html>")
    return "\n".join(parts)
