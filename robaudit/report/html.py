"""The self-contained HTML report: one file, inline CSS, plots as inline SVG, images as data URIs.

Reads only the AuditResult; nothing here imports torch. Jinja2 escapes every string from the result
(model paths, class names, attack names and notes are user input), and matplotlib is imported only
when a report is rendered, so ``robaudit --help`` stays fast.
"""

from __future__ import annotations

import io
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robaudit.atomic import write_text_atomic
from robaudit.attacks.registry import REGISTRY
from robaudit.report.bracket import brackets
from robaudit.report.eps import eps_text as shared_eps_text
from robaudit.results import WORST_CASE, AttackRow, AuditResult, Example, Radius

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "report.html.j2"
DASH = "\u2014"  # shown wherever a number is missing
NDASH = "\u2013"

# Line colours for the attacks (colour-blind safe, Okabe-Ito); the worst case is always black.
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")


# --- number formatting ------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, or a dash."""
    return DASH if value is None else f"{100 * value:.1f}%"


def pct_ci(ci: list[float] | None) -> str:
    """A 95% interval of fractions as ``54.0–66.0%``, or a dash."""
    if not ci or len(ci) != 2:
        return DASH
    return f"{100 * ci[0]:.1f}{NDASH}{100 * ci[1]:.1f}%"


def num(value: float | int | None, digits: int = 4) -> str:
    """A plain number with ``digits`` significant digits, or a dash."""
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def count(value: int | None) -> str:
    return DASH if value is None else str(value)


def eps_text(norm: str, eps: float) -> str:
    """eps as every report prints it (``0.1``, ``8/255``), or ``3 pixels`` for l0."""
    if norm == "l0":
        pixels = int(round(eps))
        return f"{pixels} pixel" + ("" if pixels == 1 else "s")
    return shared_eps_text(norm, eps)


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _public(key: str, value: Any) -> Any:
    """An attack's settings as the user can set them (its registry fields): the JSON keeps every field
    the attack ran with, internal knobs included (PGD's ``lagged``), which mean nothing to a reader."""
    if key == "eps" and isinstance(value, list):  # the swept eps, as every report prints them
        return [shared_eps_text("linf", e) if isinstance(e, float) else e for e in value]
    info = REGISTRY.get(key)
    if info is None or not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k in info.settings.model_fields}


def setting_text(value: Any) -> str:
    """A settings value in one line: lists joined, dicts as key=value, None as a dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if not value:
            return "none"
        return ", ".join(f"{k}={setting_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        return ", ".join(setting_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (str, int)):
        return str(value)
    return json.dumps(value, default=str)


# --- view model -------------------------------------------------------------------------------------


def _norm_order(result: AuditResult) -> list[str]:
    return list(dict.fromkeys(r.norm for r in result.rows))


def _threat_label(norm: str, eps: float) -> str:
    if norm == "l0":
        return f"l0, up to {eps_text(norm, eps)}"
    return f"{norm}, eps {eps_text(norm, eps)}"


def _class_label(result: AuditResult, index: int) -> str:
    """``3`` or ``3 (cat)``: the class index, with its name when the data has names."""
    for c in result.classes:
        if c.index == index and c.name:
            return f"{index} ({c.name})"
    return str(index)


def _worst_rows(result: AuditResult) -> list[AttackRow]:
    return [r for r in result.rows if r.attack == WORST_CASE]


def _summary_lines(result: AuditResult) -> list[str]:
    lines = []
    for row in _worst_rows(result):
        fooled = row.n_clean_correct - row.n_robust
        line = (
            f"{_threat_label(row.norm, row.eps)}: "
            f"at most {pct(row.robust_accuracy)} of the {row.n_samples} samples stay correctly classified "
            f"(95% CI {pct_ci(row.robust_accuracy_ci)}); the attacks fooled {fooled} of the "
            f"{row.n_clean_correct} samples that were correct on clean input"
        )
        if row.attack_success_rate is not None:
            line += f" (attack success rate {pct(row.attack_success_rate)})"
        if row.n_target_hits is not None:
            line += f"; {row.n_target_hits} now classified as their target"
        lines.append(line + ".")
    return lines


def _radius_view(radius: Radius) -> dict[str, Any]:
    largest = max(radius.eps) if radius.eps else None
    if radius.median is not None:
        median = eps_text(radius.norm, radius.median)
    elif largest is not None:
        median = f"above the largest eps ({eps_text(radius.norm, largest)})"
    else:
        median = DASH
    total = radius.wrong_on_clean + radius.not_fooled + sum(radius.fooled_at)
    return {
        "norm": radius.norm,
        "rows": [
            {"eps": eps_text(radius.norm, e), "count": n, "share": pct(n / total if total else None)}
            for e, n in zip(radius.eps, radius.fooled_at, strict=False)
        ],
        "wrong_on_clean": radius.wrong_on_clean,
        "wrong_share": pct(radius.wrong_on_clean / total if total else None),
        "not_fooled": radius.not_fooled,
        "not_fooled_share": pct(radius.not_fooled / total if total else None),
        "largest": eps_text(radius.norm, largest) if largest is not None else DASH,
        "median": median,
        "total": total,
        "bisected": (
            f"{eps_text(radius.norm, radius.bisected_median)} after {radius.bisection_steps} bisection steps"
            if radius.bisection_steps and radius.bisected_median is not None
            else None
        ),
    }


def _example_view(result: AuditResult, ex: Example) -> dict[str, Any]:
    return {
        "sample_index": ex.sample_index,
        "attack": ex.attack,
        "label": _class_label(result, ex.label),
        "clean_pred": _class_label(result, ex.clean_pred),
        "clean_conf": pct(ex.clean_conf),
        "adv_pred": _class_label(result, ex.adv_pred),
        "adv_conf": pct(ex.adv_conf),
        "fooled": ex.adv_pred != ex.label,
        "original_png": ex.original_png,
        "perturbation_png": ex.perturbation_png,
        "adversarial_png": ex.adversarial_png,
    }


def _gallery_view(result: AuditResult) -> list[dict[str, Any]]:
    """Per threat model: the worst case's first examples (whichever attack fooled them), then each
    attack's further examples, so that every attack that fooled a sample shows and no image shows twice.

    The gallery holds up to ``gallery_size`` examples per attack in sample order; the first
    ``gallery_size`` of a threat model are then the first samples its cascade fooled."""
    by_threat: dict[tuple[str, float], list[Example]] = {}
    for ex in result.gallery:
        by_threat.setdefault((ex.norm, ex.eps), []).append(ex)
    size = result.settings.get("gallery_size")
    cascade = list(dict.fromkeys(r.attack for r in result.rows))
    out = []
    for (norm, eps), examples in by_threat.items():
        first = examples[: size if isinstance(size, int) else len(examples)]
        groups = [(f"worst case: the first {len(first)} samples fooled, by any attack", first)]
        rest = examples[len(first) :]
        named = {ex.attack for ex in rest}
        for attack in [a for a in cascade if a in named] + sorted(named - set(cascade)):
            more = [ex for ex in rest if ex.attack == attack]
            groups.append((f"{attack}: {len(more)} more of the samples it was first to fool", more))
        out.append(
            {
                "threat": _threat_label(norm, eps),
                "groups": [
                    {"title": title, "examples": [_example_view(result, ex) for ex in group]}
                    for title, group in groups
                ],
            }
        )
    return out


def _context(result: AuditResult) -> dict[str, Any]:
    worst = _worst_rows(result)
    flags = result.flags
    return {
        "r": result,
        "incomplete": result.incomplete_headline(),
        "worst_case": WORST_CASE,
        "summary_lines": _summary_lines(result),
        "worst_rows": worst,
        "plots": _plots(result),
        "brackets": brackets(result),
        "show_target_hits": any(r.n_target_hits is not None for r in result.rows),
        "show_converted": any(r.n_fooled_converted is not None for r in result.rows),
        "show_class_names": any(c.name for c in result.classes),
        "per_class_rows": [
            {
                "index": c.index,
                "name": c.name,
                "n": c.n,
                "clean": pct(c.clean_accuracy),
                "robust": [
                    pct(row.per_class_robust_accuracy[c.index])
                    if c.index < len(row.per_class_robust_accuracy)
                    else DASH
                    for row in worst
                ],
            }
            for c in result.classes
        ],
        "radius": [_radius_view(r) for r in result.radius],
        "gallery": _gallery_view(result),
        "flags": flags,
        "settings": [(k, setting_text(_public(k, v))) for k, v in result.settings.items()],
        "timings": [
            (k.removesuffix("_seconds").replace("_", " "), seconds(v)) for k, v in result.timings.items()
        ],
    }


# --- plots ------------------------------------------------------------------------------------------


def _prefix_svg_ids(svg: str, prefix: str) -> str:
    """Give every id in one SVG a prefix, so several inline SVGs (and the page) never share an id."""
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'\b((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}{m.group(2)}"', svg)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", svg)


def _curve_svg(result: AuditResult, norm: str, index: int) -> str:
    """Robust accuracy against eps for one norm: a line per attack and the worst case, 95% CI bands."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the process-wide backend is left alone

    rows = [r for r in result.rows if r.norm == norm]
    attacks = list(dict.fromkeys(r.attack for r in rows if r.attack != WORST_CASE))
    series = [*attacks, WORST_CASE]
    # Text as paths (no fonts needed to view); a fixed salt makes the SVG ids, and so the page, reproducible.
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"robaudit-{norm}", "font.size": 9}):
        fig = Figure(figsize=(6.4, 3.4), layout="constrained")
        ax = fig.add_subplot()
        for i, name in enumerate(series):
            pts = sorted((r for r in rows if r.attack == name), key=lambda r: r.eps)
            if not pts:
                continue
            xs = [r.eps for r in pts]
            ys = [100 * r.robust_accuracy for r in pts]
            is_worst = name == WORST_CASE
            colour = "#000000" if is_worst else _COLOURS[i % len(_COLOURS)]
            ax.plot(
                xs,
                ys,
                marker="o",
                markersize=4 if not is_worst else 6,
                linewidth=3.2 if is_worst else 1.4,
                alpha=0.55 if is_worst else 1.0,
                linestyle="-" if is_worst else "--",
                color=colour,
                label=name,
                zorder=2
                if is_worst
                else 3,  # the wide worst-case line under the attacks, which it often equals
            )
            with_ci = [r for r in pts if r.robust_accuracy_ci]
            if with_ci:
                ax.fill_between(
                    [r.eps for r in with_ci],
                    [100 * r.robust_accuracy_ci[0] for r in with_ci if r.robust_accuracy_ci],
                    [100 * r.robust_accuracy_ci[1] for r in with_ci if r.robust_accuracy_ci],
                    color=colour,
                    alpha=0.10,
                    linewidth=0,
                )
        clean_err = None
        if result.clean_accuracy_ci:
            lo, hi = result.clean_accuracy_ci
            clean_err = [[100 * (result.clean_accuracy - lo)], [100 * (hi - result.clean_accuracy)]]
        ax.errorbar(
            [0.0],
            [100 * result.clean_accuracy],
            yerr=clean_err,
            fmt="s",
            color="#555555",
            markersize=5,
            capsize=3,
            label="clean (eps 0)",
            zorder=4,
        )
        ax.set_ylim(-2, 102)
        largest = max((r.eps for r in rows), default=1.0) or 1.0
        ax.set_xlim(-0.04 * largest, 1.04 * largest)  # room for the clean-accuracy marker at 0
        ax.set_ylabel("robust accuracy (%)")
        ax.set_xlabel("pixels changed" if norm == "l0" else f"eps ({norm}, [0, 1] pixel scale)")
        ax.set_title(f"{norm}: robust accuracy vs attack budget (bands: 95% Wilson CI)", fontsize=9)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.legend(fontsize=8, loc="best", frameon=False)
        buffer = io.StringIO()
        fig.savefig(
            buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None}
        )
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = _prefix_svg_ids(svg, f"plot{index}-")
    label = f"Robust accuracy against eps for {norm}, one line per attack and the worst case"
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="plot" ', 1)


def _plots(result: AuditResult) -> list[dict[str, Any]]:
    from markupsafe import Markup

    out = []
    for i, norm in enumerate(_norm_order(result)):
        worst = [r for r in result.rows if r.norm == norm and r.attack == WORST_CASE]
        caption = "; ".join(f"eps {eps_text(norm, r.eps)}: {pct(r.robust_accuracy)}" for r in worst)
        # The SVG comes from matplotlib, which escapes every text it writes; it is trusted markup.
        out.append({"norm": norm, "svg": Markup(_curve_svg(result, norm, i)), "caption": caption})
    return out


# --- rendering --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=pct,
        pct_ci=pct_ci,
        num=num,
        count=count,
        eps=eps_text,
        threat=_threat_label,
        seconds=seconds,
        setting=setting_text,
    )
    return env


def render_html(result: AuditResult) -> str:
    """The report as one HTML page that needs no network to view."""
    return _environment().get_template(TEMPLATE_NAME).render(**_context(result))


def write_html(result: AuditResult, path: Path) -> None:
    """Render, then write through a temporary file in the same folder and a rename: never half a report."""
    write_text_atomic(path, render_html(result))
