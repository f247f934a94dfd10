import hashlib
import secrets
import uuid
from datetime import timedelta
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from quotas import rules

# Amounts: at most 16 integer digits and 4 decimal places (DESIGN §3).
AMOUNT_DIGITS = 20
AMOUNT_PLACES = 4
# `used` is a roll-up of a subtree; it is bounded by the caps, which the overcommit
# ratio can take past 16 integer digits, so it gets room for that.
USED_DIGITS = 24


class ResourceType(models.Model):
    class Kind(models.TextChoices):
        CONCURRENT = "concurrent", "concurrent (held while a job runs)"
        TIME_BASED = "time_based", "time based (consumed over time)"

    slug = models.SlugField(
        primary_key=True,
        max_length=50,
        help_text="Lower-case identifier used in the API, e.g. gpu_hours.",
    )
    name = models.CharField(max_length=100)
    unit = models.CharField(max_length=32, help_text="e.g. GPU-hours, GPUs, GiB.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "resource_types"
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(slug__regex=r"^[a-z0-9][a-z0-9_]*$"),
                name="resource_types_slug_lowercase",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["concurrent", "time_based"]),
                name="resource_types_kind_valid",
            ),
        ]

    def __str__(self):
        return self.slug


class EntityType(models.TextChoices):
    ORGANIZATION = "organization", "organization"
    TEAM = "team", "team"
    USER = "user", "user"


class BudgetPeriod(models.TextChoices):
    """How often a budget (a quota on a time-based resource) starts afresh: calendar
    periods in BUDGET_TIMEZONE; ``none`` is a lifetime budget (DESIGN §3a)."""

    NONE = "none", "none (lifetime)"
    DAY = "day", "day"
    WEEK = "week", "week (ISO, from Monday)"
    MONTH = "month", "month"
    QUARTER = "quarter", "quarter"
    YEAR = "year", "year"


class Quota(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    resource_type = models.ForeignKey(
        ResourceType,
        on_delete=models.PROTECT,
        db_column="resource_type",
        related_name="quotas",
    )
    # PROTECT: a quota with children cannot be deleted (the service says so first).
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
    )
    # Distance from the root; fixed at creation because parent_id never changes.
    # Locks are taken in (depth DESC, id) order: see quotas/locking.py.
    depth = models.PositiveSmallIntegerField(default=0, editable=False)
    # The quota's id followed by its ancestors' ids, leaf first: the allocation
    # path, read with the quota in one index lookup. Fixed at creation, like
    # parent_id and depth (a database check keeps path[1] = id and its length).
    path = ArrayField(models.UUIDField(), default=list, editable=False)
    # The admin's tree order, root first, siblings by entity id; filled by the
    # database on insert (quotas/sql/hq_tree_key.sql), never changed.
    tree_key = ArrayField(models.TextField(), default=list, editable=False)
    limit_value = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    soft_limit = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, null=True, blank=True
    )
    burst_limit = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, null=True, blank=True
    )
    overcommit_ratio = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("1.00")
    )
    # Budgets (DESIGN §3a). `period` and `carryover_limit` are set by admins (on
    # time-based resources only); the rest is kept by the engine. A period's
    # bounds are null for `none`.
    period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.NONE
    )
    carryover_limit = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, default=Decimal("0")
    )
    period_start = models.DateTimeField(null=True, blank=True, editable=False)
    period_end = models.DateTimeField(null=True, blank=True, editable=False)
    # What the subtree's active allocations hold and have not yet consumed, and
    # what it consumed in the current period. A concurrent resource never
    # consumes: everything it holds is reserved.
    reserved = models.DecimalField(
        max_digits=USED_DIGITS,
        decimal_places=AMOUNT_PLACES,
        default=Decimal("0"),
        editable=False,
    )
    consumed = models.DecimalField(
        max_digits=USED_DIGITS,
        decimal_places=AMOUNT_PLACES,
        default=Decimal("0"),
        editable=False,
    )
    # Unused budget brought into this period (≤ carryover_limit); it adds to the
    # limits of the period: effective = (limit_value + carried_over) × ratio.
    carried_over = models.DecimalField(
        max_digits=AMOUNT_DIGITS,
        decimal_places=AMOUNT_PLACES,
        default=Decimal("0"),
        editable=False,
    )
    # used = reserved + consumed, kept by PostgreSQL itself.
    used = models.GeneratedField(
        expression=F("reserved") + F("consumed"),
        output_field=models.DecimalField(
            max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES
        ),
        db_persist=True,
        editable=False,
    )
    # Alerts (DESIGN §7a): percents of the cap to alert at (null: ALERT_THRESHOLDS);
    # the highest that fired and has not re-armed, and whether the soft limit did.
    alert_thresholds = ArrayField(
        models.DecimalField(max_digits=6, decimal_places=2), null=True, blank=True
    )
    alerted_level = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal("0"), editable=False
    )
    soft_alerted = models.BooleanField(default=False, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "quotas"
        constraints = [
            models.UniqueConstraint(
                fields=["entity_type", "entity_id", "resource_type"],
                name="quotas_one_per_entity_and_resource",
            ),
            models.CheckConstraint(
                condition=Q(entity_type__in=EntityType.values),
                name="quotas_entity_type_valid",
            ),
            models.CheckConstraint(
                condition=~Q(entity_id=""), name="quotas_entity_id_not_empty"
            ),
            models.CheckConstraint(
                condition=Q(limit_value__gte=0), name="quotas_limit_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(soft_limit__isnull=True)
                | Q(soft_limit__gte=0, soft_limit__lte=F("limit_value")),
                name="quotas_soft_limit_within_limit",
            ),
            models.CheckConstraint(
                condition=Q(burst_limit__isnull=True)
                | Q(burst_limit__gte=F("limit_value")),
                name="quotas_burst_limit_above_limit",
            ),
            models.CheckConstraint(
                condition=Q(
                    overcommit_ratio__gte=1, overcommit_ratio__lte=Decimal("999.99")
                ),
                name="quotas_overcommit_ratio_range",
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0, consumed__gte=0, carried_over__gte=0),
                name="quotas_budget_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(carryover_limit__gte=0)
                & Q(carryover_limit__lte=F("limit_value")),
                name="quotas_carryover_within_limit",
            ),
            models.CheckConstraint(
                condition=Q(period__in=BudgetPeriod.values),
                name="quotas_period_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    period=BudgetPeriod.NONE,
                    period_start__isnull=True,
                    period_end__isnull=True,
                )
                | (~Q(period=BudgetPeriod.NONE) & Q(period_end__gt=F("period_start"))),
                name="quotas_period_bounds_match_period",
            ),
            models.CheckConstraint(
                condition=Q(parent__isnull=True, depth=0)
                | Q(parent__isnull=False, depth__gt=0),
                name="quotas_depth_matches_parent",
            ),
        ]
        indexes = [
            # Newest-first listing and its cursor.
            models.Index(fields=["-created_at", "-id"], name="quotas_created_idx"),
            # Filter by entity_id alone (the unique constraint leads with
            # entity_type).
            models.Index(fields=["entity_id"], name="quotas_entity_id_idx"),
            # Budgets whose period has ended (roll_budgets): only periodic ones.
            models.Index(
                fields=["period_end"],
                condition=Q(period_end__isnull=False),
                name="quotas_period_end_idx",
            ),
            # API key scopes: path && the scope entity's quota ids
            # (quotas/access/scoping.py).
            GinIndex(fields=["path"], name="quotas_path_gin"),
        ]

    def __str__(self):
        return f"{self.entity_type}:{self.entity_id} ({self.resource_type_id})"

    @property
    def effective_limit(self) -> Decimal:
        """What may be used in the current period (the carry-over included)."""
        return rules.effective_limit(
            self.limit_value, self.overcommit_ratio, self.carried_over
        )

    @property
    def promised_limit(self) -> Decimal:
        """``limit_value × overcommit_ratio``: what the hierarchy rules hold the
        children's limits to (a carry-over promises nothing to them)."""
        return rules.effective_limit(self.limit_value, self.overcommit_ratio)

    @property
    def available(self) -> Decimal:
        return rules.available(used=self.used, cap=self.effective_limit)

    @property
    def utilization_percent(self) -> Decimal:
        return rules.utilization_percent(used=self.used, effective=self.effective_limit)


class ApiKeyRole(models.TextChoices):
    ADMIN = "admin", "admin (everything)"
    SCHEDULER = "scheduler", "scheduler (read, check, allocate, release)"
    VIEWER = "viewer", "viewer (read only)"


KEY_PREFIX = "hq"


class ApiKey(models.Model):
    """A credential for the API. Only a SHA-256 of the key is stored: keys carry 256
    bits of randomness, so a fast hash is as safe as a slow one and costs far less
    than the request it guards."""

    name = models.CharField(max_length=100)
    # Public lookup part of the key, so verifying costs one indexed read.
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    role = models.CharField(max_length=12, choices=ApiKeyRole.choices)
    # Optional entity the key is confined to: an organization's or a team's subtree
    # across every resource type (quotas/access/scoping.py). Both set or both empty.
    scope_entity_type = models.CharField(
        max_length=12, choices=EntityType.choices, null=True, blank=True
    )
    scope_entity_id = models.CharField(max_length=255, null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Writes this key may make (e.g. "2000/s", "off"); empty: its role's default
    # (quotas/access/throttling.py).
    write_rate = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="Writes this key may make, e.g. 2000/s or 100000/min, or off; "
        "empty for its role's default.",
    )

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=ApiKeyRole.values), name="api_keys_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(
                    scope_entity_type__isnull=True, scope_entity_id__isnull=True
                )
                | Q(
                    scope_entity_type__in=EntityType.values,
                    scope_entity_id__isnull=False,
                ),
                name="api_keys_scope_is_an_entity",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.role})"

    @property
    def scope(self):
        """The entity the key is confined to (a ``quotas.access.scoping.Scope``), or
        None for an unscoped key."""
        from quotas.access.scoping import Scope

        if self.scope_entity_type is None:
            return None
        return Scope(self.scope_entity_type, self.scope_entity_id)

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @staticmethod
    def generate() -> tuple[str, str]:
        """Return (prefix, raw key) for a new key; the raw key is shown once."""
        prefix = secrets.token_hex(6)
        return prefix, f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"


class ClockTimestamp(models.Func):
    """PostgreSQL's ``clock_timestamp()``: the database clock when the row is
    written, not when its transaction began (``Now()``)."""

    function = "clock_timestamp"
    template = "%(function)s()"
    output_field = models.DateTimeField()


class ChangeAction(models.TextChoices):
    CREATE = "create", "create"
    UPDATE = "update", "update"
    DELETE = "delete", "delete"


class ActorType(models.TextChoices):
    API_KEY = "api_key", "API key"
    STAFF_USER = "staff_user", "staff user"
    SYSTEM = "system", "system"


# The longest reason a change may carry (X-Change-Reason, the admin's reason field).
REASON_MAX_LENGTH = 1000


class QuotaChange(models.Model):
    """The audit trail: one append-only row per quota create, update and delete,
    written by the quota services in the transaction that makes the change.

    Like usage history, it has no database-level foreign key and copies the quota's
    identity in, so the rows survive the quota's deletion. A database trigger
    (migration 0004) refuses to update or delete them.
    """

    # A sequence, not a UUID: it breaks ties in created_at in the order the rows
    # were written.
    id = models.BigAutoField(primary_key=True)
    quota = models.ForeignKey(
        Quota,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # quota_changes_quota_idx leads with quota_id
        related_name="changes",
    )
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    resource_type = models.CharField(max_length=50)
    action = models.CharField(max_length=6, choices=ChangeAction.choices)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    # The API key's id or the staff user's id; empty for the system.
    actor_id = models.CharField(max_length=64, blank=True)
    # The API key's name, the staff user's username, or the command's name.
    actor_name = models.CharField(max_length=255, blank=True)
    # Field → [old, new]; decimals as exact strings, null for "none".
    changes = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=REASON_MAX_LENGTH, blank=True)
    # The statement's clock, not the transaction's: changes to one quota are
    # serialized by its row lock, and a transaction that began first but waited for
    # the lock must still sort after the change it waited for.
    created_at = models.DateTimeField(db_default=ClockTimestamp(), editable=False)

    class Meta:
        db_table = "quota_changes"
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=ChangeAction.values),
                name="quota_changes_action_valid",
            ),
            models.CheckConstraint(
                condition=Q(actor_type__in=ActorType.values),
                name="quota_changes_actor_type_valid",
            ),
        ]
        indexes = [
            # GET /quotas/{id}/audit: newest first, and its cursor.
            models.Index(
                fields=["quota", "-created_at", "-id"], name="quota_changes_quota_idx"
            ),
        ]

    def __str__(self):
        return f"{self.action} {self.entity_type}:{self.entity_id} by {self.actor_name}"


class BudgetClock(models.Model):
    """The budget clock's offset from the database's clock: one row at most.

    Budgets take "now" from ``hq_now()`` (quotas/sql/hq_now.sql) = ``now()`` plus
    this offset, so tests and rehearsals can move every process across a period
    boundary at once (``manage.py budget_clock``, refused unless
    BUDGET_CLOCK_ADJUSTABLE=true). Leases keep the real clock.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    offset_by = models.DurationField(default=timedelta(0))
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "budget_clock"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="budget_clock_one_row"),
        ]

    def __str__(self):
        return f"budget clock offset {self.offset_by}"


class ClosedPeriod(models.Model):
    """One budget period that has ended, as it stood when it closed (DESIGN §3a).

    Written by the engine's rollover (allocations/sql/hq_roll.sql) under the quota's
    row lock, exactly once per quota and period (the unique constraint is the
    backstop). Append-only; the quota's identity is copied in and there is no
    database-level foreign key, so the record outlives the quota.
    """

    id = models.BigAutoField(primary_key=True)
    quota = models.ForeignKey(
        Quota,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # budget_periods_quota_idx leads with quota_id
        related_name="closed_periods",
    )
    entity_type = models.CharField(max_length=12, choices=EntityType.choices)
    entity_id = models.CharField(max_length=255)
    resource_type = models.CharField(max_length=50)
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    limit_value = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    carried_over = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    consumed = models.DecimalField(max_digits=USED_DIGITS, decimal_places=AMOUNT_PLACES)
    # What the period handed on to the next one.
    carried_forward = models.DecimalField(
        max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES
    )
    closed_at = models.DateTimeField(db_default=ClockTimestamp(), editable=False)

    class Meta:
        db_table = "budget_periods"
        constraints = [
            models.UniqueConstraint(
                fields=["quota", "period_start"], name="budget_periods_once"
            ),
        ]
        indexes = [
            # GET /quotas/{id}/periods, newest first.
            models.Index(
                fields=["quota", "-period_start"], name="budget_periods_quota_idx"
            ),
        ]

    def __str__(self):
        return f"{self.entity_type}:{self.entity_id} {self.period_start:%Y-%m-%d}"
