"""The allocation engine's SQL: where it lives and how it is called.

Every write to ``quotas.reserved`` and ``quotas.consumed`` (``used`` is their sum)
happens inside one of the PL/pgSQL functions in ``allocations/sql/`` (one readable
file per function, the one source of truth; see ``horizon_quota/sqlfunctions.py``
for how migrations install them with ``InstallEngine``), called from
``allocations.services`` as a single statement. Outside an atomic block that
statement is its own transaction: PostgreSQL commits it as it ends, with no extra
round trip, so the rows near the root stay locked only from their update to that
commit. The lock order they follow is documented in ``quotas/locking.py``.
"""

import json
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings

from horizon_quota.sqlfunctions import InstallSqlFunctions, SqlFunctions
from quotas.access.throttling import counted_engine_call

ENGINE = SqlFunctions(
    directory=Path(__file__).resolve().parent / "sql",
    # Creation order: each function after the ones it calls.
    names=(
        "hq_cap",
        "hq_fits",
        "hq_in_scope",
        "hq_deadline",
        "hq_lock_budget",
        "hq_allocation_events",
        "hq_closed_periods",
        "hq_rolled",
        "hq_roll",
        "hq_charge",
        "hq_charge_path",
        "hq_level",
        "hq_levels",
        "hq_check",
        "hq_allocate",
        "hq_settle_value",
        "hq_release",
        "hq_consume",
        "hq_job_levels",
        "hq_job_clash",
        "hq_admit",
        "hq_check_job",
        "hq_release_job",
    ),
)
# Kept for callers that read the list or the files directly.
SQL_DIR = ENGINE.directory
FUNCTIONS = ENGINE.names


class InstallEngine(InstallSqlFunctions):
    """Migration operation: (re)install the engine's functions from allocations/sql."""

    functions = ENGINE


class Outcome(StrEnum):
    """What an engine function answers in its ``outcome`` member."""

    CHECKED = "checked"
    GRANTED = "granted"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    STALE = "stale"
    DENIED = "denied"
    NO_QUOTA = "no_quota"
    RELEASED = "released"
    NOT_FOUND = "not_found"
    NOT_EXPIRED = "not_expired"
    ALREADY_RELEASED = "already_released"
    CONSUMED = "consumed"
    UNCHANGED = "unchanged"
    BELOW_REPORTED = "below_reported"
    NOT_TIME_BASED = "not_time_based"
    NONE_ACTIVE = "none_active"
    NOT_HELD = "not_held"
    BAD_RATE = "bad_rate"


def sql_text(name: str) -> str:
    return ENGINE.text(name)


def engine_digest() -> str:
    return ENGINE.digest()


def budget_timezone() -> str:
    """The time zone of budget periods (BUDGET_TIMEZONE), passed to the engine."""
    return settings.BUDGET_TIMEZONE


def lock_budget_ms() -> int:
    """The budget every lock wait of one engine call shares (0: no limit)."""
    return settings.DATABASE_LOCK_TIMEOUT_MS


def call(function: str, *params) -> dict[str, Any]:
    """Call one engine function as one statement; its JSON answer, amounts exact.
    The request's write, if the rate limit still has to count it, is counted in
    the same statement (quotas.access.throttling.counted_engine_call)."""
    placeholders = ", ".join(["%s"] * len(params))
    raw = counted_engine_call(f"{function}({placeholders})::text", list(params))
    return json.loads(raw, parse_float=Decimal)
