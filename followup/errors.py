"""Domain errors shared by every domain: each names the field it is about."""


class FollowupError(Exception):
    """Base of every error the service raises on purpose."""


class ValidationError(FollowupError):
    """Bad input for one named field; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(FollowupError):
    """A record named by id does not exist."""


class ConfigurationError(FollowupError):
    """The service cannot start with these settings or this protocol data."""
