"""The scan command's options as reusable ``Annotated`` aliases, and the attack flags made from the registry.

Help texts and defaults come from the configuration's sections (``config.sections``), so a setting's
help, default and validation are written once. A parameter's name is the setting's flat name
(``json_path`` is ``--json``): the scan command hands the flags given on the command line, by that
name, to the same merge a profile and the library use. Attack settings (``--steps``) are not listed here
at all: ``attack_parameters`` makes one flag per setting name of the registry, so an attack added to the
registry brings its flags with it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from robaudit.attacks.registry import native_names, setting_fields
from robaudit.config.sections import FLAT_FIELDS, SECTIONS, describe

MODEL_PANEL = "Model"
DATA_PANEL = "Data"
ATTACK_PANEL = "Attacks"
THREAT_PANEL = "Threat model"
OUTPUT_PANEL = "Outputs"
GATE_PANEL = "Gate"
RUN_PANEL = "Run"


def default(flat: str) -> Any:
    """A setting's default, by its flat name."""
    section, field = FLAT_FIELDS[flat]
    return SECTIONS[section].model_fields[field].get_default(call_default_factory=True)


# Every setting's default by flat name, for the parameters' defaults (shown in --help).
DEFAULT: dict[str, Any] = {flat: default(flat) for flat in FLAT_FIELDS}


def _option(flat: str, *names: str, panel: str, help: str | None = None) -> Any:
    return typer.Option(*names, help=help or describe(flat), rich_help_panel=panel)


ModelArg = Annotated[Path | None, typer.Argument(help=describe("model") + " May come from --profile.")]
Profile = Annotated[
    str | None,
    typer.Option(
        help="A YAML audit profile, or a built-in one: quick, standard, thorough, strongest. Flags override it.",
        rich_help_panel=RUN_PANEL,
    ),
]
Data = Annotated[str | None, _option("data", panel=DATA_PANEL)]
Labels = Annotated[Path | None, _option("labels", panel=DATA_PANEL)]
NpzKeys = Annotated[str, _option("npz_keys", panel=DATA_PANEL)]
Limit = Annotated[int | None, _option("limit", panel=DATA_PANEL)]
Resize = Annotated[str | None, _option("resize", panel=DATA_PANEL)]
DataRange = Annotated[str | None, _option("data_range", panel=DATA_PANEL)]
Attack = Annotated[
    list[str] | None,
    typer.Option(
        "--attack",
        help=f"Attack to run, repeatable: {', '.join(native_names())}, or art:ClassName (any ART evasion "
        "attack, needs pip install 'robaudit\\[art]'). Default: fgsm.",
        rich_help_panel=ATTACK_PANEL,
    ),
]
AttackKwargs = Annotated[
    list[str] | None,
    typer.Option(
        help="Keyword arguments for an ART attack, repeatable: NAME=JSON, e.g. "
        "'art:DeepFool={\"max_iter\": 20}'.",
        rich_help_panel=ATTACK_PANEL,
    ),
]
Norm = Annotated[list[str] | None, _option("norms", "--norm", panel=THREAT_PANEL)]
Eps = Annotated[list[str] | None, _option("eps", panel=THREAT_PANEL)]
Target = Annotated[str, _option("target", panel=THREAT_PANEL)]
EotEvals = Annotated[int, _option("eot_evals", "--eot-evals", panel=THREAT_PANEL)]
InputRange = Annotated[str, _option("input_range", panel=MODEL_PANEL)]
Mean = Annotated[str | None, _option("mean", panel=MODEL_PANEL)]
Std = Annotated[str | None, _option("std", panel=MODEL_PANEL)]
Layout = Annotated[str, _option("layout", panel=MODEL_PANEL)]
Output = Annotated[str, _option("output", panel=MODEL_PANEL)]
Arch = Annotated[str | None, _option("arch", panel=MODEL_PANEL)]
Surrogate = Annotated[Path | None, _option("surrogate", panel=MODEL_PANEL)]
ArchKwargs = Annotated[
    str, _option("arch_kwargs", panel=MODEL_PANEL, help="JSON keyword arguments for --arch.")
]
TrustModel = Annotated[bool, _option("trust_model", "--trust-model", panel=MODEL_PANEL)]
ParityAtol = Annotated[float, _option("parity_atol", panel=MODEL_PANEL)]
Device = Annotated[str, _option("device", panel=RUN_PANEL)]
BatchSize = Annotated[str, _option("batch_size", panel=RUN_PANEL)]
Seed = Annotated[int, _option("seed", panel=RUN_PANEL)]
ChannelsLast = Annotated[bool, _option("channels_last", "--channels-last", panel=RUN_PANEL)]
Tf32 = Annotated[bool, _option("tf32", "--tf32", panel=RUN_PANEL)]
RunDir = Annotated[Path | None, _option("run_dir", panel=RUN_PANEL)]
# Rich reads [ray] as markup: escaped here, not in the field (profile init prints it as written).
Workers = Annotated[str, _option("workers", panel=RUN_PANEL, help=describe("workers").replace("[", "\\["))]
RayAddress = Annotated[
    str | None,
    typer.Option(envvar="RAY_ADDRESS", help=describe("ray_address"), rich_help_panel=RUN_PANEL),
]
ShardSize = Annotated[int | None, _option("shard_size", panel=RUN_PANEL)]
Resume = Annotated[
    Path | None,
    typer.Option(
        help="Continue an interrupted run from its --run-dir folder (its settings come from there).",
        rich_help_panel=RUN_PANEL,
    ),
]
# Probes are on by default, so the one flag turns them off (the setting is reliability_checks).
NoChecks = Annotated[
    bool,
    typer.Option(
        "--no-checks",
        help="Skip the reliability probes (randomness, gradients, unbounded attack, ...) run on 100 samples.",
        rich_help_panel=RUN_PANEL,
    ),
]
Debug = Annotated[
    bool, typer.Option("--debug", help="Show tracebacks for internal errors.", rich_help_panel=RUN_PANEL)
]
# Not a setting: how this one command talks to its terminal, not what the audit does (a profile shared
# by a team should not silence anyone's CI log), so it is neither in a profile nor in the results.
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress on stderr (the results and errors still print).",
        rich_help_panel=RUN_PANEL,
    ),
]
JsonPath = Annotated[Path | None, _option("json_path", "--json", panel=OUTPUT_PANEL)]
HtmlPath = Annotated[Path | None, _option("html_path", "--html", panel=OUTPUT_PANEL)]
MarkdownPath = Annotated[Path | None, _option("markdown_path", "--markdown", panel=OUTPUT_PANEL)]
PerSamplePath = Annotated[Path | None, _option("per_sample_path", "--per-sample", panel=OUTPUT_PANEL)]
AdversarialPath = Annotated[
    Path | None, _option("adversarial_path", "--save-adversarial", panel=OUTPUT_PANEL)
]
RadiusBisect = Annotated[int, _option("radius_bisect", panel=OUTPUT_PANEL)]
Certify = Annotated[str, _option("certify", panel=THREAT_PANEL)]
CertifyTimeLimit = Annotated[float, _option("certify_time_limit", panel=THREAT_PANEL)]
FailUnder = Annotated[
    list[str] | None,
    typer.Option(
        help="Gate: fail (exit 1) when METRIC@\\[ATTACK:]NORM:EPS is below VALUE, repeatable; e.g. "
        "robust_accuracy@pgd:linf:0.1=0.80 or clean_accuracy=0.95. Attack defaults to worst-case.",
        rich_help_panel=GATE_PANEL,
    ),
]
FailOver = Annotated[
    list[str] | None,
    typer.Option(
        help="Gate: fail when the metric is above VALUE, e.g. attack_success_rate@linf:8/255=0.3.",
        rich_help_panel=GATE_PANEL,
    ),
]
UseInterval = Annotated[
    bool,
    typer.Option(
        "--use-interval",
        help="Gate checks from flags compare the unfavourable end of the 95% interval.",
        rich_help_panel=GATE_PANEL,
    ),
]
Baseline = Annotated[Path | None, _option("baseline", panel=GATE_PANEL)]
MaxDrop = Annotated[float | None, _option("max_drop", panel=GATE_PANEL)]
AllowMismatch = Annotated[bool, _option("allow_mismatch", "--allow-mismatch", panel=GATE_PANEL)]
JunitPath = Annotated[Path | None, _option("junit_path", "--junit", panel=GATE_PANEL)]
Strict = Annotated[bool, _option("strict", "--strict", panel=GATE_PANEL)]

_CLI_TYPES = (int, float, bool)


def attack_parameters() -> list[inspect.Parameter]:
    """One keyword-only parameter per attack setting of the registry (``--steps``, ``--pixels``, ...),
    with the first declaring attack's default and help. A setting several attacks share is one flag
    that sets it in each of them."""
    params = []
    for name, infos in setting_fields().items():
        field = infos[0].settings.model_fields[name]
        kind = field.annotation if field.annotation in _CLI_TYPES else str
        help_text = field.description or name
        if len(infos) > 1:
            help_text += f" (for {', '.join(i.name for i in infos)})"
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=field.get_default(call_default_factory=True),
                annotation=Annotated[kind, typer.Option(help=help_text, rich_help_panel=ATTACK_PANEL)],
            )
        )
    return params


def attack_setting_names() -> set[str]:
    return set(setting_fields())
