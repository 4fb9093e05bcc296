"""The Import page's form: rendering and typed values only (the rules are in service.py)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, MultipleFileField


class ImportForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # the template adds the token; CSRFProtect checks it

    files = MultipleFileField("File to import")
    dry_run = BooleanField("Check only: report what would happen, save nothing (dry run)")
