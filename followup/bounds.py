"""Bounds on what a request or a command may ask for: a value outside them is bad input.

Out-of-range input must be refused with a message (a 4xx, or one line and exit 2), never
reach the database or date arithmetic: 9999-12-31 plus a day overflows, and a page number
of 10^30 is not a query any database takes.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from wtforms.validators import ValidationError as FieldError

# Database ids are 32-bit integers.
MAX_ID = 2**31 - 1
# Pages of a list: 50 rows each, so half a million rows deep at most.
MAX_PAGE = 10_000
# Dates anyone may filter or schedule by.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2099, 12, 31)
# A search box, a step key, a filter's free text.
MAX_SEARCH_LENGTH = 100


def date_in_range(value: date) -> bool:
    """Whether a date lies in the range this service works with."""
    return EARLIEST_DATE <= value <= LATEST_DATE


class DateInRange:
    """WTForms validator: a date field's value between EARLIEST_DATE and LATEST_DATE."""

    message = f"must be between {EARLIEST_DATE:%Y-%m-%d} and {LATEST_DATE:%Y-%m-%d}"

    def __call__(self, form: Any, field: Any) -> None:
        if field.data is not None and not date_in_range(field.data):
            raise FieldError(self.message)
