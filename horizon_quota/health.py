"""``GET /health``: liveness and a database round trip, without authentication."""

from django.db import DatabaseError, connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.response import Response

from horizon_quota.schema import error_responses


@extend_schema(
    tags=["health"],
    auth=[],
    responses={
        200: inline_serializer(
            "Health",
            {"status": serializers.CharField(), "database": serializers.CharField()},
        ),
        **error_responses(503),
    },
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([permissions.AllowAny])
def health(request):
    """Liveness and database check; no authentication."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        # Drop the broken connection so the next request reconnects.
        connection.close_if_unusable_or_obsolete()
        body = {
            "status": "unavailable",
            "database": "unreachable",
            "error": "unavailable",
            "message": "The database is unreachable.",
        }
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"status": "ok", "database": "ok"})
