from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularJSONAPIView,
    SpectacularSwaggerView,
)

from horizon_quota.health import health
from horizon_quota.observability import metrics_view

urlpatterns = [
    path("health", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("quotas.urls")),
    path("api/v1/", include("allocations.urls")),
    path("api/v1/", include("quotas.events.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api-docs/openapi.json", SpectacularJSONAPIView.as_view(), name="schema-json"),
    path(
        "swagger-ui/",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
    path("admin/", admin.site.urls),
]

handler400 = "horizon_quota.api.handler400"
handler403 = "horizon_quota.api.handler403"
handler404 = "horizon_quota.api.handler404"
handler500 = "horizon_quota.api.handler500"
