"""API views of the allocations app: single allocations (``allocations``) and jobs
(``jobs``, several resources at once)."""

from allocations.views.allocations import (
    AllocationCheckView,
    AllocationConsumeView,
    AllocationDetailView,
    AllocationListCreateView,
    AllocationRenewView,
    QuotaAllocationsView,
    QuotaHistoryView,
)
from allocations.views.jobs import (
    JobAdmitView,
    JobCheckView,
    JobDetailView,
    JobReleaseView,
    JobRenewView,
)

__all__ = [
    "AllocationCheckView",
    "AllocationConsumeView",
    "AllocationDetailView",
    "AllocationListCreateView",
    "AllocationRenewView",
    "JobAdmitView",
    "JobCheckView",
    "JobDetailView",
    "JobReleaseView",
    "JobRenewView",
    "QuotaAllocationsView",
    "QuotaHistoryView",
]
