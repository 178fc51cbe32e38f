"""The command line: parse flags, call the library, render, exit with a documented code.

Heavy libraries (torch, onnx) are imported inside commands so that ``robaudit --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer
from rich.console import Console

from robaudit import __version__
from robaudit.errors import ExitCode, InputError, RobauditError, one_line

EXIT_CODES_HELP = (
    "Exit codes: 0 passed; 1 gate failed; 2 usage or profile error; 3 unreadable or unsafe input; "
    "4 unreliable evaluation (--strict); 5 out of resources; 70 internal error."
)

EPS_HELP = (
    "Perturbation budget, repeatable (e.g. --eps 0.1 --eps 8/255). Always on the [0, 1] scale: the data's "
    "pixel range mapped to [0, 1], so 0.1 means 25.5 grey levels of 255 whatever --input-range is."
)

app = typer.Typer(
    name="robaudit",
    help="Audit how easily an image classifier is fooled by adversarial examples.\n\n"
    "Attack results only upper-bound true robustness: a stronger attack can only find more adversarial "
    "examples.\n\n" + EXIT_CODES_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

stderr = Console(stderr=True)


def _fail(message: str, code: int) -> NoReturn:
    stderr.print(f"robaudit: error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _pair(text: str, flag: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        _fail(f"{flag} {text}: write it as LOW,HIGH, e.g. 0,1 or 0,255", ExitCode.USAGE_ERROR)
    return lo, hi


def _size(text: str | None) -> tuple[int, int] | None:
    """``--resize 224`` or ``--resize 224,224`` (height, width)."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        _fail(f"--resize {text}: write it as HEIGHT,WIDTH or SIZE, e.g. 224,224 or 224", ExitCode.USAGE_ERROR)
    return (sides[0], sides[-1])


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        _fail(
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
            _fail(
                f"--attack-kwargs {name}: not valid JSON ({exc.msg}); write NAME='{{\"max_iter\": 20}}'",
                ExitCode.USAGE_ERROR,
            )
        if not isinstance(value, dict):
            _fail(
                f"--attack-kwargs {item}: write NAME=JSON object, e.g. 'art:DeepFool={{\"max_iter\": 20}}'",
                ExitCode.USAGE_ERROR,
            )
        out[name.strip()] = value
    return out


# CLI parameter -> AuditConfig key, for the flags a profile can also set.
_CONFIG_KEYS = {
    "model": "model", "data": "data", "labels": "labels", "npz_keys": "npz_keys", "limit": "limit",
    "attack": "attacks", "norm": "norms", "steps": "steps", "restarts": "restarts",
    "rel_step_size": "rel_step_size", "loss": "loss", "pixels": "pixels", "population": "population",
    "generations": "generations", "target": "target", "attack_kwargs": "attack_kwargs", "eps": "eps",
    "input_range": "input_range", "data_range": "data_range", "resize": "resize", "mean": "mean", "std": "std", "layout": "layout", "output": "output",
    "arch": "arch", "arch_kwargs": "arch_kwargs", "trust_model": "trust_model", "device": "device",
    "batch_size": "batch_size", "seed": "seed", "parity_atol": "parity_atol", "channels_last": "channels_last", "tf32": "tf32", "json_path": "json_path",
    "html": "html_path", "markdown": "markdown_path", "per_sample": "per_sample_path",
    "radius_bisect": "radius_bisect", "save_adversarial": "adversarial_path", "baseline": "baseline",
    "max_drop": "max_drop", "allow_mismatch": "allow_mismatch", "junit": "junit_path", "strict": "strict", "checks": "checks", "run_dir": "run_dir",
}  # fmt: skip
_ATTACK_SETTINGS = ("steps", "restarts", "rel_step_size", "loss", "pixels", "population", "generations")


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether a flag was given (compared by name: typer vendors click, so the enum is not click's)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _with_profile(
    ctx: typer.Context, profile: str | None, cli_values: dict[str, Any], checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The config values: the profile's, with every flag given on the command line on top.

    Gate checks from flags are added to the profile's (a gate only gets stricter); flags that set an
    attack setting (--steps, say) override it in every profile attack entry too.
    """
    from robaudit.profile import config_values, load_profile

    if profile is None:
        return {**cli_values, "gate_checks": tuple(checks)}
    loaded, _ = load_profile(profile)
    values = config_values(loaded)
    # Compared by name: typer has vendored click, so its ParameterSource is not click's.
    sources = {param: ctx.get_parameter_source(param) for param in _CONFIG_KEYS}
    given = {
        p for p, src in sources.items() if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")
    }
    for param in given:
        values[_CONFIG_KEYS[param]] = cli_values[_CONFIG_KEYS[param]]
    specs = [dict(spec, settings=dict(spec["settings"])) for spec in values["attack_specs"]]
    if "attack" in given:
        specs = []
    for spec in specs:
        for name in _ATTACK_SETTINGS:
            if name in given:
                spec["settings"].pop(name, None)
        if "norm" in given:
            spec["norms"] = None
        if "eps" in given:
            spec["eps"] = None
    values["attack_specs"] = tuple(specs)
    values["gate_checks"] = tuple(values["gate_checks"]) + tuple(checks)
    return values


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Audit how easily an image classifier is fooled by adversarial examples."""


class _StderrAtEmit(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made, so a
    second in-process run (a test runner, a notebook) never writes to the first run's closed stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def log_to_stderr() -> None:
    """Warnings from robaudit's modules (an ONNX Runtime install problem, say) as plain lines on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[_StderrAtEmit()])


@app.command(epilog=EXIT_CODES_HELP)
def scan(
    ctx: typer.Context,
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Model file: .onnx, TorchScript, .pt2 (torch.export), or a state_dict (.pt or .safetensors) with --arch. May come from --profile."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="A YAML audit profile, or a built-in one: quick, standard, thorough. Flags override it."
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Data: an .npz, an .npy (with --labels), an image folder, or 'mnist'. "
            "Default: bundled MNIST for 1x28x28 models."
        ),
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels .npy for an .npy --data file.")] = None,
    npz_keys: Annotated[str, typer.Option(help="Names of the image and label arrays in an .npz.")] = "x,y",
    limit: Annotated[
        int | None, typer.Option(help="Evaluate a seeded, stratified subset of N samples.")
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            help="Attack to run, repeatable: fgsm, pgd, onepixel, or art:ClassName (any ART evasion attack, "
            "needs pip install 'robaudit\\[art]'). Default: fgsm."
        ),
    ] = None,
    norm: Annotated[
        list[str] | None, typer.Option(help="Threat model norm, repeatable: linf, l2 or l1. Default: linf.")
    ] = None,
    steps: Annotated[int, typer.Option(help="PGD iterations.")] = 40,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 1,
    rel_step_size: Annotated[
        float, typer.Option(help="PGD step size as a multiple of eps/steps (Madry et al.: 2.5).")
    ] = 2.5,
    loss: Annotated[
        str, typer.Option(help="PGD loss: ce (cross-entropy) or dlr (Croce & Hein 2020).")
    ] = "ce",
    pixels: Annotated[int, typer.Option(help="One-pixel: pixel locations it may change.")] = 1,
    population: Annotated[int, typer.Option(help="One-pixel: candidates per generation.")] = 400,
    generations: Annotated[int, typer.Option(help="One-pixel: differential-evolution generations.")] = 100,
    target: Annotated[
        str,
        typer.Option(
            help="Targeted attacks: none, random (a seeded random wrong class), least-likely, or a class index."
        ),
    ] = "none",
    attack_kwargs: Annotated[
        list[str] | None,
        typer.Option(
            help="Keyword arguments for an ART attack, repeatable: NAME=JSON, e.g. "
            "'art:DeepFool={\"max_iter\": 20}'."
        ),
    ] = None,
    eps: Annotated[list[str] | None, typer.Option(help=EPS_HELP)] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            help="Image folders: resize every image to HEIGHT,WIDTH (or SIZE,SIZE): the shorter side scaled "
            "to cover it, then centre-cropped (bilinear). eps applies to the resized images."
        ),
    ] = None,
    input_range: Annotated[
        str,
        typer.Option(
            help="Pixel range of the model's input: 0,1 or 0,255. Float data are read in this range too "
            "unless --data-range says otherwise; uint8 data are always read as 0..255."
        ),
    ] = "0,1",
    data_range: Annotated[
        str | None,
        typer.Option(
            help="Pixel range float data are stored in, when it differs from the model's --input-range "
            "(e.g. float 0..255 arrays for a [0, 1] model: --data-range 0,255)."
        ),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            help="Per-channel mean robaudit subtracts before the model, in the model's input scale."
        ),
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="Per-channel std robaudit divides by before the model.")
    ] = None,
    layout: Annotated[str, typer.Option(help="Model input layout: auto, nchw or nhwc.")] = "auto",
    output: Annotated[
        str, typer.Option(help="Model output: auto, logits, probabilities or log-probabilities.")
    ] = "auto",
    arch: Annotated[
        str | None,
        typer.Option(
            help="package.module:ClassName, or a function that builds the model (torchvision.models:resnet18), "
            "for a state_dict."
        ),
    ] = None,
    arch_kwargs: Annotated[str, typer.Option(help="JSON keyword arguments for --arch.")] = "{}",
    trust_model: Annotated[
        bool, typer.Option(help="Allow loading a pickled nn.Module, which runs code from the file.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[
        str, typer.Option(help="Samples per batch, or auto: the largest that fits, found by a quick probe.")
    ] = "256",
    seed: Annotated[
        int, typer.Option(help="Run seed; each sample's seed derives from it and its index.")
    ] = 0,
    parity_atol: Annotated[
        float, typer.Option(help="Allowed ONNX Runtime vs converted-graph logit gap.")
    ] = 1e-4,
    channels_last: Annotated[
        bool,
        typer.Option(
            "--channels-last",
            help="Lay convolution weights out channels-last: faster for some models on a CPU.",
        ),
    ] = False,
    tf32: Annotated[
        bool,
        typer.Option(
            "--tf32",
            help="Let NVIDIA GPUs run float32 convolutions and matrix products in TF32: faster, but the "
            "model's outputs change slightly. Default: full FP32.",
        ),
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report (no network needed to view it).")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="Write a Markdown summary (for a CI job summary or a PR comment).")
    ] = None,
    radius_bisect: Annotated[
        int,
        typer.Option(
            help="Narrow each sample's robustness radius between swept eps by this many bisection steps (0: off)."
        ),
    ] = 0,
    per_sample: Annotated[
        Path | None, typer.Option(help="Write one JSON line per sample with every attack's outcome.")
    ] = None,
    save_adversarial: Annotated[
        Path | None, typer.Option(help="Save every adversarial example found to an .npz.")
    ] = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            help="Gate: fail (exit 1) when METRIC@\\[ATTACK:]NORM:EPS is below VALUE, repeatable; e.g. "
            "robust_accuracy@pgd:linf:0.1=0.80 or clean_accuracy=0.95. Attack defaults to worst-case."
        ),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option(
            help="Gate: fail when the metric is above VALUE, e.g. attack_success_rate@linf:8/255=0.3."
        ),
    ] = None,
    use_interval: Annotated[
        bool,
        typer.Option(help="Gate checks from flags compare the unfavourable end of the 95% interval."),
    ] = False,
    baseline: Annotated[
        Path | None, typer.Option(help="Gate: a previous results JSON to compare robust accuracy against.")
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            help="Gate with --baseline: largest allowed drop in any robust accuracy (default 0.02)."
        ),
    ] = None,
    allow_mismatch: Annotated[
        bool,
        typer.Option(
            help="Compare with a baseline made with another input shape, data set or attack settings."
        ),
    ] = False,
    junit: Annotated[Path | None, typer.Option(help="Write the gate checks as JUnit XML.")] = None,
    strict: Annotated[
        bool,
        typer.Option(help="Exit 4 when a reliability flag fires (the numbers may overstate robustness)."),
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Save finished batches in this folder, so an interrupted run can --resume."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue an interrupted run from its --run-dir folder (its settings come from there)."
        ),
    ] = None,
    checks: Annotated[
        bool,
        typer.Option(
            help="Run the reliability probes (randomness, gradients, unbounded attack, ...) on 100 samples."
        ),
    ] = True,
    debug: Annotated[bool, typer.Option(help="Show tracebacks for internal errors.")] = False,
) -> None:
    """Attack MODEL on a dataset and report clean and robust accuracy."""
    log_to_stderr()
    try:
        from pydantic import ValidationError

        from robaudit.config import AuditConfig, parse_eps

        try:
            kwargs = json.loads(arch_kwargs)
        except json.JSONDecodeError as exc:
            _fail(
                f"--arch-kwargs: not valid JSON ({exc.msg}); write e.g. '{{\"num_classes\": 10}}'",
                ExitCode.USAGE_ERROR,
            )
        keys = tuple(key.strip() for key in npz_keys.split(","))
        if len(keys) != 2:
            _fail(
                f"--npz-keys {npz_keys}: write two names, images then labels, e.g. x,y", ExitCode.USAGE_ERROR
            )
        from robaudit.gate import parse_threshold

        thresholds = [
            asdict(replace(parse_threshold(text, "min", "--fail-under"), use_interval=use_interval))
            for text in fail_under or []
        ] + [
            asdict(replace(parse_threshold(text, "max", "--fail-over"), use_interval=use_interval))
            for text in fail_over or []
        ]
        cli_values: dict[str, Any] = dict(
            model=model,
            data=data,
            labels=labels,
            npz_keys=keys,
            limit=limit,
            attacks=tuple(attack or ("fgsm",)),
            norms=tuple(norm or ("linf",)),
            steps=steps,
            restarts=restarts,
            rel_step_size=rel_step_size,
            loss=loss,
            pixels=pixels,
            population=population,
            generations=generations,
            target=target,
            attack_kwargs=_attack_kwargs(attack_kwargs or []),
            eps=tuple(parse_eps(e) for e in (eps or ["0.1"])),
            input_range=_pair(input_range, "--input-range"),
            data_range=None if data_range is None else _pair(data_range, "--data-range"),
            resize=_size(resize),
            mean=_floats(mean, "--mean"),
            std=_floats(std, "--std"),
            layout=layout,
            output=output,
            arch=arch,
            arch_kwargs=kwargs,
            trust_model=trust_model,
            device=device,
            batch_size=batch_size,
            seed=seed,
            parity_atol=parity_atol,
            channels_last=channels_last,
            tf32=tf32,
            json_path=json_path,
            html_path=html,
            markdown_path=markdown,
            per_sample_path=per_sample,
            radius_bisect=radius_bisect,
            adversarial_path=save_adversarial,
            baseline=baseline,
            max_drop=max_drop,
            allow_mismatch=allow_mismatch,
            junit_path=junit,
            strict=strict,
            checks=checks,
            run_dir=run_dir,
        )
        if resume is not None:
            given = [p for p in _CONFIG_KEYS if _given(ctx, p)]
            if given or profile is not None:
                _fail(
                    f"--resume {resume}: takes no other settings (got --{(given or ['profile'])[0].replace('_', '-')}); "
                    "the run's settings come from the folder",
                    ExitCode.USAGE_ERROR,
                )
            from robaudit.checkpoint import RunDir

            try:
                config = AuditConfig.model_validate_json(RunDir(resume).read_config())
            except ValidationError:
                _fail(
                    f"--resume {resume}: its config.json is not a robaudit run configuration",
                    ExitCode.INPUT_ERROR,
                )
            _scan(config.model_copy(update={"run_dir": resume}))
            return
        values = _with_profile(ctx, profile, cli_values, thresholds)
        if values.get("model") is None:
            _fail(
                "MODEL: missing; give the model file as the first argument, or model.path in the --profile",
                ExitCode.USAGE_ERROR,
            )
        try:
            config = AuditConfig.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            first = str(err["loc"][0]) if err["loc"] else "option"
            flag = {key: param for param, key in _CONFIG_KEYS.items()}.get(first, first).replace("_", "-")
            _fail(f"--{flag}: {str(err['msg']).removeprefix('Value error, ')}", ExitCode.USAGE_ERROR)
        _refuse_flags_without_effect(ctx, config)
        _scan(config)
    except RobauditError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted; no report was written", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            traceback.print_exc()
        _fail(
            f"internal error: {type(exc).__name__}: {one_line(exc)}; rerun with --debug for the traceback",
            ExitCode.INTERNAL_ERROR,
        )


def _refuse_flags_without_effect(ctx: typer.Context, config: object) -> None:
    """A flag given on the command line that this run would ignore is a mistake worth one line: the
    user believes it took effect (a gate without its baseline, labels the data already hold)."""
    from robaudit.config import AuditConfig

    assert isinstance(config, AuditConfig)
    if config.baseline is None:
        for param in ("max_drop", "allow_mismatch"):
            if _given(ctx, param):
                _fail(
                    f"--{param.replace('_', '-')}: compares with a baseline, and none was given; pass "
                    f"--baseline results.json (or drop --{param.replace('_', '-')})",
                    ExitCode.USAGE_ERROR,
                )
    npy_data = config.data is not None and Path(config.data).suffix.lower() == ".npy"
    if config.labels is not None and _given(ctx, "labels") and not npy_data:
        data = config.data or "mnist (the default)"
        _fail(
            f"--labels {config.labels}: labels go with .npy images, and --data {data} holds its own (an .npz "
            f"names its arrays with --npz-keys, an image folder labels by class folder); drop --labels",
            ExitCode.USAGE_ERROR,
        )


def _scan(config: object) -> None:
    from robaudit.allocator import tune_malloc

    tune_malloc()  # before the first tensor: this process's own allocator, never a library user's
    # The converted graph's modules warn about their own code on every forward pass (onnx2pytorch's
    # Gather indexes with a list); that is noise to someone auditing a model. The CLI owns this process's
    # warning filters; the library leaves its user's alone.
    warnings.filterwarnings("ignore", module=r"onnx2(pytorch|torch)\.")
    from robaudit.api import run_audit
    from robaudit.config import AuditConfig
    from robaudit.gate import Check, compare_baseline, evaluate_checks
    from robaudit.report.terminal import RichProgress, render, render_gate
    from robaudit.results import load_result

    assert isinstance(config, AuditConfig)
    import signal

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI job cancelled) stops the run like Ctrl-C

    signal.signal(signal.SIGTERM, _terminate)
    outputs = {
        "--json": config.json_path,
        "--html": config.html_path,
        "--markdown": config.markdown_path,
        "--per-sample": config.per_sample_path,
        "--save-adversarial": config.adversarial_path,
        "--junit": config.junit_path,
    }
    for flag, path in outputs.items():
        if path is not None:
            _check_writable(flag, path)
    _check_no_overwrite(config, outputs)
    checks = [Check(**c) for c in config.gate_checks]
    baseline = load_result(config.baseline) if config.baseline is not None else None  # fail before the audit
    console = Console()
    with RichProgress(stderr) as progress:
        result = run_audit(config, progress=progress)
    render(result, console)
    # Reports first: a baseline that turns out not to match must not cost the finished audit.
    _write_reports(result, console, config.json_path, config.html_path, config.markdown_path)
    for path in (config.per_sample_path, config.adversarial_path):
        if path is not None:
            console.print(f"wrote {path}", highlight=False)
    outcomes = evaluate_checks(result, checks)
    if baseline is not None:
        try:
            outcomes += compare_baseline(
                result,
                baseline,
                max_drop=0.02 if config.max_drop is None else config.max_drop,
                allow_mismatch=config.allow_mismatch,
                baseline_path=str(config.baseline),
            )
        except InputError as exc:
            if config.junit_path is not None:  # a CI test reporter shows why the gate could not decide
                from robaudit.report.junit import write_junit

                write_junit(
                    outcomes, config.junit_path, timestamp=result.created_utc, errors=[("baseline", str(exc))]
                )
                console.print(f"wrote {config.junit_path}", highlight=False)
            raise
    if outcomes:
        render_gate(outcomes, console)
    if config.junit_path is not None:
        from robaudit.report.junit import write_junit

        write_junit(outcomes, config.junit_path, timestamp=result.created_utc)
        console.print(f"wrote {config.junit_path}", highlight=False)
    if not result.complete:
        where = f"; resume with robaudit scan --resume {config.run_dir}" if config.run_dir else ""
        stderr.print(
            f"robaudit: interrupted; wrote a partial report marked incomplete{where}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(130)
    if config.strict and result.flags:
        # Unreliable numbers make the gate's verdict meaningless, so exit 4 outranks exit 1.
        console.print(
            f"[bold yellow]unreliable evaluation[/]: {len(result.flags)} reliability flags (--strict)"
        )
        raise typer.Exit(ExitCode.UNRELIABLE)
    if any(not o.passed for o in outcomes):
        raise typer.Exit(ExitCode.GATE_FAILED)


def _check_no_overwrite(config: object, outputs: dict[str, Path | None]) -> None:
    """Refuse an output that would replace one of the audit's inputs or another output: a report
    written over the model or the data destroys what the user asked to audit."""
    from robaudit.config import AuditConfig

    assert isinstance(config, AuditConfig)
    inputs = {
        "the model file": config.model,
        "the data": Path(config.data) if config.data is not None else None,
        "the labels file": config.labels,
        "the baseline": config.baseline,
    }
    seen: dict[Path, str] = {}
    for what, path in inputs.items():
        if path is not None:
            seen.setdefault(Path(path).resolve(), what)
    for flag, out in outputs.items():
        if out is None:
            continue
        where = out.resolve()
        if where in seen:
            _fail(
                f"{flag} {out}: is also {seen[where]}, which writing there would replace; give the output "
                f"another name",
                ExitCode.USAGE_ERROR,
            )
        seen[where] = f"the {flag} output"


def _check_writable(flag: str, path: Path) -> None:
    """Fail before the audit, not after it, when an output cannot be written. Creates nothing: the
    folders are made when the report is written."""
    if path.is_dir():
        _fail(f"{flag} {path}: is a folder; give a file name", ExitCode.USAGE_ERROR)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        _fail(
            f"{flag} {path}: cannot write there ({ancestor} is a file); choose a writable folder",
            ExitCode.USAGE_ERROR,
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        _fail(
            f"{flag} {path}: cannot write there ({ancestor} is not writable); choose a writable folder",
            ExitCode.USAGE_ERROR,
        )


def _write_reports(
    result: object, console: Console, json_path: Path | None, html: Path | None, markdown: Path | None
) -> None:
    from robaudit.results import AuditResult, write_json_atomic

    assert isinstance(result, AuditResult)
    if json_path is not None:
        write_json_atomic(json_path, result.to_dict())
        console.print(f"wrote {json_path}", highlight=False)
    if html is not None:
        from robaudit.report.html import write_html

        write_html(result, html)
        console.print(f"wrote {html}", highlight=False)
    if markdown is not None:
        from robaudit.report.markdown import write_markdown

        write_markdown(result, markdown)
        console.print(f"wrote {markdown}", highlight=False)


@app.command(epilog=EXIT_CODES_HELP)
def report(
    results: Annotated[Path, typer.Argument(help="A results JSON written by robaudit scan --json.")],
    html: Annotated[Path | None, typer.Option(help="Write the HTML report.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown summary.")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks for internal errors.")] = False,
) -> None:
    """Re-render reports from a saved results JSON, without re-running the audit."""
    try:
        from robaudit.results import load_result

        result = load_result(results)
        console = Console()
        if html is None and markdown is None:
            from robaudit.report.terminal import render

            render(result, console)
        _write_reports(result, console, None, html, markdown)
    except RobauditError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        if debug:
            traceback.print_exc()
        _fail(
            f"internal error: {type(exc).__name__}: {one_line(exc)}; rerun with --debug for the traceback",
            ExitCode.INTERNAL_ERROR,
        )


profile_app = typer.Typer(
    help="Write, check and show YAML audit profiles.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(profile_app, name="profile")


def _profile_command(action: Callable[[], None]) -> None:
    try:
        action()
    except RobauditError as exc:
        _fail(str(exc), exc.exit_code)


@profile_app.command("init", epilog=EXIT_CODES_HELP)
def profile_init(
    file: Annotated[
        Path | None, typer.Argument(help="Where to write the template (default: print it).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented profile template with every key."""

    def action() -> None:
        from robaudit.atomic import write_text_atomic
        from robaudit.profile import builtin_text

        text = builtin_text("template")
        if file is None:
            typer.echo(text, nl=False)
            return
        if file.exists() and not force:
            _fail(f"{file}: already exists; pass --force to overwrite it", ExitCode.USAGE_ERROR)
        write_text_atomic(file, text)
        typer.echo(f"wrote {file}")

    _profile_command(action)


@profile_app.command("validate", epilog=EXIT_CODES_HELP)
def profile_validate(
    file: Annotated[str, typer.Argument(help="A profile file, or a built-in name.")],
) -> None:
    """Check a profile without running it: exit 0 when valid, 2 with one line naming the field when not."""

    def action() -> None:
        from robaudit.profile import load_profile

        load_profile(file)
        typer.echo(f"{file}: valid")

    _profile_command(action)


@profile_app.command("show", epilog=EXIT_CODES_HELP)
def profile_show(
    file: Annotated[str, typer.Argument(help="A profile file, or a built-in name.")],
) -> None:
    """Print the fully resolved profile as YAML, with every default filled in."""

    def action() -> None:
        import yaml

        from robaudit.profile import load_profile, resolved

        loaded, _ = load_profile(file)
        typer.echo(yaml.safe_dump(resolved(loaded), sort_keys=False, default_flow_style=False), nl=False)

    _profile_command(action)


def main() -> None:
    app(prog_name="robaudit")


if __name__ == "__main__":
    main()
    sys.exit(0)
