"""The webhook endpoints API (DESIGN §7a): admin keys only, reads included."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from horizon_quota.api import LinkHeaderCursorPagination
from horizon_quota.schema import (
    DESCRIPTIONS,
    FORBIDDEN,
    INVALID_CURSOR,
    INVALID_LIMIT,
    error_example,
    error_response,
    error_responses,
    invalid_input_example,
)
from quotas.access.permissions import AdminRolePermission
from quotas.access.scoping import scope_of
from quotas.events import endpoints
from quotas.events.models import WebhookAttempt
from quotas.events.selectors import FEED_TYPES
from quotas.events.serializers import (
    TEST_QUEUED_EXAMPLE,
    WebhookAttemptSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
)

ENDPOINT_ID = "5f0c2a7e-9b1d-4e3f-8a6c-2d4b6f8e1a3c"
ENDPOINT_NOT_FOUND = error_example(
    "No such endpoint", "not_found", f"Webhook endpoint {ENDPOINT_ID} not found."
)
# Reads need an admin key too: 403 for the others.
ADMIN_ONLY = {403: error_response(DESCRIPTIONS[403], FORBIDDEN)}

PRIVATE_URL = invalid_input_example(
    "A private target",
    "url",
    "The host '10.0.0.7' resolves to a private address (10.0.0.7); webhooks are "
    "only sent to public addresses.",
)
NOT_HTTP = invalid_input_example(
    "Not http or https", "url", "Only http and https URLs can receive webhooks."
)
UNKNOWN_TYPE = invalid_input_example(
    "Unknown event type",
    "event_types",
    "Unknown event type 'quota.full'; one of: " + ", ".join(FEED_TYPES) + ".",
)
UNKNOWN_SCOPE = invalid_input_example(
    "A scope entity without a quota",
    "scope",
    "Cannot scope a webhook endpoint to 'team:nobody': team 'nobody' has no quota.",
)
SCOPED_WITHOUT_SCOPE = error_example(
    "A scoped key making an endpoint without a scope",
    "forbidden",
    "A scoped API key cannot make a webhook endpoint without a scope: it would "
    "receive events from outside its scope.",
)


def _scope(request):
    return scope_of(getattr(request, "auth", None))


class WebhookAttemptPagination(LinkHeaderCursorPagination):
    ordering = ("-id",)


class WebhookListCreateView(generics.GenericAPIView):
    permission_classes = [AdminRolePermission]
    serializer_class = WebhookEndpointSerializer

    def get_queryset(self):
        return endpoints.endpoint_list(scope=_scope(self.request))

    @extend_schema(
        tags=["webhooks"],
        summary="List webhook endpoints, newest first",
        description="Admin keys only. A scoped key sees the endpoints scoped "
        "inside its scope.",
        responses={
            200: WebhookEndpointSerializer(many=True),
            **error_responses(invalid=[INVALID_CURSOR, INVALID_LIMIT]),
            **ADMIN_ONLY,
        },
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            WebhookEndpointSerializer(page, many=True).data
        )

    @extend_schema(
        tags=["webhooks"],
        summary="Create a webhook endpoint (the answer shows its secret, once)",
        description="Admin keys only. The endpoint receives the events committed "
        "from now on, signed per Standard Webhooks with the `secret` of this "
        "answer, which is never shown again.",
        request=WebhookEndpointCreateSerializer,
        responses={
            201: WebhookEndpointCreatedSerializer,
            **error_responses(
                invalid=[PRIVATE_URL, NOT_HTTP, UNKNOWN_TYPE, UNKNOWN_SCOPE],
                write=True,
                forbidden=[SCOPED_WITHOUT_SCOPE],
                body=True,
            ),
        },
    )
    def post(self, request):
        serializer = WebhookEndpointCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_create(
            **serializer.validated_data, key_scope=_scope(request)
        )
        return Response(
            WebhookEndpointCreatedSerializer(endpoint).data,
            status=status.HTTP_201_CREATED,
        )


class WebhookDetailView(generics.GenericAPIView):
    permission_classes = [AdminRolePermission]
    serializer_class = WebhookEndpointSerializer
    http_method_names = ["get", "patch", "delete", "options"]

    @extend_schema(
        tags=["webhooks"],
        summary="Get a webhook endpoint",
        responses={
            200: WebhookEndpointSerializer,
            **error_responses(not_found=ENDPOINT_NOT_FOUND),
            **ADMIN_ONLY,
        },
    )
    def get(self, request, endpoint_id):
        endpoint = endpoints.endpoint_get(
            endpoint_id=endpoint_id, scope=_scope(request)
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        tags=["webhooks"],
        summary="Change a webhook endpoint (partial: absent fields are unchanged)",
        description="Enabling a disabled endpoint clears its failure record; it "
        "then receives the events committed from then on.",
        request=WebhookEndpointUpdateSerializer,
        responses={
            200: WebhookEndpointSerializer,
            **error_responses(
                invalid=[PRIVATE_URL, NOT_HTTP, UNKNOWN_TYPE, UNKNOWN_SCOPE],
                write=True,
                forbidden=[SCOPED_WITHOUT_SCOPE],
                not_found=ENDPOINT_NOT_FOUND,
                body=True,
                locks=True,
            ),
        },
    )
    def patch(self, request, endpoint_id):
        serializer = WebhookEndpointUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_update(
            endpoint_id=endpoint_id,
            changes=serializer.validated_data,
            key_scope=_scope(request),
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        tags=["webhooks"],
        summary="Delete a webhook endpoint, its deliveries and their log",
        responses={
            204: None,
            **error_responses(write=True, not_found=ENDPOINT_NOT_FOUND, locks=True),
        },
    )
    def delete(self, request, endpoint_id):
        endpoints.endpoint_delete(endpoint_id=endpoint_id, key_scope=_scope(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesView(generics.GenericAPIView):
    permission_classes = [AdminRolePermission]
    serializer_class = WebhookAttemptSerializer
    pagination_class = WebhookAttemptPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return WebhookAttempt.objects.none()
        endpoint = endpoints.endpoint_get(
            endpoint_id=self.kwargs["endpoint_id"], scope=_scope(self.request)
        )
        return endpoints.attempt_list(endpoint_id=endpoint.id)

    @extend_schema(
        tags=["webhooks"],
        summary="The delivery log of a webhook endpoint, newest first",
        description="One entry per attempt: the event, the attempt's number, the "
        "answer's status, how long it took, the error and the next attempt.",
        responses={
            200: WebhookAttemptSerializer(many=True),
            **error_responses(
                invalid=[INVALID_CURSOR, INVALID_LIMIT], not_found=ENDPOINT_NOT_FOUND
            ),
            **ADMIN_ONLY,
        },
    )
    def get(self, request, endpoint_id):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(
            WebhookAttemptSerializer(page, many=True).data
        )


class WebhookTestView(generics.GenericAPIView):
    permission_classes = [AdminRolePermission]
    serializer_class = WebhookDeliverySerializer

    @extend_schema(
        tags=["webhooks"],
        summary="Send a test event to this endpoint alone",
        description="Queues a `webhook.test` event for this endpoint only (even "
        "when it is disabled or does not subscribe to the type); the next "
        "delivery pass sends it. The answer is its delivery.",
        request=None,
        responses={
            202: OpenApiResponse(
                WebhookDeliverySerializer,
                description="Queued: the next delivery pass sends it.",
                examples=[TEST_QUEUED_EXAMPLE],
            ),
            **error_responses(write=True, not_found=ENDPOINT_NOT_FOUND, locks=True),
        },
    )
    def post(self, request, endpoint_id):
        delivery = endpoints.endpoint_send_test(
            endpoint_id=endpoint_id, key_scope=_scope(request)
        )
        return Response(
            WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED
        )
