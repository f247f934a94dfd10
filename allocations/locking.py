"""Row locks on quotas: one function, one global order.

Every transaction that reads a quota in order to change it, or to change ``used``,
takes its row locks through ``lock_quotas`` and nowhere else.

The order
---------
1. Rows are locked with ``SELECT … FOR UPDATE`` sorted by ``(depth DESC, id ASC)``:
   deeper rows first, the root last; rows at the same depth by id.
2. ``depth`` and ``parent_id`` never change after a quota is created, so the sort key
   of a row is fixed for its whole life.
3. PostgreSQL locks rows as the sorted result is produced (LockRows sits above Sort in
   the plan), so the locks are acquired in exactly that order.

Why it cannot deadlock
----------------------
A deadlock needs a cycle of transactions T1 … Tn in which each holds a row the next
one waits for. Every transaction acquires its locks in ascending order of one total
order on rows, so a transaction that holds row A and waits for row B has A < B. A
cycle would give A1 < A2 < … < An < A1, which is impossible. Any transaction that
locks quota rows some other way (an ``UPDATE`` whose plan picks its own order, a
second ``lock_quotas`` call after the first) breaks this proof, which is why there
is one function.

Why leaves first
----------------
The rows near the root are shared by every allocation under them, so they are
the contended ones. Taking them last keeps the time they stay locked, from the
lock to the commit, as short as possible.
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
