from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from allocations import selectors, services
from allocations.filters import AllocationFilter, HistoryFilter, QuotaAllocationFilter
from allocations.models import Allocation, UsageHistory
from allocations.records import AllocationRecord, render_allocation
from allocations.serializers import (
    ALLOCATE_TOO_MANY_REQUESTS,
    ALLOCATION_ID,
    JOB_CONFLICT_EXAMPLE,
    JOB_ID,
    QUOTA_EXCEEDED_EXAMPLE,
    USER_QUOTA_ID,
    AllocationCheckSerializer,
    AllocationConflictErrorSerializer,
    AllocationCreateSerializer,
    AllocationGrantSerializer,
    AllocationSerializer,
    CheckResultSerializer,
    ConsumeSerializer,
    HistorySerializer,
    ReleaseSerializer,
    RenewSerializer,
)
from horizon_quota.amounts import normalize_amount
from horizon_quota.api import LinkHeaderCursorPagination, json_object_body
from horizon_quota.schema import (
    INVALID_CURSOR,
    INVALID_LIMIT,
    NOT_AN_OBJECT,
    RATE_LIMITED,
    ROW_LOCK_TIMEOUT,
    body_example,
    error_example,
    error_response,
    error_responses,
    invalid_input_example,
)
from quotas.access.scoping import scope_of
from quotas.models import ApiKeyRole, Quota
from quotas.selectors import quota_get

SCHEDULER_ROLES = {ApiKeyRole.ADMIN, ApiKeyRole.SCHEDULER}

# Example answers, worded as allocations.services words them.
ALREADY_RELEASED = error_example(
    "Already released",
    "already_released",
    f"Allocation {ALLOCATION_ID} is already released.",
)
BELOW_REPORTED = invalid_input_example(
    "Below the last report",
    "consumed_value",
    "consumed_value is cumulative: it cannot be below the 12.5 already reported.",
)
HELD_NOT_CONSUMED = invalid_input_example(
    "A concurrent resource",
    "consumed_value",
    "concurrent_gpus is a concurrent resource: it is held, not consumed, so "
    "consumed_value does not apply.",
)
NO_QUOTA = error_example(
    "No quota for the entity", "not_found", "No gpu_hours quota for user 'alice'."
)
ALLOCATION_NOT_FOUND = error_example(
    "No such allocation", "not_found", f"Allocation {ALLOCATION_ID} not found."
)
QUOTA_NOT_FOUND = error_example(
    "No such quota", "not_found", f"Quota {USER_QUOTA_ID} not found."
)
NOT_POSITIVE = invalid_input_example(
    "Not a positive amount", "requested_value", "Must be greater than 0."
)
STATUS_FILTER = invalid_input_example(
    "Unknown status",
    "status",
    "Must be one of: active, released, expired, all.",
)


def _scope(request):
    """The scope of the request's key (quotas/access/scoping.py); None when unscoped."""
    return scope_of(getattr(request, "auth", None))


class AllocationPagination(LinkHeaderCursorPagination):
    ordering = ("-allocated_at", "-id")


class HistoryPagination(LinkHeaderCursorPagination):
    ordering = ("-timestamp", "-id")


def _rendered(allocations) -> list[dict]:
    return [render_allocation(AllocationRecord.from_model(row)) for row in allocations]


def _check_body(result) -> dict:
    """The check answer, built directly (``CheckResultSerializer`` documents it):
    levels above a scoped key's scope are already redacted by the service."""
    return {
        "allowed": result.allowed,
        "available": None
        if result.available is None
        else normalize_amount(result.available),
        "requested": normalize_amount(result.requested),
        "reason": result.reason,
        "warnings": result.warnings,
        "blocking_quota_id": result.blocking_quota_id,
        "levels": [level.as_dict() for level in result.levels],
    }


def _grant_body(result) -> dict:
    body = render_allocation(result.allocation)
    body["warnings"] = result.warnings
    body["levels"] = [level.as_dict() for level in result.levels]
    return body


class AllocationCheckView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = AllocationCheckSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["allocations"],
        summary="Check whether an allocation would fit, at every level",
        request=AllocationCheckSerializer,
        responses={
            200: CheckResultSerializer,
            **error_responses(
                invalid=NOT_POSITIVE, write=True, not_found=NO_QUOTA, body=True
            ),
        },
    )
    def post(self, request):
        serializer = AllocationCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Validated as allocate validates them; a check has no use for them.
        checked = dict(serializer.validated_data)
        del checked["metadata"], checked["ttl_seconds"]
        result = services.allocation_check(**checked, scope=_scope(request))
        return Response(_check_body(result))


class AllocationListCreateView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = AllocationSerializer
    filterset_class = AllocationFilter
    pagination_class = AllocationPagination
    write_roles = SCHEDULER_ROLES

    def get_queryset(self):
        return selectors.allocation_list(scope=_scope(self.request))

    @extend_schema(
        tags=["allocations"],
        summary="List allocations, newest first (every status unless filtered)",
        responses={
            200: AllocationSerializer(many=True),
            **error_responses(invalid=[STATUS_FILTER, INVALID_CURSOR, INVALID_LIMIT]),
        },
    )
    def get(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(_rendered(page))

    @extend_schema(
        tags=["allocations"],
        summary="Allocate quota for a job along the whole path, or not at all",
        description="201 when granted; 200 with the existing allocation when the same "
        "job, resource, entity and value are sent again (idempotent replay); 409 when "
        "the job holds an active allocation of that resource with other values; 429 "
        "naming the blocking level, the amount requested and the amount available.",
        request=AllocationCreateSerializer,
        responses={
            201: AllocationGrantSerializer,
            200: AllocationGrantSerializer,
            **error_responses(
                invalid=[
                    NOT_POSITIVE,
                    invalid_input_example(
                        "job_id is not a UUID", "job_id", "Must be a valid UUID."
                    ),
                ],
                write=True,
                not_found=NO_QUOTA,
                body=True,
                conflict=error_response(
                    "conflict: the job already holds an active allocation of this "
                    "resource type with other values (`allocation_id` names it when "
                    "the key may see it), or a row lock timed out (`retry_after`).",
                    body_example(
                        "The job holds another allocation", JOB_CONFLICT_EXAMPLE
                    ),
                    error_example(
                        "The job holds an allocation outside the key's scope",
                        "conflict",
                        f"Job {JOB_ID} already holds an active gpu_hours allocation.",
                    ),
                    ROW_LOCK_TIMEOUT,
                    schema=AllocationConflictErrorSerializer,
                ),
                too_many=error_response(
                    "resource_exhausted: a level of the path has no room (the answer "
                    "names it and reports every level); or rate_limited: the API "
                    "key's writes exceed API_WRITE_RATE (retry after `retry_after` "
                    "seconds).",
                    body_example(
                        "Quota exceeded at the team level", QUOTA_EXCEEDED_EXAMPLE
                    ),
                    RATE_LIMITED,
                    schema=ALLOCATE_TOO_MANY_REQUESTS,
                ),
            ),
        },
    )
    def post(self, request):
        serializer = AllocationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        scope = _scope(request)
        result = services.allocation_create(**serializer.validated_data, scope=scope)
        code = status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED
        return Response(_grant_body(result), status=code)


class AllocationDetailView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = AllocationSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["allocations"],
        summary="Get an allocation",
        responses={
            200: AllocationSerializer,
            **error_responses(not_found=ALLOCATION_NOT_FOUND),
        },
    )
    def get(self, request, allocation_id):
        allocation = selectors.allocation_get(
            allocation_id=allocation_id, scope=_scope(request)
        )
        return Response(render_allocation(AllocationRecord.from_model(allocation)))

    @extend_schema(
        tags=["allocations"],
        summary="Release an allocation (returns its amount to every level, once)",
        description="Returns the amount to every level of the path, once. A "
        "time-based allocation is settled: `consumed_value` (query parameter or "
        "JSON body) is the job's final consumption; without it the release charges "
        "rate × hours held when the allocation has a rate, else the whole "
        "reservation. `consumed_value` on a concurrent resource is a 400. A body, "
        "when sent, must be a JSON object (else 400, or 415 when not JSON).",
        parameters=[
            OpenApiParameter(
                "consumed_value",
                str,
                required=False,
                description="Final cumulative consumption (time-based resources).",
            )
        ],
        request=ReleaseSerializer,
        responses={
            200: AllocationSerializer,
            **error_responses(
                invalid=[BELOW_REPORTED, HELD_NOT_CONSUMED, NOT_AN_OBJECT],
                write=True,
                not_found=ALLOCATION_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[
                    ALREADY_RELEASED,
                    error_example(
                        "Already expired",
                        "already_released",
                        f"Allocation {ALLOCATION_ID} is already expired.",
                    ),
                ],
            ),
        },
    )
    def delete(self, request, allocation_id):
        # A time-based allocation's final consumption: in the query or the body
        # (which, when sent, must be a JSON object).
        sent = dict(json_object_body(request))
        if "consumed_value" in request.query_params:
            sent["consumed_value"] = request.query_params["consumed_value"]
        serializer = ReleaseSerializer(data=sent)
        serializer.is_valid(raise_exception=True)
        allocation = services.allocation_release(
            allocation_id=allocation_id,
            consumed_value=serializer.validated_data["consumed_value"],
            scope=_scope(request),
        )
        return Response(render_allocation(allocation))


class AllocationRenewView(generics.GenericAPIView):
    serializer_class = RenewSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["allocations"],
        summary="Extend an active allocation's lease to ttl_seconds from now",
        request=RenewSerializer,
        responses={
            200: AllocationSerializer,
            **error_responses(
                invalid=invalid_input_example(
                    "ttl_seconds out of range",
                    "ttl_seconds",
                    "Ensure this value is greater than or equal to 1.",
                ),
                write=True,
                not_found=ALLOCATION_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[
                    error_example(
                        "Released",
                        "already_released",
                        f"Allocation {ALLOCATION_ID} is released; only an active one "
                        "can be renewed.",
                    ),
                    error_example(
                        "The lease has run out",
                        "conflict",
                        f"Allocation {ALLOCATION_ID}'s lease has run out; allocate "
                        "again.",
                    ),
                ],
            ),
        },
    )
    def post(self, request, allocation_id):
        serializer = RenewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        allocation = services.allocation_renew(
            allocation_id=allocation_id,
            **serializer.validated_data,
            scope=_scope(request),
        )
        return Response(render_allocation(allocation))


class AllocationConsumeView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = ConsumeSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["allocations"],
        summary="Report a running job's consumption so far (time-based resources)",
        description="`consumed_value` is cumulative. The increment since the last "
        "report is charged now to every level of the path, each in its current "
        "period; it is never refused (an overrun is charged all the same). The same "
        "value again changes nothing; a lower one is a 400, as is any report on a "
        "concurrent resource.",
        request=ConsumeSerializer,
        responses={
            200: AllocationSerializer,
            **error_responses(
                invalid=[BELOW_REPORTED, HELD_NOT_CONSUMED],
                write=True,
                not_found=ALLOCATION_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[ALREADY_RELEASED],
            ),
        },
    )
    def post(self, request, allocation_id):
        serializer = ConsumeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        allocation = services.allocation_consume(
            allocation_id=allocation_id,
            **serializer.validated_data,
            scope=_scope(request),
        )
        return Response(render_allocation(allocation))


class QuotaAllocationsView(generics.GenericAPIView):
    serializer_class = AllocationSerializer
    filterset_class = QuotaAllocationFilter
    pagination_class = AllocationPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Allocation.objects.none()
        return selectors.quota_allocation_list(
            quota_id=self.kwargs["quota_id"], scope=_scope(self.request)
        )

    @extend_schema(
        tags=["quotas"],
        summary="A quota's own allocations (active unless status= widens)",
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=["active", "released", "expired", "all"],
                description="Default active.",
            )
        ],
        responses={
            200: AllocationSerializer(many=True),
            **error_responses(
                invalid=[STATUS_FILTER, INVALID_CURSOR, INVALID_LIMIT],
                not_found=QUOTA_NOT_FOUND,
            ),
        },
    )
    def get(self, request, quota_id):
        # 404 for an unknown quota or one outside the key's scope.
        quota_get(quota_id=quota_id, scope=_scope(request))
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(_rendered(page))


class QuotaHistoryView(generics.GenericAPIView):
    serializer_class = HistorySerializer
    filterset_class = HistoryFilter
    pagination_class = HistoryPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return UsageHistory.objects.none()
        return selectors.history_list(
            quota_id=self.kwargs["quota_id"], scope=_scope(self.request)
        )

    @extend_schema(
        tags=["quotas"],
        summary="A quota's usage history, newest first (kept after deletion)",
        responses={
            200: HistorySerializer(many=True),
            **error_responses(
                invalid=[
                    invalid_input_example(
                        "Unknown operation",
                        "operation",
                        "Must be one of: allocate, release, expire, consume.",
                    ),
                    INVALID_CURSOR,
                    INVALID_LIMIT,
                ],
                not_found=QUOTA_NOT_FOUND,
            ),
        },
    )
    def get(self, request, quota_id):
        queryset = self.get_queryset()
        scope = _scope(request)
        if scope is not None:
            # A scoped key sees the history of existing quotas in its scope only.
            quota_get(quota_id=quota_id, scope=scope)
        # A deleted quota keeps serving its rows; an id that never existed is a 404.
        elif not Quota.objects.filter(id=quota_id).exists() and not queryset.exists():
            quota_get(quota_id=quota_id)
        page = self.paginate_queryset(self.filter_queryset(queryset))
        return self.get_paginated_response(HistorySerializer(page, many=True).data)
