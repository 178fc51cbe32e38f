"""``robaudit scan``: flags -> configuration (one merge with the profile) -> audit -> reports -> exit code."""

from __future__ import annotations

import inspect
import json
import typing
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from robaudit.cli import options as o
from robaudit.cli.common import fail, guarded, log_to_stderr
from robaudit.errors import ExitCode

# Command-line parameters that are not settings of the configuration.
_NOT_SETTINGS = (
    "profile",
    "resume",
    "debug",
    "quiet",
    "fail_under",
    "fail_over",
    "use_interval",
    "no_checks",
)

_PLACEMENT = ("workers", "ray_address")  # settings --resume takes: they place the work, not change it


def scan(
    ctx: typer.Context,
    model: o.ModelArg = None,
    profile: o.Profile = None,
    data: o.Data = None,
    labels: o.Labels = None,
    npz_keys: o.NpzKeys = "x,y",
    limit: o.Limit = None,
    attacks: o.Attack = None,
    norms: o.Norm = None,
    target: o.Target = o.DEFAULT["target"],
    eot_evals: o.EotEvals = o.DEFAULT["eot_evals"],
    attack_kwargs: o.AttackKwargs = None,
    eps: o.Eps = None,
    resize: o.Resize = None,
    input_range: o.InputRange = "0,1",
    data_range: o.DataRange = None,
    mean: o.Mean = None,
    std: o.Std = None,
    layout: o.Layout = o.DEFAULT["layout"],
    output: o.Output = o.DEFAULT["output"],
    arch: o.Arch = None,
    surrogate: o.Surrogate = None,
    arch_kwargs: o.ArchKwargs = "{}",
    trust_model: o.TrustModel = False,
    device: o.Device = o.DEFAULT["device"],
    batch_size: o.BatchSize = str(o.DEFAULT["batch_size"]),
    seed: o.Seed = o.DEFAULT["seed"],
    parity_atol: o.ParityAtol = o.DEFAULT["parity_atol"],
    channels_last: o.ChannelsLast = False,
    tf32: o.Tf32 = False,
    json_path: o.JsonPath = None,
    html_path: o.HtmlPath = None,
    markdown_path: o.MarkdownPath = None,
    radius_bisect: o.RadiusBisect = o.DEFAULT["radius_bisect"],
    certify: o.Certify = o.DEFAULT["certify"],
    certify_time_limit: o.CertifyTimeLimit = o.DEFAULT["certify_time_limit"],
    per_sample_path: o.PerSamplePath = None,
    adversarial_path: o.AdversarialPath = None,
    fail_under: o.FailUnder = None,
    fail_over: o.FailOver = None,
    use_interval: o.UseInterval = False,
    baseline: o.Baseline = None,
    max_drop: o.MaxDrop = None,
    allow_mismatch: o.AllowMismatch = False,
    junit_path: o.JunitPath = None,
    strict: o.Strict = False,
    run_dir: o.RunDir = None,
    workers: o.Workers = str(o.DEFAULT["workers"]),
    ray_address: o.RayAddress = None,
    shard_size: o.ShardSize = None,
    resume: o.Resume = None,
    no_checks: o.NoChecks = False,
    debug: o.Debug = False,
    quiet: o.Quiet = False,
    **attack_settings: Any,
) -> None:
    """Attack MODEL on a dataset and report clean and robust accuracy."""
    log_to_stderr()
    with guarded(debug, interrupted="interrupted; no report was written"):
        from robaudit.cli.run import run_scan

        run_scan(_config(ctx, profile, resume), quiet=quiet)


# The attack flags come from the registry: one keyword-only parameter per attack setting.
def _with_attack_flags(command: Any) -> None:
    """Give ``command`` the registry's attack flags: typer reads the signature, so the static parameters
    (their annotations resolved) and one per attack setting make it up."""
    hints = typing.get_type_hints(command, include_extras=True)
    static = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    params = [*static, *o.attack_parameters()]
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}


_with_attack_flags(scan)


def given(ctx: typer.Context, param: str) -> bool:
    """Whether a flag was given (compared by name: typer vendors click, so the enum is not click's)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _flag(ctx: typer.Context, param: str) -> str:
    """The flag a parameter is spelled as (``json_path`` is ``--json``); an argument by its name."""
    param = "no_checks" if param == "checks" else param
    for p in ctx.command.params:
        if p.name == param:
            opts = [o for o in p.opts if o.startswith("--")]
            return opts[0] if opts else param.upper()
    return "--" + param.replace("_", "-")


def _config(ctx: typer.Context, profile: str | None, resume: Path | None) -> Any:
    """The validated configuration: the profile's (or the defaults), with every flag given on top, or
    the one a run folder was started with (``--resume``)."""
    from pydantic import ValidationError

    from robaudit.config import AuditConfig
    from robaudit.config.merge import merge

    settings = [p for p in ctx.params if p not in _NOT_SETTINGS]
    flags = {p: ctx.params[p] for p in settings if given(ctx, p)}
    if ctx.params["no_checks"]:
        flags["checks"] = False  # the command line's one spelling of the setting
    if resume is not None:
        return _resumed(ctx, resume, flags, profile)
    flat = {p: _parse(ctx, p, v) for p, v in flags.items()}
    checks = _thresholds(ctx)
    if checks:
        flat["gate_checks"] = checks
    base: dict[str, Any] = {}
    if profile is not None:
        from robaudit.config.profile import load_profile, profile_values

        base = profile_values(load_profile(profile)[0])
    values = merge(base, flat)
    if values["model"].get("path") is None:
        fail(
            "MODEL: missing; give the model file as the first argument, or model.path in the --profile",
            ExitCode.USAGE_ERROR,
        )
    try:
        config = AuditConfig.model_validate(values)
    except ValidationError as exc:
        fail(_validation_line(ctx, exc), ExitCode.USAGE_ERROR)
    _refuse_flags_without_effect(ctx, config)
    return config


def _resumed(ctx: typer.Context, resume: Path, flags: dict[str, Any], profile: str | None) -> Any:
    from pydantic import ValidationError

    from robaudit.audit.checkpoint import RunDir
    from robaudit.config import AuditConfig

    # Where the shards run changes no result, so a run may resume on another number of workers.
    placement = {p: flags.pop(p) for p in _PLACEMENT if p in flags}
    if flags or profile is not None:
        got = _flag(ctx, next(iter(flags))) if flags else "--profile"
        fail(
            f"--resume {resume}: takes no other settings (got {got}); the run's settings come from the folder",
            ExitCode.USAGE_ERROR,
        )
    try:
        config = AuditConfig.model_validate_json(RunDir(resume).read_config())
    except ValidationError:
        fail(f"--resume {resume}: its config.json is not a robaudit run configuration", ExitCode.INPUT_ERROR)
    try:
        run = type(config.run).model_validate({**config.run.model_dump(), **placement, "run_dir": resume})
    except ValidationError as exc:
        fail(_validation_line(ctx, exc), ExitCode.USAGE_ERROR)
    return config.model_copy(update={"run": run})


def _validation_line(ctx: typer.Context, exc: Any) -> str:
    """The first pydantic error as ``--flag: reason``."""
    from robaudit.attacks.registry import SettingError
    from robaudit.config.sections import SECTIONS, flat_name

    err = exc.errors()[0]
    loc = tuple(err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):
        return f"--{cause.field.replace('_', '-')}: {cause.reason}"
    if len(loc) >= 2 and loc[0] in SECTIONS and isinstance(loc[1], str):
        return f"{_flag(ctx, flat_name(str(loc[0]), loc[1]))}: {message}"
    return f"--{str(loc[0]) if loc else 'option'}: {message}"


def _parse(ctx: typer.Context, param: str, value: Any) -> Any:
    """A flag's text as the configuration's value (``--input-range 0,255`` -> (0.0, 255.0))."""
    flag = _flag(ctx, param)
    if param in ("input_range", "data_range"):
        return _pair(value, flag)
    if param in ("mean", "std"):
        return _floats(value, flag)
    if param == "resize":
        return _size(value)
    if param == "npz_keys":
        keys = tuple(key.strip() for key in value.split(","))
        if len(keys) != 2:
            fail(f"--npz-keys {value}: write two names, images then labels, e.g. x,y", ExitCode.USAGE_ERROR)
        return keys
    if param == "arch_kwargs":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            fail(
                f"--arch-kwargs: not valid JSON ({exc.msg}); write e.g. '{{\"num_classes\": 10}}'",
                ExitCode.USAGE_ERROR,
            )
    if param == "attack_kwargs":
        return _attack_kwargs(value)
    if param == "eps":
        from robaudit.config import parse_eps

        return tuple(parse_eps(e) for e in value)
    if param in ("attacks", "norms"):
        return tuple(value)
    return value


_THRESHOLD_FLAGS: tuple[tuple[str, typing.Literal["min", "max"], str], ...] = (
    ("fail_under", "min", "--fail-under"),
    ("fail_over", "max", "--fail-over"),
)


def _thresholds(ctx: typer.Context) -> list[dict[str, Any]]:
    """The gate checks given as --fail-under/--fail-over, with --use-interval applied to them."""
    from robaudit.gate import parse_threshold

    interval = bool(ctx.params["use_interval"])
    return [
        asdict(replace(parse_threshold(text, bound, flag), use_interval=interval))
        for param, bound, flag in _THRESHOLD_FLAGS
        for text in ctx.params[param] or []
    ]


def _pair(text: str, flag: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        fail(f"{flag} {text}: write it as LOW,HIGH, e.g. 0,1 or 0,255", ExitCode.USAGE_ERROR)
    return lo, hi


def _size(text: str) -> tuple[int, int]:
    """``--resize 224`` or ``--resize 224,224`` (height, width)."""
    try:
        sides = [int(p) for p in text.split(",")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        fail(f"--resize {text}: write it as HEIGHT,WIDTH or SIZE, e.g. 224,224 or 224", ExitCode.USAGE_ERROR)
    return (sides[0], sides[-1])


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        fail(
            f"{flag} {text}: write one number per channel, comma-separated, e.g. 0.485,0.456,0.406",
            ExitCode.USAGE_ERROR,
        )


def _attack_kwargs(items: list[str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            fail(
                f"--attack-kwargs {name}: not valid JSON ({exc.msg}); write NAME='{{\"max_iter\": 20}}'",
                ExitCode.USAGE_ERROR,
            )
        if not isinstance(value, dict):
            fail(
                f"--attack-kwargs {item}: write NAME=JSON object, e.g. 'art:DeepFool={{\"max_iter\": 20}}'",
                ExitCode.USAGE_ERROR,
            )
        out[name.strip()] = value
    return out


def _refuse_flags_without_effect(ctx: typer.Context, config: Any) -> None:
    """A flag given on the command line that this run would ignore is a mistake worth one line: the
    user believes it took effect (a gate without its baseline, labels the data already hold)."""
    if config.gate.baseline is None:
        for param in ("max_drop", "allow_mismatch"):
            if given(ctx, param):
                flag = _flag(ctx, param)
                fail(
                    f"{flag}: compares with a baseline, and none was given; pass --baseline results.json "
                    f"(or drop {flag})",
                    ExitCode.USAGE_ERROR,
                )
    npy_data = config.data.path is not None and Path(config.data.path).suffix.lower() == ".npy"
    if config.data.labels is not None and given(ctx, "labels") and not npy_data:
        data = config.data.path or "mnist (the default)"
        fail(
            f"--labels {config.data.labels}: labels go with .npy images, and --data {data} holds its own (an .npz "
            f"names its arrays with --npz-keys, an image folder labels by class folder); drop --labels",
            ExitCode.USAGE_ERROR,
        )
