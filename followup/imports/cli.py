"""`followup import`: patients from CSV or FHIR files, with a per-row report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from followup.clibase import EXIT_BAD_INPUT, CliState, fail

EXIT_SOME_REFUSED = 1


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and report; write nothing.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the per-row report to this CSV file.",
)
@click.pass_obj
def import_command(
    state: CliState, files: tuple[Path, ...], dry_run: bool, report_path: Path | None
) -> None:
    """Import patients from a CSV file, or FHIR R4 files (a Bundle, or NDJSON).

    Exit 0 when every row was planned or already enrolled, 1 when some rows were refused
    (the others were imported), 2 when the file was refused (nothing was imported).
    """
    from followup.imports.service import import_items, parse_uploads, write_report_csv
    from followup.imports.source import FileRefused, Upload, read_path

    runtime = state.runtime()
    now = runtime.clock.now()
    try:
        uploads: list[Upload] = []
        for path in files:
            uploads.append(read_path(path, already=sum(len(u.data) for u in uploads)))
        parsed = parse_uploads(uploads, default_timezone=runtime.settings.default_timezone, now=now)
    except FileRefused as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    rows: list[Any] = []
    with click.progressbar(
        length=len(parsed.items),
        label="Checking" if dry_run else "Importing",
        file=sys.stderr,
        show_pos=True,
    ) as bar:

        def progress(_session: Any, chunk: list[Any]) -> None:
            rows.extend(chunk)
            bar.update(len(chunk))

        summary = import_items(
            session_factory=runtime.session_factory,
            parsed=parsed,
            care=runtime.care,
            region=runtime.settings.default_region,
            now=now,
            actor="cli",
            source=", ".join(path.name for path in files),
            dry_run=dry_run,
            on_chunk=progress,
        )
    for row in rows:
        click.echo(f"{row.ref:<14} {row.patient:<40} {row.outcome:<17} {row.detail}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    click.echo(summary.describe())
    if report_path is not None:
        with open(report_path, "w", encoding="utf-8", newline="") as out:
            write_report_csv(rows, out)
        click.echo(f"report written to {report_path}")
    if summary.refused:
        sys.exit(EXIT_SOME_REFUSED)
