"""`followup purge`: the retention purge, also run daily by the scheduler."""

from __future__ import annotations

import click

from followup.clibase import CliState


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.pass_obj
def purge(state: CliState, dry_run: bool) -> None:
    """Remove names, phones and text bodies of patients past RETENTION_DAYS."""
    from followup.retention.service import preview_purge, purge_expired, retention_cutoff

    runtime = state.runtime()
    now = runtime.clock.now()
    days = runtime.settings.retention_days
    cutoff = retention_cutoff(now=now, retention_days=days)
    with runtime.session_factory() as session:
        if dry_run:
            report = preview_purge(session=session, now=now, retention_days=days)
        else:
            report = purge_expired(session=session, now=now, retention_days=days, actor="cli")
    click.echo(
        f"retention {days} days: patients whose last procedure ended before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC"
    )
    click.echo(
        f"{'would remove' if dry_run else 'removed'}: {report.patients} patients, "
        f"{report.texts} texts, {report.replies} replies, "
        f"{report.unknown_replies} replies from unknown numbers"
    )
    if dry_run:
        click.echo("dry run: nothing was changed")
