"""The fixed words of the domain, shared by the planner, models and forms."""

PROCEDURE_KINDS = ("kyphoplasty", "vertebroplasty")
PROCEDURE_STATUSES = ("scheduled", "completed", "cancelled")
LANGUAGES = ("en", "es")
