"""An eps as every report and every gate message prints it, in a form the gate reads back."""

from __future__ import annotations

from decimal import Decimal


def eps_text(norm: str, eps: float) -> str:
    """``8/255`` where eps is that many grey levels and no short decimal (0.2 stays ``0.2``), else up to
    six significant digits (``0.1``, ``0.0314``), never in exponent form; a pixel count for l0."""
    if norm == "l0":
        return str(int(eps)) if float(eps).is_integer() else f"{eps:g}"
    text = f"{eps:.6g}"
    if "e" in text:
        text = format(Decimal(text), "f")  # 1e-05 as 0.00001, which --fail-under reads
    if float(text) == eps:
        return text
    grey = eps * 255
    if round(grey) > 0 and abs(grey - round(grey)) <= 1e-9:
        return f"{round(grey)}/255"
    return text
