import contextlib

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from horizon_quota.api import LinkHeaderCursorPagination
from horizon_quota.schema import error_responses
from quotas import selectors, services
from quotas.access.scoping import scope_of
from quotas.budgets import usage_stats
from quotas.filters import QuotaFilter
from quotas.models import REASON_MAX_LENGTH, ClosedPeriod, QuotaChange
from quotas.serializers import (
    ClosedPeriodSerializer,
    QuotaChangeSerializer,
    QuotaCreateSerializer,
    QuotaSerializer,
    QuotaUpdateSerializer,
    UsageSerializer,
)

FORCE_PARAMETER = OpenApiParameter(
    "force",
    bool,
    description="Allow lowering the limit below current usage (running jobs keep "
    "their quota; new allocations are refused until usage drops).",
)

CHANGE_REASON_HEADER = "X-Change-Reason"
CHANGE_REASON_PARAMETER = OpenApiParameter(
    CHANGE_REASON_HEADER,
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description="Why the change is made; kept in the quota's audit trail "
    f"(`GET /api/v1/quotas/{{id}}/audit`). Trimmed; at most {REASON_MAX_LENGTH} "
    "characters, UTF-8, no control characters (400 otherwise).",
)


def _change_reason(request) -> str:
    """The ``X-Change-Reason`` header, checked before anything is changed."""
    raw = request.headers.get(CHANGE_REASON_HEADER, "")
    # WSGI hands header values over decoded as ISO-8859-1; clients send UTF-8.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        raw = raw.encode("latin-1").decode("utf-8")
    return services.change_reason_clean(raw, field=CHANGE_REASON_HEADER)


def _scope(request):
    """The scope of the request's key (quotas/access/scoping.py); None when unscoped."""
    return scope_of(getattr(request, "auth", None))


def _actor(request) -> services.Actor:
    # request.auth is the ApiKey (quotas.access.authentication).
    return services.Actor.for_api_key(request.auth)


def _force(request, body) -> bool:
    raw = request.query_params.get("force")
    if raw is not None:
        value = raw.strip().lower()
        if value not in {"true", "false", "1", "0", "yes", "no"}:
            raise serializers.ValidationError({"force": ["Must be true or false."]})
        return value in {"true", "1", "yes"}
    return body.get("force", False)


class QuotaListCreateView(generics.GenericAPIView):
    serializer_class = QuotaSerializer
    filterset_class = QuotaFilter

    def get_queryset(self):
        return selectors.quota_list(scope=_scope(self.request))

    @extend_schema(
        tags=["quotas"],
        summary="List quotas, newest first",
        responses={200: QuotaSerializer(many=True), **error_responses(400, 401)},
    )
    def get(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(QuotaSerializer(page, many=True).data)

    @extend_schema(
        tags=["quotas"],
        summary="Create a quota",
        request=QuotaCreateSerializer,
        parameters=[CHANGE_REASON_PARAMETER],
        responses={
            201: QuotaSerializer,
            **error_responses(
                400,
                401,
                403,
                409,
                415,
                kind_409="already_exists",
                message_409="A gpu_hours quota for team 'acme-research' already "
                "exists.",
            ),
        },
    )
    def post(self, request):
        reason = _change_reason(request)
        serializer = QuotaCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quota = services.quota_create(
            **serializer.validated_data,
            actor=_actor(request),
            reason=reason,
            scope=_scope(request),
        )
        return Response(QuotaSerializer(quota).data, status=status.HTTP_201_CREATED)


class QuotaDetailView(generics.GenericAPIView):
    serializer_class = QuotaSerializer

    def get_object(self):
        return selectors.quota_get(
            quota_id=self.kwargs["quota_id"], scope=_scope(self.request)
        )

    @extend_schema(
        tags=["quotas"],
        summary="Get a quota",
        responses={200: QuotaSerializer, **error_responses(401, 404)},
    )
    def get(self, request, quota_id):
        return Response(QuotaSerializer(self.get_object()).data)

    def _update(self, request):
        reason = _change_reason(request)
        quota = self.get_object()
        serializer = QuotaUpdateSerializer(data=request.data, context={"quota": quota})
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        force = _force(request, changes)
        changes.pop("force", None)
        version = changes.pop("version", None)
        quota = services.quota_update(
            quota_id=quota.id,
            changes=changes,
            force=force,
            expected_version=version,
            actor=_actor(request),
            reason=reason,
            scope=_scope(request),
        )
        return Response(QuotaSerializer(quota).data)

    _update_schema = {
        "tags": ["quotas"],
        "request": QuotaUpdateSerializer,
        "parameters": [FORCE_PARAMETER, CHANGE_REASON_PARAMETER],
        "responses": {
            200: QuotaSerializer,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                415,
                message_409="The new effective limit (10) is below current usage (12); "
                "resend with force=true to lower it anyway.",
            ),
        },
    }

    @extend_schema(
        summary="Update a quota (partial: absent fields are unchanged)",
        **_update_schema,
    )
    def put(self, request, quota_id):
        return self._update(request)

    @extend_schema(summary="Update a quota (partial)", **_update_schema)
    def patch(self, request, quota_id):
        return self._update(request)

    @extend_schema(
        tags=["quotas"],
        summary="Delete a quota without children or active allocations",
        parameters=[CHANGE_REASON_PARAMETER],
        responses={
            204: None,
            **error_responses(
                400,
                401,
                403,
                404,
                409,
                message_409="Quota has child quotas; delete them first.",
            ),
        },
    )
    def delete(self, request, quota_id):
        reason = _change_reason(request)
        services.quota_delete(
            quota_id=self.get_object().id,
            actor=_actor(request),
            reason=reason,
            scope=_scope(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class QuotaUsageView(generics.GenericAPIView):
    serializer_class = UsageSerializer

    @extend_schema(
        tags=["quotas"],
        summary="Usage statistics of a quota (its whole subtree)",
        responses={200: UsageSerializer, **error_responses(401, 404)},
    )
    def get(self, request, quota_id):
        quota = selectors.quota_get(quota_id=quota_id, scope=_scope(request))
        return Response(UsageSerializer(usage_stats(quota)).data)


class QuotaChangePagination(LinkHeaderCursorPagination):
    ordering = ("-created_at", "-id")


class QuotaAuditView(generics.GenericAPIView):
    serializer_class = QuotaChangeSerializer
    pagination_class = QuotaChangePagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return QuotaChange.objects.none()
        return selectors.quota_change_list(
            quota_id=self.kwargs["quota_id"], scope=_scope(self.request)
        )

    @extend_schema(
        tags=["quotas"],
        summary="A quota's audit trail, newest first (kept after deletion)",
        description="Every create, update and delete of the quota: who made it (the "
        "API key, staff user or command), when, each field's old and new value, and "
        "the reason sent in `X-Change-Reason`. An update that changes nothing and a "
        "refused change leave no entry.",
        responses={
            200: QuotaChangeSerializer(many=True),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request, quota_id):
        # A deleted quota keeps serving its trail; an id that never existed is a 404.
        scope = _scope(request)
        if not selectors.quota_has_existed(quota_id=quota_id, scope=scope):
            selectors.quota_get(quota_id=quota_id, scope=scope)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(QuotaChangeSerializer(page, many=True).data)


class ClosedPeriodPagination(LinkHeaderCursorPagination):
    ordering = ("-period_start", "-id")


class QuotaPeriodsView(generics.GenericAPIView):
    serializer_class = ClosedPeriodSerializer
    pagination_class = ClosedPeriodPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ClosedPeriod.objects.none()
        return selectors.closed_period_list(
            quota_id=self.kwargs["quota_id"], scope=_scope(self.request)
        )

    @extend_schema(
        tags=["quotas"],
        summary="A budget's closed periods, newest first (kept after deletion)",
        description="Each period that has ended, as it stood when it closed: its "
        "bounds, the limit, what it began with (carried_over), what it consumed and "
        "what it handed on to the next (carried_forward). Periods are closed when "
        "anything touches the budget after they end, or by `manage.py roll_budgets`.",
        responses={
            200: ClosedPeriodSerializer(many=True),
            **error_responses(400, 401, 404),
        },
    )
    def get(self, request, quota_id):
        scope = _scope(request)
        if not selectors.quota_has_existed(quota_id=quota_id, scope=scope):
            selectors.quota_get(quota_id=quota_id, scope=scope)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ClosedPeriodSerializer(page, many=True).data)
