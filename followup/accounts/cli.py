"""`followup users`: staff accounts."""

from __future__ import annotations

import sys

import click

from followup.clibase import CliState


@click.group()
def users() -> None:
    """Staff accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(["nurse", "admin"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def users_create(state: CliState, email: str, role: str, password_stdin: bool) -> None:
    """Create a nurse or an admin."""
    from followup.accounts.service import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    runtime = state.runtime()
    with runtime.session_factory() as session:
        user = create_user(
            session=session,
            email=email,
            role=role,
            password=password,
            now=runtime.clock.now(),
            actor="cli",
        )
        session.commit()
    click.echo(f"user {user.id} created ({user.role})")
