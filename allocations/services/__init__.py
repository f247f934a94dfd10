"""The allocation app's services: the only code that changes allocations and
``used`` (through the engine, ``allocations.engine``).

* ``allocations``: check, allocate, release, renew, expire.
* ``maintenance``: reconcile ``used`` with the allocations; the lease sweeper.
"""

from allocations.services.allocations import (
    AllocationResult,
    CheckResult,
    Level,
    allocation_check,
    allocation_consume,
    allocation_create,
    allocation_expire,
    allocation_release,
    allocation_renew,
    refuse_quota_delete_while_allocated,
)
from allocations.services.maintenance import (
    ReconcileResult,
    allocations_expire,
    budgets_roll,
    recompute_consumed_on_period_change,
    usage_reconcile,
)

__all__ = [
    "AllocationResult",
    "CheckResult",
    "Level",
    "ReconcileResult",
    "allocation_check",
    "allocation_consume",
    "allocation_create",
    "allocation_expire",
    "allocation_release",
    "allocation_renew",
    "allocations_expire",
    "budgets_roll",
    "recompute_consumed_on_period_change",
    "refuse_quota_delete_while_allocated",
    "usage_reconcile",
]
