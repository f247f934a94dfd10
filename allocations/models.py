import uuid
from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from quotas.models import AMOUNT_DIGITS, AMOUNT_PLACES, USED_DIGITS, EntityType, Quota


class AllocationStatus(models.TextChoices):
    ACTIVE = "active", "active"
    RELEASED = "released", "released"
    EXPIRED = "expired", "expired"


class Allocation(models.Model):
    """A job's hold on quota. Written only by the engine's functions in
    ``allocations/sql/`` (through ``allocations.services``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No database-level foreign key: released allocations outlive their quota
    # (DESIGN §3), and `quota_id` keeps naming it after it is gone.
    quota = models.ForeignKey(
        Quota,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # the composite indexes below lead with quota_id
        related_name="allocations",
    )
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    job_id = models.UUIDField()
    resource_type = models.CharField(max_length=50)
    allocated_value = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    status = models.CharField(
        max_length=10, choices=AllocationStatus.choices, default=AllocationStatus.ACTIVE
    )
    allocated_at = models.DateTimeField(db_default=Now(), editable=False)
    released_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    is_burst = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=1)
    metadata = models.JSONField(default=dict, blank=True)
    # Budgets (DESIGN §3a): what the job reported it consumed so far (cumulative),
    # its optional rate (units per hour) and when it started by the budget clock
    # (the charge of a settle without a report is rate × hours held).
    consumed_value = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    rate = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, null=True, blank=True
    )
    budget_started_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "allocations"
        constraints = [
            # Idempotency key: one active allocation per job and resource type.
            models.UniqueConstraint(
                fields=["job_id", "resource_type"],
                condition=Q(status="active"),
                name="allocations_one_active_per_job_resource",
            ),
            models.CheckConstraint(
                condition=Q(allocated_value__gt=0), name="allocations_value_positive"
            ),
            models.CheckConstraint(
                condition=Q(consumed_value__gte=0)
                & (Q(rate__isnull=True) | Q(rate__gt=0)),
                name="allocations_budget_values_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=AllocationStatus.values),
                name="allocations_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="active", released_at__isnull=True)
                | (~Q(status="active") & Q(released_at__isnull=False)),
                name="allocations_released_at_matches_status",
            ),
        ]
        indexes = [
            # GET /allocations, newest first, and its cursor.
            models.Index(fields=["-allocated_at", "-id"], name="alloc_allocated_idx"),
            # GET /quotas/{id}/allocations (active by default) and the P2 roll-up.
            models.Index(
                fields=["quota", "-allocated_at", "-id"],
                condition=Q(status="active"),
                name="alloc_quota_active_idx",
            ),
            models.Index(
                fields=["quota", "-allocated_at", "-id"], name="alloc_quota_idx"
            ),
            models.Index(fields=["job_id"], name="alloc_job_idx"),
            models.Index(
                fields=["entity_id", "-allocated_at"], name="alloc_entity_idx"
            ),
            # The lease sweeper: active rows whose lease runs out first.
            models.Index(
                fields=["expires_at"],
                condition=Q(status="active", expires_at__isnull=False),
                name="alloc_expiry_idx",
            ),
        ]

    def __str__(self):
        return (
            f"{self.job_id} {self.allocated_value} {self.resource_type} ({self.status})"
        )


class HistoryOperation(models.TextChoices):
    ALLOCATE = "allocate", "allocate"
    RELEASE = "release", "release"
    EXPIRE = "expire", "expire"
    CONSUME = "consume", "consume"


class UsageHistory(models.Model):
    """Append-only: one row per allocate, release and expiry. The entity's identity
    is copied in and there is no database-level foreign key, so the rows survive
    the deletion of their quota."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    quota = models.ForeignKey(
        Quota,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # history_quota_idx leads with quota_id
        related_name="history",
    )
    allocation = models.ForeignKey(
        Allocation,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # no query reads history by allocation; one index less to write
        null=True,
        related_name="history",
    )
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    resource_type = models.CharField(max_length=50)
    allocated_value = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    operation = models.CharField(max_length=10, choices=HistoryOperation.choices)
    # What this operation charged to the budget (consume, release and expire of a
    # time-based allocation); 0 otherwise. Every period's consumption can be
    # rebuilt from these alone.
    consumed_delta = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    job_id = models.UUIDField(null=True)
    timestamp = models.DateTimeField(db_default=Now(), editable=False)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "usage_history"
        verbose_name_plural = "usage history"
        constraints = [
            models.CheckConstraint(
                condition=Q(operation__in=HistoryOperation.values),
                name="usage_history_operation_valid",
            ),
        ]
        indexes = [
            # GET /quotas/{id}/history: newest first, with since/until and paging.
            models.Index(
                fields=["quota", "-timestamp", "-id"], name="history_quota_idx"
            ),
        ]

    def __str__(self):
        return f"{self.operation} {self.allocated_value} {self.resource_type}"


class UsageRepair(models.Model):
    """One correction of a quota's ``used`` by ``manage.py reconcile_usage --fix``.

    Append-only. The quota's identity is copied in and there is no database-level
    foreign key, so the record of a repair outlives the quota. ``run_id`` groups the
    repairs of one command run."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run_id = models.UUIDField()
    quota = models.ForeignKey(
        Quota,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # repair_quota_idx leads with quota_id
        related_name="usage_repairs",
    )
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    resource_type = models.CharField(max_length=50)
    # What `used` held when the row was locked, and the subtree's sum of active
    # allocations computed under that lock; `used` was set to `actual`.
    stored = models.DecimalField(max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES)
    actual = models.DecimalField(max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES)
    delta = models.DecimalField(max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES)
    # The two forms of P2 (DESIGN §4): what was held and consumed, as stored and as
    # recomputed; `used` is their sum.
    stored_reserved = models.DecimalField(
        max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    actual_reserved = models.DecimalField(
        max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    stored_consumed = models.DecimalField(
        max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    actual_consumed = models.DecimalField(
        max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    repaired_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "usage_repairs"
        constraints = [
            models.CheckConstraint(
                condition=Q(delta=F("stored") - F("actual")),
                name="usage_repairs_delta_is_stored_minus_actual",
            ),
            models.CheckConstraint(
                condition=Q(actual__gte=0), name="usage_repairs_actual_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["run_id"], name="repair_run_idx"),
            models.Index(fields=["quota", "-repaired_at"], name="repair_quota_idx"),
        ]

    def __str__(self):
        return f"{self.entity_type} {self.entity_id}: {self.stored} → {self.actual}"
