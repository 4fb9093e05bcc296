"""A CSV row whose name carries a NUL character (a damaged export, a cell pasted from a
binary field) passes every check of the enrollment (a name is only stripped and measured).
On PostgreSQL the chunk's INSERT then fails ("text fields cannot contain NUL bytes"), a
DataError the import does not expect: the import stops, and the good rows of the same
chunk (up to 1,000 patients) and of every chunk after it are not imported. On SQLite the
NUL is stored in the patient's name.

Expected, as for any bad cell: that row is refused naming its column (or the character
dropped), and the other rows of the file are imported.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.orm as so

from followup.patients.models import Patient
from tests.imports.conftest import Importer
from tests.imports.helpers import BOOKED, DONE, csv_text, row


def test_a_name_with_a_nul_character_is_refused_alone_and_the_other_rows_import(
    run_import: Importer, session: so.Session
) -> None:
    try:
        result = run_import({"p.csv": csv_text(row(DONE, last_name="Mor\x00eno"), BOOKED)})
    except sqlalchemy.exc.DBAPIError as exc:
        pytest.fail(
            f"one row with a NUL in last_name stopped the import ({type(exc).__name__}: "
            f"{str(exc.orig).splitlines()[0]}); the good row of the file was not imported"
        )

    nul_row, good = result.rows
    assert good.outcome == "planned"
    session.expire_all()
    names = list(session.scalars(sa.select(Patient.last_name)))
    assert not any("\x00" in name for name in names), (
        f"the row was {nul_row.outcome!r} and a NUL character was stored in a patient's "
        f"name: {names!r}"
    )
    if nul_row.outcome == "refused":
        assert nul_row.detail.startswith("last_name: ")
    else:
        assert nul_row.outcome == "planned"
