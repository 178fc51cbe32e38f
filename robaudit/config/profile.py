"""YAML audit profiles (version 1): an audit checked into a repository, CLI flags on top.

A profile is the configuration's own sections (``sections.py``) plus ``version: 1``, read with a safe
loader that also rejects duplicate keys (PyYAML keeps the last one silently) and validated by the same
pydantic models the CLI and the library build, which forbid unknown keys. Every error is one line naming
the field path, e.g. ``attacks[1].eps[0]: must be >= 0``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import ValidationError

from robaudit.attacks.registry import SettingError, build_attack, is_art, lookup, native_names
from robaudit.config.audit import AuditSections
from robaudit.config.values import check_linf_eps, eps_picks
from robaudit.errors import UsageError

BUILTIN = ("quick", "standard", "thorough", "strongest")
# Profiles written before the run section put these at the top level; they are read into run:.
TOP_LEVEL_RUN_KEYS = ("device", "batch_size", "channels_last", "tf32", "seed")


class Profile(AuditSections):
    accepts_flat: ClassVar[bool] = False  # a profile file writes sections, never flat keywords

    version: Literal[1]
    # What the profile is for, in prose; ``profile show`` prints it. It changes nothing in the audit.
    description: str | None = None


# --- reading ----------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key that appears twice in one mapping."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (YAML keeps only the last one)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "profile"


def _error_line(err: Any, moved: set[str]) -> str:
    """One pydantic error as ``field.path: reason``, with the path the profile's author wrote."""
    loc = tuple(err["loc"])
    if len(loc) >= 2 and loc[0] == "run" and loc[1] in moved:
        loc = loc[1:]  # written at the top level, as profiles before the run section did
    message = str(err["msg"]).removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):  # an attack's own setting: attacks[1].steps
        loc, message = (*loc, cause.field), cause.reason
    elif err["type"] == "extra_forbidden":
        message = "unknown key; check the spelling (robaudit profile init writes every key)"
    elif err["type"] == "literal_error" and loc == ("version",):
        message = "this robaudit reads version 1"
    return f"{_field_path(loc)}: {message}"


def _move_run_keys(raw: dict[Any, Any]) -> set[str]:
    """Top-level device, seed, ... into the run section; returns the keys moved."""
    moved = {key for key in TOP_LEVEL_RUN_KEYS if key in raw}
    if moved:
        run = raw.get("run")
        if run is not None and not isinstance(run, dict):
            return set()  # pydantic names the bad run section
        run = dict(run or {})
        for key in sorted(moved):
            if key in run:
                raise UsageError(f"{key}: given both at the top level and in run; keep the one in run")
            run[key] = raw.pop(key)
        raw["run"] = run
    return moved


def parse_profile(text: str, source: str) -> Profile:
    """Parse and validate profile text; any problem is a one-line UsageError naming ``source``."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to be a profile") from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"{source}: a profile is a mapping starting with 'version: 1'; run robaudit profile init"
        )
    if "version" not in raw:
        raise UsageError(f"{source}: version: missing; a profile starts with 'version: 1'")
    try:
        moved = _move_run_keys(raw)
        return Profile.model_validate(raw)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None
    except ValidationError as exc:
        raise UsageError(f"{source}: {_error_line(exc.errors()[0], moved)}") from None


def _attack_threats(profile: Profile, source: str) -> set[tuple[str, float]] | None:
    """The threat models the profile's attacks run, checking each entry on the way; None when an ART
    attack is among them (its norms are known only once ART is imported)."""
    runs: set[tuple[str, float]] = set()
    unknown_norms = False
    for i, entry in enumerate(profile.attacks):
        norms = list(entry.norms or profile.threat.norms)
        eps = [float(e) for e in (entry.eps or profile.threat.eps)]
        if "linf" in norms and entry.eps:
            for e in eps:
                check_linf_eps(e, field=f"{source}: attacks[{i}].eps")
        if is_art(entry.name):
            if not entry.name.strip()[4:].strip().isidentifier():
                raise UsageError(
                    f"{source}: attacks[{i}].name: write an ART class name after art:, e.g. art:DeepFool"
                )
            unknown_norms = True
            continue
        key = entry.name.strip().lower()
        if key not in native_names():
            raise UsageError(
                f"{source}: attacks[{i}].name: unknown attack {entry.name!r}; choose from "
                f"{', '.join(native_names())}, or art:ClassName"
            )
        info = lookup(key)
        if "l0" in info.threat_models:
            pixels = info.settings.model_validate(entry.settings).model_dump().get("pixels", 1)
            runs.add(("l0", float(pixels)))
        runs.update((n, e) for n in norms if n in info.threat_models for e in eps)
    return None if unknown_norms else runs


def check_runnable(profile: Profile, source: str) -> None:
    """What ``robaudit scan`` would refuse or could never pass in a schema-valid profile, named by its
    field: an unknown attack, an L∞ eps above 1, a gate check on a threat model no attack runs."""
    if "linf" in profile.threat.norms:
        for e in profile.threat.eps:
            check_linf_eps(float(e), field=f"{source}: threat.eps")
    runs = _attack_threats(profile, source)
    if runs is None:
        return
    for j, check in enumerate(profile.gate.checks):
        if check.norm is None or check.eps is None:
            continue
        picked = eps_picks(float(check.eps), check.eps_decimals, (e for n, e in runs if n == check.norm))
        written = _written(check.norm, float(check.eps), check.eps_decimals)
        if not picked:
            ran = ", ".join(f"{n} {_written(n, e, None)}" for n, e in sorted(runs))
            raise UsageError(
                f"{source}: gate.checks[{j}]: no attack of this profile runs {check.norm} at eps "
                f"{written} (it runs {ran}), so the check could never pass; add the eps to "
                f"threat.eps or check one that runs"
            )
        if len(picked) > 1:
            both = " and ".join(_written(check.norm, e, None) for e in sorted(picked))
            raise UsageError(
                f"{source}: gate.checks[{j}]: eps {written} matches {check.norm} eps {both} at the "
                f"precision it is written with; write the eps exactly as threat.eps does"
            )


def _written(norm: str, eps: float, decimals: int | None) -> str:
    """An eps as a profile message shows it: as written, or as the reports print it."""
    from robaudit.report.eps import eps_text

    return f"{eps:.{decimals}f}" if decimals is not None and decimals <= 12 else eps_text(norm, eps)


def builtin_text(name: str) -> str:
    return (resources.files("robaudit") / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")


def load_profile(spec: str) -> tuple[Profile, str]:
    """A profile file, or a built-in one by name (quick, standard, thorough, strongest). Returns it and its source."""
    if spec in BUILTIN and not Path(spec).exists():
        source = f"built-in profile {spec}"
        profile = parse_profile(builtin_text(spec), source)
        check_runnable(profile, source)
        return profile, spec
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--profile {spec}: no such file; give a profile .yaml or a built-in name ({', '.join(BUILTIN)})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the profile ({exc})") from None
    profile = parse_profile(text, str(path))
    check_runnable(profile, str(path))
    return profile, str(path)


# --- to configuration -------------------------------------------------------------------------------


def profile_values(profile: Profile) -> dict[str, Any]:
    """The profile's sections as the nested values ``AuditConfig`` and ``merge`` take."""
    values = profile.model_dump(exclude={"version", "description"})
    values["attacks"] = tuple(dict(e.model_dump(exclude_none=True)) for e in profile.attacks)
    return values


def resolved(profile: Profile) -> dict[str, Any]:
    """The profile with every default filled in: each attack with the settings it will run with."""
    out = profile.model_dump(mode="json", by_alias=True, exclude_none=False)
    if out.get("description") is None:
        out.pop("description", None)
    attacks = []
    for entry in profile.attacks:
        info = lookup(entry.name)
        item: dict[str, Any] = {"name": entry.name}
        if "l0" not in info.threat_models:
            item["norms"] = list(entry.norms or profile.threat.norms)
            item["eps"] = [float(e) for e in (entry.eps or profile.threat.eps)]
        item.update(info.settings.model_validate(entry.settings).model_dump(mode="json"))
        if is_art(entry.name):
            build_attack(entry.name, kwargs=entry.kwargs)  # ART checks the class and its keywords
        if entry.kwargs is not None:
            item["kwargs"] = entry.kwargs
        attacks.append(item)
    out["attacks"] = attacks
    return out
