"""Jobs over HTTP (DESIGN §3b): admit, check, read, release and renew several
resources at once."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from allocations.records import render_job
from allocations.serializers import (
    ADMIT_TOO_MANY_REQUESTS,
    JOB_ID,
    JobAdmissionSerializer,
    JobAdmitSerializer,
    JobCheckResultSerializer,
    JobCheckSerializer,
    JobConflictErrorSerializer,
    JobReleaseSerializer,
    JobRenewSerializer,
    JobSerializer,
)
from allocations.services import jobs
from allocations.views.allocations import (
    ALREADY_RELEASED,
    BELOW_REPORTED,
    HELD_NOT_CONSUMED,
    NO_QUOTA,
    SCHEDULER_ROLES,
    _scope,
)
from horizon_quota.api import json_object_body
from horizon_quota.schema import (
    NOT_AN_OBJECT,
    RATE_LIMITED,
    ROW_LOCK_TIMEOUT,
    error_example,
    error_responses,
    invalid_input_example,
)

JOB_NOT_FOUND = error_example("No such job", "not_found", f"Job {JOB_ID} not found.")
JOB_HOLDS_NOTHING = error_example(
    "Nothing active", "already_released", f"Job {JOB_ID} holds no active allocation."
)
TOO_MANY_RESOURCES = invalid_input_example(
    "Too many resources", "resources", "A job needs 1 to 16 resources (got 17)."
)
JOB_CONFLICT = error_example(
    "Another set of resources",
    "conflict",
    f"Job {JOB_ID} already holds active allocations of another set: memory_gb 256 "
    "for user 'alice'.",
    allocation_ids=["9b2f5d0e-6f4a-4a8e-9c41-2d8e7f1a3b5c"],
)
JOB_REFUSED = error_example(
    "A level has no room",
    "resource_exhausted",
    "concurrent_gpus: Quota exceeded at team acme-research (quota "
    "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19): requested 8, available 2.",
    resource_type="concurrent_gpus",
    blocking_quota_id="0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
    requested=8,
    available=2,
    levels=[],
    resources={},
)


def _admission_body(result) -> dict:
    body = render_job(result.job_id, result.allocations)
    body["warnings"] = result.warnings
    body["levels"] = {
        resource.resource_type: [level.as_dict() for level in resource.levels]
        for resource in result.resources
    }
    return body


class JobAdmitView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = JobAdmitSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["jobs"],
        summary="Admit a job: several resources for one entity, all or nothing",
        description="201 with one allocation per resource when every resource's "
        "path has room; nothing is written otherwise, and the 429 names the "
        "blocking resource and level with every resource's levels. An identical "
        "retry answers 200 with the same allocations; a different set for a job "
        "that holds active allocations is a 409.",
        request=JobAdmitSerializer,
        responses={
            201: JobAdmissionSerializer,
            200: JobAdmissionSerializer,
            **error_responses(
                invalid=[TOO_MANY_RESOURCES],
                write=True,
                not_found=NO_QUOTA,
                body=True,
                conflict=OpenApiResponse(
                    JobConflictErrorSerializer,
                    description="conflict",
                    examples=[JOB_CONFLICT, ROW_LOCK_TIMEOUT],
                ),
                too_many=OpenApiResponse(
                    ADMIT_TOO_MANY_REQUESTS,
                    description="resource_exhausted or rate_limited",
                    examples=[JOB_REFUSED, RATE_LIMITED],
                ),
            ),
        },
    )
    def post(self, request):
        serializer = JobAdmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = jobs.job_admit(**serializer.validated_data, scope=_scope(request))
        code = status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED
        return Response(_admission_body(result), status=code)


class JobCheckView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = JobCheckSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["jobs"],
        summary="Check whether a job's resources would fit, without writing",
        request=JobCheckSerializer,
        responses={
            200: JobCheckResultSerializer,
            **error_responses(
                invalid=[TOO_MANY_RESOURCES], write=True, not_found=NO_QUOTA, body=True
            ),
        },
    )
    def post(self, request):
        serializer = JobCheckSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # Validated as admit validates them; a check has no use for them.
        sent = dict(serializer.validated_data)
        del sent["metadata"], sent["ttl_seconds"]
        checked = jobs.job_check(**sent, scope=_scope(request))
        return Response(
            {
                "allowed": checked.allowed,
                "reason": checked.reason,
                "blocking_resource": checked.blocking_resource,
                "blocking_quota_id": checked.blocking_quota_id,
                "warnings": checked.warnings,
                "resources": {r.resource_type: r.as_dict() for r in checked.resources},
            }
        )


class JobDetailView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = JobSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["jobs"],
        summary="A job's allocations (any status), resources and consumption",
        responses={200: JobSerializer, **error_responses(not_found=JOB_NOT_FOUND)},
    )
    def get(self, request, job_id):
        result = jobs.job_get(job_id=job_id, scope=_scope(request))
        return Response(render_job(result.job_id, result.allocations))

    @extend_schema(
        tags=["jobs"],
        summary="Release every active allocation of a job (settled without reports)",
        description="Needs no body; one, when sent, must be a JSON object (else "
        "400, or 415 when not JSON). Final consumptions go to POST "
        "`/jobs/{job_id}/release`.",
        responses={
            200: JobSerializer,
            **error_responses(
                invalid=[NOT_AN_OBJECT],
                write=True,
                not_found=JOB_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[JOB_HOLDS_NOTHING],
            ),
        },
    )
    def delete(self, request, job_id):
        # Settled without reports (POST .../release takes them); a body, when
        # sent, must still be a JSON object, never silently taken as none.
        json_object_body(request)
        result = jobs.job_release(job_id=job_id, scope=_scope(request))
        return Response(render_job(result.job_id, result.allocations))


class JobReleaseView(generics.GenericAPIView):
    # The rate limit counts these writes in the engine's statement.
    writes_counted_by_engine = True
    serializer_class = JobReleaseSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["jobs"],
        summary="Release every active allocation of a job, with final consumptions",
        request=JobReleaseSerializer,
        responses={
            200: JobSerializer,
            **error_responses(
                invalid=[BELOW_REPORTED, HELD_NOT_CONSUMED],
                write=True,
                not_found=JOB_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[JOB_HOLDS_NOTHING],
            ),
        },
    )
    def post(self, request, job_id):
        serializer = JobReleaseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = jobs.job_release(
            job_id=job_id, **serializer.validated_data, scope=_scope(request)
        )
        return Response(render_job(result.job_id, result.allocations))


class JobRenewView(generics.GenericAPIView):
    serializer_class = JobRenewSerializer
    write_roles = SCHEDULER_ROLES

    @extend_schema(
        tags=["jobs"],
        summary="Renew every active lease of a job",
        request=JobRenewSerializer,
        responses={
            200: JobSerializer,
            **error_responses(
                write=True,
                not_found=JOB_NOT_FOUND,
                body=True,
                locks=True,
                conflicts=[JOB_HOLDS_NOTHING, ALREADY_RELEASED],
            ),
        },
    )
    def post(self, request, job_id):
        serializer = JobRenewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = jobs.job_renew(
            job_id=job_id, **serializer.validated_data, scope=_scope(request)
        )
        return Response(render_job(result.job_id, result.allocations))
