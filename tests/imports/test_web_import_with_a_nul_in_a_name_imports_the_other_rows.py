"""The Import page's import (`run_import`, the background thread) stores each row's report
line in `import_rows`, with the row's patient label: its name as written in the file.
bba30f6 refuses a row whose name carries a NUL (a damaged export), so the CLI's import
goes on; but the page's import still writes that refused row's label, NUL and all, into
`import_rows.patient`. On PostgreSQL ("cannot contain NUL") the chunk's transaction
fails, nothing of it is kept, the import stops: the good rows of the same chunk (up to
1,000 patients) and of every chunk after it are never enrolled, and get no texts.

Expected: that row refused alone, the other rows imported, the run done.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from followup.clock import FakeClock
from followup.imports.models import ImportRow, ImportRun
from followup.imports.service import create_run, run_import
from followup.imports.source import Upload
from followup.patients.models import Patient
from followup.runtime import Runtime
from tests.imports.helpers import BOOKED, DONE, csv_text, row


def test_page_import_with_a_nul_in_one_name_refuses_that_row_and_imports_the_rest(
    runtime: Runtime, session: so.Session, clock: FakeClock
) -> None:
    run = create_run(
        session=session, filename="p.csv", actor="nurse@example.org", dry_run=False, now=clock.now()
    )
    session.commit()
    data = csv_text(row(DONE, last_name="Mor\x00eno"), BOOKED).encode("utf-8")

    run_import(runtime=runtime, run_id=run.id, uploads=[Upload("p.csv", data)])

    session.expire_all()
    finished = session.get(ImportRun, run.id)
    assert finished is not None
    names = sorted(session.scalars(sa.select(Patient.last_name)))
    assert (finished.status, finished.error) == ("done", None), (
        f"the page's import stopped ({finished.status}: {finished.error}) on one row with a "
        f"NUL in its name; patients enrolled: {names!r} (the good row, Muñoz, is missing)"
    )
    assert names == ["Muñoz"]
    outcomes = list(session.scalars(sa.select(ImportRow.outcome).where(ImportRow.run_id == run.id)))
    assert sorted(outcomes) == ["planned", "refused"]
