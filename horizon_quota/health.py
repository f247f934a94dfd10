"""``GET /health``: liveness and a database round trip, without authentication."""

from django.db import DatabaseError, connection
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.response import Response

from horizon_quota.schema import ErrorBodySerializer, error_example, error_response

UNREACHABLE = {
    "error": "unavailable",
    "message": "The database is unreachable.",
    "status": "unavailable",
    "database": "unreachable",
}


class HealthSerializer(serializers.Serializer):
    """The service is up and its database answers."""

    status = serializers.CharField(help_text="`ok`.")
    database = serializers.CharField(help_text="`ok`.")


class HealthUnavailableSerializer(ErrorBodySerializer):
    """503: the service is up but its database does not answer. An error body
    (`error` is `unavailable`) with the health members."""

    status = serializers.CharField(help_text="`unavailable`.")
    database = serializers.CharField(help_text="`unreachable`.")


@extend_schema(
    tags=["health"],
    auth=[],
    responses={
        200: HealthSerializer,
        503: error_response(
            "unavailable: the database is unreachable.",
            error_example(
                "Database unreachable",
                UNREACHABLE["error"],
                UNREACHABLE["message"],
                status=UNREACHABLE["status"],
                database=UNREACHABLE["database"],
            ),
            schema=HealthUnavailableSerializer,
        ),
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
        return Response(dict(UNREACHABLE), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"status": "ok", "database": "ok"})
