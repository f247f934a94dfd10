from django.urls import path
from rest_framework import permissions
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.response import Response

from horizon_quota.urls import urlpatterns as service_urlpatterns


@api_view(["GET"])
@authentication_classes([])
@permission_classes([permissions.AllowAny])
def trivial(request):
    """The baseline: a DRF view that touches nothing."""
    return Response({"ok": True})


urlpatterns = [path("bench/trivial", trivial), *service_urlpatterns]
