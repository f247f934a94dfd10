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
   on release). A transaction never waits for a key once it holds a quota row.

Why it cannot deadlock
----------------------
A deadlock needs a cycle of transactions T1 … Tn in which each holds a lock the
next one waits for. Put every allocation key before every quota row, and the rows in
the order above: each transaction acquires its locks in ascending order of this one
total order, so a transaction that holds lock A and waits for lock B has A < B. A
cycle would give A1 < A2 < … < An < A1, which is impossible. Any transaction that
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

from quotas.models import Quota


def lock_quotas(quota_ids: Iterable[UUID]) -> dict[UUID, Quota]:
    """Lock the given quotas in the global order; return them by id.

    Must run inside a transaction. Ids that do not exist are simply absent from the
    result; callers decide whether that is an error.
    """
    ids = {quota_id for quota_id in quota_ids if quota_id is not None}
    if not ids:
        return {}
    rows = Quota.objects.filter(id__in=ids).order_by("-depth", "id").select_for_update()
    return {quota.id: quota for quota in rows}
