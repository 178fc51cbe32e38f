"""Values the configuration parses the same way wherever they come from: eps, targets, batch sizes.

No pydantic models here: the sections (``sections.py``) and the gate's threshold parser use these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

from robaudit.errors import UsageError

Layout = Literal["auto", "nchw", "nhwc"]
OutputKind = Literal["auto", "logits", "probabilities", "log-probabilities"]
DEFAULT_BATCH_SIZE = 256
Norm = Literal["linf", "l2", "l1"]

# A sign is read too, so that a negative budget is refused as negative rather than as not a number.
_EPS_PATTERN = re.compile(r"^\s*([-+]?\s*(\d+(\.\d*)?|\.\d+))(\s*/\s*(\d+(\.\d*)?|\.\d+))?\s*$")


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
        if match.group(4):
            num, den = str(text).split("/")
            if float(den) == 0:
                raise UsageError(f"{field}: {text!r} divides by zero; write e.g. 8/255")
            value = float(Fraction(num.replace(" ", "")) / Fraction(den.strip()))
        else:
            value = float(match.group(1).replace(" ", ""))
    if not (value >= 0.0):
        raise UsageError(f"{field}: {text!r}: eps must be >= 0; write e.g. 0.1 or 8/255")
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


def eps_decimals(value: str | float | int) -> int | None:
    """How many decimals an eps was written with: ``0.0314`` -> 4, ``0.10`` -> 2. None for an eps that
    is exact as written: a fraction (``8/255``) or a whole number (an l0 pixel count). A float counts the
    decimals of its shortest repr, which is what a profile or a Python literal wrote (``0.0314``)."""
    if isinstance(value, bool):
        return None
    text = repr(value) if isinstance(value, float) else str(value).replace(" ", "")
    if "/" in text:
        return None
    try:
        exponent = Decimal(text).as_tuple().exponent
    except InvalidOperation:
        return None
    return -exponent if isinstance(exponent, int) and exponent < 0 else None


def eps_match(written: float, decimals: int | None, eps: float) -> bool:
    """Whether ``eps`` is the eps a user wrote as ``written`` with ``decimals`` decimals: it rounds to it
    at that precision (0.0314 is 8/255 = 0.031372..., to 4 decimals). An exact eps (``decimals`` None:
    8/255 as a fraction) matches within EPS_TOLERANCE only."""
    tolerance = EPS_TOLERANCE if decimals is None else max(EPS_TOLERANCE, 0.5 * 10.0**-decimals)
    return abs(eps - written) <= tolerance * (1 + 1e-9)


def eps_picks(written: float, decimals: int | None, candidates: Iterable[float]) -> list[float]:
    """The candidates an eps written as ``written`` (with ``decimals``) picks: the one equal to it if
    there is one (``0.03`` picks 0.03 beside 8/255), else every one that rounds to it; for an exact eps
    (``8/255``, ``decimals`` None), every candidate written as a decimal it rounds to (a run at 0.0314).
    Two or more picked is an ambiguous eps, for the caller to refuse."""
    values = list(dict.fromkeys(candidates))
    equal = [e for e in values if abs(e - written) <= EPS_TOLERANCE]
    if equal or decimals is not None:
        return equal or [e for e in values if eps_match(written, decimals, e)]
    return [e for e in values if _written_as_rounding_of(e, written)]


def _written_as_rounding_of(row_eps: float, exact: float) -> bool:
    """Whether a run's eps, written as a decimal (``threat.eps: [0.0314]``), stands for an exact eps a
    check names (``8/255``): the exact one rounds to it at the decimals the run wrote. Only a decimal of
    three or more significant digits stands for a fraction: 0.03 is a budget of its own, not 8/255, and
    1/8 is not the 0.1 of a run."""
    decimals = eps_decimals(row_eps)
    if decimals is None or decimals > 12:  # 0.0313725490196... is the fraction itself, not a rounding
        return False
    if len(Decimal(repr(row_eps)).normalize().as_tuple().digits) < 3:
        return False
    return eps_match(row_eps, decimals, exact)
