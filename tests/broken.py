"""Deliberately broken variants of the allocation engine.

The concurrency tests run their scenarios against these too and show that they do
break the invariants: proof that those tests can fail. Never used by the service.
"""

import time

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from allocations.exceptions import AlreadyReleased, QuotaExceeded
from allocations.models import Allocation, AllocationStatus
from quotas.models import Quota
from quotas.selectors import quota_path


def allocate_check_then_write(
    *, entity_type, entity_id, resource_type, job_id, requested_value, **_ignored
):
    """Reads the path without locks, checks, then writes: the Rust service's race."""
    leaf = Quota.objects.get(
        entity_type=entity_type, entity_id=entity_id, resource_type_id=resource_type
    )
    path = quota_path(quota=leaf)
    for quota in path:
        if quota.used + requested_value > quota.effective_limit:
            raise QuotaExceeded("full")
    time.sleep(0.001)  # any pause between the check and the write widens the race
    with transaction.atomic():
        existing = Allocation.objects.filter(
            job_id=job_id, resource_type=resource_type, status=AllocationStatus.ACTIVE
        ).first()
        if existing:
            return existing
        allocation = Allocation.objects.create(
            quota=leaf,
            entity_type=entity_type,
            entity_id=entity_id,
            job_id=job_id,
            resource_type=resource_type,
            allocated_value=requested_value,
        )
        for quota in path:
            Quota.objects.filter(id=quota.id).update(used=F("used") + requested_value)
    return allocation


def release_check_then_write(*, allocation_id):
    """Reads the status, then releases unconditionally: double releases slip in."""
    allocation = Allocation.objects.get(id=allocation_id)
    if allocation.status != AllocationStatus.ACTIVE:
        raise AlreadyReleased("released")
    time.sleep(0.01)
    with transaction.atomic():
        Allocation.objects.filter(id=allocation_id).update(
            status=AllocationStatus.RELEASED, released_at=timezone.now()
        )
        for quota in quota_path(quota=Quota.objects.get(id=allocation.quota_id)):
            Quota.objects.filter(id=quota.id).update(
                used=F("used") - allocation.allocated_value
            )
    return allocation


def release_root_first(*, allocation_id):
    """Releases with the quota rows locked root first: the opposite of the global
    order the allocate function uses, so the two can deadlock."""
    with transaction.atomic():
        allocation = Allocation.objects.select_for_update().get(id=allocation_id)
        if allocation.status != AllocationStatus.ACTIVE:
            raise AlreadyReleased("released")
        path = quota_path(quota=Quota.objects.get(id=allocation.quota_id))
        for quota in reversed(path):
            Quota.objects.filter(id=quota.id).update(
                used=F("used") - allocation.allocated_value
            )
            time.sleep(0.002)
        allocation.status = AllocationStatus.RELEASED
        allocation.released_at = timezone.now()
        allocation.save(update_fields=["status", "released_at"])
    return allocation
