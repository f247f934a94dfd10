"""An allocation as the service hands it around: one value, one wire form.

The engine answers with the allocation's row as JSON, lists read model instances;
both become an ``AllocationRecord``, and ``render_allocation`` is the one place that
turns it into the API's JSON (``AllocationSerializer`` documents that shape for the
schema; ``tests/test_allocation_serialization.py`` holds the two to each other).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.utils.dateparse import parse_datetime

from horizon_quota.amounts import normalize_amount


@dataclass(frozen=True, slots=True)
class AllocationRecord:
    id: UUID
    quota_id: UUID
    entity_type: str
    entity_id: str
    job_id: UUID
    resource_type: str
    allocated_value: Decimal
    status: str
    allocated_at: datetime
    released_at: datetime | None
    expires_at: datetime | None
    is_burst: bool
    version: int
    metadata: dict[str, Any]
    consumed_value: Decimal = Decimal(0)
    rate: Decimal | None = None

    @classmethod
    def from_engine(cls, raw: dict[str, Any]) -> "AllocationRecord":
        """The allocation row as an engine function returned it (``row_to_json``)."""
        return cls(
            id=UUID(raw["id"]),
            quota_id=UUID(raw["quota_id"]),
            entity_type=raw["entity_type"],
            entity_id=raw["entity_id"],
            job_id=UUID(raw["job_id"]),
            resource_type=raw["resource_type"],
            allocated_value=Decimal(raw["allocated_value"]),
            status=raw["status"],
            allocated_at=parse_datetime(raw["allocated_at"]),
            released_at=_timestamp(raw["released_at"]),
            expires_at=_timestamp(raw["expires_at"]),
            is_burst=raw["is_burst"],
            version=raw["version"],
            metadata=raw["metadata"],
            consumed_value=Decimal(raw["consumed_value"]),
            rate=None if raw["rate"] is None else Decimal(raw["rate"]),
        )

    @classmethod
    def from_model(cls, allocation) -> "AllocationRecord":
        """An ``allocations.models.Allocation`` instance."""
        return cls(
            id=allocation.id,
            quota_id=allocation.quota_id,
            entity_type=allocation.entity_type,
            entity_id=allocation.entity_id,
            job_id=allocation.job_id,
            resource_type=allocation.resource_type,
            allocated_value=allocation.allocated_value,
            status=allocation.status,
            allocated_at=allocation.allocated_at,
            released_at=allocation.released_at,
            expires_at=allocation.expires_at,
            is_burst=allocation.is_burst,
            version=allocation.version,
            metadata=allocation.metadata,
            consumed_value=allocation.consumed_value,
            rate=allocation.rate,
        )


def _timestamp(raw: str | None) -> datetime | None:
    return parse_datetime(raw) if raw else None


def rfc3339(moment: datetime | None) -> str | None:
    """A timestamp as the API writes it: RFC 3339 in UTC, ``Z`` suffix."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render_allocation(record: AllocationRecord) -> dict[str, Any]:
    """The allocation's wire form, built directly: a DRF serializer deep-copies its
    fields on every call, which costs more than the allocation itself on the hot
    path."""
    return {
        "id": str(record.id),
        "quota_id": str(record.quota_id),
        "entity_type": record.entity_type,
        "entity_id": record.entity_id,
        "job_id": str(record.job_id),
        "resource_type": record.resource_type,
        "allocated_value": normalize_amount(record.allocated_value),
        "status": record.status,
        "allocated_at": rfc3339(record.allocated_at),
        "released_at": rfc3339(record.released_at),
        "expires_at": rfc3339(record.expires_at),
        "is_burst": record.is_burst,
        "version": record.version,
        "metadata": record.metadata,
        "consumed_value": normalize_amount(record.consumed_value),
        "rate": None if record.rate is None else normalize_amount(record.rate),
    }


def render_job(job_id, allocations: list[AllocationRecord]) -> dict[str, Any]:
    """A job's wire form (DESIGN §3b): its allocations (any status, by resource
    type), what it holds per resource (its active allocations, or the newest ones
    when none is active), what it consumed, and its status."""
    active = [a for a in allocations if a.status == "active"]
    newest: dict[str, AllocationRecord] = {}
    for allocation in allocations:
        kept = newest.get(allocation.resource_type)
        if kept is None or allocation.allocated_at > kept.allocated_at:
            newest[allocation.resource_type] = allocation
    current = active or list(newest.values())
    statuses = {a.status for a in current}
    first = current[0] if current else None
    return {
        "job_id": str(job_id),
        "entity_type": first.entity_type if first else None,
        "entity_id": first.entity_id if first else None,
        "status": statuses.pop() if len(statuses) == 1 else "released",
        "resources": {
            a.resource_type: normalize_amount(a.allocated_value)
            for a in sorted(current, key=lambda a: a.resource_type)
        },
        "consumed": {
            a.resource_type: normalize_amount(a.consumed_value)
            for a in sorted(current, key=lambda a: a.resource_type)
        },
        "allocations": [render_allocation(a) for a in allocations],
    }
