"""Per-API-key rate limit on writes, shared by every worker process.

A key may make so many POST, PUT, PATCH and DELETE calls under ``/api/v1`` per
fixed window: its own ``write_rate`` if it has one, else its role's default
(``API_SCHEDULER_WRITE_RATE`` for scheduler keys, ``API_WRITE_RATE`` for the
others; ``0`` or ``off`` disables). The limit is there to stop a runaway client,
not to pace a scheduler: the scheduler default is far above what one scheduler
sends at peak. Reads are never counted nor throttled. A key over its limit gets
429 ``rate_limited`` with ``Retry-After`` (seconds to the end of the window),
distinct from 429 ``resource_exhausted`` (a quota ran out).

Where the count lives
---------------------
In PostgreSQL, not in a per-process cache: gunicorn runs several worker processes
(and a fleet runs several hosts), and per-process counters would let each grant the
whole rate. The table ``rate_limits`` is UNLOGGED (a count writes no WAL; a crash
merely empties it) and holds one row per key, window and *database session*
(``shard`` = ``pg_backend_pid()``). A session runs one transaction at a time, so no
two transactions ever update the same row: counting never waits for a lock, however
many workers share a key. A call's count is its own session's row plus the other
sessions' rows of the window, as committed.

What it costs
-------------
The allocation engine's calls (allocate, release, consume, admit a job…: views that
set ``writes_counted_by_engine``) count their write *in the engine's own statement*
(``counted_engine_call``): one round trip for both, and the engine does nothing when
the count is over the limit. Measured with ``bootstrap.py bench`` (issue #13), the
separate counting statement this replaced cost 10–15 % of allocate throughput. A
write of such a view that never reaches the engine (a 400, a 404) is counted after
its answer, in its own statement, as every other write is before its view runs.

Counting in batches: even in the engine's statement, counting every write cost
about a fifth of allocate throughput (bench, issue #13: the counter rows of a key
are a few hot tuples every session updates). So a process counts a key's writes
in PostgreSQL in batches of ``limit // 1000`` (at least 1: a limit below 2,000 per
window is counted write by write, exactly as before): it lets a key's writes
through while its local tally is below the batch, and adds the whole batch to its
session's row with the write that fills it. Once PostgreSQL says the key is over
its limit, the process refuses it locally until the window ends, without asking
again. For the scheduler default (600,000 a minute) that is one counting statement
per 600 writes, and the limit is still exact across processes to within a batch
per process (0.1 % of the limit each).

Precision: sessions count each other's writes once those commit, so several calls
of one key in flight at the same moment may together pass the limit by at most the
number of them in flight (one per worker process), plus up to a batch per process
not yet counted: enough to stop a runaway client, which is the point. The window
boundaries come from the database clock, so every process agrees on them. DRF
runs throttles after authentication and permissions: a write refused 401 or 403
is not counted.
"""

import contextvars
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from rest_framework.exceptions import Throttled
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from horizon_quota.env import parse_rate
from quotas.models import ApiKeyRole

API_PREFIX = "/api/v1/"

# The window from the database clock; this session's rows of past windows of the
# key deleted (and other sessions' ones that no transaction holds: a session that
# ended leaves its rows behind); this session's count incremented; the key's total
# for the window and the seconds left. Written once, used both standalone
# (_COUNT_SQL) and in front of an engine call (_COUNTED_CALL_SQL).
#
# ``mine`` reads ``past``, so the delete runs before the count and the engine's
# call: a data-modifying WITH that nothing reads runs at the end of the statement,
# which in front of an engine call would be while the call's rows (the
# organization's above all) are still locked.
_COUNT_CTES = """
WITH w AS (
    SELECT (floor(t / %(period)s) * %(period)s)::bigint AS start, t
      FROM (SELECT extract(epoch FROM clock_timestamp()) AS t) AS clock
), past AS (
    DELETE FROM rate_limits
     WHERE ctid IN (SELECT old.ctid FROM rate_limits AS old, w
                     WHERE old.key_id = %(key)s AND old.window_start < w.start
                       FOR UPDATE SKIP LOCKED)
    RETURNING 1
), mine AS (
    INSERT INTO rate_limits AS r (key_id, window_start, shard, count)
    SELECT %(key)s, w.start, pg_backend_pid(), %(amount)s FROM w
     WHERE (SELECT count(*) FROM past) >= 0
        ON CONFLICT (key_id, window_start, shard)
        DO UPDATE SET count = r.count + %(amount)s
    RETURNING r.count, r.window_start
), tally AS (
    SELECT mine.count + coalesce(
               (SELECT sum(o.count) FROM rate_limits AS o
                 WHERE o.key_id = %(key)s AND o.window_start = mine.window_start
                   AND o.shard <> pg_backend_pid()), 0) AS calls,
           mine.window_start + %(period)s - (SELECT t FROM w) AS remaining
      FROM mine
)
"""
_COUNT_SQL = _COUNT_CTES + "SELECT calls, remaining FROM tally"
# The engine's statement runs only when the count allows it.
_COUNTED_CALL_SQL = (
    _COUNT_CTES
    + "SELECT CASE WHEN calls <= %(limit)s THEN {call} END, calls, remaining "
    "FROM tally"
)


def _rate(value) -> tuple[int, int] | None:
    if value is None or isinstance(value, tuple):
        return value
    return parse_rate("write rate", str(value))  # a string (tests override it)


def write_rate(key=None) -> tuple[int, int] | None:
    """(calls, period in seconds) that ``key`` may write, or None for no limit: the
    key's own ``write_rate``, else its role's default from the settings."""
    if key is not None and key.write_rate:
        return _rate(key.write_rate)
    if key is not None and key.role == ApiKeyRole.SCHEDULER:
        return _rate(settings.API_SCHEDULER_WRITE_RATE)
    return _rate(settings.API_WRITE_RATE)


def count_write(key_id: int, period: int, amount: int = 1) -> tuple[int, float]:
    """Count ``amount`` writes of ``key_id`` in their own statement: (calls of the
    key in this window so far, seconds left in it)."""
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_SQL, {"key": key_id, "period": period, "amount": amount})
        calls, remaining = cursor.fetchone()
    return int(calls), float(remaining)


# --- Batches (see "Counting in batches" above) --------------------------------------

BATCH_DIVISOR = 1000


def batch_size(limit: int) -> int:
    """How many writes of a key a process lets through before counting them."""
    return max(1, limit // BATCH_DIVISOR)


@dataclass
class _Tally:
    """This process's writes of one key (and rate) not yet counted in PostgreSQL,
    and until when (monotonic clock) the key is known to be over its limit."""

    uncounted: int = 0
    blocked_until: float = 0.0


_tallies: dict[tuple[int, int, int], _Tally] = {}
_tallies_lock = threading.Lock()


def _take(key_id: int, limit: int, period: int) -> tuple[int | None, float]:
    """One write of the key in this process: (how many writes to count now — 0
    while its batch is not full — or None when the key is known over its limit;
    seconds to wait then)."""
    now = time.monotonic()
    with _tallies_lock:
        tally = _tallies.setdefault((key_id, limit, period), _Tally())
        if tally.blocked_until > now:
            return None, tally.blocked_until - now
        tally.uncounted += 1
        if tally.uncounted < batch_size(limit):
            return 0, 0.0
        amount, tally.uncounted = tally.uncounted, 0
        return amount, 0.0


def _over_limit(key_id: int, limit: int, period: int, remaining: float) -> None:
    """PostgreSQL said the key is over its limit: refuse it here until the window
    ends, without asking again. A batch of one (small limits) asks every time."""
    if batch_size(limit) == 1:
        return
    with _tallies_lock:
        tally = _tallies.setdefault((key_id, limit, period), _Tally())
        tally.blocked_until = time.monotonic() + remaining


def forget_tallies() -> None:
    """Drop this process's uncounted writes and refusals (tests)."""
    with _tallies_lock:
        _tallies.clear()


@dataclass
class PendingWrite:
    """Writes not counted yet (this request's, with the batch it fills): the
    engine's statement counts them."""

    key_id: int
    limit: int
    period: int
    counted: bool = False
    amount: int = 1


_pending: contextvars.ContextVar[PendingWrite | None] = contextvars.ContextVar(
    "hq_pending_write", default=None
)


def counted_engine_call(call_sql: str, params: list) -> str | None:
    """Run ``call_sql`` (one engine call with ``%s`` placeholders, answering text) as
    one statement, counting the request's pending write in it if there is one:
    the engine call runs only when the key is within its limit (else ``Throttled``).
    Returns the engine's answer."""
    pending = _pending.get()
    with connection.cursor() as cursor:
        if pending is None or pending.counted:
            cursor.execute(f"SELECT {call_sql}", params)
            return cursor.fetchone()[0]
        named = {f"p{index}": value for index, value in enumerate(params)}
        call = call_sql % tuple(f"%(p{index})s" for index in range(len(params)))
        named.update(
            key=pending.key_id,
            period=pending.period,
            limit=pending.limit,
            amount=pending.amount,
        )
        cursor.execute(_COUNTED_CALL_SQL.format(call=call), named)
        answer, calls, remaining = cursor.fetchone()
    pending.counted = True
    if calls > pending.limit:
        _over_limit(pending.key_id, pending.limit, pending.period, float(remaining))
        raise Throttled(wait=max(1, math.ceil(remaining)))
    return answer


def _settle_pending_write(token) -> None:
    """After the answer: count a pending write that never reached the engine."""
    pending = _pending.get()
    _pending.reset(token)
    if pending is not None and not pending.counted:
        pending.counted = True
        count_write(pending.key_id, pending.period, pending.amount)


class ApiKeyWriteThrottle(BaseThrottle):
    """Fixed-window limit of writes per API key, counted in PostgreSQL."""

    def __init__(self):
        self.wait_seconds = None

    def allow_request(self, request, view):
        if request.method in SAFE_METHODS:
            return True
        key = request.auth
        if key is None or not request.path_info.startswith(API_PREFIX):
            return True
        rate = write_rate(key)
        if rate is None:
            return True
        limit, period = rate
        amount, wait = _take(key.pk, limit, period)
        if amount is None:
            self.wait_seconds = max(1, math.ceil(wait))
            return False
        if amount == 0:
            return True  # its batch is not full yet
        after_response = getattr(request._request, "after_response", None)
        if (
            getattr(view, "writes_counted_by_engine", False)
            and after_response is not None
        ):
            # Counted in the engine's statement (counted_engine_call), or after
            # the answer if the request never gets there.
            token = _pending.set(PendingWrite(key.pk, limit, period, amount=amount))
            after_response.append(lambda: _settle_pending_write(token))
            return True
        calls, remaining = count_write(key.pk, period, amount)
        if calls <= limit:
            return True
        _over_limit(key.pk, limit, period, remaining)
        self.wait_seconds = max(1, math.ceil(remaining))
        return False

    def wait(self):
        return self.wait_seconds
