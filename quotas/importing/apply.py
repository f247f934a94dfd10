"""The second step of an import: run the plan's operations, all or nothing.

``hierarchy_import_apply`` runs the operations in one transaction through the quota
services, so their checks and locks still apply, and rolls everything back on the
first refusal. The plan's order keeps every intermediate state valid (see
``quotas.importing.plan._order_operations``), and the result is compared with the
target before the commit.
"""

from collections.abc import Callable
from uuid import UUID

from django.db import DatabaseError, transaction

from horizon_quota.errors import ServiceError
from quotas.importing.document import QUOTA_FIELDS, QuotaKey, key_of
from quotas.importing.plan import ImportPlan, Operation
from quotas.locking import lock_quotas
from quotas.models import Quota
from quotas.services import Actor, quota_create, quota_delete, quota_update


class ImportFailed(Exception):
    """An import refused while applying; nothing of it was written."""


def hierarchy_import_apply(
    *,
    plan: ImportPlan,
    actor: Actor | None = None,
    reason: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Run the plan's operations in one transaction through the quota services, so
    every database-side check and lock applies and each change enters the audit
    trail with ``actor`` and ``reason``; any refusal rolls back all of them and
    raises ``ImportFailed``. Returns the counts of each action.

    The quotas it changes (and their parents) stay locked until the commit, so
    allocations against them wait for the import to finish.
    """
    if plan.problems:
        raise ImportFailed(f"The plan has {len(plan.problems)} problems.")
    total = len(plan.operations)
    try:
        # Durable: the import is all-or-nothing only as the outermost transaction.
        with transaction.atomic(durable=True):
            rows = list(
                Quota.objects.only(
                    "id", "parent_id", "resource_type_id", "entity_type", "entity_id"
                )
            )
            ids = {key_of(quota): quota.id for quota in rows}
            parent_ids = {quota.id: quota.parent_id for quota in rows}
            # Take every lock the import needs in one call, in the global order
            # (quotas/locking.py), before the first change. Each service
            # below then locks only rows this transaction already holds or has
            # just created, so the import cannot deadlock with allocations or
            # other edits, as several lock_quotas calls in a row could.
            lock_quotas(_rows_to_lock(plan, ids=ids, parent_ids=parent_ids))
            for done, operation in enumerate(plan.operations, start=1):
                try:
                    _apply(operation, ids=ids, actor=actor, reason=reason)
                except ServiceError as exc:
                    raise ImportFailed(
                        f"{operation.describe()}: {exc.message}"
                    ) from None
                if progress is not None:
                    progress(done, total)
            _verify(plan)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "55P03":  # lock_timeout
            raise ImportFailed(
                "A quota it changes stayed locked by another transaction too long; "
                "run it again."
            ) from None
        raise ImportFailed(
            f"The database refused it ({exc.__class__.__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]})."
        ) from None
    return plan.counts()


def _rows_to_lock(
    plan: ImportPlan,
    *,
    ids: dict[QuotaKey, UUID],
    parent_ids: dict[UUID, UUID | None],
) -> set[UUID]:
    """The existing quotas the services will lock: each quota updated or deleted
    and its parent, and the existing parent of each quota created."""
    rows: set[UUID] = set()
    for operation in plan.operations:
        if operation.quota_id is not None:
            rows.add(operation.quota_id)
            rows.add(parent_ids.get(operation.quota_id))
        elif operation.parent is not None:
            rows.add(ids.get(operation.parent))
    rows.discard(None)
    return rows


def _apply(
    operation: Operation,
    *,
    ids: dict[QuotaKey, UUID],
    actor: Actor | None,
    reason: str,
) -> None:
    audit = {"actor": actor, "reason": reason}
    if operation.action == "delete":
        quota_delete(quota_id=operation.quota_id, **audit)
        del ids[operation.key]
    elif operation.action == "update":
        quota_update(quota_id=operation.quota_id, changes=dict(operation.new), **audit)
    else:
        quota = quota_create(
            **audit,
            entity_type=operation.key.entity_type,
            entity_id=operation.key.entity_id,
            resource_type=operation.key.resource_type,
            parent_id=ids[operation.parent] if operation.parent else None,
            **{name: operation.new[name] for name in QUOTA_FIELDS},
        )
        ids[operation.key] = quota.id


def _verify(plan: ImportPlan) -> None:
    """Compare the database with the target before committing: a quota changed by
    someone else between planning and applying would otherwise survive the import
    unnoticed."""
    quotas = list(Quota.objects.all())
    by_id = {quota.id: quota for quota in quotas}
    actual = {
        key_of(quota): (
            key_of(by_id[quota.parent_id]) if quota.parent_id else None,
            *(getattr(quota, name) for name in QUOTA_FIELDS),
        )
        for quota in quotas
    }
    wanted = {
        key: (target.parent, *(target.values[name] for name in QUOTA_FIELDS))
        for key, target in plan.targets.items()
    }
    if actual != wanted:
        differing = sorted(
            str(key)
            for key in set(actual) | set(wanted)
            if actual.get(key) != wanted.get(key)
        )
        raise ImportFailed(
            "The quotas changed while the import ran ("
            + ", ".join(differing[:5])
            + (", …" if len(differing) > 5 else "")
            + "); run it again."
        )
