"""Writing events (DESIGN §7a, P4): the outbox, its sequencer and the alerts.

Events are written in the transaction that caused them: by the engine as it goes
(``hq_note``, ``hq_alerts``), by the services here (``record_events``). Their public
ids are given at the commit, by a deferred constraint trigger
(``hq_sequence_event``) that takes the event sequencer — a transaction-level
advisory lock — after everything else the transaction did. So ids are given in
commit order, and a feed reader that has seen event N has seen every event below N
that will ever exist: reading ``id > last`` never misses one that commits later.
The sequencer is the last lock of any transaction (quotas/locking.py) and is taken
only by transactions that wrote events, which are rare: edges, not allocations.

The SQL lives in ``quotas/events/sql/`` (one function per file, installed by this
app's migrations with ``InstallEventFunctions``; see horizon_quota/sqlfunctions.py).
"""

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import simplejson
from django.conf import settings
from django.db import connection

from horizon_quota.sqlfunctions import InstallSqlFunctions, SqlFunctions

# The advisory lock key of the event sequencer (the same in hq_sequence_event.sql).
SEQUENCER_KEY = 72_651_004

EVENT_FUNCTIONS = SqlFunctions(
    directory=Path(__file__).resolve().parent / "sql",
    # Creation order: each function after the ones it calls.
    names=("hq_note", "hq_alerts", "hq_sequence_event"),
)


class InstallEventFunctions(InstallSqlFunctions):
    """Migration operation: (re)install the outbox's and the alerts' functions."""

    functions = EVENT_FUNCTIONS


def alert_thresholds() -> list[Decimal]:
    """ALERT_THRESHOLDS: the percents of the cap that a quota without its own
    ``alert_thresholds`` alerts at, as the engine takes them."""
    return [Decimal(str(percent)) for percent in settings.ALERT_THRESHOLDS]


_INSERT_EVENT = """
INSERT INTO events (type, occurred_at, quota_id, entity_type, entity_id,
                    resource_type, path, data)
VALUES (%s, hq_now(), %s, %s, %s, %s, %s, %s::jsonb)
"""


def record_events(events: list[dict[str, Any]]) -> None:
    """Append events in the caller's transaction (each a dict of Event fields:
    ``quota_event``). Amounts in ``data`` are written as exact JSON numbers, as the
    engine writes them."""
    if not events:
        return
    with connection.cursor() as cursor:
        cursor.executemany(
            _INSERT_EVENT,
            [
                (
                    event["type"],
                    event["quota_id"],
                    event["entity_type"],
                    event["entity_id"],
                    event["resource_type"],
                    event["path"],
                    simplejson.dumps(event["data"], use_decimal=True, default=str),
                )
                for event in events
            ],
        )


def quota_event(event_type: str, quota, **data) -> dict[str, Any]:
    """The fields of an event about ``quota``."""
    return {
        "type": event_type,
        "quota_id": quota.id,
        "entity_type": quota.entity_type,
        "entity_id": quota.entity_id,
        "resource_type": quota.resource_type_id,
        "path": list(quota.path),
        "data": data,
    }


def raise_alerts(quota_ids: Iterable[UUID]) -> None:
    """Threshold and soft-limit alerts of quotas whose usage or cap the caller just
    changed, in the caller's transaction. The caller holds the rows' locks (an edge
    is seen by one transaction only)."""
    ids = list(quota_ids)
    if not ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT hq_alerts(array_agg(q ORDER BY q.id), %s) "
            "FROM quotas q WHERE q.id = ANY (%s)",
            [alert_thresholds(), ids],
        )
