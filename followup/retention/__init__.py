"""Retention: patients past RETENTION_DAYS lose what identifies them; the figures stay."""
