"""``robaudit profile init | validate | show``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robaudit.cli.common import EXIT_CODES_HELP, fail, guarded
from robaudit.errors import ExitCode

profile_app = typer.Typer(
    help="Write, check and show YAML audit profiles.", no_args_is_help=True, pretty_exceptions_enable=False
)


@profile_app.command("init", epilog=EXIT_CODES_HELP)
def profile_init(
    file: Annotated[
        Path | None, typer.Argument(help="Where to write the template (default: print it).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented profile template with every key."""
    with guarded(debug=False):
        from robaudit.atomic import write_text_atomic
        from robaudit.config.template import template_text

        text = template_text()
        if file is None:
            typer.echo(text, nl=False)
            return
        if file.exists() and not force:
            fail(f"{file}: already exists; pass --force to overwrite it", ExitCode.USAGE_ERROR)
        write_text_atomic(file, text)
        typer.echo(f"wrote {file}")


@profile_app.command("validate", epilog=EXIT_CODES_HELP)
def profile_validate(
    file: Annotated[str, typer.Argument(help="A profile file, or a built-in name.")],
) -> None:
    """Check a profile without running it: exit 0 when valid, 2 with one line naming the field when not."""
    with guarded(debug=False):
        from robaudit.config.profile import load_profile

        load_profile(file)
        typer.echo(f"{file}: valid")


@profile_app.command("show", epilog=EXIT_CODES_HELP)
def profile_show(
    file: Annotated[str, typer.Argument(help="A profile file, or a built-in name.")],
) -> None:
    """Print the fully resolved profile as YAML, with every default filled in, after comments that
    give its description and its cascade: the order the attacks run in and each one's budget."""
    with guarded(debug=False):
        import yaml

        from robaudit.config.explain import show_header
        from robaudit.config.profile import load_profile, resolved

        loaded, _ = load_profile(file)
        values = resolved(loaded)
        typer.echo(show_header(values), nl=False)
        typer.echo(yaml.safe_dump(values, sort_keys=False, default_flow_style=False), nl=False)
