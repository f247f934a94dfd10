"""Helpers for budget tests: a budget tree and the budget clock (DESIGN §3a).

Tests move the budget clock (``quotas.budgets.budget_clock_move``) instead of
sleeping across period boundaries.
"""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from allocations import services
from allocations.selectors import usage_drift
from quotas.budgets import budget_clock_move, budget_now
from quotas.models import Quota
from quotas.services import quota_create

D = Decimal


def set_clock(moment: str | datetime) -> None:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    budget_clock_move(to=moment)


def advance(**delta) -> None:
    budget_clock_move(advance=timedelta(**delta))


def now() -> datetime:
    return budget_now().astimezone(UTC)


def tree(
    *,
    resource="gpu_hours",
    limits=("200", "500", "1000"),
    periods=("month", "month", "month"),
    carryover=("0", "0", "0"),
    names=("user", "team", "org"),
) -> list[Quota]:
    """organization → team → user budgets, through the service (period bounds
    from the budget clock). Every tuple, and the result, is leaf first, like a
    path: (user, team, organization)."""
    quotas = []
    parent = None
    for entity_type, entity_id, limit, period, carry in reversed(
        list(
            zip(
                ("user", "team", "organization"),
                names,
                limits,
                periods,
                carryover,
                strict=True,
            )
        )
    ):
        parent = quota_create(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type=resource,
            parent_id=parent.id if parent else None,
            limit_value=D(limit),
            period=period,
            carryover_limit=D(carry),
        )
        quotas.append(parent)
    return list(reversed(quotas))


def allocate(entity_id="user", value="32", resource="gpu_hours", **kwargs):
    return services.allocation_create(
        entity_type="user",
        entity_id=entity_id,
        resource_type=resource,
        job_id=kwargs.pop("job_id", uuid.uuid4()),
        requested_value=D(value),
        **kwargs,
    ).allocation


def books(quota: Quota) -> tuple[Decimal, Decimal, Decimal]:
    """(reserved, consumed, carried_over) as stored now."""
    quota.refresh_from_db()
    return quota.reserved, quota.consumed, quota.carried_over


def assert_books_exact() -> None:
    """P2 in both forms, over the whole database."""
    assert usage_drift() == []
