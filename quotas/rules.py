"""The domain rules of DESIGN §3, each written once, as pure functions.

Nothing here reads or writes the database: callers pass the values a rule needs and
get an answer, or a list of ``Breach`` es that say which field breaks which rule.
The services (``quotas.services``), the importer (``quotas.importing``), the admin,
the console and ``quota_tree`` all ask these functions, so a rule has one meaning
everywhere. The allocation engine applies the same arithmetic in SQL
(``allocations/sql/hq_cap.sql``, ``hq_fits.sql``); ``tests/test_rules.py`` holds
the two to each other on one table of cases.

The ORM filters at the end (``at_hard_limit_q`` …) are the same predicates as
database expressions, for lists that filter by them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from django.db.models import DateTimeField, DecimalField, F, Func, Q, Value
from django.db.models.functions import NullIf

from horizon_quota.amounts import amount_text

ZERO = Decimal(0)

# The entity type a parent must have, by the child's entity type (the values of
# quotas.models.EntityType; this module imports no model).
PARENT_ENTITY_TYPE = {"team": "organization", "user": "team"}


def with_article(entity_type: str) -> str:
    """'an organization', 'a team', 'a user'."""
    entity_type = str(entity_type)
    return f"{'an' if entity_type == 'organization' else 'a'} {entity_type}"


# --- limits and room --------------------------------------------------------------


def effective_limit(
    limit_value: Decimal, overcommit_ratio: Decimal, carried_over: Decimal = ZERO
) -> Decimal:
    """What may be used at a level: ``(limit_value + carried_over) ×
    overcommit_ratio``. A budget's carry-over adds to the limits of its period; the
    hierarchy rules leave it out (it promises nothing to the children)."""
    return (limit_value + carried_over) * overcommit_ratio


def cap(
    *,
    limit_value: Decimal,
    burst_limit: Decimal | None,
    overcommit_ratio: Decimal,
    allow_burst: bool,
    carried_over: Decimal = ZERO,
) -> Decimal:
    """A level's cap for one request: the effective limit, or the burst limit (plus
    the carry-over) times the overcommit ratio when the request allows bursting and
    the level has one."""
    base = burst_limit if allow_burst and burst_limit is not None else limit_value
    return (base + carried_over) * overcommit_ratio


def fits(*, used: Decimal, requested: Decimal, cap: Decimal) -> bool:
    """The one admission predicate (check and allocate alike)."""
    return used + requested <= cap


def available(*, used: Decimal, cap: Decimal) -> Decimal:
    return max(ZERO, cap - used)


def utilization_percent(*, used: Decimal, effective: Decimal) -> Decimal:
    """``used / effective × 100`` to two places, uncapped; 0 when nothing can be
    promised (an effective limit of 0)."""
    if not effective:
        return ZERO.quantize(Decimal("0.01"))
    return (used / effective * 100).quantize(Decimal("0.01"))


# --- usage state ------------------------------------------------------------------


class UsageState(StrEnum):
    """The worst thing true of a level's usage, in increasing order."""

    OK = "ok"
    SOFT = "soft"  # above the soft limit
    OVERCOMMITTED = "overcommitted"  # above limit_value, inside the overcommit
    FULL = "full"  # at the hard limit: used = effective limit, no room left
    OVER = "over"  # above the hard limit (burst, or a limit lowered with force)


def above_soft_limit(*, used: Decimal, soft_limit: Decimal | None) -> bool:
    return soft_limit is not None and used > soft_limit


def at_hard_limit(*, used: Decimal, effective: Decimal) -> bool:
    """No room left: ``used ≥ effective limit``. The one meaning of "at hard
    limit", in filters, bars, marks and trees."""
    return used >= effective


def over_hard_limit(*, used: Decimal, effective: Decimal) -> bool:
    return used > effective


def usage_state(
    *,
    used: Decimal,
    limit_value: Decimal,
    soft_limit: Decimal | None,
    overcommit_ratio: Decimal,
) -> UsageState:
    effective = effective_limit(limit_value, overcommit_ratio)
    if over_hard_limit(used=used, effective=effective):
        return UsageState.OVER
    if at_hard_limit(used=used, effective=effective):
        return UsageState.FULL
    if used > limit_value:
        return UsageState.OVERCOMMITTED
    if above_soft_limit(used=used, soft_limit=soft_limit):
        return UsageState.SOFT
    return UsageState.OK


def quota_usage_state(quota) -> UsageState:
    """``usage_state`` of anything with a quota's fields."""
    return usage_state(
        used=quota.used,
        limit_value=quota.limit_value,
        soft_limit=quota.soft_limit,
        overcommit_ratio=quota.overcommit_ratio,
    )


# --- hierarchy rules (a breach is a 400) ------------------------------------------


@dataclass(frozen=True)
class Breach:
    """One broken rule: the field at fault and what is wrong."""

    field: str
    message: str


def own_limit_breaches(
    *,
    limit_value: Decimal,
    soft_limit: Decimal | None,
    burst_limit: Decimal | None,
) -> list[Breach]:
    """``soft_limit ≤ limit_value ≤ burst_limit``."""
    breaches = []
    if soft_limit is not None and soft_limit > limit_value:
        breaches.append(
            Breach(
                "soft_limit",
                f"soft_limit ({amount_text(soft_limit)}) must not exceed "
                f"limit_value ({amount_text(limit_value)}).",
            )
        )
    if burst_limit is not None and burst_limit < limit_value:
        breaches.append(
            Breach(
                "burst_limit",
                f"burst_limit ({amount_text(burst_limit)}) must be at least "
                f"limit_value ({amount_text(limit_value)}).",
            )
        )
    return breaches


def parent_type_breach(*, entity_type: str, parent_type: str | None) -> Breach | None:
    """A team's parent is an organization, a user's parent is a team; a quota
    without a parent may be of any type."""
    if parent_type is None:
        return None
    expected = PARENT_ENTITY_TYPE.get(entity_type)
    if expected is not None and parent_type == expected:
        return None
    reason = (
        f"its parent must be {with_article(expected)}"
        if expected
        else "an organization has no parent"
    )
    return Breach(
        "parent_id",
        f"{with_article(entity_type).capitalize()} cannot have "
        f"{with_article(parent_type)} parent; {reason}.",
    )


def resource_type_breach(
    *, resource_type: str, parent_resource_type: str
) -> Breach | None:
    """A child has its parent's resource type."""
    if resource_type == parent_resource_type:
        return None
    return Breach(
        "resource_type",
        f"The parent's resource_type is {parent_resource_type}, not {resource_type}.",
    )


def child_limit_breach(
    *, limit_value: Decimal, parent_limit_value: Decimal
) -> Breach | None:
    """A child's ``limit_value`` ≤ its parent's."""
    if limit_value <= parent_limit_value:
        return None
    return Breach(
        "limit_value",
        f"limit_value ({amount_text(limit_value)}) exceeds the parent's limit_value "
        f"({amount_text(parent_limit_value)}).",
    )


def children_sum_breach(
    *, children_total: Decimal, parent_effective: Decimal
) -> Breach | None:
    """The children's ``limit_value`` s sum to ≤ the parent's effective limit
    (overcommit lets children be promised more than the parent holds)."""
    if children_total <= parent_effective:
        return None
    return Breach(
        "limit_value",
        f"The children's limits sum to {amount_text(children_total)}, above the "
        f"parent's effective limit ({amount_text(parent_effective)}).",
    )


def family_breaches(
    *,
    limit_value: Decimal,
    overcommit_ratio: Decimal,
    largest_child: Decimal | None,
    children_total: Decimal,
) -> list[Breach]:
    """A parent's new limits must still hold its children (the rules above, seen
    from the parent's side)."""
    breaches = []
    if largest_child is not None and largest_child > limit_value:
        breaches.append(
            Breach(
                "limit_value",
                f"limit_value ({amount_text(limit_value)}) is below a child's "
                f"limit_value ({amount_text(largest_child)}).",
            )
        )
    breach = children_sum_breach(
        children_total=children_total,
        parent_effective=effective_limit(limit_value, overcommit_ratio),
    )
    if breach is not None:
        breaches.append(breach)
    return breaches


def budget_breaches(
    *,
    time_based: bool,
    period: str,
    carryover_limit: Decimal,
    limit_value: Decimal,
) -> list[Breach]:
    """Budgets (DESIGN §3a): a period and a carry-over belong to time-based
    resources (a concurrent one is held, not consumed); what may carry over is at
    most the limit itself."""
    breaches = []
    if not time_based and period != "none":
        breaches.append(
            Breach(
                "period",
                f"A concurrent resource has no budget period (got {period}); only "
                "time-based resources are consumed per period.",
            )
        )
    if not time_based and carryover_limit > 0:
        breaches.append(
            Breach(
                "carryover_limit",
                "A concurrent resource carries nothing over: carryover_limit must "
                "be 0.",
            )
        )
    elif carryover_limit > limit_value:
        breaches.append(
            Breach(
                "carryover_limit",
                f"carryover_limit ({amount_text(carryover_limit)}) must not exceed "
                f"limit_value ({amount_text(limit_value)}).",
            )
        )
    return breaches


# --- alerts (DESIGN §7a) ------------------------------------------------------------

# A fired threshold re-arms once usage falls this many points (percent of the cap)
# below it; the soft limit, once usage falls this share of the cap below it. The
# engine applies the same rule (quotas/events/sql/hq_alerts.sql).
REARM_POINTS = Decimal(5)
MAX_ALERT_THRESHOLDS = 10
MAX_ALERT_THRESHOLD = Decimal(1000)


def alert_threshold_breaches(thresholds: list[Decimal] | None) -> list[Breach]:
    """A quota's own thresholds: percents of its cap above 0 and at most 1000, each
    once, at most ten (null: the ALERT_THRESHOLDS default; empty: no alerts)."""
    if thresholds is None:
        return []
    if len(thresholds) > MAX_ALERT_THRESHOLDS:
        return [
            Breach(
                "alert_thresholds",
                f"At most {MAX_ALERT_THRESHOLDS} thresholds (got {len(thresholds)}).",
            )
        ]
    breaches = []
    for value in thresholds:
        if not ZERO < value <= MAX_ALERT_THRESHOLD:
            breaches.append(
                Breach(
                    "alert_thresholds",
                    f"A threshold is a percent of the cap above 0 and at most "
                    f"{amount_text(MAX_ALERT_THRESHOLD)} (got {amount_text(value)}).",
                )
            )
    if len(set(thresholds)) != len(thresholds):
        breaches.append(Breach("alert_thresholds", "Each threshold only once."))
    return breaches


@dataclass(frozen=True)
class AlertEdges:
    """What one change of usage fires: thresholds crossed upwards, thresholds
    re-armed (back under), and the alerted level afterwards."""

    crossed: tuple[Decimal, ...]
    back_under: tuple[Decimal, ...]
    alerted_level: Decimal


def alert_edges(
    *, thresholds: list[Decimal], alerted_level: Decimal, percent: Decimal
) -> AlertEdges:
    """Edge-triggered thresholds. ``alerted_level`` is the highest threshold that
    fired and has not re-armed; a threshold above it that ``percent`` (of the cap)
    has reached fires once; one at or below it re-arms (back under) once
    ``percent`` is REARM_POINTS below it."""
    crossed, back_under, level = [], [], ZERO
    for threshold in thresholds:
        if threshold > alerted_level and percent >= threshold:
            crossed.append(threshold)
            level = max(level, threshold)
        elif threshold <= alerted_level and percent < threshold - REARM_POINTS:
            back_under.append(threshold)
        elif threshold <= alerted_level:
            level = max(level, threshold)
    return AlertEdges(tuple(crossed), tuple(back_under), level)


def carry_forward(
    *,
    carryover_limit: Decimal,
    limit_value: Decimal,
    carried_over: Decimal,
    consumed: Decimal,
) -> Decimal:
    """What a closing period hands on to the next: its unused budget, at most
    ``carryover_limit`` (the engine computes the same in hq_closed_periods.sql)."""
    return min(carryover_limit, max(ZERO, limit_value + carried_over - consumed))


def consumption_charge(
    *, allocated: Decimal, reported: Decimal, total: Decimal
) -> tuple[Decimal, Decimal]:
    """A new cumulative report ``total`` of an allocation of ``allocated`` that had
    reported ``reported``: (what is charged as consumed, what leaves the
    reservation). An overrun is charged all the same (hq_consume.sql)."""
    delta = total - reported
    return delta, min(delta, max(ZERO, allocated - reported))


def projected_exhaustion(
    *,
    used: Decimal,
    cap: Decimal,
    consumed: Decimal,
    since: datetime,
    until: datetime | None,
    now: datetime,
) -> datetime | None:
    """When ``used`` reaches ``cap`` if consumption goes on at its average rate
    since ``since`` (the period's start); None when it will not before ``until``
    (the period's end) or nothing is being consumed. Already at the cap: now."""
    if used >= cap:
        return now
    elapsed = (now - since).total_seconds()
    if consumed <= 0 or elapsed <= 0:
        return None
    rate = consumed / Decimal(elapsed)  # units per second
    # To the second: a projection is not more precise than that.
    moment = (now + timedelta(seconds=float((cap - used) / rate))).replace(
        microsecond=0
    )
    return moment if until is None or moment < until else None


def lowering_needs_force(
    *, old_effective: Decimal, new_effective: Decimal, used: Decimal
) -> bool:
    """Lowering the effective limit below current usage needs ``force``. Only a
    lowering: after a forced one, raising the limit part of the way back must not
    need it again."""
    return new_effective < old_effective and new_effective < used


def below_usage_message(*, new_effective: Decimal, used: Decimal) -> str:
    return (
        f"The new effective limit ({amount_text(new_effective)}) is below current "
        f"usage ({amount_text(used)})"
    )


# --- the same predicates as ORM filters -------------------------------------------


def effective_limit_expression():
    """``effective_limit`` in SQL: the carry-over of a budget's period included."""
    return (F("limit_value") + F("carried_over")) * F("overcommit_ratio")


def near_hard_limit_q(percent: Decimal) -> Q:
    """Something is used and at least ``percent`` of the effective limit is (the
    dashboard's "at or near the hard limit"; every quota at its hard limit that
    uses anything is near it)."""
    return Q(used__gt=0, used__gte=effective_limit_expression() * (percent / 100))


class _Seconds(Func):
    """``a - b`` in seconds (two timestamps)."""

    arg_joiner = " - "
    template = "extract(epoch from (%(expressions)s))"
    output_field = DecimalField()


def projected_to_run_out_q(now: datetime) -> Q:
    """``projected_exhaustion`` falls inside the current period, as a predicate: a
    budget with a calendar period that is at its cap already, or whose average
    consumption since the period's start takes it past the cap before the period
    ends (``used + consumed × remaining / elapsed > cap``)."""
    at = Value(now, output_field=DateTimeField())
    # NULLIF: PostgreSQL may compute this before checking period_start < now.
    elapsed = NullIf(_Seconds(at, F("period_start")), Value(0))
    remaining = _Seconds(F("period_end"), at)
    return Q(period_end__isnull=False, period_start__lt=now) & (
        Q(used__gte=effective_limit_expression())
        | Q(
            consumed__gt=0,
            used__gt=effective_limit_expression() - F("consumed") * remaining / elapsed,
        )
    )


def above_soft_limit_q() -> Q:
    return Q(soft_limit__isnull=False, used__gt=F("soft_limit"))


def at_hard_limit_q() -> Q:
    return Q(used__gte=effective_limit_expression())
