import contextlib

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from horizon_quota.api import LinkHeaderCursorPagination
from horizon_quota.schema import (
    INVALID_CURSOR,
    INVALID_LIMIT,
    error_example,
    error_responses,
    invalid_input_example,
)
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


# Example answers of these operations, worded as quotas.services words them.
QUOTA_ID = "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19"
PARENT_ID = "7c3e5a1b-2d4f-4a6c-9e8b-1f2a3b4c5d6e"
QUOTA_NOT_FOUND = error_example(
    "No such quota", "not_found", f"Quota {QUOTA_ID} not found."
)
INVALID_REASON = invalid_input_example(
    "Invalid X-Change-Reason",
    CHANGE_REASON_HEADER,
    "Must not contain control characters.",
)
SCOPED_OWN_ENTITY = error_example(
    "A scoped key changing its own entity's quota",
    "forbidden",
    "A scoped API key cannot change or delete the quotas of the entity it is scoped "
    "to.",
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
        responses={
            200: QuotaSerializer(many=True),
            **error_responses(
                invalid=[
                    invalid_input_example(
                        "Unknown entity_type",
                        "entity_type",
                        "Must be one of: organization, team, user.",
                    ),
                    INVALID_CURSOR,
                    INVALID_LIMIT,
                ]
            ),
        },
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
                invalid=[
                    invalid_input_example(
                        "Too many decimal places",
                        "limit_value",
                        "At most 4 decimal places are allowed.",
                    ),
                    INVALID_REASON,
                ],
                write=True,
                forbidden=[
                    error_example(
                        "A scoped key creating a root quota",
                        "forbidden",
                        "A scoped API key cannot create a root quota.",
                    )
                ],
                not_found=error_example(
                    "A parent outside the key's scope",
                    "not_found",
                    f"Parent quota {PARENT_ID} not found.",
                ),
                body=True,
                locks=True,
                conflicts=[
                    error_example(
                        "Already exists",
                        "already_exists",
                        "A gpu_hours quota for team 'acme-research' already exists.",
                    )
                ],
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
        responses={
            200: QuotaSerializer,
            **error_responses(not_found=QUOTA_NOT_FOUND),
        },
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
                invalid=[
                    invalid_input_example(
                        "Changing the parent",
                        "parent_id",
                        "parent_id cannot change after creation.",
                    ),
                    invalid_input_example(
                        "Invalid force", "force", "Must be true or false."
                    ),
                    INVALID_REASON,
                ],
                write=True,
                forbidden=[SCOPED_OWN_ENTITY],
                not_found=QUOTA_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[
                    error_example(
                        "Below current usage",
                        "conflict",
                        "The new effective limit (10) is below current usage (12); "
                        "resend with force=true to lower it anyway (running jobs "
                        "keep their quota, new allocations are refused until usage "
                        "drops).",
                    ),
                    error_example(
                        "Version mismatch",
                        "conflict",
                        f"Quota {QUOTA_ID} is at version 4, not 3; re-read it and "
                        "retry.",
                    ),
                ],
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
                invalid=INVALID_REASON,
                write=True,
                forbidden=[SCOPED_OWN_ENTITY],
                not_found=QUOTA_NOT_FOUND,
                locks=True,
                conflicts=[
                    error_example(
                        "Has children",
                        "conflict",
                        f"Quota {QUOTA_ID} has child quotas; delete them first.",
                    ),
                    error_example(
                        "Has active allocations",
                        "conflict",
                        f"Quota {QUOTA_ID} has active allocations in its subtree.",
                    ),
                ],
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
        responses={
            200: UsageSerializer,
            **error_responses(not_found=QUOTA_NOT_FOUND),
        },
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
            **error_responses(
                invalid=[INVALID_CURSOR, INVALID_LIMIT], not_found=QUOTA_NOT_FOUND
            ),
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
            **error_responses(
                invalid=[INVALID_CURSOR, INVALID_LIMIT], not_found=QUOTA_NOT_FOUND
            ),
        },
    )
    def get(self, request, quota_id):
        scope = _scope(request)
        if not selectors.quota_has_existed(quota_id=quota_id, scope=scope):
            selectors.quota_get(quota_id=quota_id, scope=scope)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ClosedPeriodSerializer(page, many=True).data)
