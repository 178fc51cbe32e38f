"""Values the configuration parses the same way wherever they come from: eps, targets, batch sizes.

No pydantic models here: the sections (``sections.py``) and the gate's threshold parser use these.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from robaudit.errors import UsageError

Layout = Literal["auto", "nchw", "nhwc"]
OutputKind = Literal["auto", "logits", "probabilities", "log-probabilities"]
DEFAULT_BATCH_SIZE = 256
Norm = Literal["linf", "l2", "l1"]

_EPS_PATTERN = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)(\s*/\s*(\d+(\.\d*)?|\.\d+))?\s*$")


def parse_batch_size(value: object) -> int | str:
    """A positive whole number of samples, or ``auto`` (the largest batch that fits, probed)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"must be a positive whole number of samples or auto, not {value!r}")


# Two eps closer than this are one budget: 8/255 written as a fraction and as 0.0313725490196.
EPS_TOLERANCE = 1e-9


def parse_eps(text: str | float | int, field: str = "--eps") -> float:
    """Parse an epsilon written as ``0.1``, ``8/255`` or ``.03``, on the [0, 1] pixel scale."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _EPS_PATTERN.match(str(text))
        if not match:
            raise UsageError(f"{field}: {text!r} is not a number; write e.g. 0.1 or 8/255")
        if match.group(3):
            num, den = str(text).split("/")
            if float(den) == 0:
                raise UsageError(f"{field}: {text!r} divides by zero; write e.g. 8/255")
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            value = float(match.group(1))
    if not (value >= 0.0):
        raise UsageError(f"{field}: {text!r} must be >= 0")
    return value


def check_linf_eps(eps: float, field: str = "--eps") -> None:
    """An L∞ budget above 1 would allow any image: almost always 8 meant as 8/255."""
    if eps > 1.0:
        raise UsageError(
            f"{field}: {eps:g} is larger than 1, but eps is measured on the [0, 1] pixel scale whatever "
            f"the data's range; for 8 grey levels of 255 write 8/255"
        )


def parse_target(value: object) -> str:
    """none, random, least-likely or a class index (an int from YAML, or its digits)."""
    text = str(value).strip().lower()
    if not isinstance(value, bool) and (text in ("none", "random", "least-likely") or text.isdigit()):
        return text
    raise ValueError("use none, random, least-likely or a class index such as 3")


EpsList = list[float | str]


def eps_values(values: EpsList) -> list[float]:
    """eps as a profile or the library writes them (0.1 or "8/255"), for a pydantic validator: a bad one
    raises ValueError with the reason alone, so the field path comes from pydantic."""
    out = []
    for v in values:
        try:
            out.append(parse_eps(v, field="eps"))
        except UsageError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return out
