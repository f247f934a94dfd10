from django.urls import path

from quotas.events import views, webhook_views

urlpatterns = [
    path("events", views.EventListView.as_view(), name="event-list"),
    path(
        "webhooks", webhook_views.WebhookListCreateView.as_view(), name="webhook-list"
    ),
    path(
        "webhooks/<uuid:endpoint_id>",
        webhook_views.WebhookDetailView.as_view(),
        name="webhook-detail",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries",
        webhook_views.WebhookDeliveriesView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/<uuid:endpoint_id>/test",
        webhook_views.WebhookTestView.as_view(),
        name="webhook-test",
    ),
]
