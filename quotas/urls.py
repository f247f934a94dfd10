from django.urls import path

from quotas import views

urlpatterns = [
    path("quotas", views.QuotaListCreateView.as_view(), name="quota-list"),
    path(
        "quotas/<uuid:quota_id>", views.QuotaDetailView.as_view(), name="quota-detail"
    ),
    path(
        "quotas/<uuid:quota_id>/usage",
        views.QuotaUsageView.as_view(),
        name="quota-usage",
    ),
    path(
        "quotas/<uuid:quota_id>/audit",
        views.QuotaAuditView.as_view(),
        name="quota-audit",
    ),
    path(
        "quotas/<uuid:quota_id>/periods",
        views.QuotaPeriodsView.as_view(),
        name="quota-periods",
    ),
]
