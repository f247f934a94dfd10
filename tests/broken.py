"""Deliberately broken variants of the allocation engine.

The concurrency tests run their scenarios against these too and show that they do
break the invariants: proof that those tests can fail. Never used by the service.
"""

import time
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest, Now
from django.utils import timezone

from allocations.exceptions import AlreadyReleased, QuotaExceeded
from allocations.models import (
    Allocation,
    AllocationStatus,
    HistoryOperation,
    UsageHistory,
)
from allocations.selectors import usage_drift
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
        # Between looking for the key and claiming it: long enough that callers
        # sent at once all look before the first claims, even on a loaded machine.
        time.sleep(0.02)
        allocation = Allocation.objects.create(
            quota=leaf,
            entity_type=entity_type,
            entity_id=entity_id,
            job_id=job_id,
            resource_type=resource_type,
            allocated_value=requested_value,
        )
        for quota in path:
            Quota.objects.filter(id=quota.id).update(
                reserved=F("reserved") + requested_value
            )
    return allocation


def release_check_then_write(*, allocation_id, pause=0.01):
    """Reads the status, then releases unconditionally: double releases slip in."""
    allocation = Allocation.objects.get(id=allocation_id)
    if allocation.status != AllocationStatus.ACTIVE:
        raise AlreadyReleased("released")
    time.sleep(pause)
    with transaction.atomic():
        Allocation.objects.filter(id=allocation_id).update(
            status=AllocationStatus.RELEASED, released_at=timezone.now()
        )
        for quota in quota_path(quota=Quota.objects.get(id=allocation.quota_id)):
            Quota.objects.filter(id=quota.id).update(
                reserved=F("reserved") - allocation.allocated_value
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
                reserved=F("reserved") - allocation.allocated_value
            )
            time.sleep(0.002)
        allocation.status = AllocationStatus.RELEASED
        allocation.released_at = timezone.now()
        allocation.save(update_fields=["status", "released_at"])
    return allocation


def allocations_expire_check_then_write():
    """Reads the due allocations without locking or claiming them, checks each one's
    status in Python, then expires it unconditionally: two sweepers running at once
    both expire (and count) the same allocations."""
    expired = 0
    due = (
        Allocation.objects.filter(status=AllocationStatus.ACTIVE, expires_at__lte=Now())
        .order_by("expires_at", "id")
        .values_list("id", flat=True)
    )
    for allocation_id in list(due):
        allocation = Allocation.objects.get(id=allocation_id)
        if allocation.status != AllocationStatus.ACTIVE:
            continue
        time.sleep(0.002)
        with transaction.atomic():
            Allocation.objects.filter(id=allocation_id).update(
                status=AllocationStatus.EXPIRED, released_at=Now()
            )
            UsageHistory.objects.create(
                quota_id=allocation.quota_id,
                allocation_id=allocation.id,
                entity_type=allocation.entity_type,
                entity_id=allocation.entity_id,
                resource_type=allocation.resource_type,
                allocated_value=allocation.allocated_value,
                operation=HistoryOperation.EXPIRE,
                job_id=allocation.job_id,
            )
            # Clamped at zero, as a naive "fix" for the used >= 0 check violations
            # that the double debits cause.
            for quota in quota_path(quota=Quota.objects.get(id=allocation.quota_id)):
                Quota.objects.filter(id=quota.id).update(
                    reserved=Greatest(
                        F("reserved") - allocation.allocated_value, Decimal(0)
                    )
                )
        expired += 1
    return expired


def usage_reconcile_from_report(*, root_id=None):
    """Repairs each drift with the total the report read, without locking and without
    computing it again: allocations that commit in between are lost from ``used``."""
    drifts = usage_drift(root_id=root_id)
    time.sleep(0.01)
    for drift in drifts:
        Quota.objects.filter(id=drift["quota_id"]).update(
            reserved=drift["actual_reserved"], consumed=drift["actual_consumed"]
        )
    return drifts


def consume_check_then_write(*, allocation_id, consumed_value):
    """Reads the allocation without locking it, computes the increment from that
    read, then charges it: two reports of one job at once both charge against the
    same starting point, and the reservation is returned twice."""
    allocation = Allocation.objects.get(id=allocation_id)
    delta = consumed_value - allocation.consumed_value
    if delta <= 0:
        return allocation
    from_reserve = min(
        delta, max(Decimal(0), allocation.allocated_value - allocation.consumed_value)
    )
    time.sleep(0.01)
    with transaction.atomic():
        Allocation.objects.filter(id=allocation_id).update(
            consumed_value=consumed_value
        )
        UsageHistory.objects.create(
            quota_id=allocation.quota_id,
            allocation_id=allocation.id,
            entity_type=allocation.entity_type,
            entity_id=allocation.entity_id,
            resource_type=allocation.resource_type,
            allocated_value=allocation.allocated_value,
            operation=HistoryOperation.CONSUME,
            consumed_delta=delta,
            job_id=allocation.job_id,
        )
        for quota in quota_path(quota=Quota.objects.get(id=allocation.quota_id)):
            Quota.objects.filter(id=quota.id).update(
                consumed=F("consumed") + delta, reserved=F("reserved") - from_reserve
            )
    return allocation


def roll_without_lock():
    """Rolls every budget whose period has ended from a read taken without a lock
    and without a claim: consumption charged between the read and the write is
    wiped from the new period, and two of these roll the same budgets twice.
    Returns how many budgets it rolled."""
    from django.conf import settings
    from django.db import connection

    rolled = 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM quotas WHERE period_end IS NOT NULL "
            "AND period_end <= hq_now() ORDER BY period_end"
        )
        due = [row[0] for row in cursor.fetchall()]
    for quota_id in due:
        quota = Quota.objects.get(id=quota_id)
        # Long enough for traffic to charge the level between the read and the
        # write even on a loaded machine (a shorter pause let the race slip by).
        time.sleep(0.03)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO budget_periods (quota_id, entity_type, entity_id, "
                "resource_type, period, period_start, period_end, limit_value, "
                "carried_over, consumed, carried_forward) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0) "
                "ON CONFLICT (quota_id, period_start) DO NOTHING",
                [
                    quota.id,
                    quota.entity_type,
                    quota.entity_id,
                    quota.resource_type_id,
                    quota.period,
                    quota.period_start,
                    quota.period_end,
                    quota.limit_value,
                    quota.carried_over,
                    quota.consumed,
                ],
            )
            cursor.execute(
                "UPDATE quotas SET consumed = 0, period_start = %s, "
                "period_end = hq_period_end(period, %s, %s) WHERE id = %s",
                [
                    quota.period_end,
                    quota.period_end,
                    settings.BUDGET_TIMEZONE,
                    quota.id,
                ],
            )
        rolled += 1
    return rolled


# --- jobs ---------------------------------------------------------------------------


def admit_one_by_one(*, entity_type, entity_id, job_id, resources, **_ignored):
    """Admits a job the way a scheduler without jobs does: one allocate per
    resource, undoing the first ones by hand when a later one is refused. Between
    the two the job holds one resource without the other, and every refused job
    leaves allocations and history behind."""
    from allocations.services import allocation_create, allocation_release

    held = []
    try:
        # Memory first: the resource that does not run out is held while the one
        # that does is refused.
        for resource, amount in sorted(resources.items(), reverse=True):
            held.append(
                allocation_create(
                    entity_type=entity_type,
                    entity_id=entity_id,
                    resource_type=resource,
                    job_id=job_id,
                    requested_value=amount,
                ).allocation
            )
            time.sleep(0.002)
    except QuotaExceeded:
        for allocation in held:
            allocation_release(allocation_id=allocation.id)
        raise
    return held


class _Admitted:
    def __init__(self, job_id):
        self.job_id = job_id


def admit_in_request_order(*, entity_type, entity_id, job_id, resources, **_ignored):
    """Charges each resource's path in the order the request lists them, all in one
    transaction: two jobs listing the same resources in opposite orders lock the
    organization rows in opposite orders and deadlock. (It takes the charges back
    before committing: only the locking matters here.)"""
    with transaction.atomic():
        for resource, amount in resources.items():
            leaf = Quota.objects.get(
                entity_type=entity_type, entity_id=entity_id, resource_type=resource
            )
            for quota in quota_path(quota=leaf):
                Quota.objects.filter(id=quota.id).update(
                    reserved=F("reserved") + amount
                )
            time.sleep(0.005)
        for resource, amount in resources.items():
            leaf = Quota.objects.get(
                entity_type=entity_type, entity_id=entity_id, resource_type=resource
            )
            Quota.objects.filter(id__in=leaf.path).update(
                reserved=F("reserved") - amount
            )
    return _Admitted(job_id)


def admit_check_then_insert(*, entity_type, entity_id, job_id, resources, **_ignored):
    """Looks for the job's allocations, then inserts its own when it saw none: two
    identical admissions at once both see none."""
    if Allocation.objects.filter(
        job_id=job_id, status=AllocationStatus.ACTIVE
    ).exists():
        return list(Allocation.objects.filter(job_id=job_id))
    time.sleep(0.01)
    with transaction.atomic():
        created = []
        for resource, amount in sorted(resources.items()):
            leaf = Quota.objects.get(
                entity_type=entity_type, entity_id=entity_id, resource_type=resource
            )
            created.append(
                Allocation.objects.create(
                    quota=leaf,
                    entity_type=entity_type,
                    entity_id=entity_id,
                    job_id=job_id,
                    resource_type=resource,
                    allocated_value=amount,
                )
            )
            for quota in quota_path(quota=leaf):
                Quota.objects.filter(id=quota.id).update(
                    reserved=F("reserved") + amount
                )
    return created


def release_job_check_then_write(*, job_id):
    """Reads the job's active allocations, then releases each unconditionally."""
    active = list(
        Allocation.objects.filter(job_id=job_id, status=AllocationStatus.ACTIVE)
    )
    if not active:
        raise AlreadyReleased("released")
    time.sleep(0.01)
    with transaction.atomic():
        for allocation in active:
            Allocation.objects.filter(id=allocation.id).update(
                status=AllocationStatus.RELEASED, released_at=timezone.now()
            )
            UsageHistory.objects.create(
                quota_id=allocation.quota_id,
                allocation_id=allocation.id,
                entity_type=allocation.entity_type,
                entity_id=allocation.entity_id,
                resource_type=allocation.resource_type,
                allocated_value=allocation.allocated_value,
                operation=HistoryOperation.RELEASE,
                job_id=allocation.job_id,
            )
    return active


# --- Events (DESIGN §7a, P4) ------------------------------------------------------


def alert_level_triggered(*, quota_id, thresholds=(80, 100)):
    """After an allocation committed, look at the quota's usage from outside the
    transaction and raise a crossing for each threshold it is at or above that has
    no crossing yet: the level-triggered check a cron job or a client would do."""
    from quotas.events.services import quota_event, record_events

    quota = Quota.objects.get(id=quota_id)
    percent = quota.used / quota.effective_limit * 100
    for threshold in thresholds:
        if percent < threshold:
            continue
        seen = quota_events_of(quota_id, "quota.threshold_crossed", threshold)
        if seen:
            continue
        time.sleep(0.005)  # the time between the look and the write
        with transaction.atomic():
            record_events(
                [
                    quota_event(
                        "quota.threshold_crossed",
                        quota,
                        threshold=threshold,
                        used=quota.used,
                        cap=quota.effective_limit,
                    )
                ]
            )


def quota_events_of(quota_id, event_type, threshold) -> int:
    from quotas.events.models import Event

    return Event.objects.filter(
        quota_id=quota_id, type=event_type, data__threshold=threshold
    ).count()


def record_event_numbered_at_insert(event: dict) -> None:
    """Writes an event whose public id is taken when it is written, as a plain
    sequence would give it, rather than at the commit: a transaction that commits
    later may then hold a smaller id than one a reader has already seen."""
    import simplejson
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events (id, type, occurred_at, quota_id, entity_type, "
            "entity_id, resource_type, path, data) VALUES "
            "(nextval('events_public_id_seq'), %s, now(), %s, %s, %s, %s, %s, "
            "%s::jsonb)",
            [
                event["type"],
                event["quota_id"],
                event["entity_type"],
                event["entity_id"],
                event["resource_type"],
                event["path"],
                simplejson.dumps(event["data"], use_decimal=True),
            ],
        )


def webhooks_deliver_without_claims() -> int:
    """Reads the due webhook deliveries without locking or leasing them, then sends
    each one and marks it delivered: two delivery processes running at once both
    send (most of) the same events."""
    from quotas.events.delivery import Claim, claim_send
    from quotas.events.models import DeliveryStatus, WebhookDelivery

    due = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=Now()
    ).select_related("endpoint", "event")
    sent = 0
    for row in list(due.order_by("next_attempt_at", "id")):
        claim = Claim(
            delivery_id=row.id,
            attempt=row.attempts + 1,
            endpoint_id=row.endpoint_id,
            url=row.endpoint.url,
            secret=row.endpoint.secret,
            event=row.event,
        )
        if claim_send(claim).delivered:
            WebhookDelivery.objects.filter(id=row.id).update(
                status=DeliveryStatus.DELIVERED,
                attempts=F("attempts") + 1,
                delivered_at=Now(),
            )
            sent += 1
    return sent
