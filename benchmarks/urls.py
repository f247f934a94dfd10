from django.urls import path
from rest_framework import permissions
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
    throttle_classes,
)
from rest_framework.response import Response

from horizon_quota.urls import urlpatterns as service_urlpatterns


@api_view(["GET"])
@authentication_classes([])
@permission_classes([permissions.AllowAny])
@throttle_classes([])
def trivial(request):
    """The baseline: a DRF view that touches nothing (served under the service's
    middleware at /bench/trivial, without any at /bench/bare: benchmarks/wsgi.py)."""
    return Response({"ok": True})


urlpatterns = [
    path("bench/trivial", trivial),
    path("bench/bare", trivial),
    *service_urlpatterns,
]
