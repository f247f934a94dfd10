"""Row locks on quotas: one global order, one function.

Every transaction that reads a quota in order to change it, or changes ``used``,
locks quota rows in the order below: the quota services through ``lock_quotas``,
the allocation engine (``allocations/sql/``) by updating the rows of a path one at
a time in the same order. Nothing else locks quota rows.

The order
---------
1. Rows are locked sorted by ``(depth DESC, id ASC)``: deeper rows first, the root
   last; rows at the same depth by id. An allocation path (user → team →
   organization) is already in that order, leaf first.
2. ``depth`` and ``parent_id`` never change after a quota is created, so the sort key
   of a row is fixed for its whole life.
3. ``lock_quotas`` uses ``SELECT … ORDER BY depth DESC, id FOR UPDATE``: PostgreSQL
   locks rows as the sorted result is produced (LockRows sits above Sort in the
   plan), so the locks are acquired in exactly that order. The engine updates one
   row per statement, by id, walking the path leaf first (a single ``UPDATE … WHERE
   id IN (…)`` would let the planner pick the order).
4. The engine's transactions take one more kind of lock before any quota row: the
   allocation's idempotency key (the unique index entry of an active allocation's
   ``(job_id, resource_type)``, claimed by its insert, or the allocation row itself
   on consume and release). Keys are taken in the order of ``(job_id,
   resource_type)``: a job's admission claims its keys by resource type, a job's
   release locks its allocations by resource type. A transaction never waits for
   a key once it holds a quota row.
5. A transaction that needs several paths (a job's admission or release: one path
   per resource, in disjoint trees) locks the rows of all of them as one set in the
   same order: every row of depth 2 (users) first, by id, then depth 1, then the
   roots. It does not finish one path before starting the next: the rows of
   another path may come earlier in the order. (A job's release locks them all
   with one ``SELECT … ORDER BY depth DESC, id FOR UPDATE`` before charging; an
   admission charges them one by one in that order, each by a conditional
   ``UPDATE``.) Rows a transaction already holds may be updated again in any
   order — taking back the charges of a refused request, or re-charging a path
   whose period was rolled over meanwhile: that waits for nothing.

Why it cannot deadlock
----------------------
A deadlock needs a cycle of transactions T1 … Tn in which each holds a lock the
next one waits for. Put every allocation key before every quota row, keys ordered
by ``(job_id, resource_type)`` and rows by ``(depth DESC, id)``: one total order on
everything the engine locks. Each transaction acquires its locks in ascending
order of it — a single path is already sorted, several paths are merged into one
sorted walk (5) — so a transaction that holds lock A and waits for lock B has
A < B. A cycle would give A1 < A2 < … < An < A1, which is impossible. Two jobs that
ask for the same resources in opposite orders therefore cannot deadlock: both walk
the rows in one order, whatever order their requests list them in
(``tests/test_job_concurrency.py``, scenario b, whose broken twin locks in request
order and does deadlock). The rollover command holds one row at a time and waits
for nothing while it does. Any transaction that
locks quota rows some other way (an ``UPDATE`` whose plan picks its own order, a
second ``lock_quotas`` call after the first, a key claimed after a quota row)
breaks this proof, which is why there is one function and one engine.

Why leaves first
----------------
The rows near the root are shared by every allocation under them, so they are the
contended ones. Taking them last keeps the time they stay locked, from the lock to
the commit, as short as possible.
"""

from collections.abc import Iterable
from uuid import UUID

from django.conf import settings
from django.db import connection

from quotas.models import Quota


def lock_quotas(quota_ids: Iterable[UUID]) -> dict[UUID, Quota]:
    """Lock the given quotas in the global order; return them by id.

    Must run inside a transaction. Ids that do not exist are simply absent from the
    result; callers decide whether that is an error.
    """
    ids = {quota_id for quota_id in quota_ids if quota_id is not None}
    if not ids:
        return {}
    # The wait is bounded in this transaction itself, not only by the session's
    # setting: behind PgBouncer in transaction pooling there is no session of ours.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true)",
            [f"{settings.DATABASE_LOCK_TIMEOUT_MS}ms"],
        )
    rows = Quota.objects.filter(id__in=ids).order_by("-depth", "id").select_for_update()
    return {quota.id: quota for quota in rows}
