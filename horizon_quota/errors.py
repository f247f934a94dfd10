"""The base of every domain error.

Domain errors are plain Python exceptions with a ``kind`` and an HTTP ``status``.
They import nothing from DRF, so the admin and management commands catch them as
they are; ``horizon_quota.api.exception_handler`` turns them into the JSON error
body of DESIGN §5.
"""


class ServiceError(Exception):
    kind = "invalid_input"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        fields: dict[str, list[str]] | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        # More members of the error body, e.g. the blocking level of a refusal.
        self.extra = extra or {}


class InvalidInput(ServiceError):
    kind = "invalid_input"
    status = 400


class NotFound(ServiceError):
    kind = "not_found"
    status = 404


class AlreadyExists(ServiceError):
    kind = "already_exists"
    status = 409


class Conflict(ServiceError):
    kind = "conflict"
    status = 409


class Forbidden(ServiceError):
    kind = "forbidden"
    status = 403
