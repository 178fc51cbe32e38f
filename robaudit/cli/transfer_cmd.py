"""``robaudit transfer MODEL MODEL [MODEL...]``: flags -> one configuration per model -> matrices -> reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from robaudit.cli import options as o
from robaudit.cli.common import fail, guarded, log_to_stderr
from robaudit.errors import ExitCode

Models = Annotated[
    list[Path], typer.Argument(help="Two or more model files; each one's examples are tried on every other.")
]
Denominator = Annotated[
    str,
    typer.Option(
        help="What a cell's error rate divides by: all (every sample), source-correct (samples the source "
        "classifies correctly) or both-correct (samples both models classify correctly).",
        rich_help_panel=o.OUTPUT_PANEL,
    ),
]
_SETTINGS = (
    "data",
    "labels",
    "npz_keys",
    "limit",
    "attacks",
    "norms",
    "eps",
    "input_range",
    "mean",
    "std",
    "layout",
    "device",
    "batch_size",
    "seed",
)


def transfer(
    ctx: typer.Context,
    models: Models,
    data: o.Data = None,
    labels: o.Labels = None,
    npz_keys: o.NpzKeys = "x,y",
    limit: o.Limit = None,
    attacks: o.Attack = None,
    norms: o.Norm = None,
    eps: o.Eps = None,
    input_range: o.InputRange = "0,1",
    mean: o.Mean = None,
    std: o.Std = None,
    layout: o.Layout = o.DEFAULT["layout"],
    device: o.Device = o.DEFAULT["device"],
    batch_size: o.BatchSize = str(o.DEFAULT["batch_size"]),
    seed: o.Seed = o.DEFAULT["seed"],
    denominator: Denominator = "both-correct",
    json_path: o.JsonPath = None,
    html_path: o.HtmlPath = None,
    markdown_path: o.MarkdownPath = None,
    debug: o.Debug = False,
) -> None:
    """Attack every MODEL on the same samples and try each one's adversarial examples on every other."""
    log_to_stderr()
    with guarded(debug, interrupted="interrupted; no report was written"):
        from rich.console import Console

        from robaudit.transfer.report import render_transfer
        from robaudit.transfer.run import run_transfer

        if len(models) < 2:
            fail(
                "MODEL: transfer needs at least two models; give two or more model files",
                ExitCode.USAGE_ERROR,
            )
        for path in models:
            if not path.exists():
                fail(f"{path}: no such model file; give an existing .onnx or .pt file", ExitCode.INPUT_ERROR)
        outputs = {"--json": json_path, "--html": html_path, "--markdown": markdown_path}
        _check_outputs(outputs)
        result = run_transfer(_configs(ctx, models), denominator)
        console = Console()
        render_transfer(result, console)
        _write(result, outputs, console)


def _check_outputs(outputs: dict[str, Path | None]) -> None:
    from robaudit.atomic import output_problem

    for flag, path in outputs.items():
        problem = None if path is None else output_problem(path)
        if problem is not None:
            fail(f"{flag} {path}: {problem}", ExitCode.USAGE_ERROR)


def _configs(ctx: typer.Context, models: list[Path]) -> list[Any]:
    """One validated configuration per model: the flags given, the model's own path, no probes."""
    from pydantic import ValidationError

    from robaudit.cli.scan import _parse, _validation_line, given
    from robaudit.config import AuditConfig
    from robaudit.config.merge import merge

    flat = {p: _parse(ctx, p, ctx.params[p]) for p in _SETTINGS if given(ctx, p)}
    configs = []
    for path in models:
        try:
            configs.append(AuditConfig.model_validate(merge({}, {**flat, "model": path, "checks": False})))
        except ValidationError as exc:
            fail(_validation_line(ctx, exc), ExitCode.USAGE_ERROR)
    return configs


def _write(result: Any, outputs: dict[str, Path | None], console: Any) -> None:
    from robaudit.atomic import write_text_atomic
    from robaudit.results import write_json_atomic
    from robaudit.transfer.report import to_markdown

    if outputs["--json"] is not None:
        write_json_atomic(outputs["--json"], result.to_dict())
    if outputs["--markdown"] is not None:
        write_text_atomic(outputs["--markdown"], to_markdown(result))
    if outputs["--html"] is not None:
        from robaudit.transfer.html import to_html

        write_text_atomic(outputs["--html"], to_html(result))
    for path in outputs.values():
        if path is not None:
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)
