"""Domain errors of the allocation engine (plain Python; see horizon_quota/errors)."""

from horizon_quota.errors import Conflict, InvalidInput, NotFound, ServiceError

__all__ = ["AlreadyReleased", "Conflict", "InvalidInput", "NotFound", "QuotaExceeded"]


class QuotaExceeded(ServiceError):
    kind = "resource_exhausted"
    status = 429


class AlreadyReleased(ServiceError):
    kind = "already_released"
    status = 409
