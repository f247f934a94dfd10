from django.urls import path

from allocations import views

urlpatterns = [
    path("jobs", views.JobAdmitView.as_view(), name="job-admit"),
    path("jobs/check", views.JobCheckView.as_view(), name="job-check"),
    path("jobs/<uuid:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path(
        "jobs/<uuid:job_id>/release",
        views.JobReleaseView.as_view(),
        name="job-release",
    ),
    path("jobs/<uuid:job_id>/renew", views.JobRenewView.as_view(), name="job-renew"),
    path(
        "allocations/check",
        views.AllocationCheckView.as_view(),
        name="allocation-check",
    ),
    path(
        "allocations", views.AllocationListCreateView.as_view(), name="allocation-list"
    ),
    path(
        "allocations/<uuid:allocation_id>",
        views.AllocationDetailView.as_view(),
        name="allocation-detail",
    ),
    path(
        "allocations/<uuid:allocation_id>/consume",
        views.AllocationConsumeView.as_view(),
        name="allocation-consume",
    ),
    path(
        "allocations/<uuid:allocation_id>/renew",
        views.AllocationRenewView.as_view(),
        name="allocation-renew",
    ),
    path(
        "quotas/<uuid:quota_id>/allocations",
        views.QuotaAllocationsView.as_view(),
        name="quota-allocations",
    ),
    path(
        "quotas/<uuid:quota_id>/history",
        views.QuotaHistoryView.as_view(),
        name="quota-history",
    ),
]
