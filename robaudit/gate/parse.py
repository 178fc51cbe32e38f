"""Thresholds as written on the command line: ``METRIC@[ATTACK:]NORM:EPS=VALUE``.

For example ``robust_accuracy@pgd:linf:0.1=0.80`` or ``robust_accuracy@linf:8/255=0.5`` (the attack
defaults to the worst case over all attacks), and ``clean_accuracy=0.95`` (no selector). For ``l0`` the
eps is a number of pixel locations: ``attack_success_rate@onepixel:l0:1=0.1``. Values are fractions in
[0, 1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Literal

from robaudit.config import eps_decimals, parse_eps
from robaudit.errors import UsageError
from robaudit.gate.thresholds import METRICS, NORMS, Check
from robaudit.results import WORST_CASE

_METRIC_NAME = re.compile(r"[a-z][a-z0-9_-]*", re.ASCII)
_ATTACK_NAME = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)
_EPS_TEXT = re.compile(r"[0-9.]+(/[0-9.]+)?", re.ASCII)
_PIXELS_TEXT = re.compile(r"[0-9]{1,6}", re.ASCII)
_VALUE_TEXT = re.compile(r"([0-9]{1,20}(\.[0-9]*)?|\.[0-9]+)", re.ASCII)

_EXAMPLES = {
    "min": "robust_accuracy@pgd:linf:8/255=0.5",
    "max": "attack_success_rate@linf:0.1=0.2",
}

# Builds the one-line error for a problem with the text being parsed.
_Bad = Callable[[str], UsageError]


def parse_threshold(text: str, kind: Literal["min", "max"], flag: str) -> Check:
    """Parse ``METRIC@[ATTACK:]NORM:EPS=VALUE`` or ``clean_accuracy=VALUE`` into a Check.

    ``kind`` says whether VALUE is a minimum (``--fail-under``) or a maximum (``--fail-over``). Any
    malformed text raises a one-line UsageError naming ``flag``, the text, the problem and an example.
    """
    example = _EXAMPLES.get(kind, _EXAMPLES["min"])

    def bad(problem: str) -> UsageError:
        # Every piece of the user's text goes in through repr(), so the message stays one line.
        return UsageError(f"{flag} {text!r}: {problem}; write e.g. {flag} {example}")

    if kind not in ("min", "max"):
        raise UsageError(f"{flag}: the threshold kind must be min or max, not {kind!r}")
    if not isinstance(text, str) or not text.strip():
        raise bad("empty threshold")
    if text.count("=") != 1:
        raise bad(
            "expected one '=' between the metric and its value" if "=" not in text else "more than one '='"
        )
    lhs, value_text = (part.strip() for part in text.split("="))
    value = _parse_value(value_text, bad)
    if "@" in lhs:
        if lhs.count("@") != 1:
            raise bad("more than one '@'")
        metric_text, selector = (part.strip() for part in lhs.split("@"))
    else:
        metric_text, selector = lhs, None
    metric = _parse_metric(metric_text, bad)
    low, high = (value, None) if kind == "min" else (None, value)
    if metric == "clean_accuracy":
        if selector is not None:
            raise bad("clean_accuracy takes no '@ATTACK:NORM:EPS' selector; write clean_accuracy=VALUE")
        return Check(metric=metric, min=low, max=high)
    if selector is None:
        raise bad(f"{metric} needs a selector after '@': [ATTACK:]NORM:EPS, e.g. {metric}@linf:0.1")
    attack, norm, eps = _parse_selector(selector, bad)
    decimals = None if norm == "l0" else eps_decimals(selector.rsplit(":", 1)[-1].strip())
    return Check(metric=metric, norm=norm, eps=eps, attack=attack, min=low, max=high, eps_decimals=decimals)


def _parse_value(value_text: str, bad: _Bad) -> float:
    if not value_text:
        raise bad("no value after '='")
    if not _VALUE_TEXT.fullmatch(value_text):
        raise bad(f"value {value_text!r} is not a number")
    value = float(value_text)
    if not math.isfinite(value) or value > 1.0:
        hint = " (values are fractions: for 80% write 0.8)" if 1.0 < value <= 100.0 else ""
        raise bad(f"value {value_text!r} is not a fraction in [0, 1]{hint}")
    return value


def _parse_metric(metric_text: str, bad: _Bad) -> str:
    if not metric_text:
        raise bad(f"no metric before the value; use one of {', '.join(METRICS)}")
    metric = metric_text.lower().replace("-", "_")
    if not _METRIC_NAME.fullmatch(metric_text.lower()) or metric not in METRICS:
        raise bad(f"unknown metric {metric_text!r}; use one of {', '.join(METRICS)}")
    return metric


def _parse_selector(selector: str, bad: _Bad) -> tuple[str, str, float]:
    parts = [part.strip() for part in selector.split(":")]
    prefix = ""
    if len(parts) > 3 and parts[0].lower() == "transfer":  # --surrogate's rows: transfer:ATTACK
        prefix, parts = "transfer:", parts[1:]
    if len(parts) == 2:
        attack, norm_text, eps_text = WORST_CASE, parts[0], parts[1]
    elif len(parts) == 3:
        attack, norm_text, eps_text = parts
    elif len(parts) == 4 and parts[0].lower() == "art":
        attack, norm_text, eps_text = f"art:{parts[1]}", parts[2], parts[3]
    elif len(parts) < 2:
        raise bad(f"selector {selector!r} needs NORM:EPS, optionally after ATTACK:")
    else:
        raise bad(
            f"selector {selector!r} has too many ':'; use [ATTACK:]NORM:EPS (ART attacks as art:ClassName)"
        )
    name = attack[4:] if attack.lower().startswith("art:") else attack
    attack = prefix + attack
    if not _ATTACK_NAME.fullmatch(name):
        raise bad(f"attack name {attack!r} is not valid; use e.g. pgd, fgsm, onepixel, art:DeepFool")
    norm = norm_text.lower()
    if norm not in NORMS:
        raise bad(f"unknown norm {norm_text!r}; use one of {', '.join(NORMS)}")
    if norm == "l0":
        if not _PIXELS_TEXT.fullmatch(eps_text) or int(eps_text) < 1:
            raise bad(f"for l0 the eps is a number of pixels (1 or more), not {eps_text!r}")
        return attack, norm, float(int(eps_text))
    return attack, norm, _parse_eps(norm, eps_text, bad)


def _parse_eps(norm: str, eps_text: str, bad: _Bad) -> float:
    """A linf/l2/l1 eps: a number or a fraction such as 8/255, at most 1 for linf."""
    not_a_number = f"eps {eps_text!r} is not a number such as 0.1 or 8/255"
    if eps_text.startswith("-") and _EPS_TEXT.fullmatch(eps_text[1:].strip()) and len(eps_text) <= 40:
        raise bad(f"eps {eps_text!r} must be >= 0, such as 0.1 or 8/255")
    if not _EPS_TEXT.fullmatch(eps_text) or len(eps_text) > 40:
        raise bad(not_a_number)
    try:
        eps = parse_eps(eps_text, field="eps")
    except (UsageError, ValueError, ArithmeticError):
        _, _, den = eps_text.partition("/")
        if den.replace(".", "").strip("0") == "" and den.count(".") <= 1 and den not in ("", "."):
            raise bad(f"eps {eps_text!r} divides by zero") from None
        raise bad(not_a_number) from None
    if norm == "linf" and eps > 1.0:
        raise bad(
            f"linf eps {eps_text!r} is larger than 1, but eps is on the [0, 1] pixel scale; "
            f"for 8 grey levels of 255 write 8/255"
        )
    return eps
