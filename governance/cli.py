"""``strata governance …``: the typer sub-app that ``strata/cli.py`` mounts.

Problems the user can act on raise ``StrataError`` (one red line, exit 1, printed by
``strata.cli.main``); ``check`` exits 1 when the catalog differs from the declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strata.errors import StrataError
from strata.settings import load_settings

app = typer.Typer(
    help="Roles, logins and grants (governance/roles.yaml): apply, check, add/remove people.",
    no_args_is_help=True,
)
console = Console(stderr=True)
out = Console()


@app.command("apply")
def apply_command(
    demo_users: Annotated[
        bool,
        typer.Option(
            "--demo-users",
            help="Also create one person per group role (demo_<group>), passwords under"
            " $STRATA_HOME/secrets (0600).",
        ),
    ] = False,
) -> None:
    """Make the catalog match the declaration (idempotent; safe after every run)."""
    from governance import apply
    from governance import demo_users as make_demo_users
    from governance.people import demo_secrets_path

    settings = load_settings()
    report = apply(settings)
    console.print(
        f"governance applied: {report.applied} changes"
        if report.applied
        else "governance: nothing to change"
    )
    if demo_users:
        people = make_demo_users(settings)
        console.print(
            f"demo users: {', '.join(sorted(people))}; passwords in {demo_secrets_path(settings)}"
        )


@app.command("check")
def check_command() -> None:
    """Print the role × database × schema matrix as it is; exit 1 where it differs."""
    from governance import check

    report = check(load_settings())
    out.print(report.matrix, soft_wrap=True, highlight=False, markup=False)
    out.print(
        "legend: r SELECT on every relation, r~ SELECT with precise geolocation withheld"
        " (read coarse.<relation>), r? SELECT on some, w INSERT/UPDATE/DELETE, c CREATE, - none",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    if report.differences:
        for d in report.differences:
            out.print(f"DIFFERS {d}", soft_wrap=True, highlight=False, markup=False)
        console.print(f"[red]{len(report.differences)} differences from the declaration[/red]")
        raise typer.Exit(1)
    console.print("[green]the catalog matches the declaration[/green]")


@app.command("add-user")
def add_user_command(
    name: Annotated[str, typer.Argument(help="Login role to create (a person).")],
    role: Annotated[str, typer.Option("--role", help="The group role it joins.")],
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Read the password from this file instead."),
    ] = None,
) -> None:
    """Create a person's login role in a group role; a generated password is shown once."""
    from governance import add_user

    password = None
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StrataError(f"--password-file {password_file}: {exc.strerror}") from None
    person = add_user(load_settings(), name, role, password)
    console.print(f"created {person.name} in {person.group}")
    if person.password:
        console.print("password (shown once, store it now):")
        out.print(person.password, highlight=False, markup=False)


@app.command("remove-user")
def remove_user_command(
    name: Annotated[str, typer.Argument(help="A person's login role.")],
) -> None:
    """Revoke everything, reassign what the person owns to the owner role, drop the role."""
    from governance import remove_user

    for line in remove_user(load_settings(), name):
        console.print(line)
